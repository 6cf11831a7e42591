//! State version 4, written by kv 4.0.0 (`releases/kv_v4.wasm`) and by kv 5 (`guests/kv-v5`,
//! which keeps it byte for byte): strings, lists, hashes, sets and sorted sets with a deadline,
//! every connection's state, and the counters `INFO` reports. Written by the `kv-v3-to-v4`
//! transformer.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tasuki_guest::Map;

/// kv 4.0.0's whole state, section `kv` version 4. Written by kv 4.0.0; must never change.
///
/// kv 4.0.0 had `Kv { db: Db { entries, deadlines, unindexed, watches, scan_order (all four
/// skipped) }, clients, stats, config (skipped), timer_armed_for (skipped) }`: the map, the
/// connections, then the counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Kv {
    /// Every key and its entry.
    pub entries: Map<Vec<u8>, Entry>,
    /// Every connection's state, by the host's connection id (`tasuki_guest::ConnId`). A
    /// connection with no entry (one opened before kv 4 ran) gets one at its next request.
    pub clients: BTreeMap<u64, Client>,
    pub stats: Stats,
}

/// kv 4.0.0's `Entry`: a value and its deadline. Written by kv 4.0.0; must never change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub value: Value,
    /// Unix milliseconds from which the key no longer exists; `None`: never expires.
    pub expires_at_ms: Option<u64>,
}

/// kv 4.0.0's `Value`: what a key holds. Written by kv 4.0.0; must never change.
///
/// Encodes as the variant's index (a varint), then its content. The first three are state
/// version 3's, unchanged, at the same indexes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// `0`: a byte string.
    String(Vec<u8>),
    /// `1`: a list, head first (a `VecDeque` in kv 4.0.0). Never empty.
    List(Vec<Vec<u8>>),
    /// `2`: a hash's fields and values (a `HashMap` in kv 4.0.0), in its iteration order.
    /// Never empty.
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    /// `3`: a set's members (an `IndexSet` in kv 4.0.0, written as a sequence), each once.
    /// Never empty.
    Set(Vec<Vec<u8>>),
    /// `4`: a sorted set's members and scores, in score order (kv 4.0.0 wrote them so, and
    /// refuses a NaN score when reading). Never empty.
    ZSet(Vec<(Vec<u8>, f64)>),
}

/// kv 4.0.0's `Stats`, the counters `INFO` reports. Written by kv 4.0.0; must never change.
/// All zero reads as "count from this upgrade on".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// When the server first started, Unix milliseconds; 0 until an instance sets it.
    pub started_ms: u64,
    pub connections_received: u64,
    pub commands_processed: u64,
}

/// kv 4.0.0's `Client`: one connection's state. Written by kv 4.0.0; must never change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// RESP2 until `HELLO 3`.
    pub protocol: Protocol,
    /// `CLIENT SETNAME`; empty: no name.
    pub name: Vec<u8>,
    /// `CLIENT SETINFO LIB-NAME`.
    pub lib_name: Vec<u8>,
    /// `CLIENT SETINFO LIB-VER`.
    pub lib_ver: Vec<u8>,
    /// Whether the connection may run commands.
    pub authenticated: bool,
    /// `CLIENT REPLY`.
    pub reply: ReplyMode,
    /// `CLIENT NO-EVICT`.
    pub no_evict: bool,
    /// `CLIENT NO-TOUCH`.
    pub no_touch: bool,
    /// The client's address, `ip:port`; empty for a connection made before kv 4 ran.
    pub addr: String,
    /// The server's address the client connected to, `ip:port`.
    pub laddr: String,
    /// When it connected, Unix milliseconds.
    pub connected_ms: u64,
    /// When it last sent a command, Unix milliseconds.
    pub last_ms: u64,
    /// The last command it ran, as `CLIENT LIST` names it (`client|list`).
    pub last_command: String,
    /// The open transaction, between `MULTI` and `EXEC`/`DISCARD`.
    pub transaction: Option<Transaction>,
    /// The keys it `WATCH`es, in the order it named them, each once.
    pub watched: Vec<Vec<u8>>,
    /// Whether one of them changed since: the next `EXEC` aborts.
    pub watch_broken: bool,
    /// Where the request in progress stands.
    pub parser: Parser,
}

/// The protocol a connection speaks (`resp::Protocol` when kv 4.0.0 was built). Written by kv
/// 4.0.0; must never change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// `0`: RESP2, what every connection starts with.
    #[default]
    Resp2,
    /// `1`: RESP3, after `HELLO 3`.
    Resp3,
}

/// kv 4.0.0's `ReplyMode`, `CLIENT REPLY ON | OFF | SKIP`. Written by kv 4.0.0; must never
/// change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplyMode {
    /// `0`
    #[default]
    On,
    /// `1`: no replies until `CLIENT REPLY ON`.
    Off,
    /// `2`: no reply to the next command (while `CLIENT REPLY SKIP` itself runs).
    SkipNext,
    /// `3`: no reply to this command.
    Skip,
}

/// kv 4.0.0's `Transaction`, an open `MULTI`. Written by kv 4.0.0; must never change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// The commands queued, with their arguments, in order.
    pub queued: Vec<Vec<Vec<u8>>>,
    /// A command was refused while queuing: `EXEC` answers `EXECABORT`.
    pub failed: bool,
}

/// Where a connection's request in progress stands (`resp::Parser` when kv 4.0.0 was built;
/// offsets into the connection's unconsumed input). Written by kv 4.0.0; must never change.
///
/// The sizes are `usize`, as in the release: postcard writes every `usize` as a varint, so the
/// bytes do not depend on the width (kv 4.0.0 ran on wasm32).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parser {
    /// Arguments still to read; `None` until the `*N` header of a multibulk request is read.
    pub remaining: Option<usize>,
    /// The arguments read so far, as `(offset, length)` in the input.
    pub args: Vec<(usize, usize)>,
    /// Where the next thing to read starts.
    pub pos: usize,
    /// The length of the argument at `pos`, once its `$N` header is read.
    pub bulk: Option<usize>,
    /// For an inline request: how far the input was searched for its `\n`.
    pub scanned: usize,
}

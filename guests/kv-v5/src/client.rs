//! What the server keeps per connection: the protocol it chose with `HELLO`, its name, whether
//! it authenticated, its open transaction and watched keys, and where its parser stands.
//!
//! All of it is part of the state that crosses an upgrade (`Kv::clients`, keyed by connection
//! id, which the host keeps stable across versions): a connection that said `HELLO 3` keeps
//! RESP3, a `MULTI` stays open with its queued commands, a `WATCH` stays armed, and a request
//! half-parsed is resumed where the parser stopped. An entry is made when the connection
//! connects (or, for a connection older than release 4, at its first request) and dropped when
//! it disconnects.

use resp::{Parser, Protocol};
use serde::{Deserialize, Serialize};

/// One connection's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Client {
    /// RESP2 until `HELLO 3`.
    pub(crate) protocol: Protocol,
    /// `CLIENT SETNAME`; empty: no name.
    pub(crate) name: Vec<u8>,
    /// `CLIENT SETINFO LIB-NAME`.
    pub(crate) lib_name: Vec<u8>,
    /// `CLIENT SETINFO LIB-VER`.
    pub(crate) lib_ver: Vec<u8>,
    /// Whether the connection may run commands: true from the start unless a password is
    /// required, then after `AUTH` or `HELLO ... AUTH`.
    pub(crate) authenticated: bool,
    /// `CLIENT REPLY`.
    pub(crate) reply: ReplyMode,
    /// `CLIENT NO-EVICT`: recorded and shown; nothing is ever evicted here.
    pub(crate) no_evict: bool,
    /// `CLIENT NO-TOUCH`: recorded and shown; no access time is kept here.
    pub(crate) no_touch: bool,
    /// The client's and the server's address, `ip:port`, as the host told them on connect;
    /// empty for a connection made before release 4 ran.
    pub(crate) addr: String,
    pub(crate) laddr: String,
    /// When it connected, and when it last sent a command: Unix milliseconds.
    pub(crate) connected_ms: u64,
    pub(crate) last_ms: u64,
    /// The last command it ran, as `CLIENT LIST` names it (`client|list`).
    pub(crate) last_command: String,
    /// The open transaction, between `MULTI` and `EXEC`/`DISCARD`.
    pub(crate) transaction: Option<Transaction>,
    /// The keys it `WATCH`es, in the order it named them, each once.
    pub(crate) watched: Vec<Vec<u8>>,
    /// Whether one of them changed since: the next `EXEC` aborts.
    pub(crate) watch_broken: bool,
    /// Where the request in progress stands (see `resp::Parser`).
    pub(crate) parser: Parser,
}

impl Client {
    /// A connection that just connected at `now_ms`.
    pub(crate) fn new(now_ms: u64, authenticated: bool) -> Self {
        Self { authenticated, connected_ms: now_ms, last_ms: now_ms, ..Self::default() }
    }
}

/// `CLIENT REPLY ON | OFF | SKIP`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ReplyMode {
    #[default]
    On,
    /// No replies until `CLIENT REPLY ON`.
    Off,
    /// No reply to the next command (`SkipNext` while `CLIENT REPLY SKIP` itself runs).
    SkipNext,
    Skip,
}

/// An open `MULTI`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Transaction {
    /// The commands queued, with their arguments, in order.
    pub(crate) queued: Vec<Vec<Vec<u8>>>,
    /// A command was refused while queuing (unknown, wrong arity): `EXEC` answers `EXECABORT`.
    pub(crate) failed: bool,
}

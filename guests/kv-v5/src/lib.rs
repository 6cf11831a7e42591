//! The key-value server, release 5: release 4 (the Redis-protocol store with the clients
//! people use: the `HELLO` handshake and RESP3, `AUTH`, `CLIENT`, `RESET`, transactions,
//! `SCAN`, sets and sorted sets, requests of any size redis accepts, parsed in linear time) in
//! less memory per key.
//!
//! It answers as redis 7.2 does (`REDIS_VERSION`), with redis's replies and error texts; the
//! README's compatibility section lists what it implements and what it refuses. Its commands
//! and replies are release 4's.
//!
//! # What changed since release 4
//!
//! Only how the keyspace is laid out in memory (see `db.rs`): keys and short strings kept in
//! place in the entry, collections boxed, a deadline of 8 bytes. The state is release 4's,
//! state version 4, byte for byte: kv 4 and kv 5 upgrade into each other with no transformer,
//! either way (`tests/e2e/kv5.rs`).
//!
//! # What changed from release 3 to 4, and how its state comes across
//!
//! The state, version 4, is release 3's keyspace with two more kinds of value (`db::Value::Set`,
//! `db::Value::ZSet`, added at the end so the first three encode as before), plus what the
//! server keeps per connection (`clients`: the protocol, the name, the open transaction, the
//! watched keys, the parser's position; see `client.rs`) and the counters `INFO` shows. All of
//! it crosses an upgrade: a connection that chose RESP3 keeps it under the next release, a
//! `MULTI` stays open with its queue, and a request half-received is resumed where the parser
//! stopped.
//!
//! Like release 3, this release reads only its own state version: a running release 3 reaches
//! it through the `kv-v3-to-v4` transformer (`guests/transforms/kv-v3-to-v4`), and releases 1
//! and 2 through the chain before it. Connections from release 3 have no entry yet: each gets
//! one, speaking RESP2 as it did, at its first request.
//!
//! # Layout
//! - `lib.rs`: `Kv`, the state, and the [`Server`] implementation: the request loop, the
//!   expiry timer, the per-connection entries.
//! - `client.rs`: what is kept per connection.
//! - `db.rs`: the keyspace of typed values with deadlines, and the only code that touches the
//!   map; `zset.rs` the sorted set; `watch.rs` who watches which key; `scan.rs` the order and
//!   cursor of `SCAN`.
//! - `cmd/mod.rs`: the command table (names, arities, flags, keys) and the dispatch from a
//!   request to a handler, with the errors redis gives before a command runs and the queuing
//!   inside `MULTI`.
//! - `cmd/*.rs`: one file per command family.
//! - `bytes.rs`: the byte string keys and string values are kept in, in place when short.
//! - `tests.rs`: requests in, replies out, on a clock the tests set (`cargo test -p kv-v5`),
//!   and the bytes of state version 4, pinned: the same bytes kv 4.0.0 wrote, which
//!   `guests/kv-states` (release 4's frozen state types) pins too.

mod bytes;
mod client;
mod cmd;
mod db;
mod random;
mod scan;
mod set;
#[cfg(test)]
mod tests;
mod watch;
mod zset;

use client::{Client, ReplyMode};
use cmd::{Others, Session};
use db::Db;
use resp::reply;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use tasuki_guest::{ConnId, ConnInfo, Ctx, Migrations, Server};

/// The redis release whose commands and replies kv follows, as `HELLO` and `INFO` report it.
pub(crate) const REDIS_VERSION: &str = "7.2.0";

/// The id of the expiry timer, the only timer this release arms. It fires at the earliest
/// deadline of any key.
const EXPIRY_TIMER: u64 = 1;

/// How many expired keys one firing of the expiry timer removes at most, so that a mass expiry
/// cannot stall the connections queued behind the event. If more are due, the timer is armed
/// to fire again at once, and requests get their turn in between.
const EXPIRY_BATCH: usize = 1000;

/// How many entries one firing of the expiry timer indexes while the deadline index is rebuilt
/// after an upgrade (see `Db::start_rebuild`): a few hundred microseconds of work, so requests
/// get their turn between batches.
const REBUILD_BATCH: usize = 10_000;

/// The whole transferable state of release 5, state version 4: release 4's, byte for byte.
///
/// Its encoding is release 4's frozen `kv_states::v4::Kv` (`guests/kv-states`), which kv 4 and
/// the `kv-v3-to-v4` transformer write: change a serialized field here only together with a new
/// state version and a transformer to it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Kv {
    db: Db,
    /// Every connection's state, by the host's connection id. Boxed (serde encodes a box as its
    /// contents, so the state's bytes are release 4's): each event swaps its connection's client
    /// out for [`Kv::spare_client`] and back, a pointer each way rather than a `Client` of
    /// several hundred bytes.
    clients: BTreeMap<ConnId, Box<Client>>,
    /// What a connection's entry in `clients` holds while its event runs (see [`Kv::serve`]):
    /// never part of the state, which is taken between events.
    #[serde(skip)]
    spare_client: Option<Box<Client>>,
    stats: Stats,
    /// What `tasuki run --arg` configured. Not transferred: every instance's `init` reads the
    /// arguments again, and [`Server::resumed`] keeps the new instance's.
    #[serde(skip)]
    config: Config,
    /// The deadline the expiry timer is armed for. Not transferred: [`Server::resumed`] arms the
    /// timer afresh after an upgrade.
    #[serde(skip)]
    timer_armed_for: Option<u64>,
}

/// The counters `INFO` reports. They cross upgrades: uptime counts from the first start.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct Stats {
    /// When the server first started, Unix milliseconds; 0 until an instance sets it.
    pub(crate) started_ms: u64,
    pub(crate) connections_received: u64,
    pub(crate) commands_processed: u64,
}

/// The server's configuration, from `tasuki run --arg name=value`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Config {
    /// `requirepass=...`: connections must `AUTH` (or `HELLO ... AUTH`) before other commands.
    pub(crate) requirepass: Option<Vec<u8>>,
}

impl Config {
    /// Reads `name=value` arguments; an unknown name or a missing `=` is an error, so a typo
    /// refuses the start instead of leaving a server open.
    fn from_args(args: &[String]) -> Result<Self, String> {
        let mut config = Self::default();
        for arg in args {
            match arg.split_once('=') {
                Some(("requirepass", password)) if !password.is_empty() => {
                    config.requirepass = Some(password.as_bytes().to_vec());
                }
                _ => {
                    return Err(format!(
                        "kv: unknown argument `{arg}` (kv takes `requirepass=<password>`)"
                    ));
                }
            }
        }
        Ok(config)
    }
}

impl Server for Kv {
    const NAME: &'static str = "kv";
    const STATE_VERSION: u32 = 4;
    /// `serve` stops at the send window: a pipelined batch is offered in one call.
    const STOPS_AT_OUTPUT_LIMIT: bool = true;

    fn init(&mut self, ctx: &mut Ctx, args: &[String]) -> Result<(), String> {
        self.config = Config::from_args(args)?;
        self.stats.started_ms = ctx.now_ms();
        Ok(())
    }

    fn on_connect(&mut self, ctx: &mut Ctx, conn: &ConnInfo) {
        let mut client = Client::new(ctx.now_ms(), self.config.requirepass.is_none());
        client.addr.clone_from(&conn.peer);
        client.laddr.clone_from(&conn.listener);
        self.clients.insert(conn.id, Box::new(client));
        self.stats.connections_received += 1;
    }

    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
        BULK_LIMIT.call_once(|| resp::set_max_bulk_len(bulk_limit()));
        // One clock reading per event: the requests of one batch all run at the same instant.
        let now_ms = ctx.now_ms();
        let limit = ctx.output_limit(conn);
        let (consumed, close) = self.serve(conn, input, ctx.output(conn), now_ms, limit);
        if close {
            ctx.close(conn);
        }
        self.arm_expiry_timer(ctx, now_ms);
        consumed
    }

    /// Redis closes a client past its query-buffer limit without a word; kv says why first.
    fn on_input_limit(&mut self, ctx: &mut Ctx, conn: ConnId) {
        reply::error(ctx.output(conn), "ERR Protocol error: request over the query buffer limit");
    }

    fn on_disconnect(&mut self, _: &mut Ctx, conn: ConnId) {
        self.forget(conn);
    }

    fn on_timer(&mut self, ctx: &mut Ctx, id: u64) {
        if id != EXPIRY_TIMER {
            return;
        }
        self.timer_armed_for = None;
        let now_ms = ctx.now_ms();
        self.db.rebuild_some(REBUILD_BATCH);
        self.db.remove_expired(now_ms, EXPIRY_BATCH);
        self.mark_broken_watches(None);
        self.arm_expiry_timer(ctx, now_ms);
    }

    fn resumed(&mut self, ctx: &mut Ctx, fresh: Self) {
        self.config = fresh.config;
        if self.stats.started_ms == 0 {
            // From a release that did not count: uptime starts with this one.
            self.stats.started_ms = fresh.stats.started_ms;
        }
        self.rebuild_indexes();
        let now_ms = ctx.now_ms();
        self.arm_expiry_timer(ctx, now_ms);
    }

    /// None, on purpose: older states come through transformer components, so this release
    /// need not carry their types (see the crate docs).
    fn migrations() -> Migrations<Self> {
        Migrations::none()
    }
}

/// Sets `proto-max-bulk-len` once per instance, before its first request.
static BULK_LIMIT: std::sync::Once = std::sync::Once::new();

/// `proto-max-bulk-len`: half of what the host lets the app keep of one connection's input (as
/// redis's 512 MB is half its 1 GiB query buffer), so that an argument of this size arrives
/// whole, and so that no value is built that the instance cannot hold and export beside the
/// keyspace. A request announcing a longer one is refused at once (`invalid bulk length`), and
/// `SETRANGE`/`APPEND` refuse to build one.
fn bulk_limit() -> usize {
    match usize::try_from(tasuki_guest::host::input_limit() / 2) {
        Ok(0) => resp::MAX_BULK_LEN,
        Ok(half) => half,
        Err(_) => resp::MAX_BULK_LEN,
    }
}

impl Kv {
    /// Runs the whole requests at the front of `input` from connection `conn` at time
    /// `now_ms`, encoding the replies into `out`, until `out` holds `limit` bytes (the
    /// connection's send window, [`Ctx::output_limit`]: the rest waits until the client reads).
    /// Returns how many bytes were consumed, and whether the connection must close (after
    /// `QUIT` or a protocol error; everything after them is consumed unrun).
    fn serve(
        &mut self,
        conn: ConnId,
        input: &[u8],
        out: &mut Vec<u8>,
        now_ms: u64,
        limit: usize,
    ) -> (usize, bool) {
        // The connection's entry lends its client to the event and holds the spare meanwhile:
        // two lookups in the tree instead of a removal and an insertion, which move entries
        // through its nodes (1.3% of the samples at pipeline 1 with 1M keys, kv built with LTO).
        let spare = self.spare_client.take().unwrap_or_default();
        let authenticated = self.config.requirepass.is_none();
        let slot = self
            .clients
            .entry(conn)
            .or_insert_with(|| Box::new(Client::new(now_ms, authenticated)));
        let mut client = std::mem::replace(slot, spare);
        let mut parser = std::mem::take(&mut client.parser);
        let mut session = Session {
            conn,
            out,
            now_ms,
            quit: false,
            client: &mut client,
            others: Others::new(&self.clients, conn),
            config: &self.config,
            stats: &self.stats,
            rng: random::Rng::for_event(now_ms, conn, self.stats.commands_processed),
        };
        // One argument vector for every request of this event: pipelined requests reuse it.
        let mut args = Vec::new();
        let mut consumed = 0;
        let mut commands = 0;
        while !session.quit && session.out.len() < limit {
            let authenticated = session.client.authenticated;
            match parser.parse(&input[consumed..], &mut args, authenticated) {
                Ok(Some(used)) => {
                    consumed += used;
                    if args.is_empty() {
                        continue;
                    }
                    commands += 1;
                    let mark = session.out.len();
                    cmd::execute(&mut self.db, &mut session, &args);
                    match session.client.reply {
                        ReplyMode::On => {}
                        ReplyMode::Off => session.out.truncate(mark),
                        ReplyMode::SkipNext => session.client.reply = ReplyMode::Skip,
                        ReplyMode::Skip => {
                            session.out.truncate(mark);
                            session.client.reply = ReplyMode::On;
                        }
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    // Where the next request would start is unknowable now: answer like redis,
                    // then hang up.
                    let text = error.to_string();
                    reply::error_with(session.out, |out| {
                        out.extend_from_slice(b"ERR ");
                        out.extend_from_slice(text.as_bytes());
                    });
                    session.quit = true;
                }
            }
        }
        let quit = session.quit;
        if commands > 0 {
            client.last_ms = now_ms;
        }
        self.stats.commands_processed += commands;
        client.parser = parser;
        self.mark_broken_watches(Some((conn, &mut client)));
        if quit {
            // The host sends no disconnect for a connection the app closes.
            self.db.watches.unwatch(conn, &client.watched);
            self.spare_client = self.clients.remove(&conn);
            (input.len(), true)
        } else {
            if let Some(slot) = self.clients.get_mut(&conn) {
                self.spare_client = Some(std::mem::replace(slot, client));
            }
            (consumed, false)
        }
    }

    /// Records, in each connection's state, that a key it watches changed during this event.
    /// `current` is the connection whose entry is out of the table while its event runs.
    fn mark_broken_watches(&mut self, mut current: Option<(ConnId, &mut Client)>) {
        for conn in self.db.watches.take_broken() {
            match &mut current {
                Some((id, client)) if *id == conn => client.watch_broken = true,
                _ => {
                    if let Some(client) = self.clients.get_mut(&conn) {
                        client.watch_broken = true;
                    }
                }
            }
        }
    }

    /// Derives what is not transferred from what is: the deadline index, the watchers of each
    /// key; the expiry timer is to be armed again.
    fn rebuild_indexes(&mut self) {
        // One batch of the deadline index here, inside the upgrade's pause (all of it for a
        // small keyspace); the expiry timer rebuilds the rest, a batch per firing.
        self.db.start_rebuild();
        self.db.rebuild_some(REBUILD_BATCH);
        self.db.watches.clear();
        for (conn, client) in &self.clients {
            for key in &client.watched {
                self.db.watches.watch(*conn, key);
            }
        }
        self.timer_armed_for = None;
    }

    /// Drops a connection's state and its watches.
    fn forget(&mut self, conn: ConnId) {
        if let Some(client) = self.clients.remove(&conn) {
            self.db.watches.unwatch(conn, &client.watched);
        }
    }

    fn arm_expiry_timer(&mut self, ctx: &mut Ctx, now_ms: u64) {
        if let Some(after) = self.expiry_timer_due(now_ms) {
            ctx.set_timer(EXPIRY_TIMER, after);
        }
    }

    /// Whether the expiry timer must be armed (again), and to fire after how long. Arming only
    /// when the earliest deadline moves earlier keeps the timer off the hot path: a timer that
    /// fires early finds nothing due and is armed for the next deadline then.
    fn expiry_timer_due(&mut self, now_ms: u64) -> Option<Duration> {
        // While the deadline index is rebuilt, the timer fires at once to carry it on.
        let next = if self.db.rebuilding() { now_ms } else { self.db.next_deadline()? };
        if self.timer_armed_for.is_some_and(|armed| armed <= next) {
            return None;
        }
        self.timer_armed_for = Some(next);
        Some(Duration::from_millis(next.saturating_sub(now_ms)))
    }
}

tasuki_guest::export!(Kv);

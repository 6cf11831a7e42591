//! The key-value server, release 3: release 2's Redis-protocol (RESP2) store with expiry, plus
//! lists (`LPUSH`, `RPUSH`, `LPOP`, `RPOP`, `LRANGE`, `LLEN`) and hashes (`HSET`, `HGET`, `HDEL`,
//! `HGETALL`, `HLEN`), with `TYPE` and redis's `WRONGTYPE` errors.
//!
//! It speaks enough of redis for `redis-cli`, `redis-benchmark` and client libraries to use it as
//! they would use redis-server, with redis's own replies and error texts.
//!
//! # What changed since release 2, and how its state comes across
//!
//! A value is now a string, a list or a hash (`db::Value`), still with an optional deadline per
//! key, so the state is version 3 (`db::Entry { value: Value, expires_at_ms }`).
//!
//! On purpose, this release reads **only** state version 3: it carries no migration and no
//! frozen copy of older releases' types. A running release 2 reaches it through the
//! `kv-v2-to-v3` transformer component (`guests/transforms/kv-v2-to-v3`), and a release 1
//! through `kv-v1-to-v2` then `kv-v2-to-v3`, in one upgrade. The host learns this from
//! `describe` (`accepts: [3]`) and refuses an upgrade whose transformers do not end at version
//! 3 before anything pauses. Deadlines are absolute Unix milliseconds, so they cross every step
//! unchanged.
//!
//! Expired keys are removed lazily, by any command that touches them, and actively, by the
//! expiry timer (`EXPIRY_TIMER`), armed for the earliest deadline. The timer belongs to the
//! host and survives an upgrade, but what it is armed for is not transferred: after an upgrade
//! [`Server::resumed`] rebuilds the deadline index and arms it again.
//!
//! # Layout
//! - `lib.rs`: `Kv`, the state, and the [`Server`] implementation: the request loop, the
//!   expiry timer.
//! - `db.rs`: the keyspace of typed values with deadlines, and the only code that touches the
//!   map.
//! - `cmd/mod.rs`: the command table (names, arities) and the dispatch from a request to a
//!   handler, with the errors redis gives before a command runs.
//! - `cmd/connection.rs`, `cmd/strings.rs`, `cmd/keys.rs`, `cmd/expire.rs`, `cmd/lists.rs`,
//!   `cmd/hashes.rs`: one file per command family.
//! - `tests.rs`: requests in, replies out, on a clock the tests set (`cargo test -p kv-v3`),
//!   and the bytes of state version 3, pinned.
//! - The wire format is the shared `resp` crate, so every release parses the same way.

mod cmd;
mod db;
#[cfg(test)]
mod tests;

use cmd::Session;
use db::Db;
use resp::reply;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tasuki_guest::{ConnId, Ctx, Migrations, Server};

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

/// The whole transferable state of release 3, state version 3.
///
/// Its encoding is what the `kv-v2-to-v3` transformer writes from a frozen copy: change a
/// serialized field here only together with a new state version and a transformer to it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Kv {
    db: Db,
    /// The deadline the expiry timer is armed for. Not transferred: [`Server::resumed`] arms the
    /// timer afresh after an upgrade.
    #[serde(skip)]
    timer_armed_for: Option<u64>,
}

impl Server for Kv {
    const NAME: &'static str = "kv";
    const STATE_VERSION: u32 = 3;

    /// What release 3 answers differently from release 2 on purpose: `INFO`, which names the
    /// release, and the commands it added (lists and hashes), which release 2 refused as
    /// unknown.
    fn expected_difference(&self, request: &[u8], old: &[u8], _new: &[u8]) -> bool {
        let names = resp::command_names(request);
        (!names.is_empty() && names.iter().all(|name| name == b"INFO"))
            || old.starts_with(b"-ERR unknown command")
    }

    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
        // One clock reading per event: the requests of one batch all run at the same instant.
        let now_ms = ctx.now_ms();
        let (consumed, close) = self.serve(conn, input, ctx.output(conn), now_ms);
        if close {
            ctx.close(conn);
        }
        self.arm_expiry_timer(ctx, now_ms);
        consumed
    }

    fn on_timer(&mut self, ctx: &mut Ctx, id: u64) {
        if id != EXPIRY_TIMER {
            return;
        }
        self.timer_armed_for = None;
        let now_ms = ctx.now_ms();
        self.db.rebuild_some(REBUILD_BATCH);
        self.db.remove_expired(now_ms, EXPIRY_BATCH);
        self.arm_expiry_timer(ctx, now_ms);
    }

    fn resumed(&mut self, ctx: &mut Ctx, _fresh: Self) {
        // One batch of the index here, inside the upgrade's pause (all of it for a small
        // keyspace); the expiry timer rebuilds the rest, a batch per firing.
        self.db.start_rebuild();
        self.db.rebuild_some(REBUILD_BATCH);
        self.timer_armed_for = None;
        let now_ms = ctx.now_ms();
        self.arm_expiry_timer(ctx, now_ms);
    }

    /// None, on purpose: older states come through transformer components, so this release
    /// need not carry their types (see the crate docs). Spelled out rather than left to the
    /// default so that nobody adds one here thinking it was forgotten.
    fn migrations() -> Migrations<Self> {
        Migrations::none()
    }
}

impl Kv {
    /// Runs every whole request at the front of `input` at time `now_ms`, encoding the replies
    /// into `out`. Returns how many bytes were consumed, and whether the connection must close
    /// (after `QUIT` or a protocol error; everything after them is consumed unrun).
    fn serve(
        &mut self,
        conn: ConnId,
        input: &[u8],
        out: &mut Vec<u8>,
        now_ms: u64,
    ) -> (usize, bool) {
        let mut session = Session { conn, out, now_ms, quit: false };
        // One argument vector for every request of this event: pipelined requests reuse it.
        let mut args = Vec::new();
        let mut consumed = 0;
        while !session.quit {
            match resp::parse_into(&input[consumed..], &mut args) {
                Ok(Some(used)) => {
                    consumed += used;
                    if !args.is_empty() {
                        cmd::execute(&mut self.db, &mut session, &args);
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
        if session.quit { (input.len(), true) } else { (consumed, false) }
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

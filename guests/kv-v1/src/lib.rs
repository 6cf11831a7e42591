//! The key-value server, release 1: a Redis-protocol (RESP2) store of byte strings, run and
//! hot-swapped by tasuki.
//!
//! It speaks enough of redis for `redis-cli`, `redis-benchmark` and client libraries to use it as
//! they would use redis-server: strings (`SET`, `GET`, `INCR`, `MSET`, ...), keyspace commands
//! (`DEL`, `KEYS`, `FLUSHALL`, ...) and the connection and introspection commands clients send
//! on their own (`PING`, `SELECT 0`, `CONFIG GET save`, `CLIENT SETINFO`, `INFO`). Replies and
//! error texts are redis's own, byte for byte, so a client cannot tell the difference.
//!
//! What crosses an upgrade is `Kv`: the map from keys to values, nothing else. Release 2 reads
//! it through a frozen copy of these types (`kv-v2/src/v1.rs`), so their serialized shape must
//! never change here.
//!
//! # Layout
//! - `lib.rs`: `Kv`, the state, and the [`Server`] implementation: the loop that takes
//!   requests off a connection's input, runs them and queues the replies.
//! - `db.rs`: the keyspace, and the only code that touches the map.
//! - `cmd/mod.rs`: the command table (names, arities) and the dispatch from a request to a
//!   handler, with the errors redis gives before a command runs.
//! - `cmd/connection.rs`, `cmd/strings.rs`, `cmd/keys.rs`: one file per command family.
//! - `tests.rs`: requests in, replies out, natively (`cargo test -p kv-v1`).
//! - The wire format is the shared `resp` crate, so every release parses the same way.

mod cmd;
mod db;
#[cfg(test)]
mod tests;

use cmd::Session;
use db::Db;
use resp::reply;
use serde::{Deserialize, Serialize};
use tasuki_guest::{ConnId, Ctx, Server};

/// The whole transferable state of release 1, state version 1.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Kv {
    db: Db,
}

impl Server for Kv {
    const NAME: &'static str = "kv";
    const STATE_VERSION: u32 = 1;

    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
        let (consumed, close) = self.serve(conn, input, ctx.output(conn));
        if close {
            ctx.close(conn);
        }
        consumed
    }
}

impl Kv {
    /// Runs every whole request at the front of `input`, encoding the replies into `out`.
    /// Returns how many bytes were consumed, and whether the connection must close (after
    /// `QUIT` or a protocol error; everything after them is consumed unrun).
    fn serve(&mut self, conn: ConnId, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut session = Session { conn, out, quit: false };
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
}

tasuki_guest::export!(Kv);

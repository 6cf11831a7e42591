//! The README's first server, as it appears there (`README.md`, "Writing a server"; a test in
//! `tests/e2e/docs.rs` checks that the two do not drift apart): each line a client sends comes
//! back, with its terminator.
//!
//! `tests/artifacts` builds it for `wasm32-wasip2` and the end-to-end tests run it under a real
//! host; `src/tests.rs` drives the same type natively with `tasuki_guest::testing::TestHost`.

use serde::{Deserialize, Serialize};
use tasuki_guest::frame::{Framing, Lines};
use tasuki_guest::{ConnId, Ctx, Server};

/// Lines of at most 1 KiB, ended by LF or CRLF.
const LINES: Lines = Lines::new(1024);

#[derive(Default, Serialize, Deserialize)]
struct Echo {
    lines: u64,
}

impl Server for Echo {
    const NAME: &'static str = "echo";
    const STATE_VERSION: u32 = 1;

    // `input` is everything received on `conn` and not yet consumed. Answer one line and return
    // the bytes it took: the SDK offers the rest again at once, and keeps an unfinished line
    // (across upgrades too) until the rest of it arrives.
    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
        match LINES.next(input) {
            Ok(Some(line)) => {
                self.lines += 1;
                ctx.send(conn, &input[..line.consumed]);
                line.consumed
            }
            Ok(None) => 0,
            Err(too_long) => {
                ctx.send(conn, format!("error: {too_long}\n").as_bytes());
                ctx.close(conn);
                input.len()
            }
        }
    }
}

tasuki_guest::export!(Echo);

#[cfg(test)]
mod tests;

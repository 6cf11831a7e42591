//! A chat room over lines: what one member says, every other member reads. A server whose
//! events touch several connections and whose timers matter, to show how such a server is
//! tested natively (`src/tests.rs`, with `tasuki_guest::testing::TestHost`).
//!
//! The protocol, one line at a time (ended by LF or CRLF, at most 510 bytes before it):
//! - `NICK name`: the member is called `name` from now on; the others read `* old is now name`.
//! - `QUIT`: the member reads `* bye` and is disconnected; the others read `* name left`.
//! - any other line is said to the room: the others read `<name> line`.
//!
//! A member silent for [`IDLE`] reads `* idle for 300 s, bye` and is disconnected; its idle
//! timer (its connection id) is armed again by every line it sends. A line over the limit cuts
//! the member off. Members, names and armed timers cross an upgrade (timers are the host's).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use tasuki_guest::frame::{Framing, Lines};
use tasuki_guest::{ConnId, ConnInfo, Ctx, Server};

/// Lines of at most 512 bytes (IRC's limit, with its CRLF).
const LINES: Lines = Lines::new(510);

/// How long a member may stay silent.
const IDLE: Duration = Duration::from_secs(300);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Chat {
    /// Every member, by connection; each one's idle timer has its connection's id.
    members: BTreeMap<ConnId, Member>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Member {
    nick: String,
}

impl Server for Chat {
    const NAME: &'static str = "chat";
    const STATE_VERSION: u32 = 1;

    fn on_connect(&mut self, ctx: &mut Ctx, conn: &ConnInfo) {
        let nick = format!("guest{}", conn.id);
        ctx.send(conn.id, format!("* welcome, {nick}\r\n").as_bytes());
        self.tell_others(ctx, conn.id, &format!("* {nick} joined"));
        self.members.insert(conn.id, Member { nick });
        ctx.set_timer(conn.id, IDLE);
    }

    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
        let line = match LINES.next(input) {
            Ok(Some(line)) => line,
            Ok(None) => return 0,
            Err(too_long) => {
                ctx.send(conn, format!("* {too_long}, bye\r\n").as_bytes());
                self.leave(ctx, conn, "was cut off");
                ctx.close(conn);
                return input.len();
            }
        };
        let text = String::from_utf8_lossy(line.payload);
        ctx.set_timer(conn, IDLE);
        if text == "QUIT" {
            ctx.send(conn, b"* bye\r\n");
            self.leave(ctx, conn, "left");
            ctx.close(conn);
        } else if let Some(new) = text.strip_prefix("NICK ") {
            let Some(member) = self.members.get_mut(&conn) else { return line.consumed };
            let old = std::mem::replace(&mut member.nick, new.to_string());
            self.tell_others(ctx, conn, &format!("* {old} is now {new}"));
        } else if let Some(member) = self.members.get(&conn) {
            self.tell_others(ctx, conn, &format!("<{}> {text}", member.nick));
        }
        line.consumed
    }

    fn on_disconnect(&mut self, ctx: &mut Ctx, conn: ConnId) {
        self.leave(ctx, conn, "left");
    }

    fn on_timer(&mut self, ctx: &mut Ctx, conn: u64) {
        if self.members.contains_key(&conn) {
            ctx.send(conn, format!("* idle for {} s, bye\r\n", IDLE.as_secs()).as_bytes());
            self.leave(ctx, conn, "was idle");
            ctx.close(conn);
        }
    }
}

impl Chat {
    /// Sends `line` to every member but `from`.
    fn tell_others(&self, ctx: &mut Ctx, from: ConnId, line: &str) {
        for &member in self.members.keys().filter(|&&member| member != from) {
            let out = ctx.output(member);
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// `conn` is no longer a member: its timer is cancelled and the others are told why.
    fn leave(&mut self, ctx: &mut Ctx, conn: ConnId, why: &str) {
        if let Some(member) = self.members.remove(&conn) {
            ctx.cancel_timer(conn);
            self.tell_others(ctx, conn, &format!("* {} {why}", member.nick));
        }
    }
}

tasuki_guest::export!(Chat);

#[cfg(test)]
mod tests;

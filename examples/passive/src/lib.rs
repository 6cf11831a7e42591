//! Data ports opened at run time, as FTP's passive mode opens them (RFC 959 `PASV`, RFC 2428
//! `EPSV`): a client on the control connection asks for a port, the server opens a listener
//! ([`Ctx::listen`]) and answers with its number, and a data connection made to that port gets
//! the data — matched to the session that asked by the listener's id
//! ([`ConnInfo::listener_id`]). The listener belongs to the host: it stays open across an
//! upgrade, a rollback and a recovery.
//!
//! Line protocol on the control connection, one request per `\n`-terminated line:
//!
//! | request | reply |
//! |---|---|
//! | `PASV [port]` | `PORT <id> <port>\n`: a one-shot data port (closed once a client connected to it); `ERR <why>\n` if the host refused |
//! | `LISTEN [port]` | the same, for a port that stays open until `CLOSE` |
//! | `PUT text` | `OK\n`: the data every data connection gets from now on |
//! | `CLOSE id` | `CLOSED <id>\n` |
//! | `HOLD` / `RELEASE` | `OK\n`: while held, the state may not be exported, so an upgrade rolls back |
//! | `CRASH` | the server panics: the host rebuilds it from its checkpoint and journal |
//! | `INFO` | `passive <version> served=<n> listeners=<n> lost=<n>\n` |
//!
//! A data connection receives `DATA <listener id> <text>\n` and is closed. The control
//! connection that opened its port is told `SENT <listener id>\n`.
//!
//! `tests/artifacts` builds it for `wasm32-wasip2`; the end-to-end tests
//! (`host/tests/cli/listeners.rs`) run it under a real host with real sockets, and
//! `src/tests.rs` drives the same type natively with `tasuki_guest::testing::TestHost`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tasuki_guest::frame::{Framing, Lines};
use tasuki_guest::{ConnId, ConnInfo, Ctx, ListenError, ListenerId, Server};

/// Requests of at most 1 KiB.
const LINES: Lines = Lines::new(1024);

/// A data port some control connection asked for.
#[derive(Debug, Serialize, Deserialize)]
struct Port {
    /// The control connection that asked.
    owner: ConnId,
    /// Closed after its first data connection (`PASV`), or open until `CLOSE` (`LISTEN`).
    once: bool,
    /// Its address, once the host answered.
    address: Option<String>,
}

#[derive(Default, Serialize, Deserialize)]
struct Passive {
    /// The data a data connection gets.
    data: String,
    ports: BTreeMap<ListenerId, Port>,
    /// Data connections served.
    served: u64,
    /// Listeners the host said were lost (after a restore).
    lost: u64,
    /// `HOLD`: refuse to export the state.
    held: bool,
}

impl Passive {
    fn open(&mut self, ctx: &mut Ctx, owner: ConnId, port: &str, once: bool) -> Result<(), String> {
        let port: u16 = match port {
            "" => 0,
            port => port.parse().map_err(|e| format!("bad port {port}: {e}"))?,
        };
        let id = ctx.listen(port);
        self.ports.insert(id, Port { owner, once, address: None });
        Ok(())
    }
}

impl Server for Passive {
    const NAME: &'static str = "passive";
    const STATE_VERSION: u32 = 1;

    fn on_connect(&mut self, ctx: &mut Ctx, conn: &ConnInfo) {
        let Some(id) = conn.listener_id else { return };
        // A data connection: the data, then hang up, as an FTP data transfer ends.
        ctx.send(conn.id, format!("DATA {id} {}\n", self.data).as_bytes());
        ctx.close(conn.id);
        self.served += 1;
        if let Some(port) = self.ports.get(&id) {
            ctx.send(port.owner, format!("SENT {id}\n").as_bytes());
            if port.once {
                ctx.close_listener(id);
                self.ports.remove(&id);
            }
        }
    }

    fn on_listening(&mut self, ctx: &mut Ctx, id: ListenerId, answer: Result<String, ListenError>) {
        let Some(port) = self.ports.get_mut(&id) else { return };
        match answer {
            Ok(address) => {
                let number = address.rsplit(':').next().unwrap_or_default().to_string();
                ctx.send(port.owner, format!("PORT {id} {number}\n").as_bytes());
                port.address = Some(address);
            }
            Err(ListenError::Lost(_)) => {
                self.lost += 1;
                self.ports.remove(&id);
            }
            Err(e) => {
                ctx.send(port.owner, format!("ERR {e}\n").as_bytes());
                self.ports.remove(&id);
            }
        }
    }

    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
        let line = match LINES.next(input) {
            Ok(Some(line)) => line,
            Ok(None) => return 0,
            Err(too_long) => {
                ctx.send(conn, format!("ERR {too_long}\n").as_bytes());
                ctx.close(conn);
                return input.len();
            }
        };
        let request = String::from_utf8_lossy(line.payload).into_owned();
        let reply = match request.split_once(' ').unwrap_or((&request, "")) {
            ("PASV", port) => self.open(ctx, conn, port, true).err().map(|e| format!("ERR {e}\n")),
            ("LISTEN", port) => {
                self.open(ctx, conn, port, false).err().map(|e| format!("ERR {e}\n"))
            }
            ("PUT", text) => {
                self.data = text.to_string();
                Some("OK\n".into())
            }
            ("CLOSE", id) => match id.parse::<ListenerId>() {
                Ok(id) => {
                    ctx.close_listener(id);
                    self.ports.remove(&id);
                    Some(format!("CLOSED {id}\n"))
                }
                Err(e) => Some(format!("ERR bad id {id}: {e}\n")),
            },
            ("HOLD", _) => {
                self.held = true;
                Some("OK\n".into())
            }
            ("RELEASE", _) => {
                self.held = false;
                Some("OK\n".into())
            }
            ("CRASH", _) => panic!("CRASH asked for"),
            ("INFO", _) => Some(format!(
                "passive {} served={} listeners={} lost={}\n",
                env!("CARGO_PKG_VERSION"),
                self.served,
                self.ports.len(),
                self.lost
            )),
            _ => Some(format!("ERR unknown request {request}\n")),
        };
        if let Some(reply) = reply {
            ctx.send(conn, reply.as_bytes());
        }
        line.consumed
    }

    fn on_disconnect(&mut self, ctx: &mut Ctx, conn: ConnId) {
        // A session that goes away takes its data ports with it.
        let owned: Vec<ListenerId> =
            self.ports.iter().filter(|(_, p)| p.owner == conn).map(|(&id, _)| id).collect();
        for id in owned {
            ctx.close_listener(id);
            self.ports.remove(&id);
        }
    }

    fn export_ready(&self) -> Result<(), String> {
        if self.held { Err("held by HOLD".into()) } else { Ok(()) }
    }
}

tasuki_guest::export!(Passive);

#[cfg(test)]
mod tests;

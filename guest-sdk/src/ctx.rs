//! What an app can do while it handles an event: queue output, close, arm timers, read the clock.

use crate::runtime::bindings::tasuki::server::{net, timers};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A connection's id: stable across versions, never reused while the host runs.
pub type ConnId = u64;

pub use crate::runtime::bindings::tasuki::server::types::ConnInfo;

/// The handle an app gets with every event.
///
/// Output is gathered during the event and handed to the host in one call per connection when
/// the event returns; the host writes it in order, after anything queued earlier.
#[derive(Debug, Default)]
pub struct Ctx {
    out: Vec<(ConnId, Vec<u8>)>,
    closes: Vec<ConnId>,
}

impl Ctx {
    /// Queue `bytes` for `conn`.
    pub fn send(&mut self, conn: ConnId, bytes: &[u8]) {
        self.output(conn).extend_from_slice(bytes);
    }

    /// The output buffer for `conn`, to encode replies into directly.
    pub fn output(&mut self, conn: ConnId) -> &mut Vec<u8> {
        // Almost every event writes to one connection, so the last entry is the one wanted.
        let index = match self.out.iter().rposition(|(c, _)| *c == conn) {
            Some(index) => index,
            None => {
                self.out.push((conn, Vec::new()));
                self.out.len() - 1
            }
        };
        &mut self.out[index].1
    }

    /// Close `conn` once everything queued for it has been written.
    pub fn close(&mut self, conn: ConnId) {
        if !self.closes.contains(&conn) {
            self.closes.push(conn);
        }
    }

    /// Arm timer `id` to fire after `after`, replacing a timer with the same id. Timers belong
    /// to the host: one armed now fires even if a newer version is running by then.
    pub fn set_timer(&mut self, id: u64, after: Duration) {
        timers::set(id, u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
    }

    /// Disarm timer `id`.
    pub fn cancel_timer(&mut self, id: u64) {
        timers::cancel(id);
    }

    /// Wall-clock time in milliseconds since the Unix epoch, as the host's clock tells it.
    pub fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Hands queued output and closes to the host. Returns the connections closed.
    pub(crate) fn flush(&mut self) -> Vec<ConnId> {
        for (conn, bytes) in self.out.drain(..) {
            if !bytes.is_empty() {
                net::send(conn, &bytes);
            }
        }
        for conn in &self.closes {
            net::close(*conn);
        }
        std::mem::take(&mut self.closes)
    }
}

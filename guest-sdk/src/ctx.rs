//! What an app can do while it handles an event: queue output, close, arm timers, read the clock.
//!
//! `Ctx` only records: the runtime hands what an event recorded to the host when the event
//! returns (through `net` and `timers` in a component, to a [`crate::testing::TestHost`] in a
//! native test), so an app's code is the same in both.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A connection's id: stable across versions, never reused while the host runs.
pub type ConnId = u64;

pub use crate::runtime::bindings::tasuki::server::types::ConnInfo;

/// The handle an app gets with every event.
///
/// Output, closes and timers are gathered during the event and handed to the host when the
/// event returns, in one call per connection for output; the host writes output in order, after
/// anything queued earlier, and applies timers in the order they were asked for.
#[derive(Debug, Default)]
pub struct Ctx {
    out: Vec<(ConnId, Vec<u8>)>,
    closes: Vec<ConnId>,
    timers: Vec<TimerOp>,
    /// The clock of a [`crate::testing::TestHost`], in Unix ms; `None` reads the system clock
    /// (in a component, the host's: frozen for the event, virtual under `tasuki test`).
    clock_ms: Option<u64>,
}

/// A timer request, in the order the app made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerOp {
    /// Arm timer `id` to fire after this many milliseconds.
    Set(u64, u64),
    /// Disarm timer `id`.
    Cancel(u64),
}

/// What one event asked of the host, taken from a [`Ctx`] when the event returns.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    /// Output per connection, in the order each connection was first written to.
    pub(crate) out: Vec<(ConnId, Vec<u8>)>,
    pub(crate) timers: Vec<TimerOp>,
    /// Connections to close after their output, in the order asked.
    pub(crate) closes: Vec<ConnId>,
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

    /// Close `conn` once everything queued for it has been written. The SDK then offers it no
    /// more input, and the host sends no `on_disconnect` for it.
    pub fn close(&mut self, conn: ConnId) {
        if !self.closes.contains(&conn) {
            self.closes.push(conn);
        }
    }

    /// Whether [`Ctx::close`] was called for `conn` during this event.
    pub fn is_closing(&self, conn: ConnId) -> bool {
        self.closes.contains(&conn)
    }

    /// Arm timer `id` to fire after `after` (whole milliseconds, rounded down), replacing a
    /// timer with the same id. Timers belong to the host: one armed now fires even if a newer
    /// version is running by then. The host arms at most 100,000 at once (see the README).
    pub fn set_timer(&mut self, id: u64, after: Duration) {
        let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        self.timers.push(TimerOp::Set(id, ms));
    }

    /// Disarm timer `id`; nothing happens if it is not armed.
    pub fn cancel_timer(&mut self, id: u64) {
        self.timers.push(TimerOp::Cancel(id));
    }

    /// Wall-clock time in milliseconds since the Unix epoch, as the host's clock tells it: in a
    /// component the host's clock, frozen at the start of the event; in a native test the
    /// [`crate::testing::TestHost`]'s clock.
    pub fn now_ms(&self) -> u64 {
        if let Some(ms) = self.clock_ms {
            return ms;
        }
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Pins the clock [`Ctx::now_ms`] reads (a native test's), or `None` for the system's.
    pub(crate) fn set_clock(&mut self, ms: Option<u64>) {
        self.clock_ms = ms;
    }

    /// Takes what the event asked for, leaving the context empty for the next event.
    pub(crate) fn take_requests(&mut self) -> Requests {
        Requests {
            out: std::mem::take(&mut self.out),
            timers: std::mem::take(&mut self.timers),
            closes: std::mem::take(&mut self.closes),
        }
    }
}

//! What an app can do while it handles an event: queue output, stream a payload, close, arm
//! timers, read the clock.
//!
//! `Ctx` only records: the runtime hands what an event recorded to the host when the event
//! returns (through `net` and `timers` in a component, to a [`crate::testing::TestHost`] in a
//! native test), so an app's code is the same in both.

use crate::stream::Source;
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
    /// Streams started during the event: the connection, how much of its output was queued
    /// when the stream was started (the stream goes after those bytes, before the rest), and
    /// what to send.
    streams: Vec<(ConnId, usize, Source)>,
    /// Connections the SDK stopped sending to for want of window: the host is asked to say when
    /// they can take more.
    notify: Vec<ConnId>,
    /// The connection whose input is being offered, and the length its output may reach in
    /// this event before its send window is used ([`Ctx::output_limit`]).
    output_limit: Option<(ConnId, usize)>,
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
    /// Connections whose host is asked to call `on-writable` (`net.notify-writable`).
    pub(crate) notify: Vec<ConnId>,
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

    /// The length `self.output(conn)` may reach during this call before `conn`'s send window is
    /// used up, in bytes: the output queued for it so far in this event counts. Inside
    /// [`crate::Server::on_data`] for `conn` with a bounded window (`--output-buffer`), the
    /// window the host last granted less what was sent since; `usize::MAX` otherwise (no bound,
    /// another connection, another event). An app with [`crate::Server::STOPS_AT_OUTPUT_LIMIT`]
    /// returns once its output reaches it; output past it is still sent, and the SDK offers no
    /// more input until the client reads.
    pub fn output_limit(&self, conn: ConnId) -> usize {
        match self.output_limit {
            Some((c, limit)) if c == conn => limit,
            _ => usize::MAX,
        }
    }

    /// Sets (or with `None` clears) what [`Ctx::output_limit`] answers.
    pub(crate) fn set_output_limit(&mut self, limit: Option<(ConnId, usize)>) {
        self.output_limit = limit;
    }

    /// Send everything `source` holds to `conn`, after what is queued for it so far, as one
    /// call: the SDK sends as much as the connection's send window allows now and the rest as
    /// the client reads (each time the host says the connection can take more), so that a
    /// payload of any size costs the host at most `--output-buffer` of memory. Output queued
    /// for `conn` after this call (in this event or a later one) goes after the stream's last
    /// byte, and the SDK offers `conn`'s input to [`crate::Server::on_data`] again only once
    /// the stream is sent, so replies stay in order. [`crate::Server::on_stream_end`] says when
    /// it ended and how.
    ///
    /// A stream is state: what is left of it, and where it stands, cross an upgrade with the
    /// connection, and the new version carries it on (see [`Source`] for how each kind is
    /// taken up again). [`Ctx::close`] after it closes the connection once it is sent.
    pub fn stream(&mut self, conn: ConnId, source: Source) {
        let at = self.output(conn).len();
        self.streams.push((conn, at, source));
    }

    /// Close `conn` once everything queued for it has been written. The SDK then offers it no
    /// more input, and the host sends no `on_disconnect` for it. Streams queued for it are
    /// sent first.
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

    /// Bytes queued for `conn` during this event.
    pub(crate) fn queued(&self, conn: ConnId) -> usize {
        self.out.iter().rev().find(|(c, _)| *c == conn).map_or(0, |(_, bytes)| bytes.len())
    }

    /// The connections with output queued during this event, with how many bytes.
    pub(crate) fn written(&self) -> impl Iterator<Item = (ConnId, usize)> + '_ {
        self.out.iter().map(|(c, bytes)| (*c, bytes.len()))
    }

    /// Whether a stream to `conn` was started during this event and not yet taken.
    pub(crate) fn has_streams(&self, conn: ConnId) -> bool {
        self.streams.iter().any(|(c, _, _)| *c == conn)
    }

    /// The connections with streams started during this event and not yet taken.
    pub(crate) fn streaming(&self) -> Vec<ConnId> {
        let mut conns: Vec<ConnId> = self.streams.iter().map(|(c, _, _)| *c).collect();
        conns.dedup();
        conns
    }

    /// Takes the streams started for `conn` during this event, in order, each with where in
    /// the event's output for `conn` it goes.
    pub(crate) fn take_streams(&mut self, conn: ConnId) -> Vec<(usize, Source)> {
        let mut taken = Vec::new();
        self.streams.retain_mut(|(c, at, source)| {
            if *c != conn {
                return true;
            }
            taken.push((*at, std::mem::replace(source, Source::Bytes(Vec::new()))));
            false
        });
        taken
    }

    /// Asks the host to call `on-writable` for `conn` (`net.notify-writable`).
    pub(crate) fn notify_writable(&mut self, conn: ConnId) {
        if !self.notify.contains(&conn) {
            self.notify.push(conn);
        }
    }

    /// Takes what the event asked for, leaving the context empty for the next event.
    pub(crate) fn take_requests(&mut self) -> Requests {
        Requests {
            out: std::mem::take(&mut self.out),
            timers: std::mem::take(&mut self.timers),
            notify: std::mem::take(&mut self.notify),
            closes: std::mem::take(&mut self.closes),
        }
    }
}

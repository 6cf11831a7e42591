//! What an app can do while it handles an event: queue output, stream a payload, close, arm
//! timers, open and close listeners, read the clock.
//!
//! `Ctx` only records: the runtime hands what an event recorded to the host when the event
//! returns (through `net` and `timers` in a component, to a [`crate::testing::TestHost`] in a
//! native test), so an app's code is the same in both.

use crate::stream::Source;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A connection's id: stable across versions, never reused while the host runs.
pub type ConnId = u64;

/// A listener the app opened at run time ([`Ctx::listen`]): named by the SDK, never reused
/// while a listener or a connection accepted on it is open.
pub type ListenerId = u64;

/// What the host knows about a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// The connection.
    pub id: ConnId,
    /// The address it was accepted on, as `ip:port`: the local address the client reached (on
    /// a `--listen` address or on the app's listener `listener_id`; for a wildcard listener,
    /// `0.0.0.0:PORT`, the interface's own address, as `getsockname` gives it).
    pub listener: String,
    /// The client's address, as `ip:port`.
    pub peer: String,
    /// The listener the app opened at run time that accepted it ([`Ctx::listen`]); `None` for
    /// the host's own `--listen` listeners. A data connection is matched to the session that
    /// opened its port by this.
    pub listener_id: Option<ListenerId>,
}

impl ConnInfo {
    /// The connection as the host describes it, accepted on `listener_id` if given.
    pub(crate) fn from_host(
        info: crate::runtime::bindings::tasuki::server::types::ConnInfo,
        listener_id: Option<ListenerId>,
    ) -> Self {
        Self { id: info.id, listener: info.listener, peer: info.peer, listener_id }
    }
}

/// Why a listener was not opened, or is not open any more ([`crate::Server::on_listening`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenError {
    /// The host has as many run-time listeners open as it allows (`tasuki run
    /// --max-listeners`, the number given).
    Limit(u32),
    /// The port is not one the operator allows (`--data-ports`): says what is.
    NotAllowed(String),
    /// The port is in use, or no allowed port is free: says which.
    InUse(String),
    /// The id names a listener that is open, or asked for and not answered yet.
    IdInUse,
    /// The system refused for another reason, in its words.
    Failed(String),
    /// The listener was open and is gone: the host started from a snapshot file (`tasuki run
    /// --restore`), and listening sockets do not outlive the process.
    Lost(String),
}

impl std::fmt::Display for ListenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Limit(max) => {
                write!(f, "{max} listeners are open, the most the host allows (--max-listeners)")
            }
            Self::NotAllowed(why) => write!(f, "not allowed: {why}"),
            Self::InUse(why) => write!(f, "in use: {why}"),
            Self::IdInUse => write!(f, "the id names a listener open already"),
            Self::Failed(why) => write!(f, "failed: {why}"),
            Self::Lost(why) => write!(f, "lost: {why}"),
        }
    }
}

impl std::error::Error for ListenError {}

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
    /// Listeners asked for (id, port) and closed, in the order asked.
    listens: Vec<ListenOp>,
    /// The id the next [`Ctx::listen`] gives (part of the state that crosses an upgrade).
    pub(crate) next_listener: ListenerId,
    /// The connections' sessions, if the app keeps any ([`crate::Server::session_type`]).
    pub(crate) sessions: Option<crate::session::Store>,
    /// Output buffers of earlier events, emptied, for the next events' output (see
    /// [`Ctx::recycle`]).
    spare: Vec<Vec<u8>>,
}

/// The most output buffers kept for later events: one per connection written to in an event,
/// and an event almost always writes to one.
const SPARE_BUFFERS: usize = 4;

/// The largest output buffer kept for later events, in bytes of capacity: a reply to one large
/// request (a big value, `KEYS *`) gives its memory back rather than holding it for small ones.
const SPARE_CAPACITY: usize = 64 << 10;

/// A listener request, in the order the app made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenOp {
    /// Open listener `id` on this port (0: any the host allows).
    Listen(ListenerId, u16),
    /// Close listener `id`.
    Close(ListenerId),
    /// Close listener `id`, which the SDK does not track.
    CloseUntracked(ListenerId),
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
    /// Listeners to open and close, in the order asked.
    pub(crate) listens: Vec<ListenOp>,
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
                self.out.push((conn, self.spare.pop().unwrap_or_default()));
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

    /// Asks the host to open a listening socket on `port` of its bind address (the address of
    /// its first `--listen`): 0 for any free port the operator allows (`tasuki run
    /// --data-ports`, else one the system picks), or a port in `--data-ports`. Returns the
    /// listener's id at once; the answer — its address, `ip:port`, or why not
    /// ([`ListenError`]) — comes to [`crate::Server::on_listening`] right after this event,
    /// before any other. Connections accepted on it reach [`crate::Server::on_connect`] with
    /// [`ConnInfo::listener_id`] set to this id.
    ///
    /// This is what FTP's passive mode needs (RFC 959 `PASV`, RFC 2428 `EPSV`): open a port,
    /// tell the client its number, accept the data connection on it, close it. The listener
    /// belongs to the host: it stays open across upgrades and rollbacks (the new version
    /// accepts on it) and a recovery after a trap, until [`Ctx::close_listener`]. After `tasuki
    /// run --restore` it is gone, and the app is told ([`ListenError::Lost`]).
    pub fn listen(&mut self, port: u16) -> ListenerId {
        let id = self.next_listener.max(1);
        self.next_listener = id + 1;
        self.listens.push(ListenOp::Listen(id, port));
        id
    }

    /// Closes listener `id` once this event returns: no connection is accepted on it from then
    /// on and its port is free again; connections accepted on it stay open. Nothing happens if
    /// it is not open. A listener asked for and closed in the same event is closed before the
    /// app would hear of it.
    pub fn close_listener(&mut self, id: ListenerId) {
        self.listens.push(ListenOp::Close(id));
    }

    /// Closes listener `id`, which the SDK does not track (an answer for a listener the app
    /// no longer knows).
    pub(crate) fn close_listener_untracked(&mut self, id: ListenerId) {
        self.listens.push(ListenOp::CloseUntracked(id));
    }

    /// Wall-clock time in milliseconds since the Unix epoch, as the host's clock tells it: in a
    /// component the host's clock, frozen at the start of the event; in a native test the
    /// [`crate::testing::TestHost`]'s clock.
    pub fn now_ms(&self) -> u64 {
        if let Some(ms) = self.clock_ms {
            return ms;
        }
        // Whole seconds and the milliseconds past them, not `as_millis`: its `u128` is
        // multiplied in software on wasm32 (`__multi3`), once every event.
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
            d.as_secs().saturating_mul(1000).saturating_add(u64::from(d.subsec_millis()))
        })
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

    /// Takes back an event's output once it was handed to the host, so that the next events
    /// write into the same buffers: an event that allocated its output buffer and the list of
    /// them afresh cost four allocator calls or more (each growth of the buffer is one), a few
    /// per cent of a small request's time in `perf` (kv at pipeline 1).
    pub(crate) fn recycle(&mut self, mut out: Vec<(ConnId, Vec<u8>)>) {
        for (_, mut bytes) in out.drain(..) {
            if self.spare.len() < SPARE_BUFFERS && bytes.capacity() <= SPARE_CAPACITY {
                bytes.clear();
                self.spare.push(bytes);
            }
        }
        if self.out.is_empty() && out.capacity() <= SPARE_BUFFERS {
            self.out = out;
        }
    }

    /// Takes what the event asked for, leaving the context empty for the next event.
    pub(crate) fn take_requests(&mut self) -> Requests {
        Requests {
            out: std::mem::take(&mut self.out),
            timers: std::mem::take(&mut self.timers),
            notify: std::mem::take(&mut self.notify),
            closes: std::mem::take(&mut self.closes),
            listens: std::mem::take(&mut self.listens),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The output of one event, handed back as the runtime does once the host has it.
    fn event(ctx: &mut Ctx, writes: &[(ConnId, usize)]) {
        for &(conn, len) in writes {
            ctx.output(conn).extend(std::iter::repeat_n(b'x', len));
        }
        let requests = ctx.take_requests();
        ctx.recycle(requests.out);
    }

    #[test]
    fn a_later_event_writes_into_an_earlier_ones_buffer_emptied() {
        let mut ctx = Ctx::default();
        event(&mut ctx, &[(1, 1000)]);
        let output = ctx.output(2);
        assert!(output.is_empty(), "no byte of the last event's output is sent again");
        assert!(output.capacity() >= 1000, "the buffer is the last event's");
    }

    #[test]
    fn a_large_reply_gives_its_buffer_back() {
        let mut ctx = Ctx::default();
        event(&mut ctx, &[(1, SPARE_CAPACITY + 1)]);
        assert!(ctx.spare.is_empty());
    }

    #[test]
    fn spare_buffers_are_bounded() {
        let mut ctx = Ctx::default();
        let writes: Vec<(ConnId, usize)> = (0..3 * SPARE_BUFFERS as u64).map(|c| (c, 10)).collect();
        event(&mut ctx, &writes);
        assert_eq!(ctx.spare.len(), SPARE_BUFFERS);
        assert!(ctx.out.capacity() <= SPARE_BUFFERS, "a long list of buffers is not kept");
    }
}

//! The glue between the generated bindings and an app's [`Server`]: per-connection input
//! buffers and how input is offered, send windows and streams (back-pressure), the snapshot
//! layout, and migrations on import. Used through [`crate::export!`], and by
//! [`crate::testing::TestHost`] with a recorder in place of the host.
//!
//! **Back-pressure.** Each connection has a send window: the bytes the host takes before the
//! output queued for it passes `--output-buffer` — that whole buffer for a new connection, less
//! every byte the app sends, renewed by the host's `on-writable` (credit, as in HTTP/2's flow
//! control, RFC 9113 section 5.2). Input is offered in slices sized so that a slice's replies
//! fit what is left of the window, at the rate of output per input byte the last slice showed;
//! once the window is used up the SDK stops, leaves the rest of the input unconsumed, asks the
//! host to say when the connection can take more (the host then holds that connection's further
//! input), and goes on when it does. An app that answers a whole batch per call thus makes
//! about one window of output per event, however many requests a read holds, and a client
//! that pipelines requests without reading is answered as fast as it reads. An app that stops
//! by itself at the window ([`Server::STOPS_AT_OUTPUT_LIMIT`], kv) is offered all the input in
//! one call instead, and told the window through [`Ctx::output_limit`]. The window, the
//! streams and whether the app is in the middle of a message are per-connection state that
//! crosses an upgrade and that a checkpoint holds, so a replay makes the same decisions.

use crate::ctx::{ListenError, ListenOp, ListenerId, TimerOp};
use crate::precopy::{self, Mode, PRECOPY_SECTION, Passed};
use crate::stream::{Filled, Source, Stream, StreamEnd};
use crate::{
    CONNS_SECTION, CONNS_SECTION_VERSION, ConnId, Ctx, FLOW_SECTIONS_VERSION, LISTENERS_SECTION,
    LISTENERS_SECTION_VERSION, SESSIONS_SECTION, STREAMS_SECTION, Server, WINDOWS_SECTION,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "tasuki:server/server",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "tasuki_guest::runtime::bindings",
        runtime_path: "tasuki_guest::runtime::wit_bindgen_rt",
    });
}
#[doc(hidden)]
pub use wit_bindgen::rt as wit_bindgen_rt;

use bindings::tasuki::server::types::{
    AppInfo, Chunk, ConnInfo, PrecopyBatch, Section, SectionSpec, Snapshot,
};

/// Where an instance's requests go when an event returns: the host's `net` and `timers` imports
/// in a component ([`Imports`]), a recorder in a native test.
pub trait HostCalls {
    /// `net.send`: queue `bytes` (never empty) for `conn`.
    fn send(&mut self, conn: ConnId, bytes: &[u8]);
    /// `net.close`: close `conn` after its output.
    fn close(&mut self, conn: ConnId);
    /// `timers.set`: arm timer `id` to fire after `after_ms` milliseconds.
    fn set_timer(&mut self, id: u64, after_ms: u64);
    /// `timers.cancel`.
    fn cancel_timer(&mut self, id: u64);
    /// `net.notify-writable`: call `on-writable` for `conn` once it can take more.
    fn notify_writable(&mut self, conn: ConnId);
    /// `listeners.listen`: open listener `id` on `port`, and answer with `on-listening`.
    fn listen(&mut self, id: ListenerId, port: u16);
    /// `listeners.unlisten`: close listener `id`.
    fn unlisten(&mut self, id: ListenerId);
}

/// The host's imports: what a component's requests go to.
#[derive(Debug, Default)]
pub struct Imports;

impl HostCalls for Imports {
    fn send(&mut self, conn: ConnId, bytes: &[u8]) {
        bindings::tasuki::server::net::send(conn, bytes);
    }
    fn close(&mut self, conn: ConnId) {
        bindings::tasuki::server::net::close(conn);
    }
    fn set_timer(&mut self, id: u64, after_ms: u64) {
        bindings::tasuki::server::timers::set(id, after_ms);
    }
    fn cancel_timer(&mut self, id: u64) {
        bindings::tasuki::server::timers::cancel(id);
    }
    fn notify_writable(&mut self, conn: ConnId) {
        bindings::tasuki::server::net::notify_writable(conn);
    }
    fn listen(&mut self, id: ListenerId, port: u16) {
        bindings::tasuki::server::listeners::listen(id, port);
    }
    fn unlisten(&mut self, id: ListenerId) {
        bindings::tasuki::server::listeners::unlisten(id);
    }
}

/// The first slice of an event's input, before the SDK knows how much output a byte of it
/// makes, and the least slice offered while some window is left: a request or two (a redis
/// `GET` is about 24 bytes), whose replies, however large, are seen before more is offered.
/// Each next slice is at most twice the last (a slow start, as TCP's), so a change in the
/// kind of request is seen before it can make much more than the window.
pub const MIN_OFFER: usize = 64;
/// The largest slice offered while a connection's window is bounded: a batch-at-once app's
/// output per call is at most what this much input makes. 4 KiB of input is a few hundred
/// small requests, so the extra calls cost little beside the requests themselves.
pub const MAX_OFFER: usize = 4096;

/// The send window of a connection that has no bound (`host-info.output-buffer` is 0, as
/// outside a host).
const UNBOUNDED: u64 = u64::MAX;

/// A connection as the SDK tracks it.
#[derive(Debug)]
struct Conn {
    info: crate::ConnInfo,
    /// Bytes received and not yet consumed by the app.
    input: Vec<u8>,
    flow: Flow,
}

/// A connection's back-pressure state. Crosses an upgrade and is in every checkpoint (the
/// window in [`WINDOWS_SECTION`], the streams in [`STREAMS_SECTION`]): a replayed event must
/// find the window and the stream where the first run did.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Flow {
    /// Bytes the host takes before this connection's queued output passes `--output-buffer`,
    /// as far as the SDK knows: the last window the host gave, less what was sent since. 0
    /// after an import from a release that did not count it (the SDK asks before sending);
    /// [`UNBOUNDED`] when the host has no bound.
    credit: u64,
    /// The app consumed nothing of all the input it had, this many bytes (0: it did consume):
    /// it is in the middle of a message. Offered again once more arrives, a little more than
    /// that first.
    refused: u64,
    /// The SDK asked the host to say when the connection can take more, and is waiting.
    waiting: bool,
    /// Streams queued, the first one under way.
    streams: VecDeque<Stream>,
    /// The app closed the connection while streams were queued: closed once they are sent.
    closing: bool,
}

impl Flow {
    /// A new connection's: the whole of `--output-buffer`.
    fn new() -> Self {
        let window = crate::host::output_buffer();
        Self::with_credit(if window == 0 { UNBOUNDED } else { window })
    }

    /// One that crossed from a release that did not count its window: the host's queue is
    /// unknown, so the SDK asks before it sends (no bound, no asking, if the host has none).
    /// `input` is what that release left unconsumed: it offered input until the app consumed
    /// nothing, so that is a message under way.
    fn unknown(input: usize) -> Self {
        let credit = if crate::host::output_buffer() == 0 { UNBOUNDED } else { 0 };
        let mut flow = Self::with_credit(credit);
        flow.refused = input as u64;
        flow
    }

    fn with_credit(credit: u64) -> Self {
        Self { credit, refused: 0, waiting: false, streams: VecDeque::new(), closing: false }
    }
}

/// One connection in the [`WINDOWS_SECTION`]: [`Flow`]'s window.
#[derive(Debug, Serialize, Deserialize)]
struct WindowRecord {
    id: ConnId,
    credit: u64,
    refused: u64,
    waiting: bool,
}

/// One connection in the [`STREAMS_SECTION`]: [`Flow`]'s streams.
#[derive(Debug, Serialize, Deserialize)]
struct StreamsRecord {
    id: ConnId,
    streams: VecDeque<Stream>,
    closing: bool,
}

/// A listener the app opened at run time, as the SDK tracks it: crosses an upgrade in the
/// [`LISTENERS_SECTION`], so that the new version knows which listener a connection came from
/// and can close them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Listening {
    /// Asked for on this port, not answered yet.
    Asked(u16),
    /// Open at this address.
    Open(String),
}

/// The [`LISTENERS_SECTION`]: the app's listeners, the next id to give, and the connections
/// accepted on them.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ListenersRecord {
    next: ListenerId,
    listeners: Vec<(ListenerId, Listening)>,
    accepted: Vec<(ConnId, ListenerId)>,
}

/// One app instance: its state, its connections, the output of the event in progress, and
/// where its requests go (`H`).
#[derive(Debug)]
pub struct Runtime<S, H = Imports> {
    server: S,
    ctx: Ctx,
    conns: BTreeMap<ConnId, Conn>,
    /// Bytes of unconsumed input over all of `conns`.
    unconsumed: usize,
    /// Per connection, how much of the event's output for it is in place: sent directly, or
    /// stream bytes pumped. What an app queues past it while streams wait goes behind them.
    placed: BTreeMap<ConnId, usize>,
    /// The listeners the app opened at run time, by id.
    listeners: BTreeMap<ListenerId, Listening>,
    version: &'static str,
    host: H,
}

impl<S: Server> Runtime<S> {
    /// A fresh instance of release `version`, in a component.
    pub fn new(version: &'static str) -> Self {
        Self::with_host(version, Imports)
    }
}

impl<S: Server, H: HostCalls> Runtime<S, H> {
    /// A fresh instance of release `version` whose requests go to `host`.
    pub fn with_host(version: &'static str, host: H) -> Self {
        let mut ctx = Ctx::default();
        ctx.sessions = S::session_type().map(crate::session::Store::new);
        Self {
            server: S::default(),
            ctx,
            conns: BTreeMap::new(),
            unconsumed: 0,
            placed: BTreeMap::new(),
            listeners: BTreeMap::new(),
            version,
            host,
        }
    }

    /// Hands what the event asked for to the host: listeners opened and closed, output, then
    /// timers, then requests to be told of a window, then closes (whose connections the SDK forgets with their unconsumed
    /// input, unless streams still wait to be sent to them). First, output an app queued to a
    /// connection with streams waiting goes behind them, and streams started now are sent as
    /// far as their windows allow.
    fn finish_event(&mut self) {
        loop {
            let mut unsettled = self.ctx.streaming();
            // Only connections written to in this event can have output to put behind their
            // streams: the scan is over those, not over every connection.
            for (id, queued) in self.ctx.written() {
                let placed = self.placed.get(&id).copied().unwrap_or(0);
                if queued > placed
                    && self.conns.get(&id).is_some_and(|c| !c.flow.streams.is_empty())
                    && !unsettled.contains(&id)
                {
                    unsettled.push(id);
                }
            }
            if unsettled.is_empty() {
                break;
            }
            for conn in unsettled {
                self.drive(conn);
            }
        }
        self.placed.clear();
        let requests = self.ctx.take_requests();
        // Listeners first: one closed in this event is closed before a reply that says so is
        // written, so the client that reads it finds the port free.
        for op in requests.listens {
            match op {
                ListenOp::Listen(id, port) => {
                    self.listeners.insert(id, Listening::Asked(port));
                    self.host.listen(id, port);
                }
                ListenOp::Close(id) => {
                    if self.listeners.remove(&id).is_some() {
                        self.host.unlisten(id);
                    }
                }
                ListenOp::CloseUntracked(id) => self.host.unlisten(id),
            }
        }
        for (conn, bytes) in &requests.out {
            let (conn, bytes) = (*conn, bytes.as_slice());
            if bytes.is_empty() {
                continue;
            }
            if let Some(slot) = self.conns.get_mut(&conn)
                && slot.flow.credit != UNBOUNDED
            {
                slot.flow.credit = slot.flow.credit.saturating_sub(bytes.len() as u64);
            }
            self.host.send(conn, bytes);
        }
        self.ctx.recycle(requests.out);
        for op in requests.timers {
            match op {
                TimerOp::Set(id, after_ms) => self.host.set_timer(id, after_ms),
                TimerOp::Cancel(id) => self.host.cancel_timer(id),
            }
        }
        for conn in requests.notify {
            // A connection closed with streams still queued is still sent to.
            if self.conns.contains_key(&conn) {
                self.host.notify_writable(conn);
            }
        }
        for conn in requests.closes {
            if let Some(slot) = self.conns.get_mut(&conn)
                && !slot.flow.streams.is_empty()
            {
                // Closed once the streams are sent (see `pump`).
                slot.flow.closing = true;
                continue;
            }
            self.host.close(conn);
            self.forget(conn);
        }
        // Sessions the app asked for connections that are not open go (a session outlives
        // its connection by no more than the event).
        if let Some(sessions) = self.ctx.sessions.as_mut() {
            let conns = &self.conns;
            sessions.settle(&|conn| conns.contains_key(&conn));
        }
    }

    /// Drops `conn` and its unconsumed input; streams still queued for it end as
    /// [`StreamEnd::Gone`].
    fn forget(&mut self, conn: ConnId) {
        if let Some(sessions) = self.ctx.sessions.as_mut() {
            sessions.remove(conn);
        }
        if let Some(slot) = self.conns.remove(&conn) {
            self.unconsumed -= slot.input.len();
            for stream in slot.flow.streams {
                if stream.told {
                    let end = StreamEnd::Gone { bytes: stream.sent };
                    self.server.on_stream_end(&mut self.ctx, conn, end);
                }
            }
        }
        // Streams the app started for it during this event never began.
        for _ in self.ctx.take_streams(conn) {
            self.server.on_stream_end(&mut self.ctx, conn, StreamEnd::Gone { bytes: 0 });
        }
    }

    /// Closes the connections whose unconsumed input passes the host's bounds: `conn` if it
    /// alone holds more than [`crate::host::input_limit`], then the one holding the most while
    /// all together hold more than [`crate::host::input_total`]. Each is told (through
    /// [`Server::on_input_limit`]) and said in the host's log.
    fn enforce_input_limits(&mut self, conn: ConnId) {
        if self.unconsumed == 0 {
            // Nothing held by any connection, so no bound can be passed: the usual case (every
            // request whole), spared the two calls to the host that ask for the bounds.
            return;
        }
        let limit = usize::try_from(crate::host::input_limit()).unwrap_or(usize::MAX);
        let total = usize::try_from(crate::host::input_total()).unwrap_or(usize::MAX);
        let held = self.conns.get(&conn).map_or(0, |c| c.input.len());
        if limit > 0 && held > limit {
            self.cut_off(
                conn,
                format!("{held} bytes of unconsumed input, over --query-buffer ({limit} bytes)"),
            );
        }
        while total > 0 && self.unconsumed > total {
            let Some((&largest, slot)) = self.conns.iter().max_by_key(|(_, c)| c.input.len())
            else {
                break;
            };
            let held = slot.input.len();
            self.cut_off(
                largest,
                format!(
                    "the most unconsumed input ({held} bytes) while all connections hold {}, \
                     over half of --max-state ({total} bytes)",
                    self.unconsumed
                ),
            );
        }
    }

    fn cut_off(&mut self, conn: ConnId, why: String) {
        eprintln!("{} {}: closing connection {conn}: {why}", S::NAME, self.version);
        self.server.on_input_limit(&mut self.ctx, conn);
        self.ctx.close(conn);
        self.forget(conn);
    }

    /// `app.init`.
    pub fn init(&mut self, args: Vec<String>) -> Result<(), String> {
        let result = self.server.init(&mut self.ctx, &args);
        self.finish_event();
        result
    }

    /// `app.on-connect`. The connection's send window starts as the host's whole
    /// `--output-buffer`.
    pub fn on_connect(&mut self, info: ConnInfo) {
        self.connect(crate::ConnInfo::from_host(info, None));
    }

    /// `listening.on-accept`: a connection accepted on the app's listener `listener`, which
    /// reaches [`Server::on_connect`] with its id.
    pub fn on_accept(&mut self, info: ConnInfo, listener: ListenerId) {
        self.connect(crate::ConnInfo::from_host(info, Some(listener)));
    }

    /// `listening.on-listening`: the answer to a [`Ctx::listen`], told to
    /// [`Server::on_listening`]. An answer for a listener the app does not know (it closed it
    /// in the event that asked, or a rebuild left the request out) closes it, untold.
    pub fn on_listening(&mut self, id: ListenerId, answer: Result<String, ListenError>) {
        match (self.listeners.get(&id), &answer) {
            (Some(Listening::Asked(_)), Ok(address)) => {
                self.listeners.insert(id, Listening::Open(address.clone()));
                self.server.on_listening(&mut self.ctx, id, answer);
            }
            (Some(Listening::Asked(_)), Err(_)) => {
                self.listeners.remove(&id);
                self.server.on_listening(&mut self.ctx, id, answer);
            }
            // Open already: only a loss changes anything.
            (Some(Listening::Open(_)), Err(ListenError::Lost(_))) => {
                self.listeners.remove(&id);
                self.server.on_listening(&mut self.ctx, id, answer);
            }
            (Some(Listening::Open(_)), _) => {}
            (None, Ok(_)) => self.ctx.close_listener_untracked(id),
            (None, Err(_)) => {}
        }
        self.finish_event();
    }

    /// `listening.on-listeners-lost`: every listener is gone (the host started from a snapshot
    /// file); the app hears it of each, as [`ListenError::Lost`].
    pub fn on_listeners_lost(&mut self) {
        for (id, _) in std::mem::take(&mut self.listeners) {
            let lost = ListenError::Lost(
                "the host started from a snapshot file, and listening sockets do not outlive                  the process that wrote it"
                    .into(),
            );
            self.server.on_listening(&mut self.ctx, id, Err(lost));
        }
        self.finish_event();
    }

    /// A connection, accepted on a `--listen` address or one of the app's listeners.
    fn connect(&mut self, info: crate::ConnInfo) {
        let id = info.id;
        self.forget(id);
        // Known before the app hears of it, so that it can stream to it at once.
        self.conns.insert(id, Conn { info: info.clone(), input: Vec::new(), flow: Flow::new() });
        self.server.on_connect(&mut self.ctx, &info);
        self.finish_event();
    }

    /// `app.on-data`: offers the connection's unconsumed input followed by `data` to
    /// [`Server::on_data`], and offers what is left again at once for as long as each call
    /// consumes something, input remains, the app has not closed the connection nor started a
    /// stream to it, and the connection's send window is not used up (see the module docs).
    /// An app can then take one message per call: a pipeline of them in one read is answered
    /// whole, as far as the client reads.
    pub fn on_data(&mut self, conn: ConnId, data: Vec<u8>) {
        let Some(slot) = self.conns.get_mut(&conn) else {
            // The host never sends data for a connection it did not announce; if it does, the
            // bytes have no owner and are dropped rather than trapping the whole instance.
            return;
        };
        self.unconsumed += data.len();
        if slot.input.is_empty() {
            slot.input = data;
        } else {
            slot.input.extend_from_slice(&data);
        }
        self.drive(conn);
        // Input left behind a close went with the connection (see `offer`): no limit applies.
        if self.conns.contains_key(&conn) && !self.ctx.is_closing(conn) {
            self.enforce_input_limits(conn);
        }
        self.finish_event();
    }

    /// `writable.on-writable`: `conn` can take `window` more bytes. Its streams go on, then
    /// its input is offered again.
    pub fn on_writable(&mut self, conn: ConnId, window: u64) {
        if let Some(slot) = self.conns.get_mut(&conn) {
            slot.flow.credit = window;
            slot.flow.waiting = false;
            self.drive(conn);
        }
        self.finish_event();
    }

    /// `app.on-disconnect`.
    pub fn on_disconnect(&mut self, conn: ConnId) {
        self.server.on_disconnect(&mut self.ctx, conn);
        self.forget(conn);
        self.finish_event();
    }

    /// `app.on-timer`.
    pub fn on_timer(&mut self, id: u64) {
        self.server.on_timer(&mut self.ctx, id);
        self.finish_event();
    }

    /// `canary.expected-difference`: see [`Server::expected_difference`].
    pub fn expected_difference(&self, request: &[u8], old: &[u8], new: &[u8]) -> bool {
        self.server.expected_difference(request, old, new)
    }

    /// Sends what `conn`'s streams may send now, then offers its input, and again while the
    /// app starts a stream and the window lets it go on.
    fn drive(&mut self, conn: ConnId) {
        while self.pump(conn) && self.offer(conn) {}
    }

    /// Offers `conn`'s input to the app (see [`Runtime::on_data`]). True if it stopped because
    /// the app started a stream to `conn` (to be sent before more input is offered).
    fn offer(&mut self, conn: ConnId) -> bool {
        let Some(slot) = self.conns.get_mut(&conn) else { return false };
        let refused = usize::try_from(slot.flow.refused).unwrap_or(usize::MAX);
        if slot.input.len() <= refused || slot.flow.closing {
            // Nothing, or nothing new to an app that is waiting for the rest of a message.
            return false;
        }
        let credit = slot.flow.credit;
        let bounded = credit != UNBOUNDED;
        // An app that stops at the window by itself is offered everything at once.
        let sliced = bounded && !S::STOPS_AT_OUTPUT_LIMIT;
        let mut input = std::mem::take(&mut slot.input);
        self.unconsumed -= input.len();
        let mut len = match (sliced, refused) {
            (false, _) => input.len(),
            (true, 0) => MIN_OFFER,
            // The message under way needs more than it had: a little more, then twice as much.
            (true, refused) => refused.saturating_add(MIN_OFFER),
        };
        // Consumed bytes are dropped once, at the end: an app taking a byte per call must not
        // make the event quadratic in its input.
        let mut consumed = 0;
        let (mut refused, mut blocked, mut streamed) = (0, false, false);
        loop {
            let rest = input.len() - consumed;
            if rest == 0 || self.ctx.is_closing(conn) {
                break;
            }
            let before = self.ctx.queued(conn) as u64;
            if bounded && before >= credit {
                blocked = true;
                break;
            }
            let offered = len.clamp(1, rest);
            let slice = &input[consumed..consumed + offered];
            let limit = usize::try_from(credit).unwrap_or(usize::MAX);
            self.ctx.set_output_limit(bounded.then_some((conn, limit)));
            let taken = self.server.on_data(&mut self.ctx, conn, slice).min(offered);
            self.ctx.set_output_limit(None);
            consumed += taken;
            if self.ctx.has_streams(conn) {
                streamed = true;
                break;
            }
            if taken == 0 {
                if offered < rest {
                    len = offered.saturating_mul(2);
                    continue;
                }
                refused = rest;
                break;
            }
            if sliced {
                let after = self.ctx.queued(conn) as u64;
                let left = credit.saturating_sub(after);
                len = next_offer(offered, taken, after.saturating_sub(before), left);
            }
        }
        let Some(slot) = self.conns.get_mut(&conn) else { return false };
        // What is left behind a close goes with the connection: it is not input the app kept,
        // so no input limit applies to it (the app would be told of a limit after its goodbye).
        if self.ctx.is_closing(conn) {
            return streamed;
        }
        input.drain(..consumed);
        self.unconsumed += input.len();
        slot.input = input;
        slot.flow.refused = refused as u64;
        if blocked {
            self.wait_writable(conn);
        }
        streamed
    }

    /// Moves what the app started or queued for `conn` during this event into its stream queue
    /// (see `settle`), then sends from the first stream as far as the window goes; a stream
    /// that ends is taken off and the app told. True once nothing waits to be sent and the
    /// connection is open, so its input may be offered.
    fn pump(&mut self, conn: ConnId) -> bool {
        loop {
            self.settle(conn);
            let Some(slot) = self.conns.get_mut(&conn) else { return false };
            let Some(stream) = slot.flow.streams.front_mut() else {
                if slot.flow.closing {
                    self.ctx.close(conn);
                    return false;
                }
                return true;
            };
            let queued = self.ctx.queued(conn) as u64;
            let left = slot.flow.credit.saturating_sub(queued);
            if left == 0 {
                self.wait_writable(conn);
                return false;
            }
            let max = usize::try_from(left).unwrap_or(usize::MAX);
            let filled = stream.fill(&mut self.server, conn, self.ctx.output(conn), max);
            self.placed.insert(conn, self.ctx.queued(conn));
            let (bytes, end) = match filled {
                Filled::More => continue,
                Filled::Done => (stream.sent, None),
                Filled::Failed(error) => (stream.sent, Some(error)),
            };
            let told = stream.told;
            slot.flow.streams.pop_front();
            if told {
                let end = match end {
                    None => StreamEnd::Done { bytes },
                    Some(error) => StreamEnd::Failed { bytes, error },
                };
                self.server.on_stream_end(&mut self.ctx, conn, end);
            }
        }
    }

    /// Takes the streams started for `conn` during this event into its queue, each after the
    /// output queued before it; output queued after a stream, or while streams wait, becomes a
    /// stream of its own behind them.
    fn settle(&mut self, conn: ConnId) {
        let started = self.ctx.take_streams(conn);
        let Some(slot) = self.conns.get_mut(&conn) else {
            for _ in started {
                self.server.on_stream_end(&mut self.ctx, conn, StreamEnd::Gone { bytes: 0 });
            }
            return;
        };
        let placed = self.placed.get(&conn).copied().unwrap_or(0);
        let queued = self.ctx.queued(conn);
        if started.is_empty() && (slot.flow.streams.is_empty() || queued <= placed) {
            return;
        }
        // Output before the first stream goes out now if nothing waits before it.
        let cut = match (slot.flow.streams.is_empty(), started.first()) {
            (true, Some((at, _))) => (*at).max(placed),
            _ => placed,
        };
        let out = self.ctx.output(conn);
        let tail = out.split_off(cut.min(out.len()));
        let mut from = cut;
        for (at, source) in started {
            let at = at.clamp(from, cut + tail.len());
            if at > from {
                let bytes = tail[from - cut..at - cut].to_vec();
                slot.flow.streams.push_back(Stream::new(Source::Bytes(bytes), false));
            }
            slot.flow.streams.push_back(Stream::new(source, true));
            from = at;
        }
        if tail.len() > from - cut {
            let bytes = tail[from - cut..].to_vec();
            slot.flow.streams.push_back(Stream::new(Source::Bytes(bytes), false));
        }
        self.placed.insert(conn, cut);
    }

    /// Asks the host, once, to say when `conn` can take more.
    fn wait_writable(&mut self, conn: ConnId) {
        if let Some(slot) = self.conns.get_mut(&conn)
            && !slot.flow.waiting
        {
            slot.flow.waiting = true;
            self.ctx.notify_writable(conn);
        }
    }

    /// `state.describe`.
    pub fn describe(&self) -> AppInfo {
        let mut accepts = vec![S::STATE_VERSION];
        accepts.extend(S::migrations().versions());
        AppInfo {
            name: S::NAME.to_string(),
            version: self.version.to_string(),
            sections: vec![
                SectionSpec { name: S::NAME.to_string(), version: S::STATE_VERSION, accepts },
                SectionSpec {
                    name: CONNS_SECTION.to_string(),
                    version: CONNS_SECTION_VERSION,
                    accepts: vec![CONNS_SECTION_VERSION],
                },
                SectionSpec {
                    name: WINDOWS_SECTION.to_string(),
                    version: FLOW_SECTIONS_VERSION,
                    accepts: vec![FLOW_SECTIONS_VERSION],
                },
                SectionSpec {
                    name: STREAMS_SECTION.to_string(),
                    version: FLOW_SECTIONS_VERSION,
                    accepts: vec![FLOW_SECTIONS_VERSION],
                },
                SectionSpec {
                    name: LISTENERS_SECTION.to_string(),
                    version: LISTENERS_SECTION_VERSION,
                    accepts: vec![LISTENERS_SECTION_VERSION],
                },
            ]
            .into_iter()
            .chain(S::session_type().map(|kind| SectionSpec {
                name: SESSIONS_SECTION.to_string(),
                version: kind.version(),
                accepts: kind.accepts(),
            }))
            .collect(),
        }
    }

    /// `state.export-state`.
    pub fn export_state(&self) -> Result<Snapshot, String> {
        self.server.export_ready()?;
        let state = self.encode_state()?;
        self.snapshot(state, Vec::new())
    }

    /// The app's state section's bytes. Not inlined (see [`decode_state`]).
    #[inline(never)]
    fn encode_state(&self) -> Result<Vec<u8>, String> {
        postcard::to_allocvec(&self.server)
            .map_err(|e| format!("state of `{}` does not encode: {e}", S::NAME))
    }

    /// The snapshot of `state` (the app's section), the connections' unconsumed input, their
    /// windows and the streams under way (a section only if there are some), and `extra`
    /// sections.
    fn snapshot(&self, state: Vec<u8>, extra: Vec<Section>) -> Result<Snapshot, String> {
        let pending: Vec<(ConnId, &[u8])> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.input.is_empty())
            .map(|(id, c)| (*id, c.input.as_slice()))
            .collect();
        let conns = postcard::to_allocvec(&pending)
            .map_err(|e| format!("connection input does not encode: {e}"))?;
        let windows: Vec<WindowRecord> = self
            .conns
            .iter()
            .map(|(&id, c)| WindowRecord {
                id,
                credit: c.flow.credit,
                refused: c.flow.refused,
                waiting: c.flow.waiting,
            })
            .collect();
        let windows = postcard::to_allocvec(&windows)
            .map_err(|e| format!("send windows do not encode: {e}"))?;
        let streams: Vec<StreamsRecord> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.flow.streams.is_empty() || c.flow.closing)
            .map(|(&id, c)| StreamsRecord {
                id,
                streams: c.flow.streams.clone(),
                closing: c.flow.closing,
            })
            .collect();
        let mut sections = vec![
            Section { name: S::NAME.to_string(), version: S::STATE_VERSION, bytes: state },
            Section {
                name: CONNS_SECTION.to_string(),
                version: CONNS_SECTION_VERSION,
                bytes: conns,
            },
            Section {
                name: WINDOWS_SECTION.to_string(),
                version: FLOW_SECTIONS_VERSION,
                bytes: windows,
            },
        ];
        let accepted: Vec<(ConnId, ListenerId)> =
            self.conns.iter().filter_map(|(&id, c)| Some((id, c.info.listener_id?))).collect();
        if !self.listeners.is_empty() || !accepted.is_empty() {
            let record = ListenersRecord {
                next: self.ctx.next_listener,
                listeners: self.listeners.iter().map(|(&id, l)| (id, l.clone())).collect(),
                accepted,
            };
            let bytes = postcard::to_allocvec(&record)
                .map_err(|e| format!("listeners do not encode: {e}"))?;
            sections.push(Section {
                name: LISTENERS_SECTION.to_string(),
                version: LISTENERS_SECTION_VERSION,
                bytes,
            });
        }
        if let Some(sessions) = self.ctx.sessions.as_ref().filter(|s| !s.is_empty()) {
            sections.push(Section {
                name: SESSIONS_SECTION.to_string(),
                version: sessions.kind().version(),
                bytes: sessions.encode()?,
            });
        }
        if !streams.is_empty() {
            let bytes = postcard::to_allocvec(&streams)
                .map_err(|e| format!("streams under way do not encode: {e}"))?;
            sections.push(Section {
                name: STREAMS_SECTION.to_string(),
                version: FLOW_SECTIONS_VERSION,
                bytes,
            });
        }
        sections.extend(extra);
        Ok(Snapshot { app: S::NAME.to_string(), app_version: self.version.to_string(), sections })
    }

    /// `precopy.begin`.
    pub fn precopy_begin(&mut self) -> Result<(), String> {
        self.server.export_ready()?;
        precopy::begin_session();
        Ok(())
    }

    /// `precopy.next`.
    pub fn precopy_next(&self, max_bytes: u64) -> Result<PrecopyBatch, String> {
        let budget = usize::try_from(max_bytes.max(1)).unwrap_or(usize::MAX);
        let passed = precopy::pass(budget, || self.encode_state())?;
        let pending = passed.pending;
        Ok(PrecopyBatch { chunks: chunks::<S>(passed), pending })
    }

    /// `precopy.finish`: the rest of the records, and the snapshot whose state section is the
    /// skeleton (marked by a [`PRECOPY_SECTION`]). Ends the session.
    pub fn precopy_finish(&self) -> Result<(Vec<Chunk>, Snapshot), String> {
        self.server.export_ready()?;
        let passed = precopy::pass(usize::MAX, || self.encode_state())?;
        let skeleton = passed.skeleton.clone();
        let chunks = chunks::<S>(passed);
        precopy::end_session();
        let marker = Section { name: PRECOPY_SECTION.to_string(), version: 1, bytes: Vec::new() };
        Ok((chunks, self.snapshot(skeleton, vec![marker])?))
    }

    /// `precopy.abort`.
    pub fn precopy_abort(&mut self) {
        precopy::end_session();
    }

    /// `precopy.import-chunks`: registers the streams each skeleton names and builds them from
    /// the records.
    pub fn import_chunks(&mut self, chunks: Vec<Chunk>) -> Result<(), String> {
        for chunk in chunks {
            if chunk.section != S::NAME {
                return Err(format!(
                    "a pre-copied chunk of section `{}`, which `{}` {} does not have",
                    chunk.section,
                    S::NAME,
                    self.version
                ));
            }
            let Some((&kind, body)) = chunk.bytes.split_first() else { continue };
            match kind {
                precopy::SKELETON => {
                    let (name, version) = (chunk.section, chunk.version);
                    let result = precopy::register_skeleton(Mode::Register, body, |skeleton| {
                        let section = Section { name, version, bytes: skeleton.to_vec() };
                        decode_state::<S>(&section).map(drop)
                    });
                    if let Err(e) = result {
                        precopy::reset_reader();
                        return Err(e);
                    }
                }
                precopy::RECORDS => {
                    if let Err(e) = precopy::apply_records(body) {
                        // Whatever follows (a full transfer, or nothing) starts clean.
                        precopy::reset_reader();
                        return Err(e);
                    }
                }
                other => return Err(format!("a pre-copied chunk of unknown kind {other}")),
            }
        }
        Ok(())
    }

    /// `state.import-state`. On error nothing of this instance changes.
    pub fn import_state(&mut self, snapshot: Snapshot, live: Vec<ConnInfo>) -> Result<(), String> {
        if snapshot.app != S::NAME {
            return Err(format!(
                "the snapshot is of app `{}` {}, this is `{}` {}",
                snapshot.app,
                snapshot.app_version,
                S::NAME,
                self.version
            ));
        }
        let precopied = snapshot.sections.iter().any(|s| s.name == PRECOPY_SECTION);
        let mut server = None;
        let mut pending: Vec<(ConnId, Vec<u8>)> = Vec::new();
        let mut windows: Option<Vec<WindowRecord>> = None;
        let mut streams: Vec<StreamsRecord> = Vec::new();
        let mut listening = ListenersRecord::default();
        let mut sessions: Option<Section> = None;
        for section in snapshot.sections {
            if section.name == S::NAME {
                server = Some(if precopied {
                    precopy::resolve(|| decode_state::<S>(&section))?
                } else {
                    decode_state::<S>(&section)?
                });
            } else if section.name == PRECOPY_SECTION {
                continue;
            } else if section.name == CONNS_SECTION {
                pending = decode_sdk_section(&section, CONNS_SECTION_VERSION)?;
            } else if section.name == WINDOWS_SECTION {
                windows = Some(decode_sdk_section(&section, FLOW_SECTIONS_VERSION)?);
            } else if section.name == STREAMS_SECTION {
                streams = decode_sdk_section(&section, FLOW_SECTIONS_VERSION)?;
            } else if section.name == LISTENERS_SECTION {
                listening = decode_sdk_section(&section, LISTENERS_SECTION_VERSION)?;
            } else if section.name == SESSIONS_SECTION && self.ctx.sessions.is_some() {
                sessions = Some(section);
            } else {
                return Err(format!(
                    "section `{}` (version {}) is not known to `{}` {}; importing would lose it",
                    section.name,
                    section.version,
                    S::NAME,
                    self.version
                ));
            }
        }
        let server =
            server.ok_or_else(|| format!("the snapshot has no `{}` state section", S::NAME))?;
        self.install(server, live, Imported { pending, windows, streams, listening, sessions })
    }

    /// The second half of [`Runtime::import_state`]: the decoded state and connections take
    /// the place of this instance's. Apart for the compiler's sake (see [`decode_state`]).
    #[inline(never)]
    fn install(
        &mut self,
        server: S,
        live: Vec<ConnInfo>,
        imported: Imported,
    ) -> Result<(), String> {
        let Imported { pending, windows, streams, listening, sessions } = imported;
        // The sessions of the connections still open; none from a release that kept none.
        let sessions = match S::session_type() {
            Some(kind) => {
                let mut store = crate::session::Store::new(kind);
                if let Some(section) = sessions {
                    let live: std::collections::BTreeSet<ConnId> =
                        live.iter().map(|c| c.id).collect();
                    store.import(section.version, &section.bytes, &live)?;
                }
                Some(store)
            }
            None => None,
        };

        self.conns = conns_of(live, pending, windows, streams, listening.accepted);
        self.unconsumed = self.conns.values().map(|c| c.input.len()).sum();
        self.listeners = listening.listeners.into_iter().collect();
        self.ctx.next_listener = self.ctx.next_listener.max(listening.next);
        self.ctx.sessions = sessions;
        let fresh = std::mem::replace(&mut self.server, server);
        resume(&mut self.server, &mut self.ctx, fresh);
        self.finish_event();
        Ok(())
    }

    /// The app's state.
    pub(crate) fn server(&self) -> &S {
        &self.server
    }

    /// The app's state, to change between events (tests).
    pub(crate) fn server_mut(&mut self) -> &mut S {
        &mut self.server
    }

    /// Where the requests go.
    pub(crate) fn host_mut(&mut self) -> &mut H {
        &mut self.host
    }

    /// Pins the clock the app reads through [`Ctx::now_ms`] (a native test's).
    pub(crate) fn set_clock(&mut self, ms: Option<u64>) {
        self.ctx.set_clock(ms);
    }

    /// Bytes `conn` sent that the app has not consumed; 0 for a connection it does not know.
    pub(crate) fn unconsumed(&self, conn: ConnId) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.input.len())
    }

    /// The connections the app knows, as `import-state`'s `live` lists them.
    pub(crate) fn live(&self) -> Vec<ConnInfo> {
        self.conns
            .values()
            .map(|c| ConnInfo {
                id: c.info.id,
                listener: c.info.listener.clone(),
                peer: c.info.peer.clone(),
            })
            .collect()
    }

    /// What the app knows of `conn`.
    pub fn conn_info(&self, conn: ConnId) -> Option<&crate::ConnInfo> {
        self.conns.get(&conn).map(|c| &c.info)
    }
}

/// The host's answer to a listen request, in the SDK's terms.
pub fn listen_answer(
    answer: Result<String, bindings::tasuki::server::types::ListenError>,
) -> Result<String, ListenError> {
    use bindings::tasuki::server::types::ListenError as Wit;
    answer.map_err(|e| match e {
        Wit::Limit(max) => ListenError::Limit(max),
        Wit::NotAllowed(why) => ListenError::NotAllowed(why),
        Wit::InUse(why) => ListenError::InUse(why),
        Wit::IdInUse => ListenError::IdInUse,
        Wit::Failed(why) => ListenError::Failed(why),
        Wit::Lost(why) => ListenError::Lost(why),
    })
}

/// The size of the next slice of input (see the module docs): what would make about the `left`
/// bytes of window still open, at the rate the last slice showed (`produced` bytes of output for
/// `taken` of the `offered` bytes), at most twice the last slice, between [`MIN_OFFER`] and
/// [`MAX_OFFER`].
fn next_offer(offered: usize, taken: usize, produced: u64, left: u64) -> usize {
    let most = offered.saturating_mul(2).clamp(MIN_OFFER, MAX_OFFER);
    if produced == 0 {
        return most;
    }
    let fits = u128::from(left) * taken as u128 / u128::from(produced);
    usize::try_from(fits).unwrap_or(usize::MAX).clamp(MIN_OFFER, most)
}

/// One of the SDK's own sections, at the one version this SDK reads.
#[inline(never)]
fn decode_sdk_section<T: serde::de::DeserializeOwned>(
    section: &Section,
    version: u32,
) -> Result<T, String> {
    if section.version != version {
        return Err(format!(
            "section `{}` is version {}, this release reads {version}",
            section.name, section.version
        ));
    }
    postcard::from_bytes(&section.bytes)
        .map_err(|e| format!("section `{}` does not decode: {e}", section.name))
}

/// The connections an imported instance serves: those open (`live`), each with the input,
/// window and streams the snapshot kept for it and the listener that accepted it.
#[inline(never)]
fn conns_of(
    live: Vec<ConnInfo>,
    pending: Vec<(ConnId, Vec<u8>)>,
    windows: Option<Vec<WindowRecord>>,
    streams: Vec<StreamsRecord>,
    accepted: Vec<(ConnId, ListenerId)>,
) -> BTreeMap<ConnId, Conn> {
    let mut pending: BTreeMap<ConnId, Vec<u8>> = pending.into_iter().collect();
    // No windows: the snapshot is of a release built before back-pressure.
    let mut windows: Option<BTreeMap<ConnId, WindowRecord>> =
        windows.map(|w| w.into_iter().map(|r| (r.id, r)).collect());
    let mut streams: BTreeMap<ConnId, StreamsRecord> =
        streams.into_iter().map(|r| (r.id, r)).collect();
    let accepted: BTreeMap<ConnId, ListenerId> = accepted.into_iter().collect();
    live.into_iter()
        .map(|info| {
            let listener = accepted.get(&info.id).copied();
            let info = crate::ConnInfo::from_host(info, listener);
            let input = pending.remove(&info.id).unwrap_or_default();
            let window = windows.as_mut().and_then(|w| w.remove(&info.id));
            let mut flow = match window {
                Some(w) => Flow {
                    credit: w.credit,
                    refused: w.refused,
                    waiting: w.waiting,
                    ..Flow::with_credit(0)
                },
                None => Flow::unknown(input.len()),
            };
            if let Some(record) = streams.remove(&info.id) {
                flow.streams = record.streams;
                flow.closing = record.closing;
            }
            (info.id, Conn { info, input, flow })
        })
        .collect()
}

/// What [`Runtime::import_state`] read from a snapshot's SDK sections.
struct Imported {
    pending: Vec<(ConnId, Vec<u8>)>,
    windows: Option<Vec<WindowRecord>>,
    streams: Vec<StreamsRecord>,
    listening: ListenersRecord,
    sessions: Option<Section>,
}

/// The app's [`Server::resumed`], on its own (see [`decode_state`]).
#[inline(never)]
fn resume<S: Server>(server: &mut S, ctx: &mut Ctx, fresh: S) {
    server.resumed(ctx, fresh);
}

/// The app's state from its section, through its migrations if the section is older.
///
/// Not inlined, nor are the import's other parts ([`Runtime::install`], [`conns_of`],
/// [`resume`], [`decode_sdk_section`]) or [`Runtime::encode_state`]: an app built with LTO (as
/// tests/artifacts/build.rs builds the guests) would otherwise get the whole import inlined into
/// one function of about 43 KB of wasm, and wasmtime keeps the compiler's working memory for the
/// largest function it compiled for as long as the engine lives — kv 5's host started 13 MiB
/// larger (38.5 MiB resident instead of 25), 5 MiB with these apart.
#[inline(never)]
fn decode_state<S: Server>(section: &Section) -> Result<S, String> {
    if section.version == S::STATE_VERSION {
        return postcard::from_bytes(&section.bytes).map_err(|e| {
            format!(
                "state section `{}` version {} does not decode: {e}",
                section.name, section.version
            )
        });
    }
    match S::migrations().run(section.version, &section.bytes) {
        Some(result) => result,
        None => {
            let mut accepts = vec![S::STATE_VERSION];
            accepts.extend(S::migrations().versions());
            Err(format!(
                "state section `{}` is version {}; this release reads versions {accepts:?}",
                section.name, section.version
            ))
        }
    }
}

/// A pass's chunks: the skeleton first if the reader must learn of a new stream, then the
/// records.
fn chunks<S: Server>(passed: Passed) -> Vec<Chunk> {
    let chunk = |kind: u8, body: &[u8]| {
        let mut bytes = Vec::with_capacity(body.len() + 1);
        bytes.push(kind);
        bytes.extend_from_slice(body);
        Chunk { section: S::NAME.to_string(), version: S::STATE_VERSION, bytes }
    };
    let mut chunks = Vec::new();
    if passed.new_streams {
        let bytes = precopy::skeleton_chunk(&passed.streams, &passed.skeleton);
        chunks.push(Chunk { section: S::NAME.to_string(), version: S::STATE_VERSION, bytes });
    }
    if !passed.records.is_empty() {
        chunks.push(chunk(precopy::RECORDS, &passed.records));
    }
    chunks
}

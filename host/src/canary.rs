//! Canary upgrades (`tasuki upgrade --canary WINDOW`): the new version imports the state as for
//! any upgrade, but does not take over. For a window of events the old version keeps serving and
//! every client event is also run in the new instance (the candidate), at the same frozen clock
//! reading; the candidate's output is captured and compared, connection by connection, with what
//! the old version sent, and never reaches a client. If every byte agreed when the window ends
//! the host commits by swapping the instances — the candidate holds the live state already, so
//! nothing more crosses — and otherwise drops the candidate and reports the first divergence.
//!
//! This is multi-version execution as MVEDSUa (Pina et al., ASPLOS 2019) ran it for C servers,
//! here between two sandboxed instances in one process: the host owns every socket, timer and
//! clock reading, so feeding both the same events is a matter of calling both.
//!
//! Output is compared per connection as a byte stream, not per event: a candidate whose timer
//! fires a moment after the old one's still agrees, as long as the bytes are the same and in the
//! same order. A connection's unmatched bytes are bounded ([`UNMATCHED_MAX`]); more than that is
//! a divergence, so a candidate that talks where the old version was silent costs no memory.

use crate::bindings::ConnInfo;
use crate::live::{Call, Live};
use crate::recovery::Stamp;
use crate::snapshot::SnapshotFile;
use crate::store::Effect;
use crate::timers::TimerQueue;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// How long a canary runs before it commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Window {
    /// This many client events (connects, data, disconnects; timers are not counted, since
    /// they fire without a client) compared without a difference.
    Events(u64),
    /// This long, from the end of the import, with no difference.
    Time(Duration),
}

impl FromStr for Window {
    type Err = String;

    /// `500` (events), or a duration with a unit: `1500ms`, `30s`, `2m`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(digits);
        let n: u64 = number.parse().map_err(|_| {
            format!("`{s}` is not a canary window: give a number of events (500) or a duration (30s, 1500ms, 2m)")
        })?;
        let window = match unit {
            "" => Window::Events(n),
            "ms" => Window::Time(Duration::from_millis(n)),
            "s" => Window::Time(Duration::from_secs(n)),
            "m" => Window::Time(Duration::from_secs(n.saturating_mul(60))),
            _ => {
                return Err(format!(
                    "`{s}`: unknown unit `{unit}` for a canary window (ms, s or m; none for a \
                     number of events)"
                ));
            }
        };
        if n == 0 {
            return Err("a canary window must be at least one event or one millisecond".into());
        }
        Ok(window)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Window::Events(n) => write!(f, "{n} events"),
            Window::Time(d) => write!(f, "{:.1} s", d.as_secs_f64()),
        }
    }
}

/// What a canary that committed compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryReport {
    pub window: Window,
    /// Client events both versions ran.
    pub events: u64,
    /// Timer firings each ran (of its own timers, in step).
    pub timers: u64,
    /// Bytes of output that agreed.
    pub bytes_compared: u64,
    /// Differences the new release declared expected (its `canary` export), each taken as
    /// agreeing.
    pub declared_differences: u64,
    /// From the end of the import to the commit.
    pub took: Duration,
}

/// The first place the two versions' output differed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    pub conn: u64,
    /// The event that produced it (`data`, `connect`, `disconnect`, `timer 7`, or `end of the
    /// window` for output one version sent and the other never did).
    pub event: String,
    /// The connection's input in that event, for `data` (at most [`KEPT_MAX`] bytes).
    pub request: Vec<u8>,
    /// What the old version sent on the connection that the new one did not match, from the
    /// first differing byte's reply on (at most [`KEPT_MAX`] bytes).
    pub old: Vec<u8>,
    /// The same for the new version.
    pub new: Vec<u8>,
    /// Whether each version closed the connection.
    pub old_closed: bool,
    pub new_closed: bool,
    /// Client events compared before this one.
    pub after_events: u64,
    /// The canary's events up to this one as a `tasuki test` trace whose expectations are the
    /// old version's replies, and the state the new version imported (a snapshot file's
    /// bytes), from which the trace starts: `tasuki test TRACE --app NEW.wasm --restore FILE`
    /// fails where the canary did. `None` when the events outgrew [`RECORDING_MAX`].
    #[serde(skip)]
    pub reproduction: Option<Reproduction>,
}

/// See [`Divergence::reproduction`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reproduction {
    pub trace: String,
    pub snapshot_file: Vec<u8>,
}

/// Bytes of trace a canary records at most (its events and the old version's replies); past
/// it a divergence is reported without a trace.
pub const RECORDING_MAX: usize = 64 << 20;

/// The canary's events as trace lines (see [`crate::sim::trace`]), as they run.
#[derive(Debug)]
struct Recording {
    text: String,
    /// The wall-clock time (ns since the Unix epoch) the trace's clock was last set to.
    at: Option<u64>,
    /// What the old version sent in the event being recorded, by connection.
    replies: BTreeMap<u64, Vec<u8>>,
    full: bool,
}

impl Recording {
    /// Connections open at the import are connected first: the state a trace starts from
    /// (`tasuki test --restore`) has none open.
    fn new(open: &[ConnInfo]) -> Self {
        let mut text = String::from(
            "# The events of a canary, from the state the new version imported (its snapshot\n\
             # file beside this trace), with the replies the old version gave as expectations.\n",
        );
        for info in open {
            text.push_str(&format!("connect c{}\n", info.id));
        }
        Self { text, at: None, replies: BTreeMap::new(), full: false }
    }

    /// A recording that keeps nothing (a catch-up's comparison, which saves no reproduction).
    fn off() -> Self {
        Self { text: String::new(), at: None, replies: BTreeMap::new(), full: true }
    }

    /// The next event ran at wall-clock time `wall` (ns): the trace's clock is set to it, so
    /// that a replay reads the times the versions read (a key's TTL, `TIME`), to the
    /// nanosecond. A clock that went back (a step of the system's) is left where it was.
    fn advance(&mut self, wall: u64) {
        if self.at.is_none_or(|at| wall > at) {
            self.line(format!("clock {}", crate::sim::trace::format_timestamp(wall)));
            self.at = Some(wall);
        }
    }

    fn event(&mut self, call: Call<'_>) {
        match call {
            Call::Connect(info) => self.line(format!("connect c{}", info.id)),
            Call::Data(conn, bytes) => {
                self.line(format!("send c{conn} \"{}\"", crate::sim::trace::escape(bytes)))
            }
            Call::Disconnect(conn) => self.line(format!("close c{conn}")),
            // A timer fires in the trace when the clock passes its deadline; the simulator's
            // clients read at once, so it grants windows by itself.
            Call::Accept(info, listener) => {
                let _ = listener;
                let port = info.listener.rsplit(':').next().unwrap_or_default();
                self.line(format!("connect c{} port {port}", info.id))
            }
            Call::Timer(_) | Call::Writable(..) | Call::Listening(..) | Call::ListenersLost => {}
        }
    }

    /// The old version's replies to the event just recorded, as expectations.
    fn expect_replies(&mut self) {
        for (conn, bytes) in std::mem::take(&mut self.replies) {
            self.line(format!("expect c{conn} \"{}\"", crate::sim::trace::escape(&bytes)));
        }
    }

    fn line(&mut self, line: String) {
        if self.full || self.text.len() + line.len() > RECORDING_MAX {
            self.full = true;
            return;
        }
        self.text.push_str(&line);
        self.text.push('\n');
    }
}

/// `on-writable` calls a candidate is given after one event at most, when the old version
/// predates back-pressure ([`Canary::grant_writable`]): each lets it answer a window's worth
/// of the input it holds, so this bounds the work of one event.
pub const GRANTS_MAX: usize = 1024;

/// Bytes of a request or reply a divergence report shows.
pub const SHOWN_MAX: usize = 512;

/// Bytes of a request or reply a divergence keeps (the report shows the first [`SHOWN_MAX`]).
pub const KEPT_MAX: usize = 64 << 10;

/// Output one version sent on a connection and the other has not (yet) matched, in bytes: past
/// it the canary ends as a divergence.
pub const UNMATCHED_MAX: usize = 1 << 20;

/// Writes bytes as redis-cli quotes them: printable ASCII as is, `\r`, `\n`, `\t`, `\"`, `\\`,
/// and `\xHH` for the rest, with a note when it was cut short.
pub fn quoted(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(SHOWN_MAX)];
    let mut out = format!("\"{}\"", crate::sim::trace::escape(shown));
    if bytes.len() > SHOWN_MAX {
        out.push_str(&format!(" (first {SHOWN_MAX} of {} bytes)", bytes.len()));
    }
    out
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "connection {}, at {} (after {} events agreed)",
            self.conn, self.event, self.after_events
        )?;
        if !self.request.is_empty() {
            write!(f, "\n    request      {}", quoted(&self.request))?;
        }
        let closed = |c: bool| if c { ", then closed the connection" } else { "" };
        write!(f, "\n    old replied  {}{}", quoted(&self.old), closed(self.old_closed))?;
        write!(f, "\n    new replied  {}{}", quoted(&self.new), closed(self.new_closed))
    }
}

/// One connection's output, as far as the two versions have not yet matched it.
#[derive(Debug, Default)]
struct Streams {
    old: Vec<u8>,
    new: Vec<u8>,
    old_closed: bool,
    new_closed: bool,
    /// The event after which output on this connection was first left unmatched, and its
    /// request (if it was this connection's input): what a divergence found only at the end of
    /// the window reports.
    since: Option<(String, Vec<u8>)>,
}

impl Streams {
    /// The divergence these unmatched streams make on `conn`, found at `event` (whose
    /// request, if it was this connection's input, is `request`): each reply whole from the
    /// first byte not matched, and the event and request after which output went unmatched
    /// when that was an earlier one (a candidate silent there).
    fn divergence(&self, conn: u64, event: &str, request: &[u8], after_events: u64) -> Divergence {
        let (event, request) = match &self.since {
            Some((since, request)) => {
                (format!("{event}, its output unmatched since {since}"), request.clone())
            }
            None => (event.to_string(), kept(request)),
        };
        Divergence {
            conn,
            event,
            request,
            old: self.old.iter().copied().take(KEPT_MAX).collect(),
            new: self.new.iter().copied().take(KEPT_MAX).collect(),
            old_closed: self.old_closed,
            new_closed: self.new_closed,
            after_events,
            reproduction: None,
        }
    }
}

/// The first [`KEPT_MAX`] bytes of `bytes`, as a divergence reports them.
fn kept(bytes: &[u8]) -> Vec<u8> {
    bytes[..bytes.len().min(KEPT_MAX)].to_vec()
}

/// `input`'s bytes if it was `conn`'s (a `data` event), else none.
fn request_of(input: Option<(u64, &[u8])>, conn: u64) -> &[u8] {
    match input {
        Some((c, bytes)) if c == conn => bytes,
        _ => &[],
    }
}

/// Why a canary stopped without committing.
#[derive(Debug)]
pub(crate) enum Stop {
    Diverged(Box<Divergence>),
    /// The candidate trapped or refused on an event.
    Trapped {
        event: String,
        error: String,
    },
    /// The old version trapped: recovery leaves its culprit's input out, so the two no longer
    /// see the same events.
    Interrupted(String),
}

/// A canary under way: the candidate and what is known of its agreement so far.
#[derive(Debug)]
pub(crate) struct Canary {
    pub(crate) candidate: Live,
    /// The timers the candidate believes armed (it inherited the host's at the import).
    pub(crate) timers: TimerQueue,
    window: Window,
    started: Instant,
    events: u64,
    timer_calls: u64,
    bytes_compared: u64,
    declared: u64,
    /// By connection, in order, so that of two connections that differ at one event the same
    /// is reported every run.
    streams: BTreeMap<u64, Streams>,
    recording: Recording,
    /// The window was ended early ([`Canary::end_window`]).
    ended: bool,
    /// Set when the old version predates back-pressure: it is never told a connection can take
    /// more, so the candidate is, with this window, whenever it asks (its output goes nowhere:
    /// nothing of it is ever queued). See [`Canary::grant_writable`].
    grant: Option<u64>,
    /// Connections the candidate asked to hear of when they can take more.
    wants_writable: std::collections::BTreeSet<u64>,
    stop: Option<Stop>,
}

impl Canary {
    /// Starts comparing: `candidate` has imported the state, `timers` are the host's armed
    /// timers at that boundary, `now` the monotonic time of the import. What the import asked
    /// for (sends, timers) is taken in now.
    pub(crate) fn start(
        candidate: Live,
        timers: TimerQueue,
        window: Window,
        open: &[ConnInfo],
        now: u64,
    ) -> Self {
        let mut canary = Self {
            candidate,
            timers,
            window,
            started: Instant::now(),
            events: 0,
            timer_calls: 0,
            bytes_compared: 0,
            declared: 0,
            streams: BTreeMap::new(),
            recording: Recording::new(open),
            ended: false,
            grant: None,
            wants_writable: std::collections::BTreeSet::new(),
            stop: None,
        };
        canary.take_effects(now);
        canary.compare("the import", None);
        canary
    }

    /// Starts comparing for a catch-up ([`crate::catchup`]): as [`Canary::start`], with no
    /// window of its own (the catch-up ends it with [`Canary::end_window`] once the candidate has
    /// run every kept event) and no recording.
    pub(crate) fn catch_up(candidate: Live, timers: TimerQueue, now: u64) -> Self {
        let mut canary = Self::start(candidate, timers, Window::Events(u64::MAX), &[], now);
        canary.recording = Recording::off();
        canary
    }

    /// The old version is never told when a connection can take more (it predates
    /// back-pressure), so no `on-writable` event comes to feed the candidate with; the
    /// candidate, which waits for one once its send window is spent, is told after each event
    /// that every connection it asked about can take `window` bytes. Its replies are the same
    /// bytes, only offered in other slices, so the comparison is unchanged.
    pub(crate) fn grant_writable(&mut self, window: u64) {
        self.grant = Some(window);
    }

    /// The old version sent `data` on `conn` (and it went to the client).
    pub(crate) fn old_sent(&mut self, conn: u64, data: &[u8]) {
        self.streams.entry(conn).or_default().old.extend_from_slice(data);
        // After a divergence the recording is done: it ends at the event that showed it.
        if self.stop.is_none() {
            self.recording.replies.entry(conn).or_default().extend_from_slice(data);
        }
    }

    /// The old version closed `conn`.
    pub(crate) fn old_closed(&mut self, conn: u64) {
        self.streams.entry(conn).or_default().old_closed = true;
    }

    /// Runs the client event the old version just ran (at `at`) in the candidate, and compares
    /// what the two sent.
    pub(crate) fn feed(&mut self, at: Stamp, call: Call<'_>) {
        if self.stop.is_some() {
            return;
        }
        let event = describe(call);
        self.recording.advance(at.wall);
        self.recording.event(call);
        self.recording.expect_replies();
        let input = match call {
            Call::Data(conn, bytes) => Some((conn, bytes)),
            _ => None,
        };
        match self.candidate.call(at, call) {
            Ok(()) => self.take_effects(at.mono),
            Err(e) => {
                self.candidate.discard_effects();
                self.stop = Some(Stop::Trapped { event, error: e.to_string() });
                return;
            }
        }
        if let Err(stop) = self.grant_windows(at) {
            self.stop = Some(stop);
            return;
        }
        // A window granted to the old version (its client read) is granted to the candidate
        // too, at the same size: neither is a client event.
        if !matches!(
            call,
            Call::Timer(_) | Call::Writable(..) | Call::Listening(..) | Call::ListenersLost
        ) {
            self.events += 1;
        }
        self.compare(&event, input);
    }

    /// Tells the candidate, when [`Canary::grant_writable`] says so, that each connection it
    /// asked about can take more, until it asks no more (at most [`GRANTS_MAX`] times).
    fn grant_windows(&mut self, at: Stamp) -> Result<(), Stop> {
        let Some(window) = self.grant else { return Ok(()) };
        for _ in 0..GRANTS_MAX {
            let Some(conn) = self.wants_writable.pop_first() else { return Ok(()) };
            let call = Call::Writable(conn, window);
            match self.candidate.call(at, call) {
                Ok(()) => self.take_effects(at.mono),
                Err(e) => {
                    self.candidate.discard_effects();
                    return Err(Stop::Trapped { event: describe(call), error: e.to_string() });
                }
            }
        }
        Ok(())
    }

    /// Fires the candidate's timers due at `at` (the old version's due timers have just
    /// fired): each version fires its own, so they stay in step while they agree.
    pub(crate) fn fire_due(&mut self, at: Stamp) {
        // The old version's timer output, if it fired one just now, is expected here.
        if self.stop.is_none() {
            self.recording.advance(at.wall);
            self.recording.expect_replies();
        }
        while self.stop.is_none()
            && let Some(id) = self.timers.pop_due(at.mono)
        {
            self.timer_calls += 1;
            self.feed(at, Call::Timer(id));
        }
    }

    /// The earliest of the candidate's timers, on the monotonic clock.
    pub(crate) fn next_deadline(&mut self) -> Option<u64> {
        self.timers.next_deadline()
    }

    /// The old version trapped: the canary cannot go on.
    pub(crate) fn interrupt(&mut self, cause: String) {
        if self.stop.is_none() {
            self.stop = Some(Stop::Interrupted(cause));
        }
    }

    /// `None` while the canary goes on; `Ok` once its window has run with everything matched
    /// (or declared expected); `Err` with why it stopped otherwise, a divergence with its
    /// reproduction.
    pub(crate) fn verdict(&mut self) -> Option<Result<(), Stop>> {
        if self.stop.is_none() && self.window_over() {
            self.check_unmatched();
            if self.stop.is_none() {
                return Some(Ok(()));
            }
        }
        self.stopped().map(Err)
    }

    /// Why it stopped, if it did; a divergence comes with its reproduction.
    fn stopped(&mut self) -> Option<Stop> {
        let mut stop = self.stop.take()?;
        if let Stop::Diverged(divergence) = &mut stop {
            divergence.reproduction = self.reproduction();
        }
        Some(stop)
    }

    /// The recorded events as a trace, and the state the candidate imported as a snapshot
    /// file; `None` if the recording outgrew its bound.
    fn reproduction(&self) -> Option<Reproduction> {
        if self.recording.full {
            return None;
        }
        let checkpoint = self.candidate.recovery().checkpoint()?;
        let chunks = checkpoint.chunks.read().ok()?;
        let file = SnapshotFile::from_state(&chunks, &checkpoint.snapshot);
        Some(Reproduction { trace: self.recording.text.clone(), snapshot_file: file.encode() })
    }

    fn window_over(&self) -> bool {
        self.ended
            || match self.window {
                Window::Events(n) => self.events >= n,
                Window::Time(d) => self.started.elapsed() >= d,
            }
    }

    /// At the end of the window: output one version sent and the other never matched (what
    /// [`Canary::compare`] left in the map) is a divergence, unless the release declares it.
    fn check_unmatched(&mut self) {
        let unmatched: Vec<u64> = self.streams.keys().copied().collect();
        for conn in unmatched {
            if self.declared_expected(conn, &[]) {
                continue;
            }
            let divergence =
                self.streams[&conn].divergence(conn, "the end of the window", &[], self.events);
            self.stop = Some(Stop::Diverged(Box::new(divergence)));
            return;
        }
    }

    /// Ends the window now: the next [`Canary::verdict`] is given on what ran so far.
    pub(crate) fn end_window(&mut self) {
        self.ended = true;
    }

    /// Bytes of output both versions sent alike so far.
    pub(crate) fn bytes_compared(&self) -> u64 {
        self.bytes_compared
    }

    /// Why it stopped, in words, without the reproduction (a catch-up that gives up says it).
    pub(crate) fn describe_stop(stop: &Stop) -> String {
        match stop {
            Stop::Diverged(divergence) => format!("the versions' output differed: {divergence}"),
            Stop::Trapped { event, error } => format!("the new version failed at {event}: {error}"),
            Stop::Interrupted(cause) => format!("the old version trapped ({cause})"),
        }
    }

    pub(crate) fn window(&self) -> Window {
        self.window
    }

    /// When a time window ends.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.window {
            Window::Time(d) => Some(self.started + d),
            Window::Events(_) => None,
        }
    }

    /// How far it is, for `tasuki status`: events compared, and the time left of a time window.
    /// Client events compared, differences the new release declared expected, and the time
    /// left of a time window.
    pub(crate) fn progress(&self) -> (u64, u64, Option<Duration>) {
        let left = self.deadline().map(|d| d.saturating_duration_since(Instant::now()));
        (self.events, self.declared, left)
    }

    /// The report of a canary that ends in a commit, and the candidate and its timers.
    pub(crate) fn commit(self) -> (CanaryReport, Live, TimerQueue) {
        let report = CanaryReport {
            window: self.window,
            events: self.events,
            timers: self.timer_calls,
            bytes_compared: self.bytes_compared,
            declared_differences: self.declared,
            took: self.started.elapsed(),
        };
        (report, self.candidate, self.timers)
    }

    /// Takes what the candidate asked for: its sends and closes are compared, never sent; its
    /// timers go to its own queue.
    fn take_effects(&mut self, now: u64) {
        let Self { candidate, timers, streams, grant, wants_writable, .. } = self;
        candidate.drain_effects(|effect| match effect {
            Effect::NotifyWritable(conn) if grant.is_some() => {
                wants_writable.insert(conn);
            }
            Effect::Send(conn, data) => streams.entry(conn).or_default().new.extend(data),
            Effect::Close(conn) => streams.entry(conn).or_default().new_closed = true,
            // Past the per-call output limit: the host would have cut the connection off. The
            // output it did send is compared; the old version, which sent the same, was cut
            // off too, and both hear of it through the disconnect.
            Effect::CutOff(_) => {}
            // Listeners are the old version's to open and close: the candidate is told of
            // them through the same answers and accepts.
            Effect::Listen(..) | Effect::Unlisten(_) => {}
            timer => timers.apply(&timer, now),
        });
    }

    /// Drops the matched prefix of every connection's two streams, and a connection with
    /// nothing unmatched left (so the map holds only connections with output in flight, and
    /// each event scans only those); a differing byte, a close on one side only with nothing
    /// left to come, or too much unmatched output stops the canary. `input` is the event's
    /// connection and bytes, for a `data` event.
    fn compare(&mut self, event: &str, input: Option<(u64, &[u8])>) {
        let mut differing = Vec::new();
        for (&conn, s) in &mut self.streams {
            let common = s.old.iter().zip(&s.new).take_while(|(a, b)| a == b).count();
            let differs = common < s.old.len().min(s.new.len());
            let closed_apart = s.old_closed != s.new_closed
                && (if s.old_closed { s.old.len() } else { s.new.len() }) == common;
            let too_much = s.old.len().max(s.new.len()) - common > UNMATCHED_MAX;
            if !(differs || closed_apart || too_much) {
                s.old.drain(..common);
                s.new.drain(..common);
                self.bytes_compared += common as u64;
                if (!s.old.is_empty() || !s.new.is_empty()) && s.since.is_none() {
                    s.since = Some((event.to_string(), kept(request_of(input, conn))));
                }
                continue;
            }
            differing.push(conn);
        }
        self.streams
            .retain(|_, s| !(s.old.is_empty() && s.new.is_empty() && s.old_closed == s.new_closed));
        for conn in differing {
            let request = request_of(input, conn);
            if self.declared_expected(conn, request) {
                continue;
            }
            let after = self.events.saturating_sub(1);
            let divergence = self.streams[&conn].divergence(conn, event, request, after);
            self.stop = Some(Stop::Diverged(Box::new(divergence)));
            return;
        }
    }

    /// Asks the candidate whether the unmatched output on `conn` is a difference its release
    /// declares; if so both sides are taken as agreeing (dropped) and it is counted.
    fn declared_expected(&mut self, conn: u64, request: &[u8]) -> bool {
        let Some(s) = self.streams.get_mut(&conn) else { return false };
        if !self.candidate.expected_difference(request, &s.old, &s.new) {
            return false;
        }
        s.old.clear();
        s.new.clear();
        s.new_closed = s.old_closed;
        self.declared += 1;
        true
    }
}

fn describe(call: Call<'_>) -> String {
    match call {
        Call::Connect(ConnInfo { peer, .. }) => format!("connect from {peer}"),
        Call::Data(_, _) => "data".into(),
        Call::Disconnect(_) => "disconnect".into(),
        Call::Timer(id) => format!("timer {id}"),
        Call::Writable(_, window) => format!("on-writable (window {window})"),
        Call::Listening(id, _) => format!("on-listening({id})"),
        Call::Accept(ConnInfo { peer, .. }, listener) => {
            format!("connect from {peer} on listener {listener}")
        }
        Call::ListenersLost => "on-listeners-lost".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_events_or_durations() {
        assert_eq!("500".parse::<Window>(), Ok(Window::Events(500)));
        assert_eq!("30s".parse::<Window>(), Ok(Window::Time(Duration::from_secs(30))));
        assert_eq!("1500ms".parse::<Window>(), Ok(Window::Time(Duration::from_millis(1500))));
        assert_eq!("2m".parse::<Window>(), Ok(Window::Time(Duration::from_secs(120))));
        assert!("0".parse::<Window>().is_err());
        assert!("5h".parse::<Window>().unwrap_err().contains("unknown unit"));
        assert!("s".parse::<Window>().is_err());
    }

    #[test]
    fn bytes_are_quoted_as_redis_cli_does() {
        assert_eq!(quoted(b":5\r\n"), "\":5\\r\\n\"");
        assert_eq!(quoted(b"a\"b\\\x00"), "\"a\\\"b\\\\\\x00\"");
        let long = vec![b'x'; SHOWN_MAX + 10];
        assert!(
            quoted(&long).ends_with(&format!("(first {SHOWN_MAX} of {} bytes)", SHOWN_MAX + 10))
        );
    }
}

//! Driving a [`Server`] in a plain `cargo test`: no wasm, no host.
//!
//! A [`TestHost`] stands where the tasuki host stands: it opens and closes connections, delivers
//! bytes, keeps the clock and the timers, and records what the app asks for — output, closes,
//! timers — as the host would receive it. Between the app and the `TestHost` runs the same SDK
//! code as in a component (the per-connection input buffers, input offered again while the app
//! makes progress, the input limits, the state's export and import), so what a test shows of
//! the app holds in the component too. What it does not run is the host: no sockets, no wasm, no
//! checkpoints or recovery, no pre-copy (an upgrade here moves the whole state). For those, run
//! the component under `tasuki test` (a trace) or `tasuki::sim`.
//!
//! It models the host's back-pressure when a test gives it an output buffer
//! ([`HostInfo::output_buffer`]; none by default): what the app sent to a connection and its
//! client has not [`read`](TestHost::read) is that connection's queued output, its window is
//! the buffer less that, a connection whose app asked to be told when it can take more gets
//! `on-writable` once the client has read down to half the buffer, and what the client sends
//! meanwhile is held and delivered after it, as the host does.
//!
//! ```
//! use std::time::Duration;
//! use tasuki_guest::testing::TestHost;
//! use tasuki_guest::{ConnId, Ctx, Server};
//!
//! /// Says "bye" and hangs up on a connection that stays silent for a second.
//! #[derive(Default, serde::Serialize, serde::Deserialize)]
//! struct Idle;
//!
//! impl Server for Idle {
//!     const NAME: &'static str = "idle";
//!     const STATE_VERSION: u32 = 1;
//!     fn on_connect(&mut self, ctx: &mut Ctx, conn: &tasuki_guest::ConnInfo) {
//!         ctx.set_timer(conn.id, Duration::from_secs(1));
//!     }
//!     fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
//!         ctx.set_timer(conn, Duration::from_secs(1)); // re-armed: the second starts again
//!         input.len()
//!     }
//!     fn on_timer(&mut self, ctx: &mut Ctx, conn: u64) {
//!         ctx.send(conn, b"bye\n");
//!         ctx.close(conn);
//!     }
//! }
//!
//! let mut host = TestHost::<Idle>::new();
//! let a = host.connect();
//! host.advance(Duration::from_millis(900));
//! host.send(a, "still here");
//! host.advance(Duration::from_millis(900));
//! assert!(host.is_open(a));
//! host.advance(Duration::from_millis(100));
//! assert_eq!(host.read(a), b"bye\n");
//! assert!(host.closed_by_app(a));
//! ```

use crate::runtime::bindings::tasuki::server::types::{ConnInfo, Snapshot};
use crate::runtime::{HostCalls, Runtime};
use crate::{ConnId, ListenError, ListenerId, Server};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::RangeInclusive;
use std::time::Duration;

/// What an app asked of the host, in the order the host received it: at the end of each event,
/// listeners opened and closed first, then output (one `Send` per connection written to), then
/// timers in the order asked, then requests to be told of a window, then closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// `net.send`: bytes queued for a connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// Everything the event queued for it.
        bytes: Vec<u8>,
    },
    /// `net.close`: the app closed a connection (after its output).
    Close(ConnId),
    /// `timers.set`: timer `id` armed to fire after `after_ms` milliseconds.
    SetTimer {
        /// The app's id for the timer.
        id: u64,
        /// Milliseconds from the event's time.
        after_ms: u64,
    },
    /// `timers.cancel`: timer `id` disarmed.
    CancelTimer(u64),
    /// `net.notify-writable`: the SDK stopped sending to a connection whose window is used up,
    /// and asks to be told when it can take more.
    NotifyWritable(ConnId),
    /// `listeners.listen`: the app asked for listener `id` on `port` ([`crate::Ctx::listen`]).
    Listen {
        /// The listener's id.
        id: ListenerId,
        /// The port asked for; 0 for any.
        port: u16,
    },
    /// `listeners.unlisten`: the app closed listener `id`.
    Unlisten(ListenerId),
}

/// The figures the [`crate::host`] functions report, which a test sets with
/// [`TestHost::set_host_info`]. All 0 by default: no bound on unconsumed input, as outside a host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostInfo {
    /// [`crate::host::resident_memory`], in bytes.
    pub resident_memory: u64,
    /// [`crate::host::max_connections`].
    pub max_connections: u32,
    /// [`crate::host::input_limit`], in bytes: the SDK closes a connection that leaves more
    /// unconsumed (after [`Server::on_input_limit`]); 0 for no bound.
    pub input_limit: u64,
    /// [`crate::host::input_total`], in bytes, over all connections; 0 for no bound.
    pub input_total: u64,
    /// [`crate::host::output_buffer`], in bytes: each connection's send window is this less
    /// what its client has not read ([`TestHost::window`]); 0 for no bound (the SDK then never
    /// waits).
    pub output_buffer: u64,
}

thread_local! {
    /// The figures of the `TestHost` whose event runs on this thread.
    static HOST_INFO: Cell<HostInfo> = const { Cell::new(HostInfo {
        resident_memory: 0,
        max_connections: 0,
        input_limit: 0,
        input_total: 0,
        output_buffer: 0,
    }) };
}

/// What [`crate::host`] reports outside a component.
#[cfg_attr(target_arch = "wasm32", expect(dead_code, reason = "components ask the host"))]
pub(crate) fn host_info() -> HostInfo {
    HOST_INFO.get()
}

/// Collects the requests of each event for the [`TestHost`].
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    effects: Vec<Effect>,
}

impl HostCalls for Recorder {
    fn send(&mut self, conn: ConnId, bytes: &[u8]) {
        self.effects.push(Effect::Send { conn, bytes: bytes.to_vec() });
    }
    fn close(&mut self, conn: ConnId) {
        self.effects.push(Effect::Close(conn));
    }
    fn set_timer(&mut self, id: u64, after_ms: u64) {
        self.effects.push(Effect::SetTimer { id, after_ms });
    }
    fn cancel_timer(&mut self, id: u64) {
        self.effects.push(Effect::CancelTimer(id));
    }
    fn notify_writable(&mut self, conn: ConnId) {
        self.effects.push(Effect::NotifyWritable(conn));
    }
    fn listen(&mut self, id: ListenerId, port: u16) {
        self.effects.push(Effect::Listen { id, port });
    }
    fn unlisten(&mut self, id: ListenerId) {
        self.effects.push(Effect::Unlisten(id));
    }
}

/// The first port a [`TestHost`] gives a listener asked for on port 0, as the simulator does:
/// the first of IANA's dynamic ports (RFC 6335).
pub const FIRST_LISTENER_PORT: u16 = 49152;

/// The host's bounds on run-time listeners, as `tasuki run --max-listeners` and `--data-ports`
/// set them ([`TestHost::set_listen_policy`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenPolicy {
    /// Listeners open at once; a request past it is refused with [`ListenError::Limit`].
    pub max: usize,
    /// The ports the app may ask for; `None`: only port 0. Port 0 takes the first free port
    /// of the range, or from [`FIRST_LISTENER_PORT`] without one.
    pub ports: Option<RangeInclusive<u16>>,
}

impl Default for ListenPolicy {
    /// The host's defaults: 1024 listeners, port 0 only.
    fn default() -> Self {
        Self { max: 1024, ports: None }
    }
}

/// A connection as its client sees it.
#[derive(Debug)]
struct Client {
    /// Bytes the app sent that the test has not read: the host's queued output.
    unread: Vec<u8>,
    /// Bytes the client sent that the host holds back (see [`TestHost::held`]).
    held: Vec<u8>,
    state: ConnState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    Open,
    /// The app closed it ([`crate::Ctx::close`]).
    ClosedByApp,
    /// The client went away ([`TestHost::disconnect`]).
    Disconnected,
}

/// Everything of the host that an upgrade keeps: connections, clock, timers, what was recorded.
#[derive(Debug)]
struct World {
    args: Vec<String>,
    now_ms: u64,
    next_conn: ConnId,
    clients: BTreeMap<ConnId, Client>,
    /// Armed timers: id → (due, Unix ms; the order it was armed, to break ties as the host does).
    timers: BTreeMap<u64, (u64, u64)>,
    armed: u64,
    effects: Vec<Effect>,
    info: HostInfo,
    /// Connections whose app asked to be told when they can take more, not told yet.
    waiting: BTreeSet<ConnId>,
    /// The app's listeners, by id: their port.
    listeners: BTreeMap<ListenerId, u16>,
    /// Answers to listen requests, told after the event that asked.
    answers: VecDeque<(ListenerId, Result<String, ListenError>)>,
    listen_policy: ListenPolicy,
}

/// A stand-in for the tasuki host, driving one instance of `S` natively. See the
/// [module docs](self).
///
/// Connections get ids 1, 2, 3, … in the order they connect. The clock starts at
/// [`TestHost::EPOCH_MS`] and moves only with [`TestHost::advance`]; the app reads it through
/// [`crate::Ctx::now_ms`]. Timers fire only from [`TestHost::advance`] (each at its due time,
/// in the order of their deadlines, then the order they were armed, as the host fires them) and
/// [`TestHost::fire_timer`].
///
/// Misuse by the test — data for a connection that is not open, firing a timer that is not
/// armed — panics with what was wrong.
#[derive(Debug)]
pub struct TestHost<S: Server> {
    runtime: Runtime<S, Recorder>,
    world: World,
}

/// The release name a test instance reports in its snapshots.
const TEST_VERSION: &str = "test";

impl<S: Server> Default for TestHost<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Server> TestHost<S> {
    /// Where the clock starts: 2026-01-01T00:00:00Z in Unix ms, as in the host's simulator
    /// (`tasuki test`), so a test does not depend on the day it runs.
    pub const EPOCH_MS: u64 = 1_767_225_600_000;

    /// An instance started as the host starts one without `--arg`: `S::default()`, then
    /// [`Server::init`]. Panics with the app's reason if `init` refuses.
    pub fn new() -> Self {
        Self::start(&[]).unwrap_or_else(|e| panic!("`{}` refused to start: {e}", S::NAME))
    }

    /// An instance started with `args` (the host's `--arg` values); the app's error if its
    /// [`Server::init`] refuses them.
    pub fn start(args: &[&str]) -> Result<Self, String> {
        let world = World {
            args: args.iter().map(|a| (*a).to_string()).collect(),
            now_ms: Self::EPOCH_MS,
            next_conn: 1,
            clients: BTreeMap::new(),
            timers: BTreeMap::new(),
            armed: 0,
            effects: Vec::new(),
            info: HostInfo::default(),
            waiting: BTreeSet::new(),
            listeners: BTreeMap::new(),
            answers: VecDeque::new(),
            listen_policy: ListenPolicy::default(),
        };
        let mut host =
            Self { runtime: Runtime::with_host(TEST_VERSION, Recorder::default()), world };
        let args = host.world.args.clone();
        host.event(|rt| rt.init(args))?;
        host.settle();
        Ok(host)
    }

    /// Sets the host's bounds on the listeners the app opens from the next request on.
    pub fn set_listen_policy(&mut self, policy: ListenPolicy) {
        self.world.listen_policy = policy;
    }

    /// The app's listeners open now, as the host holds them: (id, address), by id.
    pub fn listeners(&self) -> Vec<(ListenerId, String)> {
        self.world.listeners.iter().map(|(&id, &port)| (id, listener_address(port))).collect()
    }

    /// A client connects to the app's listener `listener` (`on_connect` with
    /// [`crate::ConnInfo::listener_id`] set), from a documentation address. Returns its id.
    /// Panics if the listener is not open.
    pub fn connect_to(&mut self, listener: ListenerId) -> ConnId {
        let Some(&port) = self.world.listeners.get(&listener) else {
            panic!("cannot connect to listener {listener}: it is not open ({:?})", self.listeners())
        };
        let id = self.world.next_conn;
        self.world.next_conn += 1;
        self.world
            .clients
            .insert(id, Client { unread: Vec::new(), held: Vec::new(), state: ConnState::Open });
        let peer = format!("192.0.2.1:{}", 40_000 + id % 20_000);
        let info = ConnInfo { id, listener: listener_address(port), peer };
        self.event(|rt| rt.on_accept(info, listener));
        self.settle();
        id
    }

    /// The host restarts from a snapshot of this state: every listener is gone, and the app
    /// is told so (`on-listeners-lost`), as after `tasuki run --restore`.
    pub fn lose_listeners(&mut self) {
        self.world.listeners.clear();
        self.event(|rt| rt.on_listeners_lost());
        self.settle();
    }

    /// What the instance tells the host about itself (`state.describe`): its sections and the
    /// versions of each it reads, which the host checks before it pauses for an upgrade.
    #[cfg(test)]
    pub(crate) fn describe(&self) -> crate::runtime::bindings::tasuki::server::types::AppInfo {
        self.runtime.describe()
    }

    /// The app's state.
    pub fn server(&self) -> &S {
        self.runtime.server()
    }

    /// The app's state, to set up a test (changes made here are not an event: the app is not
    /// told).
    pub fn server_mut(&mut self) -> &mut S {
        self.runtime.server_mut()
    }

    /// Sets what [`crate::host`] reports to the app from the next event on, and the input
    /// limits the SDK enforces.
    pub fn set_host_info(&mut self, info: HostInfo) {
        self.world.info = info;
    }

    /// The clock, in Unix ms.
    pub fn now_ms(&self) -> u64 {
        self.world.now_ms
    }

    /// A client connects (`on_connect`), from `192.0.2.1` (a documentation address) to
    /// `127.0.0.1:7000`. Returns its id.
    pub fn connect(&mut self) -> ConnId {
        let id = self.world.next_conn;
        self.connect_with("127.0.0.1:7000", &format!("192.0.2.1:{}", 40_000 + id % 20_000))
    }

    /// A client connects from `peer` to the listener `listener` (both `ip:port`, as
    /// [`ConnInfo`] has them). Returns its id.
    pub fn connect_with(&mut self, listener: &str, peer: &str) -> ConnId {
        let id = self.world.next_conn;
        self.world.next_conn += 1;
        self.world
            .clients
            .insert(id, Client { unread: Vec::new(), held: Vec::new(), state: ConnState::Open });
        let info = ConnInfo { id, listener: listener.to_string(), peer: peer.to_string() };
        self.event(|rt| rt.on_connect(info));
        self.settle();
        id
    }

    /// The client of `conn` sends `bytes`: one `on_data` event, as one read of the host's —
    /// or, while the app waits to be told `conn` can take more or more than the output buffer
    /// is unread, held by the host and delivered after that (see [`TestHost::held`]). Panics
    /// if `conn` is not open.
    pub fn send(&mut self, conn: ConnId, bytes: impl AsRef<[u8]>) {
        self.expect_open(conn, "send on");
        if self.holds(conn) {
            if let Some(client) = self.world.clients.get_mut(&conn) {
                client.held.extend_from_slice(bytes.as_ref());
            }
            return;
        }
        let data = bytes.as_ref().to_vec();
        self.event(|rt| rt.on_data(conn, data));
        self.settle();
    }

    /// Bytes `conn`'s client sent that the host holds back instead of handing them to the app:
    /// the app waits to be told `conn` can take more, or more than
    /// [`HostInfo::output_buffer`] is unread.
    pub fn held(&self, conn: ConnId) -> usize {
        self.world.clients.get(&conn).map_or(0, |c| c.held.len())
    }

    /// `conn`'s send window: [`HostInfo::output_buffer`] less what its client has not read;
    /// `None` when there is no output buffer (no bound).
    pub fn window(&self, conn: ConnId) -> Option<u64> {
        let buffer = self.world.info.output_buffer;
        let unread = self.world.clients.get(&conn).map_or(0, |c| c.unread.len() as u64);
        (buffer > 0).then(|| buffer.saturating_sub(unread))
    }

    /// Whether the app asked to be told when `conn` can take more and has not been told yet
    /// (it told the host it stopped sending for want of window).
    pub fn waiting(&self, conn: ConnId) -> bool {
        self.world.waiting.contains(&conn)
    }

    /// Whether the host holds `conn`'s input rather than hand it to the app (see
    /// [`TestHost::held`]).
    fn holds(&self, conn: ConnId) -> bool {
        let buffer = self.world.info.output_buffer;
        let Some(client) = self.world.clients.get(&conn) else { return false };
        !client.held.is_empty()
            || self.world.waiting.contains(&conn)
            || (buffer > 0 && client.unread.len() as u64 > buffer)
    }

    /// Tells the app of each connection that can take more, as it asked (`on-writable`, with
    /// the window), then hands it the input held for a connection the host no longer holds —
    /// each as the host does between events — until neither is due.
    fn settle(&mut self) {
        loop {
            if let Some((id, answer)) = self.world.answers.pop_front() {
                self.event(|rt| rt.on_listening(id, answer));
                continue;
            }
            let buffer = self.world.info.output_buffer;
            let unread = |w: &World, c: &ConnId| w.clients.get(c).map_or(0, |c| c.unread.len());
            let drained = self
                .world
                .waiting
                .iter()
                .copied()
                .find(|c| buffer == 0 || unread(&self.world, c) as u64 <= buffer / 2);
            if let Some(conn) = drained {
                self.world.waiting.remove(&conn);
                let window = match buffer {
                    0 => u64::MAX,
                    _ => buffer.saturating_sub(unread(&self.world, &conn) as u64),
                };
                self.event(|rt| rt.on_writable(conn, window));
                continue;
            }
            let resumed = self.world.clients.iter().find_map(|(&id, c)| {
                let open = c.state == ConnState::Open;
                let room = buffer == 0 || c.unread.len() as u64 <= buffer;
                (open && !c.held.is_empty() && room && !self.world.waiting.contains(&id))
                    .then_some(id)
            });
            let Some(conn) = resumed else { break };
            let data = self
                .world
                .clients
                .get_mut(&conn)
                .map(|c| std::mem::take(&mut c.held))
                .unwrap_or_default();
            self.event(|rt| rt.on_data(conn, data));
        }
    }

    /// The client of `conn` goes away: `on_disconnect`. Panics if `conn` is not open (the
    /// host sends no disconnect for a connection the app closed).
    pub fn disconnect(&mut self, conn: ConnId) {
        self.expect_open(conn, "disconnect");
        if let Some(client) = self.world.clients.get_mut(&conn) {
            client.state = ConnState::Disconnected;
        }
        self.world.waiting.remove(&conn);
        self.event(|rt| rt.on_disconnect(conn));
        self.settle();
    }

    /// Takes what the app sent to `conn` since the last read, as its client would read it.
    /// With an output buffer, that makes room: the app then hears it can send more, if it
    /// asked, and the input held meanwhile reaches it (what it sends then is read next time).
    pub fn read(&mut self, conn: ConnId) -> Vec<u8> {
        self.read_some(conn, usize::MAX)
    }

    /// [`TestHost::read`] of at most `max` bytes: a client that reads slowly.
    pub fn read_some(&mut self, conn: ConnId, max: usize) -> Vec<u8> {
        let read = match self.world.clients.get_mut(&conn) {
            Some(client) if client.unread.len() <= max => std::mem::take(&mut client.unread),
            Some(client) => {
                let rest = client.unread.split_off(max);
                std::mem::replace(&mut client.unread, rest)
            }
            None => Vec::new(),
        };
        self.settle();
        read
    }

    /// [`TestHost::read`] as text. Panics (showing the bytes) if they are not UTF-8.
    pub fn read_string(&mut self, conn: ConnId) -> String {
        let bytes = self.read(conn);
        String::from_utf8(bytes).unwrap_or_else(|e| {
            panic!("connection {conn} read bytes that are not UTF-8: {:?}", e.as_bytes())
        })
    }

    /// Whether `conn` is open: connected, and closed by neither side.
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.state(conn) == Some(ConnState::Open)
    }

    /// Whether the app closed `conn` (with [`crate::Ctx::close`], or the SDK for it, past an
    /// input limit).
    pub fn closed_by_app(&self, conn: ConnId) -> bool {
        self.state(conn) == Some(ConnState::ClosedByApp)
    }

    /// Bytes `conn` sent that the app has not consumed (the SDK keeps them for it, across
    /// upgrades too).
    pub fn unconsumed(&self, conn: ConnId) -> usize {
        self.runtime.unconsumed(conn)
    }

    /// The armed timers as (id, due time in Unix ms), in the order they would fire.
    pub fn timers(&self) -> Vec<(u64, u64)> {
        let mut armed: Vec<(u64, u64, u64)> =
            self.world.timers.iter().map(|(&id, &(due, order))| (due, order, id)).collect();
        armed.sort_unstable();
        armed.into_iter().map(|(due, _, id)| (id, due)).collect()
    }

    /// Fires timer `id` now, whatever its due time: `on_timer`. Panics if it is not armed.
    pub fn fire_timer(&mut self, id: u64) {
        assert!(
            self.world.timers.remove(&id).is_some(),
            "timer {id} is not armed (armed: {:?})",
            self.timers()
        );
        self.event(|rt| rt.on_timer(id));
        self.settle();
    }

    /// Moves the clock forward by `by`, firing every timer that falls due meanwhile at its due
    /// time, in order — including timers those firings arm, if they fall due in time.
    pub fn advance(&mut self, by: Duration) {
        let by_ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let until = self.world.now_ms.saturating_add(by_ms);
        while let Some(&(id, due)) = self.timers().first() {
            if due > until {
                break;
            }
            self.world.timers.remove(&id);
            self.world.now_ms = self.world.now_ms.max(due);
            self.event(|rt| rt.on_timer(id));
            self.settle();
        }
        self.world.now_ms = until;
    }

    /// Everything the app asked of the host so far, in order.
    pub fn effects(&self) -> &[Effect] {
        &self.world.effects
    }

    /// Takes what [`TestHost::effects`] holds, so the next look sees only what came after.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.world.effects)
    }

    /// Upgrades to release `N` as the host does with a whole-state transfer: a fresh `N`
    /// started with the same arguments ([`Server::init`]), the state exported
    /// ([`Server::export_ready`], then serialized: the app's section and each connection's
    /// unconsumed input), imported (through [`Server::migrations`] when the versions differ)
    /// and [`Server::resumed`]. Connections, their unread output, timers and the clock stay.
    /// The error of the step that refused; this host is then dropped (a test that wants the
    /// old version to serve on after a refusal builds it again).
    pub fn upgrade<N: Server>(mut self) -> Result<TestHost<N>, String> {
        let snapshot: Snapshot = self.event(|rt| rt.export_state())?;
        let live = self.runtime.live();
        let mut next = TestHost::<N> {
            runtime: Runtime::with_host(TEST_VERSION, Recorder::default()),
            world: self.world,
        };
        let args = next.world.args.clone();
        next.event(|rt| rt.init(args))?;
        next.event(|rt| rt.import_state(snapshot, live))?;
        next.settle();
        Ok(next)
    }

    fn state(&self, conn: ConnId) -> Option<ConnState> {
        self.world.clients.get(&conn).map(|c| c.state)
    }

    fn expect_open(&self, conn: ConnId, what: &str) {
        match self.state(conn) {
            Some(ConnState::Open) => {}
            Some(ConnState::ClosedByApp) => {
                panic!("cannot {what} connection {conn}: the app closed it")
            }
            Some(ConnState::Disconnected) => {
                panic!("cannot {what} connection {conn}: its client disconnected")
            }
            None => panic!("cannot {what} connection {conn}: it never connected"),
        }
    }

    /// Runs one call into the instance at the current time with this host's figures, then
    /// applies what the app asked for.
    fn event<T>(&mut self, call: impl FnOnce(&mut Runtime<S, Recorder>) -> T) -> T {
        let outer = HOST_INFO.replace(self.world.info);
        self.runtime.set_clock(Some(self.world.now_ms));
        let result = call(&mut self.runtime);
        HOST_INFO.set(outer);
        let effects = std::mem::take(&mut self.runtime.host_mut().effects);
        for effect in effects {
            self.world.apply(&effect);
            self.world.effects.push(effect);
        }
        result
    }
}

impl World {
    fn apply(&mut self, effect: &Effect) {
        match effect {
            Effect::Send { conn, bytes } => {
                // The host drops output for a connection that is gone, as here.
                // (An event's output comes before its closes, so a connection the event closes
                // still gets what it was sent.)
                if let Some(client) = self.clients.get_mut(conn)
                    && client.state == ConnState::Open
                {
                    client.unread.extend_from_slice(bytes);
                }
            }
            Effect::Close(conn) => {
                if let Some(client) = self.clients.get_mut(conn)
                    && client.state == ConnState::Open
                {
                    client.state = ConnState::ClosedByApp;
                    client.held = Vec::new();
                }
                self.waiting.remove(conn);
            }
            Effect::NotifyWritable(conn) => {
                if self.clients.get(conn).is_some_and(|c| c.state == ConnState::Open) {
                    self.waiting.insert(*conn);
                }
            }
            Effect::SetTimer { id, after_ms } => {
                self.armed += 1;
                self.timers.insert(*id, (self.now_ms.saturating_add(*after_ms), self.armed));
            }
            Effect::CancelTimer(id) => {
                self.timers.remove(id);
            }
            Effect::Listen { id, port } => {
                let answer = self.listen(*id, *port);
                self.answers.push_back((*id, answer));
            }
            Effect::Unlisten(id) => {
                self.listeners.remove(id);
            }
        }
    }

    /// Opens listener `id` on `port` as the host would, within the test's policy.
    fn listen(&mut self, id: ListenerId, port: u16) -> Result<String, ListenError> {
        let policy = &self.listen_policy;
        if self.listeners.contains_key(&id) {
            return Err(ListenError::IdInUse);
        }
        if self.listeners.len() >= policy.max {
            return Err(ListenError::Limit(u32::try_from(policy.max).unwrap_or(u32::MAX)));
        }
        let used = |p: u16| self.listeners.values().any(|&q| q == p);
        let port = match (&policy.ports, port) {
            (ports, 0) => {
                let range = ports.clone().unwrap_or(FIRST_LISTENER_PORT..=u16::MAX);
                range.clone().find(|&p| !used(p)).ok_or_else(|| {
                    ListenError::InUse(format!(
                        "no port of {}-{} is free",
                        range.start(),
                        range.end()
                    ))
                })?
            }
            (Some(range), port) if range.contains(&port) => {
                if used(port) {
                    return Err(ListenError::InUse(format!("port {port} is in use")));
                }
                port
            }
            (_, port) => {
                return Err(ListenError::NotAllowed(format!("port {port} is not allowed")));
            }
        };
        self.listeners.insert(id, port);
        Ok(listener_address(port))
    }
}

/// Where a [`TestHost`]'s listener on `port` is.
fn listener_address(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

#[cfg(test)]
mod tests;

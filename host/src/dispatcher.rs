//! The event loop: one thread that owns the listeners, every connection, the timers and the live
//! instance, and feeds the instance one event at a time.
//!
//! Because the loop runs events one after another, the moment between two of them is an event
//! boundary, and that is where an upgrade swaps instances: the old instance holds no stack, bytes
//! that arrive meanwhile wait in the kernel and are read by the new instance, and output the old
//! one queued stays in the host's per-connection buffers and is written first.

use crate::bindings::{AppInfo, ConnInfo};
use crate::instance::{CallError, Effect, Instance, snapshot_bytes};
use crate::limits::{OUTPUT_HIGH_WATER, READ_BUDGET, READ_CHUNK};
use crate::status::Shared;
use crate::timers::TimerQueue;
use crate::upgrade::{self, AppVersion, Prepared, SectionReport, UpgradeError, UpgradeReport};
use crate::version::Version;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// Asks the loop to do something at the next event boundary.
pub(crate) enum Command {
    Upgrade(Box<Prepared>, mpsc::SyncSender<Swapped>),
    Shutdown,
}

/// The answer to [`Command::Upgrade`]. The instance that lost (the old one on commit, the new
/// one on rollback) travels back to the requester to be dropped there: freeing an instance's
/// memory takes longer than the swap itself and has no business in the pause.
pub(crate) struct Swapped {
    pub(crate) outcome: Result<UpgradeReport, UpgradeError>,
    pub(crate) retired: Option<Instance>,
}

pub(crate) const WAKER: Token = Token(usize::MAX);
/// Tokens below this are listeners; a connection's token is this plus its id.
const CONN_TOKEN_BASE: usize = 1 << 16;

/// One client connection, owned by the host.
struct Conn {
    stream: TcpStream,
    info: ConnInfo,
    /// Output not yet accepted by the kernel; `out[written..]` is pending.
    out: Vec<u8>,
    written: usize,
    /// The guest closed it: write what is queued, then drop it.
    closing: bool,
    /// Reading stopped because too much output is queued (back-pressure).
    read_paused: bool,
}

impl Conn {
    fn pending(&self) -> usize {
        self.out.len() - self.written
    }

    /// Writes queued output until the kernel pushes back.
    fn write_pending(&mut self) -> io::Result<()> {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        } else if self.written > self.out.len() / 2 {
            self.out.drain(..self.written);
            self.written = 0;
        }
        Ok(())
    }
}

/// The connections, apart from the instance so effects can be applied while it is borrowed.
struct Connections {
    registry: Registry,
    conns: HashMap<u64, Conn>,
    shared: Arc<Shared>,
    /// Connections found broken while writing; the guest hears of them after the call.
    broken: Vec<u64>,
    /// Connections whose reading resumed or was cut short by the read budget.
    read_again: VecDeque<u64>,
}

impl Connections {
    fn send(&mut self, id: u64, data: Vec<u8>) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if conn.closing {
            return;
        }
        if conn.pending() == 0 {
            conn.out = data;
            conn.written = 0;
        } else {
            conn.out.extend_from_slice(&data);
        }
        if let Err(e) = conn.write_pending() {
            debug!(conn = id, "write failed: {e}");
            self.broken.push(id);
        }
    }

    fn close(&mut self, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        conn.closing = true;
        if conn.pending() == 0 {
            self.remove(id);
        }
    }

    /// The socket became writable.
    fn on_writable(&mut self, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if let Err(e) = conn.write_pending() {
            debug!(conn = id, "write failed: {e}");
            self.broken.push(id);
            return;
        }
        if conn.closing && conn.pending() == 0 {
            self.remove(id);
        } else if conn.read_paused && conn.pending() <= OUTPUT_HIGH_WATER / 2 {
            conn.read_paused = false;
            self.read_again.push_back(id);
        }
    }

    fn remove(&mut self, id: u64) -> Option<Conn> {
        let mut conn = self.conns.remove(&id)?;
        if let Err(e) = self.registry.deregister(&mut conn.stream) {
            debug!(conn = id, "deregister failed: {e}");
        }
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
        Some(conn)
    }

    fn live(&self) -> Vec<ConnInfo> {
        let mut live: Vec<ConnInfo> =
            self.conns.values().filter(|c| !c.closing).map(|c| c.info.clone()).collect();
        live.sort_by_key(|c| c.id);
        live
    }
}

/// The loop's state. Built by [`crate::Host::start`], run on a thread of its own.
pub(crate) struct Dispatcher {
    poll: Poll,
    listeners: Vec<(TcpListener, String)>,
    net: Connections,
    next_conn: u64,
    timers: TimerQueue,
    instance: Instance,
    version: Arc<Version>,
    info: AppInfo,
    args: Vec<String>,
    commands: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    read_buf: Vec<u8>,
}

impl Dispatcher {
    #[expect(clippy::too_many_arguments, reason = "assembled once, by Host::start")]
    pub(crate) fn new(
        poll: Poll,
        mut listeners: Vec<(TcpListener, String)>,
        instance: Instance,
        version: Arc<Version>,
        info: AppInfo,
        args: Vec<String>,
        commands: mpsc::Receiver<Command>,
        shared: Arc<Shared>,
    ) -> io::Result<Self> {
        let registry = poll.registry().try_clone()?;
        for (index, (listener, _)) in listeners.iter_mut().enumerate() {
            poll.registry().register(listener, Token(index), Interest::READABLE)?;
        }
        let mut dispatcher = Self {
            poll,
            listeners,
            net: Connections {
                registry,
                conns: HashMap::new(),
                shared: Arc::clone(&shared),
                broken: Vec::new(),
                read_again: VecDeque::new(),
            },
            next_conn: 1,
            timers: TimerQueue::default(),
            instance,
            version,
            info,
            args,
            commands,
            shared,
            read_buf: vec![0; READ_CHUNK],
        };
        // Timers armed and output queued by `init` take effect now that the loop exists.
        dispatcher.apply_effects();
        Ok(dispatcher)
    }

    /// Runs until a [`Command::Shutdown`] arrives or the command channel closes.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.net.read_again.is_empty() {
                self.timers.next_deadline().map(|d| d.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("poll failed, the host stops: {e}");
                return;
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    Token(index) if index < CONN_TOKEN_BASE => self.accept(index),
                    Token(token) => {
                        let id = (token - CONN_TOKEN_BASE) as u64;
                        if event.is_writable() {
                            self.net.on_writable(id);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(id);
                        }
                    }
                }
                self.reap_broken();
            }
            for id in std::mem::take(&mut self.net.read_again) {
                self.read(id);
                self.reap_broken();
            }
            self.fire_timers();
            loop {
                match self.commands.try_recv() {
                    Ok(Command::Upgrade(prepared, reply)) => {
                        let swapped = self.upgrade(*prepared);
                        // The requester may have gone away; the outcome is logged either way.
                        let _ = reply.send(swapped);
                    }
                    Ok(Command::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => {
                        info!("dispatcher stopped");
                        return;
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
        }
    }

    fn accept(&mut self, index: usize) {
        loop {
            let Some((listener, addr)) = self.listeners.get(index) else { return };
            let (mut stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of file descriptors and the like: the listener stays, the next
                    // readiness event tries again.
                    warn!("accept on {addr} failed: {e}");
                    return;
                }
            };
            let id = self.next_conn;
            self.next_conn += 1;
            if let Err(e) = stream.set_nodelay(true) {
                debug!(conn = id, "set_nodelay failed: {e}");
            }
            let token = Token(CONN_TOKEN_BASE + id as usize);
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!("cannot register a connection from {peer}: {e}");
                continue;
            }
            let info = ConnInfo { id, listener: addr.clone(), peer: peer.to_string() };
            debug!(conn = id, %peer, "connected");
            self.net.conns.insert(
                id,
                Conn {
                    stream,
                    info: info.clone(),
                    out: Vec::new(),
                    written: 0,
                    closing: false,
                    read_paused: false,
                },
            );
            self.shared.connections.fetch_add(1, Ordering::Relaxed);
            let result = self.instance.on_connect(&info);
            self.after_call(result, Some(id));
        }
    }

    fn read(&mut self, id: u64) {
        let mut budget = READ_BUDGET;
        loop {
            let Some(conn) = self.net.conns.get_mut(&id) else { return };
            if conn.closing {
                return;
            }
            if conn.pending() > OUTPUT_HIGH_WATER {
                conn.read_paused = true;
                return;
            }
            if budget == 0 {
                self.net.read_again.push_back(id);
                return;
            }
            let limit = budget.min(self.read_buf.len());
            match conn.stream.read(&mut self.read_buf[..limit]) {
                Ok(0) => {
                    self.peer_gone(id);
                    return;
                }
                Ok(n) => {
                    budget -= n;
                    let result = self.instance.on_data(id, &self.read_buf[..n]);
                    self.after_call(result, Some(id));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!(conn = id, "read failed: {e}");
                    self.peer_gone(id);
                    return;
                }
            }
        }
    }

    /// The peer closed or reset the connection: the guest hears of it, queued output gets one
    /// last chance, and the connection is dropped.
    fn peer_gone(&mut self, id: u64) {
        let Some(mut conn) = self.net.remove(id) else { return };
        debug!(conn = id, "disconnected");
        // Best effort: a half-closed peer may still read what it was sent.
        let _ = conn.write_pending();
        if !conn.closing {
            let result = self.instance.on_disconnect(id);
            self.after_call(result, None);
        }
    }

    fn reap_broken(&mut self) {
        while let Some(id) = self.net.broken.pop() {
            self.peer_gone(id);
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(id) = self.timers.pop_due(now) {
            let result = self.instance.on_timer(id);
            self.after_call(result, None);
        }
    }

    fn apply_effects(&mut self) {
        let now = Instant::now();
        for effect in self.instance.take_effects() {
            match effect {
                Effect::Send(conn, data) => self.net.send(conn, data),
                Effect::Close(conn) => self.net.close(conn),
                Effect::SetTimer(id, after) => self.timers.set(id, now + after),
                Effect::CancelTimer(id) => self.timers.cancel(id),
            }
        }
    }

    fn after_call(&mut self, result: Result<(), CallError>, conn: Option<u64>) {
        match result {
            Ok(()) => self.apply_effects(),
            Err(e) => {
                self.instance.discard_effects();
                error!(conn, "{} {e}", AppVersion::from(&self.info));
                if let Some(id) = conn {
                    // The event that faulted is not retried: its connection is closed.
                    if let Some(mut c) = self.net.remove(id) {
                        let _ = c.write_pending();
                    }
                }
                self.restart();
            }
        }
    }

    /// A trapped instance can never be entered again. Start a fresh instance of the same
    /// version and announce every open connection to it, so the service goes on. The trapped
    /// instance's state is lost with it.
    fn restart(&mut self) {
        let app = AppVersion::from(&self.info);
        match upgrade::start(&self.version, &self.args) {
            Ok((instance, info)) => {
                self.instance = instance;
                self.info = info;
                error!("{app} restarted with fresh state after a trap; the state it held is lost");
                for conn in self.net.live() {
                    if let Err(e) = self.instance.on_connect(&conn) {
                        error!("{app} trapped again while restarting: {e}");
                        return;
                    }
                    self.apply_effects();
                }
            }
            Err(e) => error!("{app} cannot be restarted: {e}"),
        }
    }

    /// Steps 3–7 of the upgrade: pause, export, import, commit or roll back.
    fn upgrade(&mut self, mut next: Prepared) -> Swapped {
        let running = AppVersion::from(&self.info);
        let new = AppVersion::from(&next.info);
        let paused = Instant::now();
        let snapshot = match self.instance.export_state() {
            Ok(snapshot) => snapshot,
            Err(e) => {
                let trapped = matches!(e, CallError::Trap(_));
                let err = UpgradeError::Export { running, reason: e.to_string() };
                self.shared.record_upgrade(Err(err.to_string()));
                if trapped {
                    self.instance.discard_effects();
                    self.restart();
                }
                return Swapped { outcome: Err(err), retired: Some(next.instance) };
            }
        };
        let export = paused.elapsed();
        let live = self.net.live();
        if let Err(e) = next.instance.import_state(&snapshot, &live) {
            let err = UpgradeError::Import { running, new, reason: e.to_string() };
            warn!("{err}");
            self.shared.record_upgrade(Err(err.to_string()));
            return Swapped { outcome: Err(err), retired: Some(next.instance) };
        }
        let import = paused.elapsed() - export;

        // Commit: from here on every event goes to the new instance.
        let retired = std::mem::replace(&mut self.instance, next.instance);
        self.version = next.version;
        self.info = next.info;
        self.apply_effects();
        self.reap_broken();
        let pause = paused.elapsed();

        let report = UpgradeReport {
            from: running,
            to: new,
            wasm: self.version.path.clone(),
            prepare: next.prepare_time,
            compile: self.version.compile_time,
            pause,
            export,
            import,
            sections: snapshot
                .sections
                .iter()
                .map(|s| SectionReport {
                    name: s.name.clone(),
                    version: s.version,
                    bytes: s.bytes.len() as u64,
                })
                .collect(),
            state_bytes: snapshot_bytes(&snapshot),
            connections: live.len() as u64,
        };
        info!(
            from = %report.from, to = %report.to, pause_us = pause.as_micros() as u64,
            state_bytes = report.state_bytes, connections = report.connections, "upgraded"
        );
        self.shared.record_commit(&report, self.info.clone());
        Swapped { outcome: Ok(report), retired: Some(retired) }
    }
}

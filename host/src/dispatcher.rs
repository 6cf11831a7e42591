//! The event loop: one thread that owns the listeners, every connection, the timers and the live
//! instance, and feeds the instance one event at a time.
//!
//! Because the loop runs events one after another, the moment between two of them is an event
//! boundary, and that is where an upgrade swaps instances: the old instance holds no stack, bytes
//! that arrive meanwhile wait in the kernel and are read by the new instance, and output the old
//! one queued stays in the host's per-connection buffers and is written first.

use crate::bindings::{AppInfo, ConnInfo, Snapshot};
use crate::clock::EventClock;
use crate::instance::{CallError, Effect, Instance, snapshot_bytes};
use crate::limits::{Limits, READ_BUDGET, READ_CHUNK};
use crate::recovery::Journal;
use crate::status::Shared;
use crate::timers::TimerQueue;
use crate::upgrade::{
    self, AppVersion, Prepared, SectionReport, StateSource, UpgradeError, UpgradeReport,
};
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
    /// Export the state (a copy: the app serves on) and say how long the export paused it.
    Snapshot(mpsc::SyncSender<Result<(Snapshot, Duration), String>>),
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
    limits: Arc<Limits>,
    /// Connections found broken while writing, or cut off for queueing too much; the guest
    /// hears of them after the call.
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
        } else if conn.pending() > self.limits.output_limit() {
            warn!(
                conn = id,
                peer = %conn.info.peer,
                "closing a connection with {} bytes of replies it does not read",
                conn.pending()
            );
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
        } else if conn.read_paused && conn.pending() <= self.limits.output_buffer / 2 {
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

    /// Connections the app knows as open, by id.
    fn live(&self) -> Vec<ConnInfo> {
        let mut live: Vec<ConnInfo> =
            self.conns.values().filter(|c| !c.closing).map(|c| c.info.clone()).collect();
        live.sort_by_key(|c| c.id);
        live
    }
}

/// One event for the live instance.
#[derive(Clone, Copy)]
enum Dispatch<'a> {
    Connect(&'a ConnInfo),
    Data(u64, &'a [u8]),
    Disconnect(u64),
    Timer(u64),
}

impl Dispatch<'_> {
    fn conn(&self) -> Option<u64> {
        match self {
            Self::Connect(info) => Some(info.id),
            Self::Data(id, _) | Self::Disconnect(id) => Some(*id),
            Self::Timer(_) => None,
        }
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
    limits: Arc<Limits>,
    clock: EventClock,
    journal: Journal,
    /// Set while an instance is being rebuilt, so a fault there does not recurse.
    recovering: bool,
    refused_connections: u64,
    read_buf: Vec<u8>,
    /// `--record`: the session written as a trace.
    recorder: Option<crate::sim::record::Recorder>,
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
        let limits = Arc::clone(&version.runtime.limits);
        let clock = version.runtime.clock.clone();
        let mut dispatcher = Self {
            poll,
            listeners,
            net: Connections {
                registry,
                conns: HashMap::new(),
                shared: Arc::clone(&shared),
                limits: Arc::clone(&limits),
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
            journal: Journal::new(limits.journal),
            limits,
            clock,
            recovering: false,
            refused_connections: 0,
            read_buf: vec![0; READ_CHUNK],
            recorder: None,
        };
        // Timers armed and output queued by `init` take effect now that the loop exists.
        dispatcher.apply_effects();
        Ok(dispatcher)
    }

    /// Writes the session to `recorder` from now on.
    pub(crate) fn record(&mut self, recorder: crate::sim::record::Recorder) {
        self.recorder = Some(recorder);
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
            if self.journal.wants_checkpoint() {
                self.take_checkpoint();
            }
            loop {
                match self.commands.try_recv() {
                    Ok(Command::Upgrade(prepared, reply)) => {
                        let swapped = self.upgrade(*prepared);
                        // The requester may have gone away; the outcome is logged either way.
                        let _ = reply.send(swapped);
                    }
                    Ok(Command::Snapshot(reply)) => {
                        let _ = reply.send(self.snapshot());
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

    fn app(&self) -> AppVersion {
        AppVersion::from(&self.info)
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
            if self.net.conns.len() >= self.limits.max_connections {
                // Closed at once: the app never hears of it.
                if self.refused_connections % 1000 == 0 {
                    warn!(
                        "refusing connections beyond the limit of {} (--max-connections)",
                        self.limits.max_connections
                    );
                }
                self.refused_connections += 1;
                continue;
            }
            let id = self.next_conn;
            self.next_conn += 1;
            if let Err(e) = stream.set_nodelay(true) {
                debug!(conn = id, "set_nodelay failed: {e}");
            }
            let token = Token(CONN_TOKEN_BASE + id as usize);
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = self.poll.registry().register(&mut stream, token, interest) {
                warn!("cannot register a connection from {peer}: {e}");
                continue;
            }
            let info = ConnInfo { id, listener: addr.clone(), peer: peer.to_string() };
            debug!(conn = id, %peer, "connected");
            let conn = Conn {
                stream,
                info: info.clone(),
                out: Vec::new(),
                written: 0,
                closing: false,
                read_paused: false,
            };
            self.net.conns.insert(id, conn);
            self.shared.connections.fetch_add(1, Ordering::Relaxed);
            self.dispatch(Dispatch::Connect(&info));
        }
    }

    fn read(&mut self, id: u64) {
        let mut budget = READ_BUDGET;
        let mut buf = std::mem::take(&mut self.read_buf);
        loop {
            let Some(conn) = self.net.conns.get_mut(&id) else { break };
            if conn.closing {
                break;
            }
            if conn.pending() > self.limits.output_buffer {
                conn.read_paused = true;
                break;
            }
            if budget == 0 {
                self.net.read_again.push_back(id);
                break;
            }
            let limit = budget.min(buf.len());
            match conn.stream.read(&mut buf[..limit]) {
                Ok(0) => {
                    self.peer_gone(id);
                    break;
                }
                Ok(n) => {
                    budget -= n;
                    self.dispatch(Dispatch::Data(id, &buf[..n]));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!(conn = id, "read failed: {e}");
                    self.peer_gone(id);
                    break;
                }
            }
        }
        self.read_buf = buf;
    }

    /// The peer closed or reset the connection: the guest hears of it, queued output gets one
    /// last chance, and the connection is dropped.
    fn peer_gone(&mut self, id: u64) {
        let Some(mut conn) = self.net.remove(id) else { return };
        debug!(conn = id, "disconnected");
        // Best effort: a half-closed peer may still read what it was sent.
        let _ = conn.write_pending();
        if !conn.closing {
            self.dispatch(Dispatch::Disconnect(id));
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
            self.dispatch(Dispatch::Timer(id));
        }
    }

    fn apply_effects(&mut self) {
        let now = Instant::now();
        for effect in self.instance.take_effects() {
            if let Some(recorder) = &mut self.recorder {
                match &effect {
                    Effect::Send(conn, data) => recorder.reply(*conn, data),
                    Effect::Close(conn) => recorder.forget(*conn),
                    _ => {}
                }
            }
            match effect {
                Effect::Send(conn, data) => self.net.send(conn, data),
                Effect::Close(conn) => self.net.close(conn),
                Effect::SetTimer(id, after) => self.timers.set(id, now + after),
                Effect::CancelTimer(id) => self.timers.cancel(id),
            }
        }
    }

    /// Runs one event in the live instance, at the time the clock is stamped with; journals it
    /// if it completed, contains it if it trapped.
    fn dispatch(&mut self, event: Dispatch<'_>) {
        let at = self.clock.stamp();
        let result = match event {
            Dispatch::Connect(info) => self.instance.on_connect(info),
            Dispatch::Data(id, bytes) => self.instance.on_data(id, bytes),
            Dispatch::Disconnect(id) => self.instance.on_disconnect(id),
            Dispatch::Timer(id) => self.instance.on_timer(id),
        };
        match result {
            Ok(()) => {
                if let Some(recorder) = &mut self.recorder {
                    match event {
                        Dispatch::Connect(info) => recorder.connect(info.id),
                        Dispatch::Data(id, bytes) => recorder.send(id, bytes),
                        Dispatch::Disconnect(id) => recorder.close(id),
                        Dispatch::Timer(_) => {}
                    }
                }
                match event {
                    Dispatch::Connect(info) => self.journal.connect(at, info),
                    Dispatch::Data(id, bytes) => self.journal.data(at, id, bytes),
                    Dispatch::Disconnect(id) => self.journal.disconnect(at, id),
                    Dispatch::Timer(id) => self.journal.timer(at, id),
                }
                self.apply_effects();
            }
            Err(e) => self.fault(&e, event.conn()),
        }
    }

    /// The live instance trapped handling an event for `conn` (or a timer, or a checkpoint).
    /// The event is dropped, its connection closed, and the instance rebuilt from the journal.
    fn fault(&mut self, e: &CallError, conn: Option<u64>) {
        self.instance.discard_effects();
        error!(conn, "{} {e}", self.app());
        let closed = conn.and_then(|id| self.net.remove(id)).map(|mut c| {
            // Replies to the events before the faulting one are still owed.
            let _ = c.write_pending();
            c.info.id
        });
        if self.recovering {
            return;
        }
        self.recovering = true;
        self.recover(closed);
        self.recovering = false;
    }

    fn recover(&mut self, closed: Option<u64>) {
        let app = self.app();
        if self.journal.is_complete() {
            match self.journal.rebuild(&self.version, &self.args, &self.clock) {
                Ok(instance) => {
                    self.instance = instance;
                    info!(
                        "{app} rebuilt from its checkpoint and {} journaled events: only the \
                         faulting event was lost",
                        self.journal.events()
                    );
                    if let Some(id) = closed {
                        self.dispatch(Dispatch::Disconnect(id));
                    }
                    return;
                }
                Err(e) => error!("{app} could not be rebuilt from its journal ({e})"),
            }
        }
        self.restart_fresh();
    }

    /// The last resort, when there is no complete journal: a fresh instance of the same
    /// version, told about every open connection. The trapped instance's state is lost.
    fn restart_fresh(&mut self) {
        let app = self.app();
        match upgrade::start(&self.version, &self.args) {
            Ok((instance, info)) => {
                self.instance = instance;
                self.info = info;
                self.journal = Journal::new(self.limits.journal);
                error!("{app} restarted with fresh state after a trap; the state it held is lost");
                for conn in self.net.live() {
                    self.dispatch(Dispatch::Connect(&conn));
                }
            }
            Err(e) => error!("{app} cannot be restarted: {e}"),
        }
    }

    /// `tasuki snapshot`: the live state, which also serves as a fresh checkpoint.
    fn snapshot(&mut self) -> Result<(Snapshot, Duration), String> {
        let started = Instant::now();
        match self.instance.export_state() {
            Ok(snapshot) => {
                let pause = started.elapsed();
                self.instance.discard_effects();
                self.journal.set_checkpoint(snapshot.clone(), self.net.live());
                Ok((snapshot, pause))
            }
            Err(e) => {
                let reason = format!("{} failed to export its state: {e}", self.app());
                if let CallError::Trap(_) = e {
                    self.fault(&e, None);
                }
                Err(reason)
            }
        }
    }

    /// Exports the live state so the journal can start over from it.
    fn take_checkpoint(&mut self) {
        let started = Instant::now();
        match self.instance.export_state() {
            Ok(snapshot) => {
                let bytes = snapshot_bytes(&snapshot);
                self.instance.discard_effects();
                self.journal.set_checkpoint(snapshot, self.net.live());
                debug!(bytes, took_us = started.elapsed().as_micros() as u64, "checkpoint");
            }
            Err(CallError::Refused(reason)) => {
                warn!("{} refused a checkpoint: {reason}", self.app());
                self.journal.checkpoint_refused();
            }
            Err(trap) => {
                self.journal.checkpoint_refused();
                self.fault(&trap, None);
            }
        }
    }

    /// Steps 3–7 of the upgrade: pause, export, import, commit or roll back.
    fn upgrade(&mut self, mut next: Prepared) -> Swapped {
        let running = self.app();
        let new = AppVersion::from(&next.info);
        let paused = Instant::now();
        let rollback = |this: &mut Self, err: UpgradeError, retired: Instance| {
            warn!("{err}");
            this.shared.record_upgrade(Err(err.to_string()));
            Swapped { outcome: Err(err), retired: Some(retired) }
        };

        // Export, or with --from-checkpoint take the journal's checkpoint and replay after it.
        let (snapshot, live, source) = if next.from_checkpoint {
            let (snapshot, live, at_unix_ms) = match self.journal.checkpoint() {
                Some(c) => (Some(c.snapshot.clone()), c.live.clone(), Some(c.at_unix_ms)),
                None => (None, Vec::new(), None),
            };
            let source = StateSource::Checkpoint {
                at_unix_ms,
                events_replayed: self.journal.events() as u64,
                complete: self.journal.is_complete(),
            };
            (snapshot, live, source)
        } else {
            match self.instance.export_state() {
                Ok(snapshot) => (Some(snapshot), self.net.live(), StateSource::Export),
                Err(e) => {
                    let trapped = matches!(e, CallError::Trap(_));
                    if trapped {
                        self.fault(&e, None);
                    }
                    let err =
                        UpgradeError::Export { running, reason: e.to_string(), rebuilt: trapped };
                    return rollback(self, err, next.instance);
                }
            }
        };
        let export = paused.elapsed();
        let state_bytes = snapshot.as_ref().map_or(0, snapshot_bytes);
        if state_bytes > self.limits.max_state {
            let err = UpgradeError::TooLarge {
                running,
                bytes: state_bytes,
                limit: self.limits.max_state,
            };
            return rollback(self, err, next.instance);
        }
        // The exported snapshot (not the transformed one) stays the journal's checkpoint only
        // until commit; the transformed one is what the new version imports.
        let transformed = match (&snapshot, next.pipeline.is_empty()) {
            (Some(snapshot), false) => match next.pipeline.apply(snapshot.clone()) {
                Ok(transformed) => Some(transformed),
                Err(e) => {
                    let err = UpgradeError::Transform { running, reason: e.to_string() };
                    return rollback(self, err, next.instance);
                }
            },
            _ => None,
        };
        let transform = paused.elapsed() - export;

        let crossing = transformed.as_ref().or(snapshot.as_ref());
        let imported = match crossing {
            Some(snapshot) => next.instance.import_state(snapshot, &live),
            None => Ok(()),
        };
        let imported = imported.and_then(|()| match source {
            StateSource::Checkpoint { .. } => self.journal.replay(&mut next.instance, &self.clock),
            StateSource::Export => Ok(()),
        });
        if let Err(e) = imported {
            let err = UpgradeError::Import { running, new, reason: e.to_string() };
            return rollback(self, err, next.instance);
        }
        let import = paused.elapsed() - export - transform;

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
            transform,
            transformers: next.pipeline.stages.iter().map(|t| t.info.name.clone()).collect(),
            import,
            sections: crossing.map_or_else(Vec::new, sections),
            state_bytes,
            connections: self.net.live().len() as u64,
            source,
        };
        info!(
            from = %report.from, to = %report.to, pause_us = pause.as_micros() as u64,
            state_bytes = report.state_bytes, connections = report.connections, "upgraded"
        );
        // The snapshot that crossed is the new version's first checkpoint (it just imported
        // it). After --from-checkpoint the journal already is one: checkpoint plus replay.
        if let (StateSource::Export, Some(snapshot)) = (&report.source, snapshot) {
            self.journal.set_checkpoint(snapshot, live);
        }
        self.shared.record_commit(&report, self.info.clone());
        Swapped { outcome: Ok(report), retired: Some(retired) }
    }
}

fn sections(snapshot: &Snapshot) -> Vec<SectionReport> {
    snapshot
        .sections
        .iter()
        .map(|s| SectionReport {
            name: s.name.clone(),
            version: s.version,
            bytes: s.bytes.len() as u64,
        })
        .collect()
}

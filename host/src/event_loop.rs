//! The event loop: one thread that owns the listeners and every socket, waits for readiness,
//! and hands each event to the [`Dispatcher`] — the same dispatcher the simulator drives over
//! virtual connections.
//!
//! Because the loop runs events one after another, the moment between two of them is an event
//! boundary, and that is where commands run (an upgrade's swap, a snapshot, a checkpoint): the
//! old instance holds no stack, bytes that arrive meanwhile wait in the kernel and are read by
//! the new instance, and output the old one queued stays in the host's per-connection buffers
//! and is written first.

use crate::bindings::ConnInfo;
use crate::conn::{Conn, Connections, RUNTIME_LISTENER_TOKENS};
use crate::dispatch::{Dispatcher, SnapshotReply, Swapped, SystemClock, Tap};
use crate::limits::{MEMORY_CHECK, READ_BUDGET, READ_CHUNK, READ_TIME_BUDGET};
use crate::live::Live;
use crate::status::Shared;
use crate::upgrade::Prepared;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use rustc_hash::FxHashSet;
use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Asks the loop to do something at the next event boundary.
pub(crate) enum Command {
    Upgrade(Box<Prepared>, mpsc::SyncSender<Swapped>),
    /// Take the state (a copy: the app serves on) and say how long its cut paused the app.
    Snapshot(SnapshotReply),
    /// Stop accepting and reading, flush what is queued until `deadline`, then stop; with a
    /// reply, take a last snapshot first, at the boundary where input stopped.
    Drain {
        deadline: Instant,
        snapshot: Option<SnapshotReply>,
    },
    Shutdown,
}

/// A listening socket the loop accepts on.
#[derive(Debug, Clone, Copy)]
enum Listener {
    /// A `--listen` address, by index.
    Host(usize),
    /// One the app opened, by poll token slot.
    Runtime(usize),
}

/// Why the event loop stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("waiting for readiness failed: {0}")]
    Poll(io::Error),
}

pub(crate) const WAKER: Token = Token(usize::MAX);
/// Tokens below this are listeners (the `--listen` ones from 0, the app's run-time ones from
/// [`RUNTIME_LISTENER_TOKENS`]); a connection's token is this plus its id.
const CONN_TOKEN_BASE: usize = 1 << 16;

/// The loop's state. Built by [`crate::Host::start`], run on a thread of its own.
pub(crate) struct EventLoop {
    poll: Poll,
    listeners: Vec<(TcpListener, String)>,
    dispatcher: Dispatcher<Connections, SystemClock>,
    next_conn: u64,
    commands: mpsc::Receiver<Command>,
    /// Who asked for the upgrade whose pre-copy is under way.
    upgrade_reply: Option<mpsc::SyncSender<Swapped>>,
    refused_connections: u64,
    read_buf: Vec<u8>,
    /// When to ask the live instance for its memory use next.
    next_memory_check: Instant,
    /// Written to a connection refused over `--max-connections` before it is closed.
    refusal: Vec<u8>,
    /// Set by [`Command::Drain`]: nothing more is accepted or read, and the loop stops once
    /// every reply is written (or at this deadline).
    draining: Option<Instant>,
}

impl EventLoop {
    pub(crate) fn new(
        poll: Poll,
        mut listeners: Vec<(TcpListener, String)>,
        live: Live,
        args: Vec<String>,
        commands: mpsc::Receiver<Command>,
        shared: Arc<Shared>,
    ) -> io::Result<Self> {
        let registry = poll.registry().try_clone()?;
        for (index, (listener, _)) in listeners.iter_mut().enumerate() {
            poll.registry().register(listener, Token(index), Interest::READABLE)?;
        }
        let limits = Arc::clone(&live.version().runtime.limits);
        let mut net = Connections::new(registry, Arc::clone(&shared), limits);
        // Run-time listeners go on the address of the first `--listen`.
        if let Some(ip) = listeners.iter().find_map(|(l, _)| l.local_addr().ok()).map(|a| a.ip()) {
            net.bind_listeners_to(ip);
        }
        let dispatcher = Dispatcher::new(net, SystemClock::default(), live, args, shared);
        Ok(Self {
            poll,
            listeners,
            dispatcher,
            next_conn: 1,
            commands,
            upgrade_reply: None,
            refused_connections: 0,
            read_buf: vec![0; READ_CHUNK],
            next_memory_check: Instant::now(),
            refusal: Vec::new(),
            draining: None,
        })
    }

    /// Lets work off the loop (a catch-up's import) wake its poll when it is done.
    pub(crate) fn wake_with(&mut self, waker: Arc<mio::Waker>) {
        self.dispatcher.wake = Some(Arc::new(move || {
            let _ = waker.wake();
        }));
    }

    /// Writes `reply` to each connection refused over `--max-connections` before closing it.
    pub(crate) fn refuse_with(&mut self, reply: Vec<u8>) {
        self.refusal = reply;
    }

    /// Writes the session to `recorder` from now on.
    pub(crate) fn record(&mut self, recorder: Box<dyn Tap>) {
        self.dispatcher.record(recorder);
    }

    /// Runs until a [`Command::Shutdown`] arrives, the command channel closes, or a drain ends;
    /// an error if it cannot go on.
    pub(crate) fn run(mut self) -> Result<(), LoopError> {
        let mut events = Events::with_capacity(1024);
        loop {
            // The round's replies, one write per connection (Connections::write_queued). The
            // app hears of a connection found broken here, and what it sends then is written
            // at the next turn, without waiting (`timeout`).
            self.dispatcher.net.write_queued();
            self.dispatcher.reap_broken();
            if let Some(deadline) = self.draining
                && self.drained(deadline)
            {
                info!("event loop stopped");
                return Ok(());
            }
            let timeout = self.timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(LoopError::Poll(e));
            }
            // While a copy catches up with the changes, this round reads only so much input
            // (auto-converge); the connections wait their turn in arrival order. A copy can
            // start between two events of the round (a checkpoint falls due): from then on the
            // round's reads wait for `read_some` too.
            // The connections left to read from the last turn are read once in this one, after
            // the round's events; one that an event reads now and cuts short waits for the next.
            let again = self.dispatcher.net.take_read_again();
            let mut ready = Vec::new();
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    Token(token) if RUNTIME_LISTENER_TOKENS.contains(&token) => {
                        if self.draining.is_none() {
                            self.accept(Listener::Runtime(token - RUNTIME_LISTENER_TOKENS.start));
                        }
                    }
                    Token(index) if index < CONN_TOKEN_BASE => self.accept(Listener::Host(index)),
                    Token(token) => {
                        let id = (token - CONN_TOKEN_BASE) as u64;
                        if event.is_writable() {
                            self.dispatcher.net.on_writable(id);
                            self.dispatcher.reap_broken();
                        }
                        if (event.is_read_closed() || event.is_error() || event.is_priority())
                            && let Some(conn) = self.dispatcher.net.conns.get_mut(&id)
                        {
                            conn.read_on = true;
                        }
                        if self.draining.is_none()
                            && (event.is_readable() || event.is_read_closed() || event.is_error())
                        {
                            if self.dispatcher.input_allowance().is_some() {
                                ready.push(id);
                            } else if !self.dispatcher.net.is_read_due(id) {
                                // A connection queued to be read again is read in its place in
                                // that queue: this turn's, or the next one's if it was queued
                                // during this round (its held input resumed).
                                self.read(id, READ_BUDGET);
                            }
                        }
                    }
                }
            }
            if self.draining.is_none() {
                // Before the held input of those connections is read on (take_writable asks).
                self.dispatcher.writable_due();
            }
            if self.draining.is_none() {
                match self.dispatcher.input_allowance() {
                    Some(allowance) => self.read_some(again, ready, allowance),
                    // `ready` is not empty if a copy began and ended within the round.
                    None => {
                        for id in again {
                            self.dispatcher.net.reading(id);
                            self.read(id, READ_BUDGET);
                        }
                        for id in ready {
                            if !self.dispatcher.net.is_read_due(id) {
                                self.read(id, READ_BUDGET);
                            }
                        }
                    }
                }
                self.dispatcher.fire_due_timers();
                self.dispatcher.checkpoint_if_due();
            }
            self.dispatcher.checkpoint_step();
            if let Some(swapped) = self.dispatcher.upgrade_step() {
                self.reply_upgrade(swapped);
            }
            if Instant::now() >= self.next_memory_check {
                self.check_memory();
            }

            loop {
                match self.commands.try_recv() {
                    Ok(Command::Upgrade(prepared, reply)) => {
                        self.upgrade_reply = Some(reply);
                        if self.draining.is_some() {
                            let swapped = self.dispatcher.refuse_upgrade(*prepared);
                            self.reply_upgrade(swapped);
                        } else if let Some(swapped) = self.dispatcher.upgrade(*prepared) {
                            self.reply_upgrade(swapped);
                        }
                    }
                    Ok(Command::Snapshot(reply)) => self.dispatcher.snapshot(reply),
                    Ok(Command::Drain { deadline, snapshot }) => self.drain(deadline, snapshot),
                    Ok(Command::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => {
                        if let Some(swapped) = self.dispatcher.cancel_upgrade() {
                            self.reply_upgrade(swapped);
                        }
                        self.dispatcher.net.write_queued();
                        info!("event loop stopped");
                        return Ok(());
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
        }
    }

    /// How long the next poll may wait: not at all while a pre-copy or a checkpoint is under
    /// way (a step runs after every round of events, and the events of each round wait for at
    /// most one), until the next timer otherwise, and never past a drain's deadline.
    fn timeout(&mut self) -> Option<Duration> {
        let busy = (!self.dispatcher.net.read_again.is_empty()
            || self.dispatcher.net.writable_pending())
            && self.draining.is_none()
            || self.dispatcher.net.queued()
            || self.dispatcher.upgrading()
            || self.dispatcher.checkpointing();
        if busy {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        if let Some(deadline) = self.draining {
            return Some(deadline.saturating_duration_since(now));
        }
        let timer = self
            .dispatcher
            .next_deadline()
            .map(|deadline| self.dispatcher.clock.instant(deadline).saturating_duration_since(now));
        let memory = self.next_memory_check.saturating_duration_since(now);
        let canary = self.dispatcher.canary_deadline().map(|d| d.saturating_duration_since(now));
        Some([timer, canary].into_iter().flatten().fold(memory, Duration::min))
    }

    /// Starts a drain: the listeners close (new clients are refused by the kernel), no more
    /// input is read and no timer fires, so the state stops changing here; an upgrade under
    /// way rolls back; the last snapshot, if asked for, is of this state.
    fn drain(&mut self, deadline: Instant, snapshot: Option<SnapshotReply>) {
        self.listeners.clear();
        self.dispatcher.net.close_listeners();
        for id in self.dispatcher.net.take_read_again() {
            self.dispatcher.net.reading(id);
        }
        self.draining = Some(deadline);
        if let Some(swapped) = self.dispatcher.cancel_upgrade() {
            self.reply_upgrade(swapped);
        }
        let queued: usize = self.dispatcher.net.conns.values().map(Conn::pending).sum();
        info!(
            "draining: no longer accepting or reading; flushing {queued} bytes of replies to {} \
             connections",
            self.dispatcher.net.conns.len()
        );
        if let Some(reply) = snapshot {
            self.dispatcher.snapshot(reply);
        }
    }

    /// Whether a drain is done: no snapshot is still being taken, and every reply is written or
    /// the deadline has passed.
    fn drained(&self, deadline: Instant) -> bool {
        if self.dispatcher.snapshot_pending() {
            return false;
        }
        let unflushed = self.dispatcher.net.conns.values().filter(|c| c.pending() > 0).count();
        if unflushed == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            warn!(
                "drain deadline passed: closing {unflushed} connections that have not read all \
                 their replies (--drain-timeout)"
            );
            return true;
        }
        false
    }

    /// Tells the requester how its upgrade ended. It may have gone away; the outcome is logged
    /// either way.
    fn reply_upgrade(&mut self, swapped: Swapped) {
        if let Some(reply) = self.upgrade_reply.take() {
            let _ = reply.send(swapped);
        }
        // A new instance serves (or the old one does on): what status shows is its memory.
        self.check_memory();
    }

    /// Asks the live instance for its memory use now, and again in [`MEMORY_CHECK`].
    fn check_memory(&mut self) {
        self.dispatcher.check_memory();
        self.next_memory_check = Instant::now() + MEMORY_CHECK;
    }

    fn accept(&mut self, from: Listener) {
        let limits = Arc::clone(&self.dispatcher.live().version().runtime.limits);
        loop {
            let (accepted, addr, runtime) = match from {
                Listener::Host(index) => {
                    let Some((listener, addr)) = self.listeners.get(index) else { return };
                    (listener.accept(), addr.clone(), None)
                }
                Listener::Runtime(slot) => {
                    let Some((listener, addr, id)) = self.dispatcher.net.runtime_listener(slot)
                    else {
                        return;
                    };
                    (listener.accept(), addr.to_string(), Some(id))
                }
            };
            let (mut stream, peer) = match accepted {
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
            if self.dispatcher.net.conns.len() >= limits.max_connections {
                // Closed at once: the app never hears of it. The reply, if any, goes into an
                // empty send buffer: one write, never waited on.
                if !self.refusal.is_empty() {
                    let _ = std::io::Write::write(&mut stream, &self.refusal);
                }
                if self.refused_connections.is_multiple_of(1000) {
                    warn!(
                        "refusing connections beyond the limit of {} (--max-connections)",
                        limits.max_connections
                    );
                }
                self.refused_connections += 1;
                continue;
            }
            #[cfg(feature = "fault-injection")]
            if std::env::var_os("TASUKI_FAULT_LOOP_PANIC_ON_ACCEPT").is_some() {
                panic!("injected fault: TASUKI_FAULT_LOOP_PANIC_ON_ACCEPT");
            }
            let id = self.next_conn;
            self.next_conn += 1;
            if let Err(e) = stream.set_nodelay(true) {
                debug!(conn = id, "set_nodelay failed: {e}");
            }
            let token = Token(CONN_TOKEN_BASE + id as usize);
            // PRIORITY: urgent data (see `Conn::read_on`).
            let interest = Interest::READABLE | Interest::WRITABLE | Interest::PRIORITY;
            if let Err(e) = self.poll.registry().register(&mut stream, token, interest) {
                warn!("cannot register a connection from {peer}: {e}");
                continue;
            }
            // The address the client reached: on a wildcard listener (`0.0.0.0:PORT`) the
            // interface's own, which a server tells clients to come back to (FTP's `227`).
            let local = stream.local_addr().map_or(addr, |local| local.to_string());
            let info = ConnInfo { id, listener: local, peer: peer.to_string() };
            debug!(conn = id, %peer, "connected");
            let mut conn = Conn::new(stream, info.clone());
            conn.accepted_on = runtime;
            self.dispatcher.net.insert(conn);
            match runtime {
                Some(listener) => {
                    self.dispatcher.net.count_accept(listener);
                    self.dispatcher.accept(&info, listener);
                }
                None => self.dispatcher.connect(&info),
            }
        }
    }

    /// Reads from the connections of `again`, then `ready`, in that order and each once, until
    /// `allowance` bytes of input are taken; the rest wait for the next round, first in line.
    /// A connection of `ready` queued for the next round meanwhile is read then, in its place.
    fn read_some(&mut self, again: VecDeque<u64>, ready: Vec<u64>, allowance: u64) {
        let mut left = usize::try_from(allowance).unwrap_or(usize::MAX);
        let mut seen = FxHashSet::default();
        let mut held_back = false;
        let queued = again.len();
        for (n, id) in again.into_iter().chain(ready).enumerate() {
            if !seen.insert(id) {
                continue;
            }
            if n < queued {
                self.dispatcher.net.reading(id);
            } else if self.dispatcher.net.is_read_due(id) {
                continue;
            }
            if left == 0 {
                self.dispatcher.net.read_later(id);
                held_back = true;
                continue;
            }
            let budget = left.min(READ_BUDGET);
            let read = self.read(id, budget);
            left -= read.min(left);
            held_back |= read == budget && budget < READ_BUDGET;
        }
        if held_back {
            self.dispatcher.input_held_back();
        }
    }

    /// Reads from `id` and hands the bytes to the app, up to `budget` bytes (then it is read
    /// again next round); returns how many. While more than `--output-buffer` of replies are
    /// queued for it, or the app waits to be told it can send more (`net.notify-writable`),
    /// what is read is held instead (up to `--input-buffer`) and handed over, in order, once
    /// the client has read its replies (after the app's `on-writable`).
    fn read(&mut self, id: u64, budget: usize) -> usize {
        let limits = Arc::clone(&self.dispatcher.live().version().runtime.limits);
        let mut budget = budget;
        let start = budget;
        let mut buf = std::mem::take(&mut self.read_buf);
        // When the first call that may be followed by another began: set only then, so that
        // a request read whole in one short read (pipeline 1) costs no clock reading.
        let mut started: Option<Instant> = None;
        loop {
            let net = &mut self.dispatcher.net;
            let Some(conn) = net.conns.get_mut(&id) else { break };
            if conn.closing {
                break;
            }
            if budget == 0 || started.is_some_and(|at| at.elapsed() >= READ_TIME_BUDGET) {
                net.read_later(id);
                break;
            }
            if conn.writable_is_due() && conn.held() > 0 {
                // The guest waits for a window its client has already made room for: grant it
                // now and hand over the held input, rather than read on into `held` until the
                // loop's next turn (a client that writes faster than one window a turn would
                // otherwise pile its input up here while the kernel takes every reply).
                self.dispatcher.writable_due();
                continue;
            }
            let deliver = conn.pending() <= limits.output_buffer && !conn.awaiting_writable;
            let limit = budget.min(buf.len());
            if deliver && conn.held() > 0 {
                let n = net.take_held(id, &mut buf[..limit]);
                budget -= n;
                started.get_or_insert_with(Instant::now);
                self.dispatcher.data(id, &buf[..n]);
                continue;
            }
            if conn.eof {
                if deliver {
                    self.dispatcher.peer_gone(id);
                }
                break;
            }
            if !deliver && conn.held() > limits.input_buffer {
                warn!(
                    conn = id,
                    peer = %conn.info.peer,
                    "closing a connection that sent {} bytes more while not reading its {} \
                     bytes of replies (--input-buffer is {} bytes)",
                    conn.held(),
                    conn.pending(),
                    limits.input_buffer
                );
                net.cut_off(id);
                self.dispatcher.reap_broken();
                break;
            }
            // One byte past the limit tells a client that passes it from one that meets it.
            let limit =
                if deliver { limit } else { limit.min(limits.input_buffer + 1 - conn.held()) };
            match conn.stream.read(&mut buf[..limit]) {
                // Half-closed: the replies still queued go out before the app hears of it.
                Ok(0) if !deliver => conn.eof = true,
                Ok(0) => {
                    self.dispatcher.peer_gone(id);
                    break;
                }
                Ok(n) => {
                    budget -= n;
                    // A read that did not fill what it asked for emptied the socket's receive
                    // queue, so the next would only say WouldBlock: one system call per request
                    // saved at pipeline 1, where every request is one read (redis-server reads
                    // once per readable event too). Input that arrives after it wakes the
                    // edge-triggered poller again. Two things end a read short with more
                    // queued and raise no new event — the peer's end of the stream behind the
                    // data, and an urgent mark — and the poller reports both: such a
                    // connection is read on (`Conn::read_on`).
                    let drained = n < limit && !conn.read_on;
                    if !drained {
                        started.get_or_insert_with(Instant::now);
                    }
                    if deliver {
                        self.dispatcher.data(id, &buf[..n]);
                    } else {
                        net.hold(id, &buf[..n]);
                        self.dispatcher.reap_broken();
                    }
                    if drained {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!(conn = id, "read failed: {e}");
                    self.dispatcher.peer_gone(id);
                    break;
                }
            }
        }
        self.read_buf = buf;
        start - budget
    }
}

//! The host's connections: sockets the guest never touches, their queued output, and the
//! bounds on it. [`Connections`] is the real side of [`crate::dispatch::Network`].

use crate::bindings::ConnInfo;
use crate::dispatch::Network;
use crate::limits::Limits;
use crate::listeners::{ListenError, Policy};
use crate::status::{ListenerStatus, Shared};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tracing::{debug, warn};

/// One client connection, owned by the host.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) info: ConnInfo,
    /// Output not yet accepted by the kernel; `out[written..]` is pending.
    out: Vec<u8>,
    written: usize,
    /// The guest closed it: write what is queued, then drop it.
    pub(crate) closing: bool,
    /// Input read while the app's replies to this connection are backed up (more than
    /// `--output-buffer` queued): it is kept here, not handed to the app, until the client
    /// reads. `held[held_from..]` goes to the app, in order, before anything read later.
    /// Reading on means a client that writes a whole pipeline before it reads its replies
    /// finishes its write instead of waiting forever for a host that waits for it to read.
    held: Vec<u8>,
    held_from: usize,
    /// The peer finished sending while input was held: the app hears of the disconnect after
    /// it has had every held byte.
    pub(crate) eof: bool,
    /// The poller reported the peer's end of the stream, an error or urgent data (TCP's
    /// `MSG_OOB`) for it: from then on it is read until a read returns 0, fails or would
    /// block, not only until a read comes back short (see `EventLoop::read`). Linux ends a
    /// read short at an urgent mark with more data queued behind it, and the end of the stream
    /// may be queued behind data: neither raises another event.
    pub(crate) read_on: bool,
    /// The guest asked to be told when this connection can take more output
    /// (`net.notify-writable`) and has not been told yet. Its input is held meanwhile, as while
    /// more than `--output-buffer` is queued: the guest stopped taking it.
    pub(crate) awaiting_writable: bool,
    /// In [`Connections::writable`]: it is told at the loop's next turn.
    writable_due: bool,
    /// In [`Connections::read_again`]: it is read at the loop's next turn, once.
    pub(crate) read_due: bool,
    /// In [`Connections::unflushed`]: its queued replies are written at the next flush.
    flush_due: bool,
    /// Closed to bring the host back under `--buffer-budget`: the bytes it buffered then, which
    /// go when it is removed.
    evicted: Option<usize>,
    /// The app's run-time listener it was accepted on, if it was.
    pub(crate) accepted_on: Option<u64>,
}

impl Conn {
    pub(crate) fn new(stream: TcpStream, info: ConnInfo) -> Self {
        Self {
            stream,
            info,
            out: Vec::new(),
            written: 0,
            closing: false,
            held: Vec::new(),
            held_from: 0,
            eof: false,
            read_on: false,
            awaiting_writable: false,
            writable_due: false,
            read_due: false,
            flush_due: false,
            evicted: None,
            accepted_on: None,
        }
    }

    /// The guest waits to be told this connection can take more, and it can: the call is
    /// queued for the loop's next turn ([`Connections::take_writable`]).
    pub(crate) fn writable_is_due(&self) -> bool {
        self.awaiting_writable && self.writable_due
    }

    /// Bytes the host buffers for this connection: replies queued and input held.
    fn buffered(&self) -> usize {
        self.pending() + self.held()
    }

    /// Bytes queued and not yet written.
    pub(crate) fn pending(&self) -> usize {
        self.out.len() - self.written
    }

    /// Bytes of input read and not yet handed to the app.
    pub(crate) fn held(&self) -> usize {
        self.held.len() - self.held_from
    }

    /// Keeps input for the app until its replies drain.
    fn hold(&mut self, bytes: &[u8]) {
        self.held.extend_from_slice(bytes);
    }

    /// Moves the oldest held input into `buf`; returns how many bytes.
    fn take_held(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.held());
        buf[..n].copy_from_slice(&self.held[self.held_from..self.held_from + n]);
        self.held_from += n;
        if self.held_from == self.held.len() {
            self.held = Vec::new();
            self.held_from = 0;
        } else if self.held_from > self.held.len() / 2 {
            self.held.drain(..self.held_from);
            self.held_from = 0;
        }
        n
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

/// Every open connection, by id.
#[derive(Debug)]
pub(crate) struct Connections {
    registry: Registry,
    /// Keyed by the host's own sequential ids: a fast hasher, not a keyed one.
    pub(crate) conns: FxHashMap<u64, Conn>,
    shared: Arc<Shared>,
    limits: Arc<Limits>,
    /// Connections found broken while writing, or cut off for queueing too much; the guest
    /// hears of them after the call.
    broken: Vec<u64>,
    /// Connections whose reading resumed or was cut short by the read budget, each once
    /// (`Conn::read_due`): [`Connections::read_later`] adds to it.
    pub(crate) read_again: VecDeque<u64>,
    /// Connections with replies queued since the last [`Connections::flush`] and not yet tried.
    unflushed: Vec<u64>,
    /// Connections whose guest asked to be told when they can take more, and that can now,
    /// in the order they got there.
    writable: Vec<u64>,
    /// Bytes buffered over all connections (replies queued, input held), and the part of them
    /// that belongs to connections evicted and not yet removed.
    buffered: usize,
    evicting: usize,
    /// The app's run-time listeners, by id.
    listeners: BTreeMap<u64, RuntimeListener>,
    /// Each poll token slot's listener id (see [`RUNTIME_LISTENER_TOKENS`]).
    slots: Vec<Option<u64>>,
    /// Where run-time listeners are bound: the address of the host's first `--listen`.
    bind_ip: IpAddr,
    /// The next port of `--data-ports` to try, so that ports are used round the range rather
    /// than the lowest again and again (a client of a closed port may still be connecting).
    next_port: u16,
}

/// Poll tokens of run-time listeners: slot `n` is `RUNTIME_LISTENER_TOKENS.start + n`. Below
/// them are the `--listen` listeners, above them the connections.
pub(crate) const RUNTIME_LISTENER_TOKENS: std::ops::Range<usize> = (1 << 15)..(1 << 16);

/// A listener the app opened at run time.
#[derive(Debug)]
struct RuntimeListener {
    socket: TcpListener,
    address: String,
    slot: usize,
    accepted: u64,
}

impl Connections {
    pub(crate) fn new(registry: Registry, shared: Arc<Shared>, limits: Arc<Limits>) -> Self {
        Self {
            registry,
            conns: FxHashMap::default(),
            shared,
            limits,
            broken: Vec::new(),
            read_again: VecDeque::new(),
            unflushed: Vec::new(),
            writable: Vec::new(),
            buffered: 0,
            evicting: 0,
            listeners: BTreeMap::new(),
            slots: Vec::new(),
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            next_port: 0,
        }
    }

    /// Run-time listeners are bound to `ip`.
    pub(crate) fn bind_listeners_to(&mut self, ip: IpAddr) {
        self.bind_ip = ip;
    }

    /// The run-time listener in poll token slot `slot`: its socket, address and id; counts an
    /// accept on it.
    pub(crate) fn runtime_listener(&mut self, slot: usize) -> Option<(&TcpListener, &str, u64)> {
        let id = (*self.slots.get(slot)?)?;
        let listener = self.listeners.get_mut(&id)?;
        Some((&listener.socket, &listener.address, id))
    }

    /// A connection was accepted on run-time listener `id`.
    pub(crate) fn count_accept(&mut self, id: u64) {
        if let Some(listener) = self.listeners.get_mut(&id) {
            listener.accepted += 1;
        }
    }

    /// Closes every run-time listener (the host is draining): the kernel refuses new clients.
    pub(crate) fn close_listeners(&mut self) {
        for id in self.listener_ids() {
            self.unlisten(id);
        }
    }

    /// Binds a listening socket on `port` of the bind address.
    fn bind(&self, port: u16) -> std::io::Result<TcpListener> {
        // std sets SO_REUSEADDR, so a port whose accepted connections linger in TIME_WAIT can
        // be opened again; `listen` again only raises the backlog std chose.
        let listener = std::net::TcpListener::bind(SocketAddr::new(self.bind_ip, port))?;
        rustix::net::listen(&listener, crate::limits::LISTEN_BACKLOG)?;
        listener.set_nonblocking(true)?;
        Ok(TcpListener::from_std(listener))
    }

    /// Runs `f` on connection `id`, keeping the count of buffered bytes right.
    fn with_conn<T>(&mut self, id: u64, f: impl FnOnce(&mut Conn) -> T) -> Option<T> {
        let conn = self.conns.get_mut(&id)?;
        let before = conn.buffered();
        let out = f(conn);
        self.buffered = self.buffered - before + conn.buffered();
        Some(out)
    }

    /// True while replies are queued and not yet tried ([`Self::write_queued`]).
    pub(crate) fn queued(&self) -> bool {
        !self.unflushed.is_empty()
    }

    /// True while some connection waits to be told it can take more ([`Self::take_writable`]).
    pub(crate) fn writable_pending(&self) -> bool {
        !self.writable.is_empty()
    }

    /// Holds input read from `id` until its replies drain (see [`Conn::held`]).
    pub(crate) fn hold(&mut self, id: u64, bytes: &[u8]) {
        self.with_conn(id, |conn| conn.hold(bytes));
        self.enforce_budget();
    }

    /// Moves the oldest input held for `id` into `buf`; returns how many bytes.
    pub(crate) fn take_held(&mut self, id: u64, buf: &mut [u8]) -> usize {
        self.with_conn(id, |conn| conn.take_held(buf)).unwrap_or(0)
    }

    /// Once all connections together buffer more than `--buffer-budget`, closes the ones that
    /// buffer the most until the rest fit (as redis's `maxmemory-clients` evicts its biggest
    /// clients): one greedy client, or many, cannot take the host's memory, and which one goes
    /// does not depend on who asked last.
    fn enforce_budget(&mut self) {
        let budget = self.limits.buffer_budget;
        if self.buffered - self.evicting > budget {
            // What the kernel takes is not the host's to count.
            self.write_queued();
        }
        while self.buffered - self.evicting > budget {
            let Some((&id, conn)) = self
                .conns
                .iter_mut()
                .filter(|(_, c)| c.evicted.is_none())
                .max_by_key(|(_, c)| c.buffered())
            else {
                break;
            };
            let size = conn.buffered();
            if size == 0 {
                break;
            }
            warn!(
                conn = id,
                peer = %conn.info.peer,
                "closing the connection that buffers the most ({size} bytes: {} of replies, {} \
                 of input held) while all buffer {}, over --buffer-budget ({budget} bytes)",
                conn.pending(),
                conn.held(),
                self.buffered - self.evicting
            );
            conn.evicted = Some(size);
            self.evicting += size;
            self.broken.push(id);
        }
    }

    /// Adds an accepted, registered connection.
    pub(crate) fn insert(&mut self, conn: Conn) {
        self.shared.connections.fetch_add(1, Ordering::Relaxed);
        self.conns.insert(conn.info.id, conn);
    }

    /// Writes the replies queued since the last flush: one write per connection for all the
    /// events of a round, after them, as redis-server writes its clients' replies before it
    /// sleeps (`beforeSleep` → `handleClientsWithPendingWrites`). Writing each event's replies
    /// as it ends instead had the clients' next requests (and the kernel's work of delivering
    /// the replies on loopback) land in the middle of the round: at 1M keys under
    /// `redis-benchmark -t set -c 50 -P 16` that cost about a fifth of the throughput and
    /// doubled the slowest request (bench/RESULTS.md). The loop calls this before it waits
    /// (and [`Network::flush`] before a pause).
    pub(crate) fn write_queued(&mut self) {
        for id in std::mem::take(&mut self.unflushed) {
            let Some(conn) = self.conns.get_mut(&id) else { continue };
            conn.flush_due = false;
            self.on_writable(id);
        }
    }

    /// The socket became writable (or a flush tries it).
    pub(crate) fn on_writable(&mut self, id: u64) {
        let Some(written) = self.with_conn(id, Conn::write_pending) else { return };
        if let Err(e) = written {
            debug!(conn = id, "write failed: {e}");
            self.broken.push(id);
            return;
        }
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if conn.closing && conn.pending() == 0 {
            self.remove(id);
        } else if conn.awaiting_writable {
            // The guest hears first; the input held meanwhile follows (take_writable).
            self.writable_if_drained(id);
        } else if (conn.held() > 0 || conn.eof) && conn.pending() <= self.limits.output_buffer / 2 {
            // The client is reading again: the app gets the input held meanwhile.
            self.read_later(id);
        }
    }

    /// Queues `id` to be read at the loop's next turn, unless it is queued already. A
    /// connection queued twice was read twice a turn, and again one more time for each turn
    /// its client kept sending: a client loading keys with 1000-key MSETs got 17 read budgets
    /// (4 MiB) a turn by the end of a 1M-key load, and every other client waited 20-170 ms.
    pub(crate) fn read_later(&mut self, id: u64) {
        if let Some(conn) = self.conns.get_mut(&id)
            && !conn.read_due
        {
            conn.read_due = true;
            self.read_again.push_back(id);
        }
    }

    /// The connections queued by [`Connections::read_later`], in order, to be read in this
    /// turn of the loop. Each stays `read_due` until [`Connections::reading`] says it is being
    /// read: an event for it meanwhile does not read it a second time in the turn.
    pub(crate) fn take_read_again(&mut self) -> VecDeque<u64> {
        std::mem::take(&mut self.read_again)
    }

    /// `id` waits in [`Connections::read_again`] to be read: an event for it does not read it
    /// ahead of its place there.
    pub(crate) fn is_read_due(&self, id: u64) -> bool {
        self.conns.get(&id).is_some_and(|conn| conn.read_due)
    }

    /// `id`, taken from the queue of [`Connections::take_read_again`], is read now: from here
    /// on it can be queued again.
    pub(crate) fn reading(&mut self, id: u64) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.read_due = false;
        }
    }

    /// Queues `id` to be told it can take more, if its guest asked and its queued output is at
    /// half of `--output-buffer` or less: the same low-water mark at which held input resumes,
    /// so that a guest is not woken for every few bytes the client reads.
    fn writable_if_drained(&mut self, id: u64) {
        let half = self.limits.output_buffer / 2;
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if conn.awaiting_writable && !conn.writable_due && !conn.closing && conn.pending() <= half {
            conn.writable_due = true;
            self.writable.push(id);
        }
    }

    /// Closes a connection that passed a limit; the app hears of it after the call.
    pub(crate) fn cut_off(&mut self, id: u64) {
        self.broken.push(id);
    }

    fn remove(&mut self, id: u64) -> Option<Conn> {
        let mut conn = self.conns.remove(&id)?;
        self.buffered -= conn.buffered();
        if let Some(size) = conn.evicted {
            self.evicting -= size;
        }
        if let Err(e) = self.registry.deregister(&mut conn.stream) {
            debug!(conn = id, "deregister failed: {e}");
        }
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
        if conn.awaiting_writable {
            self.shared.waiting_writable.fetch_sub(1, Ordering::Relaxed);
        }
        Some(conn)
    }
}

impl Network for Connections {
    /// Queues `data` for [`Connections::flush`]; writes at once only what passes
    /// `--output-buffer`, so that the limits below see what the kernel would not take.
    fn send(&mut self, id: u64, data: Vec<u8>) {
        let Some(conn) = self.conns.get(&id) else { return };
        if conn.closing || conn.evicted.is_some() {
            return;
        }
        let output_buffer = self.limits.output_buffer;
        let written = self.with_conn(id, |conn| {
            if conn.pending() == 0 {
                conn.out = data;
                conn.written = 0;
            } else {
                conn.out.extend_from_slice(&data);
            }
            let flush = !std::mem::replace(&mut conn.flush_due, true);
            let written =
                if conn.pending() > output_buffer { conn.write_pending() } else { Ok(()) };
            (flush, written)
        });
        let Some((flush, written)) = written else { return };
        if flush {
            self.unflushed.push(id);
        }
        let Some(conn) = self.conns.get_mut(&id) else { return };
        self.shared.note_queued(conn.pending());
        if let Err(e) = written {
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
        self.enforce_budget();
    }

    fn close(&mut self, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        conn.closing = true;
        if conn.pending() == 0 {
            self.remove(id);
        }
    }

    fn live(&self) -> Vec<ConnInfo> {
        let mut live: Vec<ConnInfo> =
            self.conns.values().filter(|c| !c.closing).map(|c| c.info.clone()).collect();
        live.sort_by_key(|c| c.id);
        live
    }

    fn drop_conn(&mut self, id: u64) -> bool {
        let Some(mut conn) = self.remove(id) else { return false };
        // Best effort: a half-closed peer may still read what it was sent.
        let _ = conn.write_pending();
        !conn.closing
    }

    fn take_broken(&mut self) -> Option<u64> {
        self.broken.pop()
    }

    fn want_writable(&mut self, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        if !conn.awaiting_writable {
            conn.awaiting_writable = true;
            self.shared.waiting_writable.fetch_add(1, Ordering::Relaxed);
        }
        self.writable_if_drained(id);
    }

    fn listen(&mut self, id: u64, port: u16, policy: &Policy) -> Result<String, ListenError> {
        policy.check(id, port, &self.listener_ids())?;
        let Some(slot) = (0..RUNTIME_LISTENER_TOKENS.len())
            .find(|&slot| self.slots.get(slot).is_none_or(Option::is_none))
        else {
            return Err(ListenError::Limit(RUNTIME_LISTENER_TOKENS.len() as u32));
        };
        let ports: Vec<u16> = match (&policy.ports, port) {
            (Some(range), 0) => {
                let (low, high) = (*range.start(), *range.end());
                let from = self.next_port.clamp(low, high);
                (from..=high).chain(low..from).collect()
            }
            _ => vec![port],
        };
        let mut bound = None;
        for &port in &ports {
            match self.bind(port) {
                Ok(listener) => {
                    bound = Some(listener);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && ports.len() > 1 => {}
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    return Err(ListenError::InUse(format!("port {port} is in use")));
                }
                Err(e) => return Err(ListenError::Failed(e.to_string())),
            }
        }
        let Some(mut socket) = bound else {
            let range = policy
                .ports
                .as_ref()
                .map_or_else(String::new, |r| format!(" {}-{}", r.start(), r.end()));
            return Err(ListenError::InUse(format!("no port of --data-ports{range} is free")));
        };
        let address = socket.local_addr().map_err(|e| ListenError::Failed(e.to_string()))?;
        let token = Token(RUNTIME_LISTENER_TOKENS.start + slot);
        self.registry
            .register(&mut socket, token, Interest::READABLE)
            .map_err(|e| ListenError::Failed(e.to_string()))?;
        self.next_port = address.port().wrapping_add(1);
        if self.slots.len() <= slot {
            self.slots.resize(slot + 1, None);
        }
        self.slots[slot] = Some(id);
        let address = address.to_string();
        self.listeners
            .insert(id, RuntimeListener { socket, address: address.clone(), slot, accepted: 0 });
        Ok(address)
    }

    fn unlisten(&mut self, id: u64) {
        let Some(mut listener) = self.listeners.remove(&id) else { return };
        if let Err(e) = self.registry.deregister(&mut listener.socket) {
            debug!(listener = id, "deregister failed: {e}");
        }
        self.slots[listener.slot] = None;
        debug!(listener = id, "closed listener {id} on {}", listener.address);
    }

    fn listener_ids(&self) -> BTreeSet<u64> {
        self.listeners.keys().copied().collect()
    }

    fn accepted_on(&self, conn: u64) -> Option<u64> {
        self.conns.get(&conn)?.accepted_on
    }

    fn listener_status(&self) -> Vec<ListenerStatus> {
        self.listeners
            .iter()
            .map(|(&id, l)| ListenerStatus { id, address: l.address.clone(), accepted: l.accepted })
            .collect()
    }

    fn flush(&mut self) {
        self.write_queued();
    }

    fn take_writable(&mut self) -> Vec<(u64, usize)> {
        let mut due = Vec::new();
        for id in std::mem::take(&mut self.writable) {
            let Some(conn) = self.conns.get_mut(&id) else { continue };
            if conn.awaiting_writable {
                conn.awaiting_writable = false;
                self.shared.waiting_writable.fetch_sub(1, Ordering::Relaxed);
            }
            conn.writable_due = false;
            due.push((id, conn.pending()));
            if conn.held() > 0 || conn.eof {
                // Read on after the guest has heard: what it held back comes first.
                self.read_later(id);
            }
        }
        due
    }
}

//! Dispatch: one event at a time into the live version, its effects applied, its timers kept,
//! upgrades and checkpoints at event boundaries, and recovery when the instance traps.
//!
//! This is the part of the event loop that does not know what a socket is. It runs behind two
//! small seams — [`Network`] (send, close, the open connections) and [`Clock`] (the time the guest
//! sees and the time timers run on) — so the same code serves real sockets on the wall clock
//! ([`crate::event_loop`]) and virtual connections on a virtual clock ([`crate::sim`]).

use crate::bindings::{ConnInfo, Snapshot};
use crate::canary::{Canary, Stop, Window};
use crate::catchup::{self, AtExport, CatchUp, CatchUpReport, Crossed, Fallback, Importer, Phase};
use crate::clock::{EventClock, now_unix_ms};
use crate::instance::{CallError, MemoryUsage, snapshot_bytes};
use crate::limits::Limits;
use crate::listeners::{ListenError, ListenerBook, Policy};
use crate::live::{Call, Live};
use crate::precopy;
use crate::recovery::{self, RebuildReport, Skip, Stamp};
use crate::spill::Chunks;
use crate::status::{
    CanaryProgress, CatchUpProgress, CheckpointRecord, ListenerStatus, PrecopyProgress,
    RecoveryOutcome, RecoveryRecord, ReplicaCheckpointRecord, Shared,
};
use crate::store::Effect;
use crate::timers::TimerQueue;
use crate::upgrade::{
    self, Begun, Prepared, StateSource, Swap, Underway, UpgradeError, UpgradeReport,
};
use crate::version::AppVersion;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// Where the guest's output goes: the connections, real or virtual.
pub(crate) trait Network {
    /// Queues `data` for `conn`. A connection found broken (or over its output limit) is
    /// reported by [`Network::take_broken`].
    fn send(&mut self, conn: u64, data: Vec<u8>);
    /// The guest closed `conn`: what is queued is written, then it is dropped.
    fn close(&mut self, conn: u64);
    /// Connections the app knows as open, by id.
    fn live(&self) -> Vec<ConnInfo>;
    /// Drops `conn` now, after a last best-effort write of what is queued. True if the app
    /// still believed it open (it had not closed it itself).
    fn drop_conn(&mut self, conn: u64) -> bool;
    /// A connection found broken since the last call, if any.
    fn take_broken(&mut self) -> Option<u64>;
    /// The guest asked to be told when `conn` can take more (`net.notify-writable`): hold its
    /// input from now on, and have [`Network::take_writable`] give it once its queued output
    /// is at half of `--output-buffer` or less.
    fn want_writable(&mut self, conn: u64);
    /// Opens listener `id` on `port` for the app (`listeners.listen`), within `policy`: its
    /// address, `ip:port`, or why not.
    fn listen(&mut self, id: u64, port: u16, policy: &Policy) -> Result<String, ListenError>;
    /// Closes listener `id`, if open; connections accepted on it stay.
    fn unlisten(&mut self, id: u64);
    /// The app's run-time listeners open now, by id.
    fn listener_ids(&self) -> BTreeSet<u64>;
    /// The run-time listener `conn` was accepted on, if it was.
    fn accepted_on(&self, conn: u64) -> Option<u64>;
    /// The app's run-time listeners, for `tasuki status`.
    fn listener_status(&self) -> Vec<ListenerStatus>;
    /// The connections whose guest asked and whose queued output has drained that far, each
    /// with the bytes still queued for it, in the order they got there; their requests count as
    /// answered from now.
    fn take_writable(&mut self) -> Vec<(u64, usize)>;
    /// Writes the replies queued so far now, rather than once the round's events are done:
    /// before the loop stops for a while (an export, a checkpoint's cut, a rebuild, an
    /// upgrade's pause), so that replies already made do not wait it out.
    fn flush(&mut self) {}
}

/// Sees every event that completed and every reply, in order: `tasuki run --record` writes
/// them as a trace.
pub(crate) trait Tap: Send {
    fn connect(&mut self, conn: u64);
    /// `conn` was accepted on the app's run-time listener at `address` (`ip:port`).
    fn accept(&mut self, conn: u64, address: &str);
    fn send(&mut self, conn: u64, bytes: &[u8]);
    fn reply(&mut self, conn: u64, bytes: &[u8]);
    fn close(&mut self, conn: u64);
    /// The server closed `conn`.
    fn forget(&mut self, conn: u64);
}

/// Where time comes from.
pub(crate) trait Clock {
    /// The wall-clock time a guest sees during the next event, in ns since the Unix epoch.
    fn wall_ns(&self) -> u64;
    /// The time timers run on, in ns from an arbitrary origin; never goes backwards.
    fn monotonic_ns(&self) -> u64;
}

/// The system's clocks, for serving.
#[derive(Debug)]
pub(crate) struct SystemClock {
    origin: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        Self { origin: Instant::now() }
    }
}

impl SystemClock {
    /// The instant a monotonic time stands for, for poll timeouts.
    pub(crate) fn instant(&self, ns: u64) -> Instant {
        self.origin + Duration::from_nanos(ns)
    }
}

impl Clock for SystemClock {
    fn wall_ns(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }

    fn monotonic_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

/// First delay before a timer whose handler trapped fires again; it doubles with each trap in
/// a row, up to [`TIMER_RETRY_MAX`]. The rebuilt instance believes the timer is armed, so it
/// must fire; a handler that traps every time costs one rebuild per delay, not a busy loop.
pub const TIMER_RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest delay between attempts to fire a timer whose handler keeps trapping.
pub const TIMER_RETRY_MAX: Duration = Duration::from_secs(60);

/// An export that traps is blamed on the connection holding the most unanswered input when
/// that is at least this much: a half-received request is what makes an export run out of
/// memory where the events did not. Below it, no connection is blamed.
pub const EXPORT_CULPRIT_MIN: usize = 1 << 20;

/// Where `tasuki snapshot` gets its answer: the state (pre-copied chunks, none for an export,
/// and the snapshot of the rest) and how long its cut kept events waiting. The chunks are the
/// checkpoint's, in its file: the requester reads them back off the event loop.
pub(crate) type SnapshotReply =
    std::sync::mpsc::SyncSender<Result<(Chunks, Snapshot, Duration), UpgradeError>>;

/// What a committed or rolled-back upgrade hands back to its requester.
#[derive(Debug)]
pub(crate) struct Swapped {
    pub(crate) outcome: Result<UpgradeReport, UpgradeError>,
    /// The instance that lost (the old one on commit, the new one on rollback), to be dropped
    /// off the loop: freeing an instance's memory takes longer than the swap itself.
    pub(crate) retired: Box<dyn std::any::Any + Send>,
}

/// The live version and everything around it that is not a socket.
pub(crate) struct Dispatcher<N, C> {
    pub(crate) net: N,
    pub(crate) clock: C,
    live: Live,
    timers: TimerQueue,
    /// The clock and randomness every instance of this host reads, per event.
    event_clock: EventClock,
    /// The serial number of the last event stamped (see [`Stamp`]).
    serial: u64,
    /// The live version's `init` arguments: what a rebuild after a trap starts it with.
    args: Vec<String>,
    /// The arguments of the version an upgrade under way would bring (`tasuki upgrade --arg`),
    /// which become [`Self::args`] at its commit.
    next_args: Option<Vec<String>>,
    shared: Arc<Shared>,
    limits: Arc<Limits>,
    /// Set while an instance is being rebuilt, so a fault there does not recurse.
    recovering: bool,
    /// Consecutive traps of each timer's handler, for the retry delay.
    timer_faults: HashMap<u64, u32>,
    /// `--record`: the session written as a trace.
    recorder: Option<Box<dyn Tap>>,
    /// A recovery closed connections whose input the checkpoint may hold: checkpoint again at
    /// the next boundary, so the host stops keeping their bytes.
    checkpoint_now: bool,
    /// A fault that happened while recovering from another: recovered from next.
    nested: Option<Fault>,
    /// An upgrade whose pre-copy is under way: a step runs between events.
    upgrading: Option<upgrade::Underway>,
    /// A checkpoint being built from chunks: a step runs between events.
    checkpointing: Option<Building>,
    /// A checkpoint a replica exports off the loop, for an app that cannot pre-copy (see
    /// [`Dispatcher::checkpoint_by_replica`]).
    replica_checkpoint: Option<ReplicaCheckpoint>,
    /// An upgrade asked for while a replica builds a checkpoint: it begins once the replica is
    /// done ([`Dispatcher::upgrade_step`]).
    upgrade_waiting: Option<Prepared>,
    /// The live value's generation whose replica failed a checkpoint, and why: its
    /// checkpoints are exported on the loop from then on.
    no_replica_for: Option<(u64, String)>,
    /// `tasuki snapshot` requests waiting for the next checkpoint.
    snapshot_waiters: Vec<SnapshotReply>,
    /// How pre-copy paces itself.
    pub(crate) precopy_budget: precopy::Budget,
    /// The upgrade under way is a compaction (a fresh instance of the live release).
    compacting: bool,
    /// An upgrade whose candidate runs beside the live instance (`--canary`), with its report
    /// so far.
    canary: Option<(Canary, Box<UpgradeReport>)>,
    /// A whole-state upgrade whose new instance imports off the loop and then runs the events
    /// since the export (see [`crate::catchup`]).
    catch_up: Option<CatchUp>,
    /// A catch-up given up for a transfer in the pause: its report goes into that upgrade's.
    catch_up_abandoned: Option<CatchUpReport>,
    /// Wakes the loop's poll from another thread (a catch-up's import, when it is done).
    pub(crate) wake: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Answers to the app's `listeners.listen` requests, told (`on-listening`) right after the
    /// event that asked, before any other event.
    answers: VecDeque<(u64, Result<String, ListenError>)>,
    /// `--max-listeners` and `--data-ports`.
    listen_policy: Policy,
}

/// A running version built before back-pressure is never told a connection can take more, so
/// no `on-writable` comes to feed `canary`'s candidate: it grants its own, a whole
/// `--output-buffer` each time (see [`Canary::grant_writable`]).
fn grant_windows_if_unasked(live: &Live, limits: &Limits, canary: &mut Canary) {
    if !live.takes_writable() {
        canary.grant_writable(limits.output_buffer as u64);
    }
}

/// Most a checkpoint's cut asks the instance for at once, in pre-copy chunks (16 MiB at the
/// default 64 KiB). A cut takes what is still owed, which can be most of the state when writes
/// outran the copy; asked for in one pass, the instance builds all of it in its linear memory
/// at once, and that memory stays (a 1M x 1 KiB store loaded at full speed ended with 3.3 GB
/// of linear memory for a 1.1 GB heap). In steps of this size the cut stalls the loop as long,
/// and the instance needs only this much more.
const CUT_STEP_CHUNKS: u64 = 256;

/// A checkpoint under way: the chunks taken so far from the live instance's session.
#[derive(Debug)]
struct Building {
    chunks: Chunks,
    /// The live value's generation the session was opened on: a rebuild ends it.
    generation: u64,
    started: Instant,
    pace: precopy::Pace,
}

/// A checkpoint under way on a replica: a second instance of the live version, rebuilt off
/// the loop from the recovery state copied at a boundary, exports what the live instance held
/// there.
#[derive(Debug)]
struct ReplicaCheckpoint {
    result: mpsc::Receiver<Result<(Snapshot, catchup::ReplicaCost), String>>,
    /// Where the journal stood at the boundary, and what the checkpoint is taken with.
    mark: recovery::JournalMark,
    base: recovery::CheckpointBase,
    /// Events the replica replays.
    replayed: u64,
    started: Instant,
    /// Given up (a snapshot was asked for, or the journal neared its limit): what it brings
    /// back is dropped, and no other replica starts until it has (it holds a copy of the
    /// state until then).
    abandoned: bool,
}

/// What a recovery recovers from.
#[derive(Debug)]
struct Fault {
    /// What trapped, in words, for the log and `tasuki status`.
    cause: String,
    /// Input to leave out of the replay: the culprit's unanswered events.
    skip: Option<Skip>,
    /// Connections the host closed already; the rebuilt instance hears they are gone.
    closed: Vec<u64>,
    /// An event trapped (rather than an export or a rebuild on request): it is lost.
    event_lost: bool,
}

impl<N: Network, C: Clock> Dispatcher<N, C> {
    /// Starts serving `live`; timers armed and output queued by its `init` or import take
    /// effect now.
    pub(crate) fn new(
        net: N,
        clock: C,
        live: Live,
        args: Vec<String>,
        shared: Arc<Shared>,
    ) -> Self {
        let runtime = &live.version().runtime;
        let limits = Arc::clone(&runtime.limits);
        let event_clock = runtime.clock.clone();
        let listen_policy = Policy::from_limits(&limits);
        let mut dispatcher = Self {
            net,
            clock,
            live,
            timers: TimerQueue::default(),
            event_clock,
            args,
            next_args: None,
            shared,
            limits,
            recovering: false,
            timer_faults: HashMap::new(),
            recorder: None,
            checkpoint_now: false,
            nested: None,
            upgrading: None,
            checkpointing: None,
            replica_checkpoint: None,
            upgrade_waiting: None,
            no_replica_for: None,
            snapshot_waiters: Vec::new(),
            precopy_budget: precopy::Budget::default(),
            compacting: false,
            canary: None,
            catch_up: None,
            catch_up_abandoned: None,
            wake: None,
            answers: VecDeque::new(),
            listen_policy,
            serial: 0,
        };
        dispatcher.precopy_budget.chunk = dispatcher.limits.precopy_chunk;
        dispatcher.event_clock.freeze_at(dispatcher.clock.wall_ns());
        dispatcher.live.anchor(dispatcher.clock.monotonic_ns());
        dispatcher.apply_effects();
        dispatcher.answer_listens();
        dispatcher.publish_recovery();
        // Before any client event: what this instance holds fresh, the floor a compaction
        // measures against (the compactor's own first reading may come after a load).
        if let Ok(Some(usage)) = dispatcher.live.memory_usage() {
            dispatcher.shared.note_fresh_memory(usage.linear_memory);
        }
        dispatcher
    }

    /// Writes the session to `recorder` from now on.
    pub(crate) fn record(&mut self, recorder: Box<dyn Tap>) {
        self.recorder = Some(recorder);
    }

    pub(crate) fn live(&self) -> &Live {
        &self.live
    }

    /// The earliest armed timer's deadline, on [`Clock::monotonic_ns`].
    pub(crate) fn next_deadline(&mut self) -> Option<u64> {
        let candidate = self.canary.as_mut().and_then(|(c, _)| c.next_deadline());
        match (self.timers.next_deadline(), candidate) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A new connection: the app hears of it.
    pub(crate) fn connect(&mut self, info: &ConnInfo) {
        self.dispatch(Call::Connect(info));
    }

    /// A connection accepted on the app's run-time listener `listener`.
    pub(crate) fn accept(&mut self, info: &ConnInfo, listener: u64) {
        self.publish_listeners();
        self.dispatch(Call::Accept(info, listener));
    }

    /// Bytes from `conn`.
    pub(crate) fn data(&mut self, conn: u64, bytes: &[u8]) {
        self.dispatch(Call::Data(conn, bytes));
    }

    /// The peer closed or reset `conn`: queued output gets one last chance, the connection is
    /// dropped, and the app hears of it unless it closed it itself.
    pub(crate) fn peer_gone(&mut self, conn: u64) {
        if self.net.drop_conn(conn) {
            debug!(conn, "disconnected");
            self.dispatch(Call::Disconnect(conn));
        }
    }

    /// Tells the app of each connection that can take more output now, as it asked
    /// (`on-writable`), with its new send window: `--output-buffer` less what is queued. Those
    /// that get there meanwhile wait for the next call, so one connection that drains as fast
    /// as it is written to cannot keep the loop here.
    pub(crate) fn writable_due(&mut self) {
        for (conn, queued) in self.net.take_writable() {
            let window = self.limits.output_buffer.saturating_sub(queued) as u64;
            self.shared.note_writable_call();
            self.dispatch(Call::Writable(conn, window));
        }
    }

    /// Connections found broken while writing: each is dropped and the app told.
    pub(crate) fn reap_broken(&mut self) {
        while let Some(conn) = self.net.take_broken() {
            self.peer_gone(conn);
        }
    }

    /// Fires every timer due now, earliest first.
    pub(crate) fn fire_due_timers(&mut self) {
        while self.fire_next_due() {}
        // A canary's candidate fires its own timers; those due with one of the live instance's
        // fired with it, at the same clock reading (see `dispatch`). The others fire here, as
        // an event of their own — only when one is due, not on every pass of the loop.
        let now = self.clock.monotonic_ns();
        let due = |c: &mut Canary| c.next_deadline().is_some_and(|deadline| deadline <= now);
        if self.canary.as_mut().is_some_and(|(canary, _)| due(canary)) {
            let at = self.stamp();
            self.event_clock.begin(at);
            if let Some((canary, _)) = &mut self.canary {
                canary.fire_due(at);
            }
        }
    }

    /// Fires the earliest timer if it is due; false if none is.
    pub(crate) fn fire_next_due(&mut self) -> bool {
        match self.timers.pop_due(self.clock.monotonic_ns()) {
            Some(id) => {
                self.dispatch(Call::Timer(id));
                true
            }
            None => false,
        }
    }

    /// Starts a checkpoint if the journal says one is due: built from chunks between events
    /// when the app can pre-copy (see [`Dispatcher::checkpoint_step`]), else exported by a
    /// replica off the loop when it can (see [`Dispatcher::checkpoint_by_replica`]), else
    /// exported now. A checkpoint under way whose journal nears its limit is finished now (a
    /// replica's is given up for an export now).
    pub(crate) fn checkpoint_if_due(&mut self) {
        if self.checkpointing.is_some() {
            if self.live.recovery().len() >= self.live.recovery().limit() / 4 * 3 {
                self.checkpoint_finish();
            }
            return;
        }
        let recovery = self.live.recovery();
        let full = recovery.len() >= recovery.limit() / 4 * 3;
        if let Some(replica) = &mut self.replica_checkpoint
            && !replica.abandoned
        {
            if !(full || self.checkpoint_now) {
                return;
            }
            if full {
                warn!(
                    "the journal nears its limit before a replica exported the checkpoint: \
                     exporting it now"
                );
            }
            replica.abandoned = true;
            self.checkpoint_now = true;
        }
        if !(self.checkpoint_now || self.live.recovery().wants_checkpoint()) {
            return;
        }
        if self.upgrading.is_some() || self.catch_up.is_some() {
            // The upgrade's pre-copy holds the instance's one session; a whole export now would
            // stall every client. Wait for the upgrade to end unless the journal is nearly
            // full (then the export is the lesser harm).
            let recovery = self.live.recovery();
            if recovery.len() < recovery.limit() / 4 * 3 {
                return;
            }
            self.checkpoint_now = false;
            return self.take_checkpoint();
        }
        let asked = std::mem::take(&mut self.checkpoint_now);
        if self.precopy_budget.chunk > 0 && self.live.precopies() {
            self.event_clock.freeze_at(self.clock.wall_ns());
            match self.live.precopy_begin() {
                Ok(()) => {
                    self.checkpointing = Some(Building {
                        chunks: Chunks::new(self.limits.checkpoint_dir.as_deref()),
                        generation: self.live.generation(),
                        started: Instant::now(),
                        pace: precopy::Pace::new(self.precopy_budget),
                    });
                    return;
                }
                Err(e) => debug!("checkpoint by export, not chunks: {e}"),
            }
        }
        // Asked for now (`tasuki snapshot`, a drain, a recovery that closed connections): the
        // answer is wanted at this boundary.
        if !asked && self.checkpoint_by_replica() {
            return;
        }
        self.take_checkpoint();
    }

    /// Starts a checkpoint exported by a replica, for an app that cannot pre-copy: the recovery
    /// state is copied at this boundary (the checkpoint and the journal's index, shared, as a
    /// catch-up's replica copies them, [`crate::catchup`]), and off the loop a second instance
    /// of the live version imports the checkpoint, replays the journal and exports what the
    /// live instance holds here, while the loop serves on; when it is done the export becomes
    /// the checkpoint as of this boundary, and the journal keeps only the events since
    /// ([`Self::replica_checkpoint_done`]). As redis-server's `BGSAVE` forks a child to write
    /// its RDB, so that the server does not stall: an export on the loop stopped every client
    /// for 100–400 ms at 1M keys (bench/RESULTS.md). Used when the last checkpoint holds
    /// [`catchup::REPLICA_MIN`] bytes or more (below that an export on the loop is quicker
    /// than starting an instance) and the app can write no file (a replayed event would write
    /// it twice). False, and nothing started, otherwise.
    fn checkpoint_by_replica(&mut self) -> bool {
        let runtime = &self.live.version().runtime;
        let deterministic = runtime.deterministic.is_some();
        let failed =
            self.no_replica_for.as_ref().is_some_and(|(g, _)| *g == self.live.generation());
        // One at a time: one given up still holds its copy of the state until it is done.
        if !(deterministic || runtime.sandbox.dirs.is_empty())
            || failed
            || self.replica_checkpoint.is_some()
        {
            return false;
        }
        let Some(journal) = self.replica_for() else { return false };
        self.event_clock.freeze_at(self.clock.wall_ns());
        let at = self.stamp();
        let base = recovery::CheckpointBase {
            at_unix_ms: now_unix_ms(),
            live: self.net.live(),
            timers: self.timers.armed(),
            mono: self.clock.monotonic_ns(),
            listeners: self.live.recovery().listener_book().clone(),
        };
        let (mark, replayed) = (journal.mark, journal.events.len() as u64);
        let version = Arc::clone(self.live.version());
        let (args, clock) = (self.args.clone(), self.event_clock.clone());
        let export = move || catchup::export_from_replica(journal, (&version, &args), &clock, at);
        let (send, result) = mpsc::sync_channel(1);
        if deterministic {
            // The simulator's runs must be the same: the replica works here, at once.
            let _ = send.send(export());
        } else {
            let wake = self.wake.clone();
            let spawned =
                std::thread::Builder::new().name("tasuki-replica".into()).spawn(move || {
                    if send.send(export()).is_ok()
                        && let Some(wake) = wake
                    {
                        wake();
                    }
                });
            if let Err(e) = spawned {
                warn!("cannot start a thread for a replica ({e}): exporting the checkpoint now");
                return false;
            }
        }
        debug!(events = replayed, "checkpoint by a replica, off the loop");
        let started = Instant::now();
        let abandoned = false;
        self.replica_checkpoint =
            Some(ReplicaCheckpoint { result, mark, base, replayed, started, abandoned });
        true
    }

    /// The replica's checkpoint, once it has exported: the checkpoint as of the boundary it
    /// was copied at, if the journal is still the one it was copied from (a rebuild, an
    /// upgrade's commit or another checkpoint since leave it unused). A replica that failed
    /// leaves the checkpoint to an export on the loop, at the next round and for the rest of
    /// this instance's life (`tasuki status` says why).
    fn replica_checkpoint_done(&mut self) {
        let Some(replica) = &self.replica_checkpoint else { return };
        let exported = match replica.result.try_recv() {
            Ok(exported) => exported,
            Err(mpsc::TryRecvError::Empty) => return,
            Err(mpsc::TryRecvError::Disconnected) => {
                Err("its thread ended without an answer".to_string())
            }
        };
        let Some(replica) = self.replica_checkpoint.take() else { return };
        if replica.abandoned {
            debug!("a replica's checkpoint that was given up is done: dropped");
            return;
        }
        match exported {
            Ok((snapshot, cost)) => {
                let state = (Chunks::new(None), snapshot);
                if !self.live.advance_checkpoint(replica.mark, state, replica.base) {
                    debug!("a replica's checkpoint came after the journal moved on: not used");
                    return;
                }
                let record = ReplicaCheckpointRecord {
                    bytes: cost.bytes,
                    events_replayed: replica.replayed,
                    events_kept: self.live.recovery().events() as u64,
                    rebuild: cost.rebuild,
                    export: cost.export,
                    took: replica.started.elapsed(),
                };
                debug!(
                    bytes = record.bytes,
                    events_replayed = record.events_replayed,
                    events_kept = record.events_kept,
                    rebuild_us = record.rebuild.as_micros() as u64,
                    export_us = record.export.as_micros() as u64,
                    took_us = record.took.as_micros() as u64,
                    "checkpoint from a replica"
                );
                self.shared.record_replica_checkpoint(record);
                self.publish_recovery();
            }
            Err(reason) => {
                warn!(
                    "a replica of {} failed to export a checkpoint ({reason}): its checkpoints \
                     are exported on the loop from now on",
                    self.live.app()
                );
                self.no_replica_for = Some((self.live.generation(), reason));
                self.publish_recovery();
            }
        }
    }

    /// True while a checkpoint is being built from chunks.
    pub(crate) fn checkpointing(&self) -> bool {
        self.checkpointing.is_some()
    }

    /// One step of the checkpoint under way, between events: a chunk of the live state onto the
    /// side copy; at a step that leaves (almost) nothing owed, the cut — the rest and the
    /// snapshot, at this boundary — becomes the checkpoint and the journal starts over. Requests
    /// wait for one step at a time (the point of building it this way: a full export of a big
    /// state stalls every client for as long as it takes): a chunk, grown while writes outrun
    /// the copy up to [`precopy::STEP_GROWTH_MAX`] chunks and while a step takes under
    /// [`precopy::STEP_TIME`], so about twice that at most — but never less than one whole
    /// entry of the app's collections (a list of 13 MB is one record). The cut waits for what
    /// is still owed, a quarter chunk when the copy converged; a cut forced by the journal
    /// nearing its limit, or after the copy stopped gaining, moves all of it in one go
    /// ([`CUT_STEP_CHUNKS`] at a time, with no events between).
    pub(crate) fn checkpoint_step(&mut self) {
        self.replica_checkpoint_done();
        let Some(building) = &mut self.checkpointing else { return };
        if building.generation != self.live.generation() || self.upgrading.is_some() {
            // The instance it was built from is gone, or an upgrade took the session over.
            self.checkpointing = None;
            self.checkpoint_now = true;
            return;
        }
        self.event_clock.freeze_at(self.clock.wall_ns());
        let start = self.clock.monotonic_ns();
        let batch = match self.live.precopy_next(building.pace.step_bytes()) {
            Ok(batch) => batch,
            Err(e) => return self.checkpoint_failed(&e),
        };
        building.chunks.extend(batch.chunks);
        let took = Duration::from_nanos(self.clock.monotonic_ns().saturating_sub(start));
        // The cut comes at three quarters of the journal (checkpoint_if_due): input past
        // that would make it move whatever is still owed at once.
        let recovery = self.live.recovery();
        let room = (recovery.limit() > 0 && recovery.is_on())
            .then(|| (recovery.limit() / 4 * 3).saturating_sub(recovery.len()) as u64);
        if building.pace.step(batch.pending, room, took) == precopy::Next::Pause {
            self.checkpoint_finish();
        }
    }

    /// Bytes of client input the event loop may read before the next step of the pre-copy or
    /// checkpoint under way, while their copy must catch up with the changes; `None` for no
    /// bound (see [`precopy::Pace`]).
    pub(crate) fn input_allowance(&self) -> Option<u64> {
        let checkpoint = self.checkpointing.as_ref().and_then(|b| b.pace.allowance());
        let upgrade = self.upgrading.as_ref().and_then(|u| u.precopy.as_ref()?.allowance());
        match (checkpoint, upgrade) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The event loop left client input unread this round because of [`Self::input_allowance`].
    pub(crate) fn input_held_back(&mut self) {
        if let Some(building) = &mut self.checkpointing {
            building.pace.held_back();
        }
        if let Some(session) = self.upgrading.as_mut().and_then(|u| u.precopy.as_mut()) {
            session.pace_mut().held_back();
        }
    }

    /// The cut of the checkpoint under way: what is still owed and the snapshot of the rest.
    /// Much may still be owed (writes outran the copy, or the journal neared its limit): it is
    /// taken in steps of at most [`CUT_STEP_CHUNKS`] chunks, back to back, before the final
    /// pass.
    fn checkpoint_finish(&mut self) {
        let Some(mut building) = self.checkpointing.take() else { return };
        self.net.flush();
        self.event_clock.freeze_at(self.clock.wall_ns());
        let cut = Instant::now();
        let step = self.precopy_budget.chunk.max(1).saturating_mul(CUT_STEP_CHUNKS);
        let mut owed = building.pace.owed();
        let before_cut = building.chunks.bytes();
        // Each step leaves less owed (no event runs in between); the bound is a backstop.
        for _ in 0..=owed / step * 2 {
            if owed <= step {
                break;
            }
            match self.live.precopy_next(step) {
                Ok(batch) => {
                    building.chunks.extend(batch.chunks);
                    owed = batch.pending;
                }
                Err(e) => return self.checkpoint_failed(&e),
            }
        }
        match self.live.precopy_finish() {
            Ok((last, snapshot)) => {
                building.chunks.extend(last);
                // The steps above stopped the loop as the final pass does: both are the cut.
                let cut_bytes = building.chunks.bytes() - before_cut + snapshot_bytes(&snapshot);
                let bytes = building.chunks.bytes() + snapshot_bytes(&snapshot);
                let (timers, mono) = (self.timers.armed(), self.clock.monotonic_ns());
                self.live.set_checkpoint(
                    (building.chunks, snapshot),
                    self.net.live(),
                    timers,
                    mono,
                );
                let record = CheckpointRecord {
                    bytes,
                    steps: building.pace.steps(),
                    took: cut.saturating_duration_since(building.started),
                    cut_bytes,
                    cut_took: cut.elapsed(),
                    converged: building.pace.converged(),
                    throttled_rounds: building.pace.throttled(),
                    longest_step: building.pace.longest_step(),
                };
                debug!(
                    bytes,
                    steps = record.steps,
                    took_us = record.took.as_micros() as u64,
                    cut_bytes,
                    cut_us = record.cut_took.as_micros() as u64,
                    converged = record.converged,
                    throttled_rounds = record.throttled_rounds,
                    longest_step_us = record.longest_step.as_micros() as u64,
                    "checkpoint from chunks"
                );
                self.shared.record_checkpoint(record);
                self.answer_snapshots(cut.elapsed());
                self.publish_recovery();
            }
            Err(e) => self.checkpoint_failed(&e),
        }
    }

    /// A checkpoint's export failed: try again later; a trap rebuilds the instance.
    fn checkpoint_failed(&mut self, e: &CallError) {
        self.checkpointing = None;
        warn!("{} failed to export a checkpoint: {e}", self.live.app());
        self.live.checkpoint_failed();
        if e.trap().is_none() {
            self.live.precopy_abort();
        }
        let rebuilt = self.export_failed(e);
        self.refuse_snapshots(e, rebuilt);
        self.publish_recovery();
    }

    /// The next event's stamp: the clocks' readings now and a new serial number.
    fn stamp(&mut self) -> Stamp {
        self.serial += 1;
        Stamp { wall: self.clock.wall_ns(), mono: self.clock.monotonic_ns(), serial: self.serial }
    }

    /// Runs one event in the live instance, at the time the clock gives; journals it if it
    /// completed, contains it if it trapped.
    pub(crate) fn dispatch(&mut self, call: Call<'_>) {
        let at = self.stamp();
        self.event_clock.begin(at);
        match self.live.call(at, call) {
            Ok(()) => {
                if let Call::Timer(id) = call {
                    self.timer_faults.remove(&id);
                }
                if let Some(recorder) = &mut self.recorder {
                    match call {
                        Call::Connect(info) => recorder.connect(info.id),
                        Call::Data(id, bytes) => recorder.send(id, bytes),
                        Call::Accept(info, _) => recorder.accept(info.id, &info.listener),
                        Call::Disconnect(id) => recorder.close(id),
                        Call::Timer(_)
                        | Call::Writable(..)
                        | Call::Listening(..)
                        | Call::ListenersLost => {}
                    }
                }
                if let Some(catch_up) = &mut self.catch_up {
                    catch_up.backlog.keep(at, call);
                }
                self.apply_effects_at(at.mono);
                if let Some((canary, _)) = &mut self.canary {
                    // The same event, at the same clock reading and with the same random
                    // bytes, in the candidate; a timer fires there from its own queue, with
                    // whatever else is due by now.
                    self.event_clock.begin(at);
                    match call {
                        Call::Timer(_) => canary.fire_due(at),
                        _ => canary.feed(at, call),
                    }
                }
                self.shared.note_journal(self.live.recovery());
                self.answer_listens();
                // Between every two events, not once per poll: one poll can read many events,
                // and the journal must never pass its limit while a checkpoint could be taken.
                if !self.recovering {
                    self.checkpoint_if_due();
                }
            }
            Err(e) => self.fault(&e, call),
        }
        self.reap_broken();
    }

    /// Applies what the guest asked for, now.
    fn apply_effects(&mut self) {
        self.apply_effects_at(self.clock.monotonic_ns());
    }

    /// Tells the app the answers to its `listeners.listen` requests, each an event.
    fn answer_listens(&mut self) {
        while let Some((id, result)) = self.answers.pop_front() {
            match &result {
                Ok(address) => {
                    info!(listener = id, "{} opened listener {id} on {address}", self.live.app())
                }
                Err(e) => warn!(
                    listener = id,
                    "{} asked for listener {id}, refused: {}",
                    self.live.app(),
                    crate::listeners::describe(e)
                ),
            }
            self.publish_listeners();
            self.dispatch(Call::Listening(id, &result));
        }
    }

    /// Tells `tasuki status` which run-time listeners are open.
    fn publish_listeners(&self) {
        self.shared.note_listeners(self.net.listener_status());
    }

    /// Closes the host's run-time listeners that the live instance does not believe open:
    /// after a rebuild left a request out, or a fresh restart.
    fn close_unknown_listeners(&mut self, book: &ListenerBook) {
        for id in self.net.listener_ids() {
            if !book.is_open(id) {
                warn!(listener = id, "closing listener {id}: the rebuilt app does not know it");
                self.net.unlisten(id);
            }
        }
        self.publish_listeners();
    }

    /// Applies what the guest asked for during an event that ran at monotonic time `now`.
    fn apply_effects_at(&mut self, now: u64) {
        let Self { live, net, timers, recorder, canary, catch_up, answers, listen_policy, .. } =
            self;
        let mut cut_off = Vec::new();
        let mut output = 0;
        // Requests past --max-listeners in one call are refused without a system call each.
        let mut listens = 0;
        let mut unlistened = false;
        live.drain_effects(|effect| {
            if let Some(recorder) = recorder {
                match &effect {
                    Effect::Send(conn, data) => recorder.reply(*conn, data),
                    Effect::Close(conn) => recorder.forget(*conn),
                    _ => {}
                }
            }
            if let Some((canary, _)) = canary {
                match &effect {
                    Effect::Send(conn, data) => canary.old_sent(*conn, data),
                    Effect::Close(conn) => canary.old_closed(*conn),
                    _ => {}
                }
            }
            if let Some(catch_up) = catch_up {
                match &effect {
                    Effect::Send(conn, data) => catch_up.backlog.sent(*conn, data),
                    Effect::Close(conn) => catch_up.backlog.closed(*conn),
                    _ => {}
                }
            }
            match effect {
                Effect::Send(conn, data) => {
                    output += data.len();
                    net.send(conn, data);
                }
                Effect::Close(conn) => net.close(conn),
                Effect::NotifyWritable(conn) => net.want_writable(conn),
                Effect::CutOff(conn) => cut_off.push(conn),
                Effect::Listen(id, port) => {
                    listens += 1;
                    let result = if listens > listen_policy.max {
                        Err(ListenError::Limit(
                            u32::try_from(listen_policy.max).unwrap_or(u32::MAX),
                        ))
                    } else {
                        net.listen(id, port, listen_policy)
                    };
                    answers.push_back((id, result));
                }
                Effect::Unlisten(id) => {
                    net.unlisten(id);
                    unlistened = true;
                }
                timer => timers.apply(&timer, now),
            }
        });
        self.shared.note_call_output(output);
        if unlistened {
            self.publish_listeners();
        }
        for conn in cut_off {
            self.peer_gone(conn);
        }
    }

    /// The live instance trapped (or refused an export) during `call`. The event is dropped;
    /// its connection, if it has one, is closed; the instance is rebuilt from its recovery
    /// state, leaving out that connection's unanswered input.
    fn fault(&mut self, e: &CallError, call: Call<'_>) {
        self.live.discard_effects();
        let app = self.live.app();
        let conn = call.conn();
        if e.trap().is_some_and(|t| t.injected) {
            info!(conn, "{app} {e}");
        } else {
            error!(conn, "{app} {e}");
        }
        // Said before the connection closes: whoever sees it close and asks `tasuki status`
        // then finds the recovery under way.
        self.shared.recovering(true);
        let mut culprits = Vec::new();
        if let Some(id) = conn {
            // Replies to the events before the faulting one are still owed.
            if self.net.drop_conn(id) {
                culprits.push(id);
            }
        }
        let what = match e {
            CallError::Trap(trap) => trap.message.clone(),
            CallError::Refused(reason) => format!("refused: {reason}"),
        };
        let cause = match call {
            Call::Timer(id) => format!("{app} trapped in on-timer({id}): {what}"),
            _ => format!("{app} trapped on connection {}: {what}", conn.unwrap_or_default()),
        };
        // A trap in on-disconnect is that event lost: the rebuilt instance is not told again
        // (it would trap again), and the connection is gone already.
        let skip = match call {
            Call::Disconnect(_) | Call::Timer(_) | Call::Listening(..) | Call::ListenersLost => {
                None
            }
            _ => conn.map(|id| self.live.recovery().unanswered(id)),
        };
        self.recover(Fault { cause, skip, closed: culprits, event_lost: true });
        if let Call::Timer(id) = call {
            self.refire(id);
        }
    }

    /// Re-arms timer `id` after its handler trapped: the rebuilt instance believes it armed.
    fn refire(&mut self, id: u64) {
        let faults = self.timer_faults.entry(id).or_default();
        *faults += 1;
        let delay =
            TIMER_RETRY_FIRST.saturating_mul(1 << (*faults - 1).min(20)).min(TIMER_RETRY_MAX);
        warn!(
            timer = id,
            "timer {id} fires again in {} ms after its handler trapped",
            delay.as_millis()
        );
        let at = self.clock.monotonic_ns().saturating_add(delay.as_nanos() as u64);
        self.timers.set(id, at);
    }

    /// Rebuilds the live instance. `closed` are connections already dropped by the host (the
    /// app hears they are gone once rebuilt); `skip` is input to leave out of the replay.
    fn recover(&mut self, fault: Fault) {
        if self.recovering {
            // The rebuilt instance trapped while being told what changed: recover again after.
            self.nested.get_or_insert(fault);
            return;
        }
        self.net.flush();
        if let Some((canary, _)) = &mut self.canary {
            // Recovery leaves a culprit's input out of the rebuilt state: the two versions no
            // longer run the same events.
            canary.interrupt(fault.cause.clone());
        }
        if let Some(catch_up) = &mut self.catch_up {
            catch_up.interrupted.get_or_insert_with(|| fault.cause.clone());
        }
        self.recovering = true;
        self.shared.recovering(true);
        let mut next = Some(fault);
        let mut rounds = 0;
        while let Some(fault) = next.take() {
            rounds += 1;
            if rounds > 2 * crate::recovery::MAX_REPLAY_ATTEMPTS {
                // Even fresh instances trap on what they are told: stop here; the next event
                // finds the instance trapped and recovery starts over, one round per event.
                error!(
                    "{} keeps trapping while being recovered; giving up for now",
                    self.live.app()
                );
                break;
            }
            let give_up = rounds > crate::recovery::MAX_REPLAY_ATTEMPTS;
            self.recover_once(fault, give_up);
            next = self.nested.take();
        }
        self.nested = None;
        self.recovering = false;
        self.shared.recovering(false);
        self.publish_recovery();
    }

    fn recover_once(&mut self, fault: Fault, give_up: bool) {
        let Fault { cause, skip, closed, event_lost } = fault;
        let started = Instant::now();
        let app = self.live.app();
        let rebuilt = if give_up {
            Err("recovery kept trapping".to_string())
        } else {
            self.live.rebuild(&self.args, &self.event_clock, skip).map_err(|e| e.to_string())
        };
        let outcome = match rebuilt {
            Ok(report) => {
                let from = if self.live.recovery().checkpoint().is_some() {
                    "its checkpoint"
                } else {
                    "its start"
                };
                info!(
                    "{app} rebuilt in {:.1} ms from {from} and {} journaled events{}",
                    report.took.as_secs_f64() * 1e3,
                    report.replayed,
                    if report.dropped == 0 {
                        String::new()
                    } else {
                        format!(
                            " ({} events left out: unanswered input of connections {:?}, or \
                             events whose replay trapped)",
                            report.dropped, report.culprits
                        )
                    }
                );
                self.after_rebuild(report, closed, event_lost)
            }
            Err(e) => {
                error!("{app} could not be rebuilt ({e}); restarting it with fresh state");
                self.restart_fresh(e)
            }
        };
        let record =
            RecoveryRecord { at_unix_ms: now_unix_ms(), took: started.elapsed(), cause, outcome };
        self.shared.record_recovery(record);
    }

    fn after_rebuild(
        &mut self,
        mut report: RebuildReport,
        closed: Vec<u64>,
        event_lost: bool,
    ) -> RecoveryOutcome {
        // The rebuilt instance's timers, as its checkpoint, import and replay armed them, and
        // the listeners it knows of.
        self.timers = std::mem::take(&mut report.timers);
        let book = std::mem::take(&mut report.listeners);
        self.close_unknown_listeners(&book);
        for &id in &report.refire {
            self.refire(id);
        }
        let mut gone = closed;
        for &id in &report.culprits {
            if self.net.drop_conn(id) {
                warn!(conn = id, "closing connection {id}: its input made the replay trap");
            }
            if !gone.contains(&id) {
                gone.push(id);
            }
        }
        self.checkpoint_now |= !gone.is_empty();
        // The rebuilt instance still believes these open.
        let open: Vec<u64> = self.net.live().iter().map(|c| c.id).collect();
        for &id in &gone {
            if !open.contains(&id) {
                self.dispatch(Call::Disconnect(id));
            }
        }
        RecoveryOutcome::Rebuilt {
            replayed: report.replayed as u64,
            dropped_events: report.dropped as u64,
            closed: gone,
            event_lost,
            from_checkpoint: self.live.recovery().checkpoint().is_some(),
        }
    }

    /// The last resort: a fresh instance of the same version, told about every open
    /// connection. The state is lost, and the log and `tasuki status` say so.
    fn restart_fresh(&mut self, reason: String) -> RecoveryOutcome {
        let app = self.live.app();
        if let Err(e) = self.live.restart_fresh(&self.args, self.clock.monotonic_ns()) {
            error!("{app} cannot be restarted: {e}");
            return RecoveryOutcome::Failed { reason: format!("{reason}; restart failed: {e}") };
        }
        error!("{app} restarted with fresh state after a trap; the state it held is lost");
        // Timers armed by the lost state are gone with it; `init` arms its own. So are the
        // listeners it opened.
        self.timers = TimerQueue::default();
        self.close_unknown_listeners(&ListenerBook::default());
        self.apply_effects();
        self.answer_listens();
        for conn in self.net.live() {
            match self.net.accepted_on(conn.id) {
                Some(listener) => self.dispatch(Call::Accept(&conn, listener)),
                None => self.dispatch(Call::Connect(&conn)),
            }
        }
        RecoveryOutcome::RestartedEmpty { reason }
    }

    /// `tasuki snapshot`: the live state, which is also the next checkpoint. An app that
    /// pre-copies gets a checkpoint built a chunk at a time between events (the answer comes
    /// when it is cut; one under way already serves); any other is exported now.
    pub(crate) fn snapshot(&mut self, reply: SnapshotReply) {
        self.snapshot_waiters.push(reply);
        if self.checkpointing.is_none() {
            self.checkpoint_now = true;
            self.checkpoint_if_due();
        }
    }

    /// Hands the checkpoint just taken to whoever asked for a snapshot; `pause` is how long its
    /// cut kept events waiting.
    fn answer_snapshots(&mut self, pause: Duration) {
        if self.snapshot_waiters.is_empty() {
            return;
        }
        let Some(checkpoint) = self.live.recovery().checkpoint() else { return };
        let state = (checkpoint.chunks.clone(), Snapshot::clone(&checkpoint.snapshot), pause);
        for waiter in self.snapshot_waiters.drain(..) {
            let _ = waiter.send(Ok(state.clone()));
        }
    }

    /// Tells whoever asked for a snapshot that the export failed.
    fn refuse_snapshots(&mut self, error: &CallError, rebuilt: bool) {
        for waiter in self.snapshot_waiters.drain(..) {
            let _ = waiter.send(Err(UpgradeError::Export {
                running: self.live.app(),
                error: Box::new(error.clone()),
                rebuilt,
            }));
        }
    }

    /// Makes `snapshot`, exported just now, the checkpoint, with the connections and timers of
    /// this moment.
    fn set_checkpoint(&mut self, snapshot: Snapshot) {
        let (timers, mono) = (self.timers.armed(), self.clock.monotonic_ns());
        let chunks = Chunks::new(None);
        self.live.set_checkpoint((chunks, snapshot), self.net.live(), timers, mono);
    }

    /// Exports the live state so the journal can start over from it.
    fn take_checkpoint(&mut self) {
        self.net.flush();
        let started = Instant::now();
        self.event_clock.freeze_at(self.clock.wall_ns());
        match self.live.export() {
            Ok(snapshot) => {
                let bytes = snapshot_bytes(&snapshot);
                self.set_checkpoint(snapshot);
                let took = started.elapsed();
                self.shared.record_whole_checkpoint(took);
                debug!(bytes, took_us = took.as_micros() as u64, "checkpoint");
                self.answer_snapshots(took);
            }
            Err(e) => {
                warn!("{} failed to export a checkpoint: {e}", self.live.app());
                self.live.checkpoint_failed();
                let rebuilt = self.export_failed(&e);
                self.refuse_snapshots(&e, rebuilt);
            }
        }
        self.publish_recovery();
    }

    /// An export failed. A refusal changes nothing; a trap leaves the instance unusable, so it
    /// is rebuilt — blaming the connection with the most unanswered input, if it holds enough
    /// to be the likely cause. True if the instance was rebuilt.
    fn export_failed(&mut self, error: &CallError) -> bool {
        if error.trap().is_none() {
            return false;
        }
        let app = self.live.app();
        let blamed = self
            .live
            .recovery()
            .heaviest_unanswered()
            .filter(|(_, bytes)| *bytes >= EXPORT_CULPRIT_MIN);
        self.shared.recovering(true);
        let mut closed = Vec::new();
        let skip = blamed.map(|(skip, bytes)| {
            warn!(
                conn = skip.conn,
                "{app} trapped exporting its state; closing connection {} whose {bytes} bytes of \
                 unanswered input it was holding",
                skip.conn
            );
            if self.net.drop_conn(skip.conn) {
                closed.push(skip.conn);
            }
            skip
        });
        let cause = format!("{app} {error}, while exporting its state");
        self.recover(Fault { cause, skip, closed, event_lost: false });
        true
    }

    /// Step 3 of the upgrade: opens its pre-copy, or — when the state cannot be pre-copied —
    /// pauses now and swaps. `Some` when the upgrade ended here (committed or rolled back);
    /// `None` while the pre-copy is under way: [`Dispatcher::upgrade_step`] carries it on.
    pub(crate) fn upgrade(&mut self, next: Prepared) -> Option<Swapped> {
        if self.upgrading.is_none()
            && self.canary.is_none()
            && self.catch_up.is_none()
            && self.upgrade_waiting.is_none()
            && self.replica_checkpoint.is_some()
        {
            // The upgrade moves the state whole (only an app that cannot pre-copy has a
            // replica build its checkpoints), maybe through a replica of its own: begun now,
            // the host would hold the state four times over (the live instance, the two
            // replicas, the new instance; 3.3x the steady RSS at 1M keys, bench/RESULTS.md).
            // The replica takes seconds at most; the upgrade waits for it.
            info!("the upgrade begins once the replica building a checkpoint is done");
            self.upgrade_waiting = Some(next);
            return None;
        }
        if self.upgrading.is_some()
            || self.canary.is_some()
            || self.catch_up.is_some()
            || self.upgrade_waiting.is_some()
        {
            // The requester holds the upgrade lock, so this does not happen; refuse anyway,
            // leaving the record of the upgrade under way alone.
            let error = UpgradeError::InProgress;
            warn!("{error}");
            return Some(Swapped { outcome: Err(error), retired: Box::new(next.instance) });
        }
        self.compacting = next.compaction.is_some();
        self.next_args = Some(next.args.clone());
        self.event_clock.freeze_at(self.clock.wall_ns());
        if self.checkpointing.take().is_some() {
            // The checkpoint under way gives way to the upgrade (the last one stays good) and
            // starts over when the upgrade ends; its session must not stay open if the upgrade
            // moves the state whole.
            self.live.precopy_abort();
            self.checkpoint_now = true;
        }
        match upgrade::begin(&mut self.live, next, self.precopy_budget, self.limits.max_state) {
            Begun::Precopy(underway) => {
                info!("pre-copying the state to {}", AppVersion::from(&underway.next.info));
                self.upgrading = Some(underway);
                self.note_precopy();
                None
            }
            Begun::Full(underway) if self.may_catch_up(&underway.next) => {
                self.begin_catch_up(underway.next)
            }
            Begun::Full(underway) => self.pause_and_swap(underway),
            Begun::Failed(swap) => Some(self.ended(swap)),
        }
    }

    /// Asks the live instance how it uses its memory and tells `tasuki status`. A trap here is
    /// a fault like any other: the instance is rebuilt.
    pub(crate) fn check_memory(&mut self) {
        if self.recovering {
            return;
        }
        match self.live.memory_usage() {
            Ok(usage) => self.shared.note_memory(usage),
            Err(e) if e.trap().is_some() => {
                let cause = format!("{} {e}, while reporting its memory", self.live.app());
                self.recover(Fault { cause, skip: None, closed: Vec::new(), event_lost: false });
            }
            Err(_) => self.shared.note_memory(None),
        }
    }

    /// True while an upgrade's pre-copy, or a catch-up's replay, is under way: a step runs
    /// after every round of events. (A catch-up's import, off the loop, wakes the loop itself.)
    pub(crate) fn upgrading(&self) -> bool {
        self.upgrading.is_some()
            || self.catch_up.as_ref().is_some_and(|c| matches!(c.phase, Phase::Replaying { .. }))
    }

    /// One step of the pre-copy under way, between events; `Some` when the upgrade ended
    /// (after the pause that this step decided on, or a rollback).
    pub(crate) fn upgrade_step(&mut self) -> Option<Swapped> {
        if self.replica_checkpoint.is_none()
            && let Some(next) = self.upgrade_waiting.take()
        {
            return self.upgrade(next);
        }
        if self.canary.is_some() {
            return self.canary_step();
        }
        if self.catch_up.is_some() {
            return self.catch_up_step();
        }
        let underway = self.upgrading.as_mut()?;
        self.event_clock.freeze_at(self.clock.wall_ns());
        let clock = &self.clock;
        let monotonic_ns = || clock.monotonic_ns();
        match upgrade::step(&mut self.live, underway, self.limits.max_state, &monotonic_ns) {
            Ok(precopy::Next::Continue) => {
                self.note_precopy();
                None
            }
            Ok(precopy::Next::Pause) => {
                let underway = self.upgrading.take().expect("checked above");
                self.pause_and_swap(underway)
            }
            Err(error) => {
                let underway = self.upgrading.take().expect("checked above");
                Some(
                    self.ended(Swap::RolledBack {
                        error,
                        retired: Box::new(underway.next.instance),
                    }),
                )
            }
        }
    }

    /// Refuses an upgrade that arrives while the host is stopping.
    pub(crate) fn refuse_upgrade(&mut self, next: Prepared) -> Swapped {
        let error = UpgradeError::HostStopped;
        self.ended(Swap::RolledBack { error, retired: Box::new(next.instance) })
    }

    /// True while a `tasuki snapshot` (or the last snapshot of a drain) waits for its state.
    pub(crate) fn snapshot_pending(&self) -> bool {
        !self.snapshot_waiters.is_empty()
    }

    /// Drops the upgrade under way, if any (the host is stopping): the old version keeps
    /// everything.
    pub(crate) fn cancel_upgrade(&mut self) -> Option<Swapped> {
        if let Some(next) = self.upgrade_waiting.take() {
            return Some(self.refuse_upgrade(next));
        }
        if let Some(catch_up) = self.catch_up.take() {
            info!("catch-up of {} dropped: the host is stopping", catch_up.report.to);
            let error = UpgradeError::HostStopped;
            return Some(self.ended(Swap::RolledBack { error, retired: Box::new(catch_up) }));
        }
        if let Some((canary, report)) = self.canary.take() {
            self.shared.note_canary(None);
            let error = UpgradeError::HostStopped;
            info!("canary of {} dropped: the host is stopping", report.to);
            self.shared.record_upgrade(Err(error.to_string()));
            return Some(Swapped { outcome: Err(error), retired: Box::new(canary.candidate) });
        }
        let underway = self.upgrading.take()?;
        let swap = upgrade::cancel(&mut self.live, underway, UpgradeError::HostStopped);
        Some(self.ended(swap))
    }

    /// Steps 4–7 of the upgrade: pause, export, import, commit or roll back — or, with
    /// `--canary`, start the canary (`None`: [`Dispatcher::upgrade_step`] ends it).
    fn pause_and_swap(&mut self, underway: Underway) -> Option<Swapped> {
        self.pause_and_swap_since(underway, Instant::now())
    }

    /// [`Self::pause_and_swap`] for a loop that stopped already at `paused` (an abandoned
    /// catch-up starts the new version's fresh instance on the loop first).
    fn pause_and_swap_since(&mut self, underway: Underway, paused: Instant) -> Option<Swapped> {
        self.net.flush();
        self.event_clock.freeze_at(self.clock.wall_ns());
        let boundary = upgrade::Boundary {
            conns: self.net.live(),
            timers: self.timers.armed(),
            mono: self.clock.monotonic_ns(),
            clock: &self.event_clock,
            max_state: self.limits.max_state,
        };
        match upgrade::swap(&mut self.live, underway, boundary) {
            Swap::Canary { mut report, candidate, window } => {
                report.pause = paused.elapsed();
                self.start_canary(report, *candidate, window);
                None
            }
            swap => Some(self.ended_paused(swap, Some(paused))),
        }
    }

    /// The candidate imported the state: from now on it runs every event beside the live
    /// instance. The pause ends here.
    fn start_canary(&mut self, report: Box<UpgradeReport>, candidate: Live, window: Window) {
        self.shared.note_precopy(None);
        let timers = TimerQueue::from_armed(&self.timers.armed());
        let open = self.net.live();
        let mut canary = Canary::start(candidate, timers, window, &open, self.clock.monotonic_ns());
        grant_windows_if_unasked(&self.live, &self.limits, &mut canary);
        info!(
            pause_us = report.pause.as_micros() as u64,
            "{} imported the state; canary of {window} under way beside {}", report.to, report.from
        );
        self.canary = Some((canary, report));
        self.note_canary();
    }

    /// Tells `tasuki status` how far the canary under way is.
    fn note_canary(&self) {
        let progress = self.canary.as_ref().map(|(canary, report)| {
            let (events, declared_differences, left) = canary.progress();
            CanaryProgress {
                to: report.to.clone(),
                window: canary.window(),
                events,
                left,
                declared_differences,
            }
        });
        self.shared.note_canary(progress);
    }

    /// True while a canary runs (`--canary`).
    pub(crate) fn canary_running(&self) -> bool {
        self.canary.is_some()
    }

    /// Ends the window of the canary under way now (the simulator, when its trace ends): the
    /// next [`Dispatcher::upgrade_step`] gives its verdict on what ran.
    pub(crate) fn end_canary_window(&mut self) {
        if let Some((canary, _)) = &mut self.canary {
            canary.end_window();
        }
    }

    /// When the canary under way ends on the clock (`--canary 30s`), for the loop's poll.
    pub(crate) fn canary_deadline(&self) -> Option<Instant> {
        self.canary.as_ref().and_then(|(canary, _)| canary.deadline())
    }

    /// Between rounds of events: ends the canary if it diverged, failed or ran its window
    /// (committing by swapping instances); `None` while it goes on.
    fn canary_step(&mut self) -> Option<Swapped> {
        let (canary, _) = self.canary.as_mut()?;
        let Some(verdict) = canary.verdict() else {
            self.note_canary();
            return None;
        };
        let (canary, mut report) = self.canary.take().expect("checked above");
        self.shared.note_canary(None);
        let next_args = self.next_args.take();
        let (running, new) = (Box::new(report.from.clone()), Box::new(report.to.clone()));
        let error = match verdict {
            Err(Stop::Diverged(divergence)) => {
                UpgradeError::Diverged { running, new, divergence, saved: None }
            }
            Err(Stop::Trapped { event, error }) => {
                UpgradeError::CanaryTrapped { running, new, event, error }
            }
            Err(Stop::Interrupted(cause)) => {
                UpgradeError::CanaryInterrupted { running, new, cause }
            }
            Ok(()) => {
                let (canary_report, candidate, timers) = canary.commit();
                report.canary = Some(canary_report);
                let retired = self.live.adopt(candidate);
                self.timers = timers;
                // From here on the new version's arguments: a rebuild after a trap, a replica
                // and a compaction start it with them.
                if let Some(args) = next_args {
                    self.args = args;
                }
                let book = self.live.recovery().listener_book().clone();
                self.close_unknown_listeners(&book);
                if let Some(memory) = &report.memory {
                    self.shared.note_fresh_memory(memory.after.linear_memory);
                }
                // A long canary may have overflowed the candidate's journal: its first
                // checkpoint as the live version turns recovery back on.
                self.checkpoint_now |= !self.live.recovery().is_on();
                info!(
                    from = %report.from, to = %report.to, events = report.canary.as_ref().map_or(0, |c| c.events),
                    "canary agreed; upgraded"
                );
                self.shared.record_commit(&report, self.live.info().clone());
                self.publish_recovery();
                return Some(Swapped { outcome: Ok(*report), retired: Box::new(retired) });
            }
        };
        warn!("{error}");
        self.shared.record_upgrade(Err(error.to_string()));
        Some(Swapped { outcome: Err(error), retired: Box::new(canary.candidate) })
    }

    /// Whether an upgrade that moves the whole state may import it off the loop and catch up
    /// (see [`crate::catchup`]): not from a checkpoint (the journal is replayed instead), not
    /// with a canary (which compares from the import on), not when asked (`--no-catch-up`), and
    /// not for an app granted directories under `tasuki run` (read-write: a replayed event
    /// could write a file twice; the simulator grants them read-only).
    fn may_catch_up(&self, next: &Prepared) -> bool {
        let runtime = &self.live.version().runtime;
        !next.from_checkpoint
            && next.canary.is_none()
            && !next.no_catch_up
            && (runtime.deterministic.is_some() || runtime.sandbox.dirs.is_empty())
    }

    /// The pause of a catch-up: the whole state exported at this boundary, handed to the new
    /// instance to import off the loop (in the simulator, at once). From here on every event
    /// is kept for the new instance to run after.
    fn begin_catch_up(&mut self, next: Prepared) -> Option<Swapped> {
        self.net.flush();
        let paused = Instant::now();
        self.event_clock.freeze_at(self.clock.wall_ns());
        let at = self.stamp();
        self.event_clock.begin(at);
        let running = self.live.app();
        let memory_before = self.live.memory_usage().ok().flatten();
        if let Some(journal) = self.journal_for(&next) {
            let source = catchup::Source::Journal(journal);
            return self.begin_catch_up_from(next, source, (paused, at), memory_before);
        }
        if let Some(journal) = self.replica_for() {
            let source = catchup::Source::Replica {
                journal,
                version: Arc::clone(self.live.version()),
                args: self.args.clone(),
                max_state: self.limits.max_state,
            };
            return self.begin_catch_up_from(next, source, (paused, at), memory_before);
        }
        let exported = self.live.export();
        let failed = match exported {
            Ok(snapshot) if snapshot_bytes(&snapshot) <= self.limits.max_state => Ok(snapshot),
            Ok(snapshot) => Err(UpgradeError::TooLarge {
                running: running.clone(),
                bytes: snapshot_bytes(&snapshot),
                limit: self.limits.max_state,
            }),
            Err(error) => Err(UpgradeError::Export {
                running: running.clone(),
                error: Box::new(error),
                rebuilt: false,
            }),
        };
        let snapshot = match failed {
            Ok(snapshot) => snapshot,
            Err(error) => {
                let swap = Swap::RolledBack { error, retired: Box::new(next.instance) };
                return Some(self.ended_paused(swap, Some(paused)));
            }
        };
        self.begin_catch_up_from(
            next,
            catchup::Source::Export(snapshot),
            (paused, at),
            memory_before,
        )
    }

    /// The recovery state a catch-up to `next` can replay instead of an export: when `next` is
    /// the live release byte for byte, started with the same arguments, with no transformer,
    /// and the journal holds a checkpoint and every event since. (Without a checkpoint the
    /// journal starts at `init`, whose clock and randomness it did not record.)
    fn journal_for(&self, next: &Prepared) -> Option<recovery::JournalCopy> {
        let same = next.version.same_release(self.live.version())
            && next.pipeline.is_empty()
            && next.args == self.args;
        same.then(|| self.live.recovery().copy()).flatten()
    }

    /// The recovery state a replica of the live instance can be rebuilt from, to export off the
    /// loop instead of in the pause ([`catchup::Source::Replica`]): when the journal holds a
    /// checkpoint and every event since, and the state is large enough
    /// ([`catchup::REPLICA_MIN`]) that its export would cost the pause more than rebuilding a
    /// replica costs the loop (the copy of the journal's last segment).
    fn replica_for(&self) -> Option<recovery::JournalCopy> {
        let recovery = self.live.recovery();
        let large = recovery.checkpoint()?.bytes() >= catchup::REPLICA_MIN;
        large.then(|| recovery.copy()).flatten()
    }

    /// The rest of [`Self::begin_catch_up`], once the state's source is known: the new
    /// instance takes it off the loop while every event from `at` on is kept.
    fn begin_catch_up_from(
        &mut self,
        next: Prepared,
        source: catchup::Source,
        (paused, at): (Instant, Stamp),
        memory_before: Option<MemoryUsage>,
    ) -> Option<Swapped> {
        let running = self.live.app();
        let export = paused.elapsed();
        let conns = self.net.live();
        let (state_bytes, state_source) = match &source {
            catchup::Source::Export(snapshot) => (snapshot_bytes(snapshot), StateSource::Export),
            catchup::Source::Journal(journal) => (
                journal.checkpoint.bytes(),
                StateSource::Checkpoint {
                    at_unix_ms: Some(journal.checkpoint.at_unix_ms),
                    events_replayed: journal.events.len() as u64,
                    // A copy is taken only of a journal that holds every event.
                    complete: true,
                },
            ),
            catchup::Source::Replica { journal, .. } => (
                journal.checkpoint.bytes(),
                StateSource::Replica {
                    at_unix_ms: journal.checkpoint.at_unix_ms,
                    events_replayed: journal.events.len() as u64,
                    rebuild: Duration::ZERO,
                    export: Duration::ZERO,
                },
            ),
        };
        let report = UpgradeReport {
            export,
            state_bytes,
            connections: conns.len() as u64,
            source: state_source,
            ..UpgradeReport::begun(running.clone(), &next)
        };
        let at_export = AtExport {
            conns: conns.clone(),
            timers: self.timers.armed(),
            mono: self.clock.monotonic_ns(),
            book: self.live.recovery().listener_book().clone(),
        };
        let importer = match self.live.version().runtime.deterministic {
            Some(_) => Importer::Inline,
            None => Importer::Thread { wake: self.wake.clone() },
        };
        let to = report.to.clone();
        let receive = catchup::start(importer, next, source, conns, self.event_clock.clone(), at);
        let mut catch_up =
            CatchUp::new(Phase::Importing(receive), Box::new(report), at_export, memory_before);
        catch_up.report.pause = paused.elapsed();
        match &catch_up.report.source {
            StateSource::Export => info!(
                export_us = export.as_micros() as u64,
                "{running} exported its state; {to} imports it off the loop while {running} serves"
            ),
            StateSource::Checkpoint { events_replayed, .. } => info!(
                "{to} imports {running}'s checkpoint and replays the {events_replayed} events \
                 since, off the loop, while {running} serves"
            ),
            StateSource::Replica { events_replayed, .. } => info!(
                "a replica of {running} imports its checkpoint and replays the {events_replayed} \
                 events since, off the loop, while {running} serves; it exports the state for \
                 {to} to import"
            ),
        }
        self.catch_up = Some(catch_up);
        self.catch_up_step()
    }

    /// Between rounds of events: takes the new instance once its import is done, runs a step
    /// of the kept events in it, and commits once it has run them all with the same output
    /// as the old version — or gives up for a transfer in the pause. `None` while under way.
    fn catch_up_step(&mut self) -> Option<Swapped> {
        self.note_catch_up();
        let catch_up = self.catch_up.as_mut()?;
        if let Phase::Importing(receive) = &catch_up.phase {
            let crossed = match receive.try_recv() {
                Err(mpsc::TryRecvError::Empty) => return None,
                Ok(crossed) => crossed,
                Err(mpsc::TryRecvError::Disconnected) => {
                    let catch_up = self.catch_up.take()?;
                    let report = &catch_up.report;
                    let error = UpgradeError::Import {
                        running: report.from.clone(),
                        new: report.to.clone(),
                        error: Box::new(CallError::Refused(
                            "the import thread stopped without an answer".into(),
                        )),
                    };
                    return Some(self.ended(Swap::RolledBack { error, retired: Box::new(()) }));
                }
            };
            let Crossed { next, result, transform, import, memory, replica } = crossed;
            let (fallback, instance) = Fallback::split(next);
            let (running, new) = (catch_up.report.from.clone(), catch_up.report.to.clone());
            if let (StateSource::Replica { rebuild, export, .. }, Some(cost)) =
                (&mut catch_up.report.source, replica)
            {
                (*rebuild, *export) = (cost.rebuild, cost.export);
                catch_up.report.state_bytes = cost.bytes;
            }
            let took = match result {
                Ok(took) => took,
                Err(catchup::CrossError::Replica(why)) => {
                    return self.abandon_before_import(fallback, instance, why);
                }
                Err(e) => {
                    self.catch_up = None;
                    let error = match e {
                        catchup::CrossError::Transform(error) => {
                            UpgradeError::Transform { running, error: Box::new(error) }
                        }
                        catchup::CrossError::Import(error) => {
                            UpgradeError::Import { running, new, error: Box::new(error) }
                        }
                        catchup::CrossError::TooLarge(bytes) => {
                            UpgradeError::TooLarge { running, bytes, limit: self.limits.max_state }
                        }
                        catchup::CrossError::Replica(_) => unreachable!("matched above"),
                    };
                    return Some(
                        self.ended(Swap::RolledBack { error, retired: Box::new(instance) }),
                    );
                }
            };
            catch_up.import = import + transform;
            catch_up.transform = transform;
            catch_up.report.memory = catch_up
                .memory_before
                .zip(memory)
                .map(|(before, after)| upgrade::MemoryChange { before, after });
            let AtExport { conns, timers, mono, book } = &catch_up.at_export;
            let (candidate, candidate_timers) = match took {
                catchup::Took::Snapshot(snapshot) => {
                    catch_up.report.sections = upgrade::sections(&snapshot);
                    let chunks = Chunks::new(self.limits.checkpoint_dir.as_deref());
                    let mut candidate = self.live.candidate(
                        Arc::clone(&fallback.version),
                        instance,
                        fallback.info.clone(),
                        (chunks, snapshot, conns.clone()),
                        timers.clone(),
                        *mono,
                    );
                    candidate.believe_listeners(book.clone());
                    (candidate, TimerQueue::from_armed(timers))
                }
                // It takes the live journal over at the commit. Its timers are what its replay
                // left it believing, as after a rebuild.
                catchup::Took::Journal((timers, _)) => {
                    (self.live.candidate_replaying(instance), timers)
                }
            };
            let mut canary = Canary::catch_up(candidate, candidate_timers, *mono);
            grant_windows_if_unasked(&self.live, &self.limits, &mut canary);
            catch_up.phase = Phase::Replaying { canary: Box::new(canary), fallback };
            catch_up.last_step_end = Instant::now();
            debug!(
                import_us = catch_up.import.as_micros() as u64,
                kept = catch_up.backlog.len(),
                "{new} imported the state off the loop; running the events since the export"
            );
        }
        if let Some(why) = catch_up.doomed() {
            return self.abandon_catch_up(why);
        }
        let started = Instant::now();
        let budget = catch_up.step_budget(started);
        let Phase::Replaying { canary, .. } = &mut catch_up.phase else {
            unreachable!("the import was taken in above")
        };
        while let Some(kept) = catch_up.backlog.pop() {
            // The old version's output first, as when the canary runs beside it.
            for output in &kept.output {
                match output {
                    catchup::OldOutput::Sent(conn, data) => canary.old_sent(*conn, data),
                    catchup::OldOutput::Closed(conn) => canary.old_closed(*conn),
                }
            }
            self.event_clock.begin(kept.at);
            match kept.call {
                // The new instance's own timers, due by the time the old version's fired.
                catchup::KeptCall::Timer(_) => canary.fire_due(kept.at),
                ref call => canary.feed(kept.at, call.as_call()),
            }
            catch_up.events += 1;
            if started.elapsed() >= budget {
                break;
            }
        }
        let took = started.elapsed();
        catch_up.steps += 1;
        catch_up.longest_step = catch_up.longest_step.max(took);
        catch_up.last_step_end = Instant::now();
        if catch_up.backlog.is_empty() {
            canary.end_window();
        }
        match canary.verdict()? {
            Ok(()) => Some(self.commit_catch_up()),
            Err(stop) => self.abandon_catch_up(Canary::describe_stop(&stop)),
        }
    }

    /// Tells `tasuki status` where the catch-up under way stands (nothing when none is).
    fn note_catch_up(&self) {
        let progress = self.catch_up.as_ref().map(|c| CatchUpProgress {
            to: c.report.to.clone(),
            importing: matches!(c.phase, Phase::Importing(_)),
            kept: c.backlog.len() as u64,
            run: c.events,
            compaction: self.compacting,
        });
        self.shared.note_catch_up(progress);
    }

    /// The new instance has run every event since the export, with the old version's output:
    /// it holds the live state, and takes over.
    fn commit_catch_up(&mut self) -> Swapped {
        let committing = Instant::now();
        let catch_up = self.catch_up.take().expect("a catch-up under way");
        let (mut report, canary, _) = catch_up.finish(None);
        let (_, candidate, timers) = canary.commit();
        let mut retired = self.live.adopt(candidate);
        if matches!(report.source, StateSource::Checkpoint { .. }) {
            // The same release ran every event the old instance journaled: the journal is
            // the new instance's recovery state as it stands.
            self.live.take_journal(&mut retired);
        }
        self.timers = timers;
        if let Some(args) = self.next_args.take() {
            self.args = args;
        }
        let book = self.live.recovery().listener_book().clone();
        self.close_unknown_listeners(&book);
        // A long catch-up may have overflowed the new instance's journal: its first checkpoint
        // as the live version turns recovery back on.
        self.checkpoint_now |= !self.live.recovery().is_on();
        report.pause += committing.elapsed();
        self.shared.note_precopy(None);
        self.shared.note_catch_up(None);
        if let Some(memory) = &report.memory {
            self.shared.note_fresh_memory(memory.after.linear_memory);
        }
        info!(
            from = %report.from, to = %report.to, pause_us = report.pause.as_micros() as u64,
            events = report.catch_up.as_ref().map_or(0, |c| c.events),
            "caught up; upgraded"
        );
        if std::mem::take(&mut self.compacting) {
            self.shared.record_compaction(Ok(&report));
        } else {
            self.shared.record_commit(&report, self.live.info().clone());
        }
        self.publish_recovery();
        Swapped { outcome: Ok(*report), retired: Box::new(retired) }
    }

    /// Gives the catch-up up, saying `why`: a fresh instance of the new version takes the
    /// state whole in a pause, now.
    fn abandon_catch_up(&mut self, why: String) -> Option<Swapped> {
        let catch_up = self.catch_up.take()?;
        warn!("catch-up of {} abandoned: {why}; moving the state in a pause", catch_up.report.to);
        self.shared.note_catch_up(None);
        let (report, canary, fallback) = catch_up.finish(Some(why));
        drop(canary);
        // The fresh instance starts (its `init` runs) on the loop: the pause starts here.
        let paused = Instant::now();
        match fallback.respawn() {
            Ok(next) => {
                self.catch_up_abandoned = report.catch_up;
                self.pause_and_swap_since(Underway { next, precopy: None }, paused)
            }
            Err(error) => Some(self.ended(Swap::RolledBack { error, retired: Box::new(()) })),
        }
    }

    /// [`Self::abandon_catch_up`] before the new instance took any state: its replica failed
    /// ([`catchup::CrossError::Replica`]). `instance`, the new version's, ran only `init`: it
    /// takes the live instance's export in a pause.
    fn abandon_before_import(
        &mut self,
        fallback: Fallback,
        instance: crate::instance::Instance,
        why: String,
    ) -> Option<Swapped> {
        let catch_up = self.catch_up.take()?;
        warn!("catch-up of {} abandoned: {why}; moving the state in a pause", catch_up.report.to);
        self.shared.note_catch_up(None);
        let paused = Instant::now();
        self.catch_up_abandoned = catch_up.abandoned_before_import(why).catch_up;
        self.pause_and_swap_since(
            Underway { next: fallback.resume(instance), precopy: None },
            paused,
        )
    }

    /// Tells `tasuki status` how far the pre-copy under way is.
    fn note_precopy(&self) {
        let progress = self.upgrading.as_ref().and_then(|u| {
            let session = u.precopy.as_ref()?;
            let (steps, bytes, owed) = session.progress();
            Some(PrecopyProgress {
                to: AppVersion::from(&u.next.info),
                steps,
                bytes,
                owed,
                compaction: self.compacting,
                throttled_rounds: session.throttled(),
            })
        });
        self.shared.note_precopy(progress);
    }

    /// The end of an upgrade: the new instance's effects applied and the commit recorded, or
    /// the rollback recorded (rebuilding the old instance if it trapped while exporting).
    fn ended(&mut self, swap: Swap) -> Swapped {
        self.ended_paused(swap, None)
    }

    /// [`Self::ended`] for an upgrade that paused the loop at `paused`: its report's pause runs
    /// to here, after the queued output was flushed, and status shows the same figure.
    fn ended_paused(&mut self, swap: Swap, paused: Option<Instant>) -> Swapped {
        self.shared.note_precopy(None);
        self.shared.note_catch_up(None);
        let compacting = std::mem::take(&mut self.compacting);
        let next_args = self.next_args.take();
        match swap {
            Swap::Committed { mut report, retired, believed } => {
                if let Some(abandoned) = self.catch_up_abandoned.take() {
                    report.catch_up = Some(abandoned);
                }
                // From here on the new version's arguments: a rebuild after a trap starts it
                // with them.
                if let Some(args) = next_args {
                    self.args = args;
                }
                if let Some((timers, book)) = believed {
                    // After --from-checkpoint: what the new instance believes armed and open.
                    self.timers = timers;
                    self.close_unknown_listeners(&book);
                }
                self.apply_effects();
                self.answer_listens();
                self.reap_broken();
                if let Some(paused) = paused {
                    report.pause = paused.elapsed();
                }
                info!(
                    from = %report.from, to = %report.to, pause_us = report.pause.as_micros() as u64,
                    state_bytes = report.state_bytes, connections = report.connections, "upgraded"
                );
                if let Some(memory) = &report.memory {
                    self.shared.note_fresh_memory(memory.after.linear_memory);
                }
                if report.compaction.is_some() {
                    self.shared.record_compaction(Ok(&report));
                } else {
                    self.shared.record_commit(&report, self.live.info().clone());
                }
                self.publish_recovery();
                Swapped { outcome: Ok(*report), retired }
            }
            Swap::Canary { .. } => unreachable!("pause_and_swap starts a canary, never ends one"),
            Swap::RolledBack { mut error, retired } => {
                self.catch_up_abandoned = None;
                // An export that trapped leaves the old instance unusable: rebuild it now.
                if let UpgradeError::Export { error: cause, rebuilt, .. } = &mut error {
                    *rebuilt = self.export_failed(&cause.clone());
                }
                warn!("{error}");
                if compacting {
                    self.shared.record_compaction(Err(error.to_string()));
                } else {
                    self.shared.record_upgrade(Err(error.to_string()));
                }
                Swapped { outcome: Err(error), retired }
            }
        }
    }

    /// Tells `tasuki status` where recovery stands.
    fn publish_recovery(&self) {
        let replica_off =
            self.no_replica_for.as_ref().filter(|(g, _)| *g == self.live.generation());
        let replica_off = replica_off.map(|(_, why)| why.clone());
        self.shared.note_recovery_state(self.live.recovery(), replica_off);
    }

    /// Rebuilds the live instance from its checkpoint and journal now, between events, as if it
    /// had trapped with no event in flight: nothing may be lost. The simulator's
    /// `--rebuild-at every` does this at every boundary to check the invariant of
    /// [`crate::recovery`] with the app's own traces.
    pub(crate) fn rebuild_now(&mut self) {
        let cause = format!("{} rebuilt on request", self.live.app());
        self.recover(Fault { cause, skip: None, closed: Vec::new(), event_lost: false });
    }

    /// The simulator's `fault` step: the next event traps.
    pub(crate) fn fault_next_event(&mut self) {
        self.live.fault_next_event();
    }
}

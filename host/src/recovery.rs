//! Recovery state: a checkpoint of the live instance's state plus a journal of every event
//! since, so that an instance that traps is rebuilt to the state it had just before the event
//! that trapped.
//!
//! A trap (a guest panic, a missed deadline, an allocation past the memory cap) leaves the
//! instance unusable: wasmtime refuses to enter it again, and its memory may be half-updated.
//! Between two events, though, an instance's state is a pure function of its last checkpoint and
//! the events since, and every event goes through the dispatcher. So the dispatcher journals each
//! event that completed — its kind, connection, bytes and the time the guest saw — and on a trap
//! starts a fresh instance of the same version, imports the checkpoint and replays the journal
//! with output discarded (the clients already have their replies).
//!
//! **Invariant** (owned by [`crate::live::Live`]): while [`Recovery::is_on`], importing the
//! checkpoint into a fresh instance of the live version (or running its `init` when there is no
//! checkpoint) and replaying the journal gives the live instance's state. Every way the live
//! version is replaced — start, restore, commit, rebuild, fresh restart — builds its recovery
//! state from what the new instance actually holds: the snapshot it imported, after transformers.
//!
//! A replay that traps at an event does not give up: the event's connection is the culprit (its
//! input is what the guest cannot hold), its events from there on are dropped from the journal,
//! and the replay starts again from the checkpoint, up to [`MAX_REPLAY_ATTEMPTS`] times. Only
//! that connection loses anything; the dispatcher closes it.
//!
//! Checkpoints come for free at every upgrade, restore and `tasuki snapshot`, and otherwise are
//! taken when the journal outgrows the last checkpoint (and [`CHECKPOINT_MIN`]), and always
//! before the journal reaches half its limit: at most about one export per byte of input, and a
//! state larger than the journal limit is still recoverable (at the cost of more exports, said
//! in the log). A checkpoint built off the loop — by a replica rebuilt from a [`JournalCopy`],
//! for an app that cannot pre-copy — stands for the state at the boundary the copy was taken
//! at ([`JournalMark`]): [`Recovery::advance_checkpoint`] lets go of the events before it and
//! keeps those since, at the same positions in the journal's file. If exports keep failing, the journal reaches its limit and recovery is off until
//! the next checkpoint succeeds; `tasuki status` says so, and why.

use crate::bindings::{AppInfo, ConnInfo, Snapshot};
use crate::clock::EventClock;
use crate::instance::{CallError, Instance, snapshot_bytes};
use crate::journal::{ENTRY_MAX, Events};
pub(crate) use crate::journal::{Event, Stamp};
use crate::limits::CHECKPOINT_MIN;
use crate::listeners::{ListenError, ListenerBook};
use crate::spill::{self, Chunks, IMPORT_BATCH, Log, LogBytes, LogCopy};
use crate::store::Effect;
use crate::timers::TimerQueue;
use crate::version::Version;
use rustc_hash::FxHashMap;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Rebuilds tried before recovery gives up: each finds one more culprit (a connection or a
/// timer whose replay traps). Eight covers any realistic set of hostile clients at once; a
/// journal that traps more often than that is a guest that cannot run its own history.
pub const MAX_REPLAY_ATTEMPTS: usize = 8;

/// The state an instance can be rebuilt from.
#[derive(Debug, Clone)]
pub(crate) struct Checkpoint {
    /// Chunks pre-copied ahead of `snapshot` (none for a full export): imported first. In a
    /// file, not the heap (see [`crate::spill`]).
    pub(crate) chunks: Chunks,
    /// Shared, so that a copy of the recovery state ([`Recovery::copy`]) copies no state.
    pub(crate) snapshot: Arc<Snapshot>,
    /// Connections open when it was taken.
    pub(crate) live: Vec<ConnInfo>,
    /// When it was taken, ms since the Unix epoch.
    pub(crate) at_unix_ms: u64,
}

impl Checkpoint {
    /// Bytes of state it holds, chunks and snapshot.
    pub(crate) fn bytes(&self) -> u64 {
        self.chunks.bytes() + snapshot_bytes(&self.snapshot)
    }

    /// Bytes of it the host holds in its heap: the snapshot, and the chunks not in the file.
    pub(crate) fn heap_bytes(&self) -> u64 {
        self.chunks.heap_bytes() + snapshot_bytes(&self.snapshot)
    }

    /// Imports it into `instance`: the chunks read back from their file a batch at a time,
    /// then the snapshot.
    pub(crate) fn import_into(&self, instance: &mut Instance) -> Result<(), CallError> {
        self.chunks.read_batches(IMPORT_BATCH, |batch| instance.import_chunks(&batch)).map_err(
            |e| match e {
                Ok(io) => CallError::Refused(format!(
                    "the checkpoint's chunks cannot be read back from their file: {io}"
                )),
                Err(call) => call,
            },
        )?;
        instance.import_state(&self.snapshot, &self.live)
    }
}

/// Why a journal cannot rebuild the live state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryOff {
    /// `--journal 0`.
    Disabled,
    /// The journal passed its limit because `failures` checkpoints in a row failed; the next
    /// successful checkpoint turns recovery back on.
    Overflowed { limit: usize, failures: u32 },
}

impl std::fmt::Display for RecoveryOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Disabled => write!(f, "off (--journal 0): a trap restarts the app empty"),
            Self::Overflowed { limit, failures } => write!(
                f,
                "off: the journal passed its limit of {limit} bytes because checkpoints failed \
                 ({failures} consecutive checkpoints failed); a trap now restarts the app empty, \
                 until a checkpoint succeeds"
            ),
        }
    }
}

/// The last checkpoint and every event since.
#[derive(Debug)]
pub(crate) struct Recovery {
    /// `None`: the state `init` builds (a fresh start).
    checkpoint: Option<Checkpoint>,
    /// The host's armed timers (id, deadline) when the checkpoint was taken — before the
    /// import's own requests, for a checkpoint that was imported — and the monotonic time then.
    /// A rebuild starts its timer queue from these.
    base_timers: Vec<(u64, u64)>,
    base_mono: u64,
    /// What the instance believed about its run-time listeners when the checkpoint was taken,
    /// and what it believes now (see [`ListenerBook`]).
    base_listeners: ListenerBook,
    listeners: ListenerBook,
    /// Each event with when it ran.
    events: Events,
    /// The bytes of every `Data` event, back to back: in a file but for the last MiB (see
    /// [`crate::spill`]).
    data: Log,
    /// Where the journal's file (and the checkpoints' chunks) go; `None`: the heap.
    dir: Option<PathBuf>,
    /// Bytes of events (counted as [`Recovery::len`]) at which the next checkpoint is due.
    checkpoint_at: usize,
    /// Consecutive checkpoints that failed.
    failures: u32,
    /// Bytes beyond which the journal is dropped; 0 means recovery is off.
    limit: usize,
    /// Bytes of input seen since the last checkpoint, kept counting while off, so checkpoints
    /// are retried.
    since_checkpoint: usize,
    off: Option<RecoveryOff>,
    /// Per connection, the input received since its last reply: input the guest holds without
    /// having answered. Kept across checkpoints, since a half-received request's bytes may sit
    /// in the checkpoint rather than the journal.
    unanswered: FxHashMap<u64, Unanswered>,
    /// Changes whenever the checkpoint is replaced or events are dropped from the journal
    /// (unique across every recovery state of the process): a [`JournalMark`] taken before
    /// no longer says where the journal stands.
    generation: u64,
}

/// A new [`Recovery::generation`].
fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Where the journal stood when a copy of the recovery state was taken ([`JournalCopy::mark`]):
/// a checkpoint built from that copy replaces the checkpoint and the events up to here
/// ([`Recovery::advance_checkpoint`]), if nothing else replaced them meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JournalMark {
    generation: u64,
    /// Events journaled then.
    events: usize,
    /// The journal's bytes' end then ([`Log::end`]).
    data_end: usize,
}

/// What a checkpoint is taken with besides the state: the connections open, the host's armed
/// timers (id, deadline) and monotonic time (ns), what the app believed about its listeners,
/// and the wall-clock time (ms since the Unix epoch), all at the boundary where the state was
/// taken.
#[derive(Debug, Clone)]
pub(crate) struct CheckpointBase {
    pub(crate) at_unix_ms: u64,
    pub(crate) live: Vec<ConnInfo>,
    pub(crate) timers: Vec<(u64, u64)>,
    pub(crate) mono: u64,
    pub(crate) listeners: ListenerBook,
}

/// A connection's input since its last reply.
#[derive(Debug, Clone, Copy)]
struct Unanswered {
    /// Journal index of its first event (0 when it began before the checkpoint).
    from: usize,
    bytes: usize,
}

/// Bytes an event's index entry is counted as while recovery is off, when nothing is kept:
/// what a `Data` event's encoding takes, about (see [`crate::journal`]).
const OFF_EVENT_BYTES: usize = 12;

/// What a rebuild did, for the dispatcher, the log and `tasuki status`.
#[derive(Debug, Default)]
pub(crate) struct RebuildReport {
    /// The timers the rebuilt instance believes armed: the checkpoint's, what its import
    /// (`resumed`) asked for, then every replayed event's requests, each at the time it ran.
    /// Timers whose firing was left out stay armed. The host's queue from now on.
    pub(crate) timers: TimerQueue,
    /// What the rebuilt instance believes about its listeners: the host closes the ones it
    /// does not believe open.
    pub(crate) listeners: ListenerBook,
    /// Connections whose events from some point on were dropped because their replay trapped
    /// (or because they were the culprit's unanswered input): the dispatcher closes them.
    pub(crate) culprits: Vec<u64>,
    /// Timers whose firing was dropped because it trapped on replay: the rebuilt instance has
    /// not seen them fire, so the host re-arms them.
    pub(crate) refire: Vec<u64>,
    /// Events replayed.
    pub(crate) replayed: usize,
    /// Events dropped from the journal.
    pub(crate) dropped: usize,
    pub(crate) took: Duration,
}

/// Why a rebuild failed: the checkpoint itself cannot be brought back.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("recovery is {0}")]
    Off(RecoveryOff),
    #[error("a fresh instance failed to start: {0}")]
    Start(CallError),
    #[error("a fresh instance failed to import the checkpoint: {0}")]
    Import(CallError),
    #[error("the journal cannot be read back from its file: {0}")]
    Journal(String),
    #[error("the replay trapped {attempts} times, each at another event; last: {last}")]
    Replay { attempts: usize, last: CallError },
}

/// An event to leave out of a replay: the culprit's events from a journal position on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Skip {
    pub(crate) conn: u64,
    /// Journal index of the first event of `conn` to leave out.
    pub(crate) from: usize,
}

impl Recovery {
    /// Recovery from the app's `init` state: nothing journaled yet. The journal's bytes go to
    /// a file in `dir` (`None`: the heap).
    pub(crate) fn fresh(limit: usize, dir: Option<&Path>) -> Self {
        Self {
            checkpoint: None,
            base_timers: Vec::new(),
            base_mono: 0,
            base_listeners: ListenerBook::default(),
            listeners: ListenerBook::default(),
            events: Events::default(),
            data: Log::new(dir),
            dir: dir.map(Path::to_path_buf),
            checkpoint_at: CHECKPOINT_MIN.min(limit / 2).max(1),
            failures: 0,
            limit,
            since_checkpoint: 0,
            off: (limit == 0).then_some(RecoveryOff::Disabled),
            unanswered: FxHashMap::default(),
            generation: next_generation(),
        }
    }

    /// Recovery from `snapshot`, which the live instance has just imported with `live` open,
    /// at monotonic time `mono`, when the host's timers were `timers`.
    pub(crate) fn from_snapshot(
        (limit, dir): (usize, Option<&Path>),
        (chunks, snapshot): (Chunks, Snapshot),
        live: Vec<ConnInfo>,
        timers: Vec<(u64, u64)>,
        mono: u64,
    ) -> Self {
        let mut recovery = Self::fresh(limit, dir);
        recovery.set_checkpoint((chunks, snapshot), live, timers, mono);
        recovery
    }

    /// A fresh start's timers begin when the dispatcher does.
    pub(crate) fn anchor(&mut self, mono: u64) {
        if self.events.is_empty() && self.base_timers.is_empty() {
            self.base_mono = mono;
        }
    }

    /// The same journal over another checkpoint: after `--from-checkpoint`, the new version
    /// imported the (transformed) checkpoint and replayed these very events.
    pub(crate) fn with_checkpoint_snapshot(mut self, snapshot: Option<(Chunks, Snapshot)>) -> Self {
        match (&mut self.checkpoint, snapshot) {
            (Some(checkpoint), Some((chunks, snapshot))) => {
                checkpoint.chunks = chunks;
                checkpoint.snapshot = Arc::new(snapshot);
            }
            (checkpoint, snapshot) => debug_assert_eq!(checkpoint.is_some(), snapshot.is_some()),
        }
        self.generation = next_generation();
        self
    }

    fn push(&mut self, at: Stamp, event: Event, bytes: usize) {
        if self.off.is_some() {
            self.since_checkpoint += bytes + OFF_EVENT_BYTES;
            return;
        }
        let entry = self.events.push((at, event));
        self.since_checkpoint += bytes + entry;
        if self.len() > self.limit {
            let off = RecoveryOff::Overflowed { limit: self.limit, failures: self.failures };
            tracing::error!("recovery is {off}");
            spill::drop_later(std::mem::take(&mut self.events));
            self.data.clear();
            self.off = Some(off);
            self.generation = next_generation();
        }
    }

    pub(crate) fn connect(&mut self, at: Stamp, conn: &ConnInfo) {
        self.push(at, Event::Connect(conn.clone()), 0);
    }

    pub(crate) fn data(&mut self, at: Stamp, conn: u64, bytes: &[u8]) {
        let from = self.events.len();
        self.unanswered.entry(conn).or_insert(Unanswered { from, bytes: 0 }).bytes += bytes.len();
        if self.off.is_some() {
            self.since_checkpoint += bytes.len() + OFF_EVENT_BYTES;
            return;
        }
        let range = self.data.append(bytes);
        self.push(at, Event::Data(conn, range), bytes.len());
    }

    pub(crate) fn disconnect(&mut self, at: Stamp, conn: u64) {
        self.unanswered.remove(&conn);
        self.push(at, Event::Disconnect(conn), 0);
    }

    pub(crate) fn timer(&mut self, at: Stamp, id: u64) {
        self.push(at, Event::Timer(id), 0);
    }

    pub(crate) fn writable(&mut self, at: Stamp, conn: u64, window: u64) {
        self.push(at, Event::Writable(conn, window), 0);
    }

    pub(crate) fn listening(&mut self, at: Stamp, id: u64, result: &Result<String, ListenError>) {
        self.listeners.answered(id, result);
        self.push(at, Event::Listening(id, result.clone()), 0);
    }

    pub(crate) fn accept(&mut self, at: Stamp, conn: &ConnInfo, listener: u64) {
        self.push(at, Event::Accept(Box::new(conn.clone()), listener), 0);
    }

    pub(crate) fn listeners_lost(&mut self, at: Stamp) {
        self.listeners.lost();
        self.push(at, Event::ListenersLost, 0);
    }

    /// The live instance asked for `effect` (a listener's opening or closing is noted).
    pub(crate) fn requested(&mut self, effect: &Effect) {
        self.listeners.apply(effect);
    }

    /// What the live instance believes about its listeners.
    pub(crate) fn listener_book(&self) -> &ListenerBook {
        &self.listeners
    }

    /// Takes over what an instance that exported the state imported here believed about its
    /// listeners (an upgrade's new instance believes what the old one did), as of the
    /// checkpoint.
    pub(crate) fn inherit_listeners(&mut self, book: ListenerBook) {
        self.base_listeners = book.clone();
        self.listeners = book;
    }

    /// `conn` was sent a reply: what it sent so far has been answered.
    pub(crate) fn replied(&mut self, conn: u64) {
        self.unanswered.remove(&conn);
    }

    /// `conn`'s unanswered events: its input after its last reply.
    pub(crate) fn unanswered(&self, conn: u64) -> Skip {
        let from = self.unanswered.get(&conn).map_or(self.events.len(), |u| u.from);
        Skip { conn, from }
    }

    /// The connection holding the most unanswered input (bytes received since its last reply,
    /// in the journal or before it), and how many bytes: when an export runs out of memory,
    /// the likeliest cause is a half-received request.
    pub(crate) fn heaviest_unanswered(&self) -> Option<(Skip, usize)> {
        self.unanswered
            .iter()
            .max_by_key(|&(&conn, u)| (u.bytes, std::cmp::Reverse(conn)))
            .map(|(&conn, u)| (Skip { conn, from: u.from }, u.bytes))
    }

    /// Bytes the journal holds: the events' bytes and their index (events let go of at the
    /// front, after a checkpoint advanced to a mark, count until their index segment goes).
    pub(crate) fn len(&self) -> usize {
        self.data.len() + self.events.held()
    }

    /// Events journaled since the checkpoint.
    pub(crate) fn events(&self) -> usize {
        self.events.len()
    }

    /// The journal's bound, in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// True when a rebuild gives the live state.
    pub(crate) fn is_on(&self) -> bool {
        self.off.is_none()
    }

    /// Why recovery is off, if it is.
    pub(crate) fn off(&self) -> Option<&RecoveryOff> {
        self.off.as_ref()
    }

    pub(crate) fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }

    /// True when a checkpoint is due: the journal outgrew the last checkpoint (at least
    /// [`CHECKPOINT_MIN`], at most half the limit), or recovery is off and as much input again
    /// arrived since the last attempt.
    pub(crate) fn wants_checkpoint(&self) -> bool {
        self.limit > 0 && self.since_checkpoint >= self.checkpoint_at
    }

    /// Starts over from `snapshot`, taken (or imported) with `live` open, at monotonic time
    /// `mono`, when the host's armed timers were `timers`.
    pub(crate) fn set_checkpoint(
        &mut self,
        state: (Chunks, Snapshot),
        live: Vec<ConnInfo>,
        timers: Vec<(u64, u64)>,
        mono: u64,
    ) {
        let (listeners, at_unix_ms) = (self.listeners.clone(), crate::clock::now_unix_ms());
        self.replace_checkpoint(
            state,
            CheckpointBase { at_unix_ms, live, timers, mono, listeners },
        );
        // The journal starts over; what it grew to (up to the state's size) goes back.
        spill::drop_later(std::mem::take(&mut self.events));
        self.data.clear();
        // Unanswered input from before now is in the checkpoint: none of it can be left out.
        for unanswered in self.unanswered.values_mut() {
            unanswered.from = 0;
        }
        self.since_checkpoint = 0;
        if self.limit > 0 {
            self.off = None;
        }
    }

    /// Makes `state`, the live state as of `mark` (exported off the loop by a replica rebuilt
    /// from the copy `mark` came with), the checkpoint: the events journaled before `mark`
    /// are let go of, those since stay (at the same positions in the journal's file, whose
    /// front is freed). False, and nothing changed, if the checkpoint was replaced or events
    /// were dropped since the mark (a rebuild, an upgrade, an overflow): then the state no
    /// longer meets the journal.
    pub(crate) fn advance_checkpoint(
        &mut self,
        mark: JournalMark,
        state: (Chunks, Snapshot),
        base: CheckpointBase,
    ) -> bool {
        if mark.generation != self.generation || self.off.is_some() {
            return false;
        }
        self.replace_checkpoint(state, base);
        self.events.drop_front(mark.events);
        self.data.drop_front(mark.data_end);
        // Input before the mark is in the checkpoint; indices move down with the journal.
        for unanswered in self.unanswered.values_mut() {
            unanswered.from = unanswered.from.saturating_sub(mark.events);
        }
        // The next is due after as much input again from now, not from the mark: counted from
        // the mark, input that outran a replica would start the next at once, and replicas
        // would follow one another for as long as it does.
        self.since_checkpoint = 0;
        true
    }

    /// The part of [`Self::set_checkpoint`] and [`Self::advance_checkpoint`] that replaces
    /// the checkpoint and the base a rebuild starts from.
    fn replace_checkpoint(&mut self, (chunks, snapshot): (Chunks, Snapshot), base: CheckpointBase) {
        let bytes = (chunks.bytes() + snapshot_bytes(&snapshot)) as usize;
        let half = (self.limit / 2).max(1);
        if bytes > self.limit && self.limit > 0 {
            tracing::warn!(
                "the state ({bytes} bytes) is larger than the recovery journal's limit ({} bytes, \
                 --journal): a checkpoint exports it every {half} bytes of input; raise --journal \
                 to checkpoint less often",
                self.limit
            );
        }
        self.checkpoint_at = bytes.max(CHECKPOINT_MIN).min(half);
        let snapshot = Arc::new(snapshot);
        let checkpoint =
            Checkpoint { chunks, snapshot, live: base.live, at_unix_ms: base.at_unix_ms };
        // The one it replaces, and the journal's index, are freed off the event loop: a state's
        // worth of file and heap takes milliseconds to give back (see `spill::drop_later`).
        if let Some(replaced) = self.checkpoint.replace(checkpoint) {
            spill::drop_later(replaced);
        }
        self.base_timers = base.timers;
        self.base_mono = base.mono;
        self.base_listeners = base.listeners;
        self.failures = 0;
        self.generation = next_generation();
    }

    /// An export for a checkpoint failed: try again after as much input again (doubling with
    /// each failure), but always before the journal overflows.
    pub(crate) fn checkpoint_failed(&mut self) {
        self.failures += 1;
        let half = (self.limit / 2).max(1);
        let gap = CHECKPOINT_MIN.min(half).saturating_mul(1 << self.failures.min(16));
        let next = self.since_checkpoint.saturating_add(gap);
        self.checkpoint_at = if self.off.is_none() {
            next.min(self.limit.saturating_sub(ENTRY_MAX).max(self.since_checkpoint + 1))
        } else {
            next
        };
    }

    /// Brings a fresh instance of `version` to the journal's state — the checkpoint, then every
    /// event since, leaving out `skip`'s events and every culprit found on the way — and drops
    /// what was left out from the journal, so the invariant holds for the instance returned.
    pub(crate) fn rebuild(
        &mut self,
        version: &Version,
        args: &[String],
        clock: &EventClock,
        skip: Option<Skip>,
    ) -> Result<(Instance, RebuildReport), RebuildError> {
        if let Some(off) = &self.off {
            return Err(RebuildError::Off(off.clone()));
        }
        let started = Instant::now();
        let data = self.data.read().map_err(|e| RebuildError::Journal(e.to_string()))?;
        let mut skips: HashMap<u64, usize> = skip.into_iter().map(|s| (s.conn, s.from)).collect();
        // Single events left out: a connect, disconnect or timer whose replay trapped.
        let mut skipped: HashSet<usize> = HashSet::new();
        let mut last = None;
        for _ in 0..MAX_REPLAY_ATTEMPTS {
            let (mut instance, _) = start(version, args).map_err(RebuildError::Start)?;
            if let Some(checkpoint) = &self.checkpoint {
                // What `init` asked for was done and undone long before the checkpoint; the
                // checkpoint's timers and what the import asks for are what count.
                instance.discard_effects();
                if let Some(at) = self.events.first().map(|(at, _)| at.wall) {
                    clock.freeze_at(at);
                }
                checkpoint.import_into(&mut instance).map_err(RebuildError::Import)?;
            }
            let mut believed = self.believed_after_import(&mut instance);
            match self.replay_into(&mut instance, clock, (&skips, &skipped), &data, &mut believed) {
                Ok(replayed) => {
                    let mut refire: Vec<u64> = skipped
                        .iter()
                        .filter_map(|&i| match self.events.get(i).1 {
                            Event::Timer(id) => Some(id),
                            _ => None,
                        })
                        .collect();
                    refire.sort_unstable();
                    refire.dedup();
                    let before = self.events.len();
                    if !(skips.is_empty() && skipped.is_empty()) {
                        self.drop_events(&skips, &skipped, &data);
                        self.generation = next_generation();
                    }
                    let (timers, listeners) = believed;
                    self.listeners = listeners.clone();
                    let mut culprits: Vec<u64> = skips.keys().copied().collect();
                    culprits.sort_unstable();
                    return Ok((
                        instance,
                        RebuildReport {
                            timers,
                            listeners,
                            culprits,
                            refire,
                            replayed,
                            dropped: before - self.events.len(),
                            took: started.elapsed(),
                        },
                    ));
                }
                Err((index, error)) => {
                    match self.events.get(index).1 {
                        Event::Data(conn, _) | Event::Writable(conn, _) => {
                            skips.entry(conn).or_insert(index);
                        }
                        Event::Connect(ConnInfo { id: conn, .. }) | Event::Disconnect(conn) => {
                            skips.entry(conn).or_insert(index);
                            skipped.insert(index);
                        }
                        Event::Accept(ref info, _) => {
                            skips.entry(info.id).or_insert(index);
                            skipped.insert(index);
                        }
                        Event::Timer(_) | Event::Listening(..) | Event::ListenersLost => {
                            skipped.insert(index);
                        }
                    }
                    tracing::warn!(
                        "replaying event {index} of {} trapped ({error}); replaying again without \
                         it",
                        self.events.len()
                    );
                    last = Some(error);
                }
            }
        }
        Err(RebuildError::Replay {
            attempts: MAX_REPLAY_ATTEMPTS,
            last: last.unwrap_or(CallError::Refused("no attempt".into())),
        })
    }

    /// The timers `instance`, which has just imported the checkpoint (or run `init`), believes
    /// armed — the host's at the checkpoint, then what the import asked for, at that time —
    /// and what it believes about its listeners.
    fn believed_after_import(&self, instance: &mut Instance) -> Believed {
        let base = (&self.base_timers[..], self.base_mono, self.base_listeners.clone());
        believed_after_import(instance, base)
    }

    /// Feeds every journaled event not left out to `instance` (see [`replay_events`]), each
    /// reading the clock and randomness it first read. On a trap, the journal index of the
    /// event that trapped.
    fn replay_into(
        &self,
        instance: &mut Instance,
        clock: &EventClock,
        leave_out: (&HashMap<u64, usize>, &HashSet<usize>),
        data: &LogBytes,
        believed: &mut Believed,
    ) -> Result<usize, (usize, CallError)> {
        let begin = |at: Stamp| clock.begin(at);
        replay_events(&self.events, data, instance, begin, leave_out, believed)
    }

    /// Removes the events a rebuild left out, and their bytes (`data`, the journal's bytes
    /// read back).
    fn drop_events(
        &mut self,
        skips: &HashMap<u64, usize>,
        skipped: &HashSet<usize>,
        data: &LogBytes,
    ) {
        // kept_before[i]: how many events before old index i stay, to move `unanswered` along.
        let mut kept_before = Vec::with_capacity(self.events.len() + 1);
        let mut kept = 0;
        for (index, (_, event)) in self.events.iter().enumerate() {
            kept_before.push(kept);
            if !left_out(index, &event, skips, skipped) {
                kept += 1;
            }
        }
        kept_before.push(kept);
        for unanswered in self.unanswered.values_mut() {
            unanswered.from = kept_before[unanswered.from.min(kept_before.len() - 1)];
        }
        // The bytes of the dropped events go too: a culprit's input can be most of the journal.
        let mut events = Events::default();
        let mut kept = Log::new(self.dir.as_deref());
        for (index, (at, mut event)) in self.events.iter().enumerate() {
            if left_out(index, &event, skips, skipped) {
                continue;
            }
            if let Event::Data(_, range) = &mut event {
                *range = kept.append(data.get(range.clone()));
            }
            events.push((at, event));
        }
        self.events = events;
        self.data = kept;
    }

    /// Replays the journal into `instance`, which has just imported the checkpoint: the
    /// `--from-checkpoint` upgrade. Returns the timers it believes armed and what it believes
    /// about its listeners, built as a rebuild builds them; what it sent is discarded, since the
    /// clients already have it.
    pub(crate) fn replay(
        &self,
        instance: &mut Instance,
        clock: &EventClock,
    ) -> Result<Believed, CallError> {
        let mut believed = self.believed_after_import(instance);
        let data = self.data.read().map_err(|e| {
            CallError::Refused(format!("the journal cannot be read back from its file: {e}"))
        })?;
        let none = (&HashMap::new(), &HashSet::new());
        self.replay_into(instance, clock, none, &data, &mut believed).map_err(|(_, e)| e)?;
        Ok(believed)
    }
}

/// The recovery state at one boundary, owned: what builds the live state again on another
/// thread, while the journal goes on taking events (a same-release catch-up, see
/// [`crate::catchup`]). The checkpoint's chunks stay in their file, the journal's bytes in
/// theirs, the snapshot and the events' index where they are (shared, see [`Events`]): a copy
/// costs the loop one unfilled segment of the index, whatever the state's and journal's size.
#[derive(Debug)]
pub(crate) struct JournalCopy {
    pub(crate) checkpoint: Checkpoint,
    pub(crate) events: Events,
    /// Where the journal stood: what a checkpoint built from this copy replaces.
    pub(crate) mark: JournalMark,
    data: LogCopy,
    base_timers: Vec<(u64, u64)>,
    base_mono: u64,
    base_listeners: ListenerBook,
}

impl Recovery {
    /// The checkpoint and every event since, as they stand; `None` when they do not give the
    /// live state (recovery is off), when there is no checkpoint (the journal then starts at
    /// `init`, whose clock and randomness it did not record), or when the journal's file cannot
    /// be opened again.
    pub(crate) fn copy(&self) -> Option<JournalCopy> {
        if self.off.is_some() {
            return None;
        }
        Some(JournalCopy {
            checkpoint: self.checkpoint.clone()?,
            events: self.events.clone(),
            mark: JournalMark {
                generation: self.generation,
                events: self.events.len(),
                data_end: self.data.end(),
            },
            data: self.data.copy().ok()?,
            base_timers: self.base_timers.clone(),
            base_mono: self.base_mono,
            base_listeners: self.base_listeners.clone(),
        })
    }
}

impl JournalCopy {
    /// Imports the checkpoint into `instance` (of the same release, started by `init` with the
    /// same arguments) and replays every event since, on the calling thread: each reads the
    /// clock and randomness it first read ([`EventClock::detach`]), what it sends is dropped.
    /// What the instance then believes about its timers and listeners, built as a rebuild
    /// builds them ([`Recovery::rebuild`]).
    pub(crate) fn rebuild_into(
        self,
        instance: &mut Instance,
        clock: &EventClock,
        at: Stamp,
    ) -> Result<Believed, CallError> {
        let data = self.data.read().map_err(|e| {
            CallError::Refused(format!("the journal cannot be read back from its file: {e}"))
        })?;
        // What `init` asked for was done and undone long before the checkpoint.
        instance.discard_effects();
        let _detached = clock.detach(self.events.first().map_or(at, |(first, _)| first));
        self.checkpoint.import_into(instance)?;
        let base = (&self.base_timers[..], self.base_mono, self.base_listeners);
        let mut believed = believed_after_import(instance, base);
        let none = (&HashMap::new(), &HashSet::new());
        let begin = |at: Stamp| clock.redetach(at);
        replay_events(&self.events, &data, instance, begin, none, &mut believed)
            .map_err(|(_, e)| e)?;
        Ok(believed)
    }
}

/// What `instance`, which has just imported a checkpoint taken when the host's timers were
/// `timers` at monotonic time `mono` and the app believed `listeners`, believes: those, then
/// what the import asked for, at that time.
fn believed_after_import(
    instance: &mut Instance,
    (timers, mono, mut listeners): (&[(u64, u64)], u64, ListenerBook),
) -> Believed {
    let mut timers = TimerQueue::from_armed(timers);
    for effect in instance.take_effects() {
        timers.apply(&effect, mono);
        listeners.apply(&effect);
    }
    (timers, listeners)
}

/// Feeds every event of `events` not left out to `instance`, `begin` giving each the clock
/// and randomness it first read, discarding what it sends (the clients already have it) and
/// applying its timer requests to `timers` at the time the event first ran. On a trap, the
/// index of the event that trapped.
fn replay_events(
    events: &Events,
    data: &LogBytes,
    instance: &mut Instance,
    begin: impl Fn(Stamp),
    (skips, skipped): (&HashMap<u64, usize>, &HashSet<usize>),
    (timers, listeners): &mut Believed,
) -> Result<usize, (usize, CallError)> {
    let mut replayed = 0;
    for (index, (at, event)) in events.iter().enumerate() {
        if left_out(index, &event, skips, skipped) {
            continue;
        }
        begin(at);
        let result = match event {
            Event::Connect(conn) => instance.on_connect(&conn),
            Event::Data(conn, range) => instance.on_data(conn, data.get(range)),
            Event::Disconnect(conn) => instance.on_disconnect(conn),
            Event::Timer(id) => {
                // It fired: it is no longer armed, unless its handler arms it again.
                timers.cancel(id);
                instance.on_timer(id)
            }
            Event::Writable(conn, window) => instance.on_writable(conn, window),
            Event::Listening(id, result) => {
                listeners.answered(id, &result);
                instance.on_listening(id, &result)
            }
            Event::Accept(conn, listener) => instance.on_accept(&conn, listener),
            Event::ListenersLost => {
                listeners.lost();
                instance.on_listeners_lost()
            }
        };
        for effect in instance.take_effects() {
            timers.apply(&effect, at.mono);
            listeners.apply(&effect);
        }
        result.map_err(|e| (index, e))?;
        replayed += 1;
    }
    Ok(replayed)
}

/// What an instance believes the host holds for it: its armed timers and its listeners.
pub(crate) type Believed = (TimerQueue, ListenerBook);

/// Whether a replay leaves out the event at `index`: a culprit's input from its `from` on (its
/// connect and disconnect stay, so the app's view of open connections stays whole), or a single
/// event whose replay trapped.
fn left_out(
    index: usize,
    event: &Event,
    skips: &HashMap<u64, usize>,
    skipped: &HashSet<usize>,
) -> bool {
    if skipped.contains(&index) {
        return true;
    }
    match event {
        // A culprit's `on-writable`s go with its input: they hand the app more of it.
        Event::Data(conn, _) | Event::Writable(conn, _) => {
            skips.get(conn).is_some_and(|&from| index >= from)
        }
        _ => false,
    }
}

/// Instantiates a version and runs `init` and `describe`: a cold start, an upgrade's prepare,
/// a rebuild.
pub(crate) fn start(version: &Version, args: &[String]) -> Result<(Instance, AppInfo), CallError> {
    let mut instance = Instance::new(version)?;
    let _init = version.runtime.clock.detach_init();
    instance.init(args).map_err(|e| match e {
        CallError::Refused(reason) => CallError::Refused(format!("init refused: {reason}")),
        trap => trap,
    })?;
    let info = instance.describe()?;
    Ok((instance, info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::SEGMENT;

    fn serials(events: &Events) -> Vec<u64> {
        events.iter().map(|(at, _)| at.serial).collect()
    }

    /// A checkpoint advanced to a mark keeps the events journaled after it, at indices from 0,
    /// with their bytes (from the journal's file and its tail), and only those; a mark from
    /// before the journal or checkpoint changed otherwise is refused, changing nothing.
    #[test]
    fn a_checkpoint_advanced_to_a_mark_keeps_the_events_after_it_and_a_stale_mark_is_refused() {
        let snapshot =
            || Snapshot { app: "a".into(), app_version: "1".into(), sections: Vec::new() };
        let state = || (Chunks::new(None), snapshot());
        let base = || CheckpointBase {
            at_unix_ms: 7,
            live: Vec::new(),
            timers: Vec::new(),
            mono: 0,
            listeners: ListenerBook::default(),
        };
        let dir = tempfile::tempdir().unwrap();
        let mut recovery = Recovery::fresh(1 << 30, Some(dir.path()));
        recovery.set_checkpoint(state(), Vec::new(), Vec::new(), 0);
        let at = |serial: u64| Stamp { wall: serial, mono: serial, serial };
        // Over a MiB on each side of the mark: some of it in the journal's file.
        let before = |serial: u64| vec![serial as u8; 300_000];
        let after = |serial: u64| format!("after{serial}").repeat(40_000).into_bytes();
        for serial in 1..=10 {
            recovery.data(at(serial), 7, &before(serial));
        }
        let copy = recovery.copy().expect("a copy");
        for serial in 11..=15 {
            // Connection 9's first input is the third event after the mark.
            let conn = if serial < 13 { 7 } else { 9 };
            recovery.data(at(serial), conn, &after(serial));
        }
        assert_eq!(recovery.unanswered(9).from, 12);
        assert!(recovery.advance_checkpoint(copy.mark, state(), base()));
        assert_eq!(recovery.checkpoint().map(|c| c.at_unix_ms), Some(7), "the boundary's time");
        assert_eq!(recovery.events(), 5);
        assert_eq!(serials(&recovery.events), (11..=15).collect::<Vec<_>>());
        let data = recovery.data.read().unwrap();
        for (at, event) in recovery.events.iter() {
            let Event::Data(_, range) = event else { panic!("{event:?}") };
            assert_eq!(data.get(range.clone()), after(at.serial), "event {}", at.serial);
        }
        let kept: usize = (11..=15).map(|serial| after(serial).len()).sum();
        // The index's bytes count until its segment goes (all 15 events share one): a few
        // bytes an event.
        assert_eq!(recovery.len(), kept + recovery.events.held());
        assert!(recovery.events.held() <= 15 * 16, "{} bytes", recovery.events.held());
        // Unanswered input from before the mark is in the checkpoint now; after it, it moved
        // down with the journal.
        assert_eq!(recovery.unanswered(7).from, 0);
        assert_eq!(recovery.unanswered(9).from, 2);
        // The same mark again: refused.
        assert!(!recovery.advance_checkpoint(copy.mark, state(), base()));
        // A mark from before another checkpoint, before `--from-checkpoint` replaced the
        // checkpoint's state, or before the journal overflowed: refused, nothing changed.
        let stale = recovery.copy().expect("a copy").mark;
        recovery.set_checkpoint(state(), Vec::new(), Vec::new(), 0);
        assert!(!recovery.advance_checkpoint(stale, state(), base()));
        let stale = recovery.copy().expect("a copy").mark;
        let mut recovery = recovery.with_checkpoint_snapshot(Some(state()));
        assert!(!recovery.advance_checkpoint(stale, state(), base()));
        recovery.limit = 1000;
        let stale = recovery.copy().expect("a copy").mark;
        recovery.data(at(16), 7, &[0; 2000]);
        assert!(recovery.off().is_some(), "overflowed");
        assert!(!recovery.advance_checkpoint(stale, state(), base()));
        assert!(recovery.off().is_some());
    }

    /// The copy an upgrade's boundary takes on the loop shares the journal's full segments:
    /// what keeps the same-component catch-up's and a replica's pause flat as the journal grows.
    #[test]
    fn a_copy_of_the_recovery_state_shares_the_journal_index_it_does_not_copy() {
        let mut recovery = Recovery::fresh(1 << 30, None);
        let snapshot = Snapshot { app: "a".into(), app_version: "1".into(), sections: Vec::new() };
        recovery.set_checkpoint((Chunks::new(None), snapshot), Vec::new(), Vec::new(), 0);
        for serial in 0..(3 * SEGMENT + 1) as u64 {
            recovery.timer(Stamp { wall: serial, mono: serial, serial }, serial);
        }
        let copy = recovery.copy().expect("a checkpoint and every event");
        assert_eq!(copy.events.len(), 3 * SEGMENT + 1);
        for (ours, theirs) in recovery.events.full.iter().zip(&copy.events.full) {
            assert!(Arc::ptr_eq(ours, theirs), "a full segment was copied");
        }
        assert_eq!(copy.events.full.len(), 3);
    }
}

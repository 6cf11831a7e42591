//! Catch-up upgrades: a whole-state transfer whose import runs off the event loop.
//!
//! An app whose state cannot be pre-copied ([`crate::precopy`]: a release built before
//! pre-copy, or one whose state holds none of the SDK's collections) moves its whole state at
//! one boundary. Inside the pause that costs the export, the transformers and the import: at
//! 1M keys about 110 ms, nothing and 400 ms (bench/RESULTS.md, "Where a whole-state transfer's
//! time goes"). Here only the export stays in the pause, and once the host holds a checkpoint
//! of a state over [`REPLICA_MIN`], not even that (below). The new instance transforms and
//! imports on a thread of its own while the old version serves on, and every event the old
//! version runs meanwhile is kept, with what it sent. Once imported, the new instance runs the
//! kept events — a bounded step between rounds of events — and its output is compared with the
//! old version's, byte by byte, as a canary's is ([`crate::canary`]). When it has run them all
//! it holds the live state and takes over; nothing more crosses. This is how a Redis replica
//! catches up after a full resynchronisation: it loads the RDB its master wrote at one point
//! while the master buffers every write since, then applies the buffer.
//!
//! When the new version is the live one's component byte for byte, started with the same
//! arguments and with no transformer (a compaction, or an upgrade to the build already
//! running), not even the export is needed: the host's recovery state — the last checkpoint and
//! every event journaled since ([`crate::recovery`]) — gives the live state. The new instance
//! imports the checkpoint and replays the journal on its thread, each event reading the clock
//! and randomness it first read ([`Source::Journal`]); its timers are what the replay leaves
//! it believing, as after a rebuild; at the commit it takes the live journal over, which holds
//! every event it ran. The pause is the copy of the journal's index: its last unfilled segment,
//! the rest shared ([`crate::recovery`]'s `Events`). A replay that traps rolls the upgrade
//! back; one that leaves the state different shows as replies that differ, and the catch-up is
//! abandoned for an export in the pause.
//!
//! For another component the journal cannot be replayed into the new version (its replies to
//! the events before the boundary were never compared with the old one's), but it can be
//! replayed into a second instance of the running version: a replica, as a Redis replica loads
//! its master's RDB and then the replication stream ([`Source::Replica`]). Off the loop the
//! replica imports the checkpoint, replays the journal and exports what the live instance would
//! have exported at the boundary; the new version imports that, through its transformers, and
//! catches up as above. The pause is again the journal's copy, however large the state; the
//! price is time and memory off the loop (a third instance holding the state, until it has
//! exported). Used from [`REPLICA_MIN`] bytes of checkpoint on. A replica that fails (it traps,
//! or refuses to export) leaves the export to the pause, with the reason in the report; one
//! whose state is over `--max-state` rolls the upgrade back, as the export would have, without
//! the pause. Without a checkpoint (the journal then starts at `init`, whose clock and
//! randomness were not recorded) or with recovery off, the old version exports as above.
//! With recovery kept in the heap (no usable `--checkpoint-dir`) the copy at the boundary
//! holds the journal's bytes, so the pause grows with the journal. The same replica builds such
//! an app's recovery checkpoints off the loop ([`export_from_replica`], used by the
//! dispatcher's `checkpoint_by_replica`).
//!
//! Both journal routes rest on the invariant a rebuild after a trap rests on: the checkpoint
//! imported and the journal replayed give the live state. What an app's `resumed` changes in
//! its state on import (a start time, a counter of imports) is the exception: the rebuilt
//! instance differs there from one that never imported, as after a rebuild, and only what
//! shows in replies to the events since the boundary is compared.
//!
//! The catch-up is abandoned — a fresh instance of the new version is started and the state
//! moves whole in a pause, as without catch-up, with the report saying why — when the two
//! versions' output differs, the new version traps on a kept event, the old version traps (its
//! recovery leaves the culprit's input out, so the two no longer run the same events), or the
//! kept events outgrow [`KEPT_MAX`]. A transformer or import that fails rolls the upgrade back,
//! as it would in the pause; until the commit the old instance is untouched and serving.
//!
//! A kept event is run a second time, by the new instance, and only its output (compared, then
//! dropped) leaves the instance; so catch-up is used only when the app can write no file (no
//! `--dir` under `tasuki run`, where directories are granted read-write), since a replayed
//! event would write a file twice.

use crate::bindings::{AppInfo, ConnInfo, Snapshot};
use crate::canary::Canary;
use crate::clock::EventClock;
use crate::instance::{CallError, Instance, MemoryUsage};
use crate::listeners::ListenError;
use crate::listeners::ListenerBook;
use crate::live::Call;
use crate::recovery::{Believed, JournalCopy, Stamp};
use crate::transformer::{Pipeline, TransformError};
use crate::upgrade::{Prepared, UpgradeError, UpgradeReport};
use crate::version::Version;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bytes of kept events (their input and the old version's output) a catch-up holds at most;
/// past it the catch-up is abandoned for a transfer in the pause.
pub const KEPT_MAX: usize = 64 << 20;

/// Bytes of checkpoint from which a catch-up to another component rebuilds a replica of the
/// running version to export off the loop ([`Source::Replica`]) rather than exporting in the
/// pause: below it the export costs the pause a few milliseconds at most (a whole-state export
/// runs at 100–300 MB/s, bench/RESULTS.md), less than a replica costs in time and memory.
pub const REPLICA_MIN: u64 = 1 << 20;

/// The shortest time a replay step may run: the new instance runs at least this much of the
/// kept events between two rounds of events, and at least as long as the round before took, so
/// that it gains on the old version even when the loop is saturated.
pub const STEP_MIN: Duration = Duration::from_millis(2);

/// How long the replay may trail the old version before the rest is run in one step (a pause,
/// reported): the bound for writes that outrun the new instance.
pub const REPLAY_MAX: Duration = Duration::from_secs(5);

/// What a catch-up did, in an [`crate::upgrade::UpgradeReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchUpReport {
    /// Transform and import, on a thread of their own while the old version served.
    pub import: Duration,
    /// Of `import`, the part spent in transformers.
    pub transform: Duration,
    /// Events the old version ran after the export that the new one ran again, comparing
    /// output.
    pub events: u64,
    /// The most events kept at once.
    pub most_kept: u64,
    /// Replay steps, and the longest: the longest any client waited on the replay.
    pub steps: u64,
    pub longest_step: Duration,
    /// Bytes of output the two versions agreed on.
    pub bytes_compared: u64,
    /// From the end of the export to the commit.
    pub took: Duration,
    /// Why the catch-up gave up, if it did: the state then moved whole in a pause.
    pub abandoned: Option<String>,
}

/// An event the old version ran after the export, owned.
#[derive(Debug)]
pub(crate) enum KeptCall {
    Connect(ConnInfo),
    Data(u64, Vec<u8>),
    Disconnect(u64),
    Timer(u64),
    Writable(u64, u64),
    Listening(u64, Result<String, ListenError>),
    Accept(ConnInfo, u64),
    ListenersLost,
}

impl KeptCall {
    fn of(call: Call<'_>) -> Self {
        match call {
            Call::Connect(info) => Self::Connect(info.clone()),
            Call::Data(conn, bytes) => Self::Data(conn, bytes.to_vec()),
            Call::Disconnect(conn) => Self::Disconnect(conn),
            Call::Timer(id) => Self::Timer(id),
            Call::Writable(conn, window) => Self::Writable(conn, window),
            Call::Listening(id, result) => Self::Listening(id, result.clone()),
            Call::Accept(info, listener) => Self::Accept(info.clone(), listener),
            Call::ListenersLost => Self::ListenersLost,
        }
    }

    pub(crate) fn as_call(&self) -> Call<'_> {
        match self {
            Self::Connect(info) => Call::Connect(info),
            Self::Data(conn, bytes) => Call::Data(*conn, bytes),
            Self::Disconnect(conn) => Call::Disconnect(*conn),
            Self::Timer(id) => Call::Timer(*id),
            Self::Writable(conn, window) => Call::Writable(*conn, *window),
            Self::Listening(id, result) => Call::Listening(*id, result),
            Self::Accept(info, listener) => Call::Accept(info, *listener),
            Self::ListenersLost => Call::ListenersLost,
        }
    }

    fn bytes(&self) -> usize {
        let input = match self {
            Self::Data(_, bytes) => bytes.len(),
            _ => 0,
        };
        // The event's own size, roughly, besides its input.
        input + 64
    }
}

/// What the old version did on a connection in a kept event.
#[derive(Debug)]
pub(crate) enum OldOutput {
    Sent(u64, Vec<u8>),
    Closed(u64),
}

/// One event the old version ran after the export, at `at`, and what it sent.
#[derive(Debug)]
pub(crate) struct Kept {
    pub(crate) at: Stamp,
    pub(crate) call: KeptCall,
    pub(crate) output: Vec<OldOutput>,
}

/// The events the old version ran since the export, in order, bounded by [`KEPT_MAX`].
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    events: VecDeque<Kept>,
    bytes: usize,
    most: usize,
    /// It passed [`KEPT_MAX`]: nothing more is kept, and the catch-up is abandoned.
    overflowed: bool,
}

impl Backlog {
    /// The old version ran `call` at `at`; what it sends next belongs to it.
    pub(crate) fn keep(&mut self, at: Stamp, call: Call<'_>) {
        if self.overflowed {
            return;
        }
        let call = KeptCall::of(call);
        self.bytes += call.bytes();
        self.events.push_back(Kept { at, call, output: Vec::new() });
        self.most = self.most.max(self.events.len());
        self.check();
    }

    /// The old version sent `data` on `conn` in the event kept last.
    pub(crate) fn sent(&mut self, conn: u64, data: &[u8]) {
        if let Some(last) = self.events.back_mut() {
            self.bytes += data.len();
            last.output.push(OldOutput::Sent(conn, data.to_vec()));
            self.check();
        }
    }

    /// The old version closed `conn` in the event kept last.
    pub(crate) fn closed(&mut self, conn: u64) {
        if let Some(last) = self.events.back_mut() {
            last.output.push(OldOutput::Closed(conn));
        }
    }

    fn check(&mut self) {
        if self.bytes > KEPT_MAX {
            self.overflowed = true;
            self.events.clear();
            self.bytes = 0;
        }
    }

    pub(crate) fn overflowed(&self) -> bool {
        self.overflowed
    }

    pub(crate) fn pop(&mut self) -> Option<Kept> {
        let kept = self.events.pop_front()?;
        self.bytes -= kept.call.bytes();
        for output in &kept.output {
            if let OldOutput::Sent(_, data) = output {
                self.bytes -= data.len();
            }
        }
        Some(kept)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    pub(crate) fn most(&self) -> usize {
        self.most
    }
}

/// The new version after its import off the loop: the prepared upgrade back (its instance
/// holding the state, or not if it failed), and what crossed.
#[derive(Debug)]
pub(crate) struct Crossed {
    pub(crate) next: Prepared,
    /// The state as the new version took it, or why it could not.
    pub(crate) result: Result<Took, CrossError>,
    pub(crate) transform: Duration,
    pub(crate) import: Duration,
    /// The new instance's memory after the import, as it reports it.
    pub(crate) memory: Option<MemoryUsage>,
    /// What the replica cost, for [`Source::Replica`].
    pub(crate) replica: Option<ReplicaCost>,
}

impl Crossed {
    /// `next` took nothing: its replica failed before a transform or an import began.
    fn failed(next: Prepared, error: CrossError) -> Self {
        let (transform, import) = (Duration::ZERO, Duration::ZERO);
        Self { next, result: Err(error), transform, import, memory: None, replica: None }
    }
}

/// Where the new instance's state comes from.
#[derive(Debug)]
pub(crate) enum Source {
    /// The old version's export at the boundary, to transform and import.
    Export(Snapshot),
    /// The last checkpoint and every event since, to import and replay: for the same release
    /// started with the same arguments and no transformer, whose instance then holds what the
    /// old one held at the boundary (the journal's invariant, see [`crate::recovery`]) with no
    /// export in the pause.
    Journal(JournalCopy),
    /// The last checkpoint and every event since, rebuilt into a second instance of the running
    /// release (`version`, started with `args`), a replica holding what the live one held at
    /// the boundary, which exports it off the loop: for another component, with no export in
    /// the pause. Then as [`Source::Export`].
    Replica { journal: JournalCopy, version: Arc<Version>, args: Vec<String>, max_state: u64 },
}

/// What building and exporting a replica cost ([`Source::Replica`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplicaCost {
    /// Start, import of the checkpoint and replay of the journal.
    pub(crate) rebuild: Duration,
    pub(crate) export: Duration,
    /// Bytes of the state it exported.
    pub(crate) bytes: u64,
}

/// What the new instance took.
#[derive(Debug)]
pub(crate) enum Took {
    /// The export, as it imported it (after the transformers).
    Snapshot(Snapshot),
    /// The checkpoint, and every event of the journal after it replayed: what the instance
    /// then believes about its timers and listeners, built as a rebuild builds them.
    Journal(Believed),
}

/// Why the state did not get into the new instance.
#[derive(Debug)]
pub(crate) enum CrossError {
    /// The replica failed to start, rebuild or export ([`Source::Replica`]): the state is
    /// then exported by the live instance in a pause, as without one.
    Replica(String),
    /// The replica's state, the live one, is over `--max-state` (bytes): the upgrade rolls
    /// back, as an export in the pause would, without the pause.
    TooLarge(u64),
    Transform(TransformError),
    Import(CallError),
}

/// Brings the state of `source` into `next`'s instance: an export transformed and imported
/// with `conns` open, reading the clock and randomness of `at` (the export's boundary), or a
/// journal replayed, each event reading its own — whatever the loop runs meanwhile.
pub(crate) fn cross(
    mut next: Prepared,
    source: Source,
    conns: &[ConnInfo],
    clock: &EventClock,
    at: Stamp,
) -> Crossed {
    let started = Instant::now();
    let (snapshot, replica) = match source {
        Source::Export(snapshot) => (snapshot, None),
        Source::Journal(journal) => {
            let result = journal
                .rebuild_into(&mut next.instance, clock, at)
                .map(Took::Journal)
                .map_err(CrossError::Import);
            let import = started.elapsed();
            let memory = result.as_ref().ok().and_then(|_| next.instance.memory_usage().ok()?);
            let transform = Duration::ZERO;
            return Crossed { next, result, transform, import, memory, replica: None };
        }
        Source::Replica { journal, version, args, max_state } => {
            match export_from_replica(journal, (&version, &args), clock, at) {
                Ok((snapshot, cost)) if cost.bytes <= max_state => (snapshot, Some(cost)),
                Ok((_, cost)) => return Crossed::failed(next, CrossError::TooLarge(cost.bytes)),
                Err(why) => return Crossed::failed(next, CrossError::Replica(why)),
            }
        }
    };
    // The replica's time is its own (`ReplicaCost`): transform and import count from here.
    let started = Instant::now();
    let _detached = clock.detach(at);
    let transformed = if next.pipeline.is_empty() {
        Ok(snapshot)
    } else {
        next.pipeline.apply_chunked(Vec::new(), snapshot).map(|(chunks, snapshot)| {
            debug_assert!(chunks.is_empty(), "a whole snapshot transforms into no chunks");
            snapshot
        })
    };
    let transform = started.elapsed();
    let result = match transformed {
        Ok(snapshot) => next
            .instance
            .import(&[], &snapshot, conns)
            .map(|()| Took::Snapshot(snapshot))
            .map_err(CrossError::Import),
        Err(e) => Err(CrossError::Transform(e)),
    };
    let import = started.elapsed() - transform;
    let memory = match &result {
        Ok(_) => next.instance.memory_usage().ok().flatten(),
        Err(_) => None,
    };
    Crossed { next, result, transform, import, memory, replica }
}

/// Starts a second instance of the running release, brings it to the live state from `journal`
/// (as a same-release catch-up brings the new instance, [`JournalCopy::rebuild_into`]), and
/// exports it at the boundary's clock and randomness, `at`: the export the live instance would
/// have made there. The replica is dropped once exported. Why it failed, if it did.
pub(crate) fn export_from_replica(
    journal: JournalCopy,
    (version, args): (&Version, &[String]),
    clock: &EventClock,
    at: Stamp,
) -> Result<(Snapshot, ReplicaCost), String> {
    let started = Instant::now();
    let (mut replica, _) = crate::recovery::start(version, args)
        .map_err(|e| format!("a replica of the running version failed to start: {e}"))?;
    journal.rebuild_into(&mut replica, clock, at).map_err(|e| {
        format!("the replica failed to import the checkpoint and replay the journal: {e}")
    })?;
    let rebuild = started.elapsed();
    let _detached = clock.detach(at);
    let snapshot =
        replica.export_state().map_err(|e| format!("the replica failed to export: {e}"))?;
    let export = started.elapsed() - rebuild;
    let bytes = crate::instance::snapshot_bytes(&snapshot);
    Ok((snapshot, ReplicaCost { rebuild, export, bytes }))
}

/// Where the import runs: on a thread of its own, or (in the simulator, whose every run must
/// be the same) on the loop's, before the next event.
pub(crate) enum Importer {
    Thread {
        /// Wakes the event loop when the import is done.
        wake: Option<Arc<dyn Fn() + Send + Sync>>,
    },
    Inline,
}

/// What the import needs.
struct Job {
    next: Prepared,
    source: Source,
    conns: Vec<ConnInfo>,
    clock: EventClock,
    at: Stamp,
}

impl Job {
    fn run(self) -> Crossed {
        cross(self.next, self.source, &self.conns, &self.clock, self.at)
    }
}

/// Starts the import: its result arrives on the returned channel. If no thread can be
/// started, it runs here.
pub(crate) fn start(
    importer: Importer,
    next: Prepared,
    source: Source,
    conns: Vec<ConnInfo>,
    clock: EventClock,
    at: Stamp,
) -> mpsc::Receiver<Crossed> {
    let (send, receive) = mpsc::sync_channel(1);
    let job = Job { next, source, conns, clock, at };
    let Importer::Thread { wake } = importer else {
        let _ = send.send(job.run());
        return receive;
    };
    let (give, take) = mpsc::channel::<Job>();
    let answer = send.clone();
    let spawned = std::thread::Builder::new().name("tasuki-import".into()).spawn(move || {
        let Ok(job) = take.recv() else { return };
        // The loop may have stopped waiting (the host is stopping): then the new instance is
        // dropped here.
        if answer.send(job.run()).is_ok()
            && let Some(wake) = wake
        {
            wake();
        }
    });
    match spawned {
        Ok(_) => {
            if let Err(mpsc::SendError(job)) = give.send(job) {
                let _ = send.send(job.run());
            }
        }
        Err(e) => {
            tracing::warn!("cannot start a thread for the import ({e}); importing on the loop");
            let _ = send.send(job.run());
        }
    }
    receive
}

/// The prepared upgrade without its instance: what starting over in a pause needs, should the
/// catch-up be abandoned.
#[derive(Debug)]
pub(crate) struct Fallback {
    pub(crate) version: Arc<Version>,
    pub(crate) info: AppInfo,
    prepare_time: Duration,
    no_precopy: bool,
    pipeline: Pipeline,
    compaction: Option<String>,
    args: Vec<String>,
}

impl Fallback {
    /// Keeps everything of `next` but its instance, which is returned.
    pub(crate) fn split(next: Prepared) -> (Self, Instance) {
        let Prepared {
            version,
            instance,
            info,
            prepare_time,
            from_checkpoint: _,
            no_precopy,
            no_catch_up: _,
            pipeline,
            compaction,
            canary: _,
            args,
        } = next;
        let fallback = Self { version, info, prepare_time, no_precopy, pipeline, compaction, args };
        (fallback, instance)
    }

    /// `instance`, the new version's, which has run `init` and taken no state, prepared again
    /// to take the state whole in a pause.
    pub(crate) fn resume(self, instance: Instance) -> Prepared {
        let Self { version, info, prepare_time, no_precopy, pipeline, compaction, args } = self;
        Prepared {
            version,
            instance,
            info,
            prepare_time,
            from_checkpoint: false,
            no_precopy,
            no_catch_up: true,
            pipeline,
            compaction,
            canary: None,
            args,
        }
    }

    /// A fresh instance of the new version, prepared to take the state whole in a pause (on
    /// the loop: its start is part of the pause, not of the preparation).
    pub(crate) fn respawn(mut self) -> Result<Prepared, UpgradeError> {
        let (instance, info) =
            crate::recovery::start(&self.version, &self.args).map_err(|error| {
                UpgradeError::Start { wasm: self.version.path.clone(), error: Box::new(error) }
            })?;
        self.info = info;
        Ok(self.resume(instance))
    }
}

/// The connections, timers, monotonic time and listeners at the export: where the new
/// instance's history starts.
#[derive(Debug)]
pub(crate) struct AtExport {
    pub(crate) conns: Vec<ConnInfo>,
    pub(crate) timers: Vec<(u64, u64)>,
    pub(crate) mono: u64,
    pub(crate) book: ListenerBook,
}

/// Where a catch-up stands.
#[derive(Debug)]
pub(crate) enum Phase {
    /// The new instance imports off the loop; its result arrives here.
    Importing(mpsc::Receiver<Crossed>),
    /// The new instance imported the state and runs the kept events, compared as a canary's.
    Replaying { canary: Box<Canary>, fallback: Fallback },
}

/// A catch-up under way (see the module's documentation).
#[derive(Debug)]
pub(crate) struct CatchUp {
    pub(crate) phase: Phase,
    /// The events the old version ran since the export, not yet run by the new instance.
    pub(crate) backlog: Backlog,
    /// The upgrade's report so far: the export, what crossed, the pause up to the export's end.
    pub(crate) report: Box<UpgradeReport>,
    pub(crate) at_export: AtExport,
    /// The end of the export.
    pub(crate) exported: Instant,
    pub(crate) memory_before: Option<MemoryUsage>,
    pub(crate) import: Duration,
    pub(crate) transform: Duration,
    pub(crate) events: u64,
    pub(crate) steps: u64,
    pub(crate) longest_step: Duration,
    /// When the last replay step (or the import) ended: the round of events since is what
    /// the next step must at least match.
    pub(crate) last_step_end: Instant,
    /// The old version trapped meanwhile: the catch-up cannot succeed.
    pub(crate) interrupted: Option<String>,
}

impl CatchUp {
    pub(crate) fn new(
        phase: Phase,
        report: Box<UpgradeReport>,
        at_export: AtExport,
        memory_before: Option<MemoryUsage>,
    ) -> Self {
        let now = Instant::now();
        Self {
            phase,
            backlog: Backlog::default(),
            report,
            at_export,
            exported: now,
            memory_before,
            import: Duration::ZERO,
            transform: Duration::ZERO,
            events: 0,
            steps: 0,
            longest_step: Duration::ZERO,
            last_step_end: now,
            interrupted: None,
        }
    }

    /// How long the next replay step may run: at least [`STEP_MIN`] and as long as the round
    /// of events since the last step took, or without bound once the replay has trailed the
    /// old version for [`REPLAY_MAX`].
    pub(crate) fn step_budget(&self, now: Instant) -> Duration {
        if now.duration_since(self.exported) >= self.import + REPLAY_MAX {
            return Duration::MAX;
        }
        STEP_MIN.max(now.duration_since(self.last_step_end))
    }

    /// Why it cannot succeed any more, if that is so.
    pub(crate) fn doomed(&mut self) -> Option<String> {
        if let Some(cause) = self.interrupted.take() {
            return Some(format!("the old version trapped meanwhile ({cause})"));
        }
        self.backlog.overflowed().then(|| {
            format!(
                "the events since the export outgrew {} MiB before the new version caught up",
                KEPT_MAX >> 20
            )
        })
    }

    /// Ends it before the new instance took any state, given up (`why`): the upgrade's report
    /// with the catch-up's filled in; no event was run again, nothing compared.
    pub(crate) fn abandoned_before_import(self, why: String) -> Box<UpgradeReport> {
        let figures = self.figures(0, Some(why));
        let mut report = self.report;
        report.catch_up = Some(figures);
        report
    }

    /// What it did, with `bytes_compared` and why it was given up, if it was.
    fn figures(&self, bytes_compared: u64, abandoned: Option<String>) -> CatchUpReport {
        CatchUpReport {
            import: self.import,
            transform: self.transform,
            events: self.events,
            most_kept: self.backlog.most() as u64,
            steps: self.steps,
            longest_step: self.longest_step,
            bytes_compared,
            took: self.exported.elapsed(),
            abandoned,
        }
    }

    /// Ends it, at the commit (`abandoned` is `None`) or when it is given up (why): the
    /// upgrade's report with the catch-up's filled in, the comparison holding the new
    /// instance, and what starting over in a pause needs.
    ///
    /// # Panics
    /// Before the import is in (there is no new instance yet).
    pub(crate) fn finish(
        self,
        abandoned: Option<String>,
    ) -> (Box<UpgradeReport>, Box<Canary>, Fallback) {
        let bytes_compared = match &self.phase {
            Phase::Replaying { canary, .. } => canary.bytes_compared(),
            Phase::Importing(_) => unreachable!("a catch-up ends once its import is in"),
        };
        let figures = self.figures(bytes_compared, abandoned);
        let Phase::Replaying { canary, fallback } = self.phase else { unreachable!("above") };
        let mut report = self.report;
        report.catch_up = Some(figures);
        (report, canary, fallback)
    }
}

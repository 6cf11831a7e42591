//! What `tasuki status` reports, and the shared record the dispatcher keeps up to date.

use crate::bindings::AppInfo;
use crate::clock::now_unix_ms;
use crate::instance::MemoryUsage;
use crate::recovery::Recovery;
use crate::upgrade::{AppVersion, UpgradeReport};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where recovery stands: whether a trap now would lose anything, and what the last one cost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryStatus {
    /// `None` while a trap is recoverable; otherwise why it is not.
    pub off: Option<String>,
    /// When the current checkpoint was taken (ms since the Unix epoch) and its bytes; `None`
    /// when the journal starts from the app's `init`.
    pub checkpoint: Option<(u64, u64)>,
    /// Bytes of the checkpoint the host holds in its memory: the rest is in its file in
    /// `--checkpoint-dir` (page cache, not the host's resident memory).
    pub checkpoint_in_memory: u64,
    /// Bytes and events journaled since the checkpoint, and the journal's bound.
    pub journal_bytes: u64,
    pub journal_events: u64,
    pub journal_limit: u64,
    /// Set while the event loop is rebuilding a trapped instance: when it started.
    pub recovering_since_unix_ms: Option<u64>,
    /// Recoveries since the host started.
    pub recoveries: u64,
    pub last: Option<RecoveryRecord>,
    /// Checkpoints taken since the host started (built from chunks or exported whole).
    pub checkpoints: u64,
    /// Of those, the ones exported whole at one boundary, on the event loop: every client waited
    /// for the export (`run --precopy-chunk 0`; an app that cannot pre-copy while no replica can
    /// export for it; one asked for by `tasuki snapshot` or taken after a recovery; one due while
    /// an upgrade's copy or catch-up held the chunks), and the longest such export. A host
    /// whose app pre-copies keeps these at 0 under any load.
    #[serde(default)]
    pub whole_checkpoints: u64,
    #[serde(default)]
    pub longest_whole_checkpoint: Duration,
    /// How the last checkpoint built from chunks went.
    pub last_checkpoint: Option<CheckpointRecord>,
    /// Checkpoints a replica exported off the event loop (an app that cannot pre-copy), and
    /// how the last went.
    pub replica_checkpoints: u64,
    pub last_replica_checkpoint: Option<ReplicaCheckpointRecord>,
    /// Why the running instance's checkpoints are exported on the loop although it cannot
    /// pre-copy: its replica failed one (a trap, a refusal), so the next are not tried on one.
    pub replica_off: Option<String>,
}

/// One checkpoint a replica exported off the event loop, for an app that cannot pre-copy: a
/// second instance of the live version imported the last checkpoint, replayed the journal and
/// exported the state the live instance held at the boundary where they were copied; the
/// events journaled since then stay in the journal. The event loop paused for the copy only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaCheckpointRecord {
    /// Bytes in the checkpoint.
    pub bytes: u64,
    /// Events the replica replayed, and events journaled while it worked (kept).
    pub events_replayed: u64,
    pub events_kept: u64,
    /// The replica's start, import and replay; its export; and the whole, from the boundary
    /// until the checkpoint was in place.
    pub rebuild: Duration,
    pub export: Duration,
    pub took: Duration,
}

/// One checkpoint built from chunks between events: how long it ran, and what its cut (the
/// rest of the state, taken at one boundary) moved. A cut that moved far more than a chunk
/// stalled clients for that long: the copy did not catch up with the writers before the
/// journal filled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// Bytes in the checkpoint.
    pub bytes: u64,
    /// Steps before the cut, and the time from the first to the cut.
    pub steps: u32,
    pub took: Duration,
    /// Bytes the cut moved, and how long it stopped the event loop.
    pub cut_bytes: u64,
    pub cut_took: Duration,
    /// True if the copy caught up (what was owed fell to a quarter chunk) before the cut.
    pub converged: bool,
    /// Rounds of events in which the host read less client input than was waiting, so that
    /// the copy could catch up.
    pub throttled_rounds: u32,
    /// The longest step: the most a client waited for the copy between two events.
    pub longest_step: Duration,
}

/// One recovery: what trapped, how long the rebuild took, what was lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryRecord {
    pub at_unix_ms: u64,
    pub took: Duration,
    /// What trapped, in words.
    pub cause: String,
    pub outcome: RecoveryOutcome,
}

/// How a recovery ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecoveryOutcome {
    /// Rebuilt from the checkpoint and journal: only the faulting event (if an event trapped,
    /// rather than an export) and `closed` connections' unanswered input were lost.
    Rebuilt {
        replayed: u64,
        dropped_events: u64,
        closed: Vec<u64>,
        event_lost: bool,
        /// False when the journal starts from the app's `init` (no checkpoint yet).
        from_checkpoint: bool,
    },
    /// The journal could not rebuild the state: a fresh instance serves, the state is lost.
    RestartedEmpty { reason: String },
    /// Not even a fresh instance starts.
    Failed { reason: String },
}

/// The outcome of the most recent upgrade request that reached the pause or was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastUpgrade {
    /// When it finished, in ms since the Unix epoch.
    pub at_unix_ms: u64,
    pub outcome: Result<UpgradeReport, String>,
}

/// A running host, as `tasuki status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub app: AppVersion,
    pub wasm: PathBuf,
    pub listen: Vec<String>,
    pub uptime: Duration,
    /// How long the current version has been serving.
    pub version_uptime: Duration,
    pub connections: u64,
    pub upgrades: u64,
    pub last_upgrade: Option<LastUpgrade>,
    /// The upgrade whose pre-copy is under way, if one is.
    pub precopy: Option<PrecopyProgress>,
    /// The upgrade whose canary is under way, if one is.
    pub canary: Option<CanaryProgress>,
    /// The upgrade whose new version imports off the loop or catches up, if one is.
    pub catch_up: Option<CatchUpProgress>,
    pub recovery: Box<RecoveryStatus>,
    pub memory: MemoryStatus,
    /// Snapshots into `--snapshot-dir`, if one is set.
    pub snapshots: Option<SnapshotsStatus>,
    /// Output queued for clients, and the back-pressure that bounds it.
    pub output: OutputStatus,
    /// Listeners the app opened at run time (`listeners.listen`), by id.
    pub listeners: Vec<ListenerStatus>,
}

/// A listener the app opened at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerStatus {
    /// The app's id for it.
    pub id: u64,
    /// Where it listens, `ip:port`.
    pub address: String,
    /// Connections accepted on it so far.
    pub accepted: u64,
}

/// How much output the host has had to hold, since it started: what back-pressure keeps
/// small (`net.notify-writable`), and what a guest that ignores it makes large.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputStatus {
    /// The most output one call into the app queued, over all connections, in bytes. A server
    /// built with the SDK keeps it to about one connection's send window (`--output-buffer`);
    /// the host's own bound is 32 times that.
    pub largest_call: u64,
    /// The most output ever queued for one connection at once (written by the app, not yet
    /// taken by the kernel), in bytes.
    pub largest_queue: u64,
    /// `on-writable` calls made: times a connection the app had stopped sending to could take
    /// more again.
    pub writable_calls: u64,
    /// Connections whose app waits, now, to be told they can take more: it has sent its
    /// window, their clients have not read it yet, and the host holds what they send meanwhile.
    pub waiting: u64,
}

/// Snapshots written to the snapshot directory since the host started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotsStatus {
    pub dir: PathBuf,
    /// How often one is taken; `None` for only a last one, when the host drains.
    pub every: Option<Duration>,
    /// Snapshots written since the host started.
    pub written: u64,
    /// The newest written: its path and when (ms since the Unix epoch).
    pub last: Option<(PathBuf, u64)>,
    /// Why the most recent attempt failed, if it did; cleared by the next that succeeds.
    pub failing: Option<String>,
}

/// The live instance's memory and the compactions that gave memory back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStatus {
    /// The live instance's last report (the event loop asks every [`crate::limits::MEMORY_CHECK`]
    /// and after every swap); `None` if its version cannot report (built before the `memory`
    /// export, or without the SDK's `heap-stats`).
    pub usage: Option<MemoryUsage>,
    /// The host process's resident memory, in bytes (`VmRSS`), when the status was taken.
    pub resident: u64,
    /// Compactions since the host started (`tasuki compact`, `--compact-below`).
    pub compactions: u64,
    pub last_compaction: Option<LastUpgrade>,
}

/// An upgrade between its first pre-copy step and its pause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrecopyProgress {
    /// The version the state is moving to.
    pub to: AppVersion,
    /// Steps so far (one chunk each).
    pub steps: u32,
    /// Bytes of chunks moved so far.
    pub bytes: u64,
    /// Bytes the old version still owes (its estimate).
    pub owed: u64,
    /// True for a compaction (a fresh instance of the running release), false for an upgrade.
    pub compaction: bool,
    /// Rounds of events whose client input was slowed so the copy could catch up.
    pub throttled_rounds: u32,
}

/// A whole-state upgrade between its export and its commit (see [`crate::catchup`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchUpProgress {
    /// The version the state is moving to.
    pub to: AppVersion,
    /// True while the new version imports (off the loop); false once it runs the kept events.
    pub importing: bool,
    /// Events the old version ran since the export that the new one has not run yet.
    pub kept: u64,
    /// Events the new one has run so far.
    pub run: u64,
    /// True for a compaction (a fresh instance of the running release), false for an upgrade.
    pub compaction: bool,
}

/// An upgrade between its import and the end of its canary (`tasuki upgrade --canary`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryProgress {
    /// The candidate: the version the canary would commit.
    pub to: AppVersion,
    pub window: crate::canary::Window,
    /// Client events both versions ran, all agreeing so far.
    pub events: u64,
    /// Time left of a time window (`--canary 30s`); `None` for a window of events.
    pub left: Option<Duration>,
    /// Replies that differed where the new release declared they would
    /// (`Server::expected_difference`), taken as agreeing. Any other difference ends the canary
    /// at once, so there is no count of those while it runs.
    pub declared_differences: u64,
}

fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

impl fmt::Display for RecoveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.off {
            Some(reason) => write!(f, "recovery     {reason}")?,
            None => {
                let from = match self.checkpoint {
                    Some((at, size)) => format!(
                        "checkpoint of {} ago ({}, {} of it in memory)",
                        human(Duration::from_millis(now_unix_ms().saturating_sub(at))),
                        bytes(size),
                        bytes(self.checkpoint_in_memory)
                    ),
                    None => "the app's start".to_string(),
                };
                write!(
                    f,
                    "recovery     on: {from} + journal {} of {} ({} events)",
                    bytes(self.journal_bytes),
                    bytes(self.journal_limit),
                    self.journal_events
                )?;
            }
        }
        if let Some(c) = &self.last_checkpoint {
            write!(
                f,
                "\ncheckpoints  {} taken; the last built in {} steps (the longest {:.1} ms) over \
                 {:.1} ms, its cut moved {} in {:.1} ms{}",
                self.checkpoints,
                c.steps,
                c.longest_step.as_secs_f64() * 1e3,
                c.took.as_secs_f64() * 1e3,
                bytes(c.cut_bytes),
                c.cut_took.as_secs_f64() * 1e3,
                if c.converged { "" } else { " (the copy had not caught up with the writes)" }
            )?;
            if c.throttled_rounds > 0 {
                write!(f, ", input slowed for it in {} rounds of events", c.throttled_rounds)?;
            }
        }
        if let Some(c) = &self.last_replica_checkpoint {
            write!(
                f,
                "\ncheckpoints  {} taken, {} by a replica off the event loop; the last of {} in \
                 {:.1} ms ({} events replayed in {:.1} ms, exported in {:.1} ms; {} events \
                 journaled meanwhile kept)",
                self.checkpoints,
                self.replica_checkpoints,
                bytes(c.bytes),
                c.took.as_secs_f64() * 1e3,
                c.events_replayed,
                c.rebuild.as_secs_f64() * 1e3,
                c.export.as_secs_f64() * 1e3,
                c.events_kept,
            )?;
        }
        if self.whole_checkpoints > 0 {
            write!(
                f,
                "\ncheckpoints  {} of {} exported whole on the event loop (the longest took {:.1} \
                 ms, every client waiting)",
                self.whole_checkpoints,
                self.checkpoints,
                self.longest_whole_checkpoint.as_secs_f64() * 1e3
            )?;
        }
        if let Some(why) = &self.replica_off {
            write!(f, "\n             checkpoints exported on the loop: a replica failed ({why})")?;
        }
        if let Some(since) = self.recovering_since_unix_ms {
            let took = Duration::from_millis(now_unix_ms().saturating_sub(since));
            write!(f, "\n             RECOVERING for {}", human(took))?;
        }
        if let Some(last) = &self.last {
            let ago = Duration::from_millis(now_unix_ms().saturating_sub(last.at_unix_ms));
            write!(
                f,
                "\nlast recovery {} ago ({} in all), took {:.1} ms: {}\n             ",
                human(ago),
                self.recoveries,
                last.took.as_secs_f64() * 1e3,
                last.cause
            )?;
            match &last.outcome {
                RecoveryOutcome::Rebuilt {
                    replayed,
                    dropped_events,
                    closed,
                    event_lost,
                    from_checkpoint,
                } => {
                    let mut lost = Vec::new();
                    if *event_lost {
                        lost.push("the faulting event".to_string());
                    }
                    if *dropped_events > 0 {
                        lost.push(format!("{dropped_events} unanswered events"));
                    }
                    if !closed.is_empty() {
                        lost.push(format!("connections {closed:?} closed"));
                    }
                    if lost.is_empty() {
                        lost.push("nothing".into());
                    }
                    let from = if *from_checkpoint { "the checkpoint" } else { "the app's start" };
                    write!(
                        f,
                        "rebuilt from {from} and {replayed} events; lost: {}",
                        lost.join(", ")
                    )?
                }
                RecoveryOutcome::RestartedEmpty { reason } => {
                    write!(f, "RESTARTED EMPTY, the state was lost ({reason})")?
                }
                RecoveryOutcome::Failed { reason } => write!(f, "FAILED: {reason}")?,
            }
        }
        Ok(())
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{:.1}s", d.as_secs_f64()),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "app          {} ({})", self.app, self.wasm.display())?;
        writeln!(f, "listening    {}", self.listen.join(", "))?;
        writeln!(
            f,
            "uptime       {} (this version {})",
            human(self.uptime),
            human(self.version_uptime)
        )?;
        writeln!(f, "connections  {}", self.connections)?;
        if !self.listeners.is_empty() {
            let listeners: Vec<String> = self
                .listeners
                .iter()
                .map(|l| format!("{} on {} ({} accepted)", l.id, l.address, l.accepted))
                .collect();
            writeln!(f, "run-time listeners  {}: {}", self.listeners.len(), listeners.join(", "))?;
        }
        write!(f, "upgrades     {}", self.upgrades)?;
        if let Some(last) = &self.last_upgrade {
            let ago = now_unix_ms().saturating_sub(last.at_unix_ms);
            write!(f, "\nlast upgrade {} ago: ", human(Duration::from_millis(ago)))?;
            match &last.outcome {
                Ok(report) => write!(
                    f,
                    "{} -> {}, pause {:.3} ms, {} bytes of state",
                    report.from,
                    report.to,
                    report.pause.as_secs_f64() * 1e3,
                    report.state_bytes
                )?,
                Err(reason) => write!(f, "failed: {reason}")?,
            }
        }
        if let Some(p) = &self.precopy {
            let doing = if p.compaction { "compacting   " } else { "upgrading    to " };
            write!(
                f,
                "\n{doing}{}: pre-copy under way, {} moved in {} steps, {} still owed",
                p.to,
                bytes(p.bytes),
                p.steps,
                bytes(p.owed)
            )?;
            if p.throttled_rounds > 0 {
                write!(f, "; client input slowed in {} rounds", p.throttled_rounds)?;
            }
        }
        if let Some(c) = &self.catch_up {
            let doing = if c.compaction { "compacting   " } else { "upgrading    to " };
            if c.importing {
                write!(
                    f,
                    "\n{doing}{}: importing the state off the loop while the old version serves \
                     ({} events since the export kept)",
                    c.to, c.kept
                )?;
            } else {
                write!(
                    f,
                    "\n{doing}{}: catching up, {} of the events since the export run, {} left",
                    c.to, c.run, c.kept
                )?;
            }
        }
        if let Some(c) = &self.canary {
            write!(
                f,
                "\ncanary       {}: {} client events compared of {}, all agreeing ({} as declared)",
                c.to, c.events, c.window, c.declared_differences
            )?;
            if let Some(left) = c.left {
                write!(f, ", {:.1} s left", left.as_secs_f64())?;
            }
        }
        write!(f, "\n{}\n{}\n{}", self.recovery, self.memory, self.output)?;
        if let Some(s) = &self.snapshots {
            let every =
                s.every.map_or("only when stopping".into(), |d| format!("every {}", human(d)));
            write!(f, "\nsnapshots    {} into {}, {} written", every, s.dir.display(), s.written)?;
            if let Some((path, at)) = &s.last {
                let ago = Duration::from_millis(now_unix_ms().saturating_sub(*at));
                write!(f, "; last {} ago: {}", human(ago), path.display())?;
            }
            if let Some(reason) = &s.failing {
                write!(f, "\n             FAILING: {reason}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for MemoryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.usage {
            Some(u) => write!(
                f,
                "memory       heap {} in use of {} linear memory ({:.0}%); host resident {}",
                bytes(u.heap_in_use),
                bytes(u.linear_memory),
                u.used_share() * 100.0,
                bytes(self.resident)
            )?,
            None => write!(
                f,
                "memory       host resident {} (the app does not report its heap)",
                bytes(self.resident)
            )?,
        }
        write!(f, "\ncompactions  {}", self.compactions)?;
        if let Some(last) = &self.last_compaction {
            let ago = now_unix_ms().saturating_sub(last.at_unix_ms);
            write!(f, ", last {} ago: ", human(Duration::from_millis(ago)))?;
            match &last.outcome {
                Ok(report) => {
                    write!(f, "pause {:.3} ms", report.pause.as_secs_f64() * 1e3)?;
                    if let Some(m) = &report.memory {
                        write!(
                            f,
                            ", linear memory {} -> {}",
                            bytes(m.before.linear_memory),
                            bytes(m.after.linear_memory)
                        )?;
                    }
                    if let Some(why) = &report.compaction {
                        write!(f, " ({why})")?;
                    }
                }
                Err(reason) => write!(f, "failed: {reason}")?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for OutputStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "output       {} connections waiting for their clients to read (on-writable); {} \
             on-writable calls; the most one call queued {}, for one connection {}",
            self.waiting,
            self.writable_calls,
            bytes(self.largest_call),
            bytes(self.largest_queue),
        )
    }
}

/// The part of the status that changes, behind one lock; connection count is an atomic because
/// it changes on every accept and close.
#[derive(Debug)]
pub(crate) struct Shared {
    started: Instant,
    listen: Vec<String>,
    pub(crate) connections: AtomicU64,
    current: Mutex<Current>,
    journal_bytes: AtomicU64,
    journal_events: AtomicU64,
    recovering_since: AtomicU64,
    recovery: Mutex<RecoveryStatus>,
    precopy: Mutex<Option<PrecopyProgress>>,
    catch_up: Mutex<Option<CatchUpProgress>>,
    canary: Mutex<Option<CanaryProgress>>,
    fresh_memory: AtomicU64,
    memory: Mutex<MemoryStatus>,
    snapshots: Mutex<Option<SnapshotsStatus>>,
    largest_call_output: AtomicU64,
    largest_queue: AtomicU64,
    writable_calls: AtomicU64,
    /// Connections whose guest waits for `on-writable` ([`OutputStatus::waiting`]).
    pub(crate) waiting_writable: AtomicU64,
    listeners: Mutex<Vec<ListenerStatus>>,
}

#[derive(Debug)]
struct Current {
    info: AppInfo,
    app: AppVersion,
    wasm: PathBuf,
    since: Instant,
    upgrades: u64,
    last_upgrade: Option<LastUpgrade>,
}

impl Shared {
    pub(crate) fn new(info: AppInfo, wasm: PathBuf, listen: Vec<String>) -> Self {
        let now = Instant::now();
        let app = AppVersion::from(&info);
        Self {
            started: now,
            listen,
            connections: AtomicU64::new(0),
            current: Mutex::new(Current {
                info,
                app,
                wasm,
                since: now,
                upgrades: 0,
                last_upgrade: None,
            }),
            journal_bytes: AtomicU64::new(0),
            journal_events: AtomicU64::new(0),
            recovering_since: AtomicU64::new(0),
            recovery: Mutex::new(RecoveryStatus::default()),
            precopy: Mutex::new(None),
            canary: Mutex::new(None),
            catch_up: Mutex::new(None),
            fresh_memory: AtomicU64::new(0),
            memory: Mutex::new(MemoryStatus::default()),
            snapshots: Mutex::new(None),
            largest_call_output: AtomicU64::new(0),
            largest_queue: AtomicU64::new(0),
            writable_calls: AtomicU64::new(0),
            waiting_writable: AtomicU64::new(0),
            listeners: Mutex::new(Vec::new()),
        }
    }

    /// After every call into the app: the output it queued, over all connections.
    pub(crate) fn note_call_output(&self, bytes: usize) {
        self.largest_call_output.fetch_max(bytes as u64, Ordering::Relaxed);
    }

    /// After every send: the output now queued for that connection.
    pub(crate) fn note_queued(&self, bytes: usize) {
        self.largest_queue.fetch_max(bytes as u64, Ordering::Relaxed);
    }

    /// The app's run-time listeners changed (opened, closed, or accepted a connection).
    pub(crate) fn note_listeners(&self, listeners: Vec<ListenerStatus>) {
        *self.listeners.lock().unwrap_or_else(|p| p.into_inner()) = listeners;
    }

    /// An `on-writable` call is about to be made.
    pub(crate) fn note_writable_call(&self) {
        self.writable_calls.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshots(&self) -> std::sync::MutexGuard<'_, Option<SnapshotsStatus>> {
        self.snapshots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Snapshots go into `dir`, `every` so often.
    pub(crate) fn snapshots_into(&self, dir: PathBuf, every: Option<Duration>) {
        *self.snapshots() = Some(SnapshotsStatus { dir, every, ..SnapshotsStatus::default() });
    }

    /// A snapshot into the snapshot directory was written, or failed.
    pub(crate) fn record_snapshot(
        &self,
        outcome: Result<&crate::snapshot::SnapshotReport, String>,
    ) {
        let mut guard = self.snapshots();
        let status = guard.get_or_insert_with(SnapshotsStatus::default);
        match outcome {
            Ok(report) => {
                status.written += 1;
                status.last = Some((report.path.clone(), now_unix_ms()));
                status.failing = None;
            }
            Err(reason) => status.failing = Some(reason),
        }
    }

    /// The newest snapshot's path, or why the last attempt failed.
    pub(crate) fn last_snapshot(&self) -> Result<PathBuf, String> {
        let guard = self.snapshots();
        match guard.as_ref() {
            Some(SnapshotsStatus { failing: Some(reason), .. }) => Err(reason.clone()),
            Some(SnapshotsStatus { last: Some((path, _)), .. }) => Ok(path.clone()),
            _ => Err("no snapshot was written".into()),
        }
    }

    /// After each pre-copy step; `None` when the upgrade ended.
    pub(crate) fn note_precopy(&self, progress: Option<PrecopyProgress>) {
        *self.precopy.lock().unwrap_or_else(|p| p.into_inner()) = progress;
    }

    /// While a canary runs; `None` when it ended.
    pub(crate) fn note_catch_up(&self, progress: Option<CatchUpProgress>) {
        *self.catch_up.lock().unwrap_or_else(|p| p.into_inner()) = progress;
    }

    pub(crate) fn note_canary(&self, progress: Option<CanaryProgress>) {
        *self.canary.lock().unwrap_or_else(|p| p.into_inner()) = progress;
    }

    fn recovery_status(&self) -> std::sync::MutexGuard<'_, RecoveryStatus> {
        self.recovery.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// After every event: the journal's size (two relaxed stores, nothing more).
    pub(crate) fn note_journal(&self, recovery: &Recovery) {
        self.journal_bytes.store(recovery.len() as u64, Ordering::Relaxed);
        self.journal_events.store(recovery.events() as u64, Ordering::Relaxed);
    }

    /// After a checkpoint, commit, restore or recovery: where recovery stands.
    pub(crate) fn note_recovery_state(&self, recovery: &Recovery, replica_off: Option<String>) {
        self.note_journal(recovery);
        let mut status = self.recovery_status();
        status.replica_off = replica_off;
        status.off = recovery.off().map(ToString::to_string);
        status.checkpoint = recovery.checkpoint().map(|c| (c.at_unix_ms, c.bytes()));
        status.checkpoint_in_memory = recovery.checkpoint().map_or(0, |c| c.heap_bytes());
        status.journal_limit = recovery.limit() as u64;
    }

    /// The event loop started or finished rebuilding a trapped instance.
    pub(crate) fn recovering(&self, on: bool) {
        let since = if on { now_unix_ms().max(1) } else { 0 };
        self.recovering_since.store(since, Ordering::Relaxed);
    }

    /// A checkpoint was built from chunks, as `built` says.
    pub(crate) fn record_checkpoint(&self, built: CheckpointRecord) {
        let mut status = self.recovery_status();
        status.checkpoints += 1;
        status.last_checkpoint = Some(built);
    }

    /// A checkpoint was exported whole on the event loop, in `took`.
    pub(crate) fn record_whole_checkpoint(&self, took: Duration) {
        let mut status = self.recovery_status();
        status.checkpoints += 1;
        status.whole_checkpoints += 1;
        status.longest_whole_checkpoint = status.longest_whole_checkpoint.max(took);
    }

    pub(crate) fn record_replica_checkpoint(&self, record: ReplicaCheckpointRecord) {
        let mut status = self.recovery_status();
        status.checkpoints += 1;
        status.replica_checkpoints += 1;
        status.last_replica_checkpoint = Some(record);
    }

    pub(crate) fn record_recovery(&self, record: RecoveryRecord) {
        let mut status = self.recovery_status();
        status.recoveries += 1;
        status.last = Some(record);
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Current> {
        // A panic while holding this lock leaves plain data behind; reading it is still sound.
        self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The running version's `describe`, for checking an upgrade before the pause.
    pub(crate) fn running_info(&self) -> AppInfo {
        self.current().info.clone()
    }

    pub(crate) fn record_commit(&self, report: &UpgradeReport, info: AppInfo) {
        self.current().info = info;
        if let Some(memory) = report.memory {
            self.note_memory(Some(memory.after));
        }
        self.record_upgrade(Ok(report));
    }

    fn memory_status(&self) -> std::sync::MutexGuard<'_, MemoryStatus> {
        self.memory.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The live instance's latest memory report.
    pub(crate) fn note_memory(&self, usage: Option<MemoryUsage>) {
        self.memory_status().usage = usage;
    }

    /// The live instance's latest memory report, if it gave one.
    pub(crate) fn memory(&self) -> Option<MemoryUsage> {
        self.memory_status().usage
    }

    /// The linear memory, in bytes, of the live instance when it was fresh: read as the host
    /// starts and after every swap, before any client event reaches the instance. What a
    /// compaction can bring the memory back to; 0 when the instance cannot say.
    pub(crate) fn note_fresh_memory(&self, linear_memory: u64) {
        self.fresh_memory.store(linear_memory, Ordering::Relaxed);
    }

    /// See [`Shared::note_fresh_memory`]; `None` until known.
    pub(crate) fn fresh_memory(&self) -> Option<u64> {
        Some(self.fresh_memory.load(Ordering::Relaxed)).filter(|&m| m > 0)
    }

    /// How a compaction ended (a same-release upgrade: not counted as an upgrade).
    pub(crate) fn record_compaction(&self, outcome: Result<&UpgradeReport, String>) {
        let mut memory = self.memory_status();
        if let Ok(report) = outcome {
            memory.compactions += 1;
            memory.usage = report.memory.map(|m| m.after).or(memory.usage);
        }
        memory.last_compaction =
            Some(LastUpgrade { at_unix_ms: now_unix_ms(), outcome: outcome.cloned() });
    }

    pub(crate) fn record_upgrade(&self, outcome: Result<&UpgradeReport, String>) {
        let mut current = self.current();
        if let Ok(report) = outcome {
            current.app = report.to.clone();
            current.wasm = report.wasm.clone();
            current.since = Instant::now();
            current.upgrades += 1;
        }
        current.last_upgrade =
            Some(LastUpgrade { at_unix_ms: now_unix_ms(), outcome: outcome.cloned() });
    }

    pub(crate) fn status(&self) -> Status {
        let current = self.current();
        Status {
            app: current.app.clone(),
            wasm: current.wasm.clone(),
            listen: self.listen.clone(),
            uptime: self.started.elapsed(),
            version_uptime: current.since.elapsed(),
            connections: self.connections.load(Ordering::Relaxed),
            upgrades: current.upgrades,
            last_upgrade: current.last_upgrade.clone(),
            precopy: self.precopy.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            canary: self.canary.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            catch_up: self.catch_up.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            recovery: {
                let mut recovery = Box::new(self.recovery_status().clone());
                recovery.journal_bytes = self.journal_bytes.load(Ordering::Relaxed);
                recovery.journal_events = self.journal_events.load(Ordering::Relaxed);
                recovery.recovering_since_unix_ms =
                    Some(self.recovering_since.load(Ordering::Relaxed)).filter(|&t| t > 0);
                recovery
            },
            memory: MemoryStatus {
                resident: crate::host_info::resident_memory(),
                ..self.memory_status().clone()
            },
            snapshots: self.snapshots().clone(),
            output: OutputStatus {
                largest_call: self.largest_call_output.load(Ordering::Relaxed),
                largest_queue: self.largest_queue.load(Ordering::Relaxed),
                writable_calls: self.writable_calls.load(Ordering::Relaxed),
                waiting: self.waiting_writable.load(Ordering::Relaxed),
            },
            listeners: self.listeners.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

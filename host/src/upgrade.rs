//! The upgrade transaction (DESIGN.md, "The upgrade, step by step").
//!
//! [`prepare`] runs on the requester's thread while the old version keeps serving: compile, link,
//! instantiate, `init`, `describe`, and the check that the new version reads every state section
//! the old one writes. The dispatcher then pauses at an event boundary and runs [`swap`]: export,
//! transform, import, and commit — replacing the [`Live`] value in one move — or drop the new
//! instance and carry on with the old one. Nothing here touches a socket: the dispatcher hands
//! over the open connections' descriptions and applies the new instance's effects after.

use crate::bindings::{AppInfo, ConnInfo, Snapshot};
use crate::canary::{CanaryReport, Divergence, Window};
use crate::catchup::CatchUpReport;
use crate::clock::EventClock;
use crate::instance::{CallError, Instance, MemoryUsage, chunk_bytes, snapshot_bytes};
use crate::live::{Imported, Live};
use crate::precopy::{self, PrecopyReport};
use crate::runtime::Runtime;
use crate::spill::Chunks;
use crate::transformer::{Pipeline, TransformError};
pub use crate::version::AppVersion;
use crate::version::{LoadError, Version};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One state section that crossed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionReport {
    pub name: String,
    pub version: u32,
    pub bytes: u64,
}

/// How to upgrade, besides to what.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeOptions {
    /// Transformers the state goes through, in order (`--transform`).
    pub transforms: Vec<PathBuf>,
    /// Take the state from the host's last checkpoint and journal instead of an export.
    pub from_checkpoint: bool,
    /// Move the whole state inside the pause, without pre-copy (`--no-precopy`): for a
    /// migration or transformer that must read a collection whole (to rekey it, say), which a
    /// pre-copy cannot feed.
    pub no_precopy: bool,
    /// `--no-catch-up`: a whole-state transfer imports inside the pause too, rather than on a
    /// thread of its own while the old version serves (see [`crate::catchup`]).
    pub no_catch_up: bool,
    /// `--canary`: after the import, run the new version beside the old one on every client
    /// event of this window, comparing their output, and commit only if it agreed (see
    /// [`crate::canary`]).
    pub canary: Option<Window>,
    /// Where a canary that diverges saves its reproduction: a `tasuki test` trace of its events
    /// and the snapshot file it starts from (`canary-<ms>.trace`, `canary-<ms>.snap`). `None`
    /// saves nothing (`tasuki upgrade` passes its working directory, or `--divergence-dir`).
    pub divergence_dir: Option<PathBuf>,
    /// The new version's `init` arguments (`--arg`), replacing the running version's from the
    /// commit on (rebuilds after a trap and later upgrades use them too); `None` keeps the
    /// running version's. A rollback keeps the old ones.
    pub args: Option<Vec<String>>,
}

/// Where the state a new version imported came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateSource {
    /// Exported by the running version during the pause: the normal case.
    Export,
    /// The host's last checkpoint, then every event journaled since, replayed into the new
    /// version: `--from-checkpoint` (when the running version cannot export, in the pause), or
    /// a catch-up to the same component (off the loop, see [`crate::catchup`]).
    Checkpoint {
        /// When the checkpoint was taken; `None` if there was none (the app's start).
        at_unix_ms: Option<u64>,
        events_replayed: u64,
        /// False if the journal had overflowed: changes after the checkpoint are lost.
        complete: bool,
    },
    /// Exported off the loop by a replica: a second instance of the running version, rebuilt
    /// from the host's last checkpoint and every event journaled since, as a Redis replica
    /// loads its master's RDB and then the replication stream (a catch-up to another component
    /// of an app whose state cannot be pre-copied, see [`crate::catchup`]). No export in the
    /// pause.
    Replica {
        /// When the checkpoint was taken.
        at_unix_ms: u64,
        events_replayed: u64,
        /// Starting the replica, importing the checkpoint and replaying the journal; then its
        /// export. Zero until the replica has exported.
        rebuild: Duration,
        export: Duration,
    },
}

/// What a committed upgrade did and what it cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeReport {
    pub from: AppVersion,
    pub to: AppVersion,
    pub wasm: PathBuf,
    /// Compile, link, instantiate and `init`, while the old version kept serving.
    pub prepare: Duration,
    /// Of `prepare`, the part spent compiling.
    pub compile: Duration,
    /// Time no event was dispatched: export, import, commit (with a catch-up, the export and
    /// the commit; the import ran while the old version served).
    pub pause: Duration,
    pub export: Duration,
    /// Of `pause`, the part spent in transformers.
    pub transform: Duration,
    /// The transformers the state went through, by name.
    pub transformers: Vec<String>,
    pub import: Duration,
    pub sections: Vec<SectionReport>,
    /// Bytes of state moved from the old instance to the new one.
    pub state_bytes: u64,
    /// Connections open across the swap (none is closed by it).
    pub connections: u64,
    pub source: StateSource,
    /// The pre-copy before the pause; `None` when everything crossed inside it (a side that
    /// predates pre-copy, or `--from-checkpoint`).
    pub precopy: Option<PrecopyReport>,
    /// The old instance's memory just before the pause and the new one's just after the
    /// import, as each reports it; `None` when either side predates the `memory` export. The
    /// new instance holds only the live state, so this is what a compaction gives back.
    pub memory: Option<MemoryChange>,
    /// Set when this was a compaction (the live release swapped for a fresh instance of
    /// itself, to give back its garbage): why it ran.
    pub compaction: Option<String>,
    /// `--canary`: what the new version ran beside the old one, and agreed on, before it took
    /// over. The pause above is the import's; the commit after the canary moved nothing.
    pub canary: Option<CanaryReport>,
    /// A whole-state transfer whose import ran off the loop, the old version serving, and whose
    /// new instance then ran the events since the export (see [`crate::catchup`]); also set,
    /// with why, when one was abandoned for a transfer in the pause.
    pub catch_up: Option<CatchUpReport>,
}

impl UpgradeReport {
    /// The report of an upgrade from `from` to `next` before anything moved: what it is and
    /// what preparing it cost; the pause, the transfer and the rest are zero or empty.
    pub(crate) fn begun(from: AppVersion, next: &Prepared) -> Self {
        Self {
            from,
            to: AppVersion::from(&next.info),
            wasm: next.version.path.clone(),
            prepare: next.prepare_time,
            // A compaction reuses the live version, compiled long ago.
            compile: if next.compaction.is_some() {
                Duration::ZERO
            } else {
                next.version.compile_time
            },
            pause: Duration::ZERO,
            export: Duration::ZERO,
            transform: Duration::ZERO,
            transformers: next.pipeline.stages.iter().map(|t| t.info.name.clone()).collect(),
            import: Duration::ZERO,
            sections: Vec::new(),
            state_bytes: 0,
            connections: 0,
            source: StateSource::Export,
            precopy: None,
            memory: None,
            compaction: next.compaction.clone(),
            canary: None,
            catch_up: None,
        }
    }
}

/// Memory before and after a swap (see [`UpgradeReport::memory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryChange {
    pub before: MemoryUsage,
    pub after: MemoryUsage,
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1_048_576.0)
}

/// How long ago `at_unix_ms` was, in seconds: "5.1s ago".
fn ago(at_unix_ms: u64) -> String {
    format!("{:.1}s ago", crate::clock::now_unix_ms().saturating_sub(at_unix_ms) as f64 / 1e3)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

impl fmt::Display for UpgradeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.compaction {
            Some(why) => writeln!(f, "compacted {} ({why})", self.to)?,
            None => writeln!(f, "upgraded {} -> {}", self.from, self.to)?,
        }
        let from_journal = matches!(self.source, StateSource::Checkpoint { .. });
        let replica = match self.source {
            StateSource::Replica { rebuild, export, .. } => Some((rebuild, export)),
            _ => None,
        };
        match &self.catch_up {
            Some(c)
                if c.abandoned.is_none()
                    && let Some((rebuild, export)) = replica =>
            {
                writeln!(
                    f,
                    "  pause        {} (no export: the journal copied; a replica of the old \
                     version rebuilt from it in {} and exported in {}, then transform {} and \
                     import {}, while the old version served)",
                    ms(self.pause),
                    ms(rebuild),
                    ms(export),
                    ms(c.transform),
                    ms(c.import)
                )?
            }
            Some(c) if c.abandoned.is_none() && from_journal => writeln!(
                f,
                "  pause        {} (no export: the journal copied; importing the checkpoint \
                 and replaying the journal took {} while the old version served)",
                ms(self.pause),
                ms(c.import)
            )?,
            Some(c) if c.abandoned.is_none() => writeln!(
                f,
                "  pause        {} (export {}; transform {} and import {} ran while the old \
                 version served)",
                ms(self.pause),
                ms(self.export),
                ms(c.transform),
                ms(c.import)
            )?,
            _ => writeln!(
                f,
                "  pause        {} (export {}, transform {}, import {})",
                ms(self.pause),
                ms(self.export),
                ms(self.transform),
                ms(self.import)
            )?,
        }
        if !self.transformers.is_empty() {
            writeln!(f, "  transformed  by {}", self.transformers.join(" -> "))?;
        }
        let sections: Vec<String> = self
            .sections
            .iter()
            .map(|s| format!("{} v{} {} B", s.name, s.version, s.bytes))
            .collect();
        match sections.is_empty() {
            true => writeln!(f, "  state moved  {} bytes", self.state_bytes)?,
            false => {
                writeln!(f, "  state moved  {} bytes ({})", self.state_bytes, sections.join(", "))?
            }
        }
        if let Some(m) = &self.memory {
            writeln!(
                f,
                "  memory       heap {} of {} linear memory before, {} of {} after",
                mib(m.before.heap_in_use),
                mib(m.before.linear_memory),
                mib(m.after.heap_in_use),
                mib(m.after.linear_memory)
            )?;
        }
        if let Some(p) = &self.precopy {
            writeln!(
                f,
                "  pre-copied   {} bytes in {} steps (the longest {}) over {} while serving; {} \
                 bytes in the pause{}",
                p.bytes,
                p.steps,
                ms(p.longest_step),
                ms(p.took),
                p.paused_bytes,
                if p.converged {
                    String::new()
                } else {
                    format!(
                        " (did not converge: changes outran the copy, {} bytes were owed when \
                         the host stopped iterating)",
                        p.owed_at_pause
                    )
                }
            )?;
            if p.throttled_rounds > 0 {
                writeln!(
                    f,
                    "               client input slowed in {} rounds of events so that the copy could \
                     catch up with the writes",
                    p.throttled_rounds
                )?;
            }
        }
        writeln!(
            f,
            "  prepared in  {} before the pause (compile {})",
            ms(self.prepare),
            ms(self.compile)
        )?;
        if let Some(c) = &self.canary {
            writeln!(
                f,
                "  canary       {} client events and {} timer firings run by both versions over {:.1} s \
                 ({}): all {} bytes of replies agreed{}; committed by swapping instances, nothing \
                 more crossed",
                c.events,
                c.timers,
                c.took.as_secs_f64(),
                c.window,
                c.bytes_compared,
                match c.declared_differences {
                    0 => String::new(),
                    n => format!(" but for {n} differences the new release declares expected"),
                }
            )?;
        }
        if let Some(c) = &self.catch_up {
            let boundary = if from_journal || replica.is_some() { "boundary" } else { "export" };
            match &c.abandoned {
                None => writeln!(
                    f,
                    "  caught up    the new version ran the {} events since the {boundary} ({} \
                     bytes of replies agreed) in {} steps, the longest {}; {} from the \
                     {boundary} to the commit",
                    c.events,
                    c.bytes_compared,
                    c.steps,
                    ms(c.longest_step),
                    ms(c.took)
                )?,
                Some(why) => writeln!(
                    f,
                    "  catch-up     abandoned after {} events ({why}): the state moved whole in \
                     the pause",
                    c.events
                )?,
            }
        }
        write!(f, "  connections  {} kept open", self.connections)?;
        if let StateSource::Checkpoint { at_unix_ms, events_replayed, complete } = &self.source {
            let at = match at_unix_ms {
                Some(at) => format!("the checkpoint of {}", ago(*at)),
                None => "the app's start (no checkpoint was taken)".to_string(),
            };
            write!(f, "\n  state from   {at}, then {events_replayed} events replayed")?;
            if !complete {
                write!(
                    f,
                    "\n  WARNING      the journal had overflowed: changes after the checkpoint are lost"
                )?;
            }
        }
        if let StateSource::Replica { at_unix_ms, events_replayed, .. } = &self.source {
            write!(
                f,
                "\n  state from   a replica of {}: the checkpoint of {}, then {events_replayed} \
                 events replayed",
                self.from,
                ago(*at_unix_ms)
            )?;
        }
        Ok(())
    }
}

/// Why an upgrade did not happen. In every case the version that was serving still serves.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(
        "an upgrade is already in progress (a pre-copy, a pause, a canary or a compaction); try \
         again when it has finished: `tasuki status` shows how far it is"
    )]
    InProgress,
    #[error("refused before any pause: {0}")]
    Load(#[from] LoadError),
    #[error("refused before any pause: {wasm} failed to start: {error}")]
    Start { wasm: PathBuf, error: Box<CallError> },
    #[error("refused before any pause: {wasm} is app `{new}`, but the running app is `{running}`")]
    WrongApp { wasm: PathBuf, running: AppVersion, new: AppVersion },
    #[error(
        "refused before any pause: {running} writes state section `{section}` version {version}, \
         which {new} does not read (it reads versions {accepts:?})"
    )]
    Incompatible {
        running: Box<AppVersion>,
        new: Box<AppVersion>,
        section: String,
        version: u32,
        accepts: Vec<u32>,
    },
    #[error(
        "rolled back, {running} keeps serving: it failed to export its state: {error}{}",
        if *rebuilt { " (it was rebuilt from its checkpoint and journal; if export keeps failing, \
        `tasuki upgrade --from-checkpoint` moves the last checkpoint and replays the events since)" } else { "" }
    )]
    Export { running: AppVersion, error: Box<CallError>, rebuilt: bool },
    #[error(
        "rolled back, {running} keeps serving: its state is {bytes} bytes, over the limit of {limit} (--max-state)"
    )]
    TooLarge { running: AppVersion, bytes: u64, limit: u64 },
    #[error("refused before any pause: {0}")]
    Chain(#[from] crate::transformer::ChainError),
    #[error("rolled back, {running} keeps serving: {error}")]
    Transform { running: AppVersion, error: Box<TransformError> },
    #[error("rolled back, {running} keeps serving: {new} failed to import the state: {error}")]
    Import { running: AppVersion, new: AppVersion, error: Box<CallError> },
    #[error(
        "not done: the host is stopping (SIGTERM or Ctrl-C); the version that was serving kept \
         its state and stops with it"
    )]
    HostStopped,
    #[error(
        "rolled back, {running} keeps serving: it trapped and was rebuilt at the pause, which \
         ended the pre-copy session; try again"
    )]
    Interrupted { running: AppVersion },
    #[error(
        "refused before any pause: --canary needs the running version's export; with \
         --from-checkpoint there is none to compare against"
    )]
    CanaryFromCheckpoint,
    #[error(
        "rolled back, {running} keeps serving: {new} answered differently in the canary; no \
         client saw its replies. First difference: {divergence}{}",
        saved.as_ref().map(|s| format!("\n  saved as a test, which fails the same way until {new} is fixed:\n    {s}")).unwrap_or_default()
    )]
    Diverged {
        running: Box<AppVersion>,
        new: Box<AppVersion>,
        divergence: Box<Divergence>,
        /// The command that reproduces it, when its reproduction was saved
        /// ([`UpgradeOptions::divergence_dir`]).
        saved: Option<String>,
    },
    #[error(
        "rolled back, {running} keeps serving: {new} failed in the canary, at {event}: {error}; \
         no client saw its replies"
    )]
    CanaryTrapped { running: Box<AppVersion>, new: Box<AppVersion>, event: String, error: String },
    #[error(
        "rolled back, {running} keeps serving: the canary of {new} ended early: {cause}; try again"
    )]
    CanaryInterrupted { running: Box<AppVersion>, new: Box<AppVersion>, cause: String },
}

/// A new version, instantiated and initialised, waiting for the pause.
#[derive(Debug)]
pub struct Prepared {
    pub(crate) version: Arc<Version>,
    pub(crate) instance: Instance,
    pub(crate) info: AppInfo,
    pub(crate) prepare_time: Duration,
    pub(crate) from_checkpoint: bool,
    /// `--no-precopy`.
    pub(crate) no_precopy: bool,
    /// `--no-catch-up`.
    pub(crate) no_catch_up: bool,
    pub(crate) pipeline: Pipeline,
    /// A compaction, and why (see [`UpgradeReport::compaction`]).
    pub(crate) compaction: Option<String>,
    /// `--canary`.
    pub(crate) canary: Option<Window>,
    /// The arguments the new instance was started with: the host's from the commit on.
    pub(crate) args: Vec<String>,
}

/// Step 2 of the upgrade: everything that can happen before the pause.
pub(crate) fn prepare(
    runtime: &Runtime,
    wasm: &Path,
    args: &[String],
    running: &AppInfo,
    options: &UpgradeOptions,
) -> Result<Prepared, UpgradeError> {
    let started = Instant::now();
    let version = Version::load(runtime, wasm)?;
    let pipeline = Pipeline::load(runtime, &options.transforms)?;
    if options.canary.is_some() && options.from_checkpoint {
        return Err(UpgradeError::CanaryFromCheckpoint);
    }
    let args = options.args.as_deref().unwrap_or(args);
    let mut prepared =
        prepare_loaded(version, pipeline, args, running, options.from_checkpoint, started)?;
    prepared.no_precopy = options.no_precopy;
    prepared.no_catch_up = options.no_catch_up;
    prepared.canary = options.canary;
    Ok(prepared)
}

/// [`prepare`] for a version and transformers already loaded: instantiate, `init`, and check
/// that the new version reads what the running one writes, through the transformers.
pub(crate) fn prepare_loaded(
    version: Arc<Version>,
    pipeline: Pipeline,
    args: &[String],
    running: &AppInfo,
    from_checkpoint: bool,
    started: Instant,
) -> Result<Prepared, UpgradeError> {
    let wasm = version.path.clone();
    let (instance, info) = crate::recovery::start(&version, args)
        .map_err(|error| UpgradeError::Start { wasm: wasm.clone(), error: Box::new(error) })?;
    check_chain(&wasm, running, &info, &pipeline)?;
    Ok(Prepared {
        version,
        instance,
        info,
        prepare_time: started.elapsed(),
        from_checkpoint,
        no_precopy: false,
        no_catch_up: false,
        pipeline,
        compaction: None,
        canary: None,
        args: args.to_vec(),
    })
}

/// The new version (`new`, from `wasm`) reads what the running one writes, through `pipeline`.
pub(crate) fn check_chain(
    wasm: &Path,
    running: &AppInfo,
    new: &AppInfo,
    pipeline: &Pipeline,
) -> Result<(), UpgradeError> {
    if pipeline.is_empty() {
        return check_compatible(wasm, running, new);
    }
    if running.name != new.name {
        return Err(UpgradeError::WrongApp {
            wasm: wasm.into(),
            running: running.into(),
            new: new.into(),
        });
    }
    let written: Vec<(String, u32)> =
        running.sections.iter().map(|s| (s.name.clone(), s.version)).collect();
    pipeline.check(&written, new)?;
    Ok(())
}

/// Instantiates a version and runs `init` and `describe`, for tools that check a migration
/// against an app (`tasuki migrate --check`).
pub fn start_instance(
    version: &Version,
    args: &[String],
) -> Result<(Instance, AppInfo), CallError> {
    crate::recovery::start(version, args)
}

/// How [`swap`] ended.
#[derive(Debug)]
pub(crate) enum Swap {
    /// The new version serves; `retired` is the live value it replaced, to be dropped off the
    /// pause. `believed`, after `--from-checkpoint`: the timers the new instance believes armed
    /// after its replay, which replace the host's, and what it believes about its listeners.
    Committed {
        report: Box<UpgradeReport>,
        retired: Box<Live>,
        believed: Option<crate::recovery::Believed>,
    },
    /// The old version serves on; `retired` is what the upgrade leaves to drop off the loop
    /// (the new instance, if there is one). If the old instance trapped while exporting (an
    /// `Export` error holding a trap), the dispatcher must rebuild it before the next event.
    RolledBack { error: UpgradeError, retired: Box<dyn std::any::Any + Send> },
    /// `--canary`: the new version imported the state and now runs beside the old one, which
    /// serves on; `report` is the upgrade's so far (its pause is the import's).
    Canary { report: Box<UpgradeReport>, candidate: Box<Live>, window: Window },
}

/// Where the host stands at the boundary an upgrade runs at.
#[derive(Debug)]
pub(crate) struct Boundary<'a> {
    /// The connections open now.
    pub(crate) conns: Vec<ConnInfo>,
    /// The host's armed timers (id, deadline) and the monotonic time now.
    pub(crate) timers: Vec<(u64, u64)>,
    pub(crate) mono: u64,
    pub(crate) clock: &'a EventClock,
    pub(crate) max_state: u64,
}

/// An upgrade between its prepare and its pause: the new instance, and the pre-copy session
/// if the state crosses ahead of the pause.
#[derive(Debug)]
pub(crate) struct Underway {
    pub(crate) next: Prepared,
    pub(crate) precopy: Option<precopy::Session>,
}

/// What [`begin`] made of a prepared upgrade.
#[derive(Debug)]
pub(crate) enum Begun {
    /// Pre-copy under way: step it between events, then [`swap`].
    Precopy(Underway),
    /// No pre-copy (a side predates it, `--from-checkpoint`, or the old version refused):
    /// [`swap`] at the next boundary moves everything in the pause.
    Full(Underway),
    /// The transformers could not start: rolled back before anything moved.
    Failed(Swap),
}

/// Step 3 of the upgrade: open the pre-copy session, if every part can.
pub(crate) fn begin(
    live: &mut Live,
    mut next: Prepared,
    budget: precopy::Budget,
    max_state: u64,
) -> Begun {
    if next.from_checkpoint || next.no_precopy || budget.chunk == 0 {
        return Begun::Full(Underway { next, precopy: None });
    }
    let begun =
        precopy::Session::begin(live, &mut next.instance, &next.pipeline, budget, max_state);
    match begun {
        Ok(Some(session)) => Begun::Precopy(Underway { next, precopy: Some(session) }),
        Ok(None) => Begun::Full(Underway { next, precopy: None }),
        Err(error) => {
            let error = failed(live, AppVersion::from(&next.info), error);
            Begun::Failed(Swap::RolledBack { error, retired: Box::new(next.instance) })
        }
    }
}

/// The live instance was rebuilt (it trapped) while the pre-copy was under way: its session
/// went with it. Starts over into a fresh new instance; the old version serves meanwhile.
fn restart(live: &mut Live, underway: &mut Underway, max_state: u64) -> Result<(), UpgradeError> {
    let budget = underway.precopy.as_ref().map(|s| s.budget()).unwrap_or_default();
    let next = &mut underway.next;
    let (instance, _) = crate::recovery::start(&next.version, &next.args).map_err(|error| {
        UpgradeError::Start { wasm: next.version.path.clone(), error: Box::new(error) }
    })?;
    next.instance = instance;
    tracing::info!("{} was rebuilt during the pre-copy; starting the pre-copy over", live.app());
    let begun =
        precopy::Session::begin(live, &mut next.instance, &next.pipeline, budget, max_state);
    underway.precopy = begun.map_err(|error| failed(live, AppVersion::from(&next.info), error))?;
    Ok(())
}

/// One pre-copy step, between events. `Err` is the rollback: the old version serves on (if it
/// trapped, the dispatcher rebuilds it).
pub(crate) fn step(
    live: &mut Live,
    underway: &mut Underway,
    max_state: u64,
    monotonic_ns: &dyn Fn() -> u64,
) -> Result<precopy::Next, UpgradeError> {
    if underway.precopy.as_ref().is_some_and(|s| !s.belongs_to(live)) {
        restart(live, underway, max_state)?;
        return Ok(precopy::Next::Continue);
    }
    let Underway { next, precopy } = underway;
    let Some(session) = precopy else { return Ok(precopy::Next::Pause) };
    session
        .step(live, &mut next.instance, max_state, monotonic_ns)
        .map_err(|error| failed(live, AppVersion::from(&next.info), error))
}

/// A pre-copy step failed: the old instance's session is closed (unless it trapped, taking the
/// session with it) and the rollback says why.
fn failed(live: &mut Live, new: AppVersion, error: precopy::StepError) -> UpgradeError {
    if !error.old_trapped() {
        live.precopy_abort();
    }
    step_error(live.app(), new, error)
}

fn step_error(running: AppVersion, new: AppVersion, error: precopy::StepError) -> UpgradeError {
    match error {
        precopy::StepError::Export(error) => {
            UpgradeError::Export { running, error: Box::new(error), rebuilt: false }
        }
        precopy::StepError::Transform(error) => {
            UpgradeError::Transform { running, error: Box::new(error) }
        }
        precopy::StepError::Import(error) => {
            UpgradeError::Import { running, new, error: Box::new(error) }
        }
        precopy::StepError::TooLarge { bytes, limit } => {
            UpgradeError::TooLarge { running, bytes, limit }
        }
    }
}

/// Drops an upgrade under way (the host stops, or the old instance was replaced): the old
/// instance's session is closed if it is still the one that opened it.
pub(crate) fn cancel(live: &mut Live, underway: Underway, error: UpgradeError) -> Swap {
    if underway.precopy.as_ref().is_some_and(|s| s.belongs_to(live)) {
        live.precopy_abort();
    }
    Swap::RolledBack { error, retired: Box::new(underway.next.instance) }
}

/// Steps 4–7 of the upgrade, at an event boundary: export (the last pre-copy round, or the
/// whole state, or the checkpoint and the journal after it), transform, import, commit or roll
/// back.
pub(crate) fn swap(live: &mut Live, underway: Underway, at: Boundary<'_>) -> Swap {
    let Underway { mut next, mut precopy } = underway;
    let Boundary { conns, timers, mono, clock, max_state } = at;
    let running = live.app();
    let new = AppVersion::from(&next.info);
    let paused = Instant::now();
    let memory_before = live.memory_usage().ok().flatten();
    let connections = conns.len() as u64;
    let rollback = |live: &mut Live, error: UpgradeError, retired: Instance, abort: bool| {
        if abort {
            live.precopy_abort();
        }
        Swap::RolledBack { error, retired: Box::new(retired) }
    };
    if let Some(session) = &precopy
        && !session.belongs_to(live)
    {
        return rollback(live, UpgradeError::Interrupted { running }, next.instance, false);
    }

    // Export: the last pre-copy round, the whole state, or with --from-checkpoint the
    // checkpoint (and below, the journal after it).
    let (chunks, snapshot, importing, source) = if next.from_checkpoint {
        let recovery = live.recovery();
        let checkpoint = recovery.checkpoint();
        let source = StateSource::Checkpoint {
            at_unix_ms: checkpoint.map(|c| c.at_unix_ms),
            events_replayed: recovery.events() as u64,
            complete: recovery.is_on(),
        };
        match checkpoint.map(|c| c.chunks.read().map(|chunks| (chunks, c))) {
            Some(Ok((chunks, c))) => {
                (chunks, Some(Snapshot::clone(&c.snapshot)), c.live.clone(), source)
            }
            Some(Err(e)) => {
                let error = CallError::Refused(format!(
                    "the checkpoint's chunks cannot be read back from their file: {e}"
                ));
                let error =
                    UpgradeError::Export { running, error: Box::new(error), rebuilt: false };
                return rollback(live, error, next.instance, false);
            }
            None => (Vec::new(), None, Vec::new(), source),
        }
    } else {
        let exported = match &precopy {
            Some(_) => live.precopy_finish(),
            None => live.export().map(|snapshot| (Vec::new(), snapshot)),
        };
        match exported {
            Ok((chunks, snapshot)) => (chunks, Some(snapshot), conns, StateSource::Export),
            Err(error) => {
                // A refusal leaves the session open; a trap leaves nothing to close.
                let abort = precopy.is_some() && error.trap().is_none();
                let error =
                    UpgradeError::Export { running, error: Box::new(error), rebuilt: false };
                return rollback(live, error, next.instance, abort);
            }
        }
    };
    let export = paused.elapsed();
    let paused_bytes = chunk_bytes(&chunks) + snapshot.as_ref().map_or(0, snapshot_bytes);
    let state_bytes = paused_bytes + precopy.as_ref().map_or(0, precopy::Session::bytes);
    if state_bytes > max_state {
        let error = UpgradeError::TooLarge { running, bytes: state_bytes, limit: max_state };
        return rollback(live, error, next.instance, false);
    }
    let crossing = match (snapshot, &mut precopy) {
        (None, _) => Ok(None),
        (Some(snapshot), Some(session)) => session
            .transform_last(chunks)
            .and_then(|chunks| Ok(Some((chunks, session.chain().snapshot(snapshot)?)))),
        (Some(snapshot), None) if next.pipeline.is_empty() => Ok(Some((chunks, snapshot))),
        (Some(snapshot), None) => next.pipeline.apply_chunked(chunks, snapshot).map(Some),
    };
    let crossing = match crossing {
        Ok(crossing) => crossing,
        Err(error) => {
            let error = UpgradeError::Transform { running, error: Box::new(error) };
            return rollback(live, error, next.instance, false);
        }
    };
    let transform = paused.elapsed() - export;

    let imported = match &crossing {
        Some((chunks, snapshot)) => next.instance.import(chunks, snapshot, &importing),
        None => Ok(()),
    };
    let replayed = imported.and_then(|()| match source {
        StateSource::Checkpoint { .. } => live.replay_journal(&mut next.instance, clock).map(Some),
        // A replica is a catch-up's: the swap in the pause takes the live instance's export.
        StateSource::Export | StateSource::Replica { .. } => Ok(None),
    });
    let replayed_timers = match replayed {
        Ok(timers) => timers,
        Err(error) => {
            let error = UpgradeError::Import { running, new, error: Box::new(error) };
            return rollback(live, error, next.instance, false);
        }
    };
    let import = paused.elapsed() - export - transform;
    let memory_after = next.instance.memory_usage().ok().flatten();
    let memory =
        memory_before.zip(memory_after).map(|(before, after)| MemoryChange { before, after });

    // Commit: from here on every event goes to the new instance, and its recovery state is
    // what it imported — after the transformers, so a rebuild offers it its own shape.
    let checkpoint_dir = live.version().runtime.limits.checkpoint_dir.clone();
    let (precopied, precopy_report) = match precopy {
        Some(session) => {
            let (chunks, report) = session.end(paused_bytes, paused);
            (chunks, Some(report))
        }
        None => (Chunks::new(checkpoint_dir.as_deref()), None),
    };
    let sections = crossing.as_ref().map_or_else(Vec::new, |(_, s)| sections(s));
    let imported = match (&source, crossing) {
        (StateSource::Export, Some((last, snapshot))) => {
            let mut chunks = precopied;
            chunks.extend(last);
            Imported::Snapshot(chunks, snapshot, importing)
        }
        (_, crossing) => Imported::Journal(crossing.map(|(chunks, snapshot)| {
            (Chunks::from_vec(checkpoint_dir.as_deref(), chunks), snapshot)
        })),
    };
    let mut report = UpgradeReport {
        export,
        transform,
        import,
        sections,
        state_bytes,
        connections,
        source,
        precopy: precopy_report,
        memory,
        ..UpgradeReport::begun(running, &next)
    };
    match (imported, next.canary) {
        (Imported::Snapshot(chunks, snapshot, importing), Some(window)) => {
            // The candidate does not take over yet: it runs beside the old version.
            let candidate = live.candidate(
                next.version,
                next.instance,
                next.info,
                (chunks, snapshot, importing),
                timers,
                mono,
            );
            report.pause = paused.elapsed();
            Swap::Canary { report: Box::new(report), candidate: Box::new(candidate), window }
        }
        (imported, _) => {
            let retired =
                live.commit(next.version, next.instance, next.info, imported, timers, mono);
            report.pause = paused.elapsed();
            Swap::Committed {
                report: Box::new(report),
                retired: Box::new(retired),
                believed: replayed_timers,
            }
        }
    }
}

pub(crate) fn sections(snapshot: &Snapshot) -> Vec<SectionReport> {
    snapshot
        .sections
        .iter()
        .filter(|s| s.name != crate::transformer::PRECOPY_SECTION)
        .map(|s| SectionReport {
            name: s.name.clone(),
            version: s.version,
            bytes: s.bytes.len() as u64,
        })
        .collect()
}

/// The new version must be the same app and read every section the running one writes.
pub(crate) fn check_compatible(
    wasm: &Path,
    running: &AppInfo,
    new: &AppInfo,
) -> Result<(), UpgradeError> {
    if running.name != new.name {
        return Err(UpgradeError::WrongApp {
            wasm: wasm.into(),
            running: running.into(),
            new: new.into(),
        });
    }
    for written in &running.sections {
        let accepts = new
            .sections
            .iter()
            .find(|s| s.name == written.name)
            .map(|s| s.accepts.clone())
            .unwrap_or_default();
        // A release built before the SDK's back-pressure sections reads none of them.
        let optional = accepts.is_empty() && crate::transformer::optional_section(&written.name);
        if !accepts.contains(&written.version) && !optional {
            return Err(UpgradeError::Incompatible {
                running: Box::new(running.into()),
                new: Box::new(new.into()),
                section: written.name.clone(),
                version: written.version,
                accepts,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::SectionSpec;

    fn app(name: &str, version: &str, sections: &[(&str, u32, &[u32])]) -> AppInfo {
        AppInfo {
            name: name.into(),
            version: version.into(),
            sections: sections
                .iter()
                .map(|(n, v, a)| SectionSpec {
                    name: (*n).into(),
                    version: *v,
                    accepts: a.to_vec(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_release_that_reads_the_old_sections_is_compatible() {
        let v1 = app("kv", "1.0.0", &[("kv", 1, &[1]), ("tasuki.conns", 1, &[1])]);
        let v2 = app("kv", "2.0.0", &[("kv", 2, &[2, 1]), ("tasuki.conns", 1, &[1])]);
        assert!(check_compatible(Path::new("v2.wasm"), &v1, &v2).is_ok());
        let err = check_compatible(Path::new("v1.wasm"), &v2, &v1).unwrap_err().to_string();
        assert!(err.contains("section `kv` version 2"), "{err}");
        assert!(err.contains("kv 1.0.0 does not read"), "{err}");
    }

    #[test]
    fn a_release_built_before_back_pressure_may_be_upgraded_to_without_its_sections() {
        let (conns, windows, streams) = ("tasuki.conns", "tasuki.windows", "tasuki.streams");
        let old = app("kv", "2.0.0", &[("kv", 2, &[2]), (conns, 1, &[1])]);
        let flow = [("kv", 2, &[2][..]), (conns, 1, &[1]), (windows, 1, &[1]), (streams, 1, &[1])];
        let new = app("kv", "2.1.0", &flow);
        assert!(check_compatible(Path::new("old.wasm"), &new, &old).is_ok());
        assert!(check_compatible(Path::new("new.wasm"), &old, &new).is_ok());
        // A release that reads the section, but not at the version written, is refused.
        let later = [("kv", 2, &[2][..]), (conns, 1, &[1]), (windows, 2, &[2]), (streams, 1, &[1])];
        let newer = app("kv", "2.2.0", &later);
        let err = check_compatible(Path::new("new.wasm"), &newer, &new).unwrap_err().to_string();
        assert!(err.contains("tasuki.windows"), "{err}");
    }

    #[test]
    fn another_app_is_refused_by_name() {
        let kv = app("kv", "1.0.0", &[]);
        let echo = app("echo", "1.0.0", &[]);
        let err = check_compatible(Path::new("echo.wasm"), &kv, &echo).unwrap_err().to_string();
        assert!(err.contains("is app `echo 1.0.0`, but the running app is `kv 1.0.0`"), "{err}");
    }
}

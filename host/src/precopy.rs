//! Pre-copy: the state crosses to the new instance in chunks while the old one serves, and the
//! pause moves only what changed since (Clark et al., "Live Migration of Virtual Machines",
//! NSDI 2005, applied to an app's collections instead of memory pages).
//!
//! One [`Session`] per upgrade. Between events the dispatcher calls [`Session::step`]: one call
//! of the old instance's `precopy.next` (about [`Budget::chunk`] bytes of records), the batch
//! through the transformers' instances, and one `precopy.import-chunks` on the new instance.
//! Each step is as short as an event, so clients wait at most one chunk's time. The step says
//! when to pause:
//! - **converged**: what is still owed fits a quarter of a chunk, so the final round is shorter
//!   than a step;
//! - **not converging**: the owed bytes have not reached a new low for [`Budget::stall_steps`]
//!   steps (the app changes entries faster than they are copied), or the steps passed
//!   [`Budget::max_steps`]: the final round then moves what is owed inside the pause, and the
//!   report says so.
//!
//! Until the commit the old instance is untouched (it only records which entries change) and
//! serving; any failure drops the new instance and the transformers', and the old one's session.

use crate::bindings::Chunk;
use crate::instance::{CallError, Instance, chunk_bytes};
use crate::live::Live;
use crate::spill::Chunks;
use crate::transformer::{ChainSession, Pipeline, TransformError};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// How a pre-copy paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes of records asked for per step (`--precopy-chunk`).
    pub chunk: u64,
    /// Steps without a new low of the owed bytes before the host stops iterating.
    pub stall_steps: u32,
    /// Steps after which the host stops iterating whatever the owed bytes do.
    pub max_steps: u32,
}

/// The default chunk: 64 KiB of records, about a millisecond of export and import together for
/// kv's small entries on the machine measured in `bench/RESULTS.md`, so a client waits at most
/// about that per step.
pub const DEFAULT_CHUNK: u64 = 64 << 10;

impl Default for Budget {
    fn default() -> Self {
        Self { chunk: DEFAULT_CHUNK, stall_steps: 64, max_steps: 100_000 }
    }
}

/// How far a step may grow past the chunk when writes outrun the copy: 16 chunks (1 MiB by
/// default, about 15 ms of kv's small entries). Live migration answers a dirtying rate above the
/// copy rate the same way, by copying faster (or throttling the writer); here a step grows
/// while what is owed makes no new low, so the copy keeps up with a writer that sends up to this
/// much per round, instead of leaving the whole rest to the cut — where a checkpoint of a state
/// being loaded once moved 176 MB in one call, which stalled every client and grew the guest's
/// memory by as much, for good.
pub const STEP_GROWTH_MAX: u64 = 16;

/// Steps in a row without a new low of what is owed before a step grows: one write to an entry
/// already copied can make a single step miss a new low without the copy falling behind.
const GROW_AFTER: u32 = 8;

/// When a run of steps should end: what is owed fell to a quarter chunk (converged), or it made
/// no new low for [`Budget::stall_steps`] steps, or the steps passed [`Budget::max_steps`]; and
/// how much the next step asks for: the chunk, doubled for every step that made no new low from
/// the [`GROW_AFTER`]th in a row on, up to [`STEP_GROWTH_MAX`] chunks, and kept for the rest of the run (going back to one chunk
/// would hand the lead back to the writer). Paces an upgrade's
/// pre-copy and a checkpoint built from chunks alike.
#[derive(Debug, Clone)]
pub(crate) struct Pace {
    budget: Budget,
    /// Bytes the next step asks for.
    step_bytes: u64,
    steps: u32,
    /// Bytes owed after the last step; `None` before the first.
    owed: Option<u64>,
    lowest: u64,
    since_lowest: u32,
    converged: bool,
}

impl Pace {
    pub(crate) fn new(budget: Budget) -> Self {
        Self {
            budget,
            step_bytes: budget.chunk,
            steps: 0,
            owed: None,
            lowest: u64::MAX,
            since_lowest: 0,
            converged: false,
        }
    }

    /// Bytes of records the next step asks for.
    pub(crate) fn step_bytes(&self) -> u64 {
        self.step_bytes
    }

    /// Notes a step that left `owed` bytes owed, and says whether to step again.
    pub(crate) fn step(&mut self, owed: u64) -> Next {
        self.steps += 1;
        self.owed = Some(owed);
        if owed <= self.budget.chunk / 4 {
            self.converged = true;
            return Next::Pause;
        }
        if owed < self.lowest {
            self.lowest = owed;
            self.since_lowest = 0;
        } else {
            self.since_lowest += 1;
            if self.since_lowest >= GROW_AFTER {
                let most = self.budget.chunk.saturating_mul(STEP_GROWTH_MAX);
                self.step_bytes = self.step_bytes.saturating_mul(2).min(most);
            }
        }
        if self.since_lowest >= self.budget.stall_steps || self.steps >= self.budget.max_steps {
            return Next::Pause;
        }
        Next::Continue
    }

    pub(crate) fn budget(&self) -> Budget {
        self.budget
    }

    pub(crate) fn steps(&self) -> u32 {
        self.steps
    }

    /// Bytes owed after the last step (0 before the first).
    pub(crate) fn owed(&self) -> u64 {
        self.owed.unwrap_or(0)
    }

    pub(crate) fn converged(&self) -> bool {
        self.converged
    }
}

/// What a pre-copy did, in the upgrade report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrecopyReport {
    /// Steps (one chunk each) before the pause.
    pub steps: u32,
    /// Bytes of chunks moved before the pause, as the old version wrote them.
    pub bytes: u64,
    /// From the first step to the pause.
    pub took: Duration,
    /// Bytes the old version still owed when the host paused (its estimate).
    pub owed_at_pause: u64,
    /// Bytes of chunks moved inside the pause.
    pub paused_bytes: u64,
    /// False if the host stopped iterating because the owed bytes did not shrink (writes
    /// outran the copy): the final round then moved more than one chunk inside the pause.
    pub converged: bool,
}

/// Why a pre-copy step failed. The upgrade rolls back; the old version serves on.
#[derive(Debug)]
pub(crate) enum StepError {
    /// The old instance failed to hand out a chunk (a trap leaves it unusable).
    Export(CallError),
    /// A transformer refused or trapped on a chunk.
    Transform(TransformError),
    /// The new instance refused or trapped on a chunk.
    Import(CallError),
    /// The chunks passed `--max-state`.
    TooLarge { bytes: u64, limit: u64 },
}

impl StepError {
    /// True if the old instance trapped: its session went with it, and it needs a rebuild.
    pub(crate) fn old_trapped(&self) -> bool {
        matches!(self, Self::Export(e) if e.trap().is_some())
    }
}

/// What to do after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Step again after the next events.
    Continue,
    /// Pause and finish now.
    Pause,
}

/// One upgrade's pre-copy, between `begin` and the pause.
#[derive(Debug)]
pub(crate) struct Session {
    chain: ChainSession,
    /// Every chunk the new instance took, after the transformers: with the final snapshot,
    /// the new version's first checkpoint. In a file, as a checkpoint's are.
    imported: Chunks,
    pace: Pace,
    /// The live value's generation the session was opened on: a rebuild ends it.
    generation: u64,
    started: Instant,
    bytes: u64,
}

impl Session {
    /// Opens a session on the live instance if it, the new instance and every transformer can
    /// pre-copy this state, and moves the first chunk (the state's skeleton). `Ok(None)`: one of
    /// them cannot — it predates pre-copy, or reads a collection the old version pre-copies as
    /// something else (a frozen type with a `Vec` where the release has a `Map`) — and the state
    /// crosses in one piece inside the pause, as before pre-copy existed.
    pub(crate) fn begin(
        live: &mut Live,
        new: &mut Instance,
        pipeline: &Pipeline,
        budget: Budget,
        max_state: u64,
    ) -> Result<Option<Self>, StepError> {
        if !live.precopies() || !new.precopies() || !pipeline.precopies() {
            return Ok(None);
        }
        let chain = pipeline.session().map_err(StepError::Transform)?;
        if let Err(e) = live.precopy_begin() {
            // Refused (not ready, as an export would be) or trapped: the full transfer in the
            // pause meets the same answer and reports it as an export failure.
            tracing::debug!("pre-copy not started: {e}");
            return Ok(None);
        }
        let mut session = Self {
            chain,
            imported: Chunks::new(live.version().runtime.limits.checkpoint_dir.as_deref()),
            pace: Pace::new(budget),
            generation: live.generation(),
            started: Instant::now(),
            bytes: 0,
        };
        match session.step(live, new, max_state) {
            Ok(_) => Ok(Some(session)),
            // A reader that cannot take the skeleton refuses: the whole state crosses in the
            // pause instead (into the same new instance, whose reader forgot the refused
            // chunks; through fresh transformer instances) and meets any real refusal there.
            Err(StepError::Transform(TransformError::Refused { name, reason })) => {
                tracing::info!("no pre-copy through transformer {name}: {reason}");
                live.precopy_abort();
                Ok(None)
            }
            Err(StepError::Import(CallError::Refused(reason))) => {
                tracing::info!("no pre-copy into the new version: {reason}");
                live.precopy_abort();
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Steps so far, bytes moved, bytes still owed.
    pub(crate) fn progress(&self) -> (u32, u64, u64) {
        (self.pace.steps(), self.bytes, self.pace.owed())
    }

    /// How the session paces itself.
    pub(crate) fn budget(&self) -> Budget {
        self.pace.budget()
    }

    /// Bytes of chunks moved so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// True if the live instance is still the one the session was opened on.
    pub(crate) fn belongs_to(&self, live: &Live) -> bool {
        self.generation == live.generation()
    }

    /// One chunk across: old instance, transformers, new instance.
    pub(crate) fn step(
        &mut self,
        live: &mut Live,
        new: &mut Instance,
        max_state: u64,
    ) -> Result<Next, StepError> {
        let batch = live.precopy_next(self.pace.step_bytes()).map_err(StepError::Export)?;
        self.bytes += chunk_bytes(&batch.chunks);
        if self.bytes > max_state {
            return Err(StepError::TooLarge { bytes: self.bytes, limit: max_state });
        }
        let chunks = self.chain.chunks(batch.chunks).map_err(StepError::Transform)?;
        new.import_chunks(&chunks).map_err(StepError::Import)?;
        new.discard_effects();
        self.imported.extend(chunks);
        Ok(self.pace.step(batch.pending))
    }

    /// Inside the pause: the final chunks through the transformers, and the report. Returns
    /// every chunk the new instance must hold (those imported so far, then `last`).
    pub(crate) fn transform_last(
        &mut self,
        last: Vec<Chunk>,
    ) -> Result<Vec<Chunk>, TransformError> {
        self.chain.chunks(last)
    }

    /// The transformers' instances, for the final snapshot.
    pub(crate) fn chain(&mut self) -> &mut ChainSession {
        &mut self.chain
    }

    /// The chunks imported before the pause, and the report, once `paused_bytes` crossed in
    /// the pause.
    pub(crate) fn end(self, paused_bytes: u64, paused: Instant) -> (Chunks, PrecopyReport) {
        let report = PrecopyReport {
            steps: self.pace.steps(),
            bytes: self.bytes,
            took: paused.saturating_duration_since(self.started),
            owed_at_pause: self.pace.owed(),
            paused_bytes,
            converged: self.pace.converged(),
        };
        (self.imported, report)
    }
}

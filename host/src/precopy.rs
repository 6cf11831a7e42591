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
/// default). Live migration answers a dirtying rate above the copy rate the same way, by copying
/// faster (or throttling the writer, below); here a step grows while what is owed makes no new
/// low, or while the loop holds input back for it, so the copy keeps up with a writer instead of
/// leaving the whole rest to the cut — where a checkpoint of a state being loaded once moved
/// 176 MB in one call, which stalled every client and grew the guest's memory by as much, for
/// good.
pub const STEP_GROWTH_MAX: u64 = 16;

/// The longest a step may take before it stops growing (and shrinks back if it takes twice
/// as long): clients wait for a step, so its length, not its bytes, is what is bounded. 1 MiB of
/// kv's 16-byte entries takes about 15 ms to export and import, of its 1 KiB values about 3 ms
/// (`bench/RESULTS.md`), so a byte bound alone is either slow for big entries or long for small
/// ones.
pub const STEP_TIME: Duration = Duration::from_millis(3);

/// Steps in a row without a new low of what is owed before a step grows: one write to an entry
/// already copied can make a single step miss a new low without the copy falling behind.
const GROW_AFTER: u32 = 8;

/// The least client input a round may take while the copy is given the lead: clients always
/// progress, if slowly; past this, a checkpoint that still cannot finish is cut when its
/// journal fills.
pub const MIN_ALLOWANCE: u64 = 4 << 10;

/// When a run of steps should end: what is owed fell to a quarter chunk (converged), or it made
/// no new low for [`Budget::stall_steps`] steps, or the steps passed [`Budget::max_steps`]; how
/// much the next step asks for; and how much client input the event loop may read before it
/// (auto-converge, as QEMU throttles a guest whose memory is dirtied faster than it migrates).
/// Paces an upgrade's pre-copy and a checkpoint built from chunks alike.
///
/// - **Step size**: the chunk, doubled for every step that made no new low from the
///   [`GROW_AFTER`]th in a row on, or that followed a round whose input was held back, up to
///   [`STEP_GROWTH_MAX`] chunks, while a step takes less than [`STEP_TIME`]; halved (not below
///   the chunk) after a step that took twice that. Kept for the rest of the run otherwise
///   (going back to one chunk would hand the lead back to the writer).
/// - **Input allowance**: with a deadline counted in input bytes (a checkpoint must be cut
///   before its journal fills: `room` bytes more), each round may read `step × room / (4 ×
///   owed)`. Were nothing copied ever changed again, the room left when the copy is done would
///   be `room × (owed at the end / owed at the start)^(1/4)`, a sixth of it for a 20 MB state
///   copied down to 16 KiB (with 2 instead of 4, a 35th: the cut came first under load, with
///   2% of the state still owed); writes to entries already copied use up the rest. With
///   none (an upgrade), a round may read half a step's bytes once the copy has made no new low
///   for [`GROW_AFTER`] steps, so what is copied outruns what is changed. Never below
///   [`MIN_ALLOWANCE`]. Before the first step, also [`MIN_ALLOWANCE`]: what is owed is not
///   known yet, and the first step follows at the end of the round.
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
    /// Client input the event loop may read before the next step; `None`: no bound.
    allowance: Option<u64>,
    /// Whether the copy has fallen behind the changes in this run (kept once it has: a new low
    /// under a bound on input says the bound works, not that it can go).
    lagging: bool,
    /// Whether the loop held input back since the last step, and in how many rounds in all.
    held_back: bool,
    throttled: u32,
    /// The longest a step took.
    longest: Duration,
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
            // Until a step has measured what is owed, a round reads the least: a run starts
            // between two events of a round, and a round read in full before the first step
            // could use up most of a checkpoint's room (seen: 2 of its 2 MiB).
            allowance: Some(MIN_ALLOWANCE),
            lagging: false,
            held_back: false,
            throttled: 0,
            longest: Duration::ZERO,
        }
    }

    /// Bytes of records the next step asks for.
    pub(crate) fn step_bytes(&self) -> u64 {
        self.step_bytes
    }

    /// Bytes of client input the event loop may read before the next step; `None` for as much
    /// as it likes.
    pub(crate) fn allowance(&self) -> Option<u64> {
        self.allowance
    }

    /// The event loop left input unread in a round because of [`Pace::allowance`].
    /// Rounds before the first step are not counted: their bound is the start's, not a sign
    /// that the copy fell behind.
    pub(crate) fn held_back(&mut self) {
        if !self.held_back && self.steps > 0 {
            self.held_back = true;
            self.throttled += 1;
        }
    }

    /// Rounds whose input was held back for the copy.
    pub(crate) fn throttled(&self) -> u32 {
        self.throttled
    }

    /// The longest a step took: what a client waited for the copy at most, between events.
    pub(crate) fn longest_step(&self) -> Duration {
        self.longest
    }

    /// Notes a step that left `owed` bytes owed and took `took`, with `room` bytes of input left
    /// before the run must end (`None` if no such bound), and says whether to step again.
    pub(crate) fn step(&mut self, owed: u64, room: Option<u64>, took: Duration) -> Next {
        self.steps += 1;
        self.longest = self.longest.max(took);
        self.owed = Some(owed);
        if owed <= self.budget.chunk / 4 {
            self.converged = true;
            self.allowance = None;
            return Next::Pause;
        }
        if owed < self.lowest {
            self.lowest = owed;
            self.since_lowest = 0;
        } else {
            self.since_lowest += 1;
        }
        let behind = self.since_lowest >= GROW_AFTER;
        self.lagging |= behind;
        if took > STEP_TIME * 2 {
            self.step_bytes = (self.step_bytes / 2).max(self.budget.chunk);
        } else if (behind || self.held_back) && took < STEP_TIME {
            let most = self.budget.chunk.saturating_mul(STEP_GROWTH_MAX);
            self.step_bytes = self.step_bytes.saturating_mul(2).min(most);
        }
        self.held_back = false;
        let by_room = room.map(|room| {
            let share = u128::from(self.step_bytes) * u128::from(room) / (4 * u128::from(owed));
            u64::try_from(share).unwrap_or(u64::MAX)
        });
        let by_progress = self.lagging.then_some(self.step_bytes / 2);
        self.allowance = match (by_room, by_progress) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(|allowance| allowance.max(MIN_ALLOWANCE));
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
    /// Rounds of events in which the host read less client input than was waiting, so that the
    /// copy could catch up with the changes (see [`Pace`]); 0 if writes never outran it.
    pub throttled_rounds: u32,
    /// The longest step: the most a client waited for the copy between two events.
    pub longest_step: Duration,
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
        match session.step(live, new, max_state, &|| 0) {
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

    /// How it paces the clients meanwhile.
    pub(crate) fn pace_mut(&mut self) -> &mut Pace {
        &mut self.pace
    }

    /// Rounds whose client input was slowed for this copy so far.
    pub(crate) fn throttled(&self) -> u32 {
        self.pace.throttled()
    }

    /// Client input the event loop may read before the next step (see [`Pace::allowance`]).
    pub(crate) fn allowance(&self) -> Option<u64> {
        self.pace.allowance()
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
    /// `monotonic_ns` reads the host's monotonic clock (the simulator's virtual one, under
    /// which a step takes no time and the pace depends on the trace alone).
    pub(crate) fn step(
        &mut self,
        live: &mut Live,
        new: &mut Instance,
        max_state: u64,
        monotonic_ns: &dyn Fn() -> u64,
    ) -> Result<Next, StepError> {
        let start = monotonic_ns();
        let batch = live.precopy_next(self.pace.step_bytes()).map_err(StepError::Export)?;
        self.bytes += chunk_bytes(&batch.chunks);
        if self.bytes > max_state {
            return Err(StepError::TooLarge { bytes: self.bytes, limit: max_state });
        }
        let chunks = self.chain.chunks(batch.chunks).map_err(StepError::Transform)?;
        new.import_chunks(&chunks).map_err(StepError::Import)?;
        new.discard_effects();
        self.imported.extend(chunks);
        let took = Duration::from_nanos(monotonic_ns().saturating_sub(start));
        Ok(self.pace.step(batch.pending, None, took))
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
            throttled_rounds: self.pace.throttled(),
            longest_step: self.pace.longest_step(),
        };
        (self.imported, report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: u64 = 64 << 10;
    const QUICK: Duration = Duration::from_micros(100);

    fn pace() -> Pace {
        Pace::new(Budget { chunk: CHUNK, ..Budget::default() })
    }

    #[test]
    fn input_is_not_bounded_while_the_copy_gains() {
        let mut pace = pace();
        // Before the first step, the least: what is owed is not known yet.
        assert_eq!(pace.allowance(), Some(MIN_ALLOWANCE));
        pace.held_back();
        assert_eq!(pace.throttled(), 0, "the start's bound is not the copy falling behind");
        for owed in (1..20).rev().map(|n| n * CHUNK) {
            assert_eq!(pace.step(owed, None, QUICK), Next::Continue);
            assert_eq!(pace.allowance(), None);
        }
        assert_eq!(pace.step_bytes(), CHUNK);
    }

    #[test]
    fn once_the_copy_falls_behind_a_round_reads_half_a_step_for_the_rest_of_the_run() {
        let mut pace = pace();
        pace.step(100 * CHUNK, None, QUICK);
        for _ in 0..GROW_AFTER {
            assert_eq!(pace.allowance(), None);
            pace.step(100 * CHUNK, None, QUICK);
        }
        let step = pace.step_bytes();
        assert_eq!(pace.allowance(), Some(step / 2));
        // The bound works: the copy makes new lows again. It stays.
        pace.step(50 * CHUNK, None, QUICK);
        assert!(pace.allowance().is_some());
    }

    #[test]
    fn with_a_deadline_in_input_bytes_a_round_reads_what_leaves_half_the_room() {
        let mut pace = pace();
        // 100 chunks owed, 80 chunks of journal left: each step of one chunk may let in a
        // fifth of a chunk.
        pace.step(100 * CHUNK, Some(80 * CHUNK), QUICK);
        assert_eq!(pace.allowance(), Some(CHUNK / 5));
        // Plenty of room: the bound is far above what a round reads.
        pace.step(10 * CHUNK, Some(2000 * CHUNK), QUICK);
        assert_eq!(pace.allowance(), Some(50 * CHUNK));
        // No room at all: clients still move, a little.
        pace.step(9 * CHUNK, Some(0), QUICK);
        assert_eq!(pace.allowance(), Some(MIN_ALLOWANCE));
    }

    #[test]
    fn a_step_grows_while_input_is_held_back_and_only_while_it_stays_short() {
        let mut pace = pace();
        pace.step(100 * CHUNK, Some(CHUNK), QUICK);
        pace.held_back();
        pace.step(99 * CHUNK, Some(CHUNK), QUICK);
        assert_eq!(pace.step_bytes(), 2 * CHUNK);
        // Not held back: the step keeps its size.
        pace.step(98 * CHUNK, Some(CHUNK), QUICK);
        assert_eq!(pace.step_bytes(), 2 * CHUNK);
        // Held back, but the step took as long as a step may: it does not grow.
        pace.held_back();
        pace.step(97 * CHUNK, Some(CHUNK), STEP_TIME);
        assert_eq!(pace.step_bytes(), 2 * CHUNK);
        // A step that took twice that halves it, down to the chunk and no further.
        pace.step(96 * CHUNK, Some(CHUNK), STEP_TIME * 3);
        assert_eq!(pace.step_bytes(), CHUNK);
        pace.step(95 * CHUNK, Some(CHUNK), STEP_TIME * 3);
        assert_eq!(pace.step_bytes(), CHUNK);
        assert_eq!(pace.throttled(), 2);
        for _ in 0..20 {
            pace.held_back();
            pace.step(90 * CHUNK, Some(CHUNK), QUICK);
        }
        assert_eq!(pace.step_bytes(), STEP_GROWTH_MAX * CHUNK);
    }

    #[test]
    fn converging_lifts_the_bound() {
        let mut pace = pace();
        pace.step(100 * CHUNK, Some(CHUNK), QUICK);
        assert!(pace.allowance().is_some());
        assert_eq!(pace.step(CHUNK / 4, Some(CHUNK), QUICK), Next::Pause);
        assert!(pace.converged());
        assert_eq!(pace.allowance(), None);
    }
}

//! `tasuki:server/timers`, and the host's timer queue.
//!
//! Timers belong to the host, not to an instance: one armed by v1 fires in v2 if an upgrade
//! happened in between, and one armed before a trap fires in the rebuilt instance. Deadlines are
//! nanoseconds on the dispatcher's monotonic clock ([`crate::dispatch::Clock`]): the wall clock
//! when serving, the virtual clock in the simulator.

use crate::bindings::tasuki::server::timers;
use crate::limits::MAX_TIMERS;
use crate::store::{Effect, InstanceState};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;
use tracing::warn;

impl timers::Host for InstanceState {
    fn set(&mut self, id: u64, after_ms: u64) {
        self.effects.push(Effect::SetTimer(id, Duration::from_millis(after_ms)));
    }

    fn cancel(&mut self, id: u64) {
        self.effects.push(Effect::CancelTimer(id));
    }
}

/// Armed timers, by deadline: at most [`MAX_TIMERS`]. Re-arming or cancelling leaves a stale
/// heap entry behind, skipped when it surfaces (its generation no longer matches), so both are
/// O(log n); once stale entries outnumber live ones the heap is rebuilt from the live ones, so
/// a guest that re-arms one timer on every event does not grow it.
#[derive(Debug, Default)]
pub(crate) struct TimerQueue {
    /// Each armed timer's generation and deadline.
    armed: HashMap<u64, (u64, u64)>,
    /// (deadline ns, generation, id): equal deadlines fire in the order they were armed.
    heap: BinaryHeap<Reverse<(u64, u64, u64)>>,
    generation: u64,
    /// Timers not armed because [`MAX_TIMERS`] were.
    refused: u64,
}

/// Stale heap entries tolerated beyond the live ones before the heap is rebuilt.
const STALE_SLACK: usize = 64;

impl TimerQueue {
    /// The armed timers as (id, deadline), in the order they fire.
    pub(crate) fn armed(&self) -> Vec<(u64, u64)> {
        let mut armed: Vec<(u64, u64, u64)> = self
            .armed
            .iter()
            .map(|(&id, &(generation, deadline))| (deadline, generation, id))
            .collect();
        armed.sort_unstable();
        armed.into_iter().map(|(deadline, _, id)| (id, deadline)).collect()
    }

    /// A queue holding `armed` (as [`TimerQueue::armed`] gives them).
    pub(crate) fn from_armed(armed: &[(u64, u64)]) -> Self {
        let mut queue = Self::default();
        for &(id, deadline) in armed {
            queue.arm(id, deadline);
        }
        queue
    }

    /// Applies a guest's timer effect made at `now`; other effects are not the queue's.
    pub(crate) fn apply(&mut self, effect: &Effect, now: u64) {
        match *effect {
            Effect::SetTimer(id, after) => {
                self.set(id, now.saturating_add(after.as_nanos() as u64));
            }
            Effect::CancelTimer(id) => self.cancel(id),
            Effect::Send(..)
            | Effect::Close(_)
            | Effect::CutOff(_)
            | Effect::NotifyWritable(_)
            | Effect::Listen(..)
            | Effect::Unlisten(_) => {}
        }
    }

    /// Arms (or re-arms) timer `id` for `deadline`, unless it is new and [`MAX_TIMERS`] are
    /// armed already: it is then left unarmed, said in the log (the first time and every
    /// thousandth after).
    pub(crate) fn set(&mut self, id: u64, deadline: u64) {
        if self.armed.len() >= MAX_TIMERS && !self.armed.contains_key(&id) {
            if self.refused.is_multiple_of(1000) {
                warn!(
                    timer = id,
                    "not arming timer {id}: the app has {MAX_TIMERS} timers armed, the most the \
                     host keeps ({} refused so far)",
                    self.refused + 1
                );
            }
            self.refused += 1;
            return;
        }
        self.arm(id, deadline);
    }

    fn arm(&mut self, id: u64, deadline: u64) {
        self.generation += 1;
        self.armed.insert(id, (self.generation, deadline));
        self.heap.push(Reverse((deadline, self.generation, id)));
        self.drop_stale();
    }

    pub(crate) fn cancel(&mut self, id: u64) {
        self.armed.remove(&id);
        self.drop_stale();
    }

    /// Rebuilds the heap from the armed timers once stale entries outnumber them: each rebuild
    /// is paid for by the re-arms and cancels that made the entries stale.
    fn drop_stale(&mut self) {
        if self.heap.len() > 2 * self.armed.len() + STALE_SLACK {
            self.heap = self
                .armed
                .iter()
                .map(|(&id, &(generation, deadline))| Reverse((deadline, generation, id)))
                .collect();
        }
    }

    /// The earliest live deadline.
    pub(crate) fn next_deadline(&mut self) -> Option<u64> {
        while let Some(Reverse((deadline, generation, id))) = self.heap.peek().copied() {
            if self.armed.get(&id).map(|(g, _)| *g) == Some(generation) {
                return Some(deadline);
            }
            self.heap.pop();
        }
        None
    }

    /// Removes and returns one timer due at `now`, earliest first.
    pub(crate) fn pop_due(&mut self, now: u64) -> Option<u64> {
        let deadline = self.next_deadline()?;
        if deadline > now {
            return None;
        }
        let Reverse((_, _, id)) = self.heap.pop()?;
        self.armed.remove(&id);
        Some(id)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.armed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_deadline_order_and_honours_rearm_and_cancel() {
        let ms = |n: u64| n * 1_000_000;
        let mut q = TimerQueue::default();
        q.set(1, ms(30));
        q.set(2, ms(10));
        q.set(3, ms(20));
        q.set(1, ms(5)); // re-armed earlier
        q.cancel(3);
        let now = ms(100);
        let fired: Vec<u64> = std::iter::from_fn(|| q.pop_due(now)).collect();
        assert_eq!(fired, vec![1, 2]);
        assert_eq!(q.len(), 0);
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn rearming_and_cancelling_leave_no_garbage() {
        let mut q = TimerQueue::default();
        q.set(1, 10);
        for i in 0..100_000 {
            q.set(2, 1_000 + i);
            q.set(3, i);
            q.cancel(3);
        }
        assert!(q.heap.len() <= 2 * q.len() + STALE_SLACK, "{} heap entries", q.heap.len());
        assert_eq!(std::iter::from_fn(|| q.pop_due(u64::MAX)).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn no_more_than_max_timers_are_armed_and_rearming_one_still_works() {
        let mut q = TimerQueue::default();
        for id in 0..MAX_TIMERS as u64 + 10 {
            q.set(id, 1_000 + id);
        }
        assert_eq!(q.len(), MAX_TIMERS);
        assert_eq!(q.refused, 10);
        q.set(0, 5_000_000);
        assert_eq!(q.len(), MAX_TIMERS);
        assert_eq!(q.pop_due(1_001), Some(1), "timer 0 moved");
        q.cancel(2);
        q.set(MAX_TIMERS as u64 + 100, 1);
        assert_eq!(q.pop_due(1_000), Some(MAX_TIMERS as u64 + 100), "room again after a cancel");
    }

    #[test]
    fn nothing_fires_early() {
        let mut q = TimerQueue::default();
        q.set(7, 5_000_000_000);
        assert_eq!(q.pop_due(0), None);
        assert_eq!(q.next_deadline(), Some(5_000_000_000));
    }
}

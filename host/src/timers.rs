//! `tasuki:server/timers`, and the host's timer queue.
//!
//! Timers belong to the host, not to an instance: one armed by v1 fires in v2 if an upgrade
//! happened in between, and one armed before a trap fires in the rebuilt instance. Deadlines are
//! nanoseconds on the dispatcher's monotonic clock ([`crate::dispatch::Clock`]): the wall clock
//! when serving, the virtual clock in the simulator.

use crate::bindings::tasuki::server::timers;
use crate::store::{Effect, InstanceState};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

impl timers::Host for InstanceState {
    fn set(&mut self, id: u64, after_ms: u64) {
        self.effects.push(Effect::SetTimer(id, Duration::from_millis(after_ms)));
    }

    fn cancel(&mut self, id: u64) {
        self.effects.push(Effect::CancelTimer(id));
    }
}

/// Armed timers, by deadline. Re-arming or cancelling leaves a stale heap entry behind, skipped
/// when it surfaces (its generation no longer matches), so both are O(log n).
#[derive(Debug, Default)]
pub(crate) struct TimerQueue {
    /// Each armed timer's generation and deadline.
    armed: HashMap<u64, (u64, u64)>,
    /// (deadline ns, generation, id): equal deadlines fire in the order they were armed.
    heap: BinaryHeap<Reverse<(u64, u64, u64)>>,
    generation: u64,
}

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
            queue.set(id, deadline);
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
            Effect::Send(..) | Effect::Close(_) | Effect::CutOff(_) => {}
        }
    }

    pub(crate) fn set(&mut self, id: u64, deadline: u64) {
        self.generation += 1;
        self.armed.insert(id, (self.generation, deadline));
        self.heap.push(Reverse((deadline, self.generation, id)));
    }

    pub(crate) fn cancel(&mut self, id: u64) {
        self.armed.remove(&id);
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
    fn nothing_fires_early() {
        let mut q = TimerQueue::default();
        q.set(7, 5_000_000_000);
        assert_eq!(q.pop_due(0), None);
        assert_eq!(q.next_deadline(), Some(5_000_000_000));
    }
}

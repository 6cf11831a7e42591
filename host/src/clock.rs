//! The wall clock guests read (`wasi:clocks/wall-clock`), frozen for the length of each event.
//!
//! The dispatcher stamps every event with the time it is dispatched and the guest sees exactly
//! that time for the whole event. The journal records the stamp, so replaying an event after a
//! trap gives the guest the same time it saw the first time: an `EX 10` replayed a second later
//! still expires when it did.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// Shared by the dispatcher (which sets it) and every instance's WASI context (which reads it).
#[derive(Debug, Clone, Default)]
pub struct EventClock {
    /// Nanoseconds since the Unix epoch, or 0 for "read the system clock".
    frozen: Arc<AtomicU64>,
}

fn system_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The system's wall clock, in ms since the Unix epoch: when a checkpoint, upgrade or recovery
/// happened, as reports and `tasuki status` show it.
pub fn now_unix_ms() -> u64 {
    system_now() / 1_000_000
}

impl EventClock {
    /// Freezes the clock at `nanos`, a stamp returned earlier.
    pub(crate) fn freeze_at(&self, nanos: u64) {
        self.frozen.store(nanos, Ordering::Relaxed);
    }
}

impl HostWallClock for EventClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        match self.frozen.load(Ordering::Relaxed) {
            0 => Duration::from_nanos(system_now()),
            frozen => Duration::from_nanos(frozen),
        }
    }
}

/// In the simulator the monotonic clock is the virtual clock too, so nothing a guest reads
/// depends on the machine it runs on.
impl HostMonotonicClock for EventClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        match self.frozen.load(Ordering::Relaxed) {
            0 => system_now(),
            frozen => frozen,
        }
    }
}

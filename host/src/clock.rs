//! What an event reads from the host besides its input: the wall clock
//! (`wasi:clocks/wall-clock`), frozen for the length of each event, and randomness
//! (`wasi:random/random`, `wasi:random/insecure`), a stream of its own per event.
//!
//! The dispatcher stamps every event with the time it is dispatched and a serial number; the
//! guest sees exactly that time for the whole event, and random bytes drawn from ChaCha20
//! keyed once per host (256 bits from the operating system, or from the simulator's seed) with
//! the event's serial as the stream number (RFC 8439's nonce). The journal records the stamp,
//! so replaying an event after a trap gives the guest the same time and the same random bytes
//! it saw the first time (an `EX 10` replayed a second later still expires when it did), and a
//! canary's candidate, fed the same event with the same stamp, reads what the running version
//! read. `wasi:random/insecure-seed` is one value for the host's life, the same in every
//! instance, so hash tables seeded from it iterate alike in both versions.

use crate::recovery::Stamp;
use chacha20::ChaCha20Rng;
use rand_core::{Rng, SeedableRng, TryRng};
use std::cell::RefCell;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// Shared by the dispatcher (which sets it) and every instance's WASI context (which reads it).
#[derive(Debug, Clone)]
pub struct EventClock {
    /// Nanoseconds since the Unix epoch, or 0 for "read the system clock".
    frozen: Arc<AtomicU64>,
    /// The current event's random stream: the host's key, the event's serial as the stream.
    random: Arc<Mutex<ChaCha20Rng>>,
    /// The key of `random`, for [`EventClock::detach`].
    key: [u8; 32],
    /// What `wasi:random/insecure-seed` answers, drawn from the key's last stream.
    insecure_seed: u128,
}

impl Default for EventClock {
    /// Keyed from the operating system's randomness.
    fn default() -> Self {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system gives no randomness");
        Self::keyed(key)
    }
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
    /// A clock whose randomness is keyed by `key` (256 bits).
    fn keyed(key: [u8; 32]) -> Self {
        let mut rng = ChaCha20Rng::from_seed(key);
        // Stream u64::MAX is never an event's: serials count up from 1.
        rng.set_stream(u64::MAX);
        let insecure_seed = u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64());
        rng.set_stream(0);
        Self { frozen: Arc::default(), random: Arc::new(Mutex::new(rng)), key, insecure_seed }
    }

    /// The simulator's: randomness keyed by `seed` alone, so a run repeats exactly.
    pub(crate) fn seeded(seed: u64) -> Self {
        let mut key = [0u8; 32];
        ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut key);
        Self::keyed(key)
    }

    /// Freezes the clock at `nanos`, a stamp returned earlier.
    pub(crate) fn freeze_at(&self, nanos: u64) {
        self.frozen.store(nanos, Ordering::Relaxed);
    }

    /// Starts the event stamped `at`: the clock frozen at its time, randomness at the start of
    /// its stream. Called again for the same stamp (a replay, a canary's candidate), the guest
    /// reads the same time and the same bytes.
    pub(crate) fn begin(&self, at: Stamp) {
        self.freeze_at(at.wall);
        let mut rng = self.random.lock().unwrap_or_else(PoisonError::into_inner);
        rng.set_stream(at.serial);
        rng.set_word_pos(0);
    }

    /// Makes this thread read the clock and randomness of the event stamped `at` until the guard
    /// is dropped, whatever events the dispatcher runs meanwhile on its own thread: for an
    /// instance that runs off the event loop (a catch-up's import, [`crate::catchup`]), which
    /// must read what it would have read at the boundary it started from.
    pub(crate) fn detach(&self, at: Stamp) -> Detached {
        let before = DETACHED.with(|d| d.borrow_mut().take());
        self.redetach(at);
        Detached(before)
    }

    /// Detaches this thread ([`EventClock::detach`]) for an instance's `init`: the clock as the
    /// loop last froze it (the system's before it ever did), and a random stream no event draws
    /// from (events' serials count from 1). An `init` off the loop (an upgrade's prepare, a
    /// replica) must not draw from the stream of the event the loop runs meanwhile: that event
    /// would read other bytes than its replay from the journal reads.
    pub(crate) fn detach_init(&self) -> Detached {
        let wall = match self.frozen.load(Ordering::Relaxed) {
            0 => system_now(),
            frozen => frozen,
        };
        self.detach(Stamp { wall, mono: 0, serial: 0 })
    }

    /// Moves this thread's detached reading ([`EventClock::detach`]) to the event stamped `at`:
    /// for a replay off the loop, event by event, under one guard.
    pub(crate) fn redetach(&self, at: Stamp) {
        let mut rng = ChaCha20Rng::from_seed(self.key);
        rng.set_stream(at.serial);
        rng.set_word_pos(0);
        DETACHED.with(|d| *d.borrow_mut() = Some((at.wall, rng)));
    }

    /// A handle for one WASI context's `wasi:random/random` and `wasi:random/insecure`.
    pub(crate) fn random(&self) -> EventRandom {
        EventRandom { rng: self.random.clone() }
    }

    /// What `wasi:random/insecure-seed` answers.
    pub(crate) fn insecure_seed(&self) -> u128 {
        self.insecure_seed
    }
}

thread_local! {
    /// Set by [`EventClock::detach`] on a thread that runs an instance off the event loop: the
    /// wall-clock time (ns) and random stream that thread's guest reads.
    static DETACHED: RefCell<Option<(u64, ChaCha20Rng)>> = const { RefCell::new(None) };
}

/// While it lives, its thread reads the clock and randomness [`EventClock::detach`] fixed;
/// dropped, what the thread read before (guards nest: `recovery::start` detaches for `init`
/// whatever its caller did).
pub(crate) struct Detached(Option<(u64, ChaCha20Rng)>);

impl std::fmt::Debug for Detached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Detached").field(&self.0.as_ref().map(|(wall, _)| wall)).finish()
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        let before = self.0.take();
        DETACHED.with(|d| *d.borrow_mut() = before);
    }
}

/// The detached time of this thread, if [`EventClock::detach`] set one.
fn detached_now() -> Option<u64> {
    DETACHED.with(|d| d.borrow().as_ref().map(|(wall, _)| *wall))
}

/// Draws from this thread's detached random stream, if it has one.
fn detached_random<T>(draw: impl FnOnce(&mut ChaCha20Rng) -> T) -> Option<T> {
    DETACHED.with(|d| d.borrow_mut().as_mut().map(|(_, rng)| draw(rng)))
}

/// The current event's random stream, as a WASI context draws from it.
#[derive(Debug)]
pub(crate) struct EventRandom {
    rng: Arc<Mutex<ChaCha20Rng>>,
}

impl TryRng for EventRandom {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(detached_random(|rng| rng.next_u32())
            .unwrap_or_else(|| self.rng.lock().unwrap_or_else(PoisonError::into_inner).next_u32()))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(detached_random(|rng| rng.next_u64())
            .unwrap_or_else(|| self.rng.lock().unwrap_or_else(PoisonError::into_inner).next_u64()))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        if detached_random(|rng| rng.fill_bytes(dst)).is_none() {
            self.rng.lock().unwrap_or_else(PoisonError::into_inner).fill_bytes(dst);
        }
        Ok(())
    }
}

impl HostWallClock for EventClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        if let Some(wall) = detached_now() {
            return Duration::from_nanos(wall);
        }
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
        if let Some(wall) = detached_now() {
            return wall;
        }
        match self.frozen.load(Ordering::Relaxed) {
            0 => system_now(),
            frozen => frozen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(clock: &EventClock) -> [u8; 16] {
        let mut bytes = [0; 16];
        clock.random().try_fill_bytes(&mut bytes).unwrap();
        bytes
    }

    /// An `init` off the loop (an upgrade's prepare, a replica) draws from a stream of its own:
    /// the event the loop runs meanwhile reads the bytes its replay will read.
    #[test]
    fn an_init_detached_off_the_loop_leaves_the_event_s_random_stream_alone() {
        let at = Stamp { wall: 1, mono: 1, serial: 7 };
        let replayed = EventClock::seeded(3);
        replayed.begin(at);
        let expected = [draw(&replayed), draw(&replayed)];

        let clock = EventClock::seeded(3);
        clock.begin(at);
        let first = draw(&clock);
        let off_loop = clock.clone();
        let init = std::thread::spawn(move || {
            let _init = off_loop.detach_init();
            (draw(&off_loop), detached_now())
        });
        let (init_bytes, init_wall) = init.join().unwrap();
        assert_eq!([first, draw(&clock)], expected, "the event's bytes, as its replay reads them");
        assert_ne!(init_bytes, expected[1]);
        assert_eq!(init_wall, Some(1), "the clock as the loop froze it");
    }
}

//! Every bound the host puts on a guest, named, with why the default is what it is.

use std::time::Duration;

/// How often the epoch ticker advances the engine's epoch. Deadlines are counted in ticks, so
/// this is their resolution; 10 ms keeps the ticker's cost unmeasurable.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Deadline for one event (`on-connect`, `on-data`, `on-timer`, `on-disconnect`). An event that
/// runs this long is a bug or an endless loop: a KV command takes microseconds.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(1);

/// Deadline for `init`, `describe`, `export-state` and `import-state`. These scale with the state
/// (1M keys) and run rarely, so they get more room than an event.
pub const STATE_DEADLINE: Duration = Duration::from_secs(10);

/// Linear memory one instance may grow to. Two instances exist during an upgrade, so the host
/// can need twice this. 1 GiB holds a few million small keys.
pub const MEMORY_LIMIT: usize = 1 << 30;

/// Largest read from one connection handed to the guest in one `on-data` call.
pub const READ_CHUNK: usize = 64 * 1024;

/// Bytes read from one connection per readiness event before the loop serves the others.
pub const READ_BUDGET: usize = 4 * READ_CHUNK;

/// Output queued for one connection above which the host stops reading from it, so a client
/// that does not read its replies cannot make the host's memory grow without bound.
pub const OUTPUT_HIGH_WATER: usize = 8 << 20;

/// Largest control-socket message, either way. Requests are small (a path, a few flags).
pub const MAX_CONTROL_MESSAGE: usize = 1 << 20;

/// How long a control client may take to send its request before it is dropped.
pub const CONTROL_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Epoch ticks in `d`, at least one.
pub(crate) fn ticks(d: Duration) -> u64 {
    (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

//! Every bound the host puts on a guest, named, with why the default is what it is.

use std::path::PathBuf;
use std::time::Duration;

/// How often the epoch ticker advances the engine's epoch. Deadlines are counted in ticks, so
/// this is their resolution; 10 ms keeps the ticker's cost unmeasurable.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Deadline for one event (`on-connect`, `on-data`, `on-timer`, `on-disconnect`). An event that
/// runs this long is a bug or an endless loop: a KV command takes microseconds, and a second is
/// long enough for a [`READ_CHUNK`] batch of the slowest command on a loaded machine.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(1);

/// Deadline for each of `init`, `describe`, `export-state` and `import-state` (and so for the
/// pause of an upgrade). These scale with the state and run rarely: 10 s moves gigabytes.
pub const STATE_DEADLINE: Duration = Duration::from_secs(10);

/// Linear memory one instance may grow to, all its memories together. Two instances exist
/// during an upgrade, so the host can need twice this. 1 GiB holds a few million small keys.
pub const MEMORY_LIMIT: usize = 1 << 30;

/// Largest state an upgrade will move. An export larger than this rolls the upgrade back:
/// the new instance would need the same again in its own memory, during the pause.
pub const MAX_STATE: u64 = 512 << 20;

/// wasmtime's own bound on the bytes a guest may hand the host in one call (its default
/// "hostcall fuel"): what `net.send` may pass at once.
pub const HOSTCALL_BYTES: usize = 128 << 20;

/// Connections open at once; more are accepted and closed at once. Redis's default `maxclients`.
pub const MAX_CONNECTIONS: usize = 10_000;

/// Connections the kernel completes and queues for the host before it accepts them (the
/// `listen` backlog; the kernel caps it at `net.core.somaxconn`). While the loop is inside a
/// call, new clients wait in this queue; past it their SYNs are dropped and they retry after a
/// second. std's 128 did that to a pool of clients opening at once (5,000 connections in a row
/// took 15 to 20 s in the soak, bench/soak); redis's `tcp-backlog` is 511, mio's own 1024.
pub const LISTEN_BACKLOG: i32 = 1024;

/// Output queued for one connection beyond which the host closes it, like Redis's
/// client-output-buffer-limit: a client that asks for far more than it reads is cut off before
/// it costs the host its memory. Past [`OUTPUT_HIGH_WATER`] no more input reaches the app, so
/// only a single call's output can get here; it is also the most one call may queue in all.
pub const OUTPUT_LIMIT: usize = 256 << 20;

/// Bytes of events kept in the recovery journal before protection gives up (see `recovery`).
/// The journal is normally cut far below this by checkpoints; it only gets here when the app's
/// export keeps failing.
pub const JOURNAL_LIMIT: usize = 256 << 20;

/// Journal size at which a checkpoint is taken, at the least. Above it, a checkpoint is taken
/// when the journal outgrows the last checkpoint, so checkpointing costs at most about one
/// export per byte of input.
pub const CHECKPOINT_MIN: usize = 4 << 20;

/// Snapshots kept in `--snapshot-dir` (`--snapshot-keep`); older ones are deleted after each
/// new one is written. More than one, so that a newest file damaged on disk still leaves a good
/// one before it; three covers a torn newest and a bad one before it, at three times the state
/// on disk. (redis keeps a single `dump.rdb`, replaced by rename, and no history.)
pub const SNAPSHOT_KEEP: usize = 3;

/// How long a draining host (SIGTERM, Ctrl-C) lets its clients read the replies already queued
/// for them before it closes them (`--drain-timeout`). redis's `shutdown-timeout` (the wait for
/// replicas to catch up before a shutdown) defaults to 10 s; ours is the same.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Concurrent control-socket clients; more are refused at once.
pub const MAX_CONTROL_CLIENTS: usize = 16;

/// How often the event loop asks the live instance how much of its linear memory is in use
/// (for `tasuki status` and compaction): one call that reads two counters, once a second.
pub const MEMORY_CHECK: Duration = Duration::from_secs(1);

/// Compact when the heap in use falls below this share of the linear memory, in percent: three
/// quarters of the memory is then garbage the instance keeps (a linear memory never shrinks).
/// A full heap reads 70–90% here (the counter leaves out the allocator's own headers and
/// wasi-libc's buffers), so 25 never compacts a busy instance.
pub const COMPACT_BELOW: u32 = 25;

/// No compaction below this much linear memory: what it would give back is not worth a swap.
pub const COMPACT_MIN_MEMORY: u64 = 64 << 20;

/// At least this long between two automatic compactions (and after the host starts): a heap
/// that keeps growing and shrinking is compacted at most once a minute.
pub const COMPACT_INTERVAL: Duration = Duration::from_secs(60);

/// Listeners an app may have open at once, opened at run time (`listeners.listen`, `tasuki run
/// --max-listeners`): each is a port and a file descriptor. FTP holds one per session in a
/// passive transfer; a tenth of [`MAX_CONNECTIONS`] sessions transferring at once, and a
/// thirtieth of Linux's ephemeral ports (32768-60999), so a guest cannot take them all.
pub const MAX_LISTENERS: usize = 1024;

/// Every limit a host applies, with the defaults above. `tasuki run` exposes each as a flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory per instance, in bytes.
    pub memory: usize,
    /// Deadline of one event.
    pub call_deadline: Duration,
    /// Deadline of each state call (`init`, export, import).
    pub upgrade_deadline: Duration,
    /// Largest state an upgrade moves, in bytes.
    pub max_state: u64,
    /// Connections open at once.
    pub max_connections: usize,
    /// Output queued per connection before reading from it stops; the connection is closed at
    /// 32 times this (at least [`OUTPUT_LIMIT`]).
    pub output_buffer: usize,
    /// Input read from one connection and held, not yet handed to the app, while its replies
    /// are backed up; a connection that sends more is closed.
    pub input_buffer: usize,
    /// Bytes the host buffers for all connections together (replies queued, input held);
    /// past it the connections that buffer the most are closed.
    pub buffer_budget: usize,
    /// Input an app keeps unconsumed for one connection (a request still arriving), in bytes;
    /// the guest SDK closes a connection that leaves more.
    pub query_buffer: usize,
    /// Recovery journal bound, in bytes; 0 turns recovery off (a trap then loses the state).
    pub journal: usize,
    /// Bytes of records one pre-copy step moves (`--precopy-chunk`); a client waits at most
    /// about one step's time for an upgrade (a step grows to at most
    /// [`crate::precopy::STEP_GROWTH_MAX`] chunks while writes outrun the copy). 0 turns
    /// pre-copy off: the whole state then crosses inside the pause.
    pub precopy_chunk: u64,
    /// Compact when the heap in use falls below this percentage of the linear memory
    /// (`--compact-below`); 0 turns automatic compaction off (`tasuki compact` still works).
    pub compact_below: u32,
    /// Linear memory below which no automatic compaction runs, in bytes.
    pub compact_min_memory: u64,
    /// Least time between automatic compactions.
    pub compact_interval: Duration,
    /// Where the pre-copied chunks of checkpoints are written, in an unnamed file
    /// (`--checkpoint-dir`; the system's temporary directory by default): the host's second copy
    /// of the state then costs page cache, not resident memory. `None` keeps them in the heap.
    pub checkpoint_dir: Option<PathBuf>,
    /// Listeners the app may have open at once, opened at run time (`--max-listeners`); 0
    /// refuses every one.
    pub max_listeners: usize,
    /// The ports the app may open listeners on (`--data-ports LOW-HIGH`, inclusive): port 0
    /// then means a free one of them. `None`: only port 0, a free port the system picks from
    /// its ephemeral range.
    pub data_ports: Option<std::ops::RangeInclusive<u16>>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: MEMORY_LIMIT,
            call_deadline: EVENT_DEADLINE,
            upgrade_deadline: STATE_DEADLINE,
            max_state: MAX_STATE,
            max_connections: MAX_CONNECTIONS,
            output_buffer: OUTPUT_HIGH_WATER,
            input_buffer: INPUT_BUFFER,
            query_buffer: QUERY_BUFFER,
            buffer_budget: BUFFER_BUDGET,
            journal: JOURNAL_LIMIT,
            precopy_chunk: crate::precopy::DEFAULT_CHUNK,
            compact_below: COMPACT_BELOW,
            compact_min_memory: COMPACT_MIN_MEMORY,
            compact_interval: COMPACT_INTERVAL,
            checkpoint_dir: Some(std::env::temp_dir()),
            max_listeners: MAX_LISTENERS,
            data_ports: None,
        }
    }
}

impl Limits {
    /// Bytes a guest may hand the host in one call: wasmtime's default ([`HOSTCALL_BYTES`]),
    /// raised so that an export (or a transformer's output) of up to `max_state` bytes, with
    /// room for section names and framing, is not cut off below the limit `--max-state` states.
    pub fn hostcall_bytes(&self) -> usize {
        HOSTCALL_BYTES.max((self.max_state as usize).saturating_add(1 << 20))
    }

    /// Unconsumed input an app keeps for all its connections together: half of `max_state`, so
    /// that half-received requests can never make the state too big to move in an upgrade or
    /// to checkpoint, and the rest of the state always has the other half.
    pub fn input_total(&self) -> u64 {
        self.max_state / 2
    }

    /// Queued output at which a connection is closed.
    pub fn output_limit(&self) -> usize {
        self.output_buffer.saturating_mul(32).max(OUTPUT_LIMIT)
    }
}

/// Largest read from one connection handed to the guest in one `on-data` call: the grain of
/// [`READ_TIME_BUDGET`]. redis-server reads 16 KiB (`PROTO_IOBUF_LEN`) at a time too. With
/// 64 KiB, one call of 1000-key MSETs took 3-4 ms at 1M keys, and a client sending PINGs beside
/// a bulk load waited up to 10-15 ms for a reply; with 16 KiB, 6-7 ms (`bench/run
/// --bulk-load-only`), with the same load time.
pub const READ_CHUNK: usize = 16 * 1024;

/// Bytes read from one connection per readiness event before the loop serves the others.
pub const READ_BUDGET: usize = 4 * READ_CHUNK;

/// Time one connection's input may take per turn of the loop before the others are served,
/// checked after each `on-data` call (so a turn can run one [`READ_CHUNK`] past it). The byte
/// budget alone (then 256 KiB) let one client loading keys with 1000-key MSETs hold the loop
/// for 9-19 ms a turn at 1M keys, and every other client waited that long for a reply.
pub const READ_TIME_BUDGET: Duration = Duration::from_millis(1);

/// Output queued for one connection above which the host stops handing its input to the app
/// (it holds it, up to [`INPUT_BUFFER`]), so a client that does not read its replies cannot
/// make the host's memory grow without bound.
pub const OUTPUT_HIGH_WATER: usize = 8 << 20;

/// Input the host reads from one connection and holds while the app's replies to it are
/// backed up (more than [`OUTPUT_HIGH_WATER`] queued), before it closes the connection. The host
/// keeps reading so that a client that writes a whole pipeline before reading its replies
/// (redis-py's and Jedis's pipelines do) finishes its write and then reads, instead of blocking
/// on a host that waits for it; holding the requests rather than answering them keeps the
/// host's memory to the requests' size (8 MB for 400,000 `GET`s) instead of the replies'
/// (413 MB for 1 KiB values, which redis-server buffers). Redis's `client-query-buffer-limit`
/// is 1 GiB; 256 MiB here, because the host holds this beside the app's own 1 GiB instance
/// and it is reached only by a client that sends this much without reading a byte: a
/// pipeline of 10 million small commands still fits.
pub const INPUT_BUFFER: usize = 256 << 20;

/// Bytes the host buffers for all connections together — replies queued and not yet taken by
/// the kernel, input held while replies are backed up — beyond which it closes the connections
/// that buffer the most, with a log line each (redis's `maxmemory-clients`, off by default
/// there). Each connection alone is bounded ([`OUTPUT_HIGH_WATER`] plus one call's output,
/// [`INPUT_BUFFER`]), but 10,000 of them are not: 1 GiB, the size of the app's own instance,
/// lets four clients reach their own limits at once, or a thousand have a pipeline of a MiB
/// in flight, and keeps the host's memory to about twice the app's.
pub const BUFFER_BUDGET: usize = 1 << 30;

/// Input an app keeps unconsumed for one connection — a request that has not fully arrived —
/// before the guest SDK closes the connection (redis's `client-query-buffer-limit`, 1 GiB
/// there). Unconsumed input is part of the app's state (`tasuki.conns`): it crosses an upgrade
/// and goes into every checkpoint, so it must fit in `--max-state` (512 MiB) with the keyspace,
/// and the instance must hold it and the value built from it in `--memory-limit` (1 GiB).
/// 128 MiB keeps both true for a value this large while leaving the keyspace most of the room;
/// kv takes it as its `proto-max-bulk-len` (512 MB in redis), so a request announcing a larger
/// value, or a `SETRANGE`/`APPEND` that would build one, gets an error instead.
pub const QUERY_BUFFER: usize = 128 << 20;

/// Timers an app may have armed at once; arming another (a new id) is refused with a log line,
/// re-arming an armed one always works. A server needs one or a few (kv: one, for expiry), or
/// one per connection for idle timeouts ([`MAX_CONNECTIONS`]); ten times that leaves room
/// while keeping the host's timer queue to a few MiB.
pub const MAX_TIMERS: usize = 10 * MAX_CONNECTIONS;

/// Core instances one component instance may create. A Rust guest's component has a handful
/// (its module and the shims `wit-component` adds); 64 leaves room for components composed of
/// several modules, and bounds the host's per-instance bookkeeping.
pub const MAX_INSTANCES: usize = 64;

/// Linear memories one store may create; `--memory-limit` bounds their total size. A guest
/// has one per core module that declares one: 16 leaves room.
pub const MAX_MEMORIES: usize = 16;

/// Tables one store may create (each core module's function table, and the shims').
pub const MAX_TABLES: usize = 64;

/// Elements one table may grow to. Each costs the host a pointer outside the guest's linear
/// memory, so without a bound `table.grow` would be a way around `--memory-limit`; a guest's
/// function table holds its address-taken functions (hundreds to thousands), and 1 Mi elements
/// is 8 MiB.
pub const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Largest control-socket message, either way. Requests are small (a path, a few flags).
pub const MAX_CONTROL_MESSAGE: usize = 1 << 20;

/// How long a stopping host waits for control clients still being served (an upgrade request
/// its stop cancelled, a `status`) to get their answer before it exits. Their answers take
/// milliseconds once the event loop has stopped; an upgrade still compiling its component
/// takes up to a second or two on a busy machine.
pub const CONTROL_STOP_GRACE: Duration = Duration::from_secs(5);

/// How long a control client may take to send its whole request before it is dropped,
/// however its bytes trickle in.
pub const CONTROL_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Epoch ticks that give a call at least `d`. A deadline of n ticks traps at the n-th tick
/// after the call starts, and the first can come at once, so `d` is rounded up to whole ticks
/// and gets one more: `--call-deadline 5` is 2 ticks (10 to 20 ms), where 1 tick (what rounding
/// gave before) could stop a call of a few microseconds that happened to straddle a tick.
pub(crate) fn ticks(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(EPOCH_TICK.as_nanos())).unwrap_or(u64::MAX / 2) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_is_never_shorter_than_asked() {
        let ms = Duration::from_millis;
        assert_eq!(ticks(ms(1)), 2);
        assert_eq!(ticks(ms(10)), 2);
        assert_eq!(ticks(ms(11)), 3);
        assert_eq!(ticks(EVENT_DEADLINE), 101);
        for d in [1, 5, 9, 10, 15, 999, 1000] {
            // The first tick can come at once: the call is sure of (ticks - 1) whole ticks.
            assert!((ticks(ms(d)) - 1) * EPOCH_TICK.as_millis() as u64 >= d, "{d} ms");
        }
    }
}

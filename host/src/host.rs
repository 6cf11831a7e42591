//! [`Host::start`]: load the app, bind the listeners, start the dispatcher and the control
//! socket. The CLI's `run` is this plus argument parsing; tests start hosts in-process with it.

use crate::bindings::{AppInfo, Chunk, Snapshot};
use crate::control::{self, ControlServer, Request, Response};
use crate::dispatch::SnapshotReply;
use crate::event_loop::{Command, EventLoop, WAKER};
use crate::instance::{CallError, MemoryUsage};
use crate::limits::Limits;
use crate::live::Live;
use crate::runtime::Runtime;
use crate::sandbox::Sandbox;
use crate::snapshot::{SnapshotDir, SnapshotFile, SnapshotFileError, SnapshotReport};
use crate::status::{Shared, Status};
use crate::transformer::{ChainError, Pipeline, TransformError};
use crate::upgrade::{self, AppVersion, UpgradeError, UpgradeOptions, UpgradeReport};
use crate::version::{LoadError, Version};
use mio::{Poll, Waker};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// What to run and where.
#[derive(Debug, Clone, Default)]
pub struct HostConfig {
    /// The app's component.
    pub app: PathBuf,
    /// Addresses to accept connections on (port 0 picks a free one).
    pub listen: Vec<SocketAddr>,
    /// The control socket's path, or `None` for no control socket.
    pub control: Option<PathBuf>,
    /// Passed to the app's `init`, on start and on every upgrade.
    pub args: Vec<String>,
    pub limits: Limits,
    /// What the app may reach besides its connections (nothing by default).
    pub sandbox: Sandbox,
    /// Start from a snapshot file instead of empty state (`--restore`).
    pub restore: Option<Restore>,
    /// Write the session to this file as a trace (`--record`), for `tasuki test`.
    pub record: Option<PathBuf>,
    /// Where snapshots go, and how often (`--snapshot-dir`, `--snapshot-every`).
    pub snapshots: Option<SnapshotSchedule>,
    /// Written to a connection refused over [`Limits::max_connections`] before it is closed
    /// (`--refuse-reply`): the app is never called for it, so the words are the operator's, in
    /// the app's protocol (redis says `-ERR max number of clients reached\r\n`). Empty: closed
    /// without a word.
    pub refuse_reply: Vec<u8>,
    /// Told if the event loop stops on its own (an error or a bug): the host then serves
    /// nothing, and its process should exit rather than hold the port.
    pub on_stop: Option<mpsc::Sender<Stop>>,
}

/// Snapshots written to a directory: on a schedule, and a last one when the host drains.
#[derive(Debug, Clone)]
pub struct SnapshotSchedule {
    pub dir: SnapshotDir,
    /// How often; `None` for only the last one, at a drain.
    pub every: Option<Duration>,
}

/// Why `tasuki run` stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM or Ctrl-C: drain and exit.
    Signal,
    /// The event loop stopped on its own, for this reason: nothing is served any more.
    LoopDied(String),
}

/// A snapshot file to start from, and the transformers between its state and the app.
#[derive(Debug, Clone, Default)]
pub struct Restore {
    pub file: PathBuf,
    pub transforms: Vec<PathBuf>,
}

/// Why a host did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{app} failed to start: {error}")]
    Start { app: PathBuf, error: Box<CallError> },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot open the control socket {path}: {source}")]
    Control { path: PathBuf, source: std::io::Error },
    #[error("cannot restore {file}: {error}")]
    Restore { file: PathBuf, error: Box<MigrateError> },
    #[error("cannot restore {file}: {app} refused the state: {error}")]
    RestoreRefused { file: PathBuf, app: AppVersion, error: Box<CallError> },
    #[error("cannot record to {path}: {source}")]
    Record { path: PathBuf, source: std::io::Error },
    #[error("cannot start the event loop: {0}")]
    Loop(std::io::Error),
}

/// Why a snapshot file's state cannot be brought to an app (`run --restore`, `migrate`).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    File(#[from] SnapshotFileError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Transform(#[from] TransformError),
}

/// Why `tasuki snapshot` wrote no file. The app serves on in every case.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}")]
    Export(Box<UpgradeError>),
    #[error("cannot read the checkpoint's chunks back from their file: {0}")]
    Read(std::io::Error),
    #[error(transparent)]
    Write(#[from] SnapshotFileError),
}

/// Entry point of the host library.
#[derive(Debug)]
pub struct Host;

/// Runs an upgrade request from start to finish; shared by the control socket and
/// [`RunningHost::upgrade`].
#[derive(Debug)]
struct Upgrader {
    runtime: Runtime,
    shared: Arc<Shared>,
    commands: Mutex<mpsc::Sender<Command>>,
    waker: Arc<Waker>,
    /// The live version's `init` arguments, for the next upgrade or compaction; an upgrade
    /// with its own (`--arg`) replaces them when it commits.
    args: Mutex<Vec<String>>,
    /// Held for the whole of an upgrade: a second request is refused, not queued.
    in_progress: Mutex<()>,
    /// The version serving, for a compaction (a fresh instance of it); set on every commit.
    live_version: Mutex<Arc<Version>>,
    /// Set while a compaction holds `in_progress`: an upgrade request then waits for it
    /// instead of being refused.
    compacting: AtomicBool,
}

impl Upgrader {
    /// Hands `command` to the dispatcher and wakes it.
    fn send(&self, command: Command) -> Result<(), UpgradeError> {
        let sent =
            self.commands.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).send(command);
        if sent.is_err() || self.waker.wake().is_err() {
            return Err(UpgradeError::HostStopped);
        }
        Ok(())
    }

    /// The upgrade lock, held for a whole upgrade or compaction: a second request is refused.
    /// An upgrade (`upgrading` names its component) waits instead for a compaction under way:
    /// a compaction is short, and nobody asked for it to block a deploy.
    fn exclusive(&self, upgrading: Option<&Path>) -> Result<MutexGuard<'_, ()>, UpgradeError> {
        match self.in_progress.try_lock() {
            Ok(guard) => Ok(guard),
            Err(TryLockError::WouldBlock) => match upgrading {
                Some(wasm) if self.compacting.load(Ordering::Relaxed) => {
                    info!("upgrade to {} waits for the compaction under way", wasm.display());
                    Ok(self.in_progress.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
                }
                _ => Err(UpgradeError::InProgress),
            },
            Err(TryLockError::Poisoned(poisoned)) => Ok(poisoned.into_inner()),
        }
    }

    /// `tasuki snapshot`: the state at an event boundary — a checkpoint built a chunk at a time
    /// between events when the app pre-copies, else an export — written to the file off the
    /// loop.
    fn snapshot(&self, out: &Path) -> Result<SnapshotReport, SnapshotError> {
        let (file, pause) = self.take_snapshot(Command::Snapshot)?;
        let file_bytes = file.write(out)?;
        let report = SnapshotReport::new(out, &file, file_bytes, pause);
        info!("{report}");
        Ok(report)
    }

    /// Asks the loop for the state with the command `ask` builds, and waits for it.
    fn take_snapshot(
        &self,
        ask: impl FnOnce(SnapshotReply) -> Command,
    ) -> Result<(SnapshotFile, Duration), SnapshotError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(ask(reply)).map_err(|e| SnapshotError::Export(Box::new(e)))?;
        let (chunks, snapshot, pause) = answer
            .recv()
            .map_err(|_| SnapshotError::Export(Box::new(UpgradeError::HostStopped)))?
            .map_err(|e| SnapshotError::Export(Box::new(e)))?;
        let chunks = chunks.read().map_err(SnapshotError::Read)?;
        Ok((SnapshotFile::from_state(&chunks, &snapshot), pause))
    }

    /// A snapshot into `dir`, as the schedule or a drain takes it; recorded for `tasuki
    /// status`.
    fn snapshot_into(
        &self,
        dir: &SnapshotDir,
        file: Result<(SnapshotFile, Duration), SnapshotError>,
    ) {
        let written = file.and_then(|(file, pause)| {
            let (path, bytes) = dir.write(&file)?;
            Ok(SnapshotReport::new(&path, &file, bytes, pause))
        });
        match &written {
            Ok(report) => info!("{report}"),
            Err(e) => warn!("snapshot into {} failed: {e}", dir.path().display()),
        }
        self.shared.record_snapshot(written.as_ref().map_err(ToString::to_string));
    }

    fn upgrade(
        &self,
        wasm: &Path,
        options: &UpgradeOptions,
    ) -> Result<UpgradeReport, UpgradeError> {
        let _guard = self.exclusive(Some(wasm))?;
        info!("upgrade to {} requested", wasm.display());
        let running = self.shared.running_info();
        let args = self.args.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let prepared = match upgrade::prepare(&self.runtime, wasm, &args, &running, options) {
            Ok(prepared) => prepared,
            Err(e) => {
                info!("{e}");
                self.shared.record_upgrade(Err(e.to_string()));
                return Err(e);
            }
        };
        info!(
            "{} prepared in {:.1} ms; pausing {}",
            AppVersion::from(&prepared.info),
            prepared.prepare_time.as_secs_f64() * 1e3,
            AppVersion::from(&running)
        );
        let next_args = prepared.args.clone();
        let mut outcome = self.swap(prepared);
        if outcome.is_ok() {
            *self.args.lock().unwrap_or_else(|p| p.into_inner()) = next_args;
        }
        if let (Err(UpgradeError::Diverged { divergence, saved, .. }), Some(dir)) =
            (&mut outcome, &options.divergence_dir)
        {
            *saved = Self::save_divergence(dir, wasm, divergence);
        }
        outcome
    }

    /// Writes a canary's divergence as `DIR/canary-<ms>.trace` and the snapshot file it starts from,
    /// and returns the `tasuki test` command that reproduces it with `new`; `None` (said in the log)
    /// if there is nothing to save or it cannot be written.
    fn save_divergence(
        dir: &Path,
        new: &Path,
        divergence: &crate::canary::Divergence,
    ) -> Option<String> {
        let Some(reproduction) = &divergence.reproduction else {
            warn!("the canary's divergence has no trace to save: its events outgrew the recording");
            return None;
        };
        let stem = format!("canary-{}", crate::clock::now_unix_ms());
        let trace = dir.join(format!("{stem}.trace"));
        let snap = dir.join(format!("{stem}.snap"));
        let written = std::fs::write(&trace, &reproduction.trace)
            .and_then(|()| std::fs::write(&snap, &reproduction.snapshot_file));
        if let Err(e) = written {
            warn!("cannot save the canary's divergence into {}: {e}", dir.display());
            return None;
        }
        Some(format!(
            "tasuki test {} --app {} --restore {}",
            trace.display(),
            new.display(),
            snap.display()
        ))
    }

    /// `tasuki compact`, or `--compact-below`: the live release swapped for a fresh instance of
    /// itself through the ordinary upgrade (pre-copy, pause, commit or roll back), so that only
    /// the live state crosses and the old instance's garbage goes with its memory. `why` is
    /// what the report says.
    fn compact(&self, why: String) -> Result<UpgradeReport, UpgradeError> {
        let _guard = self.exclusive(None)?;
        self.compacting.store(true, Ordering::Relaxed);
        let result = self.compact_locked(why);
        self.compacting.store(false, Ordering::Relaxed);
        result
    }

    /// [`Upgrader::compact`] with the upgrade lock held.
    fn compact_locked(&self, why: String) -> Result<UpgradeReport, UpgradeError> {
        info!("compaction requested: {why}");
        let version = Arc::clone(&self.live_version.lock().unwrap_or_else(|p| p.into_inner()));
        let running = self.shared.running_info();
        let args = self.args.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let prepared = upgrade::prepare_loaded(
            version,
            Pipeline::default(),
            &args,
            &running,
            false,
            std::time::Instant::now(),
        );
        let mut prepared = match prepared {
            Ok(prepared) => prepared,
            Err(e) => {
                info!("{e}");
                self.shared.record_compaction(Err(e.to_string()));
                return Err(e);
            }
        };
        prepared.compaction = Some(why);
        self.swap(prepared)
    }

    /// Hands a prepared upgrade to the dispatcher and waits for its outcome.
    fn swap(&self, prepared: upgrade::Prepared) -> Result<UpgradeReport, UpgradeError> {
        let version = Arc::clone(&prepared.version);
        let (reply, outcome) = mpsc::sync_channel(1);
        self.send(Command::Upgrade(Box::new(prepared), reply))?;
        match outcome.recv() {
            Ok(swapped) => {
                // The losing instance's memory is freed here, off the event loop.
                drop(swapped.retired);
                release_free_heap();
                if swapped.outcome.is_ok() {
                    *self.live_version.lock().unwrap_or_else(|p| p.into_inner()) = version;
                }
                swapped.outcome
            }
            Err(_) => Err(UpgradeError::HostStopped),
        }
    }
}

/// Hands the pages glibc's allocator holds free back to the kernel (`malloc_trim(0)`): the
/// export, the journal and the retired instance's host-side buffers are freed by then, and
/// glibc keeps freed small blocks in its arenas otherwise — after a compaction, about 25 MiB
/// that `VmRSS` would go on counting; after the start, the compiler's working memory. Elsewhere
/// (musl, other systems) it does nothing.
#[allow(unsafe_code, reason = "one FFI call that takes no pointers")]
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` reads no caller memory; glibc marks it MT-Safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sets glibc's allocator for a long-running host that moves whole states through its heap:
/// blocks of 1 MiB and more (exports, checkpoint chunks of a big state, journals) are mapped
/// on their own and go back to the kernel when freed, and an arena's free top is returned past
/// 8 MiB. Left alone, glibc raises both thresholds after the first big free (up to 32 and 64
/// MiB), so that a freed export of a large state stays resident at the top of the event loop's
/// arena, where `malloc_trim` does not reach. Call it once, before starting a host; `tasuki run`
/// does. Elsewhere (musl, other systems) it does nothing.
#[allow(unsafe_code, reason = "two FFI calls that take no pointers")]
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` reads no caller memory; glibc marks it MT-Unsafe only against other
    // `mallopt` calls, and this runs once, before the host's threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
    }
}

/// Compacts the live instance when [`compaction_due`] says so, at most once per
/// `--compact-interval`; runs on a thread of its own until `stop` says so (or its sender is
/// gone).
fn compact_when_due(upgrader: &Upgrader, limits: &Limits, stop: &mpsc::Receiver<()>) {
    use std::time::Instant;
    let mut not_before = Instant::now() + limits.compact_interval;
    // This thread's first reading, for an instance that could not say its fresh memory.
    let mut floor: Option<u64> = None;
    let mut failures = 0u32;
    loop {
        match stop.recv_timeout(crate::limits::MEMORY_CHECK) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let Some(usage) = upgrader.shared.memory() else { continue };
        // The instance's memory when it was fresh, as the loop read it before any event; this
        // thread's first reading only if the instance cannot say (it may come after a load).
        let fresh = upgrader
            .shared
            .fresh_memory()
            .unwrap_or_else(|| *floor.get_or_insert(usage.linear_memory));
        if Instant::now() < not_before {
            continue;
        }
        let Some(why) = compaction_due(usage, fresh, limits) else { continue };
        match upgrader.compact(why) {
            Ok(report) => {
                // The loop noted the fresh instance's memory as the new floor at the commit.
                info!("{report}");
                failures = 0;
                not_before = Instant::now() + limits.compact_interval;
            }
            // Another upgrade holds the lock: try again at the next check.
            Err(UpgradeError::InProgress) => {}
            Err(e) => {
                failures += 1;
                let wait = retry_after(limits.compact_interval, failures);
                tracing::warn!(
                    "compaction failed ({failures} in a row), next try in {}s at the earliest: {e}",
                    wait.as_secs()
                );
                not_before = Instant::now() + wait;
            }
        }
    }
}

/// How long after its last failure a compaction that failed `failures` times in a row is tried
/// again: the interval, doubled per failure, up to an hour. A failed compaction is a failed
/// upgrade, and an export that traps costs the app a rebuild each time.
fn retry_after(interval: std::time::Duration, failures: u32) -> std::time::Duration {
    let hour = std::time::Duration::from_secs(3600);
    interval.saturating_mul(1 << failures.min(12)).min(hour.max(interval))
}

/// Why the live instance should be compacted, given its memory now and `floor`, the linear
/// memory of an instance just started or compacted; `None` if it should not: its linear memory
/// is under `--compact-min-memory`, or under twice the floor (a fresh instance would give back
/// too little: without this an idle host whose floor is over `--compact-min-memory` would
/// compact at every interval, forever), or its heap is at least `--compact-below` percent of it.
fn compaction_due(usage: MemoryUsage, floor: u64, limits: &Limits) -> Option<String> {
    let below = f64::from(limits.compact_below) / 100.0;
    if limits.compact_below == 0
        || usage.linear_memory < limits.compact_min_memory
        || usage.linear_memory < floor.saturating_mul(2)
        || usage.used_share() >= below
    {
        return None;
    }
    Some(format!(
        "heap {:.1} MiB in use of {:.1} MiB linear memory, below {}%",
        usage.heap_in_use as f64 / 1_048_576.0,
        usage.linear_memory as f64 / 1_048_576.0,
        limits.compact_below
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn usage(heap_mib: u64, linear_mib: u64) -> MemoryUsage {
        MemoryUsage { heap_in_use: heap_mib * MIB, linear_memory: linear_mib * MIB }
    }

    #[test]
    fn a_failing_compaction_is_retried_less_and_less_often() {
        let minute = std::time::Duration::from_secs(60);
        assert_eq!(retry_after(minute, 1), 2 * minute);
        assert_eq!(retry_after(minute, 3), 8 * minute);
        assert_eq!(retry_after(minute, 40), 60 * minute);
        // An interval already over an hour is kept.
        assert_eq!(retry_after(120 * minute, 1), 120 * minute);
    }

    #[test]
    fn a_compaction_is_due_only_when_it_gives_memory_back() {
        let limits = Limits { compact_min_memory: 0, ..Limits::default() };
        // Mostly garbage, and far over what a fresh instance holds.
        assert!(compaction_due(usage(10, 256), MIB, &limits).is_some());
        // A busy heap.
        assert!(compaction_due(usage(200, 256), MIB, &limits).is_none());
        // An idle instance as small as a fresh one: compacting it gives nothing back.
        assert!(
            compaction_due(MemoryUsage { heap_in_use: 2_000, linear_memory: MIB }, MIB, &limits)
                .is_none()
        );
        // Under --compact-min-memory, or with compaction off.
        let limits = Limits { compact_min_memory: 512 * MIB, ..Limits::default() };
        assert!(compaction_due(usage(10, 256), MIB, &limits).is_none());
        let limits = Limits { compact_below: 0, compact_min_memory: 0, ..Limits::default() };
        assert!(compaction_due(usage(10, 256), MIB, &limits).is_none());
    }
}

/// A started host. Dropping it does not stop it; call [`RunningHost::shutdown`].
#[derive(Debug)]
pub struct RunningHost {
    addrs: Vec<SocketAddr>,
    upgrader: Arc<Upgrader>,
    dispatcher: JoinHandle<()>,
    control: Option<ControlServer>,
    /// Stops the compaction thread (`None` with `--compact-below 0`).
    compactor: Option<mpsc::Sender<()>>,
    snapshots: Option<Scheduler>,
}

/// The thread that takes snapshots on a schedule.
#[derive(Debug)]
struct Scheduler {
    dir: SnapshotDir,
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Scheduler {
    fn start(upgrader: &Arc<Upgrader>, schedule: &SnapshotSchedule) -> std::io::Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let upgrader = Arc::clone(upgrader);
        let dir = schedule.dir.clone();
        let every = schedule.every;
        let thread =
            std::thread::Builder::new().name("tasuki-snapshots".into()).spawn(move || {
                let Some(every) = every else { return };
                // Waiting on the channel: a stop ends the wait at once.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    upgrader.snapshot_into(&dir, upgrader.take_snapshot(Command::Snapshot));
                }
            })?;
        Ok(Self { dir: schedule.dir.clone(), stop, thread })
    }

    fn stop(self) -> SnapshotDir {
        drop(self.stop);
        let _ = self.thread.join();
        self.dir
    }
}

/// Tells [`HostConfig::on_stop`] when the event loop ends other than by being asked to,
/// including by a panic (dropped while unwinding).
struct DeathNotice(Option<mpsc::Sender<Stop>>);

impl DeathNotice {
    fn died(&mut self, reason: String) {
        error!("the event loop stopped: {reason}; nothing is served any more");
        if let Some(notify) = self.0.take() {
            let _ = notify.send(Stop::LoopDied(reason));
        }
    }
}

impl Drop for DeathNotice {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.died("it panicked (the message is above)".into());
        }
    }
}

impl Host {
    /// Loads and starts the app, binds every listener and the control socket, and starts
    /// serving on a thread of its own.
    pub fn start(config: HostConfig) -> Result<RunningHost, StartError> {
        let runtime = Runtime::new(config.limits.clone(), config.sandbox.clone())
            .map_err(|e| StartError::Engine(format!("{e:#}")))?;
        let mut config = config;
        // Shown by `status`; absolute, so it means the same from any directory.
        if let Ok(absolute) = std::fs::canonicalize(&config.app) {
            config.app = absolute;
        }
        let version = Version::load(&runtime, &config.app)?;
        let journal = config.limits.journal;
        if journal == 0 {
            tracing::warn!(
                "recovery is off (--journal 0): a trap restarts the app with empty state"
            );
        }
        let live = match &config.restore {
            None => Live::start(Arc::clone(&version), &config.args, journal).map_err(|error| {
                StartError::Start { app: config.app.clone(), error: Box::new(error) }
            })?,
            Some(restore) => {
                let (instance, info) =
                    crate::recovery::start(&version, &config.args).map_err(|error| {
                        StartError::Start { app: config.app.clone(), error: Box::new(error) }
                    })?;
                let state = migrate(&runtime, &restore.file, &restore.transforms, Some(&info))
                    .map_err(|error| StartError::Restore {
                        file: restore.file.clone(),
                        error: Box::new(error),
                    })?;
                let app = AppVersion::from(&info);
                let live = Live::restore(Arc::clone(&version), (instance, info), journal, state)
                    .map_err(|error| StartError::RestoreRefused {
                        file: restore.file.clone(),
                        app: app.clone(),
                        error: Box::new(error),
                    })?;
                info!("{app} restored from {}", restore.file.display());
                live
            }
        };
        let info = live.info().clone();

        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for addr in &config.listen {
            // `listen` again on the bound socket only raises the backlog std chose.
            let listener = std::net::TcpListener::bind(addr)
                .and_then(|l| {
                    rustix::net::listen(&l, crate::limits::LISTEN_BACKLOG)
                        .map(|()| l)
                        .map_err(Into::into)
                })
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|source| StartError::Listen { addr: *addr, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| StartError::Listen { addr: *addr, source })?;
            addrs.push(local);
            listeners.push((mio::net::TcpListener::from_std(listener), local.to_string()));
        }

        let poll = Poll::new().map_err(StartError::Loop)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(StartError::Loop)?);
        let (commands, receiver) = mpsc::channel();
        let shared = Arc::new(Shared::new(
            info.clone(),
            config.app.clone(),
            addrs.iter().map(ToString::to_string).collect(),
        ));
        let app = AppVersion::from(&info);
        let mut event_loop = EventLoop::new(
            poll,
            listeners,
            live,
            config.args.clone(),
            receiver,
            Arc::clone(&shared),
        )
        .map_err(StartError::Loop)?;
        event_loop.refuse_with(config.refuse_reply.clone());
        event_loop.wake_with(Arc::clone(&waker));
        if let Some(path) = &config.record {
            let recorder = crate::sim::record::Recorder::create(path)
                .map_err(|source| StartError::Record { path: path.clone(), source })?;
            event_loop.record(Box::new(recorder));
        }
        // Compiling the app left cranelift's working memory free in glibc's arenas (about
        // 11 MiB for kv): give it back before serving.
        release_free_heap();
        let mut notice = DeathNotice(config.on_stop.clone());
        let dispatcher = std::thread::Builder::new()
            .name("tasuki-dispatcher".into())
            .spawn(move || {
                if let Err(e) = event_loop.run() {
                    notice.died(e.to_string());
                }
            })
            .map_err(StartError::Loop)?;

        let upgrader = Arc::new(Upgrader {
            runtime,
            shared,
            commands: Mutex::new(commands),
            waker,
            args: Mutex::new(config.args),
            in_progress: Mutex::new(()),
            live_version: Mutex::new(Arc::clone(&version)),
            compacting: AtomicBool::new(false),
        });
        let compactor = if config.limits.compact_below > 0 {
            let (stop, stopped) = mpsc::channel();
            let (upgrader, limits) = (Arc::clone(&upgrader), config.limits.clone());
            std::thread::Builder::new()
                .name("tasuki-compactor".into())
                .spawn(move || compact_when_due(&upgrader, &limits, &stopped))
                .map_err(StartError::Loop)?;
            Some(stop)
        } else {
            None
        };
        let control = match &config.control {
            None => None,
            Some(path) => {
                let serving = Arc::clone(&upgrader);
                let server = ControlServer::start(path, move |request| match request {
                    Request::Status => Response::Status(Box::new(serving.shared.status())),
                    Request::Snapshot { out } => match serving.snapshot(&out) {
                        Ok(report) => Response::Snapshotted(report),
                        Err(e) => Response::Failed(e.to_string()),
                    },
                    Request::Upgrade { wasm, options } => match serving.upgrade(&wasm, &options) {
                        Ok(report) => Response::Upgraded(Box::new(report)),
                        Err(e) => Response::Failed(e.to_string()),
                    },
                    Request::Compact => match serving.compact("requested".into()) {
                        Ok(report) => Response::Upgraded(Box::new(report)),
                        Err(e) => Response::Failed(e.to_string()),
                    },
                });
                match server {
                    Ok(server) => Some(server),
                    Err(source) => {
                        let host = RunningHost {
                            addrs,
                            upgrader,
                            dispatcher,
                            control: None,
                            compactor,
                            snapshots: None,
                        };
                        host.shutdown();
                        return Err(StartError::Control { path: path.clone(), source });
                    }
                }
            }
        };
        let snapshots = match &config.snapshots {
            None => None,
            Some(schedule) => {
                upgrader.shared.snapshots_into(schedule.dir.path().into(), schedule.every);
                match Scheduler::start(&upgrader, schedule) {
                    Ok(scheduler) => Some(scheduler),
                    Err(e) => {
                        let host = RunningHost {
                            addrs,
                            upgrader,
                            dispatcher,
                            control,
                            compactor,
                            snapshots: None,
                        };
                        host.shutdown();
                        return Err(StartError::Loop(e));
                    }
                }
            }
        };
        info!(
            "{app} serving on {}",
            addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        );
        Ok(RunningHost { addrs, upgrader, dispatcher, control, compactor, snapshots })
    }
}

impl RunningHost {
    /// The addresses actually bound, in the order of [`HostConfig::listen`].
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Upgrades to the component at `wasm`, as `tasuki upgrade` does.
    pub fn upgrade(&self, wasm: &Path) -> Result<UpgradeReport, UpgradeError> {
        self.upgrader.upgrade(wasm, &UpgradeOptions::default())
    }

    /// Upgrades with transformers or from the last checkpoint, as `tasuki upgrade` with flags.
    pub fn upgrade_with(
        &self,
        wasm: &Path,
        options: &UpgradeOptions,
    ) -> Result<UpgradeReport, UpgradeError> {
        self.upgrader.upgrade(wasm, options)
    }

    /// Upgrades to `wasm` from the host's last checkpoint plus the events journaled since,
    /// instead of the running version's export: the escape hatch for an app that cannot export.
    pub fn upgrade_from_checkpoint(&self, wasm: &Path) -> Result<UpgradeReport, UpgradeError> {
        self.upgrader
            .upgrade(wasm, &UpgradeOptions { from_checkpoint: true, ..UpgradeOptions::default() })
    }

    /// Writes the running state to a snapshot file, as `tasuki snapshot --out` does.
    pub fn snapshot(&self, out: &Path) -> Result<SnapshotReport, SnapshotError> {
        self.upgrader.snapshot(out)
    }

    /// Swaps the live instance for a fresh one of the same release, as `tasuki compact` does.
    pub fn compact(&self) -> Result<UpgradeReport, UpgradeError> {
        self.upgrader.compact("requested".into())
    }

    /// What `tasuki status` would show.
    pub fn status(&self) -> Status {
        self.upgrader.shared.status()
    }

    /// Stops serving at once: closes the listeners, every connection and the control socket.
    /// Replies not yet written are lost; [`RunningHost::drain`] writes them first.
    pub fn shutdown(self) {
        drop(self.compactor);
        if let Some(snapshots) = self.snapshots {
            snapshots.stop();
        }
        // An error means the loop is gone already.
        let _ = self.upgrader.send(Command::Shutdown);
        drop(self.control);
        let _ = self.dispatcher.join();
    }

    /// Stops serving cleanly (SIGTERM): stops accepting and reading, rolls back an upgrade under
    /// way, writes a last snapshot into the snapshot directory if there is one (of the state as
    /// input stopped), and lets every connection take its queued replies for up to `timeout`
    /// before closing them all. A `status` request is still answered meanwhile.
    pub fn drain(self, timeout: Duration) -> DrainReport {
        drop(self.compactor);
        let dir = self.snapshots.map(Scheduler::stop);
        let deadline = Instant::now() + timeout;
        let mut report = DrainReport::default();
        match &dir {
            Some(dir) => {
                let state = self
                    .upgrader
                    .take_snapshot(|reply| Command::Drain { deadline, snapshot: Some(reply) });
                self.upgrader.snapshot_into(dir, state);
                report.snapshot = Some(self.upgrader.shared.last_snapshot());
            }
            None => {
                let _ = self.upgrader.send(Command::Drain { deadline, snapshot: None });
            }
        }
        let _ = self.dispatcher.join();
        drop(self.control);
        report
    }

    /// Blocks until the host stops (it stops only if its event loop fails).
    pub fn wait(self) {
        let _ = self.dispatcher.join();
    }
}

/// How a drain ended.
#[derive(Debug, Default)]
pub struct DrainReport {
    /// The last snapshot's path, or why it was not written; `None` without a snapshot
    /// directory.
    pub snapshot: Option<Result<PathBuf, String>>,
}

/// `tasuki upgrade` as a function: asks the host behind `control` to upgrade to `wasm`.
pub fn request_upgrade(
    control: &Path,
    wasm: &Path,
    options: UpgradeOptions,
) -> Result<Response, control::ControlError> {
    control::request(control, &Request::Upgrade { wasm: wasm.into(), options })
}

/// Reads the snapshot file at `file`, pipes it through `transforms`, and — given the target
/// app's `describe` — checks before running anything that the result is of that app and in
/// versions it reads. The work behind `tasuki run --restore` and `tasuki migrate`. Returns the
/// state: its pre-copied chunks (to import first; none for a file exported whole) and the
/// snapshot of the rest.
pub fn migrate(
    runtime: &Runtime,
    file: &Path,
    transforms: &[PathBuf],
    target: Option<&AppInfo>,
) -> Result<(Vec<Chunk>, Snapshot), MigrateError> {
    let stored = SnapshotFile::read(file)?;
    if let Some(target) = target
        && stored.app != target.name
    {
        return Err(SnapshotFileError::WrongApp {
            path: file.into(),
            found: stored.app,
            expected: target.name.clone(),
        }
        .into());
    }
    let pipeline = Pipeline::load(runtime, transforms)?;
    let sections: Vec<(String, u32)> =
        stored.sections.iter().map(|s| (s.name.clone(), s.version)).collect();
    match target {
        Some(target) => pipeline.check(&sections, target)?,
        None => drop(pipeline.follow(&sections)?),
    }
    let (chunks, snapshot) = stored.into_state();
    Ok(pipeline.apply_chunked(chunks, snapshot)?)
}

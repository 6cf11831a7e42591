use super::ControlArg;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;
use tasuki::host::{Restore, SnapshotSchedule, Stop};
use tasuki::limits::{self, Limits};
use tasuki::sandbox::{Preopen, Sandbox};
use tasuki::snapshot::{SnapshotDir, SnapshotDirError};
use tasuki::{Host, HostConfig};

const MIB: usize = 1 << 20;

/// Serve an app: own its listeners and connections and dispatch their events to it, until
/// stopped.
///
/// SIGTERM or Ctrl-C drains: no more connections or input are taken, an upgrade under way rolls
/// back, a last snapshot is written into --snapshot-dir (if set), queued replies are written for
/// up to --drain-timeout, and it exits 0. A second SIGTERM or Ctrl-C exits at once (status 1).
/// If the event loop itself fails, it exits with status 1 and the reason.
#[derive(Debug, clap::Args)]
pub struct RunCommand {
    /// The app's component (a `.wasm` built for wasm32-wasip2 with the tasuki guest SDK).
    app: PathBuf,
    /// Address to accept connections on, e.g. 127.0.0.1:6379 or localhost:6379 (a name is
    /// listened on at every address it resolves to). Repeat for several.
    #[arg(long, required = true, value_name = "ADDR", value_parser = parse_listen)]
    listen: Vec<Listen>,
    /// An argument for the app's `init`, given on start and to every upgraded version. Repeat
    /// for several.
    #[arg(long = "arg", value_name = "ARG")]
    args: Vec<String>,
    #[command(flatten)]
    control: ControlArg,

    /// Start from the state in this snapshot file (written by `tasuki snapshot`) instead of
    /// empty state; `latest` is the newest valid snapshot in --snapshot-dir (as is the default
    /// when --snapshot-dir holds any). A file named `latest` is `./latest`.
    #[arg(long, value_name = "FILE|latest")]
    restore: Option<PathBuf>,
    /// Write snapshots into this directory (created owner-only if missing): every
    /// --snapshot-every, and a last one when stopped by SIGTERM or Ctrl-C. On start, the newest
    /// valid snapshot in it is restored (a damaged one is skipped, named in the log); a host
    /// killed outright loses at most what came after the newest snapshot.
    #[arg(long, value_name = "DIR")]
    snapshot_dir: Option<PathBuf>,
    /// How often to write a snapshot into --snapshot-dir, e.g. `30s`, `500ms`, `5m`. Without
    /// it, only the last one is written, when the host stops cleanly.
    #[arg(long, value_name = "DURATION", requires = "snapshot_dir", value_parser = parse_interval)]
    snapshot_every: Option<Duration>,
    /// Snapshots kept in --snapshot-dir; older ones are deleted.
    #[arg(long, value_name = "N", default_value_t = limits::SNAPSHOT_KEEP)]
    snapshot_keep: usize,
    /// How long a stopping host lets clients read the replies queued for them, in ms.
    #[arg(long, value_name = "MS", default_value_t = limits::DRAIN_TIMEOUT.as_millis() as u64)]
    drain_timeout: u64,
    /// Write the session to FILE as a trace — every connection, every byte sent and every
    /// reply — so `tasuki test` can replay it, with an upgrade at every boundary.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// A transformer the restored state goes through first, in order. Repeat for a chain.
    #[arg(long = "transform", value_name = "T.wasm")]
    transforms: Vec<PathBuf>,

    /// Let the app use a host directory, seen by it at GUEST (the same path if not given).
    /// Without it the app sees no filesystem at all.
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    dirs: Vec<Preopen>,
    /// Give the app an environment variable. Without it the app sees none.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,

    /// Linear memory one instance may use, in MiB (an upgrade briefly runs two).
    #[arg(long, value_name = "MIB", default_value_t = limits::MEMORY_LIMIT / MIB)]
    memory_limit: usize,
    /// How long one event may run before it is stopped, in ms; its connection is then closed
    /// and the app rebuilt from its journal. Deadlines are counted in 10 ms epoch ticks: this
    /// is rounded up to whole ticks plus one, so an event always gets at least this long and
    /// less than two ticks more (1 ms gives 10 to 20 ms).
    #[arg(long, value_name = "MS", default_value_t = limits::EVENT_DEADLINE.as_millis() as u64)]
    call_deadline: u64,
    /// How long each state call of an upgrade (init, export, import) may run, in ms.
    #[arg(long, value_name = "MS", default_value_t = limits::STATE_DEADLINE.as_millis() as u64)]
    upgrade_deadline: u64,
    /// Largest state an upgrade moves, in MiB; a bigger state rolls the upgrade back.
    #[arg(long, value_name = "MIB", default_value_t = (limits::MAX_STATE as usize) / MIB)]
    max_state: usize,
    /// Connections open at once; more are closed as soon as they are accepted (after
    /// --refuse-reply).
    #[arg(long, value_name = "N", default_value_t = limits::MAX_CONNECTIONS)]
    max_connections: usize,
    /// Bytes written to a connection refused over --max-connections before it is closed, in the
    /// app's protocol, with \r \n \t \\ \xHH escapes; the app itself is never called for it.
    /// For kv, redis's words: '-ERR max number of clients reached\r\n'. Without it, the
    /// connection is closed without a word.
    #[arg(long, value_name = "TEXT", value_parser = parse_reply, allow_hyphen_values = true)]
    refuse_reply: Option<Bytes>,
    /// Listeners the app may have open at once that it opened while running (FTP's passive
    /// data ports); a request past it is answered with a `limit` error. At most 32768.
    #[arg(long, value_name = "N", default_value_t = limits::MAX_LISTENERS)]
    max_listeners: usize,
    /// The ports the app may open listeners on while running, LOW-HIGH (inclusive, as
    /// vsftpd's pasv_min_port and pasv_max_port): port 0 then means a free one of them.
    /// Without it the app may ask only for port 0, a free port the system picks from its
    /// ephemeral range.
    #[arg(long, value_name = "LOW-HIGH", value_parser = parse_ports)]
    data_ports: Option<std::ops::RangeInclusive<u16>>,
    /// Replies queued for one connection before the host stops handing its input to the app,
    /// in KiB; what the client sends meanwhile is held (see --input-buffer) until it reads. A
    /// connection is closed at 32 times this (at least 256 MiB). Also each new connection's
    /// send window: an app built with the SDK sends no more than that before the client reads
    /// half of it (it is told by `on-writable`), so a stream of any size costs about this much.
    #[arg(long, value_name = "KIB", default_value_t = limits::OUTPUT_HIGH_WATER / 1024)]
    output_buffer: usize,
    /// Input held for one connection while its replies are backed up, in MiB (redis's
    /// client-query-buffer-limit). A client that sends more without reading is closed; a
    /// pipeline smaller than this always completes.
    #[arg(long, value_name = "MIB", default_value_t = limits::INPUT_BUFFER / MIB)]
    input_buffer: usize,
    /// Input the app keeps unconsumed for one connection (a request still arriving), in MiB
    /// (redis's client-query-buffer-limit; kv's proto-max-bulk-len). A connection that leaves
    /// more is closed, and so is the one holding the most once all of them together hold half
    /// of --max-state.
    #[arg(long, value_name = "MIB", default_value_t = limits::QUERY_BUFFER / MIB)]
    query_buffer: usize,
    /// Bytes the host buffers for all connections together (replies queued, input held), in
    /// MiB; past it the connections that buffer the most are closed (redis's
    /// maxmemory-clients).
    #[arg(long, value_name = "MIB", default_value_t = limits::BUFFER_BUDGET / MIB)]
    buffer_budget: usize,
    /// Bound of the recovery journal, in MiB; 0 turns recovery off, so that a trap loses the
    /// app's state.
    #[arg(long, value_name = "MIB", default_value_t = limits::JOURNAL_LIMIT / MIB)]
    journal: usize,
    /// Bytes of state an upgrade's pre-copy moves per step, between events, in KiB: a client
    /// waits at most about one step's time (up to 16 chunks while writes outrun the copy). 0 moves the whole state inside the pause instead.
    #[arg(long, value_name = "KIB", default_value_t = tasuki::precopy::DEFAULT_CHUNK / 1024)]
    precopy_chunk: u64,
    /// Compact — swap the instance for a fresh one of the same release, which takes only the
    /// live state and leaves the garbage behind — when the app's heap in use falls below this
    /// percentage of its linear memory (which never shrinks otherwise). 0 turns it off;
    /// `tasuki compact` works either way. Apps built without the SDK's heap counter are
    /// compacted only on request.
    #[arg(long, value_name = "PERCENT", default_value_t = limits::COMPACT_BELOW,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    compact_below: u32,
    /// No automatic compaction while the linear memory is below this, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = limits::COMPACT_MIN_MEMORY >> 20)]
    compact_min_memory: u64,
    /// Least time between two automatic compactions (and after the host starts), in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = limits::COMPACT_INTERVAL.as_secs())]
    compact_interval: u64,
    /// Where the recovery checkpoint and journal are kept (default: the system's temporary
    /// directory, $TMPDIR or /tmp): each in an unnamed file, gone with the process, so that the
    /// host's second copy of the state is page cache the kernel can reclaim, not resident
    /// memory. On a tmpfs it stays in RAM. A directory given here that cannot hold a file is
    /// refused at start; if a write fails later (a full disk), what follows is kept in memory.
    #[arg(long, value_name = "DIR")]
    checkpoint_dir: Option<PathBuf>,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let every = humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e}"))?;
    if every < Duration::from_millis(10) {
        return Err(format!("`{s}` is under 10ms: a snapshot is a copy of the whole state"));
    }
    Ok(every)
}

/// A `--data-ports` range: `LOW-HIGH`, both ports from 1, LOW at most HIGH.
pub(crate) fn parse_ports(s: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (low, high) = s.split_once('-').ok_or("expected LOW-HIGH, such as 50000-50100")?;
    let port =
        |p: &str| p.trim().parse::<u16>().map_err(|e| format!("`{p}` is not a port number: {e}"));
    let (low, high) = (port(low)?, port(high)?);
    if low == 0 || low > high {
        return Err(format!("{low}-{high}: LOW must be at least 1 and at most HIGH"));
    }
    Ok(low..=high)
}

/// A `--listen` address: every address its name resolves to.
#[derive(Debug, Clone)]
struct Listen(Vec<SocketAddr>);

fn parse_listen(s: &str) -> Result<Listen, String> {
    use std::net::ToSocketAddrs;
    let mut addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("`{s}` is not HOST:PORT or ADDR:PORT ({e})"))?
        .collect();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(format!("`{s}` resolves to no address"));
    }
    Ok(Listen(addrs))
}

/// Bytes given as escaped text on the command line.
#[derive(Debug, Clone)]
struct Bytes(Vec<u8>);

fn parse_reply(s: &str) -> Result<Bytes, String> {
    tasuki::sim::trace::unescape(s).map(Bytes)
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.into(), value.into())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// A server holding 10,000 connections needs more descriptors than the usual soft limit of
/// 1024: raise it to the hard limit, as most servers do.
fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!("cannot raise the open-file limit: {e}");
        }
    }
}

impl RunCommand {
    /// Where the recovery state's files go, checked by making one there before a socket is
    /// bound. A directory named with `--checkpoint-dir` that cannot hold a file is refused; the
    /// default one (the system's temporary directory) is only warned about, and the recovery
    /// state is then kept in memory, as a host without files keeps it.
    fn checkpoint_dir(&self) -> anyhow::Result<Option<PathBuf>> {
        let dir = self.checkpoint_dir.clone().unwrap_or_else(std::env::temp_dir);
        anyhow::ensure!(dir.is_dir(), "--checkpoint-dir {}: not a directory", dir.display());
        match tempfile::tempfile_in(&dir) {
            Ok(_) => Ok(Some(dir)),
            Err(e) if self.checkpoint_dir.is_some() => Err(anyhow::anyhow!(
                "--checkpoint-dir {}: cannot write the recovery checkpoint's file there: {e}",
                dir.display()
            )),
            Err(e) => {
                tracing::warn!(
                    "cannot write a file in {} ({e}): the recovery checkpoint and journal are \
                     kept in memory; name a writable directory with --checkpoint-dir",
                    dir.display()
                );
                Ok(None)
            }
        }
    }

    pub fn execute(self) -> anyhow::Result<ExitCode> {
        anyhow::ensure!(self.memory_limit > 0, "--memory-limit must be at least 1 MiB");
        anyhow::ensure!(self.snapshot_keep > 0, "--snapshot-keep must be at least 1");
        anyhow::ensure!(self.max_connections > 0, "--max-connections must be at least 1");
        anyhow::ensure!(self.call_deadline > 0, "--call-deadline must be at least 1 ms");
        anyhow::ensure!(
            self.max_listeners <= 1 << 15,
            "--max-listeners must be at most 32768 (the host's poll tokens for them)"
        );
        anyhow::ensure!(self.upgrade_deadline > 0, "--upgrade-deadline must be at least 1 ms");
        for dir in &self.dirs {
            anyhow::ensure!(dir.host.is_dir(), "--dir {}: not a directory", dir.host.display());
        }
        let checkpoint_dir = self.checkpoint_dir()?;
        raise_fd_limit();
        tasuki::host::tune_allocator();
        let limits = Limits {
            memory: self.memory_limit.saturating_mul(MIB),
            call_deadline: Duration::from_millis(self.call_deadline),
            upgrade_deadline: Duration::from_millis(self.upgrade_deadline),
            max_state: (self.max_state as u64).saturating_mul(MIB as u64),
            max_connections: self.max_connections,
            output_buffer: self.output_buffer.saturating_mul(1024).max(1),
            input_buffer: self.input_buffer.saturating_mul(MIB),
            query_buffer: self.query_buffer.saturating_mul(MIB).max(1),
            buffer_budget: self.buffer_budget.saturating_mul(MIB),
            journal: self.journal.saturating_mul(MIB),
            precopy_chunk: self.precopy_chunk.saturating_mul(1024),
            compact_below: self.compact_below,
            compact_min_memory: self.compact_min_memory.saturating_mul(MIB as u64),
            compact_interval: Duration::from_secs(self.compact_interval),
            checkpoint_dir,
            max_listeners: self.max_listeners,
            data_ports: self.data_ports.clone(),
        };
        let snapshots = match &self.snapshot_dir {
            None => None,
            Some(dir) => Some(SnapshotSchedule {
                dir: SnapshotDir::open(dir, self.snapshot_keep)?,
                every: self.snapshot_every,
            }),
        };
        let restore = self.restore_from(snapshots.as_ref())?;
        // The handler goes in before the host starts: a SIGTERM that arrives as soon as it
        // serves must stop it cleanly, not kill it.
        let (stop, stopped) = mpsc::channel();
        let signal = stop.clone();
        ctrlc::set_handler(move || {
            let _ = signal.send(Stop::Signal);
        })
        .context("cannot install the signal handler")?;
        let host = Host::start(HostConfig {
            app: self.app,
            listen: self.listen.into_iter().flat_map(|l| l.0).collect(),
            control: Some(self.control.control),
            args: self.args,
            limits,
            sandbox: Sandbox { dirs: self.dirs, env: self.env },
            restore,
            record: self.record,
            snapshots,
            refuse_reply: self.refuse_reply.map(|b| b.0).unwrap_or_default(),
            on_stop: Some(stop),
        })?;
        // A signal, or the loop's death; the sender in the handler lives forever.
        match stopped.recv() {
            Ok(Stop::Signal) | Err(_) => {}
            Ok(Stop::LoopDied(reason)) => {
                host.shutdown();
                anyhow::bail!("the event loop stopped: {reason}");
            }
        }
        // A second signal while draining exits at once.
        std::thread::spawn(move || {
            if let Ok(Stop::Signal) = stopped.recv() {
                eprintln!("second signal: exiting at once, without draining");
                std::process::exit(1);
            }
        });
        tracing::info!("stopping (again to exit at once)");
        let drained = host.drain(Duration::from_millis(self.drain_timeout));
        match drained.snapshot {
            Some(Err(reason)) => {
                anyhow::bail!("stopped, but the last snapshot was not written: {reason}")
            }
            Some(Ok(path)) => tracing::info!("stopped; last snapshot {}", path.display()),
            None => tracing::info!("stopped"),
        }
        Ok(ExitCode::SUCCESS)
    }

    /// The snapshot to start from: --restore FILE, or the newest valid one in --snapshot-dir
    /// (`--restore latest`, or no --restore at all).
    fn restore_from(
        &self,
        snapshots: Option<&SnapshotSchedule>,
    ) -> anyhow::Result<Option<Restore>> {
        let transforms = self.transforms.clone();
        let latest = match (&self.restore, snapshots) {
            (Some(file), _) if file.as_os_str() != "latest" => {
                return Ok(Some(Restore { file: file.clone(), transforms }));
            }
            (Some(_), None) => anyhow::bail!("--restore latest needs --snapshot-dir"),
            (_, None) if transforms.is_empty() => return Ok(None),
            (_, None) => anyhow::bail!("--transform applies to a restored state: give --restore"),
            (restore, Some(schedule)) => match schedule.dir.latest()? {
                Some((file, _)) => file,
                None if restore.is_some() => {
                    return Err(SnapshotDirError::Empty { path: schedule.dir.path().into() }.into());
                }
                None => {
                    tracing::info!(
                        "{} holds no snapshot: starting with empty state",
                        schedule.dir.path().display()
                    );
                    return Ok(None);
                }
            },
        };
        Ok(Some(Restore { file: latest, transforms }))
    }
}

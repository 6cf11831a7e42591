use super::ControlArg;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;
use tasuki::host::Restore;
use tasuki::limits::{self, Limits};
use tasuki::sandbox::{Preopen, Sandbox};
use tasuki::{Host, HostConfig};

const MIB: usize = 1 << 20;

/// Serve an app: own its listeners and connections and dispatch their events to it, until
/// interrupted (Ctrl-C or SIGTERM stop it cleanly).
#[derive(Debug, clap::Args)]
pub struct RunCommand {
    /// The app's component (a `.wasm` built for wasm32-wasip2 with the tasuki guest SDK).
    app: PathBuf,
    /// Address to accept connections on, e.g. 127.0.0.1:6379. Repeat for several.
    #[arg(long, required = true, value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// An argument for the app's `init`, given on start and to every upgraded version. Repeat
    /// for several.
    #[arg(long = "arg", value_name = "ARG")]
    args: Vec<String>,
    #[command(flatten)]
    control: ControlArg,

    /// Start from the state in this snapshot file (written by `tasuki snapshot`) instead of
    /// empty state.
    #[arg(long, value_name = "FILE")]
    restore: Option<PathBuf>,
    /// Write the session to FILE as a trace — every connection, every byte sent and every
    /// reply — so `tasuki test` can replay it, with an upgrade at every boundary.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// A transformer the restored state goes through first, in order. Repeat for a chain.
    #[arg(long = "transform", value_name = "T.wasm", requires = "restore")]
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
    /// and the app rebuilt from its journal.
    #[arg(long, value_name = "MS", default_value_t = limits::EVENT_DEADLINE.as_millis() as u64)]
    call_deadline: u64,
    /// How long each state call of an upgrade (init, export, import) may run, in ms.
    #[arg(long, value_name = "MS", default_value_t = limits::STATE_DEADLINE.as_millis() as u64)]
    upgrade_deadline: u64,
    /// Largest state an upgrade moves, in MiB; a bigger state rolls the upgrade back.
    #[arg(long, value_name = "MIB", default_value_t = (limits::MAX_STATE as usize) / MIB)]
    max_state: usize,
    /// Connections open at once; more are closed as soon as they are accepted.
    #[arg(long, value_name = "N", default_value_t = limits::MAX_CONNECTIONS)]
    max_connections: usize,
    /// Replies queued for one connection before the host stops reading from it, in KiB. A
    /// connection is closed at 32 times this (at least 256 MiB).
    #[arg(long, value_name = "KIB", default_value_t = limits::OUTPUT_HIGH_WATER / 1024)]
    output_buffer: usize,
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
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        anyhow::ensure!(self.memory_limit > 0, "--memory-limit must be at least 1 MiB");
        anyhow::ensure!(self.max_connections > 0, "--max-connections must be at least 1");
        anyhow::ensure!(self.call_deadline > 0, "--call-deadline must be at least 1 ms");
        anyhow::ensure!(self.upgrade_deadline > 0, "--upgrade-deadline must be at least 1 ms");
        for dir in &self.dirs {
            anyhow::ensure!(dir.host.is_dir(), "--dir {}: not a directory", dir.host.display());
        }
        raise_fd_limit();
        tasuki::host::tune_allocator();
        let limits = Limits {
            memory: self.memory_limit.saturating_mul(MIB),
            call_deadline: Duration::from_millis(self.call_deadline),
            upgrade_deadline: Duration::from_millis(self.upgrade_deadline),
            max_state: (self.max_state as u64).saturating_mul(MIB as u64),
            max_connections: self.max_connections,
            output_buffer: self.output_buffer.saturating_mul(1024).max(1),
            journal: self.journal.saturating_mul(MIB),
            precopy_chunk: self.precopy_chunk.saturating_mul(1024),
            compact_below: self.compact_below,
            compact_min_memory: self.compact_min_memory.saturating_mul(MIB as u64),
            compact_interval: Duration::from_secs(self.compact_interval),
        };
        // The handler goes in before the host starts: a SIGTERM that arrives as soon as it
        // serves must stop it cleanly, not kill it.
        let (stop, stopped) = mpsc::channel();
        ctrlc::set_handler(move || {
            let _ = stop.send(());
        })
        .context("cannot install the signal handler")?;
        let host = Host::start(HostConfig {
            app: self.app,
            listen: self.listen,
            control: Some(self.control.control),
            args: self.args,
            limits,
            sandbox: Sandbox { dirs: self.dirs, env: self.env },
            restore: self.restore.map(|file| Restore { file, transforms: self.transforms }),
            record: self.record,
        })?;
        // Either a signal arrives, or the sender lives forever: both end the wait correctly.
        let _ = stopped.recv();
        tracing::info!("stopping");
        host.shutdown();
        Ok(ExitCode::SUCCESS)
    }
}

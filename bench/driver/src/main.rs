//! `tasuki-bench`: the measuring half of `bench/run`.
//!
//! The script starts the servers and runs `redis-benchmark`; everything that needs a program —
//! loading a million keys, upgrading a hundred times under load while checking that no INCR is
//! lost, restarting redis-server the way its users upgrade it, sampling memory and CPU, and
//! writing `bench/RESULTS.md` — is a subcommand here, and so is the soak behind `bench/soak`. Every measuring subcommand writes a raw
//! `key=value` file; `report` reads the directory of them and does the arithmetic.

mod bulk;
mod clients;
mod large;
mod load;
mod memory;
mod procfs;
mod profile;
mod raw;
mod report;
mod restarts;
mod soak;
mod stats;
mod upgrades;

use anyhow::{Context, bail};
use clap::Parser;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(name = "tasuki-bench", about = "The benchmark driver behind bench/run")]
enum Cli {
    /// Prints a free TCP port on 127.0.0.1.
    FreePort,
    /// Waits until a Redis-protocol server at ADDR answers PING.
    Wait {
        addr: String,
        #[arg(long, default_value_t = 30)]
        timeout_s: u64,
    },
    /// FLUSHALL, then loads KEYS keys with pipelined MSETs.
    Load(load::LoadArgs),
    /// Prints the CPU time a process has used (all its threads) as raw lines:
    /// `PREFIXcpu_ns=…`, `PREFIXutime_ticks=…`, `PREFIXstime_ticks=…`.
    Cpu {
        pid: u32,
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Waits until a process is idle: under 5% of a core over 250 ms (all its threads). Between
    /// benchmark runs, so that a checkpoint still under way when one run ended (the host steps it
    /// without waiting for events) is not charged to the next run, perhaps another server's.
    Idle {
        pid: u32,
        /// Gives up (an error) after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout_s: u64,
    },
    /// Upgrades a `tasuki run` host over and over under an INCR load; checks nothing was lost.
    Upgrades(upgrades::UpgradesArgs),
    /// Profiles one whole-state upgrade with `perf`: which part of the transfer each sample
    /// belongs to.
    Profile(profile::ProfileArgs),
    /// Sends one `RPUSH` of N elements while another client PINGs; times both.
    LargeRequest(large::LargeArgs),
    /// Loads keys with 1000-key MSETs written at once while another client PINGs; times both.
    BulkLoad(bulk::BulkArgs),
    /// Memory per key beside redis-server, where tasuki's goes, and what a compaction gives back.
    Memory(memory::MemoryArgs),
    /// Restarts redis-server (SHUTDOWN SAVE, start, load the RDB) under the same load.
    Restarts(restarts::RestartsArgs),
    /// Runs a host under hostile clients beside one well-behaved client (or that client alone,
    /// with `--alone`); fails if the host exits, its RSS passes a bound, or a request fails.
    Soak(soak::SoakArgs),
    /// Writes RESULTS.md from a directory of raw results.
    Report(report::ReportArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::FreePort => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            println!("{}", listener.local_addr()?.port());
            Ok(())
        }
        Cli::Wait { addr, timeout_s } => wait_ready(&addr, Duration::from_secs(timeout_s)),
        Cli::Load(args) => {
            let loaded = load::run(&args)?;
            println!("{loaded}");
            Ok(())
        }
        Cli::Cpu { pid, prefix } => {
            let cpu = procfs::cpu(pid)?;
            println!("{prefix}cpu_ns={}", cpu.ns);
            println!("{prefix}utime_ticks={}", cpu.utime_ticks);
            println!("{prefix}stime_ticks={}", cpu.stime_ticks);
            Ok(())
        }
        Cli::Idle { pid, timeout_s } => wait_idle(pid, Duration::from_secs(timeout_s)),
        Cli::Upgrades(args) => upgrades::run(&args),
        Cli::Profile(args) => profile::run(&args),
        Cli::LargeRequest(args) => large::run(&args),
        Cli::BulkLoad(args) => bulk::run(&args),
        Cli::Memory(args) => memory::run(&args),
        Cli::Restarts(args) => restarts::run(&args),
        Cli::Soak(args) => soak::run(&args),
        Cli::Report(args) => report::run(&args),
    }
}

/// `redis://ADDR/` for the `redis` crate.
pub(crate) fn url(addr: &str) -> String {
    format!("redis://{addr}/")
}

/// Waits until the server at `addr` answers PING with PONG (not `-LOADING`).
pub(crate) fn wait_ready(addr: &str, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let client = redis::Client::open(url(addr))?;
    loop {
        let pong = client
            .get_connection_with_timeout(Duration::from_millis(500))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
        match pong {
            Ok(p) if p == "PONG" => return Ok(()),
            Ok(other) => bail!("{addr} answered PING with {other:?}"),
            Err(_) if started.elapsed() < timeout => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(e).with_context(|| format!("{addr} not ready after {timeout:?}")),
        }
    }
}

/// How long [`wait_idle`] watches a process at a time, and the CPU it may use meanwhile.
const IDLE_WINDOW: Duration = Duration::from_millis(250);
const IDLE_CPU: Duration = Duration::from_micros(12_500);

/// Waits until process `pid` used at most [`IDLE_CPU`] over an [`IDLE_WINDOW`].
fn wait_idle(pid: u32, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut before = procfs::cpu(pid)?.ns;
    loop {
        std::thread::sleep(IDLE_WINDOW);
        let now = procfs::cpu(pid)?.ns;
        if now.saturating_sub(before) <= IDLE_CPU.as_nanos() as u64 {
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!("process {pid} still busy after {timeout:?}");
        }
        before = now;
    }
}

/// Where raw results go.
pub(crate) fn write_raw(path: &PathBuf, raw: &raw::Raw) -> anyhow::Result<()> {
    std::fs::write(path, raw.to_string()).with_context(|| format!("writing {}", path.display()))
}

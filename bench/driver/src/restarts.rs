//! What a redis-server user does instead of a hot swap: `SHUTDOWN SAVE`, start the new binary,
//! let it load the RDB. Run under the same INCR load as the upgrades, with clients that
//! reconnect, so the table can put the downtime and the failed requests side by side with
//! tasuki's pause.

use crate::clients::{self, Load};
use crate::load::{self, LoadArgs};
use crate::procfs;
use crate::raw::Raw;
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct RestartsArgs {
    /// The redis-server binary.
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    /// Port to run it on (127.0.0.1).
    #[arg(long)]
    port: u16,
    /// Its working directory (the RDB goes there).
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    keys: u64,
    #[arg(long, default_value_t = 16)]
    value_size: usize,
    /// Restarts in a row.
    #[arg(long, default_value_t = 5)]
    count: usize,
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Time between restarts, so the load runs in between.
    #[arg(long, default_value_t = 300)]
    gap_ms: u64,
    #[arg(long)]
    out: PathBuf,
}

fn spawn(args: &RestartsArgs) -> anyhow::Result<Child> {
    Command::new(&args.redis_server)
        .args(["--port", &args.port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--dbfilename", "bench.rdb"])
        .arg("--dir")
        .arg(&args.dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", args.redis_server.display()))
}

/// Asks the server to save and exit, and waits until it has.
fn shutdown(addr: &str, child: &mut Child, save: bool) -> anyhow::Result<()> {
    let client = redis::Client::open(crate::url(addr))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
    // The server exits without answering: an I/O error is the expected outcome.
    let _ = redis::cmd("SHUTDOWN").arg(if save { "SAVE" } else { "NOSAVE" }).query::<()>(&mut conn);
    let status = child.wait()?;
    if !status.success() && save {
        bail!("redis-server exited with {status} on SHUTDOWN SAVE");
    }
    Ok(())
}

pub fn run(args: &RestartsArgs) -> anyhow::Result<()> {
    let addr = format!("127.0.0.1:{}", args.port);
    std::fs::create_dir_all(&args.dir)?;
    let mut child = spawn(args)?;
    crate::wait_ready(&addr, Duration::from_secs(10))?;
    let loaded =
        load::run(&LoadArgs { addr: addr.clone(), keys: args.keys, value_size: args.value_size })?;
    eprintln!("  {loaded}");
    std::thread::sleep(Duration::from_millis(200));
    let mut raw = Raw::default();
    raw.set("keys", args.keys);
    raw.set("value_size", args.value_size);
    raw.set("rss_steady_kib", procfs::rss_kib(child.id())?);

    let load = Load::start(&addr, args.clients, true)?;
    std::thread::sleep(Duration::from_millis(300));
    let mut downtime = Vec::new();
    let mut rdb_bytes = 0;
    for i in 1..=args.count {
        let down = Instant::now();
        shutdown(&addr, &mut child, true)?;
        rdb_bytes = std::fs::metadata(args.dir.join("bench.rdb"))?.len();
        child = spawn(args)?;
        crate::wait_ready(&addr, Duration::from_secs(120))?;
        downtime.push(down.elapsed().as_secs_f64() * 1e6);
        eprintln!("  restart {i}/{}: down {:.1} ms", args.count, downtime[i - 1] / 1e3);
        std::thread::sleep(Duration::from_millis(args.gap_ms));
    }
    raw.set("rss_end_kib", procfs::rss_kib(child.id())?);
    let stats = load.stop()?;
    let finals = clients::final_values(&addr, &stats)?;
    clients::summarize(&mut raw, &stats, &finals);
    shutdown(&addr, &mut child, false)?;
    let _ = std::fs::remove_file(args.dir.join("bench.rdb"));

    raw.set("restarts", args.count);
    raw.set("rdb_bytes", rdb_bytes);
    raw.set_list("downtime_us", &downtime.iter().map(|d| format!("{d:.1}")).collect::<Vec<_>>());
    crate::write_raw(&args.out, &raw)?;
    eprint!("{raw}");
    Ok(())
}

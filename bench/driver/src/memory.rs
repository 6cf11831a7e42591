//! Memory: what a server holds per key, where tasuki's memory goes, and what a compaction gives
//! back.
//!
//! `memory row` starts one fresh server (redis-server, or `tasuki run APP`), measures it empty,
//! loads KEYS keys the way every other benchmark does ([`load`]: pipelined MSETs of
//! `key:%012d`), waits until it has settled, and writes its resident memory with, for tasuki, the
//! split the host can tell: the guest's heap in use and linear memory (from `tasuki status`), the
//! pages of that linear memory actually resident (from /proc/PID/smaps), and the host's copies of
//! the state (the recovery checkpoint and journal). Every figure is written beside a second
//! reading of it where one exists: VmRSS beside the sum of smaps' Rss and the host's own reading,
//! the heap counter beside kv's `INFO memory`, redis's RSS beside its `used_memory`.
//!
//! `memory compaction` loads a host, deletes most of it (FLUSHALL, or DEL of 9 keys in 10) while
//! a client INCRs a counter of its own throughout, waits for the host's automatic compaction
//! (status.memory.compactions), and writes the RSS before, after the delete and after the
//! compaction with the compaction's pause and the slowest replies the client saw in each phase.
//! It checks that nothing was lost: the counter, and every key the delete left.

use crate::load::{self, LoadArgs};
use crate::procfs;
use crate::raw::Raw;
use anyhow::{Context, anyhow, bail, ensure};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tasuki::control::{Request, Response};
use tasuki::status::Status;

#[derive(Debug, clap::Args)]
pub struct MemoryArgs {
    #[command(subcommand)]
    command: MemoryCommand,
}

#[derive(Debug, clap::Subcommand)]
enum MemoryCommand {
    /// One fresh server, empty and then loaded with KEYS keys: its resident memory and, for
    /// tasuki, where it goes.
    Row(RowArgs),
    /// Load a tasuki host, delete most of it, and wait for the automatic compaction.
    Compaction(CompactionArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct ServerArgs {
    /// Run `tasuki run APP` (the `tasuki` binary given here); without it, redis-server.
    #[arg(long)]
    tasuki: Option<PathBuf>,
    /// The app the host runs.
    #[arg(long, requires = "tasuki")]
    app: Option<PathBuf>,
    /// One more argument for `tasuki run` (`--host-arg=--memory-limit --host-arg=3072`). Repeat.
    #[arg(long = "host-arg", allow_hyphen_values = true)]
    host_args: Vec<String>,
    /// The redis-server binary.
    #[arg(long, default_value = "redis-server")]
    redis_server: PathBuf,
    /// A directory for control sockets and redis-server's working directory.
    #[arg(long)]
    dir: PathBuf,
    /// Where the server writes its log (appended).
    #[arg(long)]
    log: PathBuf,
    /// How long the server may take to settle after loading, in seconds.
    #[arg(long, default_value_t = 600)]
    settle_timeout_s: u64,
}

#[derive(Debug, clap::Args)]
struct RowArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Keys to load.
    #[arg(long)]
    keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 16)]
    value_size: usize,
    /// Where to write the raw result.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Delete {
    /// `FLUSHALL`.
    Flushall,
    /// `DEL` of 9 keys in every 10, pipelined, 1,000 keys a request.
    Del,
}

#[derive(Debug, clap::Args)]
struct CompactionArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[arg(long)]
    keys: u64,
    #[arg(long, default_value_t = 16)]
    value_size: usize,
    /// How the keys are deleted.
    #[arg(long, value_enum)]
    delete: Delete,
    /// How long to wait for the automatic compaction, in seconds.
    #[arg(long, default_value_t = 300)]
    compaction_timeout_s: u64,
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: &MemoryArgs) -> anyhow::Result<()> {
    match &args.command {
        MemoryCommand::Row(args) => row(args),
        MemoryCommand::Compaction(args) => compaction(args),
    }
}

/// A server process started for one measurement, killed when dropped.
struct Server {
    child: Child,
    addr: String,
    /// The host's control socket; `None` for redis-server.
    control: Option<PathBuf>,
}

impl Server {
    fn start(args: &ServerArgs) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        std::fs::create_dir_all(&args.dir)?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&args.log)
            .with_context(|| format!("opening {}", args.log.display()))?;
        let (mut command, control) = match &args.tasuki {
            Some(tasuki) => {
                let app = args.app.as_ref().ok_or_else(|| anyhow!("--tasuki needs --app"))?;
                let control = args.dir.join(format!("memory-{port}.sock"));
                let mut c = Command::new(tasuki);
                c.arg("run")
                    .arg(app)
                    .args(["--listen", &addr])
                    .arg("--control")
                    .arg(&control)
                    .args(&args.host_args)
                    .env(
                        "TASUKI_LOG",
                        std::env::var("TASUKI_LOG").unwrap_or_else(|_| "warn".into()),
                    );
                (c, Some(control))
            }
            None => {
                let mut c = Command::new(&args.redis_server);
                c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--save", "", "--appendonly", "no"])
                    .arg("--dir")
                    .arg(&args.dir);
                (c, None)
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the server")?;
        let mut server = Self { child, addr, control };
        crate::wait_ready(&server.addr, Duration::from_secs(30))
            .with_context(|| format!("the server did not start; see {}", args.log.display()))?;
        // The host may answer on its listener a moment before its control socket is bound.
        let started = Instant::now();
        while let Err(e) = server.status() {
            ensure!(matches!(server.child.try_wait(), Ok(None)), "the server exited: {e:#}");
            if started.elapsed() > Duration::from_secs(30) {
                return Err(e.context("the host's control socket did not answer"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn connection(&self) -> anyhow::Result<redis::Connection> {
        let client = redis::Client::open(crate::url(&self.addr))?;
        let conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
        conn.set_read_timeout(Some(Duration::from_secs(300)))?;
        Ok(conn)
    }

    fn status(&self) -> anyhow::Result<Option<Status>> {
        let Some(control) = &self.control else { return Ok(None) };
        match tasuki::control::request(control, &Request::Status)? {
            Response::Status(status) => Ok(Some(*status)),
            other => bail!("the host answered a status request with {other:?}"),
        }
    }

    /// Stops the server (SIGTERM, as an operator would) and checks it exited.
    fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let status = self.child.wait()?;
        ensure!(status.success(), "the server exited with {status} on SIGTERM");
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `INFO memory`'s numeric fields.
fn info_memory(conn: &mut redis::Connection) -> anyhow::Result<Vec<(String, u64)>> {
    let text: String = redis::cmd("INFO").arg("memory").query(conn).context("INFO memory")?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim().split_once(':'))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect())
}

fn info_field(info: &[(String, u64)], field: &str) -> Option<u64> {
    info.iter().find(|(k, _)| k == field).map(|(_, v)| *v)
}

/// What must stay the same for a host to count as settled: the guest's memory report (read by
/// the host once a second), the checkpoint, the journal, and no pre-copy under way.
fn fingerprint(status: &Status) -> String {
    let usage = status.memory.usage.as_ref().map(|u| (u.heap_in_use, u.linear_memory));
    format!(
        "{usage:?} {:?} {} {}",
        status.recovery.checkpoint,
        status.recovery.journal_bytes,
        status.precopy.is_some()
    )
}

/// How long a server must look unchanged to count as settled: two of the host's memory reads
/// ([`tasuki::limits::MEMORY_CHECK`]), so the last one was taken after the load.
const SETTLE_WINDOW: Duration = Duration::from_secs(2);
/// CPU a settled server may use over [`SETTLE_WINDOW`]: redis-server's cron and the host's
/// memory check use far less; a checkpoint under way (stepped without waiting) uses all of it.
const SETTLE_CPU: Duration = Duration::from_millis(100);

/// Waits until the server has finished what the load started: its resident memory stable (within
/// 0.5%), its CPU idle, and for a host the status unchanged (no checkpoint taken or pre-copy
/// under way) over [`SETTLE_WINDOW`]. Returns how long it took.
fn settle(server: &Server, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let sample = || -> anyhow::Result<(u64, u64, String)> {
        let fp = server.status()?.map(|s| fingerprint(&s)).unwrap_or_default();
        Ok((procfs::rss_kib(server.pid())?, procfs::cpu(server.pid())?.ns, fp))
    };
    let mut since = (Instant::now(), sample()?);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = sample()?;
        let (at, (rss0, cpu0, fp0)) = &since;
        let rss_same = now.0.abs_diff(*rss0) * 200 <= *rss0;
        if !(rss_same && now.2 == *fp0) {
            since = (Instant::now(), now);
        } else if at.elapsed() >= SETTLE_WINDOW {
            if now.1.saturating_sub(*cpu0) <= SETTLE_CPU.as_nanos() as u64 {
                return Ok(started.elapsed());
            }
            since = (Instant::now(), now);
        }
        if started.elapsed() > timeout {
            bail!("the server did not settle within {timeout:?}");
        }
    }
}

/// One mapping of /proc/PID/smaps.
struct Mapping {
    start: u64,
    end: u64,
    perms: String,
    rss_kib: u64,
}

fn smaps(pid: u32) -> anyhow::Result<Vec<Mapping>> {
    let path = format!("/proc/{pid}/smaps");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16))
        {
            let perms = words.next().unwrap_or_default().to_string();
            out.push(Mapping { start, end, perms, rss_kib: 0 });
        } else if first == "Rss:"
            && let Some(m) = out.last_mut()
        {
            m.rss_kib = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    Ok(out)
}

/// The resident pages of a linear memory of `bytes` bytes, in KiB, and how many linear
/// memories of that size the process holds.
///
/// wasmtime (its on-demand allocator, which the host uses: no pooling) reserves each linear
/// memory as one region of several GiB and makes the part the instance has grown to accessible:
/// in smaps that is a few contiguous readable mappings (the data segments' copy-on-write image,
/// `memfd:wasm-memory-image`, and anonymous pages) directly followed by the inaccessible rest of
/// the reservation (`---p`: at least the guard pages, however far the memory has grown). A
/// memory is found by walking back from an inaccessible mapping over the contiguous readable
/// mappings until their sizes add up to `bytes` exactly, the size the guest reports: other
/// mappings followed by an inaccessible one (a malloc arena, a thread's stack) do not add up to
/// it.
fn linear_memory_resident(maps: &[Mapping], bytes: u64) -> (u64, usize) {
    let mut resident = 0;
    let mut found = 0;
    for (i, reservation) in maps.iter().enumerate() {
        if !reservation.perms.starts_with("---") {
            continue;
        }
        let (mut size, mut rss, mut next_start) = (0, 0, reservation.start);
        for m in maps[..i].iter().rev() {
            if m.end != next_start || !m.perms.starts_with('r') || size >= bytes {
                break;
            }
            size += m.end - m.start;
            rss += m.rss_kib;
            next_start = m.start;
        }
        if size == bytes && bytes > 0 {
            resident += rss;
            found += 1;
        }
    }
    (resident, found)
}

/// Bytes of the unnamed files the host `pid` holds in the temporary directory (its default
/// `--checkpoint-dir`): its checkpoint's chunks and its journal, read through /proc/PID/fd —
/// a second reading of how much of the recovery state is outside its resident memory.
fn recovery_file_bytes(pid: u32) -> u64 {
    let temp = std::env::temp_dir();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    fds.filter_map(Result::ok)
        .filter(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                target.starts_with(&temp) && target.to_string_lossy().ends_with("(deleted)")
            })
        })
        .filter_map(|fd| std::fs::metadata(fd.path()).ok())
        .map(|meta| meta.len())
        .sum()
}

/// What a server looks like now, as raw fields with `prefix`.
fn measure(server: &Server, raw: &mut Raw, prefix: &str) -> anyhow::Result<()> {
    let pid = server.pid();
    let set = |raw: &mut Raw, k: &str, v: u64| raw.set(&format!("{prefix}{k}"), v);
    set(raw, "rss_kib", procfs::rss_kib(pid)?);
    let maps = smaps(pid)?;
    set(raw, "smaps_rss_kib", maps.iter().map(|m| m.rss_kib).sum());
    set(raw, "hwm_kib", procfs::hwm_kib(pid)?);
    let mut conn = server.connection()?;
    let info = info_memory(&mut conn)?;
    for field in ["used_memory", "used_memory_rss"] {
        if let Some(v) = info_field(&info, field) {
            set(raw, &format!("info_{field}"), v);
        }
    }
    set(raw, "dbsize", redis::cmd("DBSIZE").query(&mut conn)?);
    let Some(status) = server.status()? else { return Ok(()) };
    set(raw, "status_resident", status.memory.resident);
    if let Some(usage) = &status.memory.usage {
        set(raw, "heap_in_use", usage.heap_in_use);
        set(raw, "linear_memory", usage.linear_memory);
        let (resident, found) = linear_memory_resident(&maps, usage.linear_memory);
        set(raw, "linear_resident_kib", resident);
        set(raw, "linear_memories_found", found as u64);
    }
    set(raw, "checkpoint_bytes", status.recovery.checkpoint.map_or(0, |(_, b)| b));
    set(raw, "checkpoint_in_memory", status.recovery.checkpoint_in_memory);
    set(raw, "journal_bytes", status.recovery.journal_bytes);
    set(raw, "recovery_file_bytes", recovery_file_bytes(pid));
    set(raw, "compactions", status.memory.compactions);
    Ok(())
}

fn describe(args: &ServerArgs, raw: &mut Raw) {
    match (&args.tasuki, &args.app) {
        (Some(_), Some(app)) => {
            raw.set("system", "tasuki");
            raw.set("app", app.file_name().and_then(|n| n.to_str()).unwrap_or("?"));
            raw.set("host_args", args.host_args.join(" "));
        }
        _ => raw.set("system", "redis-server"),
    }
}

fn row(args: &RowArgs) -> anyhow::Result<()> {
    let mut raw = Raw::default();
    describe(&args.server, &mut raw);
    raw.set("keys", args.keys);
    raw.set("value_size", args.value_size);
    let timeout = Duration::from_secs(args.server.settle_timeout_s);
    let server = Server::start(&args.server)?;
    settle(&server, timeout)?;
    measure(&server, &mut raw, "empty_")?;
    if args.keys > 0 {
        let loaded = load::run(&LoadArgs {
            addr: server.addr.clone(),
            keys: args.keys,
            value_size: args.value_size,
        })?;
        eprintln!("  {loaded}");
    }
    raw.set("settle_ms", settle(&server, timeout)?.as_millis());
    measure(&server, &mut raw, "")?;
    ensure!(
        raw.num("dbsize")? as u64 == args.keys,
        "DBSIZE is {} after loading {} keys",
        raw.num("dbsize")?,
        args.keys
    );
    server.stop()?;
    crate::write_raw(&args.out, &raw)?;
    eprint!("{}", indent(&raw));
    Ok(())
}

fn indent(raw: &Raw) -> String {
    raw.to_string().lines().map(|l| format!("  | {l}\n")).collect()
}

/// A client INCRing a counter of its own on one connection, one request at a time, recording
/// when each request was sent (µs since `t0`) and how long its reply took (µs).
struct Incr {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    thread: JoinHandle<anyhow::Result<IncrLog>>,
}

#[derive(Default)]
struct IncrLog {
    /// (sent, latency) in µs.
    replies: Vec<(u64, u64)>,
    /// Replies that were neither the previous plus one nor 1 (the counter starting over).
    breaks: u64,
    /// Replies of 1 after the first: the counter was deleted in between.
    restarts: u64,
    last: i64,
}

const COUNTER: &str = "bench:memory:counter";

impl Incr {
    fn start(server: &Server, t0: Instant) -> anyhow::Result<Self> {
        let mut conn = server.connection()?;
        redis::cmd("DEL").arg(COUNTER).query::<()>(&mut conn)?;
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let (s, a) = (Arc::clone(&stop), Arc::clone(&acked));
        let thread = std::thread::Builder::new().name("incr".into()).spawn(move || {
            let mut log = IncrLog::default();
            while !s.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let value: i64 = redis::cmd("INCR").arg(COUNTER).query(&mut conn)?;
                let took = sent.elapsed();
                log.replies
                    .push((sent.duration_since(t0).as_micros() as u64, took.as_micros() as u64));
                if value == 1 && log.last != 0 {
                    log.restarts += 1;
                } else if value != log.last + 1 {
                    log.breaks += 1;
                }
                log.last = value;
                a.fetch_add(1, Ordering::Relaxed);
            }
            Ok(log)
        })?;
        Ok(Self { stop, acked, thread })
    }

    /// Waits until `n` more INCRs than now have been answered.
    fn wait_more(&self, n: u64, timeout: Duration) -> anyhow::Result<()> {
        let target = self.acked.load(Ordering::Relaxed) + n;
        let started = Instant::now();
        while self.acked.load(Ordering::Relaxed) < target {
            ensure!(!self.thread.is_finished(), "the INCR client stopped");
            ensure!(started.elapsed() < timeout, "no {n} INCRs answered within {timeout:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn stop(self) -> anyhow::Result<IncrLog> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().map_err(|_| anyhow!("the INCR client panicked"))?
    }
}

impl IncrLog {
    /// The slowest of the requests `pick` chooses by (sent, answered) in µs: (its latency, when it
    /// was sent), and how many it chose.
    fn slowest(&self, pick: impl Fn(u64, u64) -> bool) -> ((u64, u64), usize) {
        let window = self.replies.iter().filter(|(sent, took)| pick(*sent, sent + took));
        window.fold(((0, 0), 0), |(max, n), &(sent, took)| {
            (if took > max.0 { (took, sent) } else { max }, n + 1)
        })
    }
}

fn micros(t0: Instant) -> u64 {
    t0.elapsed().as_micros() as u64
}

fn delete(conn: &mut redis::Connection, how: Delete, keys: u64) -> anyhow::Result<u64> {
    match how {
        Delete::Flushall => {
            redis::cmd("FLUSHALL").query::<()>(conn).context("FLUSHALL")?;
            Ok(keys)
        }
        Delete::Del => {
            let mut deleted = 0;
            let doomed: Vec<u64> = (0..keys).filter(|i| i % 10 != 0).collect();
            for batch in doomed.chunks(8 * load::MSET_KEYS as usize) {
                let mut pipe = redis::pipe();
                for keys in batch.chunks(load::MSET_KEYS as usize) {
                    let mut del = redis::cmd("DEL");
                    for i in keys {
                        del.arg(load::key(*i));
                    }
                    pipe.add_command(del);
                }
                let counts: Vec<u64> = pipe.query(conn).context("DEL")?;
                deleted += counts.iter().sum::<u64>();
            }
            ensure!(deleted == doomed.len() as u64, "DEL removed {deleted} of {}", doomed.len());
            Ok(deleted)
        }
    }
}

/// Every key the delete left, read back with MGET: each must hold the value it was loaded with.
fn check_survivors(
    conn: &mut redis::Connection,
    how: Delete,
    args: &CompactionArgs,
) -> anyhow::Result<u64> {
    let survivors: Vec<u64> = match how {
        Delete::Flushall => Vec::new(),
        Delete::Del => (0..args.keys).filter(|i| i % 10 == 0).collect(),
    };
    for batch in survivors.chunks(load::MSET_KEYS as usize) {
        let mut mget = redis::cmd("MGET");
        for i in batch {
            mget.arg(load::key(*i));
        }
        let values: Vec<Option<Vec<u8>>> = mget.query(conn).context("MGET")?;
        for (i, v) in batch.iter().zip(values) {
            let want = load::value(*i, args.value_size);
            ensure!(
                v.as_ref() == Some(&want),
                "{} reads {v:?} after the compaction",
                load::key(*i)
            );
        }
    }
    let size: u64 = redis::cmd("DBSIZE").query(conn)?;
    // The counter is a key too.
    ensure!(
        size == survivors.len() as u64 + 1,
        "DBSIZE is {size}, {} keys should remain",
        survivors.len()
    );
    Ok(survivors.len() as u64)
}

fn compaction(args: &CompactionArgs) -> anyhow::Result<()> {
    ensure!(args.server.tasuki.is_some(), "a compaction needs --tasuki and --app");
    let mut raw = Raw::default();
    describe(&args.server, &mut raw);
    raw.set("keys", args.keys);
    raw.set("value_size", args.value_size);
    raw.set("delete", format!("{:?}", args.delete).to_lowercase());
    let timeout = Duration::from_secs(args.server.settle_timeout_s);
    let server = Server::start(&args.server)?;
    settle(&server, timeout)?;
    measure(&server, &mut raw, "empty_")?;
    let loaded = load::run(&LoadArgs {
        addr: server.addr.clone(),
        keys: args.keys,
        value_size: args.value_size,
    })?;
    eprintln!("  {loaded}");
    settle(&server, timeout)?;
    measure(&server, &mut raw, "loaded_")?;
    let compactions_before = raw.num("loaded_compactions")? as u64;

    let t0 = Instant::now();
    let unix_t0_ms = tasuki::clock::now_unix_ms() as f64;
    let incr = Incr::start(&server, t0)?;
    incr.wait_more(2000, Duration::from_secs(30))?;
    let mut conn = server.connection()?;
    let delete_sent = micros(t0);
    let deleted = delete(&mut conn, args.delete, args.keys)?;
    let delete_done = micros(t0);
    raw.set("deleted", deleted);
    raw.set("delete_ms", format!("{:.1}", (delete_done - delete_sent) as f64 / 1e3));
    // Right after the delete: the memory the instance still holds.
    raw.set("deleted_rss_kib", procfs::rss_kib(server.pid())?);

    // The host checks the heap once a second and compacts once the interval has passed.
    let started = Instant::now();
    let (report, last_at_unix_ms) = loop {
        let status = server.status()?.ok_or_else(|| anyhow!("no status"))?;
        if status.memory.compactions > compactions_before {
            let last =
                status.memory.last_compaction.ok_or_else(|| anyhow!("no last compaction"))?;
            let report = last.outcome.map_err(|e| anyhow!("the compaction failed: {e}"))?;
            break (report, last.at_unix_ms);
        }
        ensure!(
            started.elapsed() < Duration::from_secs(args.compaction_timeout_s),
            "no compaction within {} s of the delete (memory: {:?})",
            args.compaction_timeout_s,
            status.memory.usage
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let compacted_seen = micros(t0);
    // Replies after the compaction, so its pause is inside the window measured.
    incr.wait_more(2000, Duration::from_secs(30))?;
    let end = micros(t0);
    let log = incr.stop()?;

    raw.set(
        "compaction_after_delete_ms",
        format!("{:.0}", (compacted_seen - delete_done) as f64 / 1e3),
    );
    raw.set("compaction_pause_us", format!("{:.1}", report.pause.as_secs_f64() * 1e6));
    raw.set("compaction_reason", report.compaction.clone().unwrap_or_default());
    raw.set("compaction_state_bytes", report.state_bytes);
    if let Some(m) = &report.memory {
        raw.set("compaction_before_heap", m.before.heap_in_use);
        raw.set("compaction_before_linear", m.before.linear_memory);
        raw.set("compaction_after_heap", m.after.heap_in_use);
        raw.set("compaction_after_linear", m.after.linear_memory);
    }
    // Before: answered before the delete was sent. During: in flight at any moment of the delete
    // (an INCR sent just before a FLUSHALL waits for it). After: sent after the delete's reply.
    let ((before_max, _), before_n) = log.slowest(|_, answered| answered < delete_sent);
    let ((delete_max, _), delete_n) =
        log.slowest(|sent, answered| answered >= delete_sent && sent <= delete_done);
    let ((after_max, after_at), after_n) = log.slowest(|sent, _| sent > delete_done && sent <= end);
    raw.set("incr_before_max_us", before_max);
    raw.set("incr_before_n", before_n);
    raw.set("incr_delete_max_us", delete_max);
    raw.set("incr_delete_n", delete_n);
    raw.set("incr_compaction_max_us", after_max);
    raw.set("incr_compaction_n", after_n);
    // When the slowest reply after the delete was sent and when the compaction committed, both
    // in ms after the delete's reply: whether the compaction is what the client waited for.
    raw.set("incr_compaction_max_at_ms", format!("{:.1}", (after_at - delete_done) as f64 / 1e3));
    let committed = last_at_unix_ms as f64 - (unix_t0_ms + delete_done as f64 / 1e3);
    raw.set("compaction_committed_at_ms", format!("{committed:.0}"));
    raw.set("incr_acked", log.replies.len());
    raw.set("incr_breaks", log.breaks);
    raw.set("incr_restarts", log.restarts);

    let counter: i64 = redis::cmd("GET").arg(COUNTER).query(&mut conn)?;
    let restarts_allowed = u64::from(args.delete == Delete::Flushall);
    ensure!(
        log.breaks == 0 && log.restarts <= restarts_allowed && counter == log.last,
        "the INCR client saw {} out-of-sequence replies and {} restarts; the counter reads {counter} after {} acknowledged",
        log.breaks,
        log.restarts,
        log.last
    );
    raw.set("survivors_checked", check_survivors(&mut conn, args.delete, args)?);
    settle(&server, timeout)?;
    measure(&server, &mut raw, "compacted_")?;
    server.stop()?;
    crate::write_raw(&args.out, &raw)?;
    eprint!("{}", indent(&raw));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(start: u64, end: u64, perms: &str, rss_kib: u64) -> Mapping {
        Mapping { start, end, perms: perms.into(), rss_kib }
    }

    #[test]
    fn a_linear_memory_is_the_readable_run_before_its_reservation() {
        let g = 1 << 30;
        let maps = [
            map(0x1000, 0x2000, "rw-p", 4),
            // A gap, then the memory: an anonymous MiB, the data image, the grown part.
            map(0x10_0000, 0x20_0000, "rw-p", 100),
            map(0x20_0000, 0x20_e000, "rw-p", 56),
            map(0x20_e000, 0x100_0000, "rw-p", 3000),
            map(0x100_0000, 0x100_0000 + 4 * g, "---p", 0),
            // A malloc arena: its used part, then the rest of its reservation.
            map(0x200_0000_0000, 0x200_0010_0000, "rw-p", 1024),
            map(0x200_0010_0000, 0x200_0400_0000, "---p", 0),
        ];
        assert_eq!(linear_memory_resident(&maps, 0x100_0000 - 0x10_0000), (3156, 1));
        // A size that does not add up exactly is not a linear memory.
        assert_eq!(linear_memory_resident(&maps, 0x100_0000 - 0x20_0000 + 0x1000), (0, 0));
        // A memory grown almost to its whole reservation: only the guard pages are left after
        // it, and it is still found.
        let grown = [
            map(0x10_0000, 0x20_0000, "rw-p", 100),
            map(0x20_0000, 0x20_0000 + 4 * g - 0x20_0000, "rw-p", 4000),
            map(0x20_0000 + 4 * g - 0x20_0000, 0x20_0000 + 4 * g + 0x200_0000, "---p", 0),
        ];
        assert_eq!(linear_memory_resident(&grown, 4 * g - 0x10_0000), (4100, 1));
    }
}

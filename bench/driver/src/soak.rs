//! The soak: a `tasuki run` host under hostile clients for a while, beside one well-behaved
//! client whose every request is timed and checked.
//!
//! `soak` starts a fresh host (kv 4 in `bench/soak`), opens the idle connections, then runs the
//! hostile clients of [`hostile`] and the well-behaved client together for `--duration-s`,
//! sampling the host's resident memory every 100 ms. With `--alone` only the well-behaved client
//! runs: the baseline the report puts beside it. Afterwards it checks that the host still
//! serves, counts the closes the host logged by their reason, stops the host with SIGTERM and
//! writes one raw `key=value` file.
//!
//! It fails (after writing the raw file) if the host exited, if its RSS ever passed
//! `--max-rss-mib`, if the well-behaved client saw one failed, wrong or late (10 s) reply, or
//! if a client that stayed within every limit (an idle connection, a trickler) was closed, or a
//! hostile one was closed without the reply the limit documents.

mod hostile;

use crate::procfs;
use crate::raw::Raw;
use crate::stats::Hist;
use anyhow::{Context, anyhow, bail, ensure};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// The `tasuki` binary.
    #[arg(long)]
    tasuki: PathBuf,
    /// The app the host runs (kv 4: the hostile clients rely on its replies).
    #[arg(long)]
    app: PathBuf,
    /// One more argument for `tasuki run` (`--host-arg=--buffer-budget --host-arg=256`). Repeat.
    #[arg(long = "host-arg", allow_hyphen_values = true)]
    host_args: Vec<String>,
    /// A directory for the control socket.
    #[arg(long)]
    dir: PathBuf,
    /// Where the host writes its log (appended); the closes are counted from it.
    #[arg(long)]
    log: PathBuf,
    /// How long the clients run, in seconds.
    #[arg(long, default_value_t = 30)]
    duration_s: u64,
    /// Only the well-behaved client: the baseline.
    #[arg(long)]
    alone: bool,
    #[command(flatten)]
    hostile: hostile::HostileArgs,
    /// The resident memory the host must stay under, in MiB.
    #[arg(long, default_value_t = 3072)]
    max_rss_mib: u64,
    /// Where to write the raw result.
    #[arg(long)]
    out: PathBuf,
}

/// How long one reply may take before the well-behaved client counts it as failed.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the host's RSS is read.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The host's log lines that say it closed a connection, or refused one, at a limit: (the words
/// that identify the line, the raw key it is counted under). Texts from host/src/conn.rs,
/// event_loop.rs, net.rs and the guest SDK's runtime.rs.
const CLOSE_REASONS: &[(&str, &str)] = &[
    ("over --buffer-budget", "closed_buffer_budget"),
    ("while not reading its", "closed_input_buffer"),
    ("bytes of replies it does not read", "closed_output_limit"),
    ("of output in one call", "closed_call_output"),
    ("over --query-buffer", "closed_query_buffer"),
    ("over half of --max-state", "closed_query_total"),
    ("refusing connections beyond the limit", "refused_max_connections"),
];

pub fn run(args: &SoakArgs) -> anyhow::Result<()> {
    let fds = raise_fd_limit()?;
    let needed = if args.alone { 64 } else { args.hostile.idle as u64 + 256 };
    ensure!(fds >= needed, "the open-file limit is {fds}; the soak needs {needed}");

    let log_from = std::fs::metadata(&args.log).map_or(0, |m| m.len());
    let mut host = Host::start(args)?;
    let mut raw = Raw::default();
    raw.set("mode", if args.alone { "alone" } else { "hostile" });
    raw.set("duration_s", args.duration_s);
    raw.set("max_rss_mib", args.max_rss_mib);
    raw.set("host_args", args.host_args.join(" "));
    raw.set("rss_start_kib", procfs::rss_kib(host.pid())?);

    let stop = Arc::new(AtomicBool::new(false));
    let crowd = if args.alone {
        None
    } else {
        let opened = Instant::now();
        let crowd = hostile::Crowd::start(&args.hostile, &host.addr, &stop)?;
        raw.set("idle_open_ms", opened.elapsed().as_millis());
        Some(crowd)
    };

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration_s);
    let addr = host.addr.clone();
    let well_behaved = {
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("well-behaved".into())
            .spawn(move || well_behaved(&addr, &stop, started))?
    };

    // Resident memory every 100 ms; the host must be alive at every sample.
    let mut rss_kib = Vec::new();
    let mut exited = None;
    while Instant::now() < deadline {
        std::thread::sleep(SAMPLE_EVERY);
        if let Some(status) = host.child.try_wait()? {
            exited = Some(status);
            break;
        }
        if let Ok(kib) = procfs::rss_kib(host.pid()) {
            rss_kib.push(kib);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let client = well_behaved.join().map_err(|_| anyhow!("the well-behaved client panicked"))?;
    let crowd = match crowd {
        Some(crowd) => Some(crowd.finish(exited.is_none())?),
        None => None,
    };
    let elapsed = started.elapsed();

    let mut failures = Vec::new();
    if let Some(status) = exited {
        failures.push(format!("the host exited during the soak: {status}"));
    } else if let Err(e) = ping(&host.addr) {
        failures.push(format!("the host no longer answers PING after the soak: {e:#}"));
    }
    raw.set("host_exited", u8::from(exited.is_some()));

    let rss_max = rss_kib.iter().copied().max().unwrap_or(0);
    raw.set("rss_max_kib", rss_max);
    raw.set("rss_end_kib", rss_kib.last().copied().unwrap_or(0));
    // The highest RSS of each second.
    let per_second: Vec<u64> = rss_kib
        .chunks((Duration::from_secs(1).as_millis() / SAMPLE_EVERY.as_millis()) as usize)
        .map(|c| c.iter().copied().max().unwrap_or(0))
        .collect();
    raw.set_list("rss_per_second_kib", &per_second);
    if rss_max > args.max_rss_mib * 1024 {
        failures.push(format!(
            "the host's RSS reached {} MiB, over the bound of {} MiB",
            rss_max / 1024,
            args.max_rss_mib
        ));
    }

    raw.set("requests", client.hist_count);
    raw.set("requests_per_s", format!("{:.0}", client.hist_count as f64 / elapsed.as_secs_f64()));
    raw.set("p50_us", client.hist.percentile_us(50.0));
    raw.set("p99_us", client.hist.percentile_us(99.0));
    raw.set("p999_us", client.hist.percentile_us(99.9));
    raw.set("max_us", client.hist.max_us());
    raw.set_list("max_per_second_us", &client.max_per_second_us);
    raw.set("failed_requests", client.failures.len());
    if let Some(first) = client.failures.first() {
        failures.push(format!(
            "the well-behaved client saw {} failed requests; the first: {first}",
            client.failures.len()
        ));
    }
    if client.hist_count == 0 {
        failures.push("the well-behaved client got no reply at all".into());
    }

    if let Some(crowd) = &crowd {
        crowd.record(&mut raw);
        failures.extend(crowd.failures.iter().cloned());
    }

    if exited.is_none() {
        // The clients are gone: the host must stop as an operator stops it, and exit 0.
        match host.stop() {
            Ok(()) => raw.set("host_stopped_cleanly", 1),
            Err(e) => {
                raw.set("host_stopped_cleanly", 0);
                failures.push(format!("{e:#}"));
            }
        }
    }
    let log = read_from(&args.log, log_from)?;
    read_log(&log, &mut raw);

    raw.set("failures", failures.len());
    crate::write_raw(&args.out, &raw)?;
    println!("{}", summary(&raw));
    if !failures.is_empty() {
        bail!("the soak failed:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

/// Raises this process's open-file limit to the hard limit (the idle connections need one
/// each); returns the limit now in force.
fn raise_fd_limit() -> anyhow::Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.maximum != limit.current {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit).context("raising the open-file limit")?;
    }
    Ok(limit.current.unwrap_or(u64::MAX))
}

/// The host under test, killed if still running when dropped.
struct Host {
    child: Child,
    addr: String,
}

impl Host {
    fn start(args: &SoakArgs) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        std::fs::create_dir_all(&args.dir)?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&args.log)
            .with_context(|| format!("opening {}", args.log.display()))?;
        let child = Command::new(&args.tasuki)
            .arg("run")
            .arg(&args.app)
            .args(["--listen", &addr])
            .arg("--control")
            .arg(args.dir.join(format!("soak-{port}.sock")))
            .args(&args.host_args)
            // The recovery checkpoints are logged at debug level: a whole export stalls the loop.
            .env(
                "TASUKI_LOG",
                std::env::var("TASUKI_LOG")
                    .unwrap_or_else(|_| "info,tasuki::dispatch=debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the host")?;
        let host = Self { child, addr };
        crate::wait_ready(&host.addr, Duration::from_secs(30))
            .with_context(|| format!("the host did not start; see {}", args.log.display()))?;
        Ok(host)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, as an operator stops it: it must exit 0 within its drain timeout and a margin.
    fn stop(&mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let asked = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                ensure!(status.success(), "the host exited with {status} on SIGTERM");
                return Ok(());
            }
            if asked.elapsed() > Duration::from_secs(30) {
                bail!("the host had not exited 30 s after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A fresh connection's PING.
fn ping(addr: &str) -> anyhow::Result<()> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(REPLY_TIMEOUT))?;
    conn.write_all(b"PING\r\n")?;
    let mut pong = [0; 7];
    conn.read_exact(&mut pong)?;
    ensure!(&pong == b"+PONG\r\n", "PING answered {:?}", String::from_utf8_lossy(&pong));
    Ok(())
}

/// What the well-behaved client saw.
struct WellBehaved {
    hist: Hist,
    hist_count: u64,
    /// The slowest reply of each second, µs.
    max_per_second_us: Vec<u64>,
    failures: Vec<String>,
}

/// One connection, one request at a time: `SET soak:wb:N VALUE`, then `GET` of it, each reply
/// checked byte for byte and timed, until `stop`. A failure (an error, a wrong reply, no reply
/// within [`REPLY_TIMEOUT`], a closed connection) is recorded and the client reconnects.
fn well_behaved(addr: &str, stop: &AtomicBool, started: Instant) -> WellBehaved {
    let mut out = WellBehaved {
        hist: Hist::default(),
        hist_count: 0,
        max_per_second_us: Vec::new(),
        failures: Vec::new(),
    };
    let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let (stream, reader) = match &mut conn {
            Some(c) => c,
            None => match connect(addr) {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    out.failures.push(format!("connecting: {e:#}"));
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            },
        };
        let key = format!("soak:wb:{}", i % 1000);
        let value = format!("{i:0100}");
        let set = encode(&["SET", &key, &value]);
        let get = encode(&["GET", &key]);
        let expected_get = format!("${}\r\n{value}\r\n", value.len());
        let mut result = Ok(());
        for (request, expected) in [(&set, "+OK\r\n"), (&get, expected_get.as_str())] {
            let sent = Instant::now();
            result = exchange(stream, reader, request, expected);
            let took = sent.elapsed();
            if result.is_err() {
                break;
            }
            out.hist.record(took);
            out.hist_count += 1;
            let second = (sent - started).as_secs() as usize;
            if out.max_per_second_us.len() <= second {
                out.max_per_second_us.resize(second + 1, 0);
            }
            let us = took.as_micros() as u64;
            out.max_per_second_us[second] = out.max_per_second_us[second].max(us);
        }
        if let Err(e) = result {
            out.failures.push(format!("request {i} ({key}): {e:#}"));
            conn = None;
        }
        i += 1;
    }
    out
}

fn connect(addr: &str) -> anyhow::Result<(TcpStream, BufReader<TcpStream>)> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    let reader = BufReader::new(stream.try_clone()?);
    Ok((stream, reader))
}

/// Writes `request` and reads exactly the bytes of `expected`.
fn exchange(
    stream: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
    request: &[u8],
    expected: &str,
) -> anyhow::Result<()> {
    stream.write_all(request)?;
    let mut reply = vec![0; expected.len()];
    reader.read_exact(&mut reply).context("reading the reply")?;
    if reply != expected.as_bytes() {
        // Show the whole line when it is an error.
        let mut line = String::from_utf8_lossy(&reply).into_owned();
        if reply.first() == Some(&b'-') && !line.ends_with('\n') {
            let _ = reader.read_line(&mut line);
        }
        bail!("expected {expected:?}, got {line:?}");
    }
    Ok(())
}

/// A request as a client library encodes it.
pub(crate) fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

fn read_from(path: &Path, offset: u64) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let from = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
    Ok(String::from_utf8_lossy(&bytes[from..]).into_owned())
}

/// Counts the host's log lines about closes at a limit, by reason; its traps and the longest
/// rebuild after one; its recovery checkpoints, and the longest of those exported whole (the
/// loop waits for it).
fn read_log(log: &str, raw: &mut Raw) {
    for (words, key) in CLOSE_REASONS {
        raw.set(key, log.lines().filter(|l| l.contains(words)).count());
    }
    // `... DEBUG tasuki::dispatch: checkpoint bytes=… took_us=…`, `… rebuilt in 832.3 ms …`
    let field = |line: &str, name: &str| -> Option<f64> {
        line.split_whitespace().find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
    };
    let whole: Vec<&str> = log
        .lines()
        .filter(|l| l.ends_with(": checkpoint") || l.contains(": checkpoint bytes="))
        .collect();
    let chunked = log.lines().filter(|l| l.contains("checkpoint from chunks")).count();
    raw.set("checkpoints_whole", whole.len());
    raw.set("checkpoints_chunked", chunked);
    let longest = whole.iter().filter_map(|l| field(l, "took_us")).fold(0.0, f64::max);
    raw.set("checkpoint_whole_max_us", longest);
    raw.set("traps", log.lines().filter(|l| l.contains(" trapped")).count());
    let rebuilt = log
        .lines()
        .filter_map(|l| l.split_once(" rebuilt in ")?.1.split_once(" ms")?.0.parse::<f64>().ok())
        .fold(0.0, f64::max);
    raw.set("rebuild_max_ms", rebuilt);
}

fn summary(raw: &Raw) -> String {
    let get = |k: &str| raw.get(k).unwrap_or("-").to_string();
    format!(
        "{}: {} requests ({}/s), p50 {} µs, p99 {} µs, max {} µs, failed {}; host RSS max {} KiB",
        get("mode"),
        get("requests"),
        get("requests_per_s"),
        get("p50_us"),
        get("p99_us"),
        get("max_us"),
        get("failed_requests"),
        get("rss_max_kib")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_are_counted_by_reason() {
        let log = "WARN tasuki::conn: closing the connection that buffers the most (5 bytes) over --buffer-budget (4 bytes)\n\
                   kv 4.0.0: closing connection 7: 134217729 bytes of unconsumed input, over --query-buffer (134217728 bytes)\n\
                   WARN tasuki::event_loop: closing a connection that sent 1 bytes more while not reading its 2 bytes of replies\n\
                   DEBUG tasuki::dispatch: checkpoint bytes=10 took_us=1500\n\
                   DEBUG tasuki::dispatch: checkpoint from chunks bytes=10 steps=2 took_us=99999\n\
                   ERROR tasuki::dispatch: kv 4.0.0 trapped: ran past its deadline conn=5040\n\
                   INFO tasuki::dispatch: kv 4.0.0 rebuilt in 832.3 ms from its checkpoint and 2264 journaled events\n";
        let mut raw = Raw::default();
        read_log(log, &mut raw);
        assert_eq!(raw.get("closed_buffer_budget"), Some("1"));
        assert_eq!(raw.get("closed_query_buffer"), Some("1"));
        assert_eq!(raw.get("closed_input_buffer"), Some("1"));
        assert_eq!(raw.get("closed_output_limit"), Some("0"));
        assert_eq!(raw.get("checkpoints_whole"), Some("1"));
        assert_eq!(raw.get("checkpoint_whole_max_us"), Some("1500"));
        assert_eq!(raw.get("checkpoints_chunked"), Some("1"));
        assert_eq!(raw.get("traps"), Some("1"));
        assert_eq!(raw.get("rebuild_max_ms"), Some("832.3"));
    }
}

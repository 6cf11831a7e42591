//! RESULTS.md from a directory of raw results written by `bench/run`:
//!
//! - `meta.kv`: the command, the machine, the commit, the counts (written by the script);
//! - `tp/SYSTEM-TEST-pP-rN.csv`: `redis-benchmark --csv` output of run N, and `.cpu` beside it
//!   with the server's CPU time before and after, and for tasuki `.log`, the host's log lines
//!   about the recovery checkpoints it took during the run; `tp-1m/` the same on a store of 1M
//!   keys, `ckpt/` SETs while checkpoints run;
//! - `upgrades-SERIES-KEYS.kv`, `restarts-KEYS.kv`, `profile-NAME.kv`: from the `upgrades`,
//!   `restarts` and `profile` subcommands;
//! - `large-SYSTEM.kv`: from `large-request`, one per system;
//! - `bulk/`: `SYSTEM-rN.kv` from `bulk-load`, per system and run, with a `bulk.kv` of where
//!   they came from (`bench/run --bulk-load-only` measures them alone);
//! - `memory/`: from `memory row` and `memory compaction`, with a `meta.kv` of its own (the
//!   section may be measured alone, by `bench/run --memory-only`);
//! - `throughput.kv`: where `tp/` and `tp-1m/` came from (their sections may be measured
//!   alone, by `bench/run --throughput-only`);
//! - `canary/`: `base-…` and `canary-…` runs of redis-benchmark against one host, without and
//!   during a canary upgrade, with a `canary.kv` of where they came from (`bench/run
//!   --canary-only` measures them alone).
//!
//! One module per part of the report: [`figures`] the headline table, [`checkpoints`] SET
//! latency while checkpoints run, [`upgrades`] the upgrade tables, [`transfer`] where a
//! whole-state transfer's time goes, [`memory`] memory per key and compaction; throughput, latency and CPU
//! per request are here.

mod bulk;
mod canary;
mod catchup;
mod checkpoints;
mod figures;
mod memory;
mod soak;
mod transfer;
mod upgrades;

use crate::raw::Raw;
use crate::stats::{max, median};
use anyhow::{Context, anyhow};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// The raw results.
    #[arg(long)]
    raw: PathBuf,
    /// Where to write the report.
    #[arg(long)]
    out: PathBuf,
    /// Write only the memory section, into the report at OUT in place of the one there (the
    /// other sections stay as their own run wrote them).
    #[arg(long)]
    memory_only: bool,
    /// Write only the throughput, latency and CPU sections (empty and with 1M keys), into the
    /// report at OUT in place of the ones there.
    #[arg(long, conflicts_with_all = ["memory_only", "soak_only"])]
    throughput_only: bool,
    /// RAW is `bench/soak`'s: write only the soak section, in place of the one at OUT.
    #[arg(long, conflicts_with = "memory_only")]
    soak_only: bool,
    /// Write only the canary cost section, in place of the one at OUT.
    #[arg(long, conflicts_with_all = ["memory_only", "soak_only", "throughput_only"])]
    canary_only: bool,
    /// Write only the catch-up section, in place of the one at OUT.
    #[arg(long, conflicts_with_all = ["memory_only", "soak_only", "throughput_only", "canary_only"])]
    catch_up_only: bool,
    /// Write only the bulk-load section, in place of the one at OUT.
    #[arg(long, conflicts_with_all = ["memory_only", "soak_only", "throughput_only", "canary_only", "catch_up_only"])]
    bulk_load_only: bool,
    /// Write only the SET-under-checkpoints section (from `ckpt/` and `ckpt.kv`) and its row of
    /// the figures at the top, in place of those at OUT.
    #[arg(long, conflicts_with_all = ["memory_only", "soak_only", "throughput_only", "canary_only", "catch_up_only", "bulk_load_only"])]
    checkpoints_only: bool,
}

/// The headings of the sections `--throughput-only` replaces, in their order in the report.
const THROUGHPUT_HEADINGS: &[&str] = &[
    "## Throughput",
    "## Latency",
    "## Server CPU per request",
    "## Throughput with 1M keys in the store",
    "## Latency with 1M keys in the store",
    "## Server CPU per request with 1M keys in the store",
];

/// One redis-benchmark run of one test against one system.
#[derive(Debug, Clone)]
struct Run {
    /// Which repetition (the N of `rN`): the systems' runs with the same N ran in one round, one
    /// after another (in an order that changes from round to round).
    run: u32,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Server CPU time per request, µs.
    cpu_us: Option<f64>,
    /// Of that CPU time, the share spent in the kernel.
    kernel_share: Option<f64>,
    /// The recovery checkpoints the host took during the run (tasuki only).
    checkpoints: Option<Checkpoints>,
}

/// Recovery checkpoints, from the host's debug log lines of one run.
#[derive(Debug, Clone, Default)]
struct Checkpoints {
    /// Built a chunk at a time between events (`checkpoint from chunks`).
    chunked: u32,
    /// Exported whole at one boundary (`checkpoint`): every client waits for it.
    whole: u32,
    /// Of the chunked ones: steps, and time from the first step to the cut.
    steps: Vec<f64>,
    took_us: Vec<f64>,
    /// Of the chunked ones: each one's longest step, its cut's time (the two stops of the
    /// event loop a checkpoint makes), and the rounds whose input the host slowed for it.
    longest_step_us: Vec<f64>,
    cut_us: Vec<f64>,
    throttled_rounds: Vec<f64>,
}

impl Checkpoints {
    /// `… DEBUG tasuki::dispatch: checkpoint from chunks bytes=… steps=… took_us=…`
    fn parse(log: &str) -> Self {
        let mut out = Self::default();
        for line in log.lines() {
            let Some((_, rest)) = line.split_once(": checkpoint") else { continue };
            let field = |name: &str| {
                rest.split_whitespace()
                    .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|v| v.parse::<f64>().ok())
            };
            if rest.starts_with(" from chunks") {
                out.chunked += 1;
                out.steps.extend(field("steps"));
                out.took_us.extend(field("took_us"));
                out.longest_step_us.extend(field("longest_step_us"));
                out.cut_us.extend(field("cut_us"));
                out.throttled_rounds.extend(field("throttled_rounds"));
            } else if rest.starts_with(' ') {
                out.whole += 1;
            }
        }
        out
    }

    fn merge(&mut self, other: &Self) {
        self.chunked += other.chunked;
        self.whole += other.whole;
        self.steps.extend(&other.steps);
        self.took_us.extend(&other.took_us);
        self.longest_step_us.extend(&other.longest_step_us);
        self.cut_us.extend(&other.cut_us);
        self.throttled_rounds.extend(&other.throttled_rounds);
    }

    /// "N (each about S steps over T ms)" for a table.
    fn describe(&self) -> String {
        let mut s = format!("{}", self.chunked + self.whole);
        if self.chunked > 0 {
            write!(
                s,
                ", built from chunks in a median {} steps over {}",
                thousands(median(&self.steps)),
                ms(median(&self.took_us))
            )
            .ok();
        }
        let most = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
        if !self.longest_step_us.is_empty() {
            write!(
                s,
                "; the longest step {}, the longest cut {}",
                ms(most(&self.longest_step_us)),
                ms(most(&self.cut_us))
            )
            .ok();
        }
        let throttled: f64 = self.throttled_rounds.iter().sum();
        if throttled > 0.0 {
            write!(s, "; client input slowed in {} rounds in all", thousands(throttled)).ok();
        }
        if self.whole > 0 {
            write!(s, "; {} exported whole (clients waited for those)", self.whole).ok();
        }
        s
    }
}

/// (test, pipeline, system) -> runs.
type Throughput = BTreeMap<(String, u32, String), Vec<Run>>;

fn parse_csv(text: &str) -> anyhow::Result<Vec<(String, Run)>> {
    let mut rows = Vec::new();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()
        .ok_or_else(|| anyhow!("empty csv"))?
        .split(',')
        .map(|h| h.trim_matches('"').to_string())
        .collect();
    let col = |name: &str| {
        header.iter().position(|h| h == name).ok_or_else(|| anyhow!("no `{name}` column"))
    };
    let (test, rps, p50, p99, top) = (
        col("test")?,
        col("rps")?,
        col("p50_latency_ms")?,
        col("p99_latency_ms")?,
        col("max_latency_ms")?,
    );
    for line in lines {
        let cells: Vec<&str> = line.split(',').map(|c| c.trim_matches('"')).collect();
        let num = |i: usize| -> anyhow::Result<f64> {
            cells.get(i).ok_or_else(|| anyhow!("short row {line:?}"))?.parse().map_err(Into::into)
        };
        rows.push((
            cells[test].to_string(),
            Run {
                run: 0,
                rps: num(rps)?,
                p50_ms: num(p50)?,
                p99_ms: num(p99)?,
                max_ms: num(top)?,
                cpu_us: None,
                kernel_share: None,
                checkpoints: None,
            },
        ));
    }
    Ok(rows)
}

fn read_throughput(dir: &Path, requests: &dyn Fn(u32) -> f64) -> anyhow::Result<Throughput> {
    let mut out = Throughput::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(out) };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "csv") {
            continue;
        }
        // SYSTEM-TEST-pP-rN.csv
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        let parts: Vec<&str> = stem.split('-').collect();
        let [system, _, p, r] = parts[..] else { continue };
        let pipeline: u32 = p.trim_start_matches('p').parse()?;
        let repetition: u32 = r.trim_start_matches('r').parse()?;
        let text = std::fs::read_to_string(&path)?;
        let cpu = Raw::read(&path.with_extension("cpu")).ok();
        let checkpoints = std::fs::read_to_string(path.with_extension("log"))
            .ok()
            .map(|l| Checkpoints::parse(&l));
        for (test, mut run) in parse_csv(&text).with_context(|| format!("{}", path.display()))? {
            run.run = repetition;
            run.checkpoints.clone_from(&checkpoints);
            if let Some(cpu) = &cpu {
                let d = |k: &str| {
                    Some(
                        cpu.opt_num(&format!("after_{k}"))?
                            - cpu.opt_num(&format!("before_{k}"))?,
                    )
                };
                if let (Some(ns), Some(ut), Some(st)) =
                    (d("cpu_ns"), d("utime_ticks"), d("stime_ticks"))
                {
                    run.cpu_us = Some(ns / 1e3 / requests(pipeline));
                    if ut + st > 0.0 {
                        run.kernel_share = Some(st / (ut + st));
                    }
                }
            }
            out.entry((test, pipeline, system.to_string())).or_default().push(run);
        }
    }
    Ok(out)
}

/// tasuki / redis-server per repetition (the runs of one repetition ran in one round, so a
/// machine that slows down for a while slows both), as "median× (min–max)".
fn paired(tp: &Throughput, test: &str, p: u32, f: fn(&Run) -> Option<f64>) -> String {
    paired_systems(tp, test, p, ("redis", "tasuki"), f)
}

/// `of` / `to` per repetition, as [`paired`] gives tasuki / redis-server.
fn paired_systems(
    tp: &Throughput,
    test: &str,
    p: u32,
    (to, of): (&str, &str),
    f: fn(&Run) -> Option<f64>,
) -> String {
    let runs =
        |sys: &str| tp.get(&(test.to_string(), p, sys.to_string())).cloned().unwrap_or_default();
    let (base, measured) = (runs(to), runs(of));
    let ratios: Vec<f64> = measured
        .iter()
        .filter_map(|m| {
            let b = base.iter().find(|b| b.run == m.run)?;
            let (m, b) = (f(m)?, f(b)?);
            (b > 0.0 && m.is_finite()).then(|| m / b)
        })
        .collect();
    match ratios.len() {
        0 => "–".into(),
        1 => format!("{:.2}×", ratios[0]),
        _ => format!(
            "{:.2}× ({:.2}–{:.2})",
            median(&ratios),
            ratios.iter().copied().fold(f64::INFINITY, f64::min),
            max(&ratios)
        ),
    }
}

/// `a / b` with two significant digits at least, so a pause of 1/500th of a restart does not
/// read as 0.00×.
fn ratio(a: f64, b: f64) -> String {
    if !(a.is_finite() && b.is_finite() && b > 0.0) {
        return "–".into();
    }
    let r = a / b;
    match r {
        r if r >= 0.1 || r == 0.0 => format!("{r:.2}×"),
        r if r >= 0.01 => format!("{r:.3}×"),
        r if r >= 0.001 => format!("{r:.4}×"),
        r => format!("{r:.1e}×"),
    }
}

fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let s = format!("{x:.0}");
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(us: f64) -> String {
    if !us.is_finite() {
        "–".into()
    } else if us >= 100_000.0 {
        format!("{:.0} ms", us / 1e3)
    } else if us >= 1_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.3} ms", us / 1e3)
    }
}

fn bytes(b: f64) -> String {
    if !b.is_finite() {
        "–".into()
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

fn mib(kib: f64) -> String {
    if kib.is_finite() { format!("{:.1} MiB", kib / 1024.0) } else { "–".into() }
}

fn keys_label(keys: u64) -> String {
    match keys {
        k if k >= 1_000_000 && k % 1_000_000 == 0 => format!("{}M", k / 1_000_000),
        k if k >= 1_000 && k % 1_000 == 0 => format!("{}k", k / 1_000),
        k => k.to_string(),
    }
}

/// Every `PREFIX-KEYS.kv` in `dir`, by KEYS.
fn read_series(dir: &Path, prefix: &str) -> anyhow::Result<BTreeMap<u64, Raw>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(keys) = name.strip_prefix(prefix).and_then(|r| r.strip_suffix(".kv")) else {
            continue;
        };
        let Ok(keys) = keys.parse() else { continue };
        out.insert(keys, Raw::read(&path)?);
    }
    Ok(out)
}

pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    if args.soak_only {
        let soak = soak::read(&args.raw)?;
        return write_alone(&args.out, soak::HEADING, "soak", |md| soak::write(md, &soak));
    }
    if args.catch_up_only {
        return write_alone(&args.out, catchup::HEADING, "catch-up", |md| {
            catchup::write(md, &args.raw)
        });
    }
    if args.bulk_load_only {
        return write_alone(&args.out, bulk::HEADING, "bulk-load", |md| bulk::write(md, &args.raw));
    }
    if args.checkpoints_only {
        return write_checkpoints_alone(&args.raw, &args.out);
    }
    if args.canary_only {
        return write_alone(&args.out, canary::HEADING, "canary", |md| {
            canary::write(md, &args.raw)
        });
    }
    let memory = memory::read(&args.raw)?;
    if args.memory_only {
        let memory =
            memory.ok_or_else(|| anyhow!("no memory results in {}", args.raw.display()))?;
        let mut section = String::new();
        memory::write(&mut section, &memory)?;
        splice(&args.out, memory::HEADING, &section)?;
        eprintln!("wrote the memory section of {}", args.out.display());
        return Ok(());
    }
    let source = Raw::read(&args.raw.join("throughput.kv")).unwrap_or_default();
    if args.throughput_only {
        let n_for = |p: u32| source.opt_num(&format!("requests_p{p}")).unwrap_or(f64::NAN);
        let mut sections = String::new();
        write_throughput_sections(&mut sections, &args.raw, &source, &n_for)?;
        let ours = |h: &str| THROUGHPUT_HEADINGS.contains(&h);
        splice_sections(&args.out, THROUGHPUT_HEADINGS[0], ours, &sections)?;
        eprintln!("wrote the throughput sections of {}", args.out.display());
        return Ok(());
    }
    let meta = Raw::read(&args.raw.join("meta.kv"))?;
    let m = |k: &str| meta.get(k).unwrap_or("?").to_string();
    let n_for = |p: u32| meta.opt_num(&format!("requests_p{p}")).unwrap_or(f64::NAN);
    let upgrades = upgrades::Upgrades::read(&args.raw)?;
    let restarts = read_series(&args.raw, "restarts-")?;
    let (ckpt, ckpt_requests, ckpt_summary) = read_checkpoints(&args.raw, &meta)?;
    let mut md = String::new();

    writeln!(md, "# tasuki vs redis-server\n")?;
    writeln!(
        md,
        "Written by `{}` ({} mode) on {}. Do not edit by hand: run it again.\n",
        m("command"),
        m("mode"),
        m("date")
    )?;
    writeln!(md, "| | |\n|---|---|")?;
    writeln!(md, "| reproduce | `{}` from the repository root |", m("command"))?;
    writeln!(md, "| commit | `{}` |", m("commit"))?;
    writeln!(md, "| machine | {} cores, {}, {} RAM |", m("cores"), m("cpu_model"), m("mem"))?;
    writeln!(md, "| kernel | Linux {} |", m("kernel"))?;
    writeln!(
        md,
        "| load average (1, 5, 15 min) | {} at the start, {} at the end (anything above 0 besides the benchmark itself disturbs the figures) |",
        m("loadavg_start"),
        m("loadavg_end")
    )?;
    writeln!(
        md,
        "| redis-server | {} (Debian package), `--save '' --appendonly no`, loopback |",
        m("redis_version")
    )?;
    writeln!(
        md,
        "| tasuki | `tasuki run {}` (kv {}) for throughput, latency, CPU and SET under checkpoints; the upgrade, large-request and memory sections name the releases they ran; loopback, release build |",
        source.get("app").unwrap_or("kv_v2.wasm"),
        m("kv_version")
    )?;
    writeln!(md, "| load generator | {} on the same machine |", m("benchmark_version"))?;
    writeln!(
        md,
        "| repetitions | every throughput, latency and CPU figure is the median of {} run(s), redis-server and tasuki alternating |",
        m("runs")
    )?;
    writeln!(md)?;

    figures::write(&mut md, &upgrades, &restarts, ckpt_summary.as_ref())?;
    write_throughput_sections(&mut md, &args.raw, &source, &n_for)?;

    if let Some(summary) = &ckpt_summary {
        checkpoints::write(&mut md, &ckpt, summary, ckpt_requests, &m("connections"))?;
    }
    if !upgrades.is_empty() {
        upgrades::write(&mut md, &upgrades, &restarts)?;
    }
    catchup::write(&mut md, &args.raw)?;
    transfer::write(&mut md, &transfer::read(&args.raw)?)?;
    write_large_request(&mut md, &args.raw)?;
    bulk::write(&mut md, &args.raw)?;
    if args.raw.join("canary").is_dir() {
        canary::write(&mut md, &args.raw)?;
    }
    if let Some(memory) = &memory {
        memory::write(&mut md, memory)?;
    }
    // The soak is measured by bench/soak, not here: its section stays as that run wrote it.
    if let Some(soak) =
        std::fs::read_to_string(&args.out).ok().and_then(|old| section(&old, soak::HEADING))
    {
        md.push_str(&soak);
    }
    std::fs::write(&args.out, md).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

/// The throughput, latency and CPU sections, empty and (if measured) with 1M keys, from `tp/`
/// and `tp-1m/`, opening with where they came from (`source`, `throughput.kv`).
fn write_throughput_sections(
    md: &mut String,
    raw: &Path,
    source: &Raw,
    n_for: &dyn Fn(u32) -> f64,
) -> anyhow::Result<()> {
    let s = |k: &str| source.get(k).unwrap_or("?").to_string();
    let connections = s("connections");
    let tp = read_throughput(&raw.join("tp"), n_for)?;
    let provenance = format!(
        "Measured by `{}` at commit `{}` on {} (load average {} at the start, {} at the end): redis-server {} against `tasuki run {}` (kv {}), {} run(s) of each figure.",
        s("command"),
        s("commit"),
        s("date"),
        s("loadavg_start"),
        s("loadavg_end"),
        s("redis_version"),
        s("app"),
        s("kv_version"),
        s("runs")
    );
    // A load above the cores means other processes competed with the servers and with
    // redis-benchmark for the CPU: the single-threaded redis-server and the host (an event loop
    // beside its epoch and copy threads) do not suffer it alike, so the ratios move with it.
    let busiest = ["loadavg_start", "loadavg_end"]
        .iter()
        .filter_map(|k| source.get(k)?.split(' ').next()?.parse::<f64>().ok())
        .fold(0.0, f64::max);
    let provenance = match source.opt_num("cores") {
        Some(cores) if busiest > cores => format!(
            "{provenance} **The machine was busy** (a load average of up to {busiest} on {cores} cores, from other processes): the throughput ratios and latencies below are not the servers' alone and spread widely from run to run; CPU per request is less affected, and a run on a quiet machine is what to compare with."
        ),
        _ => provenance,
    };
    write_throughput(md, &tp, "", &connections, n_for, &provenance)?;
    // Pipeline 1 on 1M keys may run longer (`requests_1m_p1`), so that its runs hold the
    // same share of checkpoints.
    let n_big = |p: u32| source.opt_num(&format!("requests_1m_p{p}")).unwrap_or_else(|| n_for(p));
    let big = read_throughput(&raw.join("tp-1m"), &n_big)?;
    if !big.is_empty() {
        let title = " with 1M keys in the store";
        write_throughput(md, &big, title, &connections, &n_big, &provenance)?;
    }
    Ok(())
}

/// The systems `bench/run` sends the large request to, in the order of the table.
const LARGE_REQUEST_SYSTEMS: &[(&str, &str)] = &[
    ("redis", "redis-server"),
    ("kv4", "tasuki, kv 4 (parses incrementally)"),
    ("kv3", "tasuki, kv 3 (parses a partial request from its start on every read)"),
];

fn write_large_request(md: &mut String, raw: &Path) -> anyhow::Result<()> {
    let rows: Vec<(&str, Raw)> = LARGE_REQUEST_SYSTEMS
        .iter()
        .filter_map(|(file, name)| {
            Some((*name, Raw::read(&raw.join(format!("large-{file}.kv"))).ok()?))
        })
        .collect();
    let Some((_, first)) = rows.first() else { return Ok(()) };
    writeln!(
        md,
        "## One large request
"
    )?;
    writeln!(
        md,
        "One `RPUSH` of {} elements ({}) sent at once on one connection, while a second client PINGs in a loop: the time from the first byte sent to the reply, and the slowest PING meanwhile (one run each).
",
        thousands(first.num("elements")?),
        bytes(first.num("request_bytes")?)
    )?;
    writeln!(md, "| system | reply after | slowest PING meanwhile | PINGs answered meanwhile |")?;
    writeln!(md, "|---|---:|---:|---:|")?;
    for (name, raw) in &rows {
        writeln!(
            md,
            "| {name} | {} | {} | {} |",
            ms(raw.num("reply_ms")? * 1e3),
            ms(raw.num("ping_max_ms")? * 1e3),
            thousands(raw.num("pings")?)
        )?;
    }
    writeln!(md)?;
    Ok(())
}

fn write_throughput(
    md: &mut String,
    tp: &Throughput,
    title: &str,
    connections: &str,
    n_for: &dyn Fn(u32) -> f64,
    provenance: &str,
) -> anyhow::Result<()> {
    let med = |test: &str, p: u32, sys: &str, f: fn(&Run) -> f64| {
        tp.get(&(test.to_string(), p, sys.to_string()))
            .map_or(f64::NAN, |runs| median(&runs.iter().map(f).collect::<Vec<_>>()))
    };
    let med_opt = |test: &str, p: u32, sys: &str, f: fn(&Run) -> Option<f64>| {
        tp.get(&(test.to_string(), p, sys.to_string()))
            .map_or(f64::NAN, |runs| median(&runs.iter().filter_map(f).collect::<Vec<_>>()))
    };
    let pipelines: Vec<u32> = {
        let mut p: Vec<u32> = tp.keys().map(|(_, p, _)| *p).collect();
        p.sort_unstable();
        p.dedup();
        p
    };
    let tests: Vec<String> = {
        let mut t: Vec<String> = tp.keys().map(|(t, _, _)| t.clone()).collect();
        t.sort_by_key(|t| if t == "SET" { 0 } else { 1 });
        t.dedup();
        t
    };

    writeln!(*md, "## Throughput{title}\n")?;
    writeln!(*md, "{provenance}\n")?;
    writeln!(
        md,
        "`redis-benchmark -t set|get -c {} -n N -P P --csv{}`, one test per invocation (N = {} at pipeline 1, {} at 16). Requests per second, higher is better.{}\n",
        connections,
        if title.is_empty() { "" } else { " -r 1000000" },
        thousands(n_for(1)),
        thousands(n_for(16)),
        if title.is_empty() {
            " The store is empty but for the one key redis-benchmark uses."
        } else {
            " Both servers were loaded with 1M keys (`key:000000000000` … with 16-byte values) first, and every request picks one of them at random: a large state, as in production."
        }
    )?;
    writeln!(
        *md,
        "The ratio is taken run by run (redis-server and tasuki ran back to back) and its median given, with the lowest and highest in brackets: the spread says how much to trust it.\n"
    )?;
    writeln!(*md, "| test | pipeline | redis-server | tasuki | tasuki / redis |")?;
    writeln!(*md, "|---|---:|---:|---:|---:|")?;
    for p in &pipelines {
        for t in &tests {
            let (r, k) = (med(t, *p, "redis", |r| r.rps), med(t, *p, "tasuki", |r| r.rps));
            writeln!(
                *md,
                "| {t} | {p} | {} | {} | {} |",
                thousands(r),
                thousands(k),
                paired(tp, t, *p, |r| Some(r.rps))
            )?;
        }
    }
    writeln!(*md)?;

    writeln!(*md, "## Latency{title}\n")?;
    writeln!(
        *md,
        "From the same runs, as redis-benchmark reports them (ms, lower is better; max is the median over the runs of each run's slowest request).\n"
    )?;
    writeln!(
        md,
        "| test | pipeline | p50 redis-server | p50 tasuki | ratio | p99 redis-server | p99 tasuki | ratio | max redis-server | max tasuki |"
    )?;
    writeln!(*md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for p in &pipelines {
        for t in &tests {
            let (r50, k50) =
                (med(t, *p, "redis", |r| r.p50_ms), med(t, *p, "tasuki", |r| r.p50_ms));
            let (r99, k99) =
                (med(t, *p, "redis", |r| r.p99_ms), med(t, *p, "tasuki", |r| r.p99_ms));
            writeln!(
                md,
                "| {t} | {p} | {r50:.3} | {k50:.3} | {} | {r99:.3} | {k99:.3} | {} | {:.1} | {:.1} |",
                paired(tp, t, *p, |r| Some(r.p50_ms)),
                paired(tp, t, *p, |r| Some(r.p99_ms)),
                med(t, *p, "redis", |r| r.max_ms),
                med(t, *p, "tasuki", |r| r.max_ms)
            )?;
        }
    }
    let mut checkpoints = Checkpoints::default();
    for c in tp.values().flatten().filter_map(|r| r.checkpoints.as_ref()) {
        checkpoints.merge(c);
    }
    if checkpoints.chunked + checkpoints.whole > 0 {
        writeln!(
            *md,
            "\nDuring these runs tasuki took recovery checkpoints, counted from its log (a slow request there may be one): {}.",
            checkpoints.describe()
        )?;
    }
    writeln!(*md)?;

    writeln!(*md, "## Server CPU per request{title}\n")?;
    writeln!(
        md,
        "CPU time the server process used during the same runs (all threads, /proc/PID/task/*/schedstat), divided by the requests. On this machine the load generator shares the cores with the server, so throughput is partly bounded by the client; CPU per request is the cost of the server alone, the figure that decides throughput once the client is not the bottleneck. Kernel share from utime/stime.\n"
    )?;
    writeln!(
        md,
        "| test | pipeline | redis-server µs/req | tasuki µs/req | tasuki / redis | kernel share redis-server | kernel share tasuki |"
    )?;
    writeln!(*md, "|---|---:|---:|---:|---:|---:|---:|")?;
    for p in &pipelines {
        for t in &tests {
            let (r, k) =
                (med_opt(t, *p, "redis", |r| r.cpu_us), med_opt(t, *p, "tasuki", |r| r.cpu_us));
            let (rs, ks) = (
                med_opt(t, *p, "redis", |r| r.kernel_share),
                med_opt(t, *p, "tasuki", |r| r.kernel_share),
            );
            writeln!(
                md,
                "| {t} | {p} | {r:.2} | {k:.2} | {} | {:.0}% | {:.0}% |",
                paired(tp, t, *p, |r| r.cpu_us),
                rs * 100.0,
                ks * 100.0
            )?;
        }
    }
    writeln!(*md)?;

    Ok(())
}

/// Replaces, in the report at `path`, the sections from the heading `first` on, as long as
/// `ours` says a heading is one of them, with `text`; appends `text` if the report has no
/// `first`; writes `text` alone if there is no report yet. [`splice`] for one section.
fn splice_sections(
    path: &Path,
    first: &str,
    ours: impl Fn(&str) -> bool,
    text: &str,
) -> anyhow::Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let start = old.lines().scan(0, |at, line| {
        let here = *at;
        *at += line.len() + 1;
        Some((here, line))
    });
    let mut from = None;
    let mut to = None;
    for (at, line) in start {
        if from.is_none() && line == first {
            from = Some(at);
        } else if from.is_some() && line.starts_with("## ") && !ours(line) {
            to = Some(at);
            break;
        }
    }
    let new = match from {
        Some(from) => {
            let to = to.unwrap_or(old.len());
            format!("{}{text}{}", &old[..from], &old[to.min(old.len())..])
        }
        None if old.is_empty() => text.to_string(),
        None => format!("{}\n{text}", old.trim_end_matches('\n').to_string() + "\n"),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

/// Replaces the section under `heading` of the report at `path` with `section` (the text from
/// the heading up to the next `## ` heading), or appends it if the report has none; writes the
/// section alone if there is no report yet. Sections measured by their own runs (the memory
/// section, the soak) are put in place this way and leave the others as their run wrote them.
/// Writes one section (`write`) into the report at `out` in place of the one under `heading`,
/// for a `--X-only` run; the other sections stay as their own run wrote them.
fn write_alone(
    out: &Path,
    heading: &str,
    name: &str,
    write: impl FnOnce(&mut String) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut section = String::new();
    write(&mut section)?;
    splice(out, heading, &section)?;
    eprintln!("wrote the {name} section of {}", out.display());
    Ok(())
}

/// The SET-under-checkpoints runs (`ckpt/`), the requests each sent and their summary, with the
/// keys and requests from `source` (`meta.kv` of a full run, `ckpt.kv` of `--checkpoints-only`).
fn read_checkpoints(
    raw: &Path,
    source: &Raw,
) -> anyhow::Result<(Throughput, f64, Option<checkpoints::Summary>)> {
    let requests = source.opt_num("ckpt_requests").unwrap_or(f64::NAN);
    let ckpt = read_throughput(&raw.join("ckpt"), &|_| requests)?;
    let summary = checkpoints::summarize(&ckpt, source.opt_num("ckpt_keys").unwrap_or(f64::NAN));
    Ok((ckpt, requests, summary))
}

/// `--checkpoints-only`: the SET-under-checkpoints section, opening with where it came from
/// (`ckpt.kv`), and its row of the figures at the top, which then says which run it came from
/// (the rest of that table is another run's).
fn write_checkpoints_alone(raw: &Path, out: &Path) -> anyhow::Result<()> {
    let source = Raw::read(&raw.join("ckpt.kv"))?;
    let s = |k: &str| source.get(k).unwrap_or("?").to_string();
    let (ckpt, requests, summary) = read_checkpoints(raw, &source)?;
    let summary =
        summary.ok_or_else(|| anyhow!("no SET-under-checkpoints results in {}", raw.display()))?;
    let provenance = format!(
        "`{}` at commit `{}` on {} (load average {} at the start, {} at the end)",
        s("command"),
        s("commit"),
        s("date"),
        s("loadavg_start"),
        s("loadavg_end")
    );
    let mut section = String::new();
    checkpoints::write(&mut section, &ckpt, &summary, requests, &s("connections"))?;
    let section = section.replacen(
        checkpoints::HEADING,
        &format!("{}\n\nMeasured by {provenance}.", checkpoints::HEADING),
        1,
    );
    splice(out, checkpoints::HEADING, &section)?;
    let report = std::fs::read_to_string(out)?;
    let row = figures::checkpoint_row(&summary, &format!(" (measured by {provenance})"))?;
    let report: String = report
        .lines()
        .map(|line| if line.starts_with(figures::CHECKPOINT_ROW) { row.trim_end() } else { line })
        .flat_map(|line| [line, "\n"])
        .collect();
    std::fs::write(out, report).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("wrote the SET-under-checkpoints section of {}", out.display());
    Ok(())
}

fn splice(path: &Path, heading: &str, section: &str) -> anyhow::Result<()> {
    splice_sections(path, heading, |h| h == heading, section)
}

/// The section of `report` under `heading`, up to the next `## ` heading.
fn section(report: &str, heading: &str) -> Option<String> {
    let from = report.lines().position(|l| l == heading)?;
    let lines: Vec<&str> = report.lines().skip(from).collect();
    let to = lines.iter().skip(1).position(|l| l.starts_with("## ")).map_or(lines.len(), |i| i + 1);
    Some(lines[..to].join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_only_the_sections_it_is_given() {
        let dir = std::env::temp_dir().join(format!("tasuki-bench-splice-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("RESULTS.md");
        std::fs::write(&path, "# t\n\n## A\n\na\n\n## Memory\n\nold\n\n## B\n\nb\n").unwrap();
        splice(&path, memory::HEADING, "## Memory\n\nnew\n\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# t\n\n## A\n\na\n\n## Memory\n\nnew\n\n## B\n\nb\n"
        );
        // A report without the section gets it at the end.
        std::fs::write(&path, "# t\n\n## A\n\na\n").unwrap();
        splice(&path, memory::HEADING, "## Memory\n\nnew\n").unwrap();
        assert_eq!(section("# t\n\n## A\n\na\n\n## B\n\nb\n", "## A").unwrap(), "## A\n\na\n\n");
        assert_eq!(section("# t\n\n## A\n\na\n\n## B\n\nb\n", "## B").unwrap(), "## B\n\nb\n");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# t\n\n## A\n\na\n\n## Memory\n\nnew\n"
        );
        // The throughput sections, empty and with 1M keys, go together; what follows them stays.
        let old: String = THROUGHPUT_HEADINGS.iter().map(|h| format!("{h}\n\nold\n\n")).collect();
        std::fs::write(&path, format!("# t\n\n## A\n\na\n\n{old}## SET latency\n\nc\n")).unwrap();
        let ours = |h: &str| THROUGHPUT_HEADINGS.contains(&h);
        splice_sections(&path, THROUGHPUT_HEADINGS[0], ours, "## Throughput\n\nnew\n\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "# t\n\n## A\n\na\n\n## Throughput\n\nnew\n\n## SET latency\n\nc\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn redis_benchmark_csv() {
        let text = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\"SET\",\"53333.33\",\"0.548\",\"0.152\",\"0.431\",\"1.159\",\"1.631\",\"6.855\"\n";
        let rows = parse_csv(text).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, "SET");
        assert_eq!(rows[0].1.rps, 53333.33);
        assert_eq!(rows[0].1.p99_ms, 1.631);
    }

    #[test]
    fn formats() {
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(keys_label(1_000_000), "1M");
        assert_eq!(keys_label(100_000), "100k");
        assert_eq!(ratio(1.0, 2.0), "0.50×");
        assert_eq!(ratio(0.25, 115.0), "0.0022×");
        assert_eq!(ratio(2.0, 1.0), "2.00×");
    }
}

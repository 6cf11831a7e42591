//! RESULTS.md from a directory of raw results written by `bench/run`:
//!
//! - `meta.kv`: the command, the machine, the commit, the counts (written by the script);
//! - `tp/SYSTEM-TEST-pP-rN.csv`: `redis-benchmark --csv` output of run N, and `.cpu` beside it
//!   with the server's CPU time before and after;
//! - `upgrades-KEYS.kv`, `restarts-KEYS.kv`: from the `upgrades` and `restarts` subcommands;
//! - `large-SYSTEM.kv`: from `large-request`, one per system.

use crate::raw::Raw;
use crate::stats::{max, median, percentile};
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
}

/// One redis-benchmark run of one test against one system.
#[derive(Debug, Clone)]
struct Run {
    /// Which repetition (the N of `rN`): runs of the two systems with the same N ran back to back.
    run: u32,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Server CPU time per request, µs.
    cpu_us: Option<f64>,
    /// Of that CPU time, the share spent in the kernel.
    kernel_share: Option<f64>,
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
        for (test, mut run) in parse_csv(&text).with_context(|| format!("{}", path.display()))? {
            run.run = repetition;
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

/// tasuki / redis-server per repetition (the two ran back to back, so a machine that slows
/// down for a while slows both), as "median× (min–max)".
fn paired(tp: &Throughput, test: &str, p: u32, f: fn(&Run) -> Option<f64>) -> String {
    let runs =
        |sys: &str| tp.get(&(test.to_string(), p, sys.to_string())).cloned().unwrap_or_default();
    let (redis, tasuki) = (runs("redis"), runs("tasuki"));
    let ratios: Vec<f64> = tasuki
        .iter()
        .filter_map(|k| {
            let r = redis.iter().find(|r| r.run == k.run)?;
            let (k, r) = (f(k)?, f(r)?);
            (r > 0.0 && k.is_finite()).then(|| k / r)
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

fn ratio(tasuki: f64, redis: f64) -> String {
    if tasuki.is_finite() && redis.is_finite() && redis > 0.0 {
        format!("{:.2}×", tasuki / redis)
    } else {
        "–".into()
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
    let meta = Raw::read(&args.raw.join("meta.kv"))?;
    let m = |k: &str| meta.get(k).unwrap_or("?").to_string();
    let n_for = |p: u32| meta.opt_num(&format!("requests_p{p}")).unwrap_or(f64::NAN);
    let tp = read_throughput(&args.raw.join("tp"), &n_for)?;
    let upgrades = read_series(&args.raw, "upgrades-")?;
    let restarts = read_series(&args.raw, "restarts-")?;
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
        "| tasuki | `tasuki run kv_v2.wasm` (kv {}), loopback, release build |",
        m("kv_version")
    )?;
    writeln!(md, "| load generator | {} on the same machine |", m("benchmark_version"))?;
    writeln!(
        md,
        "| repetitions | every throughput, latency and CPU figure is the median of {} run(s), redis-server and tasuki alternating |",
        m("runs")
    )?;
    writeln!(md)?;

    write_throughput(&mut md, &tp, "", &m("connections"), &n_for)?;
    let big = read_throughput(&args.raw.join("tp-1m"), &n_for)?;
    if !big.is_empty() {
        write_throughput(&mut md, &big, " with 1M keys in the store", &m("connections"), &n_for)?;
    }

    if !upgrades.is_empty() {
        write_upgrades(&mut md, &upgrades, &restarts)?;
    }
    write_large_request(&mut md, &args.raw)?;
    std::fs::write(&args.out, md).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
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

fn write_upgrades(
    md: &mut String,
    upgrades: &BTreeMap<u64, Raw>,
    restarts: &BTreeMap<u64, Raw>,
) -> anyhow::Result<()> {
    let any = upgrades.values().next().expect("not empty");
    let clients = any.get("clients").unwrap_or("?");
    writeln!(md, "## Upgrade pause under load\n")?;
    writeln!(
        md,
        "`tasuki upgrade kv_v2.wasm` (v2 → v2) over the control socket, again and again, on a host holding KEYS keys (`key:NNNNNNNNNNNN`, {}-byte values), while {clients} clients INCR their own counters one request at a time. Pause = time no event was dispatched (export + import + commit), as the host's UpgradeReport measures it; percentiles are over every upgrade of the series. The compile happens once (the host caches compiled components), so the prepare column is instantiate + `init` + `describe`, off the pause.\n",
        any.get("value_size").unwrap_or("?")
    )?;
    writeln!(
        md,
        "| keys | state moved | upgrades | pause p50 | pause p99 | pause max | prepare p50 (outside the pause) | slowest client reply |"
    )?;
    writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for (keys, raw) in upgrades {
        let pause = raw.list("pause_us")?;
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            keys_label(*keys),
            bytes(median(&raw.list("state_bytes")?)),
            pause.len(),
            ms(percentile(&pause, 50.0)),
            ms(percentile(&pause, 99.0)),
            ms(max(&pause)),
            ms(median(&raw.list("prepare_us")?)),
            ms(raw.num("client_max_us")?)
        )?;
    }
    writeln!(md)?;

    writeln!(md, "### Where the pause goes\n")?;
    writeln!(
        md,
        "Medians. Export is `export-state` on the old instance: the guest encodes its state (postcard) and the host lifts the snapshot out of the guest's memory — the transfer out is inside this figure. Import is `import-state` on the new instance: the host lowers the snapshot into the new guest's memory (the transfer in) and the guest decodes it and rebuilds its indexes. The host does not time the two copies apart from the guest's work yet. Transform is the host's own figure; a v2 → v2 upgrade runs no transformer, so it is (close to) 0. The rest of the pause is the commit (switching instances, flushing queued output).\n"
    )?;
    writeln!(
        md,
        "| keys | state moved | export | transfer | transform | import | commit | pause |"
    )?;
    writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for (keys, raw) in upgrades {
        let (e, i, p) = (
            median(&raw.list("export_us")?),
            median(&raw.list("import_us")?),
            median(&raw.list("pause_us")?),
        );
        let t = raw.list("transform_us").map_or(0.0, |t| median(&t));
        writeln!(
            md,
            "| {} | {} | {} | in export and import | {} (no transformer) | {} | {} | {} |",
            keys_label(*keys),
            bytes(median(&raw.list("state_bytes")?)),
            ms(e),
            ms(t),
            ms(i),
            ms((p - e - t - i).max(0.0)),
            ms(p)
        )?;
    }
    writeln!(md)?;

    if !restarts.is_empty() {
        writeln!(md, "### Side by side: the same change on redis-server\n")?;
        writeln!(
            md,
            "redis-server cannot replace its code while running; its users restart it: `SHUTDOWN SAVE`, start the new binary, wait until it has loaded the RDB and answers PING. Measured here under the same INCR load, with clients that reconnect. Downtime is from SHUTDOWN to the first PONG; every connection is closed by it.\n"
        )?;
        writeln!(
            md,
            "| keys | tasuki pause p50 | redis-server downtime p50 | ratio | tasuki pause max | redis-server downtime max | ratio | state moved tasuki / RDB written redis | connections closed tasuki / redis |"
        )?;
        writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for (keys, rst) in restarts {
            let Some(upg) = upgrades.get(keys) else { continue };
            let pause = upg.list("pause_us")?;
            let down = rst.list("downtime_us")?;
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} / {} | {} / {} |",
                keys_label(*keys),
                ms(median(&pause)),
                ms(median(&down)),
                ratio(median(&pause), median(&down)),
                ms(max(&pause)),
                ms(max(&down)),
                ratio(max(&pause), max(&down)),
                bytes(median(&upg.list("state_bytes")?)),
                bytes(rst.num("rdb_bytes")?),
                upg.num("conn_errors")?,
                rst.num("reconnects")?
            )?;
        }
        writeln!(md)?;
    }

    writeln!(md, "## Failed or lost requests\n")?;
    writeln!(
        md,
        "Each client owns one counter and checks that every INCR reply is the previous one plus one; at the end each counter is read back and compared, client by client, with the INCRs that client saw acknowledged. Lost: acknowledged but missing from the counter. Unacknowledged but applied: the counter is ahead (the server applied an INCR whose reply never arrived, because the connection was cut). Failed requests: error replies plus requests cut off by a broken connection. All must be 0 for tasuki; for redis-server's restarts they count what its clients go through.\n"
    )?;
    writeln!(
        md,
        "| keys | system | across | INCRs acknowledged | lost | unacknowledged but applied | failed: error replies | failed: connection errors | out-of-sequence replies |"
    )?;
    writeln!(md, "|---:|---|---|---:|---:|---:|---:|---:|---:|")?;
    for (keys, raw) in upgrades {
        write_loss_row(md, *keys, "tasuki", &format!("{} upgrades", raw.num("upgrades")?), raw)?;
        if let Some(rst) = restarts.get(keys) {
            write_loss_row(
                md,
                *keys,
                "redis-server",
                &format!("{} restarts", rst.num("restarts")?),
                rst,
            )?;
        }
    }
    writeln!(md)?;

    writeln!(md, "## Resident memory\n")?;
    writeln!(
        md,
        "VmRSS of the server process (/proc/PID/status). Steady: after loading the keys, before any upgrade. Peak during an upgrade: the highest VmHWM over the series, reset before each upgrade (two instances live at once while the new one is prepared and the state crosses). redis-server: its RSS with the same keys.\n"
    )?;
    let mut soak_columns: Vec<usize> = Vec::new();
    for raw in upgrades.values() {
        for key in raw.keys() {
            let n = key.strip_prefix("rss_after_").and_then(|k| k.strip_suffix("_kib"));
            if let Some(n) = n.and_then(|n| n.parse().ok())
                && !soak_columns.contains(&n)
            {
                soak_columns.push(n);
            }
        }
    }
    soak_columns.sort_unstable();
    let mut header = String::from(
        "| keys | redis-server | tasuki steady | tasuki / redis | tasuki peak during an upgrade |",
    );
    let mut rule = String::from("|---:|---:|---:|---:|---:|");
    for n in &soak_columns {
        write!(header, " after {n} upgrades |")?;
        rule.push_str("---:|");
    }
    header.push_str(" last / after 10 |");
    rule.push_str("---:|");
    writeln!(md, "{header}\n{rule}")?;
    for (keys, raw) in upgrades {
        let redis =
            restarts.get(keys).and_then(|r| r.opt_num("rss_steady_kib")).unwrap_or(f64::NAN);
        let steady = raw.num("rss_steady_kib")?;
        let mut row = format!(
            "| {} | {} | {} | {} | {} |",
            keys_label(*keys),
            mib(redis),
            mib(steady),
            ratio(steady, redis),
            mib(max(&raw.list("hwm_kib")?))
        );
        let mut last = f64::NAN;
        for n in &soak_columns {
            let v = raw.opt_num(&format!("rss_after_{n}_kib")).unwrap_or(f64::NAN);
            if v.is_finite() {
                last = v;
            }
            write!(row, " {} |", mib(v))?;
        }
        let ten = raw.opt_num("rss_after_10_kib").unwrap_or(f64::NAN);
        write!(row, " {} |", ratio(last, ten))?;
        writeln!(md, "{row}")?;
    }
    writeln!(md)?;
    Ok(())
}

fn write_loss_row(
    md: &mut String,
    keys: u64,
    system: &str,
    across: &str,
    raw: &Raw,
) -> anyhow::Result<()> {
    writeln!(
        md,
        "| {} | {system} | {across} | {} | {} | {} | {} | {} | {} |",
        keys_label(keys),
        thousands(raw.num("incr_acked")?),
        raw.num("incr_lost")?,
        raw.num("incr_unacked_applied")?,
        raw.num("error_replies")?,
        raw.num("conn_errors")?,
        raw.num("sequence_breaks")?
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}

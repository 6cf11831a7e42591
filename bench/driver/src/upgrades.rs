//! Upgrades under load: a `tasuki run` host holding KEYS keys is upgraded COUNT times over its
//! control socket while clients INCR their counters; every upgrade's report (its pause, and its
//! pre-copy if the state crossed ahead of the pause), the request-to-commit time, the process's
//! memory, and what the clients saw are written to a raw file.
//!
//! The driver starts the host itself, so that a series whose upgrade can be made only once (kv
//! v1 → v3 through transformers: the result no longer reads as v1) runs one upgrade per fresh
//! host (`--fresh-host`), each loaded with the same keys.

use crate::clients::{self, ClientStats, Load};
use crate::load::{self, LoadArgs};
use crate::procfs;
use crate::raw::Raw;
use anyhow::{Context, bail};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tasuki::control::Response;
use tasuki::upgrade::{UpgradeOptions, UpgradeReport};

#[derive(Debug, clap::Args)]
pub struct UpgradesArgs {
    /// The series' name in the raw results (`upgrades-SERIES-KEYS.kv`).
    #[arg(long)]
    series: String,
    /// What the series upgrades, in words, for the report.
    #[arg(long)]
    label: String,
    /// The `tasuki` binary the host runs.
    #[arg(long)]
    tasuki: PathBuf,
    /// The app the host starts with.
    #[arg(long)]
    app: PathBuf,
    /// One more argument for `tasuki run` (`--host-arg=--precopy-chunk --host-arg=0`). Repeat.
    #[arg(long = "host-arg", allow_hyphen_values = true)]
    host_args: Vec<String>,
    /// Where the host writes its log (appended).
    #[arg(long)]
    log: PathBuf,
    /// A directory for the hosts' control sockets.
    #[arg(long)]
    dir: PathBuf,
    /// The component to upgrade to, every time.
    #[arg(long)]
    wasm: PathBuf,
    /// A transformer the state goes through on the way, in order. Repeat for a chain.
    #[arg(long = "transform")]
    transforms: Vec<PathBuf>,
    /// A fresh host, loaded with the keys, for every upgrade.
    #[arg(long)]
    fresh_host: bool,
    /// `tasuki upgrade --no-catch-up`: a whole-state transfer imports inside the pause.
    #[arg(long)]
    no_catch_up: bool,
    /// Keys loaded before the first upgrade.
    #[arg(long)]
    keys: u64,
    #[arg(long, default_value_t = 16)]
    value_size: usize,
    /// Upgrades in all.
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Clients INCRing meanwhile.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Pause between one upgrade's answer and the next request, so the load runs in between.
    #[arg(long, default_value_t = 10)]
    gap_ms: u64,
    /// After which upgrades to record the resident memory (`rss_after_N_kib`).
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    rss_at: Vec<usize>,
    /// Where to write the raw results.
    #[arg(long)]
    out: PathBuf,
}

/// A `tasuki run` started by the driver, loaded with the keys and under the INCR load.
struct Host {
    child: Child,
    addr: String,
    load: Option<Load>,
}

impl Host {
    fn start(args: &UpgradesArgs, control: &PathBuf) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&args.log)
            .with_context(|| format!("opening {}", args.log.display()))?;
        let _ = std::fs::remove_file(control);
        let child = Command::new(&args.tasuki)
            .arg("run")
            .arg(&args.app)
            .args(["--listen", &addr])
            .arg("--control")
            .arg(control)
            .args(&args.host_args)
            .env("TASUKI_LOG", std::env::var("TASUKI_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", args.tasuki.display()))?;
        let mut host = Self { child, addr, load: None };
        crate::wait_ready(&host.addr, Duration::from_secs(30))
            .with_context(|| format!("the host did not start; see {}", args.log.display()))?;
        let loaded = load::run(&LoadArgs {
            addr: host.addr.clone(),
            keys: args.keys,
            value_size: args.value_size,
        })?;
        eprintln!("  {loaded}");
        std::thread::sleep(Duration::from_millis(200));
        host.load = Some(Load::start(&host.addr, args.clients, false)?);
        std::thread::sleep(Duration::from_millis(300));
        Ok(host)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the load and returns what the clients saw and the counters' final values; then
    /// stops the host (SIGTERM, as an operator would).
    fn stop(mut self) -> anyhow::Result<(Vec<ClientStats>, Vec<i64>)> {
        let stats = self.load.take().map(Load::stop).transpose()?.unwrap_or_default();
        let finals = clients::final_values(&self.addr, &stats)?;
        self.terminate();
        Ok((stats, finals))
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
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

/// Each upgrade's figures, one list per raw field.
#[derive(Default)]
struct Series {
    pause: Vec<f64>,
    export: Vec<f64>,
    import: Vec<f64>,
    transform: Vec<f64>,
    prepare: Vec<f64>,
    compile: Vec<f64>,
    request: Vec<f64>,
    state_bytes: Vec<u64>,
    precopy_steps: Vec<u32>,
    precopy_bytes: Vec<u64>,
    precopy: Vec<f64>,
    longest_step: Vec<f64>,
    owed_at_pause: Vec<u64>,
    paused_bytes: Vec<u64>,
    converged: Vec<u8>,
    /// A catch-up's import off the loop, the events it ran again, its longest replay step, and
    /// whether it was abandoned (0 and 0 without one).
    catch_up_import: Vec<f64>,
    catch_up_events: Vec<u64>,
    catch_up_longest_step: Vec<f64>,
    catch_up_abandoned: Vec<u8>,
    rss_before: Vec<u64>,
    hwm: Vec<u64>,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

impl Series {
    fn record(&mut self, report: &UpgradeReport, took: Duration) {
        self.pause.push(us(report.pause));
        self.export.push(us(report.export));
        self.import.push(us(report.import));
        self.transform.push(us(report.transform));
        self.prepare.push(us(report.prepare));
        self.compile.push(us(report.compile));
        self.request.push(us(took));
        self.state_bytes.push(report.state_bytes);
        // A full transfer moves everything in the pause: 0 steps, all bytes paused.
        let (steps, bytes, took, owed, paused, converged) = match &report.precopy {
            Some(p) => (p.steps, p.bytes, us(p.took), p.owed_at_pause, p.paused_bytes, p.converged),
            None => (0, 0, 0.0, 0, report.state_bytes, false),
        };
        self.precopy_steps.push(steps);
        self.precopy_bytes.push(bytes);
        self.precopy.push(took);
        self.longest_step.push(report.precopy.as_ref().map_or(0.0, |p| us(p.longest_step)));
        self.owed_at_pause.push(owed);
        self.paused_bytes.push(paused);
        self.converged.push(u8::from(converged));
        let catch_up = report.catch_up.as_ref();
        self.catch_up_import.push(catch_up.map_or(0.0, |c| us(c.import)));
        self.catch_up_events.push(catch_up.map_or(0, |c| c.events));
        self.catch_up_longest_step.push(catch_up.map_or(0.0, |c| us(c.longest_step)));
        self.catch_up_abandoned.push(u8::from(catch_up.is_some_and(|c| c.abandoned.is_some())));
    }

    fn write(&self, raw: &mut Raw) {
        raw.set_list("pause_us", &rounded(&self.pause));
        raw.set_list("export_us", &rounded(&self.export));
        raw.set_list("import_us", &rounded(&self.import));
        raw.set_list("transform_us", &rounded(&self.transform));
        raw.set_list("prepare_us", &rounded(&self.prepare));
        raw.set_list("compile_us", &rounded(&self.compile));
        raw.set_list("request_us", &rounded(&self.request));
        raw.set_list("state_bytes", &self.state_bytes);
        raw.set_list("precopy_steps", &self.precopy_steps);
        raw.set_list("precopy_bytes", &self.precopy_bytes);
        raw.set_list("precopy_us", &rounded(&self.precopy));
        raw.set_list("longest_step_us", &rounded(&self.longest_step));
        raw.set_list("owed_at_pause_bytes", &self.owed_at_pause);
        raw.set_list("paused_bytes", &self.paused_bytes);
        raw.set_list("converged", &self.converged);
        raw.set_list("catch_up_import_us", &rounded(&self.catch_up_import));
        raw.set_list("catch_up_events", &self.catch_up_events);
        raw.set_list("catch_up_longest_step_us", &rounded(&self.catch_up_longest_step));
        raw.set_list("catch_up_abandoned", &self.catch_up_abandoned);
        raw.set_list("rss_before_kib", &self.rss_before);
        raw.set_list("hwm_kib", &self.hwm);
    }
}

pub fn run(args: &UpgradesArgs) -> anyhow::Result<()> {
    let canonical = |p: &PathBuf| {
        std::fs::canonicalize(p).with_context(|| format!("{} not found", p.display()))
    };
    let wasm = canonical(&args.wasm)?;
    let options = UpgradeOptions {
        transforms: args.transforms.iter().map(canonical).collect::<Result<_, _>>()?,
        no_catch_up: args.no_catch_up,
        ..UpgradeOptions::default()
    };
    std::fs::create_dir_all(&args.dir)?;
    let control = args.dir.join(format!("{}-{}.sock", args.series, args.keys));

    let mut raw = Raw::default();
    raw.set("series", &args.series);
    raw.set("label", &args.label);
    raw.set("keys", args.keys);
    raw.set("value_size", args.value_size);
    raw.set("fresh_host", u8::from(args.fresh_host));
    raw.set("host_args", args.host_args.join(" "));
    raw.set(
        "transformers",
        args.transforms
            .iter()
            .filter_map(|t| t.file_name()?.to_str())
            .collect::<Vec<_>>()
            .join(" "),
    );

    let mut series = Series::default();
    let mut failed = Vec::new();
    let mut stats = Vec::new();
    let mut finals = Vec::new();
    let mut host: Option<Host> = None;
    let mut steady = Vec::new();
    let started = Instant::now();
    for i in 1..=args.count {
        let h = match host.take() {
            Some(h) => h,
            None => {
                let h = Host::start(args, &control)?;
                steady.push(procfs::rss_kib(h.pid())?);
                h
            }
        };
        let pid = h.pid();
        series.rss_before.push(procfs::rss_kib(pid)?);
        procfs::reset_hwm(pid)?;
        let sent = Instant::now();
        let response = tasuki::host::request_upgrade(&control, &wasm, options.clone());
        let took = sent.elapsed();
        match response {
            Ok(Response::Upgraded(report)) => {
                series.record(&report, took);
                if i == 1 {
                    for s in &report.sections {
                        raw.set(&format!("section_{}_bytes", s.name), s.bytes);
                    }
                    raw.set("from", &report.from);
                    raw.set("to", &report.to);
                    eprintln!("{}", indent(&report.to_string()));
                }
            }
            Ok(other) => failed.push(format!("{other:?}")),
            Err(e) => failed.push(e.to_string()),
        }
        series.hwm.push(procfs::hwm_kib(pid)?);
        if args.rss_at.contains(&i) && !args.fresh_host {
            raw.set(&format!("rss_after_{i}_kib"), procfs::rss_kib(pid)?);
        }
        if i % 100 == 0 || i == args.count || args.fresh_host {
            eprintln!("  {i}/{} upgrades, {:.1} s", args.count, started.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(args.gap_ms));
        if args.fresh_host || i == args.count {
            std::thread::sleep(Duration::from_millis(200));
            raw.set("rss_end_kib", procfs::rss_kib(pid)?);
            let (s, f) = h.stop()?;
            stats.extend(s);
            finals.extend(f);
        } else {
            host = Some(h);
        }
    }
    raw.set("upgrades_s", format!("{:.3}", started.elapsed().as_secs_f64()));
    // Steady: after loading the keys, before any upgrade (the median over fresh hosts).
    steady.sort_unstable();
    raw.set("rss_steady_kib", steady.get(steady.len() / 2).copied().unwrap_or(0));
    clients::summarize(&mut raw, &stats, &finals);

    raw.set("upgrades", args.count);
    raw.set("upgrades_failed", failed.len());
    if let Some(first) = failed.first() {
        raw.set("first_failure", first.replace('\n', " "));
    }
    series.write(&mut raw);
    crate::write_raw(&args.out, &raw)?;
    if !failed.is_empty() {
        bail!("{} of {} upgrades failed; first: {}", failed.len(), args.count, failed[0]);
    }
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n")
}

fn rounded(v: &[f64]) -> Vec<String> {
    v.iter().map(|x| format!("{x:.1}")).collect()
}

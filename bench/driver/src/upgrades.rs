//! Upgrades under load: a `tasuki run` host holding KEYS keys is upgraded COUNT times in a row
//! over its control socket while clients INCR their counters; every upgrade's report, the
//! process's memory, and what the clients saw are written to a raw file.

use crate::clients::{self, Load};
use crate::load::{self, LoadArgs};
use crate::procfs;
use crate::raw::Raw;
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tasuki::control::Response;

#[derive(Debug, clap::Args)]
pub struct UpgradesArgs {
    /// The host's listener, `host:port`.
    #[arg(long)]
    addr: String,
    /// The host's control socket.
    #[arg(long)]
    control: PathBuf,
    /// The host's process id (for its memory).
    #[arg(long)]
    pid: u32,
    /// The component to upgrade to, every time.
    #[arg(long)]
    wasm: PathBuf,
    /// Keys loaded before the first upgrade.
    #[arg(long)]
    keys: u64,
    #[arg(long, default_value_t = 16)]
    value_size: usize,
    /// Upgrades in a row.
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

pub fn run(args: &UpgradesArgs) -> anyhow::Result<()> {
    let wasm = std::fs::canonicalize(&args.wasm)
        .with_context(|| format!("{} not found", args.wasm.display()))?;
    let loaded = load::run(&LoadArgs {
        addr: args.addr.clone(),
        keys: args.keys,
        value_size: args.value_size,
    })?;
    eprintln!("  {loaded}");
    std::thread::sleep(Duration::from_millis(200));
    let mut raw = Raw::default();
    raw.set("keys", args.keys);
    raw.set("value_size", args.value_size);
    raw.set("rss_steady_kib", procfs::rss_kib(args.pid)?);

    let load = Load::start(&args.addr, args.clients, false)?;
    std::thread::sleep(Duration::from_millis(300));
    raw.set("rss_loaded_kib", procfs::rss_kib(args.pid)?);

    let mut pause = Vec::new();
    let mut export = Vec::new();
    let mut import = Vec::new();
    let mut transform = Vec::new();
    let mut prepare = Vec::new();
    let mut request = Vec::new();
    let mut hwm = Vec::new();
    let mut state_bytes = Vec::new();
    let mut failed = Vec::new();
    let started = Instant::now();
    for i in 1..=args.count {
        procfs::reset_hwm(args.pid)?;
        let sent = Instant::now();
        // Default options: no transformer, state from the running version's export.
        let response = tasuki::host::request_upgrade(&args.control, &wasm, Default::default());
        let took = sent.elapsed();
        match response {
            Ok(Response::Upgraded(report)) => {
                let us = |d: Duration| d.as_secs_f64() * 1e6;
                pause.push(us(report.pause));
                export.push(us(report.export));
                import.push(us(report.import));
                transform.push(us(report.transform));
                prepare.push(us(report.prepare));
                request.push(us(took));
                state_bytes.push(report.state_bytes);
                if i == 1 {
                    for s in &report.sections {
                        raw.set(&format!("section_{}_bytes", s.name), s.bytes);
                    }
                    raw.set("from", &report.from);
                    raw.set("to", &report.to);
                }
            }
            Ok(other) => failed.push(format!("{other:?}")),
            Err(e) => failed.push(e.to_string()),
        }
        hwm.push(procfs::hwm_kib(args.pid)?);
        if args.rss_at.contains(&i) {
            raw.set(&format!("rss_after_{i}_kib"), procfs::rss_kib(args.pid)?);
        }
        if i % 100 == 0 || i == args.count {
            eprintln!("  {i}/{} upgrades, {:.1} s", args.count, started.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(args.gap_ms));
    }
    raw.set("upgrades_s", format!("{:.3}", started.elapsed().as_secs_f64()));
    std::thread::sleep(Duration::from_millis(200));
    let stats = load.stop()?;
    let finals = clients::final_values(&args.addr, &stats)?;
    clients::summarize(&mut raw, &stats, &finals);

    raw.set("upgrades", args.count);
    raw.set("upgrades_failed", failed.len());
    if let Some(first) = failed.first() {
        raw.set("first_failure", first.replace('\n', " "));
    }
    raw.set_list("pause_us", &rounded(&pause));
    raw.set_list("export_us", &rounded(&export));
    raw.set_list("import_us", &rounded(&import));
    raw.set_list("transform_us", &rounded(&transform));
    raw.set_list("prepare_us", &rounded(&prepare));
    raw.set_list("request_us", &rounded(&request));
    raw.set_list("hwm_kib", &hwm);
    raw.set_list("state_bytes", &state_bytes);
    raw.set("rss_end_kib", procfs::rss_kib(args.pid)?);
    crate::write_raw(&args.out, &raw)?;
    eprint!("{raw}");
    if !failed.is_empty() {
        bail!("{} of {} upgrades failed; first: {}", failed.len(), args.count, failed[0]);
    }
    Ok(())
}

fn rounded(v: &[f64]) -> Vec<String> {
    v.iter().map(|x| format!("{x:.1}")).collect()
}

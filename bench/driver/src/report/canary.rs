//! What a canary upgrade costs the clients while it runs (`tasuki upgrade --canary`): one host,
//! redis-benchmark without a canary and then during one, run by run.
//!
//! During a canary every client event runs twice (in the running version, then in the
//! candidate) and the candidate's output is compared with the running version's before the
//! next event: the throughput a client sees is what is left after both.

use super::{Throughput, median, paired_systems, read_throughput, thousands};
use crate::raw::Raw;
use std::fmt::Write as _;
use std::path::Path;

/// The section's heading, to splice it alone into a report (`bench/run --canary-only`).
pub const HEADING: &str = "## Canary cost";

/// Writes the section from `raw/canary/`: `base-TEST-pP-rN.csv` and `canary-TEST-pP-rN.csv`
/// (redis-benchmark's CSV), and `canary.kv` (where they came from).
pub fn write(md: &mut String, raw: &Path) -> anyhow::Result<()> {
    let dir = raw.join("canary");
    let source = Raw::read(&dir.join("canary.kv")).unwrap_or_default();
    let s = |k: &str| source.get(k).unwrap_or("?").to_string();
    let n_for = |p: u32| source.opt_num(&format!("requests_p{p}")).unwrap_or(f64::NAN);
    let tp: Throughput = read_throughput(&dir, &n_for)?;
    writeln!(md, "{HEADING}\n")?;
    writeln!(
        md,
        "Measured by `{}` at commit `{}` on {} (load average {} at the start, {} at the end): one `tasuki run {}` host holding {} keys, `redis-benchmark -t set|get -c {} -n N -P P -r {} --csv` (N = {} at pipeline 1, {} at 16), first without a canary, then while `tasuki upgrade {} --canary` (the same release) runs, {} run(s) of each. A canary runs every client event in both versions and compares their output before the next event, so the candidate's time is the clients' time. Requests per second; the ratio is taken run by run.\n",
        s("command"),
        s("commit"),
        s("date"),
        s("loadavg_start"),
        s("loadavg_end"),
        s("app"),
        thousands(source.opt_num("keys").unwrap_or(f64::NAN)),
        s("connections"),
        s("keys"),
        thousands(n_for(1)),
        thousands(n_for(16)),
        s("app"),
        s("runs")
    )?;
    writeln!(md, "| test | pipeline | without a canary | during a canary | during / without |")?;
    writeln!(md, "|---|---:|---:|---:|---:|")?;
    let mut keys: Vec<(String, u32)> = tp.keys().map(|(t, p, _)| (t.clone(), *p)).collect();
    keys.sort_by_key(|(t, p)| (*p, if t == "SET" { 0 } else { 1 }));
    keys.dedup();
    for (test, p) in keys {
        let med = |sys: &str| {
            tp.get(&(test.clone(), p, sys.to_string()))
                .map_or(f64::NAN, |runs| median(&runs.iter().map(|r| r.rps).collect::<Vec<_>>()))
        };
        writeln!(
            md,
            "| {test} | {p} | {} | {} | {} |",
            thousands(med("base")),
            thousands(med("canary")),
            paired_systems(&tp, &test, p, ("base", "canary"), |r| Some(r.rps))
        )?;
    }
    writeln!(md)?;
    Ok(())
}

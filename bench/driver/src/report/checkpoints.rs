//! SET latency while the host's recovery checkpoints run, beside redis-server under the same
//! load (which takes none: it runs with `--save ''`).

use super::{Checkpoints, Run, Throughput, ms, paired, thousands};
use crate::stats::{max, median};
use std::fmt::Write as _;

/// The section's heading: `--checkpoints-only` puts its section in place of the one under it.
pub(super) const HEADING: &str = "## SET latency while checkpoints run";

/// What the runs measured, for the table here and the figures at the top.
#[derive(Debug)]
pub(super) struct Summary {
    pub(super) keys: f64,
    /// The slowest SET of any run, ms.
    pub(super) tasuki_max_ms: f64,
    pub(super) redis_max_ms: f64,
    pub(super) checkpoints: Checkpoints,
}

pub(super) fn summarize(tp: &Throughput, keys: f64) -> Option<Summary> {
    let worst = |sys: &str| max(&set_runs(tp, sys).map(|r| r.max_ms).collect::<Vec<_>>());
    let mut checkpoints = Checkpoints::default();
    for c in set_runs(tp, "tasuki").filter_map(|r| r.checkpoints.as_ref()) {
        checkpoints.merge(c);
    }
    let tasuki_max_ms = worst("tasuki");
    tasuki_max_ms.is_finite().then(|| Summary {
        keys,
        tasuki_max_ms,
        redis_max_ms: worst("redis"),
        checkpoints,
    })
}

/// Every SET run against `sys`.
fn set_runs<'a>(tp: &'a Throughput, sys: &'a str) -> impl Iterator<Item = &'a Run> {
    tp.iter().filter(move |((t, _, s), _)| t == "SET" && s == sys).flat_map(|(_, r)| r.iter())
}

pub(super) fn write(
    md: &mut String,
    tp: &Throughput,
    summary: &Summary,
    requests: f64,
    connections: &str,
) -> anyhow::Result<()> {
    let Some(((_, pipeline, _), _)) = tp.iter().next() else { return Ok(()) };
    let keys = summary.keys;
    writeln!(md, "{HEADING}\n")?;
    writeln!(
        md,
        "`redis-benchmark -t set -c {connections} -n {} -P {pipeline} -r {} --csv` against both servers, each holding {} keys first. tasuki journals every request for recovery and checkpoints its state whenever the journal has taken in as many bytes as the state holds (`--journal` 256 MiB, the default): a checkpoint is built a chunk at a time between events, as a pre-copy is, so a SET should wait at most about one chunk's time. The checkpoints are counted from the host's log (`TASUKI_LOG=tasuki::dispatch=debug`: `checkpoint from chunks`, or `checkpoint` for one exported whole at a single boundary). redis-server runs with `--save ''`: it takes no snapshot, so its column is the floor. Max is the slowest SET of each run, as redis-benchmark reports it.\n",
        thousands(requests),
        thousands(keys),
        thousands(keys)
    )?;
    writeln!(
        md,
        "| system | SET/s | p50 | p99 | max (median of the runs) | max (slowest run) | checkpoints during the runs |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---|")?;
    for (sys, name) in [("redis", "redis-server"), ("tasuki", "tasuki")] {
        let runs: Vec<&Run> = set_runs(tp, sys).collect();
        let med = |f: fn(&Run) -> f64| median(&runs.iter().map(|r| f(r)).collect::<Vec<_>>());
        let worst = max(&runs.iter().map(|r| r.max_ms).collect::<Vec<_>>());
        writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            thousands(med(|r| r.rps)),
            ms(med(|r| r.p50_ms) * 1e3),
            ms(med(|r| r.p99_ms) * 1e3),
            ms(med(|r| r.max_ms) * 1e3),
            ms(worst * 1e3),
            if sys == "tasuki" { summary.checkpoints.describe() } else { "none".into() }
        )?;
    }
    writeln!(
        md,
        "| tasuki / redis | {} | {} | {} | {} | {} | |",
        paired(tp, "SET", *pipeline, |r| Some(r.rps)),
        paired(tp, "SET", *pipeline, |r| Some(r.p50_ms)),
        paired(tp, "SET", *pipeline, |r| Some(r.p99_ms)),
        paired(tp, "SET", *pipeline, |r| Some(r.max_ms)),
        super::ratio(summary.tasuki_max_ms, summary.redis_max_ms)
    )?;
    writeln!(md)?;
    Ok(())
}

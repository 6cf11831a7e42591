//! SET latency while the host's recovery checkpoints run, beside redis-server under the same
//! load (which takes none: it runs with `--save ''`) and beside a second kv host with recovery
//! off (`--journal 0`: no journal, no checkpoint), so that what the checkpoints add is told
//! apart from what the machine adds to both.

use super::{Checkpoints, Run, Throughput, ms, paired_systems, thousands};
use crate::stats::{max, median};
use std::fmt::Write as _;

/// The section's heading: `--checkpoints-only` puts its section in place of the one under it.
pub(super) const HEADING: &str = "## SET latency while checkpoints run";

/// The slowest SET a run may have and still meet the target at the top of the report, ms.
pub(super) const SLOW_MS: f64 = 10.0;

/// The systems measured, by the name in their files, with the name the report gives them.
const SYSTEMS: [(&str, &str); 3] = [
    ("redis", "redis-server"),
    ("tasuki", "tasuki"),
    ("norecovery", "tasuki, recovery off (`--journal 0`)"),
];

/// The slowest SETs of one system's runs.
#[derive(Debug, Default)]
pub(super) struct Slowest {
    /// The slowest SET of each run, ms.
    pub(super) max_ms: Vec<f64>,
}

impl Slowest {
    /// The median of the runs' slowest SETs, ms (NaN without runs).
    pub(super) fn median_ms(&self) -> f64 {
        median(&self.max_ms)
    }

    /// The slowest SET of any run, ms (NaN without runs).
    pub(super) fn worst_ms(&self) -> f64 {
        max(&self.max_ms)
    }

    /// "k of n" runs whose slowest SET took more than [`SLOW_MS`].
    pub(super) fn over(&self) -> String {
        let over = self.max_ms.iter().filter(|&&m| m > SLOW_MS).count();
        format!("{over} of {}", self.max_ms.len())
    }
}

/// What the runs measured, for the table here and the figures at the top.
#[derive(Debug)]
pub(super) struct Summary {
    pub(super) keys: f64,
    pub(super) tasuki: Slowest,
    pub(super) redis: Slowest,
    /// The kv host with recovery off; empty for runs made before it was measured.
    pub(super) norecovery: Slowest,
    pub(super) checkpoints: Checkpoints,
}

impl Summary {
    /// The slowest SETs of system `sys` (a name in [`SYSTEMS`]).
    fn of(&self, sys: &str) -> &Slowest {
        match sys {
            "redis" => &self.redis,
            "norecovery" => &self.norecovery,
            _ => &self.tasuki,
        }
    }
}

pub(super) fn summarize(tp: &Throughput, keys: f64) -> Option<Summary> {
    let slowest = |sys: &str| Slowest { max_ms: set_runs(tp, sys).map(|r| r.max_ms).collect() };
    let mut checkpoints = Checkpoints::default();
    for c in set_runs(tp, "tasuki").filter_map(|r| r.checkpoints.as_ref()) {
        checkpoints.merge(c);
    }
    let tasuki = slowest("tasuki");
    (!tasuki.max_ms.is_empty()).then(|| Summary {
        keys,
        tasuki,
        redis: slowest("redis"),
        norecovery: slowest("norecovery"),
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
    let control = if summary.norecovery.max_ms.is_empty() {
        String::new()
    } else {
        " The third system is the same kv on a second host with recovery off (`--journal 0`): no journal and no checkpoint. In a full run the tasuki host is the one the throughput sections measured, and the host with recovery off is started for this section and loaded alike; the difference between the two tasuki rows is what recovery (the journal and its checkpoints) costs these SETs.".to_string()
    };
    writeln!(
        md,
        "`redis-benchmark -t set -c {connections} -n {} -P {pipeline} -r {} --csv` against each server, each holding {} keys first, the servers taking turns run by run, in an order that changes from round to round, and the next run starting only once the last server is idle (a checkpoint under way when a run ends finishes first). tasuki journals every request for recovery and checkpoints its state whenever the journal has taken in as many bytes as the state holds (`--journal` 256 MiB, the default): a checkpoint is built a chunk at a time between events, as a pre-copy is, so a SET should wait at most about one chunk's time. The checkpoints are counted from the host's log (`TASUKI_LOG=tasuki::dispatch=debug`: `checkpoint from chunks`, or `checkpoint` for one exported whole at a single boundary). redis-server runs with `--save ''`: it takes no snapshot, so its column is the floor.{control} Max is the slowest SET of a run, as redis-benchmark reports it: one request in {}, which a stall of the machine (2 cores shared with redis-benchmark) sets as easily as the server does; the runs over {SLOW_MS} ms are counted for each system.\n",
        thousands(requests),
        thousands(keys),
        thousands(keys),
        thousands(requests)
    )?;
    writeln!(
        md,
        "| system | SET/s | p50 | p99 | max (median of the runs) | max (slowest run) | runs over {SLOW_MS} ms | checkpoints during the runs |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---|")?;
    for (sys, name) in SYSTEMS {
        let runs: Vec<&Run> = set_runs(tp, sys).collect();
        if runs.is_empty() {
            continue;
        }
        let slowest = summary.of(sys);
        let med = |f: fn(&Run) -> f64| median(&runs.iter().map(|r| f(r)).collect::<Vec<_>>());
        writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} | {} | {} |",
            thousands(med(|r| r.rps)),
            ms(med(|r| r.p50_ms) * 1e3),
            ms(med(|r| r.p99_ms) * 1e3),
            ms(slowest.median_ms() * 1e3),
            ms(slowest.worst_ms() * 1e3),
            slowest.over(),
            match sys {
                "tasuki" => summary.checkpoints.describe(),
                _ => "none".into(),
            }
        )?;
    }
    // `of` / `to`, run by run, and of their slowest runs.
    let ratios = |(to, of): (&str, &str), label: &str| {
        format!(
            "| {label} | {} | {} | {} | {} | {} | | |\n",
            paired_systems(tp, "SET", *pipeline, (to, of), |r| Some(r.rps)),
            paired_systems(tp, "SET", *pipeline, (to, of), |r| Some(r.p50_ms)),
            paired_systems(tp, "SET", *pipeline, (to, of), |r| Some(r.p99_ms)),
            paired_systems(tp, "SET", *pipeline, (to, of), |r| Some(r.max_ms)),
            super::ratio(summary.of(of).worst_ms(), summary.of(to).worst_ms())
        )
    };
    md.push_str(&ratios(("redis", "tasuki"), "tasuki / redis"));
    if !summary.norecovery.max_ms.is_empty() {
        md.push_str(&ratios(("norecovery", "tasuki"), "tasuki / tasuki with recovery off"));
    }
    writeln!(md)?;
    Ok(())
}

//! The headline table: how the pause and the other costs of an upgrade or a checkpoint grow
//! with the state, each beside the target the project set for it and, where this run measured
//! one, what the same thing cost without pre-copy.

use super::checkpoints::{SLOW_MS, Summary};
use super::upgrades::{MAIN, Upgrades};
use super::{bytes, keys_label, mib, ms, ratio};
use crate::raw::Raw;
use crate::stats::{max, median, percentile};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The targets, by store size (keys) where they depend on it.
fn pause_target(keys: u64) -> &'static str {
    match keys {
        100_000 => "≤ 5 ms",
        1_000_000 => "≤ 10 ms",
        k if k > 1_000_000 => "flat: as at 1M",
        _ => "–",
    }
}

fn p99(raw: &Raw, key: &str) -> f64 {
    raw.list(key).map_or(f64::NAN, |v| percentile(&v, 99.0))
}

fn med(raw: &Raw, key: &str) -> f64 {
    raw.list(key).map_or(f64::NAN, |v| median(&v))
}

/// The series' row with the most keys up to 1M (the figures are stated at 1M; a quick run has
/// fewer).
fn at_most_1m(series: Option<&BTreeMap<u64, Raw>>) -> Option<(u64, &Raw)> {
    series?.range(..=1_000_000).next_back().map(|(k, r)| (*k, r))
}

/// How the figures' row of SET latency under checkpoints begins: `--checkpoints-only` finds it
/// by this to put its own in place.
pub(super) const CHECKPOINT_ROW: &str = "| SET max latency while checkpoints run,";

/// The figures' row of SET latency under checkpoints, with `note` after the comparison (where
/// it came from, when not from the run of the rest of the table): the slowest SET of all runs
/// (what the target is stated for) and the median of the runs' slowest, and how many runs
/// passed the target beside the same for the servers that take no checkpoint.
pub(super) fn checkpoint_row(c: &Summary, note: &str) -> anyhow::Result<String> {
    let checkpoints = c.checkpoints.chunked + c.checkpoints.whole;
    let norecovery = if c.norecovery.max_ms.is_empty() {
        String::new()
    } else {
        format!(
            "; kv with recovery off (`--journal 0`, no checkpoint): {} / {}, over {SLOW_MS} ms in {}",
            ms(c.norecovery.worst_ms() * 1e3),
            ms(c.norecovery.median_ms() * 1e3),
            c.norecovery.over()
        )
    };
    let mut row = String::new();
    writeln!(
        row,
        "{CHECKPOINT_ROW} {} keys ({checkpoints} checkpoint{}): slowest run / median of {} runs | {} / {} (over {SLOW_MS} ms in {}) | ≤ {SLOW_MS} ms in the slowest run{} | redis-server: {} / {}, over {SLOW_MS} ms in {}{norecovery}{note} |",
        keys_label(c.keys as u64),
        if checkpoints == 1 { "" } else { "s" },
        c.tasuki.max_ms.len(),
        ms(c.tasuki.worst_ms() * 1e3),
        ms(c.tasuki.median_ms() * 1e3),
        c.tasuki.over(),
        if c.keys as u64 == 1_000_000 { "" } else { " (stated at 1M keys)" },
        ms(c.redis.worst_ms() * 1e3),
        ms(c.redis.median_ms() * 1e3),
        c.redis.over(),
    )?;
    Ok(row)
}

pub(super) fn write(
    md: &mut String,
    upgrades: &Upgrades,
    restarts: &BTreeMap<u64, Raw>,
    checkpoints: Option<&Summary>,
) -> anyhow::Result<()> {
    writeln!(md, "## The pause against the state's size\n")?;
    writeln!(
        md,
        "The figures the pre-copy work set out to reach, all from this run; each is explained in the section named. Under load: 4 clients INCR their own counters throughout. The whole-state rows are apps whose state cannot be pre-copied. Upgraded to another component, a replica of the old version (a second instance rebuilt from the last checkpoint and the journal off the loop) exports it, or with recovery off the old version itself at one boundary (the pause); the new one imports it while the old one serves, then catches up; upgraded to the same component (a compaction, a restart of the same build), nothing is exported: the new instance imports the last checkpoint and replays the journal off the loop, then catches up (see \"Catch-up\" below, which compares the import inside the pause).\n"
    )?;
    writeln!(md, "| figure | measured | target | for comparison, same run |")?;
    writeln!(md, "|---|---:|---|---|")?;

    let main = upgrades.get(MAIN);
    let full = at_most_1m(upgrades.get("full"));
    let old = at_most_1m(upgrades.get("contract-0.1"));
    let replica = at_most_1m(upgrades.get("contract-0.1-replica"));
    let exported = at_most_1m(upgrades.get("contract-0.1-export"));
    for (keys, raw) in main.into_iter().flatten() {
        if *keys < 100_000 {
            continue;
        }
        let mut compare = Vec::new();
        if let Some((k, f)) = full
            && k == *keys
        {
            compare.push(format!(
                "whole state at one boundary (`--precopy-chunk 0`), caught up: {}",
                ms(p99(f, "pause_us"))
            ));
        }
        if let Some(r) = restarts.get(keys) {
            let down = r.list("downtime_us")?;
            compare.push(format!("redis-server restart with its RDB: {} (p50)", ms(median(&down))));
        }
        writeln!(
            md,
            "| upgrade pause p99, kv v2 → v2 under load, {} keys ({}) | {} | {} | {} |",
            keys_label(*keys),
            bytes(med(raw, "state_bytes")),
            ms(p99(raw, "pause_us")),
            pause_target(*keys),
            compare.join("; ")
        )?;
    }
    if let Some((keys, raw)) = at_most_1m(upgrades.get("chain")) {
        writeln!(
            md,
            "| upgrade pause p99, kv v1 → v3 through two transformers, {} keys ({} upgrades, a fresh host each) | {} | {} | |",
            keys_label(keys),
            raw.list("pause_us")?.len(),
            ms(p99(raw, "pause_us")),
            if keys == 1_000_000 { "≤ 20 ms" } else { "–" }
        )?;
    }
    if let Some((keys, raw)) = at_most_1m(main) {
        let request = raw.list("request_us")?;
        writeln!(
            md,
            "| total upgrade time (request → commit), kv v2 → v2, {} keys: p50 / max | {} / {} | {} | of which pre-copy {} (median, {} steps) |",
            keys_label(keys),
            ms(median(&request)),
            ms(max(&request)),
            if keys == 1_000_000 { "≤ 3 s, reported" } else { "reported" },
            ms(med(raw, "precopy_us")),
            med(raw, "precopy_steps")
        )?;
    }
    if let Some(c) = checkpoints {
        md.push_str(&checkpoint_row(c, "")?);
    }
    let whole_rows = [
        (
            replica,
            "kv v2 built before pre-copy (contract 0.1, a std `HashMap`) → another component: a replica rebuilt from the checkpoint and journal exports off the loop, caught up, a fresh host each",
        ),
        (
            exported,
            "the same with recovery off (`--journal 0`, no replica): exported in the pause, caught up, a fresh host each",
        ),
        (
            full,
            "kv v2 with `--precopy-chunk 0` → itself: checkpoint and journal replayed, caught up",
        ),
        (old, "kv v2 built before pre-copy → itself: checkpoint and journal replayed, caught up"),
    ];
    for (row, label) in whole_rows {
        let Some((keys, raw)) = row else { continue };
        // The replica's row beside the export it saves; the others beside `--precopy-chunk 0`.
        let against = match row {
            Some((_, r)) if replica.is_some_and(|(_, x)| std::ptr::eq(r, x)) => {
                exported.map(|(k, e)| (k, e, "exported in the pause"))
            }
            _ => full.map(|(k, f)| (k, f, "`--precopy-chunk 0`")),
        };
        let compare = match against {
            Some((k, other, name)) if k == keys && !std::ptr::eq(raw, other) => {
                format!("{} of {name}", ratio(p99(raw, "pause_us"), p99(other, "pause_us")))
            }
            _ => String::new(),
        };
        writeln!(
            md,
            "| whole-state pause p99, {}, {} keys | {} | {} | {compare} |",
            label,
            keys_label(keys),
            ms(p99(raw, "pause_us")),
            if keys == 1_000_000 { "≤ 200 ms" } else { "–" }
        )?;
    }
    if let Some((keys, raw)) = at_most_1m(main) {
        let steady = raw.num("rss_steady_kib")?;
        let peak = max(&raw.list("hwm_kib")?);
        // The whole-state routes beside it, at the same keys: each holds more than one copy of
        // the state for a while (a replica holds a third).
        let peak_ratio = |series: Option<(u64, &Raw)>, name: &str| {
            let (_, r) = series.filter(|(k, _)| *k == keys)?;
            let peak = max(&r.list("hwm_kib").ok()?);
            Some(format!("{name}: {}", ratio(peak, r.num("rss_steady_kib").ok()?)))
        };
        let compare = [
            peak_ratio(full, "whole state at one boundary, caught up"),
            peak_ratio(replica, "another component through a replica"),
            peak_ratio(exported, "another component exported in the pause"),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("; ");
        writeln!(
            md,
            "| peak RSS during an upgrade / steady RSS, {} keys | {} / {} = {} | ≤ 2.5× | {compare} |",
            keys_label(keys),
            mib(peak),
            mib(steady),
            ratio(peak, steady)
        )?;
    }
    writeln!(md)?;
    Ok(())
}

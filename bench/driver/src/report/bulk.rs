//! A bulk load beside another client (`tasuki-bench bulk-load`): how long a client waits for
//! a PING while another loads a keyspace from empty, redis-server and tasuki side by side.

use super::{ms, thousands};
use crate::raw::Raw;
use crate::stats::{max, median};
use std::fmt::Write as _;
use std::path::Path;

/// The section's heading, to splice it alone into a report (`bench/run --bulk-load-only`).
pub const HEADING: &str = "## A bulk load beside another client";

/// The systems, as their raw files are named (`bulk/SYSTEM-rN.kv`), and as the table names them.
const SYSTEMS: &[(&str, &str)] = &[("redis", "redis-server"), ("tasuki", "tasuki")];

/// Writes the section from `raw/bulk/`: `SYSTEM-rN.kv` per run, and `bulk.kv` (where they
/// came from). Nothing if there are none.
pub fn write(md: &mut String, raw: &Path) -> anyhow::Result<()> {
    let dir = raw.join("bulk");
    let Ok(source) = Raw::read(&dir.join("bulk.kv")) else { return Ok(()) };
    let s = |k: &str| source.get(k).unwrap_or("?").to_string();
    let mut rows = Vec::new();
    for (file, name) in SYSTEMS {
        let runs: Vec<Raw> =
            (1..).map_while(|run| Raw::read(&dir.join(format!("{file}-r{run}.kv"))).ok()).collect();
        if !runs.is_empty() {
            rows.push((*name, runs));
        }
    }
    let Some((_, first)) = rows.first() else { return Ok(()) };
    writeln!(md, "{HEADING}\n")?;
    writeln!(
        md,
        "Measured by `{}` at commit `{}` on {} (load average {} at the start, {} at the end). One client loads {} keys (`key:000000000000` … with 16-byte values) into an emptied store as 1000-key MSETs ({} written at once, replies read as they come, as `redis-cli --pipe` sends a file), while a second client sends PINGs one at a time. tasuki runs `{}`. The median of {} run(s) per system, servers alternating, and the slowest single PING of all runs: what a client of a server that is being restored or bulk-loaded waits. The keyspace's index grows many times during the load.\n",
        s("command"),
        s("commit"),
        s("date"),
        s("loadavg_start"),
        s("loadavg_end"),
        thousands(first[0].num("keys")?),
        super::bytes(first[0].num("request_bytes")?),
        s("app"),
        s("runs")
    )?;
    writeln!(
        md,
        "| system | load time | slowest PING, median of runs | slowest PING of all runs | PING p99.9 | PING p99 | PINGs answered per run |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|")?;
    for (name, runs) in &rows {
        let each = |field: &str| -> anyhow::Result<Vec<f64>> {
            runs.iter().map(|run| run.num(field)).collect()
        };
        let worst = each("ping_max_ms")?;
        writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} | {} |",
            ms(median(&each("load_ms")?) * 1e3),
            ms(median(&worst) * 1e3),
            ms(max(&worst) * 1e3),
            ms(median(&each("ping_p999_ms")?) * 1e3),
            ms(median(&each("ping_p99_ms")?) * 1e3),
            thousands(median(&each("pings")?))
        )?;
    }
    writeln!(md)?;
    Ok(())
}

//! The memory section, from `tasuki-bench memory` (raw results in `memory/` of the raw
//! directory): memory per key beside redis-server, where tasuki's goes, the second readings
//! each figure was checked against, and what a compaction gave back.
//!
//! `bench/run --memory-only` measures only this section; [`super::splice`] then replaces it in
//! an existing report and leaves every other section as its own run wrote it.

use super::{bytes, keys_label, mib, ms, ratio, thousands};
use crate::raw::Raw;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The section's heading; [`super::splice`] finds the section by it.
pub(super) const HEADING: &str = "## Memory";

/// The systems of a row, in the order of the tables: (file name, column name).
const SYSTEMS: &[(&str, &str)] =
    &[("redis", "redis-server"), ("kv5", "kv 5"), ("kv4", "kv 4"), ("kv2", "kv 2")];

/// The raw results: rows by (keys, value size, system), compactions by how they deleted.
pub(super) struct Memory {
    meta: Raw,
    rows: BTreeMap<(u64, u64), BTreeMap<String, Raw>>,
    compactions: Vec<Raw>,
}

pub(super) fn read(raw: &Path) -> anyhow::Result<Option<Memory>> {
    let dir = raw.join("memory");
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(None) };
    let mut rows: BTreeMap<(u64, u64), BTreeMap<String, Raw>> = BTreeMap::new();
    let mut compactions = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(stem) = name.strip_suffix(".kv") else { continue };
        if let Some(rest) = stem.strip_prefix("row-") {
            // row-SYSTEM-KEYS-SIZE
            let parts: Vec<&str> = rest.split('-').collect();
            let [system, keys, size] = parts[..] else { continue };
            let key = (keys.parse()?, size.parse()?);
            rows.entry(key).or_default().insert(system.to_string(), Raw::read(&path)?);
        } else if stem.starts_with("compaction-") {
            compactions.push(Raw::read(&path)?);
        }
    }
    // FLUSHALL first.
    compactions.sort_by_key(|r| r.get("delete") != Some("flushall"));
    let meta = Raw::read(&dir.join("meta.kv")).unwrap_or_default();
    Ok(Some(Memory { meta, rows, compactions }))
}

fn kib(raw: &Raw, key: &str) -> f64 {
    raw.opt_num(key).unwrap_or(f64::NAN)
}

/// Bytes per key above the same process's RSS before the load.
fn per_key(raw: &Raw) -> f64 {
    let keys = raw.opt_num("keys").unwrap_or(0.0);
    if keys == 0.0 {
        return f64::NAN;
    }
    (kib(raw, "rss_kib") - kib(raw, "empty_rss_kib")) * 1024.0 / keys
}

fn per_key_cell(raw: Option<&Raw>) -> String {
    match raw.map(per_key) {
        Some(b) if b.is_finite() => format!("{b:.0} B"),
        _ => "–".into(),
    }
}

fn mib_b(b: f64) -> String {
    mib(b / 1024.0)
}

fn row_label(keys: u64, size: u64) -> String {
    if keys == 0 { "empty".into() } else { format!("{} × {size} B", keys_label(keys)) }
}

pub(super) fn write(md: &mut String, m: &Memory) -> anyhow::Result<()> {
    let meta = |k: &str| m.meta.get(k).unwrap_or("?").to_string();
    writeln!(md, "{HEADING}\n")?;
    writeln!(
        md,
        "Measured by `{}` at commit `{}` on {} (load average {} at the start, {} at the end); memory figures do not depend on a quiet machine the way the timings above do. Each row is a fresh server process (redis-server {} with `--save '' --appendonly no`; `tasuki run kv_v5.wasm`, the latest release, `kv_v4.wasm`, the release before it, whose state kv 5 keeps byte for byte in a compact layout, and `kv_v2.wasm`, the release issue 16 measured; all three with this commit's host and guest SDK, default flags), measured empty and then loaded the same way as every other benchmark here (pipelined MSETs of 1,000 keys, `key:%012d`, the value size given). After loading, the driver waits until the server has settled — its RSS steady within 0.5% and its CPU idle for 2 s, and for tasuki the status unchanged over that time (no checkpoint or pre-copy under way, the guest's memory report read after the load) — and reads VmRSS.\n",
        meta("command"),
        meta("commit"),
        meta("date"),
        meta("loadavg_start"),
        meta("loadavg_end"),
        meta("redis_version")
    )?;

    writeln!(md, "### Memory per key\n")?;
    writeln!(
        md,
        "RSS after loading, and bytes per key: the RSS above the same process's RSS before the load, divided by the keys. The ratios are RSS to RSS.\n"
    )?;
    let mut head = String::from("| keys × value |");
    let mut rule = String::from("|---|");
    for (_, name) in SYSTEMS {
        write!(head, " RSS {name} |")?;
        rule.push_str("---:|");
    }
    for (_, name) in SYSTEMS {
        write!(head, " per key {name} |")?;
        rule.push_str("---:|");
    }
    for (_, name) in &SYSTEMS[1..] {
        write!(head, " {name} / redis |")?;
        rule.push_str("---:|");
    }
    writeln!(md, "{head}\n{rule}")?;
    for ((keys, size), systems) in &m.rows {
        let mut line = format!("| {} |", row_label(*keys, *size));
        for (file, _) in SYSTEMS {
            let rss = systems.get(*file).map_or(f64::NAN, |r| kib(r, "rss_kib"));
            write!(line, " {} |", mib(rss))?;
        }
        for (file, _) in SYSTEMS {
            write!(line, " {} |", per_key_cell(systems.get(*file)))?;
        }
        let redis = systems.get("redis").map_or(f64::NAN, |r| kib(r, "rss_kib"));
        for (file, _) in &SYSTEMS[1..] {
            let rss = systems.get(*file).map_or(f64::NAN, |r| kib(r, "rss_kib"));
            write!(line, " {} |", ratio(rss, redis))?;
        }
        writeln!(md, "{line}")?;
    }
    writeln!(md)?;
    let tuned: Vec<String> = m
        .rows
        .iter()
        .flat_map(|((k, s), systems)| {
            systems.iter().filter_map(move |(sys, r)| {
                let args = r.get("host_args").filter(|a| !a.is_empty())?;
                Some(format!("{sys} at {}: `{args}`", row_label(*k, *s)))
            })
        })
        .collect();
    if !tuned.is_empty() {
        writeln!(
            md,
            "Hosts run with flags beyond the defaults (1M values of 1 KiB need more than the default 1 GiB of linear memory and 512 MiB of state): {}.\n",
            tuned.join("; ")
        )?;
    }

    write_split(md, m)?;
    write_checks(md, m)?;
    write_compactions(md, m)?;
    Ok(())
}

fn write_split(md: &mut String, m: &Memory) -> anyhow::Result<()> {
    writeln!(md, "### Where tasuki's memory goes\n")?;
    writeln!(
        md,
        "Per row, from the host's status and /proc/PID/smaps. *Heap in use* is the guest allocator's count of bytes handed out (requested sizes, without the allocator's headers); *linear memory* what the instance has grown to (it never shrinks); *resident* the pages of it in RAM: the smaps mappings that hold it — the readable mappings (the data image, `memfd:wasm-memory-image`, and anonymous pages) directly before the inaccessible rest of its reservation, whose sizes add up exactly to the linear memory the guest reports. The host uses wasmtime's on-demand allocator (host/src/runtime.rs sets no pooling), so there is no pooling reservation: each linear memory reserves 4 GiB of address space plus guard pages, virtual only, none of it resident until the guest touches it. *Checkpoint* and *journal* are the host's copies of the state for recovery (their bytes, from the status), which it writes to unnamed files in `--checkpoint-dir` (here the default, the system's temporary directory) rather than keep in its memory: *of it in memory* is the part of the checkpoint the host holds (the snapshot of what was not pre-copied), the journal keeps its last MiB and an index of its events in memory; *in files* is the size of the unnamed files the process holds open there, read through /proc/PID/fd (page cache, not its RSS). *Baseline* is the process before the load less its linear memory's resident pages: wasmtime, the compiled component, the runtime. *Rest* is what is left of the RSS less the checkpoint's part in memory: the journal's part in memory, the host's buffers and its allocator's slack. The checkpoint and journal bytes depend on where the load ended in the host's checkpoint schedule (a checkpoint is taken once the journal outgrows the last one), so they differ from run to run; with both in files the RSS no longer does.\n"
    )?;
    writeln!(
        md,
        "| release | keys × value | RSS | heap in use | linear memory | resident of it | checkpoint | of it in memory | journal | in files | baseline | rest |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for (file, name) in &SYSTEMS[1..] {
        for ((keys, size), systems) in &m.rows {
            let Some(r) = systems.get(*file) else { continue };
            let rss = kib(r, "rss_kib") * 1024.0;
            let resident = kib(r, "linear_resident_kib") * 1024.0;
            let baseline = (kib(r, "empty_rss_kib") - kib(r, "empty_linear_resident_kib")) * 1024.0;
            let (ckpt, journal) = (kib(r, "checkpoint_bytes"), kib(r, "journal_bytes"));
            // A host from before the recovery files held all of it.
            let in_memory = r.opt_num("checkpoint_in_memory").unwrap_or(ckpt);
            let files = r.opt_num("recovery_file_bytes").map_or("–".into(), mib_b);
            let rest = rss - resident - in_memory - baseline;
            writeln!(
                md,
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {files} | {} | {} |",
                row_label(*keys, *size),
                mib_b(rss),
                mib_b(kib(r, "heap_in_use")),
                mib_b(kib(r, "linear_memory")),
                mib_b(resident),
                mib_b(ckpt),
                mib_b(in_memory),
                mib_b(journal),
                mib_b(baseline),
                mib_b(rest)
            )?;
        }
    }
    let unmatched: Vec<String> = m
        .rows
        .iter()
        .flat_map(|((k, s), systems)| {
            systems.iter().filter_map(move |(sys, r)| {
                let found = r.opt_num("linear_memories_found")?;
                (found != 1.0).then(|| format!("{sys} at {}: {found}", row_label(*k, *s)))
            })
        })
        .collect();
    if unmatched.is_empty() {
        writeln!(
            md,
            "\nIn every row exactly one run of mappings added up to the linear memory the guest reports."
        )?;
    } else {
        writeln!(
            md,
            "\nRuns of mappings that added up to the linear memory the guest reports, where not exactly one: {}.",
            unmatched.join("; ")
        )?;
    }
    writeln!(
        md,
        "\"–\": the release does not report its heap (built before the `memory` export), so its linear memory cannot be told apart.\n"
    )?;
    Ok(())
}

fn write_checks(md: &mut String, m: &Memory) -> anyhow::Result<()> {
    writeln!(md, "### Each figure read a second way\n")?;
    writeln!(
        md,
        "VmRSS (what the tables use) beside the sum of every mapping's `Rss` in /proc/PID/smaps and the server's own reading of its RSS (redis's `INFO memory` `used_memory_rss`; the host's `status.memory.resident`, which kv 4 and 5 also report as `used_memory_rss`), taken a moment apart; the guest's heap counter from the host's status beside kv 4's and 5's `INFO memory` `used_memory` (the same counter, read through the guest; a few hundred bytes apart, the INFO request's own buffers); redis's `used_memory` (its allocator's count) beside its RSS.\n"
    )?;
    writeln!(
        md,
        "| system | keys × value | VmRSS | smaps Rss | own RSS reading | heap (status) | `used_memory` (INFO) | redis: RSS / `used_memory` |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|")?;
    for (file, name) in SYSTEMS {
        for ((keys, size), systems) in &m.rows {
            let Some(r) = systems.get(*file) else { continue };
            let own = r.opt_num("status_resident").or_else(|| r.opt_num("info_used_memory_rss"));
            let used = kib(r, "info_used_memory");
            writeln!(
                md,
                "| {name} | {} | {} | {} | {} | {} | {} | {} |",
                row_label(*keys, *size),
                mib(kib(r, "rss_kib")),
                mib(kib(r, "smaps_rss_kib")),
                mib_b(own.unwrap_or(f64::NAN)),
                r.opt_num("heap_in_use").map_or("–".into(), thousands),
                if used.is_finite() { thousands(used) } else { "–".into() },
                // kv's used_memory is the guest's heap, not the process's: no ratio to RSS.
                if *file == "redis" {
                    ratio(kib(r, "rss_kib") * 1024.0, used)
                } else {
                    "–".into()
                }
            )?;
        }
    }
    writeln!(md)?;
    Ok(())
}

fn write_compactions(md: &mut String, m: &Memory) -> anyhow::Result<()> {
    let Some(first) = m.compactions.first() else { return Ok(()) };
    writeln!(md, "### Memory given back: compaction\n")?;
    writeln!(
        md,
        "A fresh `tasuki run {} {}` loaded with {} keys of {} bytes, then emptied by `FLUSHALL`, or 9 keys in 10 deleted by pipelined `DEL`s, while one client INCRs a counter of its own on one connection throughout. The host then compacts by itself ({}); the driver waits for `status.memory.compactions` to count it, then for the host to settle. Every key the delete left was read back afterwards with its value, and the counter matched the INCRs acknowledged. *Usual* is the slowest INCR reply in the moment before the delete (requests answered before it was sent); *during the delete* of the requests in flight at any moment while the `FLUSHALL` or `DEL`s were answered; *after* of those sent from the delete's reply until 2,000 INCRs after the compaction, so the compaction's pause is inside it (with when that slowest reply was sent and when the compaction committed, both after the delete's reply). The target after `FLUSHALL` is the empty host's RSS within 10%; after `DEL`, a fresh host loaded with the keys that are left (the row of that size in the first table).\n",
        first.get("app").unwrap_or("?"),
        first.get("host_args").unwrap_or(""),
        thousands(first.num("keys")?),
        first.num("value_size")?,
        if first.get("host_args").is_some_and(|a| a.contains("--compact-below")) {
            "`--compact-below` as given"
        } else {
            "the default `--compact-below`, 25%"
        }
    )?;
    writeln!(
        md,
        "| delete | RSS empty | loaded | right after the delete | after the compaction | after / a fresh host holding what is left | linear memory before → after | compaction's pause | compacted after | slowest INCR: usual | during the delete | after (sent at; compaction at) | INCRs |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")?;
    for r in &m.compactions {
        // What the compacted host should come back to: the same process empty after FLUSHALL;
        // after DEL, the row above of the same release loaded with as many keys as were left.
        let release = r.get("app").and_then(|a| a.strip_suffix(".wasm")).unwrap_or("?");
        let release = release.replace("_v", "");
        let left = r.opt_num("survivors_checked").unwrap_or(0.0) as u64;
        let size = r.opt_num("value_size").unwrap_or(0.0) as u64;
        let fresh = if left == 0 {
            Some((kib(r, "empty_rss_kib"), "empty".to_string()))
        } else {
            m.rows
                .get(&(left, size))
                .and_then(|systems| systems.get(&release))
                .map(|row| (kib(row, "rss_kib"), format!("{} row", row_label(left, size))))
        };
        let back = match fresh {
            Some((rss, what)) => {
                format!("{} ({what}, {})", ratio(kib(r, "compacted_rss_kib"), rss), mib(rss))
            }
            None => "–".into(),
        };
        let delete = match r.get("delete") {
            Some("flushall") => "`FLUSHALL`".to_string(),
            Some("del") => {
                format!("`DEL` 9 in 10 ({} left)", thousands(r.num("survivors_checked")?))
            }
            other => other.unwrap_or("?").to_string(),
        };
        writeln!(
            md,
            "| {delete} | {} | {} | {} | {} | {back} | {} → {} | {} | {} | {} | {} | {} ({} ms; {} ms) | {} |",
            mib(kib(r, "empty_rss_kib")),
            mib(kib(r, "loaded_rss_kib")),
            mib(kib(r, "deleted_rss_kib")),
            mib(kib(r, "compacted_rss_kib")),
            mib_b(kib(r, "compaction_before_linear")),
            mib_b(kib(r, "compaction_after_linear")),
            ms(r.num("compaction_pause_us")?),
            ms(r.num("compaction_after_delete_ms")? * 1e3),
            ms(r.num("incr_before_max_us")?),
            // A FLUSHALL can be answered before the client sends its next INCR.
            if r.opt_num("incr_delete_n") == Some(0.0) {
                "none sent".to_string()
            } else {
                ms(r.num("incr_delete_max_us")?)
            },
            ms(r.num("incr_compaction_max_us")?),
            r.get("incr_compaction_max_at_ms").unwrap_or("?"),
            r.get("compaction_committed_at_ms").unwrap_or("?"),
            thousands(r.num("incr_acked")?)
        )?;
    }
    writeln!(md)?;
    for r in &m.compactions {
        writeln!(
            md,
            "- {}: the compaction moved {} of state; the host's report: \"{}\"; the heap went from {} to {} bytes; the checkpoint held {} after it.",
            r.get("delete").unwrap_or("?"),
            bytes(r.num("compaction_state_bytes")?),
            r.get("compaction_reason").unwrap_or("?"),
            thousands(r.num("compaction_before_heap")?),
            thousands(r.num("compaction_after_heap")?),
            bytes(r.num("compacted_checkpoint_bytes")?)
        )?;
    }
    writeln!(md)?;
    Ok(())
}

//! The soak section, from `bench/soak`'s raw directory: `meta.kv` (written by the script),
//! `alone.kv` and `hostile.kv` (from `tasuki-bench soak`), and `fuzz/TARGET.log` (libFuzzer's
//! output of each target's run). The section is put in place of the one in the report and
//! leaves the others alone; a full `bench/run` keeps it.

use super::{mib, ms, thousands};
use crate::raw::Raw;
use anyhow::Context;
use std::fmt::Write as _;
use std::path::Path;

/// The section's heading; [`super::splice`] finds the section by it.
pub(super) const HEADING: &str = "## Soak: hostile clients";

/// The hostile clients, in the order of the table: (raw prefix, what it does, what the limit
/// documents for it).
const KINDS: &[(&str, &str, &str)] = &[
    (
        "slow_reader",
        "pipelines `GET` of a large value, never reads",
        "replies queued to `--output-buffer`, then its input held; closed past `--input-buffer` or when all pass `--buffer-budget` (log line)",
    ),
    (
        "flooder",
        "pipelines `INCR` as fast as the socket takes it, never reads",
        "the same limits, through many small replies",
    ),
    (
        "bulk_announcer",
        "announces `$536870912` and trickles it",
        "`-ERR Protocol error: invalid bulk length` and a close, at once (kv's `proto-max-bulk-len` is 64 MiB)",
    ),
    (
        "trickler",
        "announces the longest argument kv accepts, sends 1 KiB every 50 ms",
        "within every limit: must stay open",
    ),
    (
        "hoarder",
        "sends one request of two 64 MiB arguments at full speed",
        "`-ERR Protocol error: request over the query buffer limit` and a close past `--query-buffer` (128 MiB)",
    ),
];

/// The host's closes by reason: (raw key, the limit).
const CLOSES: &[(&str, &str)] = &[
    ("closed_input_buffer", "input held past `--input-buffer` while not reading"),
    ("closed_buffer_budget", "the connection buffering the most, past `--buffer-budget`"),
    ("closed_output_limit", "replies queued past the output limit (32 × `--output-buffer`)"),
    ("closed_call_output", "output of one call past 32 × `--output-buffer`"),
    ("closed_query_buffer", "unconsumed input past `--query-buffer` (said by the app)"),
    ("closed_query_total", "unconsumed input of all past half `--max-state`"),
    ("refused_max_connections", "connections refused past `--max-connections`"),
];

pub(super) struct Soak {
    meta: Raw,
    alone: Raw,
    hostile: Raw,
    /// (target, libFuzzer's output).
    fuzz: Vec<(String, String)>,
}

pub(super) fn read(dir: &Path) -> anyhow::Result<Soak> {
    let meta = Raw::read(&dir.join("meta.kv"))?;
    let alone = Raw::read(&dir.join("alone.kv"))?;
    let hostile = Raw::read(&dir.join("hostile.kv"))?;
    let mut fuzz = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir.join("fuzz")) {
        for entry in entries {
            let path = entry?.path();
            let Some(name) = path.file_stem().and_then(|n| n.to_str()) else { continue };
            let log = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            fuzz.push((name.to_string(), log));
        }
    }
    fuzz.sort();
    Ok(Soak { meta, alone, hostile, fuzz })
}

fn num(raw: &Raw, key: &str) -> f64 {
    raw.opt_num(key).unwrap_or(f64::NAN)
}

/// `a / b`, with the digits that matter at its size.
fn ratio(a: f64, b: f64) -> String {
    if !(a.is_finite() && b.is_finite() && b > 0.0) {
        return "–".into();
    }
    let r = a / b;
    if r >= 10.0 {
        format!("{r:.0}×")
    } else if r >= 1.0 {
        format!("{r:.1}×")
    } else {
        super::ratio(a, b)
    }
}

pub(super) fn write(md: &mut String, s: &Soak) -> anyhow::Result<()> {
    let meta = |k: &str| s.meta.get(k).unwrap_or("?").to_string();
    let (a, h) = (&s.alone, &s.hostile);
    writeln!(md, "{HEADING}\n")?;
    writeln!(
        md,
        "Written by `{}` at commit `{}` on {} ({} cores, {}, {} RAM; load average {} at the start, {} at the end{}). Not part of the test suite: it measures, and it fails only when a bound is broken.\n",
        meta("command"),
        meta("commit"),
        meta("date"),
        meta("cores"),
        meta("cpu_model"),
        meta("mem"),
        meta("loadavg_start"),
        meta("loadavg_end"),
        if s.meta.opt_num("loadavg_busy").unwrap_or(0.0) > 0.0 {
            "; other work on this machine was compiling meanwhile, so every latency here is inflated by it and by the clients sharing the cores with the host"
        } else {
            ""
        }
    )?;
    writeln!(
        md,
        "A fresh `tasuki run kv_v4.wasm` (kv {}, {}) for {} s each: once with only the well-behaved client — one connection, `SET soak:wb:N <100 bytes>` then `GET` of it, one request at a time, every reply checked byte for byte and timed — and once with the same client beside {} idle connections (opened first, in {}) and the hostile clients below, all on this machine over loopback. The host's RSS is read every 100 ms.\n",
        meta("kv_version"),
        if h.get("host_args").unwrap_or_default().is_empty() {
            "default limits".to_string()
        } else {
            format!("`{}`", h.get("host_args").unwrap_or_default())
        },
        h.get("duration_s").unwrap_or("?"),
        thousands(num(h, "idle")),
        ms(num(h, "idle_open_ms") * 1e3),
    )?;

    writeln!(md, "| the well-behaved client | alone | beside the hostile clients | ratio |")?;
    writeln!(md, "|---|---:|---:|---:|")?;
    for (name, key) in
        [("p50", "p50_us"), ("p99", "p99_us"), ("p99.9", "p999_us"), ("max", "max_us")]
    {
        let (x, y) = (num(a, key), num(h, key));
        writeln!(md, "| {name} latency | {} | {} | {} |", ms(x), ms(y), ratio(y, x))?;
    }
    let (x, y) = (num(a, "requests_per_s"), num(h, "requests_per_s"));
    writeln!(
        md,
        "| requests per second | {} | {} | {} |",
        thousands(x),
        thousands(y),
        ratio(y, x)
    )?;
    writeln!(
        md,
        "| requests answered (failed) | {} ({}) | {} ({}) | |",
        thousands(num(a, "requests")),
        thousands(num(a, "failed_requests")),
        thousands(num(h, "requests")),
        thousands(num(h, "failed_requests"))
    )?;
    let (x, y) = (num(a, "rss_max_kib"), num(h, "rss_max_kib"));
    writeln!(md, "| host RSS, highest | {} | {} | {} |", mib(x), mib(y), ratio(y, x))?;
    let exited = |r: &Raw| if num(r, "host_exited") == 0.0 { "no" } else { "**yes**" };
    writeln!(md, "| host exited | {} | {} | |", exited(a), exited(h))?;
    writeln!(md)?;

    let per_second = h.list("rss_per_second_kib").unwrap_or_default();
    let slowest = h.list("max_per_second_us").unwrap_or_default();
    if !per_second.is_empty() {
        writeln!(
            md,
            "Over time, beside the hostile clients (each figure the highest of its second; every 5th second shown):\n"
        )?;
        let shown: Vec<usize> = (0..per_second.len()).step_by(5).collect();
        let mut head = String::from("| second |");
        let mut rule = String::from("|---|");
        let mut rss = String::from("| host RSS |");
        let mut slow = String::from("| slowest reply |");
        for &i in &shown {
            write!(head, " {i} |")?;
            rule.push_str("---:|");
            write!(rss, " {} |", mib(per_second[i]))?;
            write!(slow, " {} |", slowest.get(i).map_or("–".into(), |us| ms(*us)))?;
        }
        writeln!(md, "{head}\n{rule}\n{rss}\n{slow}\n")?;
    }

    writeln!(
        md,
        "| hostile client | count | what it does | what the limit documents | connections | closed by the host | of those, the reply lost | sent |"
    )?;
    writeln!(md, "|---|---:|---|---|---:|---:|---:|---:|")?;
    for (kind, what, documented) in KINDS {
        writeln!(
            md,
            "| {} | {} | {what} | {documented} | {} | {} | {} | {} |",
            kind.replace('_', " "),
            h.get(&format!("{kind}_count")).unwrap_or("?"),
            thousands(num(h, &format!("{kind}_connections"))),
            thousands(num(h, &format!("{kind}_closed"))),
            thousands(num(h, &format!("{kind}_reply_lost"))),
            super::bytes(num(h, &format!("{kind}_sent_bytes")))
        )?;
    }
    writeln!(
        md,
        "| idle | {} | connects, sends nothing | within every limit: must stay open | {} | {} | | |\n",
        thousands(num(h, "idle")),
        thousands(num(h, "idle")),
        thousands(num(h, "idle") - num(h, "idle_open_at_end"))
    )?;
    writeln!(
        md,
        "*The reply lost*: the host closed a client that was still sending, and the kernel's reset reached the client before it had read the documented reply; the close itself is counted from the host's log below. A connection opened but not closed by the host was under way when the soak stopped (a slow reader still being filled, a bulk announcer or hoarder mid-request): one left waiting 10 s for its documented reply fails the soak.\n"
    )?;

    writeln!(
        md,
        "The host's log, beside the hostile clients: connections it closed, by the limit it named.\n"
    )?;
    writeln!(md, "| reason | closes |")?;
    writeln!(md, "|---|---:|")?;
    for (key, reason) in CLOSES {
        writeln!(md, "| {reason} | {} |", thousands(num(h, key)))?;
    }
    writeln!(md)?;
    let traps = num(h, "traps");
    let whole = num(h, "checkpoints_whole");
    writeln!(
        md,
        "Beside the hostile clients the host also {}, and took {} recovery checkpoints built a chunk at a time between events and {} exported whole{}. Alone: {} traps, {} and {} checkpoints.\n",
        if traps > 0.0 {
            format!(
                "trapped {} time(s), each followed by a rebuild from its checkpoint and journal (the longest took {}; the log says why each trapped)",
                thousands(traps),
                ms(num(h, "rebuild_max_ms") * 1e3)
            )
        } else {
            "never trapped".to_string()
        },
        thousands(num(h, "checkpoints_chunked")),
        thousands(whole),
        if whole > 0.0 {
            format!(
                ", the longest of which held the loop for {} (the unconsumed input of the hoarder and the tricklers is part of the state)",
                ms(num(h, "checkpoint_whole_max_us"))
            )
        } else {
            String::new()
        },
        thousands(num(a, "traps")),
        thousands(num(a, "checkpoints_chunked")),
        thousands(num(a, "checkpoints_whole")),
    )?;

    let bound = num(h, "max_rss_mib");
    writeln!(
        md,
        "Checked by the script, which exits non-zero otherwise: the host never exited and stopped with exit 0 on SIGTERM afterwards; its RSS stayed under {} (highest: {}); the well-behaved client had every reply right and within 10 s ({} failed); every idle connection and trickler was still open at the end ({} of {}, {} of {}); every client closed at a limit that says so got the documented reply or a reset, never another reply or a hang.\n",
        mib(bound * 1024.0),
        mib(num(h, "rss_max_kib")),
        thousands(num(h, "failed_requests")),
        thousands(num(h, "idle_open_at_end")),
        thousands(num(h, "idle")),
        thousands(num(h, "trickler_open_at_end")),
        h.get("trickler_count").unwrap_or("?"),
    )?;
    if let Some(why) = s.meta.get("rss_bound_why") {
        writeln!(md, "The RSS bound: {why}\n")?;
    }

    if !s.fuzz.is_empty() {
        writeln!(md, "### Fuzzing\n")?;
        writeln!(
            md,
            "Each target run by `fuzz/run --seconds {}` from its checked-in corpus (`fuzz/corpus/TARGET`), built with the stable toolchain and libFuzzer (no AddressSanitizer: see fuzz/run).\n",
            meta("fuzz_seconds")
        )?;
        writeln!(
            md,
            "| target | what it feeds | runs | runs per second | coverage (edges) | corpus at the end | crashes |"
        )?;
        writeln!(md, "|---|---|---:|---:|---:|---:|---:|")?;
        for (target, log) in &s.fuzz {
            let f = Fuzz::parse(log);
            writeln!(
                md,
                "| `{target}` | {} | {} | {} | {} | {} | {} |",
                match target.as_str() {
                    "control_message" =>
                        "bytes on the control socket, decoded as a request and a response",
                    "snapshot_file" =>
                        "a snapshot file's bytes, and the same as the body of a file with a valid header and checksum",
                    "resp_request" =>
                        "a client's byte stream, cut anywhere, to the RESP parsers (properties in `guests/resp/src/fuzzing.rs`)",
                    _ => "",
                },
                f.runs.map_or("?".into(), |r| thousands(r as f64)),
                f.runs_per_second().map_or("?".into(), thousands),
                f.coverage.map_or("?".into(), |c| thousands(c as f64)),
                f.corpus.map_or("?".into(), |c| thousands(c as f64)),
                if f.crashed { "**1**" } else { "0" }
            )?;
        }
        writeln!(md)?;
    }
    Ok(())
}

/// What a libFuzzer run printed at its end.
#[derive(Debug, Default, PartialEq)]
struct Fuzz {
    runs: Option<u64>,
    seconds: Option<u64>,
    coverage: Option<u64>,
    corpus: Option<u64>,
    crashed: bool,
}

impl Fuzz {
    /// `#123 DONE cov: 456 ft: 789 corp: 12/3456b ...` and `Done 123 runs in 60 second(s)`.
    fn parse(log: &str) -> Self {
        let mut out = Self::default();
        let field = |line: &str, name: &str| -> Option<u64> {
            let mut words = line.split_whitespace();
            words.find(|w| *w == name)?;
            words.next()?.split('/').next()?.parse().ok()
        };
        for line in log.lines() {
            let status = line.split_whitespace().nth(1).unwrap_or_default();
            if line.starts_with('#')
                && ["INITED", "NEW", "REDUCE", "pulse", "DONE"].contains(&status)
            {
                out.coverage = field(line, "cov:").or(out.coverage);
                out.corpus = field(line, "corp:").or(out.corpus);
            }
            if let Some(rest) = line.strip_prefix("Done ") {
                let words: Vec<&str> = rest.split_whitespace().collect();
                out.runs = words.first().and_then(|w| w.parse().ok());
                out.seconds = words.get(3).and_then(|w| w.parse().ok());
            }
            if line.contains("deadly signal")
                || line.contains("panicked at")
                || line.starts_with("SUMMARY: libFuzzer")
            {
                out.crashed = true;
            }
        }
        out
    }

    fn runs_per_second(&self) -> Option<f64> {
        Some(self.runs? as f64 / self.seconds?.max(1) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libfuzzer_output() {
        let log = "INFO: Seed: 1\n#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #1000\tDONE   cov: 321 ft: 654 corp: 45/2345b lim: 4096 exec/s: 16 rss: 40Mb\n\
                   Done 1000 runs in 61 second(s)\n";
        let f = Fuzz::parse(log);
        assert_eq!(
            f,
            Fuzz {
                runs: Some(1000),
                seconds: Some(61),
                coverage: Some(321),
                corpus: Some(45),
                crashed: false
            }
        );
        assert!(Fuzz::parse("==1== ERROR: libFuzzer: deadly signal\n").crashed);
    }
}

//! The upgrade tables: the pause under load per series and store size, where the pause goes
//! (the pre-copy before it, the bytes in it), redis-server's restart beside it, requests lost,
//! and resident memory.

use super::{bytes, keys_label, mib, ms, ratio, thousands};
use crate::raw::Raw;
use crate::stats::{max, median, percentile};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The series `bench/run` runs, in the order the tables list them.
const ORDER: [&str; 6] =
    ["precopy", "chain", "full", "contract-0.1", "contract-0.1-replica", "contract-0.1-export"];

/// The kv v2 → v2 pre-copied series: the one the restart comparison and the memory soak use.
pub(super) const MAIN: &str = "precopy";

/// Every `upgrades-SERIES-KEYS.kv`, by series (in [`ORDER`]) and keys.
#[derive(Debug, Default)]
pub(super) struct Upgrades {
    pub(super) series: Vec<(String, BTreeMap<u64, Raw>)>,
}

impl Upgrades {
    pub(super) fn read(dir: &Path) -> anyhow::Result<Self> {
        let mut by_name: BTreeMap<String, BTreeMap<u64, Raw>> = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            if !(name.starts_with("upgrades-") && name.ends_with(".kv")) {
                continue;
            }
            let raw = Raw::read(&path)?;
            let Some(series) = raw.get("series").map(str::to_string) else { continue };
            let keys = raw.num("keys")? as u64;
            by_name.entry(series).or_default().insert(keys, raw);
        }
        let rank = |name: &str| ORDER.iter().position(|o| *o == name).unwrap_or(ORDER.len());
        let mut series: Vec<_> = by_name.into_iter().collect();
        series.sort_by_key(|(name, _)| rank(name));
        Ok(Self { series })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    pub(super) fn get(&self, name: &str) -> Option<&BTreeMap<u64, Raw>> {
        self.series.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    /// Every (series label, keys, raw), series by series.
    fn rows(&self) -> impl Iterator<Item = (&str, u64, &Raw)> {
        self.series.iter().flat_map(|(name, by_keys)| {
            by_keys.iter().map(move |(k, raw)| (raw.get("label").unwrap_or(name), *k, raw))
        })
    }
}

/// A list's median, or NaN if it is missing (a raw file from before the field existed).
fn med(raw: &Raw, key: &str) -> f64 {
    raw.list(key).map_or(f64::NAN, |v| median(&v))
}

pub(super) fn write(
    md: &mut String,
    upgrades: &Upgrades,
    restarts: &BTreeMap<u64, Raw>,
) -> anyhow::Result<()> {
    let Some((_, any)) = upgrades.series.first().and_then(|(_, s)| s.iter().next()) else {
        return Ok(());
    };
    let clients = any.get("clients").unwrap_or("?");
    writeln!(md, "## Upgrade pause under load\n")?;
    writeln!(
        md,
        "`tasuki upgrade` over the control socket, again and again, on a host holding KEYS keys (`key:NNNNNNNNNNNN`, {}-byte values), while {clients} clients INCR their own counters one request at a time. Each series starts a host of its own (`tasuki-bench upgrades` starts it, loads the keys, upgrades, checks the counters); the v1 → v3 series, whose upgrade can be made once, starts a fresh host for each upgrade. Pause = time no event was dispatched (the last pre-copy round or the whole state, transform, import, commit), as the host's UpgradeReport measures it; percentiles are over every upgrade of the series. Request → commit is the whole upgrade as `tasuki upgrade` waits for it: prepare (instantiate + `init` + `describe`; the compile too, on a fresh host, whose first upgrade compiles the new version), the pre-copy while the old version serves, and the pause.\n",
        any.get("value_size").unwrap_or("?")
    )?;
    writeln!(
        md,
        "| upgrade | keys | state moved | upgrades | pause p50 | pause p99 | pause max | request → commit p50 | request → commit max | slowest client reply |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for (label, keys, raw) in upgrades.rows() {
        let pause = raw.list("pause_us")?;
        let request = raw.list("request_us")?;
        writeln!(
            md,
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            keys_label(keys),
            bytes(med(raw, "state_bytes")),
            pause.len(),
            ms(percentile(&pause, 50.0)),
            ms(percentile(&pause, 99.0)),
            ms(max(&pause)),
            ms(median(&request)),
            ms(max(&request)),
            ms(raw.num("client_max_us")?)
        )?;
    }
    writeln!(md)?;

    writeln!(md, "### Where the pause goes\n")?;
    writeln!(
        md,
        "Medians. Pre-copy: the steps (one chunk of `--precopy-chunk` bytes each, out of the old instance, through the transformers, into the new one) run between rounds of events while the old version serves, before the pause; the bytes they moved do not cross in it. The longest step (over the whole series) is the most a client waited for the copy between two events; a step grows past one chunk only while it stays under 3 ms. In the pause: export is the last round on the old instance (what changed since its entries were copied, and the small rest of the state) or, without pre-copy, `export-state` — the guest encodes its state and the host lifts it out of the guest's memory. Transform is the host's own figure for the transformers. Import is the new instance taking it: the host lowers it into the guest's memory and the guest decodes it and rebuilds its indexes. The rest of the pause is the commit (switching instances, flushing queued output). Where a full transfer's time goes inside export and import is measured apart, below.\n"
    )?;
    writeln!(
        md,
        "| upgrade | keys | pre-copy steps | pre-copy time (serving) | longest step | moved before the pause | moved in the pause | export | transform | import | commit | pause |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for (label, keys, raw) in upgrades.rows() {
        let (e, t, i, p) = (
            med(raw, "export_us"),
            med(raw, "transform_us"),
            med(raw, "import_us"),
            med(raw, "pause_us"),
        );
        let steps = med(raw, "precopy_steps");
        let (before, longest, during) = if steps > 0.0 {
            let longest = raw.list("longest_step_us").ok().map_or("–".into(), |l| ms(max(&l)));
            (ms(med(raw, "precopy_us")), longest, bytes(med(raw, "precopy_bytes")))
        } else {
            ("–".into(), "–".into(), "–".into())
        };
        writeln!(
            md,
            "| {label} | {} | {} | {before} | {longest} | {during} | {} | {} | {} | {} | {} | {} |",
            keys_label(keys),
            if steps.is_finite() { thousands(steps) } else { "–".into() },
            bytes(med(raw, "paused_bytes")),
            ms(e),
            ms(t),
            ms(i),
            ms((p - e - t - i).max(0.0)),
            ms(p)
        )?;
    }
    let stalls: Vec<String> = upgrades
        .rows()
        .filter_map(|(label, keys, raw)| {
            let steps = raw.list("precopy_steps").ok()?;
            let converged = raw.list("converged").ok()?;
            let missed =
                steps.iter().zip(&converged).filter(|(s, c)| **s > 0.0 && **c == 0.0).count();
            (missed > 0)
                .then(|| format!("{label}, {}: {missed} of {}", keys_label(keys), steps.len()))
        })
        .collect();
    if stalls.is_empty() {
        writeln!(
            md,
            "\nEvery pre-copy converged: the host paused when what was still owed fitted a quarter of a chunk."
        )?;
    } else {
        writeln!(
            md,
            "\nPre-copies that did not converge (writes outran the copy, so the host stopped iterating and moved what was owed in the pause): {}.",
            stalls.join("; ")
        )?;
    }
    writeln!(md)?;

    let main = upgrades.get(MAIN);
    if let Some(main) = main
        && !restarts.is_empty()
    {
        writeln!(md, "### Side by side: the same change on redis-server\n")?;
        writeln!(
            md,
            "redis-server cannot replace its code while running; its users restart it: `SHUTDOWN SAVE`, start the new binary, wait until it has loaded the RDB and answers PING. Measured here under the same INCR load, with clients that reconnect. Downtime is from SHUTDOWN to the first PONG; every connection is closed by it. tasuki: the kv v2 → v2 pre-copied series.\n"
        )?;
        writeln!(
            md,
            "| keys | tasuki pause p50 | redis-server downtime p50 | ratio | tasuki pause max | redis-server downtime max | ratio | state moved tasuki / RDB written redis | connections closed tasuki / redis |"
        )?;
        writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
        for (keys, rst) in restarts {
            let Some(upg) = main.get(keys) else { continue };
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
                bytes(med(upg, "state_bytes")),
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
    for (label, keys, raw) in upgrades.rows() {
        let across = format!("{} upgrades, {label}", raw.num("upgrades")?);
        write_loss_row(md, keys, "tasuki", &across, raw)?;
    }
    for (keys, rst) in restarts {
        let across = format!("{} restarts", rst.num("restarts")?);
        write_loss_row(md, *keys, "redis-server", &across, rst)?;
    }
    writeln!(md)?;

    write_memory(md, upgrades, restarts)
}

fn write_memory(
    md: &mut String,
    upgrades: &Upgrades,
    restarts: &BTreeMap<u64, Raw>,
) -> anyhow::Result<()> {
    writeln!(md, "## Resident memory\n")?;
    writeln!(
        md,
        "VmRSS of the server process (/proc/PID/status). Steady: after loading the keys, before any upgrade (the median over the hosts of a series that starts one per upgrade). Peak during an upgrade: the highest VmHWM over the series, reset before each upgrade (two instances live at once while the new one is prepared and the state crosses; with pre-copy, the new instance fills while the old one serves). redis-server: its RSS with the same keys.\n"
    )?;
    let mut soak_columns: Vec<usize> = Vec::new();
    for (_, _, raw) in upgrades.rows() {
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
        "| upgrade | keys | redis-server | tasuki steady | tasuki / redis | tasuki peak during an upgrade | peak / steady |",
    );
    let mut rule = String::from("|---|---:|---:|---:|---:|---:|---:|");
    for n in &soak_columns {
        write!(header, " after {n} upgrades |")?;
        rule.push_str("---:|");
    }
    header.push_str(" last / after 10 |");
    rule.push_str("---:|");
    writeln!(md, "{header}\n{rule}")?;
    for (label, keys, raw) in upgrades.rows() {
        let redis =
            restarts.get(&keys).and_then(|r| r.opt_num("rss_steady_kib")).unwrap_or(f64::NAN);
        let steady = raw.num("rss_steady_kib")?;
        let peak = max(&raw.list("hwm_kib")?);
        let mut row = format!(
            "| {label} | {} | {} | {} | {} | {} | {} |",
            keys_label(keys),
            mib(redis),
            mib(steady),
            ratio(steady, redis),
            mib(peak),
            ratio(peak, steady)
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

//! Catch-up (`tasuki upgrade` of an app that cannot pre-copy): the same upgrades of kv 2 built
//! before pre-copy (a std `HashMap`, its state moved whole) to itself, under the INCR load, by
//! default (the checkpoint and journal replayed off the loop) and then with the export and
//! import inside the pause (`--no-catch-up`), side by side in one run.

use super::{keys_label, ms, read_series};
use crate::raw::Raw;
use crate::stats::{max, median, percentile};
use std::fmt::Write as _;
use std::path::Path;

/// The section's heading, to splice it alone into a report (`bench/run --catch-up-only`).
pub const HEADING: &str = "## Catch-up: a whole state, off the loop";

/// The two series, as `bench/run` names their raw files in `raw/catchup/`.
const CAUGHT_UP: &str = "upgrades-caught-up-";
const IN_PAUSE: &str = "upgrades-in-pause-";

fn list(raw: &Raw, key: &str) -> Vec<f64> {
    raw.list(key).unwrap_or_default()
}

/// Writes the section from `raw/catchup/` (nothing if it was not measured).
pub fn write(md: &mut String, raw: &Path) -> anyhow::Result<()> {
    let dir = raw.join("catchup");
    if !dir.is_dir() {
        return Ok(());
    }
    let source = Raw::read(&dir.join("catchup.kv")).unwrap_or_default();
    let s = |k: &str| source.get(k).unwrap_or("?").to_string();
    let caught_up = read_series(&dir, CAUGHT_UP)?;
    let in_pause = read_series(&dir, IN_PAUSE)?;
    writeln!(md, "{HEADING}\n")?;
    writeln!(
        md,
        "Measured by `{}` at commit `{}` on {} (load average {} at the start, {} at the end). A release that cannot pre-copy (kv 2 built before pre-copy, `tests/fixtures/contract-0.1`: a std `HashMap`, its state moved whole) upgraded to itself again and again on one host holding {} keys (16-byte values), while 4 clients INCR their own counters; first as `tasuki upgrade` does by default (catch-up: the new version is the same component with the same arguments, so nothing is exported — on a thread of its own the new instance imports the host's last checkpoint and replays the journal since, while the old one serves, then runs the events since the upgrade began, its replies compared, and takes over; the pause is the journal's copy), then with `--no-catch-up` (the old version exports in the pause and the new one imports inside it). An upgrade to another component cannot replay the journal into the new version: a replica of the old one, rebuilt from the checkpoint and journal off the loop, exports for it (or, with recovery off, the old version in the pause), and the new version imports off the loop: the rows \"kv v2 built before pre-copy → kv v2 of today's contract\" in \"Upgrade pause under load\" above. Pause = time no event was dispatched, from each upgrade's report. The new version's replay runs between rounds of events; its longest step is the most a client waited for it. Every INCR acknowledged was checked, as in \"Failed or lost requests\" above.\n",
        s("command"),
        s("commit"),
        s("date"),
        s("loadavg_start"),
        s("loadavg_end"),
        caught_up.keys().next_back().map_or_else(|| "?".into(), |k| keys_label(*k)),
    )?;
    writeln!(
        md,
        "| import | keys | upgrades | pause p50 | pause p99 | pause max | export p50 | import p50 (where) | events run again p50 | longest replay step | abandoned | request → commit p50 | slowest client reply |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for (label, series, off_loop) in [
        ("off the loop, caught up (default)", &caught_up, true),
        ("inside the pause (`--no-catch-up`)", &in_pause, false),
    ] {
        for (keys, raw) in series {
            let pause = list(raw, "pause_us");
            let (import, place) = if off_loop {
                (median(&list(raw, "catch_up_import_us")), "while serving")
            } else {
                (median(&list(raw, "import_us")), "in the pause")
            };
            let events = median(&list(raw, "catch_up_events"));
            let abandoned: f64 = list(raw, "catch_up_abandoned").iter().sum();
            writeln!(
                md,
                "| {label} | {} | {} | {} | {} | {} | {} | {} ({place}) | {} | {} | {} | {} | {} |",
                keys_label(*keys),
                pause.len(),
                ms(percentile(&pause, 50.0)),
                ms(percentile(&pause, 99.0)),
                ms(max(&pause)),
                ms(median(&list(raw, "export_us"))),
                ms(import),
                if off_loop { format!("{events:.0}") } else { "–".into() },
                if off_loop {
                    ms(max(&list(raw, "catch_up_longest_step_us")))
                } else {
                    "–".into()
                },
                if off_loop { format!("{abandoned:.0}") } else { "–".into() },
                ms(median(&list(raw, "request_us"))),
                ms(raw.num("client_max_us").unwrap_or(f64::NAN)),
            )?;
        }
    }
    if let (Some((k, c)), Some((_, p))) =
        (caught_up.iter().next_back(), in_pause.iter().next_back())
    {
        let p50 = |raw: &Raw| percentile(&list(raw, "pause_us"), 50.0);
        let (c, p) = (p50(c), p50(p));
        writeln!(
            md,
            "\nAt {} keys the median pause is {} with catch-up, {} with the export and import inside it: {:.2}×. Where an export is in the pause (another component, or `--no-catch-up`), it is the app's own encode and the host lifting the bytes out; it is slowest at the first upgrade of a host, the one whose old instance holds the keys where the load put them (every later old instance was built by an import). That export runs the same guest code over the same bytes and took 2–2.5× as long (measured apart: perf of a first and a second upgrade without load, the guest's encoder 38% of the samples against 14.5%, page faults about the same share; a checkpoint had just exported the whole state from that instance, so it was not fresh memory either). The encoder walks the map and copies each entry's bytes; what the load left scattered, an import lays out in one sweep.",
            keys_label(*k),
            ms(c),
            ms(p),
            c / p
        )?;
    }
    writeln!(md)?;
    Ok(())
}

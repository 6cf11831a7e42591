//! Where a whole-state transfer's time goes, from `tasuki-bench profile`: the share of perf's
//! samples in each part of the transfer, and about how much of the pause that is.

use super::{keys_label, ms};
use crate::profile::PARTS;
use crate::raw::Raw;
use std::fmt::Write as _;
use std::path::Path;

/// Every `profile-NAME.kv` in `dir`, whole-state first.
pub(super) fn read(dir: &Path) -> anyhow::Result<Vec<Raw>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        if name.starts_with("profile-") && name.ends_with(".kv") {
            out.push((name.to_string(), Raw::read(&path)?));
        }
    }
    out.sort_by_key(|(name, _)| (name != "profile-full.kv", name.clone()));
    Ok(out.into_iter().map(|(_, raw)| raw).collect())
}

pub(super) fn write(md: &mut String, profiles: &[Raw]) -> anyhow::Result<()> {
    let Some(first) = profiles.first() else { return Ok(()) };
    writeln!(md, "## Where a whole-state transfer's time goes\n")?;
    writeln!(
        md,
        "One upgrade of a host holding {} keys and no client load, moving the whole state in the pause, under `perf record -g` (`tasuki-bench profile`; the host runs with `TASUKI_PERFMAP=1` so the guest's functions have names). Each sample is charged to one part by its frames; a page fault to whoever touched the memory. Share of the samples taken in the pause, and that share of this upgrade's pause (perf slows it a little: the pause here is longer than in the series above). Export is the old instance encoding its state and the host lifting it out; import is the host lowering it into the new instance and the guest decoding it and rebuilding its map.\n",
        keys_label(first.num("keys")? as u64)
    )?;
    let mut header = String::from("| part |");
    let mut rule = String::from("|---|");
    for p in profiles {
        write!(header, " {} |", p.get("label").unwrap_or("?"))?;
        rule.push_str("---:|");
    }
    writeln!(md, "{header}\n{rule}")?;
    let mut row = |name: &str, cell: &dyn Fn(&Raw) -> anyhow::Result<String>| {
        let mut line = format!("| {name} |");
        for p in profiles {
            write!(line, " {} |", cell(p)?)?;
        }
        writeln!(md, "{line}")?;
        anyhow::Ok(())
    };
    row("pause (export / import)", &|p| {
        Ok(format!(
            "{} ({} / {})",
            ms(p.num("pause_us")?),
            ms(p.num("export_us")?),
            ms(p.num("import_us")?)
        ))
    })?;
    for (part, name) in PARTS {
        row(name, &|p| {
            let n = p.num(&format!("samples_{part}"))?;
            if part == "drop" {
                return Ok(format!(
                    "{:.0}% of all samples, after the pause",
                    n / p.num("samples")? * 100.0
                ));
            }
            // Of the samples in the pause: the old instance's drop comes after it.
            let share = n / (p.num("samples")? - p.num("samples_drop")?);
            Ok(format!("{:.0}% (≈ {})", share * 100.0, ms(share * p.num("pause_us")?)))
        })?;
    }
    row("samples", &|p| Ok(format!("{}", p.num("samples")?)))?;
    writeln!(md)?;
    Ok(())
}

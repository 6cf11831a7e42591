//! Directory listings as FTP clients parse them: `LIST` in the format of `ls -l` (what
//! `ftplib`, `curl` and `lftp` read; RFC 959 leaves it to the server), `NLST` as bare names
//! (RFC 959 section 4.1.3).

use std::time::{SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] =
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Six months, in seconds: `ls -l` shows the time of day for files modified more recently
/// than this, the year for older ones.
const RECENT_S: i64 = 182 * 24 * 3600;

/// (year, month 1-12, day 1-31) of a day counted from 1970-01-01 (the proleptic Gregorian
/// calendar; Howard Hinnant's `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `ls -l`'s date column for a file modified at `modified_s` (Unix seconds, UTC) seen at
/// `now_s`: `Mon DD HH:MM` if recent, `Mon DD  YYYY` otherwise.
pub fn ls_date(modified_s: i64, now_s: i64) -> String {
    let (year, month, day) = civil(modified_s.div_euclid(86_400));
    let month = MONTHS[month as usize - 1];
    if (now_s - modified_s).abs() < RECENT_S {
        let secs = modified_s.rem_euclid(86_400);
        format!("{month} {day:>2} {:02}:{:02}", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{month} {day:>2}  {year}")
    }
}

/// Seconds since the Unix epoch of `time` (negative before it).
pub fn unix_s(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs() as i64,
        Err(before) => -(before.duration().as_secs() as i64),
    }
}

/// One `LIST` line, CRLF-terminated: type and mode, links, owner, group, size, date, name.
pub fn ls_line(name: &str, meta: &std::fs::Metadata, now_s: i64) -> String {
    let (kind, mode) = if meta.is_dir() { ('d', "rwxr-xr-x") } else { ('-', "rw-r--r--") };
    let modified = meta.modified().map(unix_s).unwrap_or(0);
    format!("{kind}{mode} 1 ftp ftp {:>12} {} {name}\r\n", meta.len(), ls_date(modified, now_s))
}

/// The listing of `dir` (a path on disk), sorted by name: `LIST`'s lines, or `NLST`'s names
/// when `names_only`.
pub fn list_dir(dir: &str, names_only: bool, now_s: i64) -> std::io::Result<Vec<u8>> {
    let mut entries: Vec<(String, std::fs::Metadata)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // A link that points out of the served directory has no metadata here: leave it out.
        if let Ok(meta) = std::fs::metadata(entry.path()) {
            entries.push((name, meta));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::new();
    for (name, meta) in &entries {
        if names_only {
            out.push_str(name);
            out.push_str("\r\n");
        } else {
            out.push_str(&ls_line(name, meta, now_s));
        }
    }
    Ok(out.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_ls_writes_them() {
        // 2026-12-01T09:30:00Z
        let now = 1_796_117_400;
        assert_eq!(ls_date(now, now), "Dec  1 09:30");
        assert_eq!(ls_date(0, now), "Jan  1  1970");
        // 2024-02-29T23:59:00Z, a leap day more than six months back.
        assert_eq!(ls_date(1_709_251_140, now), "Feb 29  2024");
    }
}

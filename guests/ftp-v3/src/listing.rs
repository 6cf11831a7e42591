//! Directory listings as FTP clients parse them: `LIST` in the format of `ls -l` (what
//! `ftplib`, `curl` and `lftp` read; RFC 959 leaves it to the server), `NLST` as bare names
//! (RFC 959 section 4.1.3), `MLSD` and `MLST` as RFC 3659's facts (section 7).

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

/// RFC 3659's time-val (section 2.3) of `modified_s` (Unix seconds): `YYYYMMDDHHMMSS`, UTC, as
/// `MDTM` and the `modify` fact give it.
pub fn fact_time(modified_s: i64) -> String {
    let (year, month, day) = civil(modified_s.div_euclid(86_400));
    let secs = modified_s.rem_euclid(86_400);
    format!("{year:04}{month:02}{day:02}{:02}{:02}{:02}", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// One `MLSD` line, or `MLST`'s fact line without its leading space (RFC 3659 section 7.2):
/// `type=file;size=N;modify=T;perm=P; NAME` and CRLF. `perm` is what this client may do
/// (section 7.5.5): read, and with `write` also append, delete, rename and write a file; in a
/// directory, enter and list, and with `write` also create, make directories and delete.
pub fn mlsx_line(name: &str, meta: &std::fs::Metadata, write: bool) -> String {
    let modified = fact_time(meta.modified().map(unix_s).unwrap_or(0));
    let (kind, perm) = match (meta.is_dir(), write) {
        (true, false) => ("dir", "el"),
        (true, true) => ("dir", "elcmdf"),
        (false, false) => ("file", "r"),
        (false, true) => ("file", "radfw"),
    };
    format!("type={kind};size={};modify={modified};perm={perm}; {name}\r\n", meta.len())
}

/// How [`list_dir`] writes each entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `LIST`: `ls -l`'s lines.
    Ls,
    /// `NLST`: names only.
    Names,
    /// `MLSD`: RFC 3659's facts; `write` says whether the client may change things.
    Facts {
        /// The client may write.
        write: bool,
    },
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

/// The listing of `dir` (a path on disk), sorted by name, in `style`; `now_s` (Unix seconds)
/// decides `ls -l`'s date column.
pub fn list_dir(dir: &str, style: Style, now_s: i64) -> std::io::Result<Vec<u8>> {
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
        match style {
            Style::Names => {
                out.push_str(name);
                out.push_str("\r\n");
            }
            Style::Ls => out.push_str(&ls_line(name, meta, now_s)),
            Style::Facts { write } => out.push_str(&mlsx_line(name, meta, write)),
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

    #[test]
    fn fact_times_are_utc_to_the_second() {
        assert_eq!(fact_time(1_796_117_400 + 59), "20261201093059");
        assert_eq!(fact_time(0), "19700101000000");
        assert_eq!(fact_time(1_709_251_140), "20240229235900");
    }
}

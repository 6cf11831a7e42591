//! What /proc says about a server process: resident memory and CPU time.

use anyhow::{Context, anyhow};

/// A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("{path} has no {field}"))
}

pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS")
}

pub fn hwm_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmHWM")
}

/// Resets the process's peak resident set (VmHWM) to its current RSS, so the next read of
/// VmHWM is the peak since now (Linux ≥ 4.0; needs the same user as the process).
pub fn reset_hwm(pid: u32) -> anyhow::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("resetting the peak RSS of {pid}"))
}

/// CPU time used by a process.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    /// Time on CPU of every live thread, in ns (/proc/PID/task/*/schedstat).
    pub ns: u64,
    /// User and kernel time of the whole process, in clock ticks (/proc/PID/stat).
    pub utime_ticks: u64,
    pub stime_ticks: u64,
}

pub fn cpu(pid: u32) -> anyhow::Result<Cpu> {
    let mut ns = 0;
    let dir = format!("/proc/{pid}/task");
    for task in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let path = task?.path().join("schedstat");
        // A thread may exit between the listing and the read.
        if let Ok(text) = std::fs::read_to_string(&path) {
            ns += text.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| anyhow!("odd stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime_ticks = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime_ticks = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(Cpu { ns, utime_ticks, stime_ticks })
}

//! What `tasuki status` reports, and the shared record the dispatcher keeps up to date.

use crate::bindings::AppInfo;
use crate::upgrade::{AppVersion, UpgradeReport};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The outcome of the most recent upgrade request that reached the pause or was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastUpgrade {
    /// When it finished, in ms since the Unix epoch.
    pub at_unix_ms: u64,
    pub outcome: Result<UpgradeReport, String>,
}

/// A running host, as `tasuki status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub app: AppVersion,
    pub wasm: PathBuf,
    pub listen: Vec<String>,
    pub uptime: Duration,
    /// How long the current version has been serving.
    pub version_uptime: Duration,
    pub connections: u64,
    pub upgrades: u64,
    pub last_upgrade: Option<LastUpgrade>,
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{:.1}s", d.as_secs_f64()),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "app          {} ({})", self.app, self.wasm.display())?;
        writeln!(f, "listening    {}", self.listen.join(", "))?;
        writeln!(
            f,
            "uptime       {} (this version {})",
            human(self.uptime),
            human(self.version_uptime)
        )?;
        writeln!(f, "connections  {}", self.connections)?;
        write!(f, "upgrades     {}", self.upgrades)?;
        if let Some(last) = &self.last_upgrade {
            let ago = now_unix_ms().saturating_sub(last.at_unix_ms);
            write!(f, "\nlast upgrade {} ago: ", human(Duration::from_millis(ago)))?;
            match &last.outcome {
                Ok(report) => write!(
                    f,
                    "{} -> {}, pause {:.3} ms, {} bytes of state",
                    report.from,
                    report.to,
                    report.pause.as_secs_f64() * 1e3,
                    report.state_bytes
                )?,
                Err(reason) => write!(f, "failed: {reason}")?,
            }
        }
        Ok(())
    }
}

pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The part of the status that changes, behind one lock; connection count is an atomic because
/// it changes on every accept and close.
#[derive(Debug)]
pub(crate) struct Shared {
    started: Instant,
    listen: Vec<String>,
    pub(crate) connections: AtomicU64,
    current: Mutex<Current>,
}

#[derive(Debug)]
struct Current {
    info: AppInfo,
    app: AppVersion,
    wasm: PathBuf,
    since: Instant,
    upgrades: u64,
    last_upgrade: Option<LastUpgrade>,
}

impl Shared {
    pub(crate) fn new(info: AppInfo, wasm: PathBuf, listen: Vec<String>) -> Self {
        let now = Instant::now();
        let app = AppVersion::from(&info);
        Self {
            started: now,
            listen,
            connections: AtomicU64::new(0),
            current: Mutex::new(Current {
                info,
                app,
                wasm,
                since: now,
                upgrades: 0,
                last_upgrade: None,
            }),
        }
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Current> {
        // A panic while holding this lock leaves plain data behind; reading it is still sound.
        self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The running version's `describe`, for checking an upgrade before the pause.
    pub(crate) fn running_info(&self) -> AppInfo {
        self.current().info.clone()
    }

    pub(crate) fn record_commit(&self, report: &UpgradeReport, info: AppInfo) {
        self.current().info = info;
        self.record_upgrade(Ok(report));
    }

    pub(crate) fn record_upgrade(&self, outcome: Result<&UpgradeReport, String>) {
        let mut current = self.current();
        if let Ok(report) = outcome {
            current.app = report.to.clone();
            current.wasm = report.wasm.clone();
            current.since = Instant::now();
            current.upgrades += 1;
        }
        current.last_upgrade =
            Some(LastUpgrade { at_unix_ms: now_unix_ms(), outcome: outcome.cloned() });
    }

    pub(crate) fn status(&self) -> Status {
        let current = self.current();
        Status {
            app: current.app.clone(),
            wasm: current.wasm.clone(),
            listen: self.listen.clone(),
            uptime: self.started.elapsed(),
            version_uptime: current.since.elapsed(),
            connections: self.connections.load(Ordering::Relaxed),
            upgrades: current.upgrades,
            last_upgrade: current.last_upgrade.clone(),
        }
    }
}

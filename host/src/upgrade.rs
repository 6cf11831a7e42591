//! The upgrade transaction (DESIGN.md, "The upgrade, step by step").
//!
//! [`prepare`] runs on the requester's thread while the old version keeps serving: compile, link,
//! instantiate, `init`, `describe`, and the check that the new version reads every state section
//! the old one writes. The dispatcher then pauses at an event boundary, exports, imports, and
//! commits — or drops the new instance and carries on with the old one.

use crate::bindings::AppInfo;
use crate::instance::{CallError, Instance};
use crate::runtime::Runtime;
use crate::transformer::Pipeline;
use crate::version::{LoadError, Version};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An app's name and release, as `describe` gives them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppVersion {
    pub name: String,
    pub version: String,
}

impl From<&AppInfo> for AppVersion {
    fn from(info: &AppInfo) -> Self {
        Self { name: info.name.clone(), version: info.version.clone() }
    }
}

impl fmt::Display for AppVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}

/// One state section that crossed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionReport {
    pub name: String,
    pub version: u32,
    pub bytes: u64,
}

/// How to upgrade, besides to what.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeOptions {
    /// Transformers the state goes through, in order (`--transform`).
    pub transforms: Vec<PathBuf>,
    /// Take the state from the host's last checkpoint and journal instead of an export.
    pub from_checkpoint: bool,
}

/// Where the state a new version imported came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateSource {
    /// Exported by the running version during the pause: the normal case.
    Export,
    /// `--from-checkpoint`: the host's last checkpoint, then every event journaled since,
    /// replayed into the new version. Used when the running version cannot export.
    Checkpoint {
        /// When the checkpoint was taken; `None` if there was none (the app's start).
        at_unix_ms: Option<u64>,
        events_replayed: u64,
        /// False if the journal had overflowed: changes after the checkpoint are lost.
        complete: bool,
    },
}

/// What a committed upgrade did and what it cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeReport {
    pub from: AppVersion,
    pub to: AppVersion,
    pub wasm: PathBuf,
    /// Compile, link, instantiate and `init`, while the old version kept serving.
    pub prepare: Duration,
    /// Of `prepare`, the part spent compiling.
    pub compile: Duration,
    /// Time no event was dispatched: export, import, commit.
    pub pause: Duration,
    pub export: Duration,
    /// Of `pause`, the part spent in transformers.
    pub transform: Duration,
    /// The transformers the state went through, by name.
    pub transformers: Vec<String>,
    pub import: Duration,
    pub sections: Vec<SectionReport>,
    /// Bytes of state moved from the old instance to the new one.
    pub state_bytes: u64,
    /// Connections open across the swap (none is closed by it).
    pub connections: u64,
    pub source: StateSource,
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

impl fmt::Display for UpgradeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "upgraded {} -> {}", self.from, self.to)?;
        writeln!(
            f,
            "  pause        {} (export {}, transform {}, import {})",
            ms(self.pause),
            ms(self.export),
            ms(self.transform),
            ms(self.import)
        )?;
        if !self.transformers.is_empty() {
            writeln!(f, "  transformed  by {}", self.transformers.join(" -> "))?;
        }
        let sections: Vec<String> = self
            .sections
            .iter()
            .map(|s| format!("{} v{} {} B", s.name, s.version, s.bytes))
            .collect();
        writeln!(f, "  state moved  {} bytes ({})", self.state_bytes, sections.join(", "))?;
        writeln!(
            f,
            "  prepared in  {} before the pause (compile {})",
            ms(self.prepare),
            ms(self.compile)
        )?;
        write!(f, "  connections  {} kept open", self.connections)?;
        if let StateSource::Checkpoint { at_unix_ms, events_replayed, complete } = &self.source {
            let at = match at_unix_ms {
                Some(at) => format!(
                    "the checkpoint of {:.1}s ago",
                    crate::status::now_unix_ms().saturating_sub(*at) as f64 / 1e3
                ),
                None => "the app's start (no checkpoint was taken)".to_string(),
            };
            write!(f, "\n  state from   {at}, then {events_replayed} events replayed")?;
            if !complete {
                write!(
                    f,
                    "\n  WARNING      the journal had overflowed: changes after the checkpoint are lost"
                )?;
            }
        }
        Ok(())
    }
}

/// Why an upgrade did not happen. In every case the version that was serving still serves.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("an upgrade is already in progress; try again when it has finished")]
    InProgress,
    #[error("refused before any pause: {0}")]
    Load(#[from] LoadError),
    #[error("refused before any pause: {wasm} failed to start: {reason}")]
    Start { wasm: PathBuf, reason: String },
    #[error("refused before any pause: {wasm} is app `{new}`, but the running app is `{running}`")]
    WrongApp { wasm: PathBuf, running: AppVersion, new: AppVersion },
    #[error(
        "refused before any pause: {running} writes state section `{section}` version {version}, \
         which {new} does not read (it reads versions {accepts:?})"
    )]
    Incompatible {
        running: AppVersion,
        new: AppVersion,
        section: String,
        version: u32,
        accepts: Vec<u32>,
    },
    #[error(
        "rolled back, {running} keeps serving: it failed to export its state: {reason}{}",
        if *rebuilt { " (it was rebuilt from its checkpoint and journal; if export keeps failing, \
        `tasuki upgrade --from-checkpoint` moves the last checkpoint and replays the events since)" } else { "" }
    )]
    Export { running: AppVersion, reason: String, rebuilt: bool },
    #[error(
        "rolled back, {running} keeps serving: its state is {bytes} bytes, over the limit of {limit} (--max-state)"
    )]
    TooLarge { running: AppVersion, bytes: u64, limit: u64 },
    #[error("refused before any pause: {0}")]
    Chain(#[from] crate::transformer::ChainError),
    #[error("rolled back, {running} keeps serving: {reason}")]
    Transform { running: AppVersion, reason: String },
    #[error("rolled back, {running} keeps serving: {new} failed to import the state: {reason}")]
    Import { running: AppVersion, new: AppVersion, reason: String },
    #[error("the host is shutting down")]
    HostStopped,
}

/// A new version, instantiated and initialised, waiting for the pause.
#[derive(Debug)]
pub struct Prepared {
    pub(crate) version: Arc<Version>,
    pub(crate) instance: Instance,
    pub(crate) info: AppInfo,
    pub(crate) prepare_time: Duration,
    pub(crate) from_checkpoint: bool,
    pub(crate) pipeline: Pipeline,
}

/// Steps 2 of the upgrade: everything that can happen before the pause.
pub(crate) fn prepare(
    runtime: &Runtime,
    wasm: &Path,
    args: &[String],
    running: &AppInfo,
    options: &UpgradeOptions,
) -> Result<Prepared, UpgradeError> {
    let started = Instant::now();
    let version = Version::load(runtime, wasm)?;
    let pipeline = Pipeline::load(runtime, &options.transforms)?;
    let (instance, info) = start(&version, args)
        .map_err(|reason| UpgradeError::Start { wasm: wasm.into(), reason: reason.to_string() })?;
    if pipeline.is_empty() {
        check_compatible(wasm, running, &info)?;
    } else {
        if running.name != info.name {
            return Err(UpgradeError::WrongApp {
                wasm: wasm.into(),
                running: running.into(),
                new: (&info).into(),
            });
        }
        let written: Vec<(String, u32)> =
            running.sections.iter().map(|s| (s.name.clone(), s.version)).collect();
        pipeline.check(&written, &info)?;
    }
    Ok(Prepared {
        version,
        instance,
        info,
        prepare_time: started.elapsed(),
        from_checkpoint: options.from_checkpoint,
        pipeline,
    })
}

/// Instantiates a version and runs `init` and `describe`, for tools that check a migration
/// against an app (`tasuki migrate --check`).
pub fn start_instance(
    version: &Version,
    args: &[String],
) -> Result<(Instance, AppInfo), CallError> {
    start(version, args)
}

/// Instantiates a version and runs `init` and `describe`: a cold start, or an upgrade's prepare.
pub(crate) fn start(version: &Version, args: &[String]) -> Result<(Instance, AppInfo), CallError> {
    let mut instance = Instance::new(version)?;
    instance.init(args).map_err(|e| match e {
        CallError::Refused(reason) => CallError::Refused(format!("init refused: {reason}")),
        trap => trap,
    })?;
    let info = instance.describe()?;
    Ok((instance, info))
}

/// The new version must be the same app and read every section the running one writes.
pub(crate) fn check_compatible(
    wasm: &Path,
    running: &AppInfo,
    new: &AppInfo,
) -> Result<(), UpgradeError> {
    if running.name != new.name {
        return Err(UpgradeError::WrongApp {
            wasm: wasm.into(),
            running: running.into(),
            new: new.into(),
        });
    }
    for written in &running.sections {
        let accepts = new
            .sections
            .iter()
            .find(|s| s.name == written.name)
            .map(|s| s.accepts.clone())
            .unwrap_or_default();
        if !accepts.contains(&written.version) {
            return Err(UpgradeError::Incompatible {
                running: running.into(),
                new: new.into(),
                section: written.name.clone(),
                version: written.version,
                accepts,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::SectionSpec;

    fn app(name: &str, version: &str, sections: &[(&str, u32, &[u32])]) -> AppInfo {
        AppInfo {
            name: name.into(),
            version: version.into(),
            sections: sections
                .iter()
                .map(|(n, v, a)| SectionSpec {
                    name: (*n).into(),
                    version: *v,
                    accepts: a.to_vec(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_release_that_reads_the_old_sections_is_compatible() {
        let v1 = app("kv", "1.0.0", &[("kv", 1, &[1]), ("tasuki.conns", 1, &[1])]);
        let v2 = app("kv", "2.0.0", &[("kv", 2, &[2, 1]), ("tasuki.conns", 1, &[1])]);
        assert!(check_compatible(Path::new("v2.wasm"), &v1, &v2).is_ok());
        let err = check_compatible(Path::new("v1.wasm"), &v2, &v1).unwrap_err().to_string();
        assert!(err.contains("section `kv` version 2"), "{err}");
        assert!(err.contains("kv 1.0.0 does not read"), "{err}");
    }

    #[test]
    fn another_app_is_refused_by_name() {
        let kv = app("kv", "1.0.0", &[]);
        let echo = app("echo", "1.0.0", &[]);
        let err = check_compatible(Path::new("echo.wasm"), &kv, &echo).unwrap_err().to_string();
        assert!(err.contains("is app `echo 1.0.0`, but the running app is `kv 1.0.0`"), "{err}");
    }
}

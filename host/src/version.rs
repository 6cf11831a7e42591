//! Once per app version: read, validate, compile and link a component. Everything here happens
//! before an upgrade pauses anything.

use crate::bindings::AppInfo;
use crate::bindings::server_exports::{app, canary, listening, memory, precopy, state, writable};
use crate::runtime::Runtime;
use crate::store::InstanceState;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::component::{Component, InstancePre};

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

/// Why a component could not be loaded. Nothing is running yet when any of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a WebAssembly file (it does not start with the `\\0asm` magic)")]
    NotWasm { path: PathBuf },
    #[error(
        "{path} is a core WebAssembly module, not a component: build it for wasm32-wasip2 \
         (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule { path: PathBuf },
    #[error("{path} does not compile: {reason}")]
    Compile { path: PathBuf, reason: String },
    #[error("{path} does not fit the world it is loaded for: {reason}")]
    WrongWorld { path: PathBuf, reason: String },
}

/// Where a version's exports are, found once when it is loaded.
#[derive(Clone)]
pub(crate) struct Exports {
    pub(crate) app: app::GuestIndices,
    pub(crate) state: state::GuestIndices,
    /// `None` for a server built before the `precopy` interface existed: its state crosses in
    /// one `export-state` inside the pause.
    pub(crate) precopy: Option<precopy::GuestIndices>,
    /// `None` for a server built before the `memory` interface existed (or without the SDK):
    /// the host then cannot tell its garbage from its state, and compacts it only on request.
    pub(crate) memory: Option<memory::GuestIndices>,
    /// `None` for a server built before the `canary` interface existed: it declares no
    /// expected difference.
    pub(crate) canary: Option<canary::GuestIndices>,
    /// `None` for a server built before the `writable` interface existed: it never asks to be
    /// told when a connection can take more, and gets only the host's output limits.
    pub(crate) writable: Option<writable::GuestIndices>,
    /// `None` for a server built before run-time listeners: it never opens one.
    pub(crate) listening: Option<listening::GuestIndices>,
}

/// A compiled, linked app version, ready to be instantiated any number of times.
#[derive(Clone)]
pub struct Version {
    pub(crate) pre: InstancePre<InstanceState>,
    pub(crate) exports: Exports,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// Time spent reading and compiling.
    pub compile_time: Duration,
    pub(crate) runtime: Runtime,
    /// The component's sha256: the same bytes, wherever loaded from, are the same release
    /// (a catch-up of the same release can replay the journal rather than export).
    pub(crate) digest: [u8; 32],
}

impl std::fmt::Debug for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Version").field("path", &self.path).finish_non_exhaustive()
    }
}

/// What a server must export; named in the refusal when missing.
const REQUIRED_EXPORTS: [&str; 2] = ["tasuki:server/app@0.1.0", "tasuki:server/state@0.1.0"];

const WASM_MAGIC: &[u8; 4] = b"\0asm";
/// The layer/version word of a core module (version 1, layer 0).
const CORE_MODULE_VERSION: [u8; 4] = [1, 0, 0, 0];

impl Version {
    /// Whether `other` is the same component, byte for byte.
    pub(crate) fn same_release(&self, other: &Version) -> bool {
        self.digest == other.digest
    }

    /// Reads and compiles the component at `path` and links it against the host's imports.
    pub fn load(runtime: &Runtime, path: &Path) -> Result<Arc<Self>, LoadError> {
        let started = Instant::now();
        let bytes =
            std::fs::read(path).map_err(|source| LoadError::Read { path: path.into(), source })?;
        Self::from_bytes(runtime, path, &bytes, started)
    }

    fn from_bytes(
        runtime: &Runtime,
        path: &Path,
        bytes: &[u8],
        started: Instant,
    ) -> Result<Arc<Self>, LoadError> {
        let component = check_component(runtime, path, bytes, &REQUIRED_EXPORTS)?;
        let compile_time = started.elapsed();
        let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld {
            path: path.into(),
            reason: format!("{e:#}"),
        };
        let instance_pre = runtime.linker.instantiate_pre(&component).map_err(wrong_world)?;
        let exports = Exports {
            app: app::GuestIndices::new(&instance_pre).map_err(wrong_world)?,
            state: state::GuestIndices::new(&instance_pre).map_err(wrong_world)?,
            precopy: precopy::GuestIndices::new(&instance_pre).ok(),
            memory: memory::GuestIndices::new(&instance_pre).ok(),
            canary: canary::GuestIndices::new(&instance_pre).ok(),
            writable: writable::GuestIndices::new(&instance_pre).ok(),
            listening: listening::GuestIndices::new(&instance_pre).ok(),
        };
        Ok(Arc::new(Self {
            pre: instance_pre,
            exports,
            path: path.into(),
            compile_time,
            runtime: runtime.clone(),
            digest: sha2::Sha256::digest(bytes).into(),
        }))
    }

    /// True if the version can move its state ahead of the pause (it exports `precopy`).
    pub fn precopies(&self) -> bool {
        self.exports.precopy.is_some()
    }
}

/// Validates and compiles `bytes` as a component exporting every one of `required`, with a
/// refusal that says what is wrong: not wasm, a core module, not compiling, a missing export.
pub(crate) fn check_component(
    runtime: &Runtime,
    path: &Path,
    bytes: &[u8],
    required: &[&str],
) -> Result<Component, LoadError> {
    if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
        return Err(LoadError::NotWasm { path: path.into() });
    }
    if bytes[4..8] == CORE_MODULE_VERSION {
        return Err(LoadError::CoreModule { path: path.into() });
    }
    let component = runtime
        .compile(bytes)
        .map_err(|e| LoadError::Compile { path: path.into(), reason: format!("{e:#}") })?;
    let exports: Vec<String> = component
        .component_type()
        .exports(&runtime.engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let missing: Vec<&str> =
        required.iter().copied().filter(|r| !exports.iter().any(|e| e == r)).collect();
    if !missing.is_empty() {
        let exported = if exports.is_empty() { "nothing".to_string() } else { exports.join(", ") };
        return Err(LoadError::WrongWorld {
            path: path.into(),
            reason: format!("it does not export {} (it exports {exported})", missing.join(", ")),
        });
    }
    Ok(component)
}

//! State transformers: sandboxed components that rewrite named, versioned state sections on the
//! way from one version to the next (DESIGN.md, upgrade step 5).
//!
//! A transformer is a pure function. It imports nothing of tasuki's, and the WASI it is linked
//! with (Rust's std needs some) grants nothing: no files, no environment, no network, a clock
//! stopped at the epoch, fixed bytes for randomness. Each run gets a fresh instance with the
//! host's memory cap and deadline. It is handed only the sections it claims, at the versions it
//! reads; every other section goes around it untouched.

use crate::bindings::transformer::exports::tasuki::server::{transform, transform_chunks};
use crate::bindings::{AppInfo, Chunk, Section, Snapshot, TransformInfo};
use crate::instance::Trap;
use crate::limits;
use crate::runtime::Runtime;
use crate::store::{Limiter, TransformState};
use crate::version::{LoadError, check_component};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::Store;
use wasmtime::component::{InstancePre, ResourceTable};
use wasmtime_wasi::{Deterministic, HostMonotonicClock, HostWallClock, WasiCtx};

/// A clock that never moves: a transformer's output may not depend on when it runs.
struct Stopped;

impl HostWallClock for Stopped {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for Stopped {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Why a transformer did not produce the next snapshot.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("transformer {name} refused: {reason}")]
    Refused { name: String, reason: String },
    #[error("transformer {name} trapped: {trap}")]
    Trap { name: String, trap: Trap },
    #[error("transformer {name} returned {got}, but it declares {expected}")]
    Broken { name: String, got: String, expected: String },
}

/// The section that marks a snapshot as the end of a pre-copy (its collections are references
/// to the chunks before it). Every transformer is handed it with the sections it claims.
pub const PRECOPY_SECTION: &str = "tasuki.precopy";

/// How the SDK's own sections' names begin (`tasuki.conns`, `tasuki.sessions`, …), as against
/// an app's sections (named after the app).
pub const SDK_SECTION_PREFIX: &str = "tasuki.";

/// The guest SDK's send windows (back-pressure). A release built before back-pressure reads
/// no such section and never waits for a window: it may still be upgraded to, and the host
/// drops the section on the way ([`crate::instance::Instance::import_state`]), which loses
/// nothing.
pub const WINDOWS_SECTION: &str = "tasuki.windows";

/// The guest SDK's streams under way, written only while there are some. A release built
/// before back-pressure cannot carry them on: it may be upgraded to, but only at a moment when
/// no stream is under way (otherwise the import is refused and the upgrade rolls back).
pub const STREAMS_SECTION: &str = "tasuki.streams";

/// The guest SDK's listeners opened at run time and the connections accepted on them, written
/// only while there are some. A release built before run-time listeners cannot accept on them
/// or close them: it may be upgraded to, but only while the app has none.
pub const LISTENERS_SECTION: &str = "tasuki.listeners";

/// True if a target that does not read `section` at all (a release built before it existed)
/// can still take the state: see [`WINDOWS_SECTION`], [`STREAMS_SECTION`] and
/// [`LISTENERS_SECTION`].
pub(crate) fn optional_section(section: &str) -> bool {
    section == WINDOWS_SECTION || section == STREAMS_SECTION || section == LISTENERS_SECTION
}

/// A compiled transformer and what it declares.
pub struct Transformer {
    pre: InstancePre<TransformState>,
    transform: transform::GuestIndices,
    /// `None` for a transformer built before pre-copy: an upgrade through it moves the whole
    /// state in the pause.
    chunks: Option<transform_chunks::GuestIndices>,
    runtime: Runtime,
    pub path: PathBuf,
    pub info: TransformInfo,
}

impl std::fmt::Debug for Transformer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transformer")
            .field("path", &self.path)
            .field("name", &self.info.name)
            .finish()
    }
}

impl Transformer {
    /// Reads, compiles and links the transformer at `path`, and asks it what it does.
    pub fn load(runtime: &Runtime, path: &Path) -> Result<Arc<Self>, LoadError> {
        let bytes =
            std::fs::read(path).map_err(|source| LoadError::Read { path: path.into(), source })?;
        let component = check_component(runtime, path, &bytes, &["tasuki:server/transform@0.1.0"])?;
        let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld {
            path: path.into(),
            reason: format!("{e:#}"),
        };
        let instance_pre =
            runtime.transform_linker.instantiate_pre(&component).map_err(wrong_world)?;
        let transform = transform::GuestIndices::new(&instance_pre).map_err(wrong_world)?;
        let chunks = transform_chunks::GuestIndices::new(&instance_pre).ok();
        let mut this = Arc::new(Self {
            pre: instance_pre,
            transform,
            chunks,
            runtime: runtime.clone(),
            path: path.into(),
            info: TransformInfo { name: String::new(), steps: Vec::new() },
        });
        let info = {
            let mut session = this.session().map_err(|e| LoadError::WrongWorld {
                path: path.into(),
                reason: format!("it does not start: {}", Trap::from_error(&e).message),
            })?;
            session.transform.call_describe(&mut session.store).map_err(|e| {
                LoadError::WrongWorld {
                    path: path.into(),
                    reason: format!("describe: {}", Trap::from_error(&e).message),
                }
            })?
        };
        Arc::get_mut(&mut this).expect("the describe session is gone").info = info;
        Ok(this)
    }

    /// True if the transformer rewrites pre-copied chunks (it exports `transform-chunks`).
    pub fn precopies(&self) -> bool {
        self.chunks.is_some()
    }

    /// A fresh instance, for one run or one upgrade's pre-copy.
    fn session(self: &Arc<Self>) -> wasmtime::Result<Session> {
        let limits = &self.runtime.limits;
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .inherit_stderr()
            .wall_clock(Stopped)
            .monotonic_clock(Stopped)
            .secure_random(Deterministic::new(vec![0x5a; 32]))
            .insecure_random(Deterministic::new(vec![0xa5; 32]))
            .insecure_random_seed(0)
            .build();
        let state = TransformState {
            wasi,
            table: ResourceTable::new(),
            limits: Limiter::new(limits.memory),
        };
        let mut store = Store::new(&self.runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_hostcall_fuel(limits.hostcall_bytes());
        store.set_epoch_deadline(limits::ticks(limits.upgrade_deadline));
        let instance = self.pre.instantiate(&mut store)?;
        let transform = self.transform.load(&mut store, &instance)?;
        let chunks = match &self.chunks {
            Some(indices) => Some(indices.load(&mut store, &instance)?),
            None => None,
        };
        Ok(Session { owner: Arc::clone(self), store, transform, chunks })
    }

    /// The version this transformer reads section `name` at, if it claims it.
    fn reads(&self, name: &str) -> Option<u32> {
        self.info.steps.iter().find(|s| s.name == name).map(|s| s.from_version)
    }

    /// Runs the transformer over the sections it claims and returns the whole next snapshot,
    /// with every other section exactly as it was.
    pub fn apply(self: &Arc<Self>, snapshot: Snapshot) -> Result<Snapshot, TransformError> {
        self.start()?.apply(snapshot)
    }

    fn start(self: &Arc<Self>) -> Result<Session, TransformError> {
        self.session().map_err(|e| TransformError::Trap {
            name: self.info.name.clone(),
            trap: Trap::from_error(&e),
        })
    }
}

/// One instance of a transformer: one run, or every batch of one upgrade's pre-copy and then
/// its final snapshot.
struct Session {
    owner: Arc<Transformer>,
    store: Store<TransformState>,
    transform: transform::Guest,
    chunks: Option<transform_chunks::Guest>,
}

impl Session {
    /// Each call gets the whole `--upgrade-deadline`: one session serves many calls (every
    /// pre-copy batch, then the final snapshot).
    fn arm_deadline(&mut self) {
        self.store.set_epoch_deadline(limits::ticks(self.owner.runtime.limits.upgrade_deadline));
    }

    fn trap(&self, e: &wasmtime::Error) -> TransformError {
        TransformError::Trap { name: self.owner.info.name.clone(), trap: Trap::from_error(e) }
    }

    /// Rewrites the chunks of the sections the transformer claims; the others pass around it.
    fn chunks(&mut self, chunks: Vec<Chunk>) -> Result<Vec<Chunk>, TransformError> {
        let name = self.owner.info.name.clone();
        let owner = Arc::clone(&self.owner);
        let claimed = |c: &Chunk| owner.reads(&c.section) == Some(c.version);
        if !chunks.iter().any(claimed) {
            return Ok(chunks);
        }
        let Some(guest) = self.chunks.clone() else {
            return Err(TransformError::Refused {
                name,
                reason: "it predates pre-copy (no `transform-chunks` export)".into(),
            });
        };
        self.arm_deadline();
        let (mine, others): (Vec<Chunk>, Vec<Chunk>) = chunks.into_iter().partition(claimed);
        let out = guest
            .call_transform_chunks(&mut self.store, &mine)
            .map_err(|e| self.trap(&e))?
            .map_err(|reason| TransformError::Refused { name: name.clone(), reason })?;
        for chunk in &out {
            let step = self.owner.info.steps.iter().find(|s| s.name == chunk.section);
            if step.is_none_or(|s| s.to_version != chunk.version) {
                return Err(TransformError::Broken {
                    name,
                    got: format!(
                        "a chunk of section `{}` version {}",
                        chunk.section, chunk.version
                    ),
                    expected: format!("{:?}", self.owner.info.steps),
                });
            }
        }
        Ok(out.into_iter().chain(others).collect())
    }

    fn apply(&mut self, snapshot: Snapshot) -> Result<Snapshot, TransformError> {
        let name = self.owner.info.name.clone();
        let Snapshot { app, app_version, sections } = snapshot;
        let order: Vec<String> = sections.iter().map(|s| s.name.clone()).collect();
        let (claimed, others): (Vec<Section>, Vec<Section>) =
            sections.into_iter().partition(|s| self.owner.reads(&s.name) == Some(s.version));
        let expected: BTreeMap<String, u32> = claimed
            .iter()
            .filter_map(|s| {
                let step = self.owner.info.steps.iter().find(|st| st.name == s.name)?;
                Some((s.name.clone(), step.to_version))
            })
            .collect();
        // The end-of-pre-copy marker goes in too: it tells the transformer that the claimed
        // sections' collections are references to the chunks it rewrote.
        let mut input = claimed;
        input.extend(others.iter().filter(|s| s.name == PRECOPY_SECTION).cloned());
        let input =
            Snapshot { app: app.clone(), app_version: app_version.clone(), sections: input };
        self.arm_deadline();
        let output = self
            .transform
            .call_transform(&mut self.store, &input)
            .map_err(|e| self.trap(&e))?
            .map_err(|reason| TransformError::Refused { name: name.clone(), reason })?;
        let rewritten: Vec<Section> =
            output.sections.into_iter().filter(|s| s.name != PRECOPY_SECTION).collect();
        let got: BTreeMap<String, u32> =
            rewritten.iter().map(|s| (s.name.clone(), s.version)).collect();
        if got != expected || got.len() != rewritten.len() {
            return Err(TransformError::Broken {
                name,
                got: format!("sections {got:?}"),
                expected: format!("{expected:?}"),
            });
        }
        // Keep the snapshot's section order: rewritten sections where they were.
        let mut by_name: BTreeMap<String, Section> =
            rewritten.into_iter().chain(others).map(|s| (s.name.clone(), s)).collect();
        let sections = order.iter().filter_map(|n| by_name.remove(n)).collect();
        Ok(Snapshot { app, app_version, sections })
    }
}

/// One upgrade's pre-copy through a chain: an instance per stage, kept from the first batch to
/// the final snapshot.
pub(crate) struct ChainSession {
    stages: Vec<Session>,
}

impl std::fmt::Debug for ChainSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainSession").field("stages", &self.stages.len()).finish()
    }
}

impl ChainSession {
    /// Pipes a batch of chunks through every stage.
    pub(crate) fn chunks(&mut self, mut chunks: Vec<Chunk>) -> Result<Vec<Chunk>, TransformError> {
        for stage in &mut self.stages {
            chunks = stage.chunks(chunks)?;
        }
        Ok(chunks)
    }

    /// Pipes the final snapshot through every stage.
    pub(crate) fn snapshot(&mut self, mut snapshot: Snapshot) -> Result<Snapshot, TransformError> {
        for stage in &mut self.stages {
            snapshot = stage.apply(snapshot)?;
        }
        Ok(snapshot)
    }
}

/// A chain of transformers, in the order given.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    pub stages: Vec<Arc<Transformer>>,
}

/// What a chain of transformers does not get right, found before anything pauses.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(
        "transformer {name} ({path}) reads section `{section}` version {reads}, but at that point \
         of the chain the state has {found}"
    )]
    Unused { name: String, path: PathBuf, section: String, reads: u32, found: String },
    #[error(
        "after the transformers, section `{section}` is version {version}, which {app} does not \
         read (it reads versions {accepts:?}){hint}"
    )]
    Unreadable { section: String, version: u32, app: String, accepts: Vec<u32>, hint: String },
}

impl Pipeline {
    pub fn load(runtime: &Runtime, paths: &[PathBuf]) -> Result<Self, LoadError> {
        let stages =
            paths.iter().map(|p| Transformer::load(runtime, p)).collect::<Result<_, _>>()?;
        Ok(Self { stages })
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Follows section versions through every stage, from `sections` (name, version) as the
    /// source writes them, and checks that `target` reads what comes out.
    pub fn check(&self, sections: &[(String, u32)], target: &AppInfo) -> Result<(), ChainError> {
        let state = self.follow(sections)?;
        // The end-of-pre-copy marker is the SDK's, read by every release that pre-copies.
        for (section, version) in state.iter().filter(|(name, _)| *name != PRECOPY_SECTION) {
            let accepts = target
                .sections
                .iter()
                .find(|s| &s.name == section)
                .map(|s| s.accepts.clone())
                .unwrap_or_default();
            // A release built before the SDK's back-pressure sections reads none of them.
            let optional = accepts.is_empty() && optional_section(section);
            if !accepts.contains(version) && !optional {
                let hint = match accepts.iter().max() {
                    Some(want) if want > version => {
                        format!("; add a transformer from {version} to {want} (--transform)")
                    }
                    _ => String::new(),
                };
                return Err(ChainError::Unreadable {
                    section: section.clone(),
                    version: *version,
                    app: format!("{} {}", target.name, target.version),
                    accepts,
                    hint,
                });
            }
        }
        Ok(())
    }

    /// The sections' versions after every stage; an error if a stage claims a section that is
    /// not there, at the version it reads, at its point of the chain. The SDK's own sections
    /// (`tasuki.…`) are written only while they hold something — no sessions in a snapshot file,
    /// none while no client is connected — so a stage for one that is absent has nothing to
    /// rewrite and passes.
    pub fn follow(&self, sections: &[(String, u32)]) -> Result<BTreeMap<String, u32>, ChainError> {
        let mut state: BTreeMap<String, u32> = sections.iter().cloned().collect();
        for stage in &self.stages {
            for step in &stage.info.steps {
                match state.get(&step.name) {
                    Some(v) if *v == step.from_version => {
                        state.insert(step.name.clone(), step.to_version);
                    }
                    None if step.name.starts_with(SDK_SECTION_PREFIX) => {}
                    found => {
                        return Err(ChainError::Unused {
                            name: stage.info.name.clone(),
                            path: stage.path.clone(),
                            section: step.name.clone(),
                            reads: step.from_version,
                            found: match found {
                                Some(v) => format!("version {v}"),
                                None => "no such section".into(),
                            },
                        });
                    }
                }
            }
        }
        Ok(state)
    }

    /// Pipes `snapshot` through every stage.
    pub fn apply(&self, mut snapshot: Snapshot) -> Result<Snapshot, TransformError> {
        for stage in &self.stages {
            snapshot = stage.apply(snapshot)?;
        }
        Ok(snapshot)
    }

    /// Pipes a state kept as pre-copied `chunks` plus the `snapshot` of the rest through every
    /// stage (one instance per stage sees both).
    pub fn apply_chunked(
        &self,
        chunks: Vec<Chunk>,
        snapshot: Snapshot,
    ) -> Result<(Vec<Chunk>, Snapshot), TransformError> {
        if chunks.is_empty() {
            return Ok((chunks, self.apply(snapshot)?));
        }
        let mut session = self.session()?;
        let chunks = session.chunks(chunks)?;
        Ok((chunks, session.snapshot(snapshot)?))
    }

    /// True if every stage rewrites chunks.
    pub fn precopies(&self) -> bool {
        self.stages.iter().all(|t| t.precopies())
    }

    /// One instance per stage, for an upgrade's pre-copy.
    pub(crate) fn session(&self) -> Result<ChainSession, TransformError> {
        let stages = self.stages.iter().map(|t| t.start()).collect::<Result<_, _>>()?;
        Ok(ChainSession { stages })
    }
}

//! The deterministic simulator: a trace of client events run against app versions with virtual
//! connections, a virtual clock and seeded randomness, on one thread — the same trace gives the
//! same bytes every run, on any machine.
//!
//! `UpgradeAt::Every` places an upgrade at every event boundary of a trace and checks every
//! expectation each time. It does not replay the trace from the start for each boundary: one
//! run of the old version exports its state at every boundary (export does not change the
//! instance), and each upgraded run starts from that snapshot and the clients' state at that
//! point, with a new version's instance, and plays only the rest of the trace.

pub mod record;
pub mod trace;

use crate::bindings::{AppInfo, ConnInfo, Snapshot};
use crate::instance::{CallError, Effect, Instance};
use crate::limits::Limits;
use crate::runtime::Runtime;
use crate::transformer::Pipeline;
use crate::upgrade::{self, AppVersion};
use crate::version::{LoadError, Version};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use trace::{Expected, Step, Trace, escape};

/// Where the virtual clock starts: 2026-01-01T00:00:00Z, so traces are independent of the day.
pub const SIM_EPOCH_MS: u64 = 1_767_225_600_000;

/// A version to upgrade to, and the transformers on the way.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub wasm: PathBuf,
    pub transforms: Vec<PathBuf>,
}

/// What to simulate.
#[derive(Debug, Clone, Default)]
pub struct SimConfig {
    /// The version the trace starts with.
    pub app: PathBuf,
    /// The version `UpgradeAt` upgrades to.
    pub upgrade: Option<Target>,
    /// Arguments for every version's `init`.
    pub args: Vec<String>,
    /// Seeds the guests' randomness.
    pub seed: u64,
    pub limits: Limits,
}

/// Where to place the upgrade to [`SimConfig::upgrade`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeAt {
    /// No upgrade (beyond `upgrade` steps in the trace).
    Never,
    /// Once per event boundary, each in a run of its own.
    Every,
    /// After this many events.
    Boundary(usize),
}

/// Why a run did not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The trace line.
    pub line: usize,
    pub message: String,
    pub expected: Option<String>,
    pub actual: Option<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)?;
        if let Some(expected) = &self.expected {
            write!(f, "\n      expected {expected}")?;
        }
        if let Some(actual) = &self.actual {
            write!(f, "\n      actual   \"{actual}\"")?;
        }
        Ok(())
    }
}

/// A connection as the simulated clients see it.
#[derive(Debug, Clone)]
struct Client {
    id: u64,
    /// Received and not yet expected.
    pending: Vec<u8>,
    closed_by_server: bool,
}

/// Everything outside the instance: clients, virtual time, host timers. Cloned at boundaries.
#[derive(Debug, Clone, Default)]
struct World {
    clients: BTreeMap<String, Client>,
    names: HashMap<u64, String>,
    next_id: u64,
    now_ms: u64,
    timers: BTreeMap<(u64, u64), u64>,
    armed: HashMap<u64, (u64, u64)>,
    timer_seq: u64,
    events: usize,
}

impl World {
    fn live(&self) -> Vec<ConnInfo> {
        let mut live: Vec<ConnInfo> = self
            .clients
            .iter()
            .filter(|(_, c)| !c.closed_by_server)
            .map(|(name, c)| conn_info(c.id, name))
            .collect();
        live.sort_by_key(|c| c.id);
        live
    }

    fn apply(&mut self, instance: &mut Instance) {
        for effect in instance.take_effects() {
            match effect {
                Effect::Send(id, data) => {
                    if let Some(client) = self.names.get(&id).and_then(|n| self.clients.get_mut(n))
                    {
                        client.pending.extend_from_slice(&data);
                    }
                }
                Effect::Close(id) => {
                    if let Some(client) = self.names.get(&id).and_then(|n| self.clients.get_mut(n))
                    {
                        client.closed_by_server = true;
                    }
                }
                Effect::SetTimer(id, after) => {
                    if let Some(old) = self.armed.remove(&id) {
                        self.timers.remove(&old);
                    }
                    self.timer_seq += 1;
                    let key = (self.now_ms + after.as_millis() as u64, self.timer_seq);
                    self.timers.insert(key, id);
                    self.armed.insert(id, key);
                }
                Effect::CancelTimer(id) => {
                    if let Some(old) = self.armed.remove(&id) {
                        self.timers.remove(&old);
                    }
                }
            }
        }
    }
}

fn conn_info(id: u64, name: &str) -> ConnInfo {
    ConnInfo { id, listener: "sim".into(), peer: format!("sim:{name}") }
}

/// Where in the trace a run stands: the next step, and for an `advance` under way, its target.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    step: usize,
    advance_to: Option<u64>,
}

/// The state at one boundary of the old version's run.
struct Checkpoint {
    cursor: Cursor,
    world: World,
    snapshot: Snapshot,
    /// The trace line of the event that ended here (0 for the start).
    after_line: usize,
}

/// The results of simulating one trace.
#[derive(Debug, Clone)]
pub struct Report {
    pub trace: String,
    pub from: AppVersion,
    pub to: Option<AppVersion>,
    /// Events in the run without an upgrade (client events and timers).
    pub events: usize,
    /// The run without an injected upgrade.
    pub baseline: Result<(), Failure>,
    /// For each boundary tried: the boundary, the line of the event it follows, and the result.
    pub runs: Vec<(usize, usize, Result<(), Failure>)>,
    pub elapsed: Duration,
}

impl Report {
    /// True when every run held every expectation.
    pub fn passed(&self) -> bool {
        self.baseline.is_ok() && self.runs.iter().all(|(_, _, r)| r.is_ok())
    }

    /// The smallest boundary whose run failed.
    pub fn first_failure(&self) -> Option<(usize, usize, &Failure)> {
        self.runs.iter().find_map(|(b, line, r)| r.as_ref().err().map(|f| (*b, *line, f)))
    }

    pub fn failed_boundaries(&self) -> Vec<usize> {
        self.runs.iter().filter(|(_, _, r)| r.is_err()).map(|(b, _, _)| *b).collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let to = self.to.as_ref().map_or_else(String::new, |t| format!(" -> {t}"));
        writeln!(f, "{}: {}{to}, {} events", self.trace, self.from, self.events)?;
        match &self.baseline {
            Ok(()) => writeln!(f, "  without an injected upgrade: ok")?,
            Err(failure) => writeln!(f, "  without an injected upgrade: FAILED at {failure}")?,
        }
        if !self.runs.is_empty() {
            let failed = self.failed_boundaries();
            let first = self.runs.first().map_or(0, |r| r.0);
            let last = self.runs.last().map_or(0, |r| r.0);
            writeln!(
                f,
                "  upgrade at boundaries {first}..={last}: {} ok, {} failed",
                self.runs.len() - failed.len(),
                failed.len()
            )?;
            if !failed.is_empty() {
                writeln!(f, "  failing boundaries: {failed:?}")?;
            }
            if let Some((boundary, line, failure)) = self.first_failure() {
                let after = if line == 0 {
                    "before the first event".into()
                } else {
                    format!("after line {line}")
                };
                writeln!(f, "  smallest failing boundary: {boundary} ({after})")?;
                writeln!(f, "    {failure}")?;
            }
        }
        write!(f, "  {:.3} s", self.elapsed.as_secs_f64())
    }
}

/// Why a simulation could not run at all (as opposed to an expectation failing).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{0} failed to start: {1}")]
    Start(String, String),
    #[error("--upgrade-at needs a version to upgrade to")]
    NoTarget,
}

/// Runs traces against loaded versions.
#[derive(Debug)]
pub struct Simulator {
    runtime: Runtime,
    app: Arc<Version>,
    target: Option<(Arc<Version>, Pipeline)>,
    args: Vec<String>,
    /// Versions named by `upgrade` steps, loaded once.
    loaded: std::sync::Mutex<HashMap<PathBuf, (Arc<Version>, Pipeline)>>,
}

impl Simulator {
    /// Compiles the app, the upgrade target and its transformers.
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        let runtime = Runtime::simulated(config.limits, config.seed)
            .map_err(|e| SimError::Engine(format!("{e:#}")))?;
        let app = Version::load(&runtime, &config.app)?;
        let target = match &config.upgrade {
            Some(t) => {
                Some((Version::load(&runtime, &t.wasm)?, Pipeline::load(&runtime, &t.transforms)?))
            }
            None => None,
        };
        Ok(Self { runtime, app, target, args: config.args, loaded: Default::default() })
    }

    fn freeze(&self, world: &World) {
        self.runtime.clock.freeze_at((SIM_EPOCH_MS + world.now_ms) * 1_000_000);
    }

    fn start(&self, version: &Version) -> Result<(Instance, AppInfo), SimError> {
        upgrade::start(version, &self.args)
            .map_err(|e| SimError::Start(version.path.display().to_string(), e.to_string()))
    }

    /// Runs `trace` with the upgrade placed as `at` says.
    pub fn run(&self, trace: &Trace, at: UpgradeAt) -> Result<Report, SimError> {
        let started = Instant::now();
        let (_, from) = self.start(&self.app)?;
        let to = self.target.as_ref().map(|_| ()).and_then(|()| {
            let (version, _) = self.target.as_ref()?;
            self.start(version).ok().map(|(_, info)| AppVersion::from(&info))
        });
        if at != UpgradeAt::Never && self.target.is_none() {
            return Err(SimError::NoTarget);
        }
        let record = at == UpgradeAt::Every;
        let inject = match at {
            UpgradeAt::Boundary(b) => Some(b),
            _ => None,
        };

        let (mut instance, _) = self.start(&self.app)?;
        let mut world = World { next_id: 1, ..World::default() };
        let mut checkpoints = Vec::new();
        let baseline = self.play(
            trace,
            &mut instance,
            &mut world,
            Cursor { step: 0, advance_to: None },
            inject,
            if record { Some(&mut checkpoints) } else { None },
        );
        let events = world.events;

        let mut runs = Vec::new();
        if let Some(b) = inject {
            // A single placed upgrade: the run above was it.
            runs.push((b, 0, baseline.clone()));
        }
        if record && baseline.is_ok() {
            for checkpoint in checkpoints {
                let boundary = checkpoint.world.events;
                let result =
                    self.resume(trace, checkpoint.cursor, checkpoint.world, checkpoint.snapshot);
                runs.push((boundary, checkpoint.after_line, result));
            }
        }
        let baseline = if inject.is_some() { Ok(()) } else { baseline };
        Ok(Report {
            trace: trace.name.clone(),
            from: AppVersion::from(&from),
            to,
            events,
            baseline,
            runs,
            elapsed: started.elapsed(),
        })
    }

    /// Upgrades from `snapshot` (taken at a boundary) and plays the rest of the trace.
    fn resume(
        &self,
        trace: &Trace,
        cursor: Cursor,
        mut world: World,
        snapshot: Snapshot,
    ) -> Result<(), Failure> {
        let line = trace.steps.get(cursor.step).map_or(0, |(l, _)| *l);
        let (version, pipeline) = self.target.as_ref().ok_or_else(|| Failure {
            line,
            message: "no version to upgrade to".into(),
            expected: None,
            actual: None,
        })?;
        let mut instance = self.upgrade_from(snapshot, version, pipeline, &mut world, line)?;
        self.play(trace, &mut instance, &mut world, cursor, None, None)
    }

    fn upgrade_from(
        &self,
        snapshot: Snapshot,
        version: &Version,
        pipeline: &Pipeline,
        world: &mut World,
        line: usize,
    ) -> Result<Instance, Failure> {
        let fail = |message: String| Failure { line, message, expected: None, actual: None };
        self.freeze(world);
        let snapshot = pipeline.apply(snapshot).map_err(|e| fail(format!("upgrade: {e}")))?;
        let (mut instance, _) = upgrade::start(version, &self.args)
            .map_err(|e| fail(format!("upgrade: new version failed to start: {e}")))?;
        instance.import_state(&snapshot, &world.live()).map_err(|e| {
            fail(format!("upgrade: the new version failed to import the state: {e}"))
        })?;
        world.apply(&mut instance);
        Ok(instance)
    }

    /// Replaces `instance` by `version`, as an upgrade does.
    fn upgrade_to(
        &self,
        instance: &mut Instance,
        version: &Version,
        pipeline: &Pipeline,
        world: &mut World,
        line: usize,
    ) -> Result<(), Failure> {
        self.freeze(world);
        let snapshot = instance.export_state().map_err(|e| Failure {
            line,
            message: format!("upgrade: the running version failed to export its state: {e}"),
            expected: None,
            actual: None,
        })?;
        *instance = self.upgrade_from(snapshot, version, pipeline, world, line)?;
        Ok(())
    }

    /// One event: freeze the clock, call, apply what the guest asked for.
    fn event(
        &self,
        instance: &mut Instance,
        world: &mut World,
        line: usize,
        call: impl FnOnce(&mut Instance) -> Result<(), CallError>,
    ) -> Result<(), Failure> {
        self.freeze(world);
        call(instance).map_err(|e| Failure {
            line,
            message: format!("the guest {e}"),
            expected: None,
            actual: None,
        })?;
        world.apply(instance);
        world.events += 1;
        Ok(())
    }

    /// Plays `trace` from `cursor`. After every event: the injected upgrade if its boundary has
    /// come, and a checkpoint if recording.
    fn play(
        &self,
        trace: &Trace,
        instance: &mut Instance,
        world: &mut World,
        mut cursor: Cursor,
        inject: Option<usize>,
        mut record: Option<&mut Vec<Checkpoint>>,
    ) -> Result<(), Failure> {
        let mut boundary = |this: &Self,
                            instance: &mut Instance,
                            world: &mut World,
                            cursor: Cursor,
                            line: usize|
         -> Result<(), Failure> {
            if inject == Some(world.events) {
                let (version, pipeline) = this.target.as_ref().ok_or_else(|| Failure {
                    line,
                    message: "no version to upgrade to".into(),
                    expected: None,
                    actual: None,
                })?;
                this.upgrade_to(instance, version, pipeline, world, line)?;
            }
            if let Some(checkpoints) = record.as_deref_mut() {
                this.freeze(world);
                let snapshot = instance.export_state().map_err(|e| Failure {
                    line,
                    message: format!("export at this boundary failed: {e}"),
                    expected: None,
                    actual: None,
                })?;
                checkpoints.push(Checkpoint {
                    cursor,
                    world: world.clone(),
                    snapshot,
                    after_line: line,
                });
            }
            Ok(())
        };
        if cursor.step == 0 && cursor.advance_to.is_none() && world.events == 0 {
            boundary(self, instance, world, cursor, 0)?;
        }
        while let Some((line, step)) = trace.steps.get(cursor.step) {
            let line = *line;
            let fail = |message: String| Failure { line, message, expected: None, actual: None };
            match step {
                Step::Connect(name) => {
                    let id = world.next_id;
                    world.next_id += 1;
                    world.clients.insert(
                        name.clone(),
                        Client { id, pending: Vec::new(), closed_by_server: false },
                    );
                    world.names.insert(id, name.clone());
                    let info = conn_info(id, name);
                    self.event(instance, world, line, |i| i.on_connect(&info))?;
                }
                Step::Send(name, bytes) => {
                    let client = world
                        .clients
                        .get(name)
                        .ok_or_else(|| fail(format!("no connection `{name}`")))?;
                    if client.closed_by_server {
                        return Err(fail(format!(
                            "`{name}` was closed by the server; it cannot send"
                        )));
                    }
                    let id = client.id;
                    self.event(instance, world, line, |i| i.on_data(id, bytes))?;
                }
                Step::Close(name) => {
                    let client = world
                        .clients
                        .remove(name)
                        .ok_or_else(|| fail(format!("no connection `{name}`")))?;
                    world.names.remove(&client.id);
                    if !client.closed_by_server {
                        self.event(instance, world, line, |i| i.on_disconnect(client.id))?;
                    } else {
                        cursor.step += 1;
                        continue;
                    }
                }
                Step::Expect(name, expected) => {
                    let client = world
                        .clients
                        .get_mut(name)
                        .ok_or_else(|| fail(format!("no connection `{name}`")))?;
                    let matched = match expected {
                        Expected::Exact(bytes) => {
                            client.pending.starts_with(bytes).then_some(bytes.len())
                        }
                        Expected::Pattern(re) => re.find(&client.pending).map(|m| m.end()),
                    };
                    match matched {
                        Some(n) => {
                            client.pending.drain(..n);
                        }
                        None => {
                            return Err(Failure {
                                line,
                                message: format!("`{name}` did not receive what was expected"),
                                expected: Some(expected.to_string()),
                                actual: Some(escape(&client.pending)),
                            });
                        }
                    }
                }
                Step::Quiet(name) => {
                    let client = world
                        .clients
                        .get(name)
                        .ok_or_else(|| fail(format!("no connection `{name}`")))?;
                    if !client.pending.is_empty() {
                        return Err(Failure {
                            line,
                            message: format!("`{name}` received bytes nobody expected"),
                            expected: Some("nothing".into()),
                            actual: Some(escape(&client.pending)),
                        });
                    }
                }
                Step::Advance(by) => {
                    let target = cursor.advance_to.unwrap_or(world.now_ms + by.as_millis() as u64);
                    while let Some((&(deadline, seq), &id)) = world.timers.iter().next() {
                        if deadline > target {
                            break;
                        }
                        world.timers.remove(&(deadline, seq));
                        world.armed.remove(&id);
                        world.now_ms = world.now_ms.max(deadline);
                        self.event(instance, world, line, |i| i.on_timer(id))?;
                        boundary(
                            self,
                            instance,
                            world,
                            Cursor { step: cursor.step, advance_to: Some(target) },
                            line,
                        )?;
                    }
                    world.now_ms = target;
                    cursor = Cursor { step: cursor.step + 1, advance_to: None };
                    continue;
                }
                Step::Upgrade { wasm, transforms } => {
                    let (version, pipeline) =
                        self.load(wasm, transforms).map_err(|e| fail(e.to_string()))?;
                    self.upgrade_to(instance, &version, &pipeline, world, line)?;
                    cursor.step += 1;
                    continue;
                }
            }
            cursor = Cursor { step: cursor.step + 1, advance_to: None };
            if matches!(step, Step::Connect(_) | Step::Send(..) | Step::Close(_)) {
                boundary(self, instance, world, cursor, line)?;
            }
        }
        Ok(())
    }

    fn load(
        &self,
        wasm: &Path,
        transforms: &[PathBuf],
    ) -> Result<(Arc<Version>, Pipeline), LoadError> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = loaded.get(wasm) {
            return Ok(found.clone());
        }
        let entry =
            (Version::load(&self.runtime, wasm)?, Pipeline::load(&self.runtime, transforms)?);
        loaded.insert(wasm.into(), entry.clone());
        Ok(entry)
    }
}

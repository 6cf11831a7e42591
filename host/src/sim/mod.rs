//! The deterministic simulator: a trace of client events run against app versions with virtual
//! connections, a virtual clock and seeded randomness, on one thread — the same trace gives the
//! same bytes every run, on any machine.
//!
//! It runs the production code: the trace's events go through the host's own
//! [`crate::dispatch::Dispatcher`] — the same event dispatch, effects, timers, checkpoints,
//! recovery and upgrade transaction as `tasuki run` — plugged into virtual connections
//! ([`VirtualNet`]) and a virtual clock ([`VirtualClock`]) instead of sockets and the wall clock.
//! An upgrade is prepared by the same function `tasuki upgrade` calls, so it is refused for the
//! same reasons, with the same message.
//!
//! `UpgradeAt::Every` places an upgrade at every event boundary of a trace, each in a run of its
//! own from the start of the trace, and checks every expectation each time.

pub mod record;
pub mod trace;

use crate::bindings::{AppInfo, ConnInfo};
use crate::canary::Window;
use crate::dispatch::{Clock, Dispatcher, Network, Swapped};
use crate::limits::Limits;
use crate::listeners::{ListenError, Policy, VIRTUAL_FIRST_PORT};
use crate::live::{Call, Live};
use crate::precopy::PrecopyReport;
use crate::runtime::Runtime;
use crate::status::ListenerStatus;
use crate::status::Shared;
use crate::transformer::Pipeline;
use crate::upgrade::{self, AppVersion, UpgradeError};
use crate::version::{LoadError, Version};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use trace::{Expected, Step, Trace, escape};

/// Where the virtual clock starts: 2026-01-01T00:00:00Z, so traces are independent of the day.
pub const SIM_EPOCH_MS: u64 = 1_767_225_600_000;

/// Rounds of `on-writable` the simulator runs after one event before it calls the app stuck: a
/// virtual client takes everything at once, so a stream of N bytes needs about N /
/// `--output-buffer` of them (a GiB at the default 8 MiB: 128).
const MAX_WRITABLE_ROUNDS: u32 = 1 << 16;

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
    /// Rebuild the live instance from its checkpoint and journal at every event boundary (after
    /// the upgrade placed there, if any), as recovery would after a trap: every expectation must
    /// still hold. This checks that checkpoint + journal is the live state at every point of the
    /// trace — through upgrades, transformers and checkpoints.
    pub rebuild_every_boundary: bool,
    /// Run the placed upgrade as a canary of this many client events (`tasuki test --canary`):
    /// the new version runs beside the old one and takes over only if every reply agreed. A
    /// window the trace ends inside ends with the trace. The verdict is part of the run: a
    /// divergence fails it with the canary's report.
    pub canary: Option<u64>,
    /// Start the app from this snapshot file instead of `init`'s state, as `tasuki run
    /// --restore` does (no connection open): for the trace a diverging canary saves, which
    /// starts from the state the new version imported.
    pub restore: Option<PathBuf>,
    /// Host directories the guests see (`tasuki test --dir`, as `tasuki run --dir`), read-only:
    /// the trace runs once per event boundary, and every run must find the same files.
    pub dirs: Vec<crate::sandbox::Preopen>,
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
    /// The app's run-time listener it connected to, if it did, and its address.
    listener: Option<(u64, String)>,
    /// Received and not yet expected.
    pending: Vec<u8>,
    /// The server closed it (the app did, or the host after a fault).
    closed_by_server: bool,
}

/// The virtual side of [`Network`]: clients that receive into a buffer the trace's `expect`
/// steps read.
#[derive(Debug, Default)]
pub struct VirtualNet {
    clients: BTreeMap<String, Client>,
    names: HashMap<u64, String>,
    next_id: u64,
    /// Connections whose app asked to be told they can take more: at once, since a virtual
    /// client takes everything it is sent.
    writable: Vec<u64>,
    /// The app's run-time listeners: id -> (port, connections accepted).
    listeners: BTreeMap<u64, (u16, u64)>,
    /// Where the search for a free port starts for the next port-0 request.
    next_port: u16,
}

impl VirtualNet {
    fn writable_pending(&self) -> bool {
        !self.writable.is_empty()
    }

    fn client(&mut self, id: u64) -> Option<&mut Client> {
        let name = self.names.get(&id)?;
        self.clients.get_mut(name)
    }
}

impl Network for VirtualNet {
    fn send(&mut self, conn: u64, data: Vec<u8>) {
        if let Some(client) = self.client(conn)
            && !client.closed_by_server
        {
            client.pending.extend_from_slice(&data);
        }
    }

    fn close(&mut self, conn: u64) {
        if let Some(client) = self.client(conn) {
            client.closed_by_server = true;
        }
    }

    fn live(&self) -> Vec<ConnInfo> {
        let mut live: Vec<ConnInfo> = self
            .clients
            .iter()
            .filter(|(_, c)| !c.closed_by_server)
            .map(|(name, c)| {
                let mut info = conn_info(c.id, name);
                if let Some((_, address)) = &c.listener {
                    info.listener = address.clone();
                }
                info
            })
            .collect();
        live.sort_by_key(|c| c.id);
        live
    }

    fn drop_conn(&mut self, conn: u64) -> bool {
        match self.client(conn) {
            Some(client) => !std::mem::replace(&mut client.closed_by_server, true),
            None => false,
        }
    }

    fn take_broken(&mut self) -> Option<u64> {
        None
    }

    fn want_writable(&mut self, conn: u64) {
        if self.client(conn).is_some_and(|c| !c.closed_by_server) && !self.writable.contains(&conn)
        {
            self.writable.push(conn);
        }
    }

    fn listen(&mut self, id: u64, port: u16, policy: &Policy) -> Result<String, ListenError> {
        policy.check(id, port, &self.listener_ids())?;
        let used = |p: u16| self.listeners.values().any(|&(q, _)| q == p);
        let port = if port == 0 {
            let (low, high) = policy
                .ports
                .as_ref()
                .map_or((VIRTUAL_FIRST_PORT, u16::MAX), |r| (*r.start(), *r.end()));
            let from = self.next_port.clamp(low, high);
            (from..=high)
                .chain(low..from)
                .find(|&p| !used(p))
                .ok_or_else(|| ListenError::InUse(format!("no port of {low}-{high} is free")))?
        } else if used(port) {
            return Err(ListenError::InUse(format!("port {port} is in use")));
        } else {
            port
        };
        self.next_port = port.wrapping_add(1);
        self.listeners.insert(id, (port, 0));
        Ok(virtual_address(port))
    }

    fn unlisten(&mut self, id: u64) {
        self.listeners.remove(&id);
    }

    fn listener_ids(&self) -> BTreeSet<u64> {
        self.listeners.keys().copied().collect()
    }

    fn accepted_on(&self, conn: u64) -> Option<u64> {
        let name = self.names.get(&conn)?;
        self.clients.get(name)?.listener.as_ref().map(|(id, _)| *id)
    }

    fn listener_status(&self) -> Vec<ListenerStatus> {
        self.listeners
            .iter()
            .map(|(&id, &(port, accepted))| ListenerStatus {
                id,
                address: virtual_address(port),
                accepted,
            })
            .collect()
    }

    fn take_writable(&mut self) -> Vec<(u64, usize)> {
        let open = |id: &&u64| self.names.contains_key(*id);
        let due: Vec<(u64, usize)> =
            self.writable.iter().filter(|id| open(id)).map(|&id| (id, 0)).collect();
        self.writable.clear();
        due
    }
}

/// The virtual side of [`Clock`]: time moves only when the trace says `advance`.
#[derive(Debug, Default)]
pub struct VirtualClock {
    /// Nanoseconds since [`SIM_EPOCH_MS`].
    now_ns: u64,
}

impl Clock for VirtualClock {
    fn wall_ns(&self) -> u64 {
        SIM_EPOCH_MS * 1_000_000 + self.now_ns
    }

    fn monotonic_ns(&self) -> u64 {
        self.now_ns
    }
}

fn conn_info(id: u64, name: &str) -> ConnInfo {
    ConnInfo { id, listener: "sim".into(), peer: format!("sim:{name}") }
}

/// The address of a virtual run-time listener on `port`: loopback, so that an app that builds
/// a reply from it (FTP's `227 Entering Passive Mode (127,0,0,1,...)`) sees a real-looking one.
fn virtual_address(port: u16) -> String {
    format!("127.0.0.1:{port}")
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
    /// Runs in which the injected upgrade committed.
    pub upgraded: usize,
    /// Rebuilds from checkpoint and journal, over every run (`rebuild_every_boundary`).
    pub rebuilds: usize,
    /// For each boundary whose upgrade was pre-copied: what the pre-copy did.
    pub precopies: Vec<(usize, PrecopyReport)>,
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
        if self.rebuilds > 0 {
            writeln!(
                f,
                "  rebuilt from checkpoint + journal at every boundary: {} rebuilds",
                self.rebuilds
            )?;
        }
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
                "  upgrade at boundaries {first}..={last}: {} ok, {} failed ({} upgraded)",
                self.runs.len() - failed.len(),
                failed.len(),
                self.upgraded
            )?;
            if !failed.is_empty() {
                writeln!(f, "  failing boundaries: {failed:?}")?;
            }
            if !self.precopies.is_empty() {
                let steps: u32 = self.precopies.iter().map(|(_, p)| p.steps).sum();
                let stalled = self.precopies.iter().filter(|(_, p)| !p.converged).count();
                writeln!(
                    f,
                    "  pre-copied in {} runs ({steps} steps in all; did not converge in {stalled})",
                    self.precopies.len()
                )?;
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
    #[error("{app} failed to start: {error}")]
    Start { app: PathBuf, error: Box<crate::instance::CallError> },
    /// The upgrade asked for is one `tasuki upgrade` would refuse; the message is its.
    #[error("{0}")]
    Refused(Box<UpgradeError>),
    #[error("--upgrade-at needs a version to upgrade to (--upgrade)")]
    NoTarget,
    #[error(
        "--upgrade is given but --upgrade-at is `never`: no upgrade would run; use `every` or a \
         boundary"
    )]
    NoUpgrade,
    #[error("cannot restore {file}: {error}")]
    Restore { file: PathBuf, error: String },
}

/// A version loaded with the transformers on the way to it.
type Loaded = (Arc<Version>, Pipeline);

/// Runs traces against loaded versions.
#[derive(Debug)]
pub struct Simulator {
    runtime: Runtime,
    app: Arc<Version>,
    target: Option<Loaded>,
    args: Vec<String>,
    rebuild_every_boundary: bool,
    canary: Option<u64>,
    /// The app's state at the start, from `SimConfig::restore`.
    restore: Option<(PathBuf, (Vec<crate::bindings::Chunk>, crate::bindings::Snapshot))>,
    /// Versions named by `upgrade` steps, loaded once.
    loaded: std::sync::Mutex<HashMap<PathBuf, Loaded>>,
}

/// How one run of a trace went.
struct Played {
    result: Result<(), Failure>,
    /// The trace line of each event.
    lines: Vec<usize>,
    /// The injected upgrade committed.
    upgraded: bool,
    /// Rebuilds from checkpoint and journal (`rebuild_every_boundary`).
    rebuilds: usize,
    /// The injected upgrade's pre-copy, if it was pre-copied.
    precopy: Option<PrecopyReport>,
}

/// One run's progress: the dispatcher under test, and the trace's position.
struct Run<'a> {
    sim: &'a Simulator,
    dispatcher: Dispatcher<VirtualNet, VirtualClock>,
    /// The trace line of each event so far (client events and timers, completed or faulted):
    /// its length is the number of the current boundary.
    lines: Vec<usize>,
    /// The boundary to upgrade at, and whether that upgrade ran.
    inject: Option<usize>,
    injected: bool,
    /// The injected upgrade committed.
    committed: bool,
    /// Rebuilds from checkpoint and journal done (`rebuild_every_boundary`).
    rebuilds: usize,
    /// The last committed upgrade's pre-copy.
    precopy: Option<PrecopyReport>,
}

impl Simulator {
    /// Compiles the app, the upgrade target and its transformers.
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        let runtime = Runtime::simulated(config.limits, config.seed, config.dirs.clone())
            .map_err(|e| SimError::Engine(format!("{e:#}")))?;
        let app = Version::load(&runtime, &config.app)?;
        let target = match &config.upgrade {
            Some(t) => {
                Some((Version::load(&runtime, &t.wasm)?, Pipeline::load(&runtime, &t.transforms)?))
            }
            None => None,
        };
        Ok(Self {
            runtime,
            app,
            target,
            args: config.args,
            rebuild_every_boundary: config.rebuild_every_boundary,
            canary: config.canary,
            restore: match config.restore {
                Some(file) => {
                    let state = crate::snapshot::SnapshotFile::read(&file)
                        .map_err(|e| SimError::Restore {
                            file: file.clone(),
                            error: e.to_string(),
                        })?
                        .into_state();
                    Some((file, state))
                }
                None => None,
            },
            loaded: Default::default(),
        })
    }

    fn start(&self, version: &Arc<Version>) -> Result<Live, SimError> {
        Live::start(Arc::clone(version), &self.args, self.runtime.limits.journal)
            .map_err(|error| SimError::Start { app: version.path.clone(), error: Box::new(error) })
    }

    /// Checks, before anything runs, that the upgrade asked for is one `tasuki upgrade` would
    /// make from the app: the same app, and every section readable through the transformers.
    fn check_target(&self) -> Result<Option<AppVersion>, SimError> {
        let Some((version, pipeline)) = &self.target else { return Ok(None) };
        let from = self.start(&self.app)?;
        let prepared = upgrade::prepare_loaded(
            Arc::clone(version),
            pipeline.clone(),
            &self.args,
            from.info(),
            false,
            Instant::now(),
        )
        .map_err(|e| SimError::Refused(Box::new(e)))?;
        Ok(Some(AppVersion::from(&prepared.info)))
    }

    /// Runs `trace` with the upgrade placed as `at` says.
    pub fn run(&self, trace: &Trace, at: UpgradeAt) -> Result<Report, SimError> {
        let started = Instant::now();
        match (at, &self.target) {
            (UpgradeAt::Never, Some(_)) => return Err(SimError::NoUpgrade),
            (UpgradeAt::Every | UpgradeAt::Boundary(_), None) => return Err(SimError::NoTarget),
            _ => {}
        }
        let to = self.check_target()?;
        let from = AppVersion::from(self.start(&self.app)?.info());
        // Components named by the trace's own `upgrade` steps must load before anything runs:
        // a missing or broken file is a trace that cannot be used (exit 2), not a failed run.
        for (_, step) in &trace.steps {
            if let Step::Upgrade { wasm, transforms } = step {
                self.load(wasm, transforms)?;
            }
        }

        let inject = match at {
            UpgradeAt::Boundary(b) => Some(b),
            _ => None,
        };
        let Played { result: baseline, lines: events, upgraded, rebuilds, precopy } =
            self.play(trace, inject)?;
        let mut rebuilds = rebuilds;
        let mut runs = Vec::new();
        let mut upgrades = 0;
        let mut precopies = Vec::new();
        if let Some(b) = inject {
            // A single placed upgrade: the run above was it.
            let after_line = if b == 0 { 0 } else { events.get(b - 1).copied().unwrap_or(0) };
            runs.push((b, after_line, baseline.clone()));
            upgrades += usize::from(upgraded);
            precopies.extend(precopy.map(|p| (b, p)));
        }
        if at == UpgradeAt::Every && baseline.is_ok() {
            for boundary in 0..=events.len() {
                let Played { result, upgraded, rebuilds: rebuilt, precopy, .. } =
                    self.play(trace, Some(boundary))?;
                rebuilds += rebuilt;
                let after_line = if boundary == 0 { 0 } else { events[boundary - 1] };
                runs.push((boundary, after_line, result));
                upgrades += usize::from(upgraded);
                precopies.extend(precopy.map(|p| (boundary, p)));
            }
        }
        let baseline = if inject.is_some() { Ok(()) } else { baseline };
        Ok(Report {
            trace: trace.name.clone(),
            from,
            to,
            events: events.len(),
            baseline,
            runs,
            upgraded: upgrades,
            rebuilds,
            precopies,
            elapsed: started.elapsed(),
        })
    }

    /// The app as a run starts it: `init`'s state, or the restored one.
    fn start_app(&self) -> Result<Live, SimError> {
        let Some((file, state)) = &self.restore else { return self.start(&self.app) };
        let version = Arc::clone(&self.app);
        let started = crate::recovery::start(&version, &self.args).map_err(|error| {
            SimError::Start { app: version.path.clone(), error: Box::new(error) }
        })?;
        Live::restore(version, started, self.runtime.limits.journal, state.clone())
            .map_err(|e| SimError::Restore { file: file.clone(), error: e.to_string() })
    }

    /// Plays the whole trace from a fresh start, with the upgrade to the target at boundary
    /// `inject` if given.
    fn play(&self, trace: &Trace, inject: Option<usize>) -> Result<Played, SimError> {
        let live = self.start_app()?;
        let shared = Arc::new(Shared::new(live.info().clone(), self.app.path.clone(), Vec::new()));
        let net = VirtualNet { next_id: 1, ..VirtualNet::default() };
        let dispatcher =
            Dispatcher::new(net, VirtualClock::default(), live, self.args.clone(), shared);
        let mut run = Run {
            sim: self,
            dispatcher,
            lines: Vec::new(),
            inject,
            injected: false,
            committed: false,
            rebuilds: 0,
            precopy: None,
        };
        let result = run.play(trace).and_then(|()| run.end_canary(trace));
        let events = run.lines.len();
        let result = result.and_then(|()| match inject {
            Some(b) if !run.injected => Err(Failure {
                line: trace.steps.last().map_or(0, |(l, _)| *l),
                message: format!(
                    "no upgrade ran: the upgrade was placed at boundary {b}, but the trace has \
                     only {events} events (boundaries 0..={events})"
                ),
                expected: None,
                actual: None,
            }),
            _ => Ok(()),
        });
        Ok(Played {
            result,
            lines: run.lines,
            upgraded: run.committed,
            rebuilds: run.rebuilds,
            precopy: run.precopy,
        })
    }

    fn load(&self, wasm: &Path, transforms: &[PathBuf]) -> Result<Loaded, LoadError> {
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

fn failure(line: usize, message: String) -> Failure {
    Failure { line, message, expected: None, actual: None }
}

impl Run<'_> {
    /// After an event (or before the first): the injected upgrade if its boundary has come,
    /// then a checkpoint if one is due — as the event loop does between events.
    fn boundary(&mut self, line: usize) -> Result<(), Failure> {
        // A pre-copy under way takes one step between every two events, as on the event loop;
        // a canary is checked for its end.
        if (self.dispatcher.upgrading() || self.dispatcher.canary_running())
            && let Some(swapped) = self.dispatcher.upgrade_step()
        {
            self.ended(swapped, line)?;
        }
        if self.inject == Some(self.lines.len()) && !self.injected {
            self.injected = true;
            let (version, pipeline) = self
                .sim
                .target
                .clone()
                .ok_or_else(|| failure(line, "no version to upgrade to".into()))?;
            let canary = self.sim.canary.map(Window::Events);
            self.upgrade(version, pipeline, line, false, canary)?;
        }
        self.dispatcher.checkpoint_if_due();
        self.dispatcher.checkpoint_step();
        if self.sim.rebuild_every_boundary {
            // A rebuild restarts a pre-copy under way, so one at every boundary would hold the
            // upgrade off until the trace ends: the upgrade commits first, with no event in
            // between, and the new version is what is rebuilt.
            self.finish_upgrade(line)?;
            self.dispatcher.rebuild_now();
            self.rebuilds += 1;
        }
        Ok(())
    }

    /// The upgrade transaction `tasuki upgrade` runs: prepare, then pre-copy between the events
    /// that follow (or, with `now`, without any event in between), then swap.
    fn upgrade(
        &mut self,
        version: Arc<Version>,
        pipeline: Pipeline,
        line: usize,
        now: bool,
        canary: Option<Window>,
    ) -> Result<(), Failure> {
        let running: AppInfo = self.dispatcher.live().info().clone();
        let mut prepared = upgrade::prepare_loaded(
            version,
            pipeline,
            &self.sim.args,
            &running,
            false,
            Instant::now(),
        )
        .map_err(|e| failure(line, format!("upgrade: {e}")))?;
        prepared.canary = canary;
        if let Some(swapped) = self.dispatcher.upgrade(prepared) {
            return self.ended(swapped, line);
        }
        if now {
            self.finish_upgrade(line)?;
        }
        Ok(())
    }

    /// Steps the pre-copy under way to its end, with no event in between.
    fn finish_upgrade(&mut self, line: usize) -> Result<(), Failure> {
        while self.dispatcher.upgrading() {
            if let Some(swapped) = self.dispatcher.upgrade_step() {
                self.ended(swapped, line)?;
            }
        }
        Ok(())
    }

    /// The trace ended with a canary under way: its window ends with the trace, and its
    /// verdict is given on what ran.
    fn end_canary(&mut self, trace: &Trace) -> Result<(), Failure> {
        if !self.dispatcher.canary_running() {
            return Ok(());
        }
        let line = trace.steps.last().map_or(0, |(l, _)| *l);
        self.dispatcher.end_canary_window();
        match self.dispatcher.upgrade_step() {
            Some(swapped) => self.ended(swapped, line),
            None => Err(failure(line, "the canary did not end with the trace".into())),
        }
    }

    /// An upgrade ended: it must have committed.
    fn ended(&mut self, swapped: Swapped, line: usize) -> Result<(), Failure> {
        let report = swapped.outcome.map_err(|e| failure(line, format!("upgrade: {e}")))?;
        self.precopy = report.precopy;
        self.committed = true;
        Ok(())
    }

    /// One event through the dispatcher, then the boundary after it.
    fn event(&mut self, line: usize, call: Call<'_>) -> Result<(), Failure> {
        match call {
            // A client that disconnects goes the way a socket's close goes.
            Call::Disconnect(id) => self.dispatcher.peer_gone(id),
            other => self.dispatcher.dispatch(other),
        }
        self.after_event(line)
    }

    /// An event of trace line `line` ran: the boundary after it, then each `on-writable` call
    /// the app asked for, each with the boundary after it (an upgrade or a rebuild placed there
    /// lands in the middle of a stream). A virtual client reads everything at once, so the calls
    /// are due at once, until the app stops asking (a stream of N bytes asks about N /
    /// `--output-buffer` times).
    /// Moves the virtual clock on to `target` (ns), firing each timer due by then at its
    /// deadline, as one event each.
    fn advance_to(&mut self, target: u64, line: usize) -> Result<(), Failure> {
        while let Some(deadline) = self.dispatcher.next_deadline() {
            if deadline > target {
                break;
            }
            self.dispatcher.clock.now_ns = self.dispatcher.clock.now_ns.max(deadline);
            if self.dispatcher.fire_next_due() {
                self.after_event(line)?;
            }
        }
        self.dispatcher.clock.now_ns = target;
        Ok(())
    }

    fn after_event(&mut self, line: usize) -> Result<(), Failure> {
        self.lines.push(line);
        self.boundary(line)?;
        let mut rounds = 0u32;
        while self.dispatcher.net.writable_pending() {
            rounds += 1;
            if rounds > MAX_WRITABLE_ROUNDS {
                return Err(failure(
                    line,
                    format!(
                        "the app asked to be told it can send more {MAX_WRITABLE_ROUNDS} times in \
                         a row after one event"
                    ),
                ));
            }
            self.dispatcher.writable_due();
            self.lines.push(line);
            self.boundary(line)?;
        }
        Ok(())
    }

    fn play(&mut self, trace: &Trace) -> Result<(), Failure> {
        self.boundary(0)?;
        for (line, step) in &trace.steps {
            let line = *line;
            let fail = |message: String| failure(line, message);
            match step {
                Step::Connect(name) => {
                    let net = &mut self.dispatcher.net;
                    let id = net.next_id;
                    net.next_id += 1;
                    net.clients.insert(
                        name.clone(),
                        Client { id, listener: None, pending: Vec::new(), closed_by_server: false },
                    );
                    net.names.insert(id, name.clone());
                    let info = conn_info(id, name);
                    self.event(line, Call::Connect(&info))?;
                }
                Step::ConnectPort(name, port) => {
                    let net = &mut self.dispatcher.net;
                    let Some((&listener, accepted)) = net
                        .listeners
                        .iter_mut()
                        .find(|(_, (p, _))| p == port)
                        .map(|(id, l)| (id, &mut l.1))
                    else {
                        return Err(fail(format!(
                            "`{name}` cannot connect: the app has no listener on port {port}"
                        )));
                    };
                    *accepted += 1;
                    let id = net.next_id;
                    net.next_id += 1;
                    net.clients.insert(
                        name.clone(),
                        Client {
                            id,
                            listener: Some((listener, virtual_address(*port))),
                            pending: Vec::new(),
                            closed_by_server: false,
                        },
                    );
                    net.names.insert(id, name.clone());
                    let info = ConnInfo {
                        id,
                        listener: virtual_address(*port),
                        peer: format!("sim:{name}"),
                    };
                    self.dispatcher.accept(&info, listener);
                    self.after_event(line)?;
                }
                Step::Send(name, bytes) | Step::Fault(name, bytes) => {
                    let client = self
                        .dispatcher
                        .net
                        .clients
                        .get(name)
                        .ok_or_else(|| fail(format!("no connection `{name}`")))?;
                    if client.closed_by_server {
                        return Err(fail(format!(
                            "`{name}` was closed by the server; it cannot send"
                        )));
                    }
                    let id = client.id;
                    if let Step::Fault(..) = step {
                        self.dispatcher.fault_next_event();
                    }
                    self.event(line, Call::Data(id, bytes))?;
                    if let Step::Fault(..) = step {
                        let closed = self
                            .dispatcher
                            .net
                            .clients
                            .get(name)
                            .is_none_or(|c| c.closed_by_server);
                        if !closed {
                            return Err(fail(format!(
                                "`{name}`'s fault did not close it: the host must close the \
                                 connection whose event trapped"
                            )));
                        }
                    }
                }
                Step::Close(name) => {
                    let client = self
                        .dispatcher
                        .net
                        .clients
                        .get(name)
                        .ok_or_else(|| fail(format!("no connection `{name}`")))?;
                    let id = client.id;
                    let by_server = client.closed_by_server;
                    if by_server {
                        self.forget(name, id);
                        continue;
                    }
                    self.event(line, Call::Disconnect(id))?;
                    self.forget(name, id);
                }
                Step::Expect(name, expected) => {
                    let client = self
                        .dispatcher
                        .net
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
                    let client = self
                        .dispatcher
                        .net
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
                    let target = self.dispatcher.clock.now_ns + by.as_nanos() as u64;
                    self.advance_to(target, line)?;
                }
                Step::Clock(unix_ns) => {
                    let now = self.dispatcher.clock.wall_ns();
                    if *unix_ns < now {
                        return Err(fail(format!(
                            "the clock cannot go back, from {} to {}",
                            trace::format_timestamp(now),
                            trace::format_timestamp(*unix_ns)
                        )));
                    }
                    let target = self.dispatcher.clock.now_ns + (unix_ns - now);
                    self.advance_to(target, line)?;
                }
                Step::Upgrade { wasm, transforms } => {
                    let (version, pipeline) =
                        self.sim.load(wasm, transforms).map_err(|e| fail(e.to_string()))?;
                    self.upgrade(version, pipeline, line, true, None)?;
                }
            }
        }
        // A pre-copy still under way when the trace ends commits now.
        let last = trace.steps.last().map_or(0, |(l, _)| *l);
        self.finish_upgrade(last)
    }

    /// A client that disconnected leaves the trace's world.
    fn forget(&mut self, name: &str, id: u64) {
        self.dispatcher.net.clients.remove(name);
        self.dispatcher.net.names.remove(&id);
    }
}

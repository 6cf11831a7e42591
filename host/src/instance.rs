//! Once per instance: a store, the guest's exports, and what its imports asked the host to do.
//!
//! Guest-visible errors (an `init` or `import-state` that returns `err`) and traps (a guest
//! fault, a missed deadline) are kept apart: the first is the app refusing, the second means this
//! instance can never be entered again.

use crate::bindings::server_exports::{app, canary, listening, memory, precopy, state, writable};
use crate::bindings::{AppInfo, Chunk, ConnInfo, PrecopyBatch, Snapshot};
use crate::limits;
use crate::listeners::ListenError;
use crate::store::{Effect, InstanceState, Limiter};
use crate::transformer::{LISTENERS_SECTION, STREAMS_SECTION, WINDOWS_SECTION};
use crate::version::Version;
use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx};

/// A guest call that did not complete.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The guest returned an error value: it refused, and the instance is still usable.
    #[error("{0}")]
    Refused(String),
    /// The guest trapped or ran past its deadline: the instance is unusable from now on.
    #[error("trapped: {0}")]
    Trap(Trap),
}

impl CallError {
    /// The trap, if the guest trapped (rather than refused).
    pub fn trap(&self) -> Option<&Trap> {
        match self {
            Self::Trap(trap) => Some(trap),
            Self::Refused(_) => None,
        }
    }
}

/// wasmtime's trap codes, as [`Trap::code`] carries them.
pub use wasmtime::Trap as TrapCode;

/// Why an instance stopped: wasmtime's trap code when there is one, and the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Trap {
    /// `Interrupt` is a missed deadline; `UnreachableCodeReached` is how a Rust guest's panic
    /// or failed allocation (past `--memory-limit`) ends. `None` for a fault outside the guest's
    /// code, such as a failed instantiation.
    pub code: Option<TrapCode>,
    /// Set when the simulator injected the fault (a trace's `fault` step).
    pub injected: bool,
    /// One line: what happened, in words.
    pub message: String,
    /// wasmtime's whole error, with the guest's backtrace, for the debug log.
    pub detail: String,
}

impl Trap {
    /// A trap from wasmtime's error, said in one line.
    pub(crate) fn from_error(e: &wasmtime::Error) -> Self {
        let code = e.downcast_ref::<TrapCode>().copied();
        let message = match code {
            Some(TrapCode::Interrupt) => "ran past its deadline".to_string(),
            Some(TrapCode::UnreachableCodeReached) => {
                "wasm `unreachable` executed (a panic, or an allocation past --memory-limit)"
                    .to_string()
            }
            Some(code) => code.to_string(),
            None => format!("{e:#}"),
        };
        Self { code, injected: false, message, detail: format!("{e:?}") }
    }

    /// A fault that is not a trap in guest code (an instance that cannot be created).
    pub(crate) fn other(message: String) -> Self {
        Self { code: None, injected: false, detail: message.clone(), message }
    }

    /// True when the call ran past its deadline.
    pub fn is_deadline(&self) -> bool {
        self.code == Some(TrapCode::Interrupt) && !self.injected
    }
}

fn trap(e: wasmtime::Error) -> CallError {
    let trap = Trap::from_error(&e);
    tracing::debug!("trap: {}", trap.detail);
    CallError::Trap(trap)
}

/// How an instance uses its memory, as its guest reports it (`tasuki:server/memory`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemoryUsage {
    /// Bytes the guest's allocator has handed out and not taken back (requested sizes).
    pub heap_in_use: u64,
    /// The linear memory the instance has grown to, in bytes; it never shrinks.
    pub linear_memory: u64,
}

impl MemoryUsage {
    /// Heap in use as a share of the linear memory, 0.0–1.0 (1.0 for an empty memory).
    pub fn used_share(&self) -> f64 {
        if self.linear_memory == 0 {
            1.0
        } else {
            self.heap_in_use as f64 / self.linear_memory as f64
        }
    }
}

/// A live instance of an app version.
pub struct Instance {
    store: Store<InstanceState>,
    app: app::Guest,
    state: state::Guest,
    /// `None` if the version predates pre-copy.
    precopy: Option<precopy::Guest>,
    /// `None` if the version predates the `memory` export.
    memory: Option<memory::Guest>,
    /// `None` if the version predates the `canary` export.
    canary: Option<canary::Guest>,
    /// `None` if the version predates the `writable` export.
    writable: Option<writable::Guest>,
    /// `None` if the version predates run-time listeners.
    listening: Option<listening::Guest>,
    /// Epoch ticks an event may run.
    call_deadline: u64,
    /// Epoch ticks a state call may run.
    state_deadline: u64,
    /// The simulator asked for the next event to trap (a trace's `fault` step).
    fault_next: bool,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").finish_non_exhaustive()
    }
}

impl Instance {
    /// Instantiates `version` with only what its [`crate::sandbox::Sandbox`] grants: no network ever, no files
    /// or environment unless given. Guest stderr goes to the host's stderr, so a guest panic
    /// message is not lost. The guest's wall clock is the host's [`crate::clock::EventClock`].
    pub fn new(version: &Version) -> Result<Self, CallError> {
        let runtime = &version.runtime;
        let mut wasi = WasiCtx::builder();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .inherit_stderr()
            .wall_clock(runtime.clock.clone())
            .secure_random(runtime.clock.random())
            .insecure_random(runtime.clock.random())
            .insecure_random_seed(runtime.clock.insecure_seed());
        if runtime.deterministic.is_some() {
            wasi.monotonic_clock(runtime.clock.clone());
        }
        for (key, value) in &runtime.sandbox.env {
            wasi.env(key, value);
        }
        // Under the simulator a granted directory is read-only: every run of a trace (one per
        // event boundary) must find the same files, so none may change them.
        let perms =
            if runtime.deterministic.is_some() { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
        for dir in &runtime.sandbox.dirs {
            wasi.preopened_dir(&dir.host, &dir.guest, perms).map_err(|e| {
                CallError::Trap(Trap::other(format!(
                    "cannot open --dir {}: {e:#}",
                    dir.host.display()
                )))
            })?;
        }
        let state = InstanceState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: Limiter::new(runtime.limits.memory),
            effects: Vec::new(),
            call_output: 0,
            call_output_limit: runtime.limits.output_limit(),
            cut_off: Vec::new(),
            max_connections: runtime.limits.max_connections,
            input_limit: runtime.limits.query_buffer,
            input_total: runtime.limits.input_total(),
            output_buffer: runtime.limits.output_buffer,
        };
        let mut store = Store::new(&runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_hostcall_fuel(runtime.limits.hostcall_bytes());
        store.set_epoch_deadline(limits::ticks(runtime.limits.upgrade_deadline));
        let instance = version.pre.instantiate(&mut store).map_err(trap)?;
        let exports = &version.exports;
        let app = exports.app.load(&mut store, &instance).map_err(trap)?;
        let state = exports.state.load(&mut store, &instance).map_err(trap)?;
        let precopy = match &exports.precopy {
            Some(indices) => Some(indices.load(&mut store, &instance).map_err(trap)?),
            None => None,
        };
        let memory = match &exports.memory {
            Some(indices) => Some(indices.load(&mut store, &instance).map_err(trap)?),
            None => None,
        };
        let canary = match &exports.canary {
            Some(indices) => Some(indices.load(&mut store, &instance).map_err(trap)?),
            None => None,
        };
        let writable = match &exports.writable {
            Some(indices) => Some(indices.load(&mut store, &instance).map_err(trap)?),
            None => None,
        };
        let listening = match &exports.listening {
            Some(indices) => Some(indices.load(&mut store, &instance).map_err(trap)?),
            None => None,
        };
        let call_deadline = limits::ticks(runtime.limits.call_deadline);
        let state_deadline = limits::ticks(runtime.limits.upgrade_deadline);
        Ok(Self {
            store,
            app,
            state,
            precopy,
            memory,
            canary,
            writable,
            listening,
            call_deadline,
            state_deadline,
            fault_next: false,
        })
    }

    fn event(&mut self) {
        let ticks = if self.fault_next { 0 } else { self.call_deadline };
        self.store.set_epoch_deadline(ticks);
    }

    /// Makes the next event call trap as soon as it enters the guest, as a guest fault would:
    /// the simulator's `fault` step, which tests recovery with the production code.
    pub(crate) fn fault_next_event(&mut self) {
        self.fault_next = true;
    }

    /// Marks the trap of an event call that [`Instance::fault_next_event`] caused.
    fn event_result(&mut self, result: Result<(), CallError>) -> Result<(), CallError> {
        if !std::mem::take(&mut self.fault_next) {
            return result;
        }
        match result {
            Err(CallError::Trap(mut trap)) => {
                trap.injected = true;
                trap.message = "fault injected by the trace".into();
                Err(CallError::Trap(trap))
            }
            other => other,
        }
    }

    fn state_call(&mut self) {
        self.store.set_epoch_deadline(self.state_deadline);
    }

    /// What the guest asked for since the last drain.
    pub fn take_effects(&mut self) -> std::vec::Drain<'_, Effect> {
        self.store.data_mut().take_effects()
    }

    /// Drops whatever the guest asked for (used when an upgrade rolls back).
    pub fn discard_effects(&mut self) {
        self.store.data_mut().take_effects();
    }

    pub fn init(&mut self, args: &[String]) -> Result<(), CallError> {
        self.state_call();
        self.app.call_init(&mut self.store, args).map_err(trap)?.map_err(CallError::Refused)
    }

    pub fn describe(&mut self) -> Result<AppInfo, CallError> {
        self.state_call();
        self.state.call_describe(&mut self.store).map_err(trap)
    }

    /// `memory.usage`: the guest's heap in use and linear memory, in bytes; `Ok(None)` for a
    /// version built before the export existed. Runs under an event's deadline: it reads two
    /// counters.
    pub fn memory_usage(&mut self) -> Result<Option<MemoryUsage>, CallError> {
        let Some(memory) = self.memory.clone() else { return Ok(None) };
        self.store.set_epoch_deadline(self.call_deadline);
        let usage = memory.call_usage(&mut self.store).map_err(trap)?;
        Ok(Some(MemoryUsage { heap_in_use: usage.heap_in_use, linear_memory: usage.linear_memory }))
    }

    /// `canary.expected-difference`: whether this (new) version declares the difference between
    /// `old` and `new` output, in the event whose input was `request`, an expected one; false
    /// for a version built before the export existed. Runs under an event's deadline.
    pub fn expected_difference(
        &mut self,
        request: &[u8],
        old: &[u8],
        new: &[u8],
    ) -> Result<bool, CallError> {
        let Some(canary) = self.canary.clone() else { return Ok(false) };
        self.store.set_epoch_deadline(self.call_deadline);
        canary.call_expected_difference(&mut self.store, request, old, new).map_err(trap)
    }

    pub fn export_state(&mut self) -> Result<Snapshot, CallError> {
        self.state_call();
        self.state.call_export_state(&mut self.store).map_err(trap)?.map_err(CallError::Refused)
    }

    /// `state.import-state`. A version built before back-pressure (no `writable` export) is
    /// handed the snapshot without the SDK's send windows, which it has no use for, and refuses
    /// one with streams under way, which it could not carry on.
    pub fn import_state(
        &mut self,
        snapshot: &Snapshot,
        live: &[ConnInfo],
    ) -> Result<(), CallError> {
        let has = |name: &str| snapshot.sections.iter().any(|s| s.name == name);
        let without_windows;
        if self.listening.is_none() && has(LISTENERS_SECTION) {
            return Err(CallError::Refused(format!(
                "the app has listeners open that it opened at run time (section \
                 `{LISTENERS_SECTION}`), and this version, built before them, cannot accept on \
                 them or close them: upgrade to it once they are closed"
            )));
        }
        let snapshot = if self.writable.is_none() && has(STREAMS_SECTION) {
            return Err(CallError::Refused(format!(
                "streams are being sent to clients (section `{STREAMS_SECTION}`), and this \
                 version, built before back-pressure, cannot carry them on: upgrade to it once \
                 they are sent"
            )));
        } else if self.writable.is_none() && has(WINDOWS_SECTION) {
            // A copy, but only on the way to a release older than the running one.
            without_windows = Snapshot {
                app: snapshot.app.clone(),
                app_version: snapshot.app_version.clone(),
                sections: snapshot
                    .sections
                    .iter()
                    .filter(|s| s.name != WINDOWS_SECTION)
                    .cloned()
                    .collect(),
            };
            &without_windows
        } else {
            snapshot
        };
        self.state_call();
        self.state
            .call_import_state(&mut self.store, snapshot, live)
            .map_err(trap)?
            .map_err(CallError::Refused)
    }

    /// True if this instance can move its state by pre-copy.
    pub fn precopies(&self) -> bool {
        self.precopy.is_some()
    }

    fn precopy(&self) -> Result<&precopy::Guest, CallError> {
        self.precopy.as_ref().ok_or_else(|| {
            CallError::Refused("this version predates pre-copy (no `precopy` export)".into())
        })
    }

    /// `precopy.begin`: the instance starts recording changes.
    pub fn precopy_begin(&mut self) -> Result<(), CallError> {
        self.state_call();
        let precopy = self.precopy()?.clone();
        precopy.call_begin(&mut self.store).map_err(trap)?.map_err(CallError::Refused)
    }

    /// `precopy.next`: about `max_bytes` of records.
    pub fn precopy_next(&mut self, max_bytes: u64) -> Result<PrecopyBatch, CallError> {
        self.event();
        let precopy = self.precopy()?.clone();
        precopy.call_next(&mut self.store, max_bytes).map_err(trap)?.map_err(CallError::Refused)
    }

    /// `precopy.finish`: the records still owed and the snapshot of the rest.
    pub fn precopy_finish(&mut self) -> Result<(Vec<Chunk>, Snapshot), CallError> {
        self.state_call();
        let precopy = self.precopy()?.clone();
        precopy.call_finish(&mut self.store).map_err(trap)?.map_err(CallError::Refused)
    }

    /// `precopy.abort`: the instance stops recording (the upgrade rolled back).
    pub fn precopy_abort(&mut self) -> Result<(), CallError> {
        self.event();
        let precopy = self.precopy()?.clone();
        precopy.call_abort(&mut self.store).map_err(trap)
    }

    /// `precopy.import-chunks`, on the new instance.
    pub fn import_chunks(&mut self, chunks: &[Chunk]) -> Result<(), CallError> {
        if chunks.is_empty() {
            return Ok(());
        }
        self.state_call();
        let precopy = self.precopy()?.clone();
        precopy
            .call_import_chunks(&mut self.store, chunks)
            .map_err(trap)?
            .map_err(CallError::Refused)
    }

    /// Imports a state kept as pre-copied `chunks` plus the `snapshot` of the rest (empty
    /// `chunks` for a full snapshot).
    pub fn import(
        &mut self,
        chunks: &[Chunk],
        snapshot: &Snapshot,
        live: &[ConnInfo],
    ) -> Result<(), CallError> {
        self.import_chunks(chunks)?;
        self.import_state(snapshot, live)
    }

    pub fn on_connect(&mut self, conn: &ConnInfo) -> Result<(), CallError> {
        self.event();
        let result = self.app.call_on_connect(&mut self.store, conn).map_err(trap);
        self.event_result(result)
    }

    pub fn on_data(&mut self, conn: u64, data: &[u8]) -> Result<(), CallError> {
        self.event();
        let result = self.app.call_on_data(&mut self.store, conn, data).map_err(trap);
        self.event_result(result)
    }

    pub fn on_disconnect(&mut self, conn: u64) -> Result<(), CallError> {
        self.event();
        let result = self.app.call_on_disconnect(&mut self.store, conn).map_err(trap);
        self.event_result(result)
    }

    pub fn on_timer(&mut self, id: u64) -> Result<(), CallError> {
        self.event();
        let result = self.app.call_on_timer(&mut self.store, id).map_err(trap);
        self.event_result(result)
    }

    /// `writable.on-writable`: `conn` can take `window` more bytes. Nothing for a version
    /// built before the export (it never asked: the host calls only after a request, which an
    /// older instance swapped in since cannot answer).
    /// Whether this version is told when a connection can take more (it exports `writable`);
    /// one built before back-pressure never asks.
    pub(crate) fn takes_writable(&self) -> bool {
        self.writable.is_some()
    }

    pub fn on_writable(&mut self, conn: u64, window: u64) -> Result<(), CallError> {
        let Some(writable) = self.writable.clone() else { return Ok(()) };
        self.event();
        let result = writable.call_on_writable(&mut self.store, conn, window).map_err(trap);
        self.event_result(result)
    }
}

impl Instance {
    /// `listening.on-listening`: the answer to `listeners.listen(id, ...)`. Nothing for a
    /// version built before run-time listeners (it never asks).
    pub fn on_listening(
        &mut self,
        id: u64,
        result: &Result<String, ListenError>,
    ) -> Result<(), CallError> {
        let Some(listening) = self.listening.clone() else { return Ok(()) };
        self.event();
        let result =
            listening.call_on_listening(&mut self.store, id, result.as_deref()).map_err(trap);
        self.event_result(result)
    }

    /// `listening.on-accept`: a connection accepted on listener `listener`; `app.on-connect`
    /// for a version built before run-time listeners (one swapped in after a fresh restart).
    pub fn on_accept(&mut self, conn: &ConnInfo, listener: u64) -> Result<(), CallError> {
        let Some(listening) = self.listening.clone() else { return self.on_connect(conn) };
        self.event();
        let result = listening.call_on_accept(&mut self.store, conn, listener).map_err(trap);
        self.event_result(result)
    }

    /// `listening.on-listeners-lost`; nothing for a version built before run-time listeners.
    pub fn on_listeners_lost(&mut self) -> Result<(), CallError> {
        let Some(listening) = self.listening.clone() else { return Ok(()) };
        self.event();
        let result = listening.call_on_listeners_lost(&mut self.store).map_err(trap);
        self.event_result(result)
    }

    /// True if this version can open listeners at run time (it exports `listening`).
    pub fn listens(&self) -> bool {
        self.listening.is_some()
    }
}

/// Total bytes of pre-copied chunks.
pub fn chunk_bytes(chunks: &[Chunk]) -> u64 {
    chunks.iter().map(|c| c.bytes.len() as u64).sum()
}

/// Total bytes of state in a snapshot.
pub fn snapshot_bytes(snapshot: &Snapshot) -> u64 {
    snapshot.sections.iter().map(|s| s.bytes.len() as u64).sum()
}

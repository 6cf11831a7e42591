//! Once per instance: a store, the guest's exports, and what its imports asked the host to do.
//!
//! Guest-visible errors (an `init` or `import-state` that returns `err`) and traps (a guest
//! fault, a missed deadline) are kept apart: the first is the app refusing, the second means this
//! instance can never be entered again.

use crate::bindings::{AppInfo, ConnInfo, Server, Snapshot};
use crate::limits;
use crate::version::Version;
use std::path::PathBuf;
use std::time::Duration;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

/// A host directory a guest may use, given with `--dir HOST[::GUEST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    pub host: PathBuf,
    pub guest: String,
}

impl std::str::FromStr for Preopen {
    type Err = String;

    /// `HOST` (seen by the guest at the same path) or `HOST::GUEST`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, guest) = s.split_once("::").unwrap_or((s, s));
        if host.is_empty() || guest.is_empty() {
            return Err(format!("`{s}` is not HOST or HOST::GUEST"));
        }
        Ok(Self { host: host.into(), guest: guest.into() })
    }
}

/// What a guest may reach beyond its own memory. Empty by default: no files, no environment,
/// and never the network (guests speak to clients only through the host's `net`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    pub dirs: Vec<Preopen>,
    pub env: Vec<(String, String)>,
}

/// Something a guest asked for during a call, applied by the dispatcher once the call returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Send(u64, Vec<u8>),
    Close(u64),
    SetTimer(u64, Duration),
    CancelTimer(u64),
}

/// The host side of one instance's store.
pub struct InstanceState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    pub(crate) effects: Vec<Effect>,
}

impl std::fmt::Debug for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceState")
            .field("effects", &self.effects.len())
            .finish_non_exhaustive()
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl crate::bindings::tasuki::server::types::Host for InstanceState {}

/// A guest call that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The guest returned an error value: it refused, and the instance is still usable.
    #[error("{0}")]
    Refused(String),
    /// The guest trapped or ran past its deadline: the instance is unusable from now on.
    #[error("trapped: {0}")]
    Trap(String),
}

fn trap(e: wasmtime::Error) -> CallError {
    CallError::Trap(describe_trap(&e))
}

/// A trap's message, with the deadline case said in words.
pub(crate) fn describe_trap(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => "ran past its deadline".to_string(),
        _ => format!("{e:#}"),
    }
}

/// A live instance of an app version.
pub struct Instance {
    store: Store<InstanceState>,
    server: Server,
    /// Epoch ticks an event may run.
    call_deadline: u64,
    /// Epoch ticks a state call may run.
    state_deadline: u64,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").finish_non_exhaustive()
    }
}

impl Instance {
    /// Instantiates `version` with only what its [`Sandbox`] grants: no network ever, no files
    /// or environment unless given. Guest stderr goes to the host's stderr, so a guest panic
    /// message is not lost. The guest's wall clock is the host's [`crate::clock::EventClock`].
    pub fn new(version: &Version) -> Result<Self, CallError> {
        let runtime = &version.runtime;
        let mut wasi = WasiCtx::builder();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .inherit_stderr()
            .wall_clock(runtime.clock.clone());
        if let Some(seed) = runtime.deterministic {
            let bytes: Vec<u8> =
                seed.to_le_bytes().iter().chain(&(!seed).to_le_bytes()).copied().collect();
            wasi.monotonic_clock(runtime.clock.clone())
                .secure_random(wasmtime_wasi::Deterministic::new(bytes.clone()))
                .insecure_random(wasmtime_wasi::Deterministic::new(bytes))
                .insecure_random_seed(u128::from(seed));
        }
        for (key, value) in &runtime.sandbox.env {
            wasi.env(key, value);
        }
        for dir in &runtime.sandbox.dirs {
            wasi.preopened_dir(&dir.host, &dir.guest, FsPerms::ReadWrite).map_err(|e| {
                CallError::Trap(format!("cannot open --dir {}: {e:#}", dir.host.display()))
            })?;
        }
        let state = InstanceState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(runtime.limits.memory)
                .instances(64)
                .build(),
            effects: Vec::new(),
        };
        let mut store = Store::new(&runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(limits::ticks(runtime.limits.upgrade_deadline));
        let server = version.pre.instantiate(&mut store).map_err(trap)?;
        let call_deadline = limits::ticks(runtime.limits.call_deadline);
        let state_deadline = limits::ticks(runtime.limits.upgrade_deadline);
        Ok(Self { store, server, call_deadline, state_deadline })
    }

    fn event(&mut self) {
        self.store.set_epoch_deadline(self.call_deadline);
    }

    fn state_call(&mut self) {
        self.store.set_epoch_deadline(self.state_deadline);
    }

    /// What the guest asked for since the last drain.
    pub fn take_effects(&mut self) -> std::vec::Drain<'_, Effect> {
        self.store.data_mut().effects.drain(..)
    }

    /// Keeps what `import-state` asked for (timers, mostly) for the dispatcher, which applies
    /// it when the loop starts; sends to connections that do not exist yet go nowhere.
    pub fn discard_effects_before_start(&mut self) {
        self.store
            .data_mut()
            .effects
            .retain(|e| matches!(e, Effect::SetTimer(..) | Effect::CancelTimer(..)));
    }

    /// Drops whatever the guest asked for (used when an upgrade rolls back).
    pub fn discard_effects(&mut self) {
        self.store.data_mut().effects.clear();
    }

    pub fn init(&mut self, args: &[String]) -> Result<(), CallError> {
        self.state_call();
        self.server
            .tasuki_server_app()
            .call_init(&mut self.store, args)
            .map_err(trap)?
            .map_err(CallError::Refused)
    }

    pub fn describe(&mut self) -> Result<AppInfo, CallError> {
        self.state_call();
        self.server.tasuki_server_state().call_describe(&mut self.store).map_err(trap)
    }

    pub fn export_state(&mut self) -> Result<Snapshot, CallError> {
        self.state_call();
        self.server
            .tasuki_server_state()
            .call_export_state(&mut self.store)
            .map_err(trap)?
            .map_err(CallError::Refused)
    }

    pub fn import_state(
        &mut self,
        snapshot: &Snapshot,
        live: &[ConnInfo],
    ) -> Result<(), CallError> {
        self.state_call();
        self.server
            .tasuki_server_state()
            .call_import_state(&mut self.store, snapshot, live)
            .map_err(trap)?
            .map_err(CallError::Refused)
    }

    pub fn on_connect(&mut self, conn: &ConnInfo) -> Result<(), CallError> {
        self.event();
        self.server.tasuki_server_app().call_on_connect(&mut self.store, conn).map_err(trap)
    }

    pub fn on_data(&mut self, conn: u64, data: &[u8]) -> Result<(), CallError> {
        self.event();
        self.server.tasuki_server_app().call_on_data(&mut self.store, conn, data).map_err(trap)
    }

    pub fn on_disconnect(&mut self, conn: u64) -> Result<(), CallError> {
        self.event();
        self.server.tasuki_server_app().call_on_disconnect(&mut self.store, conn).map_err(trap)
    }

    pub fn on_timer(&mut self, id: u64) -> Result<(), CallError> {
        self.event();
        self.server.tasuki_server_app().call_on_timer(&mut self.store, id).map_err(trap)
    }
}

/// Total bytes of state in a snapshot.
pub fn snapshot_bytes(snapshot: &Snapshot) -> u64 {
    snapshot.sections.iter().map(|s| s.bytes.len() as u64).sum()
}

//! Once per instance: a store, the guest's exports, and what its imports asked the host to do.
//!
//! Guest-visible errors (an `init` or `import-state` that returns `err`) and traps (a guest
//! fault, a missed deadline) are kept apart: the first is the app refusing, the second means this
//! instance can never be entered again.

use crate::bindings::{AppInfo, ConnInfo, Server, Snapshot};
use crate::limits::{self, EVENT_DEADLINE, MEMORY_LIMIT, STATE_DEADLINE};
use crate::version::Version;
use std::time::Duration;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

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
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance").finish_non_exhaustive()
    }
}

impl Instance {
    /// Instantiates `version` with no ambient authority: no files, no network, no environment.
    /// Guest stderr goes to the host's stderr, so a guest panic message is not lost.
    pub fn new(version: &Version) -> Result<Self, CallError> {
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .inherit_stderr()
            .build();
        let state = InstanceState {
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new().memory_size(MEMORY_LIMIT).instances(64).build(),
            effects: Vec::new(),
        };
        let mut store = Store::new(&version.runtime.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(limits::ticks(STATE_DEADLINE));
        let server = version.pre.instantiate(&mut store).map_err(trap)?;
        Ok(Self { store, server })
    }

    fn deadline(&mut self, d: Duration) {
        self.store.set_epoch_deadline(limits::ticks(d));
    }

    /// What the guest asked for since the last drain.
    pub fn take_effects(&mut self) -> std::vec::Drain<'_, Effect> {
        self.store.data_mut().effects.drain(..)
    }

    /// Drops whatever the guest asked for (used when an upgrade rolls back).
    pub fn discard_effects(&mut self) {
        self.store.data_mut().effects.clear();
    }

    pub fn init(&mut self, args: &[String]) -> Result<(), CallError> {
        self.deadline(STATE_DEADLINE);
        self.server
            .tasuki_server_app()
            .call_init(&mut self.store, args)
            .map_err(trap)?
            .map_err(CallError::Refused)
    }

    pub fn describe(&mut self) -> Result<AppInfo, CallError> {
        self.deadline(STATE_DEADLINE);
        self.server.tasuki_server_state().call_describe(&mut self.store).map_err(trap)
    }

    pub fn export_state(&mut self) -> Result<Snapshot, CallError> {
        self.deadline(STATE_DEADLINE);
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
        self.deadline(STATE_DEADLINE);
        self.server
            .tasuki_server_state()
            .call_import_state(&mut self.store, snapshot, live)
            .map_err(trap)?
            .map_err(CallError::Refused)
    }

    pub fn on_connect(&mut self, conn: &ConnInfo) -> Result<(), CallError> {
        self.deadline(EVENT_DEADLINE);
        self.server.tasuki_server_app().call_on_connect(&mut self.store, conn).map_err(trap)
    }

    pub fn on_data(&mut self, conn: u64, data: &[u8]) -> Result<(), CallError> {
        self.deadline(EVENT_DEADLINE);
        self.server.tasuki_server_app().call_on_data(&mut self.store, conn, data).map_err(trap)
    }

    pub fn on_disconnect(&mut self, conn: u64) -> Result<(), CallError> {
        self.deadline(EVENT_DEADLINE);
        self.server.tasuki_server_app().call_on_disconnect(&mut self.store, conn).map_err(trap)
    }

    pub fn on_timer(&mut self, id: u64) -> Result<(), CallError> {
        self.deadline(EVENT_DEADLINE);
        self.server.tasuki_server_app().call_on_timer(&mut self.store, id).map_err(trap)
    }
}

/// Total bytes of state in a snapshot.
pub fn snapshot_bytes(snapshot: &Snapshot) -> u64 {
    snapshot.sections.iter().map(|s| s.bytes.len() as u64).sum()
}

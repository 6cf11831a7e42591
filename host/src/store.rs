//! What a wasmtime store holds for the host: the WASI context, the resource table, the memory
//! limiter, and — for a server instance — the effects its imports queued during a call.
//!
//! Kept apart from [`crate::instance`] and [`crate::transformer`] so the engine's linkers
//! ([`crate::runtime`]) can name these types without depending on what uses them.

use std::time::Duration;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Something a guest asked for during a call, applied by the dispatcher once the call returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// `net.send(conn, bytes)`.
    Send(u64, Vec<u8>),
    /// `net.close(conn)`.
    Close(u64),
    /// The call queued more output than one call may ([`InstanceState::call_output_limit`]):
    /// the connection whose bytes passed it is dropped, and the app hears of it, as if the
    /// client had gone.
    CutOff(u64),
    /// `timers.set(id, after)`: fire `on-timer(id)` once, `after` from the event's time.
    SetTimer(u64, Duration),
    /// `timers.cancel(id)`.
    CancelTimer(u64),
}

/// The host side of one server instance's store.
pub struct InstanceState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) effects: Vec<Effect>,
    /// Bytes of `Send` effects in `effects`.
    pub(crate) call_output: usize,
    /// The most output one call may queue, over all connections: a connection is closed at
    /// this much queued anyway ([`crate::limits::Limits::output_limit`]), so a guest that
    /// queues more in one call must not hold it in the host's memory meanwhile.
    pub(crate) call_output_limit: usize,
    /// Connections cut off during this call; what the guest sends them after is dropped.
    pub(crate) cut_off: Vec<u64>,
    /// `--max-connections`, for `host-info`.
    pub(crate) max_connections: usize,
    /// `--query-buffer`, for `host-info`.
    pub(crate) input_limit: usize,
    /// The bound on all connections' unconsumed input, for `host-info`.
    pub(crate) input_total: u64,
}

impl std::fmt::Debug for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceState")
            .field("effects", &self.effects.len())
            .finish_non_exhaustive()
    }
}

impl InstanceState {
    /// Hands over what the guest asked for since the last call, and starts counting anew.
    pub(crate) fn take_effects(&mut self) -> std::vec::Drain<'_, Effect> {
        self.call_output = 0;
        self.cut_off.clear();
        self.effects.drain(..)
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl crate::bindings::tasuki::server::types::Host for InstanceState {}

/// A transformer's store: WASI that grants nothing, and the memory cap.
pub struct TransformState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
}

impl std::fmt::Debug for TransformState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransformState").finish_non_exhaustive()
    }
}

impl WasiView for TransformState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

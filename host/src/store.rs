//! What a wasmtime store holds for the host: the WASI context, the resource table, the memory
//! limiter, and — for a server instance — the effects its imports queued during a call.
//!
//! Kept apart from [`crate::instance`] and [`crate::transformer`] so the engine's linkers
//! ([`crate::runtime`]) can name these types without depending on what uses them.

use crate::limits::{MAX_INSTANCES, MAX_MEMORIES, MAX_TABLE_ELEMENTS, MAX_TABLES};
use std::time::Duration;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// What one store may take: `--memory-limit` bytes of linear memory *in total* over every
/// memory of every core instance in the component (wasmtime's `StoreLimits` bounds each memory
/// separately, so a component with several memories could take several times the limit), and
/// bounded counts of instances, memories, tables and table elements.
#[derive(Debug)]
pub struct Limiter {
    memory: usize,
    /// Linear memory granted so far, over all memories.
    used: usize,
    /// The last growth granted, taken back if the growth then fails.
    last_grant: usize,
}

impl Limiter {
    /// A limiter for at most `memory` bytes of linear memory in all.
    pub fn new(memory: usize) -> Self {
        Self { memory, used: 0, last_grant: 0 }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grant = desired.saturating_sub(current);
        let used = self.used.saturating_add(grant);
        if used > self.memory || maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        self.used = used;
        self.last_grant = grant;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.used -= std::mem::take(&mut self.last_grant);
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS && maximum.is_none_or(|max| desired <= max))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// Something a guest asked for during a call, applied by the dispatcher once the call returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// `net.send(conn, bytes)`.
    Send(u64, Vec<u8>),
    /// `net.close(conn)`.
    Close(u64),
    /// `net.notify-writable(conn)`: call `on-writable(conn, …)` once its queued output drains
    /// to half of `--output-buffer`, and hold its input until then.
    NotifyWritable(u64),
    /// The call queued more output than one call may ([`InstanceState::call_output_limit`]):
    /// the connection whose bytes passed it is dropped, and the app hears of it, as if the
    /// client had gone.
    CutOff(u64),
    /// `timers.set(id, after)`: fire `on-timer(id)` once, `after` from the event's time.
    SetTimer(u64, Duration),
    /// `timers.cancel(id)`.
    CancelTimer(u64),
    /// `listeners.listen(id, port)`: open listener `id`, and answer with `on-listening`.
    Listen(u64, u16),
    /// `listeners.unlisten(id)`.
    Unlisten(u64),
}

/// The host side of one server instance's store.
pub struct InstanceState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: Limiter,
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
    /// `--output-buffer`, for `host-info`.
    pub(crate) output_buffer: usize,
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
    pub(crate) limits: Limiter,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_limit_is_a_total_over_all_memories() {
        const MIB: usize = 1 << 20;
        let mut limiter = Limiter::new(100 * MIB);
        assert!(limiter.memory_growing(0, 60 * MIB, None).unwrap(), "the first memory");
        assert!(!limiter.memory_growing(0, 60 * MIB, None).unwrap(), "a second one past 100 MiB");
        assert!(limiter.memory_growing(0, 40 * MIB, None).unwrap(), "a second one up to it");
        assert!(!limiter.memory_growing(60 * MIB, 61 * MIB, None).unwrap(), "no more room");
        limiter.memory_grow_failed(wasmtime::Error::msg("out of memory")).unwrap();
        assert!(limiter.memory_growing(60 * MIB, 100 * MIB, None).unwrap(), "a failed grow frees");
        assert!(!limiter.memory_growing(0, 2 * MIB, Some(MIB)).unwrap(), "a memory's own maximum");
    }

    #[test]
    fn tables_and_counts_are_bounded() {
        let mut limiter = Limiter::new(0);
        assert!(limiter.table_growing(0, MAX_TABLE_ELEMENTS, None).unwrap());
        assert!(!limiter.table_growing(0, MAX_TABLE_ELEMENTS + 1, None).unwrap());
        assert!(!limiter.table_growing(0, 20, Some(10)).unwrap());
        assert_eq!(
            (limiter.instances(), limiter.memories(), limiter.tables()),
            (MAX_INSTANCES, MAX_MEMORIES, MAX_TABLES)
        );
    }
}

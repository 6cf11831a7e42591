//! `tasuki:server/host-info`: what only the host knows (its resident memory, its connection
//! limit, the bounds on unconsumed input and queued output), read when the guest asks (kv's
//! `INFO`, the SDK). All but the resident memory are fixed for the host's life, so a replay
//! after a trap reads what the first run read.

use crate::bindings::tasuki::server::host_info;
use crate::store::InstanceState;

impl host_info::Host for InstanceState {
    fn resident_memory(&mut self) -> u64 {
        resident_memory()
    }

    fn max_connections(&mut self) -> u32 {
        u32::try_from(self.max_connections).unwrap_or(u32::MAX)
    }

    fn input_limit(&mut self) -> u64 {
        self.input_limit as u64
    }

    fn input_total(&mut self) -> u64 {
        self.input_total
    }

    fn output_buffer(&mut self) -> u64 {
        self.output_buffer as u64
    }
}

/// The process's resident memory in bytes: the second field of `/proc/self/statm` (pages)
/// times the page size; 0 where that file is missing.
pub(crate) fn resident_memory() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    pages * rustix::param::page_size() as u64
}

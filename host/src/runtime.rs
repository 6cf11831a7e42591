//! Once per process: the wasmtime engine, the linker with every import a server may use, and the
//! epoch ticker that turns deadlines into traps.

use crate::bindings::Server;
use crate::instance::InstanceState;
use crate::limits::EPOCH_TICK;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

/// The engine and linker shared by every version and instance of this host.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<InstanceState>>,
    /// Held only for its `Drop`: the ticker runs while any clone of this runtime lives.
    _ticker: Arc<Ticker>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

/// Stops the epoch ticker thread when the last [`Runtime`] clone goes.
#[derive(Debug)]
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Builds the engine (epoch interruption on, so every call can have a deadline) and links
    /// `tasuki:server` plus WASI p2. WASI is linked because Rust's std imports it; what a guest
    /// may reach through it is decided per instance, and by default that is nothing.
    pub fn new() -> wasmtime::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        Server::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;

        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = Arc::clone(&stop);
        std::thread::Builder::new().name("tasuki-epoch".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })?;

        Ok(Self { engine, linker: Arc::new(linker), _ticker: Arc::new(Ticker { stop }) })
    }
}

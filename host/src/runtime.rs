//! Once per process: the wasmtime engine, the linker with every import a server may use, and the
//! epoch ticker that turns deadlines into traps.

use crate::bindings::Server;
use crate::clock::EventClock;
use crate::limits::{EPOCH_TICK, Limits};
use crate::sandbox::{Preopen, Sandbox};
use crate::store::{InstanceState, TransformState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

/// How many compiled components [`Runtime::compile`] keeps: the running version, the one before,
/// and a few candidates.
const COMPILED_CACHE_LEN: usize = 4;

/// A component and the bytes it was compiled from.
type Compiled = (Arc<[u8]>, Component);

/// The engine and linker shared by every version and instance of this host.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<InstanceState>>,
    pub(crate) transform_linker: Arc<Linker<TransformState>>,
    /// Recently compiled components by content: upgrading to a file compiled before (a
    /// rollback and retry, v2 -> v2) skips the compiler.
    compiled: Arc<Mutex<Vec<Compiled>>>,
    pub(crate) limits: Arc<Limits>,
    pub(crate) sandbox: Arc<Sandbox>,
    pub(crate) clock: EventClock,
    /// Set in the simulator: every source of nondeterminism a guest can read is fixed
    /// (the monotonic clock follows the virtual clock, randomness comes from this seed).
    pub(crate) deterministic: Option<u64>,
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
    pub fn new(limits: Limits, sandbox: Sandbox) -> wasmtime::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        // `TASUKI_PERFMAP=1` writes /tmp/perf-PID.map so that `perf` names the guests' functions
        // (what `wasmtime run --profile perfmap` does): bench/run profiles a transfer with it.
        if std::env::var_os("TASUKI_PERFMAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        Server::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;

        // Transformers get WASI too (Rust's std needs it); each store grants nothing through it.
        let mut transform_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut transform_linker)?;
        let transform_linker = Arc::new(transform_linker);
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

        Ok(Self {
            engine,
            linker: Arc::new(linker),
            transform_linker,
            compiled: Arc::default(),
            limits: Arc::new(limits),
            sandbox: Arc::new(sandbox),
            clock: EventClock::default(),
            deterministic: None,
            _ticker: Arc::new(Ticker { stop }),
        })
    }

    /// A runtime for the simulator: like [`Runtime::new`], with every clock virtual and
    /// randomness drawn from `seed`.
    pub fn simulated(limits: Limits, seed: u64, dirs: Vec<Preopen>) -> wasmtime::Result<Self> {
        let mut runtime = Self::new(limits, Sandbox { dirs, env: Vec::new() })?;
        runtime.deterministic = Some(seed);
        runtime.clock = EventClock::seeded(seed);
        Ok(runtime)
    }

    /// Compiles `bytes`, or returns the component compiled from the same bytes recently.
    pub(crate) fn compile(&self, bytes: &[u8]) -> wasmtime::Result<Component> {
        let lock = || self.compiled.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((_, component)) = lock().iter().find(|(b, _)| **b == *bytes) {
            return Ok(component.clone());
        }
        let component = Component::new(&self.engine, bytes)?;
        let mut cache = lock();
        if cache.len() == COMPILED_CACHE_LEN {
            cache.remove(0);
        }
        cache.push((bytes.into(), component.clone()));
        Ok(component)
    }
}

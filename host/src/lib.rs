//! tasuki: runs network servers compiled to WebAssembly components, and replaces a running
//! version with a newer one by state transfer, without dropping a connection.
//!
//! # Layout
//! Leaves first; each module uses only those above it.
//! - [`limits`], [`clock`], [`bindings`], [`sandbox`]: every bound put on a guest, named; the
//!   wall clock guests read, frozen per event; the generated WIT bindings; what a guest may reach.
//! - [`store`]: what a wasmtime store holds — WASI, the memory limiter, the effects a call
//!   queued. `net`, `timers`, `host_info` and [`listeners`] are the host side of the
//!   `tasuki:server` imports (one module per interface); `timers` also holds the host's timer
//!   queue, `listeners` the operator's bounds on run-time listeners and what an instance
//!   believes about them.
//! - [`runtime`]: once per process — the engine, the linkers, the epoch ticker.
//! - [`version`]: once per app version — read, validate, compile, link.
//! - [`instance`]: once per instance — a store and the guest's exports, with a deadline on every
//!   call; guest refusals and typed traps kept apart.
//! - [`transformer`]: sandboxed state transformers and the pipeline that chains them.
//! - [`snapshot`]: snapshot files — the documented on-disk format of a state.
//! - `spill`: the checkpoint's chunks and the journal's bytes, in unnamed files rather than
//!   the heap.
//! - `journal`: the recovery journal's index of events, each encoded in a few bytes.
//! - `recovery`: a checkpoint and a journal of events, and the rebuild that replays them
//!   (leaving out input that makes the replay trap, and rebuilding the timer queue).
//! - `live`: **the live version** — version, instance, app info and recovery state as one
//!   value; every commit, restore and rebuild replaces it in one move.
//! - [`precopy`]: an upgrade's pre-copy session — chunks across between events, and when to
//!   pause.
//! - [`upgrade`]: the upgrade transaction — prepare off the loop, then export, transform,
//!   import, commit or roll back at a boundary — and its report. No sockets here.
//! - [`status`]: what `tasuki status` shows, kept up to date by the dispatcher.
//! - `dispatch`: one event at a time into the live version, effects, timers, checkpoints,
//!   upgrades — behind two seams, the network and the clock — and what happens when the
//!   instance traps: which connection to close, the rebuild, a timer's re-fire, a fresh
//!   restart as the last resort, and the record `tasuki status` shows.
//! - `conn` and `event_loop`: the real side of those seams — sockets, their output buffers,
//!   mio readiness — on the dispatcher's thread.
//! - [`sim`]: the deterministic simulator — the trace format, virtual connections and a virtual
//!   clock plugged into the same dispatcher, and the report.
//! - [`control`]: the control socket (`tasuki upgrade`, `tasuki status`) and its client.
//! - [`host`]: [`Host::start`], which puts the pieces together; the CLI is a thin shell over it.

pub mod bindings;
pub mod canary;
pub mod catchup;
pub mod clock;
mod conn;
pub mod control;
mod dispatch;
mod event_loop;
pub mod host;
mod host_info;
pub mod instance;
mod journal;
pub mod limits;
pub mod listeners;
mod live;
mod net;
pub mod precopy;
mod recovery;
pub mod runtime;
pub mod sandbox;
pub mod sim;
pub mod snapshot;
mod spill;
pub mod status;
pub mod store;
mod timers;
pub mod transformer;
pub mod upgrade;
pub mod version;

pub use host::{Host, HostConfig, RunningHost};
pub use upgrade::{UpgradeError, UpgradeReport};

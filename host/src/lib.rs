//! tasuki: runs network servers compiled to WebAssembly components, and replaces a running
//! version with a newer one by state transfer, without dropping a connection.
//!
//! # Layout
//! - [`runtime`]: once per process — the engine, the linker, the epoch ticker.
//! - [`version`]: once per app version — read, validate, compile, link.
//! - [`instance`]: once per instance — a store and the guest's exports, with a deadline on every
//!   call; what the guest asked for comes back as [`instance::Effect`]s.
//! - `net`, `timers`: the host side of the `tasuki:server` imports (one module per interface).
//! - [`dispatcher`]: the event loop that owns listeners, connections and timers, feeds events to
//!   the live instance, and performs the swap at an event boundary.
//! - `recovery`: a checkpoint and a journal of events, so a trapped instance is rebuilt to the
//!   state it had just before the event that trapped.
//! - [`clock`]: the wall clock guests read, frozen per event so a replay sees the same time.
//! - [`sim`]: the deterministic simulator — traces of client events against app versions, with
//!   an upgrade at every event boundary.
//! - [`snapshot`]: snapshot files — the documented on-disk format of a state.
//! - [`transformer`]: sandboxed state transformers and the pipeline that chains them.
//! - [`upgrade`]: the upgrade transaction — prepare off the loop, pause, export, import, commit or
//!   roll back — and its report.
//! - [`control`]: the control socket (`tasuki upgrade`, `tasuki status`) and its client.
//! - [`host`]: [`Host::start`], which puts the pieces together; the CLI is a thin shell over it.
//! - [`limits`]: every bound put on a guest, named.

pub mod bindings;
pub mod clock;
pub mod control;
mod dispatcher;
pub mod host;
pub mod instance;
pub mod limits;
mod net;
mod recovery;
pub mod runtime;
pub mod sim;
pub mod snapshot;
pub mod status;
mod timers;
pub mod transformer;
pub mod upgrade;
pub mod version;

pub use host::{Host, HostConfig, RunningHost};
pub use upgrade::{UpgradeError, UpgradeReport};

//! The tasuki guest SDK: write a server that tasuki can run and hot-swap, as plain Rust.
//!
//! An app is a type that holds its whole transferable state, derives serde's `Serialize`,
//! `Deserialize` and `Default`, and implements [`Server`]. One line, `tasuki_guest::export!(App);`,
//! turns it into a component of the `tasuki:server/server` world; no binding code is written by
//! hand. The same type runs natively in a plain `cargo test` under a [`testing::TestHost`]:
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use tasuki_guest::frame::{Framing, Lines};
//! use tasuki_guest::{ConnId, Ctx, Server};
//!
//! /// Lines of at most 1 KiB, ended by LF or CRLF.
//! const LINES: Lines = Lines::new(1024);
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Echo {
//!     lines: u64,
//! }
//!
//! impl Server for Echo {
//!     const NAME: &'static str = "echo";
//!     const STATE_VERSION: u32 = 1;
//!
//!     fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
//!         match LINES.next(input) {
//!             Ok(Some(line)) => {
//!                 self.lines += 1;
//!                 ctx.send(conn, &input[..line.consumed]);
//!                 line.consumed
//!             }
//!             Ok(None) => 0,
//!             Err(too_long) => {
//!                 ctx.send(conn, format!("error: {too_long}\n").as_bytes());
//!                 ctx.close(conn);
//!                 input.len()
//!             }
//!         }
//!     }
//! }
//!
//! tasuki_guest::export!(Echo);
//!
//! // A pipeline in one read is answered whole: the SDK offers the input again while the app
//! // consumes some, so the app can take one line per call.
//! let mut host = tasuki_guest::testing::TestHost::<Echo>::new();
//! let a = host.connect();
//! host.send(a, "one\ntwo\nthree\n");
//! assert_eq!(host.read(a), b"one\ntwo\nthree\n");
//! ```
//!
//! # What `tasuki status` calls the app
//!
//! `export!` reports the app as [`Server::NAME`] and the `version` of the crate that invokes it
//! (its `Cargo.toml`, read as `CARGO_PKG_VERSION` when the component is built): `kv 5.0.0` for
//! `guests/kv-v5`. `tasuki status`, `tasuki upgrade`'s report and the host's log show that pair,
//! and the host refuses to upgrade an app to a component whose name differs. Bump the crate's
//! version with each release, so that the operator can tell which one is serving.
//!
//! # How input reaches the app
//!
//! The host hands over bytes as they arrive, in reads of any size. The SDK keeps, per
//! connection, what the app has not consumed, and calls [`Server::on_data`] with all of it; it
//! calls again at once while a call consumes something and input is left, so an app may handle
//! one message per call. [`frame`] finds where messages end ([`frame::Lines`],
//! [`frame::LengthPrefixed`]) and refuses messages past a maximum length, so that no app
//! hand-writes its parse loop.
//!
//! # Back-pressure, and streaming a payload
//!
//! The SDK keeps each connection's send window: what the host takes before the output queued
//! for it passes `--output-buffer` (8 MiB by default). It offers input in slices whose replies
//! fit what is left of the window, and stops once the window is used up: the rest of the input
//! waits, the host holds what the client sends meanwhile, and both go on when the client has
//! read half of what was queued. So a client that pipelines requests and reads slowly is
//! answered as fast as it reads, whether the app takes one request per call or a whole batch,
//! and other clients are not kept waiting by a call that builds hundreds of megabytes of
//! replies. An app needs no code for this. Slices cost calls, though; an app that answers a
//! batch per call and can stop partway ([`Server::STOPS_AT_OUTPUT_LIMIT`]) is offered all its
//! input at once and stops at [`Ctx::output_limit`] itself.
//!
//! [`Ctx::stream`] sends a payload of any size as one call — bytes, a file by path, or chunks
//! the app makes on demand ([`Source`], [`Server::next_chunk`]) — a window at a time, in order
//! with the connection's other output; where it stands crosses an upgrade, and the new version
//! sends the rest. [`Server::on_stream_end`] says when it ended.
//!
//! # What crosses an upgrade
//!
//! On an upgrade the SDK exports the app's state (named [`Server::NAME`], at
//! [`Server::STATE_VERSION`], encoded with postcard) and its own per-connection sections:
//! `tasuki.conns`, the input each connection sent that the app has not consumed yet;
//! `tasuki.windows`, each connection's send window; while streams are being sent,
//! `tasuki.streams`, what is left of them; and while the app has listeners it opened at run
//! time ([`Ctx::listen`]) or connections accepted on them, `tasuki.listeners`; while
//! connections have sessions ([`Ctx::session`]), `tasuki.sessions`. A request half-received
//! when the old version stops is completed under the new one, a stream half-sent goes on from
//! where it stood, and a connection keeps its session. Fields marked `#[serde(skip)]` do not
//! cross: rebuild them in [`Server::resumed`].
//!
//! # Migrations
//!
//! A release that changes its state type bumps [`Server::STATE_VERSION`] and lists, in
//! [`Server::migrations`], how to read each older version it still accepts. The old type is kept
//! as a frozen copy in the new release (postcard is not self-describing: the copy must match the
//! old release field for field). kv keeps those of its released versions in one crate,
//! `guests/kv-states`, for its transformers and later releases.
//!
//! # Layout
//! - [`Server`], [`Ctx`]: what an app implements and what it calls.
//! - [`frame`]: where a message ends in a connection's input.
//! - [`stream`]: payloads sent a window at a time ([`Ctx::stream`]).
//! - [`session`]: a typed value per connection that crosses an upgrade ([`Ctx::session`]).
//! - [`testing`]: a stand-in host for driving a [`Server`] in a native `cargo test`.
//! - [`Migrations`]: older state versions an app accepts.
//! - [`Transform`], [`export_transform!`]: a state transformer, for when a release should not
//!   carry the old state type itself.
//! - [`heap`]: the memory the app uses, as its allocator counts it.
//! - `runtime` (hidden): the glue between the generated bindings and a [`Server`], and between
//!   a [`Server`] and a [`testing::TestHost`].
#![deny(missing_docs)]

// The generated bindings name this crate by its path, from inside it as from the apps.
extern crate self as tasuki_guest;

mod collection;
mod ctx;
pub mod frame;
pub mod heap;
mod list;
pub mod map;
mod migrations;
#[doc(hidden)]
pub mod precopy;
#[doc(hidden)]
pub mod runtime;
pub mod session;
pub mod stream;
mod table;
pub mod testing;
#[cfg(test)]
mod tests;
pub mod transform;

pub use ctx::{ConnId, ConnInfo, Ctx, ListenError, ListenerId};
pub use list::List;
pub use session::{Session, SessionType};
pub use stream::{Source, StreamEnd};

/// Figures only the host knows, for a server that reports them (as redis's `INFO` does). Outside
/// a host (an app's native unit tests) they read what the [`testing::TestHost`] running the
/// event was given ([`testing::HostInfo`]), 0 by default.
pub mod host {
    /// The host process's resident memory, in bytes (`VmRSS`); 0 where unknown.
    pub fn resident_memory() -> u64 {
        #[cfg(target_arch = "wasm32")]
        {
            crate::runtime::bindings::tasuki::server::host_info::resident_memory()
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            crate::testing::host_info().resident_memory
        }
    }

    /// The most input the app keeps unconsumed for one connection, in bytes (`tasuki run
    /// --query-buffer`): the SDK closes a connection that leaves more. Also the largest value a
    /// server should build from requests. 0 (no bound) outside a host.
    pub fn input_limit() -> u64 {
        #[cfg(target_arch = "wasm32")]
        {
            crate::runtime::bindings::tasuki::server::host_info::input_limit()
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            crate::testing::host_info().input_limit
        }
    }

    /// The most unconsumed input the app keeps for all its connections together, in bytes:
    /// past it the SDK closes the connection holding the most. 0 (no bound) outside a host.
    pub fn input_total() -> u64 {
        #[cfg(target_arch = "wasm32")]
        {
            crate::runtime::bindings::tasuki::server::host_info::input_total()
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            crate::testing::host_info().input_total
        }
    }

    /// Output the host queues for one connection before it stops handing over that
    /// connection's input (`tasuki run --output-buffer`), in bytes: a new connection's send
    /// window. 0 (no bound: the SDK never waits) outside a host unless the
    /// [`crate::testing::TestHost`] sets it.
    pub fn output_buffer() -> u64 {
        #[cfg(target_arch = "wasm32")]
        {
            crate::runtime::bindings::tasuki::server::host_info::output_buffer()
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            crate::testing::host_info().output_buffer
        }
    }

    /// The most connections the host keeps open at once (`tasuki run --max-connections`).
    pub fn max_connections() -> u32 {
        #[cfg(target_arch = "wasm32")]
        {
            crate::runtime::bindings::tasuki::server::host_info::max_connections()
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            crate::testing::host_info().max_connections
        }
    }
}
pub use map::{FixedState, Map};
pub use migrations::Migrations;
pub use transform::Transform;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The section name under which the SDK transfers unconsumed connection input.
pub const CONNS_SECTION: &str = "tasuki.conns";
/// The version of the [`CONNS_SECTION`] encoding.
pub const CONNS_SECTION_VERSION: u32 = 1;
/// The section of each connection's send window (back-pressure): what the host takes before
/// its queued output passes `--output-buffer`, and whether the SDK waits to be told it can
/// send more. A release built before back-pressure has no windows: the host drops this
/// section for it, which loses nothing (such a release never waits).
pub const WINDOWS_SECTION: &str = "tasuki.windows";
/// The section of the streams still being sent ([`Ctx::stream`]), written only while there
/// are some: a release that cannot carry them on (built before streams) refuses the import,
/// and the upgrade rolls back rather than cut a payload short.
pub const STREAMS_SECTION: &str = "tasuki.streams";
/// The version of the [`WINDOWS_SECTION`] and [`STREAMS_SECTION`] encodings.
pub const FLOW_SECTIONS_VERSION: u32 = 1;
/// The section of the listeners the app opened at run time ([`Ctx::listen`]) and of the
/// connections accepted on them, written only while there are some: a release built before
/// run-time listeners refuses the import, and the upgrade rolls back rather than leave
/// listeners no version knows.
pub const LISTENERS_SECTION: &str = "tasuki.listeners";
/// The version of the [`LISTENERS_SECTION`] encoding.
pub const LISTENERS_SECTION_VERSION: u32 = 1;
/// The section of the connections' sessions ([`Ctx::session`]), written while there are
/// some, at the version of the app's session type ([`Session::VERSION`]): a release that keeps
/// no sessions, or cannot read that version, is refused before the upgrade starts.
pub const SESSIONS_SECTION: &str = "tasuki.sessions";

/// A server tasuki can run. The implementing type *is* the transferable state.
///
/// Events come one at a time; between two of them the host may swap versions. Every method has a
/// default except [`Server::on_data`].
pub trait Server: Serialize + DeserializeOwned + Default + 'static {
    /// The app's name, the same in every release (`"kv"`). Also the name of its state section.
    const NAME: &'static str;
    /// The version of the state encoding this release writes. Bump it whenever the serialized
    /// shape of `Self` changes, and add a migration from the old one.
    const STATE_VERSION: u32;

    /// True if [`Server::on_data`] stops by itself once the connection's send window is used:
    /// it answers requests one after another and returns, with only what it answered
    /// consumed, as soon as `ctx.output(conn).len()` reaches [`Ctx::output_limit`] (after the
    /// request that reached it). The SDK then offers a connection's whole input in one call
    /// instead of in slices sized from the output each byte made so far (see the crate docs),
    /// so a pipelined batch costs one call: at `redis-benchmark -P 16` the extra calls of
    /// slicing cost kv about a quarter of its throughput. One event still makes at most a
    /// window of output plus one reply. False (the default) for an app that answers a batch
    /// without looking: offered whole, a pipeline of small requests for large replies would
    /// make all its replies in one call.
    const STOPS_AT_OUTPUT_LIMIT: bool = false;

    /// Runs once per instance, before any event: on a cold start, and in an upgrade before the
    /// pause (the imported state then replaces `self`). `args` are the host's `--arg` values.
    fn init(&mut self, ctx: &mut Ctx, args: &[String]) -> Result<(), String> {
        let _ = (ctx, args);
        Ok(())
    }

    /// A client connected.
    fn on_connect(&mut self, ctx: &mut Ctx, conn: &ConnInfo) {
        let _ = (ctx, conn);
    }

    /// Bytes arrived. `input` holds everything received on `conn` that earlier calls did not
    /// consume, followed by the new bytes. Return how many leading bytes were consumed (more
    /// than `input.len()` counts as all of it).
    ///
    /// While a call consumes something, input remains and the app has not closed `conn`
    /// ([`Ctx::close`]), the SDK calls again at once, in the same event, with what is left. So
    /// an app can handle one message per call (see [`frame`]) and a pipeline of them arriving
    /// in one read is answered whole. A call that consumes nothing ends the event; the SDK
    /// keeps the rest (across upgrades too) and offers it again when more bytes arrive.
    ///
    /// `input` may end before the bytes received do: the SDK offers a slice whose replies fit
    /// the connection's send window (unless the app stops by itself at the window, see
    /// [`Server::STOPS_AT_OUTPUT_LIMIT`]), and offers more once the client reads (see the crate
    /// docs). Treat its end as a network read's end — a message cut there is incomplete, so
    /// consume none of it — and the SDK offers a longer slice at once. The SDK also stops
    /// offering once the app starts a stream to `conn` ([`Ctx::stream`]), until it is sent.
    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize;

    /// `conn` left more input unconsumed than the host allows ([`host::input_limit`] for one
    /// connection, [`host::input_total`] for all): the SDK closes it and discards that input
    /// after this call. Queue a last word for the client here (kv answers as redis does).
    fn on_input_limit(&mut self, ctx: &mut Ctx, conn: ConnId) {
        let _ = (ctx, conn);
    }

    /// The client went away. Its unconsumed input is discarded after this call.
    fn on_disconnect(&mut self, ctx: &mut Ctx, conn: ConnId) {
        let _ = (ctx, conn);
    }

    /// The answer to [`Ctx::listen`]`(..)` that returned `id`: the address the listener is
    /// bound to, `ip:port` (tell the client its port: FTP's `227` reply to `PASV`, RFC 959,
    /// or `229` to `EPSV`, RFC 2428), or why it was not opened. Also called with
    /// [`ListenError::Lost`] for each listener open when the host restarted from a snapshot
    /// file. Connections accepted on it come to [`Server::on_connect`] with
    /// [`ConnInfo::listener_id`] `Some(id)`. The default does nothing.
    fn on_listening(&mut self, ctx: &mut Ctx, id: ListenerId, answer: Result<String, ListenError>) {
        let _ = (ctx, id, answer);
    }

    /// A timer armed with [`Ctx::set_timer`] fired (possibly armed by an earlier version).
    fn on_timer(&mut self, ctx: &mut Ctx, id: u64) {
        let _ = (ctx, id);
    }

    /// The next bytes of a [`Source::Chunks`] stream to `conn`: append to `out` the payload of
    /// stream `key` from byte `offset` (what was sent so far), at most about `max` bytes, as
    /// many as is convenient (the SDK calls again for more while the window allows). Append
    /// nothing to end the stream; an error ends it with [`StreamEnd::Failed`]. Called whenever
    /// the connection can take more, possibly by a later version than the one that started the
    /// stream, so the payload must follow from `key`, `offset` and the state. The default ends
    /// the stream at once.
    fn next_chunk(
        &mut self,
        conn: ConnId,
        key: &str,
        offset: u64,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let _ = (conn, key, offset, max, out);
        Ok(())
    }

    /// A stream started with [`Ctx::stream`] ended: sent whole, failed, or its connection
    /// went. Output queued here for `conn` goes after the streams still queued for it. Streams
    /// to one connection end in the order they were started.
    fn on_stream_end(&mut self, ctx: &mut Ctx, conn: ConnId, end: StreamEnd) {
        let _ = (ctx, conn, end);
    }

    /// Called after an upgrade imported this state, before the next event: rebuild what
    /// `#[serde(skip)]` left out, re-arm timers whose meaning changed. `fresh` is this instance
    /// as [`Server::init`] left it before the imported state replaced it: move over whatever
    /// `init` built (configuration from the arguments, tables, caches) instead of rebuilding it
    /// inside the pause.
    fn resumed(&mut self, ctx: &mut Ctx, fresh: Self) {
        let _ = (ctx, fresh);
    }

    /// Whether the state may be exported now. An app in the middle of something that must not
    /// be split across versions (a multi-event transaction) returns `Err(reason)`: the upgrade
    /// then rolls back with that reason, and the old version serves on.
    fn export_ready(&self) -> Result<(), String> {
        Ok(())
    }

    /// Whether a reply this release gives differently from the release it replaces is one it
    /// expects, so that a canary (`tasuki upgrade --canary`) takes the two as agreeing. Asked
    /// on the new version only when its output on a connection differed from the old one's:
    /// `request` is the connection's input in that event (empty at a connect, a timer or the
    /// end of the window), `old` and `new` what each version sent that the other has not
    /// matched. Declare what a release changes on purpose — a version string in an `INFO`
    /// reply, a command it newly supports that the old version refused — and nothing else:
    /// every other difference is what a canary is for. Must not change the state (it gets
    /// `&self`). The default declares none.
    fn expected_difference(&self, request: &[u8], old: &[u8], new: &[u8]) -> bool {
        let _ = (request, old, new);
        false
    }

    /// Older state versions this release can read, and how.
    fn migrations() -> Migrations<Self> {
        Migrations::none()
    }

    /// The per-connection session type this release keeps, if any:
    /// `Some(SessionType::of::<MySession>())`. Its values are reached with [`Ctx::session`]
    /// and [`Ctx::with_session`], made per connection on first use, dropped with the
    /// connection, and transferred and migrated apart from the app state (see [`session`]).
    /// The default keeps none.
    fn session_type() -> Option<SessionType> {
        None
    }
}

/// Exports a [`Server`] as a `tasuki:server/server` component. Use it once, in the app's
/// `cdylib` crate: `tasuki_guest::export!(MyServer);`. The component describes itself as
/// [`Server::NAME`] at the invoking crate's `CARGO_PKG_VERSION` (what `tasuki status` shows).
#[macro_export]
macro_rules! export {
    ($server:ty) => {
        const _: () = {
            use $crate::runtime::bindings::exports::tasuki::server as __exports;
            use $crate::runtime::bindings::tasuki::server::types as __types;

            struct __TasukiExport;

            ::std::thread_local! {
                static RUNTIME: ::std::cell::RefCell<$crate::runtime::Runtime<$server>> =
                    ::std::cell::RefCell::new($crate::runtime::Runtime::new(
                        ::core::env!("CARGO_PKG_VERSION"),
                    ));
            }

            impl __exports::app::Guest for __TasukiExport {
                fn init(args: ::std::vec::Vec<::std::string::String>) -> ::core::result::Result<(), ::std::string::String> {
                    RUNTIME.with_borrow_mut(|rt| rt.init(args))
                }
                fn on_connect(conn: __types::ConnInfo) {
                    RUNTIME.with_borrow_mut(|rt| rt.on_connect(conn))
                }
                fn on_data(conn: u64, data: ::std::vec::Vec<u8>) {
                    RUNTIME.with_borrow_mut(|rt| rt.on_data(conn, data))
                }
                fn on_disconnect(conn: u64) {
                    RUNTIME.with_borrow_mut(|rt| rt.on_disconnect(conn))
                }
                fn on_timer(id: u64) {
                    RUNTIME.with_borrow_mut(|rt| rt.on_timer(id))
                }
            }

            impl __exports::state::Guest for __TasukiExport {
                fn describe() -> __types::AppInfo {
                    RUNTIME.with_borrow(|rt| rt.describe())
                }
                fn export_state() -> ::core::result::Result<__types::Snapshot, ::std::string::String> {
                    RUNTIME.with_borrow(|rt| rt.export_state())
                }
                fn import_state(
                    snapshot: __types::Snapshot,
                    live: ::std::vec::Vec<__types::ConnInfo>,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    RUNTIME.with_borrow_mut(|rt| rt.import_state(snapshot, live))
                }
            }

            impl __exports::precopy::Guest for __TasukiExport {
                fn begin() -> ::core::result::Result<(), ::std::string::String> {
                    RUNTIME.with_borrow_mut(|rt| rt.precopy_begin())
                }
                fn next(max_bytes: u64) -> ::core::result::Result<__types::PrecopyBatch, ::std::string::String> {
                    RUNTIME.with_borrow(|rt| rt.precopy_next(max_bytes))
                }
                fn finish() -> ::core::result::Result<
                    (::std::vec::Vec<__types::Chunk>, __types::Snapshot),
                    ::std::string::String,
                > {
                    RUNTIME.with_borrow(|rt| rt.precopy_finish())
                }
                fn abort() {
                    RUNTIME.with_borrow_mut(|rt| rt.precopy_abort())
                }
                fn import_chunks(
                    chunks: ::std::vec::Vec<__types::Chunk>,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    RUNTIME.with_borrow_mut(|rt| rt.import_chunks(chunks))
                }
            }

            impl __exports::writable::Guest for __TasukiExport {
                fn on_writable(conn: u64, window: u64) {
                    RUNTIME.with_borrow_mut(|rt| rt.on_writable(conn, window))
                }
            }

            impl __exports::listening::Guest for __TasukiExport {
                fn on_listening(
                    id: u64,
                    answer: ::core::result::Result<::std::string::String, __types::ListenError>,
                ) {
                    let answer = $crate::runtime::listen_answer(answer);
                    RUNTIME.with_borrow_mut(|rt| rt.on_listening(id, answer))
                }
                fn on_accept(conn: __types::ConnInfo, listener: u64) {
                    RUNTIME.with_borrow_mut(|rt| rt.on_accept(conn, listener))
                }
                fn on_listeners_lost() {
                    RUNTIME.with_borrow_mut(|rt| rt.on_listeners_lost())
                }
            }

            impl __exports::memory::Guest for __TasukiExport {
                fn usage() -> __exports::memory::MemoryUsage {
                    __exports::memory::MemoryUsage {
                        heap_in_use: $crate::heap::in_use(),
                        linear_memory: $crate::heap::linear_memory(),
                    }
                }
            }

            impl __exports::canary::Guest for __TasukiExport {
                fn expected_difference(
                    request: ::std::vec::Vec<u8>,
                    old: ::std::vec::Vec<u8>,
                    new: ::std::vec::Vec<u8>,
                ) -> bool {
                    RUNTIME.with_borrow(|rt| rt.expected_difference(&request, &old, &new))
                }
            }

            $crate::__export_server_impl!(__TasukiExport with_types_in $crate::runtime::bindings);
        };
    };
}

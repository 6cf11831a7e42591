//! Every `bindgen!` of the host, in one place.
//!
//! The `server` world is generated with synchronous imports and exports: an instance lives on the
//! dispatcher thread and runs one call at a time, so async would only add cost to every event.

wasmtime::component::bindgen!({
    world: "tasuki:server/server",
    path: "../wit",
});

pub use self::exports::tasuki::server as server_exports;
pub use self::tasuki::server::types::{
    AppInfo, Chunk, ConnInfo, PrecopyBatch, Section, SectionSpec, Snapshot,
};

/// The `transformer` world. Its `types` are the server world's, so a snapshot moves between an
/// app and a transformer without conversion.
pub mod transformer {
    wasmtime::component::bindgen!({
        world: "tasuki:server/transformer",
        path: "../wit",
        with: {
            "tasuki:server/types": crate::bindings::tasuki::server::types,
        },
    });
}

pub use self::tasuki::server::types::{SectionStep, TransformInfo};

//! Release 1's state, frozen: what `kv` 1.0.0 exports as state version 1.
//!
//! Postcard is not self-describing, so these types must match release 1's `Kv` and `Db`
//! (`kv-v1/src/lib.rs`, `kv-v1/src/db.rs`) field for field, in order, forever; they are only
//! ever decoded, then converted by `Kv::from_v1`. Never edit them to follow a change in this
//! release.

use serde::Deserialize;
use tasuki_guest::Map;

/// Release 1's `Kv`.
#[derive(Debug, Deserialize)]
pub(crate) struct State {
    pub(crate) db: Db,
}

/// Release 1's `Db`: values without deadlines.
#[derive(Debug, Deserialize)]
pub(crate) struct Db {
    /// A `Map` as in release 1 (encoded as a `HashMap` is), so that an upgrade from release 1
    /// is pre-copied: the migration converts it with `Map::convert`, entry by entry as the
    /// chunks arrive.
    pub(crate) entries: Map<Vec<u8>, Vec<u8>>,
}

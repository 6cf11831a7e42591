//! Release 1's state, frozen: what `kv` 1.0.0 exports as state version 1.
//!
//! Postcard is not self-describing, so these types must match release 1's `Kv` and `Db`
//! (`kv-v1/src/lib.rs`, `kv-v1/src/db.rs`) field for field, in order, forever; they are only
//! ever decoded, then converted by `Kv::from_v1`. Never edit them to follow a change in this
//! release.

use serde::Deserialize;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher};

/// Release 1's `Kv`.
#[derive(Debug, Deserialize)]
pub(crate) struct State {
    pub(crate) db: Db,
}

/// Release 1's `Db`: values without deadlines.
#[derive(Debug, Deserialize)]
pub(crate) struct Db {
    pub(crate) entries: HashMap<Vec<u8>, Vec<u8>, BuildHasherDefault<DefaultHasher>>,
}

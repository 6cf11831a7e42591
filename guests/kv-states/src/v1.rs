//! State version 1, written by kv 1.0.0 (`releases/kv_v1.wasm`): keys and their values, plain
//! byte strings. Read by kv 2.0.0's migration and by the `kv-v1-to-v2` transformer.

use serde::{Deserialize, Serialize};
use tasuki_guest::Map;

/// kv 1.0.0's whole state, section `kv` version 1. Written by kv 1.0.0; must never change.
///
/// kv 1.0.0 had `Kv { db: Db { entries } }`; it encodes as the map alone: a varint count, then
/// per entry the key and the value (each a varint length and the bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    /// Every key and its value.
    pub entries: Map<Vec<u8>, Vec<u8>>,
}

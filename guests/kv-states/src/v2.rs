//! State version 2, written by kv 2.0.0 (`releases/kv_v2.wasm`): string values with a deadline.
//! Written by the `kv-v1-to-v2` transformer, read by `kv-v2-to-v3`.

use serde::{Deserialize, Serialize};
use tasuki_guest::Map;

/// kv 2.0.0's whole state, section `kv` version 2. Written by kv 2.0.0; must never change.
///
/// kv 2.0.0 had `Kv { db: Db { entries, deadlines (skipped), unindexed (skipped) }, timer_armed_for
/// (skipped) }`: the section is the map alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    /// Every key and its entry.
    pub entries: Map<Vec<u8>, Entry>,
}

/// kv 2.0.0's `Entry`: a value and its deadline. Written by kv 2.0.0; must never change.
///
/// Encodes as the value (varint length, bytes), then the deadline: `0`, or `1` and a varint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub value: Vec<u8>,
    /// Unix milliseconds from which the key no longer exists; `None`: never expires.
    pub expires_at_ms: Option<u64>,
}

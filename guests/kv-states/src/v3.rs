//! State version 3, written by kv 3.0.0 (`releases/kv_v3.wasm`): strings, lists and hashes, each
//! with a deadline. Written by the `kv-v2-to-v3` transformer, read by `kv-v3-to-v4`.

use serde::{Deserialize, Serialize};
use tasuki_guest::Map;

/// kv 3.0.0's whole state, section `kv` version 3. Written by kv 3.0.0; must never change.
///
/// kv 3.0.0 had `Kv { db: Db { entries, deadlines (skipped), unindexed (skipped) },
/// timer_armed_for (skipped) }`: the section is the map alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kv {
    /// Every key and its entry.
    pub entries: Map<Vec<u8>, Entry>,
}

/// kv 3.0.0's `Entry`: a value and its deadline. Written by kv 3.0.0; must never change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub value: Value,
    /// Unix milliseconds from which the key no longer exists; `None`: never expires.
    pub expires_at_ms: Option<u64>,
}

/// kv 3.0.0's `Value`: what a key holds. Written by kv 3.0.0; must never change.
///
/// Encodes as the variant's index (a varint: `0` string, `1` list, `2` hash), then its content.
/// The order of the variants is that index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// A byte string.
    String(Vec<u8>),
    /// A list, head first (`VecDeque<Vec<u8>>` in kv 3.0.0, which encodes the same): a count,
    /// then the elements. Never empty.
    List(Vec<Vec<u8>>),
    /// A hash's fields and values (`HashMap<Vec<u8>, Vec<u8>>` in kv 3.0.0, which encodes the
    /// same, in its iteration order): a count, then the pairs. Never empty.
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
}

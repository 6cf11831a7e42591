//! kv state version 1 → 2: every value gains "no deadline".
//!
//! The same conversion kv 2.0.0 carries as a migration (`Kv::from_v1`), as a component of its
//! own, so that a release that no longer reads version 1 (kv 3.0.0) can still be reached from
//! a running kv 1.0.0: `tasuki upgrade kv-v3.wasm --transform kv_v1_to_v2.wasm --transform
//! kv_v2_to_v3.wasm`.
//!
//! The keyspace is a `tasuki_guest::Map` on both sides, converted with `Map::convert`: in an
//! upgrade that is pre-copied, the conversion runs on each chunk of entries as it crosses, before
//! the pause; given a whole snapshot (`tasuki migrate`, a full transfer) it runs on every entry
//! at once. The order of the entries is kept.

use serde::{Deserialize, Serialize};
use tasuki_guest::Map;

/// kv 1.0.0's state, frozen: `Kv { db: Db { entries } }`, values without deadlines.
#[derive(Debug, Deserialize)]
pub struct V1 {
    entries: Map<Vec<u8>, Vec<u8>>,
}

/// kv 2.0.0's state: each value carries an optional deadline (Unix ms).
#[derive(Debug, Serialize)]
pub struct V2 {
    entries: Map<Vec<u8>, Entry>,
}

/// kv 2.0.0's `Entry`.
#[derive(Debug, Serialize)]
pub struct Entry {
    value: Vec<u8>,
    expires_at_ms: Option<u64>,
}

struct KvV1ToV2;

impl tasuki_guest::Transform for KvV1ToV2 {
    const NAME: &'static str = "kv-v1-to-v2";
    const SECTION: &'static str = "kv";
    const FROM: u32 = 1;
    const TO: u32 = 2;
    type Old = V1;
    type New = V2;

    fn transform(old: V1) -> Result<V2, String> {
        let entries = old.entries.convert(|_, value| Ok(Entry { value, expires_at_ms: None }))?;
        Ok(V2 { entries })
    }
}

tasuki_guest::export_transform!(KvV1ToV2);

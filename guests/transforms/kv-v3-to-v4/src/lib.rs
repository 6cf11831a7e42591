//! kv state version 3 → 4: every key, value and deadline is kept as it is; the server's
//! per-connection state starts empty and its counters at zero.
//!
//! kv 4.0.0 reads only state version 4, on purpose: this component is how a running kv 3.0.0
//! reaches it (`tasuki upgrade kv_v4.wasm --transform kv_v3_to_v4.wasm`), and, after the
//! transformers before it, kv 2.0.0 and 1.0.0. Connections open at the upgrade have no entry in
//! the new state; kv 4.0.0 makes one at each one's next request, speaking RESP2 as before.
//!
//! Both shapes are frozen copies here, so that this crate depends on neither release: postcard
//! is not self-describing, and these must match the releases' types field for field, in order,
//! forever. Never edit them to follow a change in a release. The releases' types, and what
//! postcard writes for them:
//!
//! - Version 3, kv 3.0.0 (`guests/kv-v3/src/lib.rs`, `db.rs`): `Kv { db: Db { entries } }`, the
//!   map written as a count and the pairs; `Entry { value: Value, expires_at_ms: Option<u64> }`;
//!   `enum Value { String(Vec<u8>), List(VecDeque<Vec<u8>>), Hash(HashMap<Vec<u8>, Vec<u8>>) }`,
//!   the variant's index first (`0`, `1`, `2`).
//! - Version 4, kv 4.0.0 (`guests/kv-v4/src/lib.rs`, `db.rs`, `client.rs`): `Kv { db: Db {
//!   entries }, clients: BTreeMap<u64, Client>, stats: Stats { started_ms, connections_received,
//!   commands_processed } }`; `Value` gains `Set(HashSet<Vec<u8>>)` (index `3`) and
//!   `ZSet` (index `4`, a sequence of `(member, score: f64)`), after the first three, which
//!   encode as in version 3. An empty `clients` map is a zero count, as postcard writes any
//!   empty sequence, so its element type need not be copied here.

use serde::{Deserialize, Serialize};
use tasuki_guest::Map;

/// kv 3.0.0's state, frozen.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub struct V3 {
    entries: Map<Vec<u8>, V3Entry>,
}

/// kv 3.0.0's `Entry`.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub struct V3Entry {
    value: V3Value,
    /// Unix milliseconds; `None`: never expires.
    expires_at_ms: Option<u64>,
}

/// kv 3.0.0's `Value`.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub enum V3Value {
    String(Vec<u8>),
    List(Vec<Vec<u8>>),
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
}

/// kv 4.0.0's state, frozen.
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(Deserialize, PartialEq))]
pub struct V4 {
    entries: Map<Vec<u8>, V4Entry>,
    /// `BTreeMap<ConnId, Client>` in kv 4.0.0: always empty here (see the crate docs).
    clients: Vec<()>,
    stats: V4Stats,
}

/// kv 4.0.0's `Entry`.
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(Deserialize, PartialEq))]
pub struct V4Entry {
    value: V4Value,
    expires_at_ms: Option<u64>,
}

/// kv 4.0.0's `Value`. Only the first three are written by this transformer; the others fix
/// the indexes postcard writes.
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(Deserialize, PartialEq))]
pub enum V4Value {
    String(Vec<u8>),
    List(Vec<Vec<u8>>),
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
    Set(Vec<Vec<u8>>),
    ZSet(Vec<(Vec<u8>, f64)>),
}

/// kv 4.0.0's `Stats`: all zero, which kv 4.0.0 reads as "count from this upgrade on".
#[derive(Debug, Default, Serialize)]
#[cfg_attr(test, derive(Deserialize, PartialEq))]
pub struct V4Stats {
    started_ms: u64,
    connections_received: u64,
    commands_processed: u64,
}

struct KvV3ToV4;

impl tasuki_guest::Transform for KvV3ToV4 {
    const NAME: &'static str = "kv-v3-to-v4";
    const SECTION: &'static str = "kv";
    const FROM: u32 = 3;
    const TO: u32 = 4;
    type Old = V3;
    type New = V4;

    fn transform(old: V3) -> Result<V4, String> {
        // Entry by entry, as each pre-copied chunk crosses (`Map::convert`).
        let entries = old.entries.convert(|_, V3Entry { value, expires_at_ms }| {
            let value = match value {
                V3Value::String(bytes) => V4Value::String(bytes),
                V3Value::List(list) => V4Value::List(list),
                V3Value::Hash(hash) => V4Value::Hash(hash),
            };
            Ok(V4Entry { value, expires_at_ms })
        })?;
        Ok(V4 { entries, clients: Vec::new(), stats: V4Stats::default() })
    }
}

tasuki_guest::export_transform!(KvV3ToV4);

#[cfg(test)]
mod tests {
    use super::*;
    use tasuki_guest::transform::bindings::tasuki::server::types::{Section, Snapshot};
    use tasuki_guest::transform::{describe, run};

    fn snapshot(sections: Vec<Section>) -> Snapshot {
        Snapshot { app: "kv".into(), app_version: "3.0.0".into(), sections }
    }

    /// kv 3.0.0's `{"s": "v" until 5, "l": ["a"], "h": {"f": "v"}}` as it writes it, and kv
    /// 4.0.0's: the same entries, then an empty client table and three zero counters. kv-v4's
    /// own tests pin its real types to the same bytes.
    #[test]
    fn the_encodings_byte_for_byte() {
        let v3: &[u8] = &[
            3, //
            1, b's', 0, 1, b'v', 1, 5, //
            1, b'l', 1, 1, 1, b'a', 0, //
            1, b'h', 2, 1, 1, b'f', 1, b'v', 0,
        ];
        let mut v4 = v3.to_vec();
        v4.extend_from_slice(&[0, 0, 0, 0]);
        let output = run::<KvV3ToV4>(snapshot(vec![
            Section { name: "kv".into(), version: 3, bytes: v3.to_vec() },
            Section { name: "tasuki.conns".into(), version: 1, bytes: vec![1, 7, 1, b'x'] },
        ]))
        .unwrap();
        assert_eq!(output.sections[0].name, "kv");
        assert_eq!(output.sections[0].version, 4);
        assert_eq!(output.sections[0].bytes, v4);
        assert_eq!(output.sections[1].bytes, [1, 7, 1, b'x'], "other sections pass untouched");
    }

    #[test]
    fn it_rewrites_kv_3_to_4_and_nothing_else() {
        let info = describe::<KvV3ToV4>();
        let steps: Vec<_> =
            info.steps.iter().map(|s| (s.name.as_str(), s.from_version, s.to_version)).collect();
        assert_eq!(steps, [("kv", 3, 4)]);
        let error = run::<KvV3ToV4>(snapshot(vec![Section {
            name: "kv".into(),
            version: 3,
            bytes: vec![1, 1, b'k', 7],
        }]))
        .unwrap_err();
        assert!(
            error.starts_with("kv-v3-to-v4: section `kv` version 3 does not decode"),
            "{error}"
        );
    }
}

//! kv state version 2 → 3: every value, a byte string, becomes a string value; every key and
//! every deadline is kept as it is.
//!
//! kv 3.0.0 reads only state version 3, on purpose: this component is how a running kv 2.0.0
//! reaches it (`tasuki upgrade kv-v3.wasm --transform kv_v2_to_v3.wasm`), and, after
//! `kv-v1-to-v2`, a running kv 1.0.0.
//!
//! Both shapes are frozen copies here, so that this crate depends on neither release: postcard
//! is not self-describing, and these must match the releases' types field for field, in order,
//! forever. Never edit them to follow a change in a release; a new state version gets a new
//! transformer. The releases' types, and what postcard writes for them:
//!
//! - Version 2, kv 2.0.0 (`guests/kv-v2/src/lib.rs`, `db.rs`): `Kv { db: Db, #[serde(skip)]
//!   timer_armed_for }`, `Db { entries: HashMap<Vec<u8>, Entry>, #[serde(skip)] deadlines }`,
//!   `Entry { value: Vec<u8>, expires_at_ms: Option<u64> }`. Skipped fields are not written and
//!   a struct adds no framing, so the section is the map alone: a varint count, then per entry
//!   the key (varint length, bytes), the value (varint length, bytes) and the deadline (`0`, or
//!   `1` and a varint of the Unix milliseconds).
//! - Version 3, kv 3.0.0 (`guests/kv-v3/src/lib.rs`, `db.rs`): the same, but `Entry { value:
//!   Value, expires_at_ms }` with `enum Value { String(Vec<u8>), List(VecDeque<Vec<u8>>),
//!   Hash(HashMap<Vec<u8>, Vec<u8>>) }`: the value starts with the variant's index as a varint
//!   (`0` string, `1` list, `2` hash), then the string's bytes, or a count and the elements, or
//!   a count and the field/value pairs.
//!
//! The keyspace is a `tasuki_guest::Map` here as in the releases (it encodes as a `HashMap`
//! does), converted with `Map::convert`: in a pre-copied upgrade the conversion runs on each
//! chunk of entries as it crosses, before the pause. Postcard writes a `VecDeque` exactly as a
//! `Vec` and a map as a sequence of pairs, so a value's list and hash are read here as vectors.

use serde::{Deserialize, Serialize};
use tasuki_guest::Map;

/// kv 2.0.0's state, frozen: `Kv { db: Db { entries } }`, string values with a deadline.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub struct V2 {
    entries: Map<Vec<u8>, V2Entry>,
}

/// kv 2.0.0's `Entry`.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub struct V2Entry {
    value: Vec<u8>,
    /// Unix milliseconds; `None`: never expires.
    expires_at_ms: Option<u64>,
}

/// kv 3.0.0's state, frozen: `Kv { db: Db { entries } }`, typed values with a deadline.
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(Deserialize, PartialEq))]
pub struct V3 {
    entries: Map<Vec<u8>, V3Entry>,
}

/// kv 3.0.0's `Entry`.
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(Deserialize, PartialEq))]
pub struct V3Entry {
    value: V3Value,
    expires_at_ms: Option<u64>,
}

/// kv 3.0.0's `Value`. Only `String` is written by this transformer; the other variants are
/// here because their position fixes the index postcard writes for each (`String` is 0).
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(Deserialize, PartialEq))]
pub enum V3Value {
    String(Vec<u8>),
    /// `VecDeque<Vec<u8>>` in kv 3.0.0, encoded the same.
    List(Vec<Vec<u8>>),
    /// `HashMap<Vec<u8>, Vec<u8>>` in kv 3.0.0, encoded the same.
    Hash(Vec<(Vec<u8>, Vec<u8>)>),
}

struct KvV2ToV3;

impl tasuki_guest::Transform for KvV2ToV3 {
    const NAME: &'static str = "kv-v2-to-v3";
    const SECTION: &'static str = "kv";
    const FROM: u32 = 2;
    const TO: u32 = 3;
    type Old = V2;
    type New = V3;

    fn transform(old: V2) -> Result<V3, String> {
        let entries = old.entries.convert(|_, V2Entry { value, expires_at_ms }| {
            Ok(V3Entry { value: V3Value::String(value), expires_at_ms })
        })?;
        Ok(V3 { entries })
    }
}

tasuki_guest::export_transform!(KvV2ToV3);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tasuki_guest::transform::bindings::tasuki::server::types::{Section, Snapshot};
    use tasuki_guest::transform::{describe, run};

    /// Mirror of kv 2.0.0's real state types, `guests/kv-v2/src/lib.rs` (`Kv`) and
    /// `guests/kv-v2/src/db.rs` (`Db`, `Entry`): same fields, same order, same `#[serde(skip)]`.
    /// What kv 2.0.0 exports is what these encode.
    mod kv_v2 {
        use serde::Serialize;
        use std::collections::{BTreeSet, HashMap};
        use std::hash::{BuildHasherDefault, DefaultHasher};

        pub(super) type FixedState = BuildHasherDefault<DefaultHasher>;

        #[derive(Debug, Default, Serialize)]
        pub(super) struct Kv {
            pub(super) db: Db,
            #[serde(skip)]
            #[expect(dead_code, reason = "mirrors a field serde skips, so nothing reads it")]
            pub(super) timer_armed_for: Option<u64>,
        }

        #[derive(Debug, Default, Serialize)]
        pub(super) struct Db {
            pub(super) entries: HashMap<Vec<u8>, Entry, FixedState>,
            #[serde(skip)]
            #[expect(dead_code, reason = "mirrors a field serde skips, so nothing reads it")]
            pub(super) deadlines: BTreeSet<(u64, Vec<u8>)>,
        }

        #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
        pub(super) struct Entry {
            pub(super) value: Vec<u8>,
            pub(super) expires_at_ms: Option<u64>,
        }
    }

    /// Mirror of kv 3.0.0's real state types, `guests/kv-v3/src/lib.rs` (`Kv`) and
    /// `guests/kv-v3/src/db.rs` (`Db`, `Entry`, `Value`): same fields, same order, same
    /// `#[serde(skip)]`, same variants. What kv 3.0.0 imports is what these decode.
    mod kv_v3 {
        use serde::{Deserialize, Serialize};
        use std::collections::{BTreeSet, HashMap, VecDeque};
        use std::hash::{BuildHasherDefault, DefaultHasher};

        pub(super) type FixedState = BuildHasherDefault<DefaultHasher>;

        #[derive(Debug, Default, Serialize, Deserialize)]
        pub(super) struct Kv {
            pub(super) db: Db,
            #[serde(skip)]
            pub(super) timer_armed_for: Option<u64>,
        }

        #[derive(Debug, Default, Serialize, Deserialize)]
        pub(super) struct Db {
            pub(super) entries: HashMap<Vec<u8>, Entry, FixedState>,
            #[serde(skip)]
            pub(super) deadlines: BTreeSet<(u64, Vec<u8>)>,
        }

        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub(super) enum Value {
            String(Vec<u8>),
            List(VecDeque<Vec<u8>>),
            Hash(HashMap<Vec<u8>, Vec<u8>, FixedState>),
        }

        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub(super) struct Entry {
            pub(super) value: Value,
            pub(super) expires_at_ms: Option<u64>,
        }
    }

    /// An arbitrary "now", in Unix milliseconds.
    const T0: u64 = 1_700_000_000_000;

    fn section(name: &str, version: u32, bytes: Vec<u8>) -> Section {
        Section { name: name.to_string(), version, bytes }
    }

    fn snapshot(sections: Vec<Section>) -> Snapshot {
        Snapshot { app: "kv".to_string(), app_version: "2.0.0".to_string(), sections }
    }

    /// The keys a kv 2.0.0 might hold: binary keys and values, an empty value, deadlines in the
    /// future, none, and one already past (not yet removed when the state was exported).
    fn v2_entries() -> Vec<(Vec<u8>, kv_v2::Entry)> {
        let entry =
            |value: &[u8], expires_at_ms| kv_v2::Entry { value: value.to_vec(), expires_at_ms };
        vec![
            (b"greeting".to_vec(), entry(b"hello", None)),
            (b"counter".to_vec(), entry(b"41", Some(T0 + 10_000))),
            (b"".to_vec(), entry(b"", None)),
            (vec![0, 255, b'\r', b'\n'], entry(&[1, 2, 3, 0], Some(u64::MAX))),
            (b"stale".to_vec(), entry(b"x", Some(1))),
        ]
    }

    /// kv 2.0.0's exported state, through the component's entry point, comes out as state that
    /// kv 3.0.0 decodes, with every key, value and deadline; the other sections pass untouched.
    #[test]
    fn every_key_value_and_deadline_crosses() {
        let mut v2 = kv_v2::Kv::default();
        v2.db.entries.extend(v2_entries());
        let conns = vec![3, 7, 0, 0, 1, 2];
        let input = snapshot(vec![
            section("kv", 2, postcard::to_allocvec(&v2).unwrap()),
            section("tasuki.conns", 1, conns.clone()),
        ]);

        let output = run::<KvV2ToV3>(input).unwrap();
        assert_eq!((output.app.as_str(), output.app_version.as_str()), ("kv", "2.0.0"));
        assert_eq!(output.sections.len(), 2);
        let (kv, other) = (&output.sections[0], &output.sections[1]);
        assert_eq!((kv.name.as_str(), kv.version), ("kv", 3));
        assert_eq!((other.name.as_str(), other.version), ("tasuki.conns", 1));
        assert_eq!(other.bytes, conns);

        let v3: kv_v3::Kv = postcard::from_bytes(&kv.bytes).unwrap();
        let expected: Vec<(Vec<u8>, kv_v3::Entry)> = v2_entries()
            .into_iter()
            .map(|(key, kv_v2::Entry { value, expires_at_ms })| {
                (key, kv_v3::Entry { value: kv_v3::Value::String(value), expires_at_ms })
            })
            .collect();
        assert_eq!(v3.db.entries.len(), expected.len());
        for (key, entry) in expected {
            assert_eq!(v3.db.entries.get(&key), Some(&entry), "key {key:?}");
        }
        assert!(
            v3.timer_armed_for.is_none() && v3.db.deadlines.is_empty(),
            "nothing skipped is invented"
        );
    }

    /// The bytes, written out: kv 2.0.0's `{"k": "v" until 5}` and kv 3.0.0's. kv-v3's own tests
    /// (`guests/kv-v3/src/tests.rs`) pin its real types to the same version 3 bytes.
    #[test]
    fn the_encodings_byte_for_byte() {
        let v2 = [1, 1, b'k', 1, b'v', 1, 5];
        let v3 = [1, 1, b'k', 0, 1, b'v', 1, 5];
        let mut state = kv_v2::Kv::default();
        state
            .db
            .entries
            .insert(b"k".to_vec(), kv_v2::Entry { value: b"v".to_vec(), expires_at_ms: Some(5) });
        assert_eq!(postcard::to_allocvec(&state).unwrap(), v2);

        let old: V2 = postcard::from_bytes(&v2).unwrap();
        let new = <KvV2ToV3 as tasuki_guest::Transform>::transform(old).unwrap();
        assert_eq!(postcard::to_allocvec(&new).unwrap(), v3);

        // An empty keyspace is a zero count in both versions.
        let empty = run::<KvV2ToV3>(snapshot(vec![section("kv", 2, vec![0])])).unwrap();
        assert_eq!(empty.sections[0].bytes, [0]);
    }

    /// The frozen version 3 shape reads and writes lists and hashes exactly as kv 3.0.0 does:
    /// the variants are in the same order, the containers encode the same.
    #[test]
    fn the_frozen_v3_shape_matches_every_kind_of_value() {
        let mut state = kv_v3::Kv::default();
        let hash: HashMap<_, _, kv_v3::FixedState> =
            [(b"f".to_vec(), b"v".to_vec())].into_iter().collect();
        state.db.entries.insert(
            b"h".to_vec(),
            kv_v3::Entry { value: kv_v3::Value::Hash(hash), expires_at_ms: Some(T0) },
        );
        let bytes = postcard::to_allocvec(&state).unwrap();
        assert_eq!(
            bytes,
            [1, 1, b'h', 2, 1, 1, b'f', 1, b'v', 1, 0x80, 0xd0, 0x95, 0xff, 0xbc, 0x31]
        );
        let frozen: V3 = postcard::from_bytes(&bytes).unwrap();
        let entry = V3Entry {
            value: V3Value::Hash(vec![(b"f".to_vec(), b"v".to_vec())]),
            expires_at_ms: Some(T0),
        };
        assert_eq!(frozen, V3 { entries: [(b"h".to_vec(), entry)].into_iter().collect() });

        let list = [b"a".to_vec(), b"".to_vec()].into_iter().collect();
        state.db.entries.clear();
        state.db.entries.insert(
            b"l".to_vec(),
            kv_v3::Entry { value: kv_v3::Value::List(list), expires_at_ms: None },
        );
        let bytes = postcard::to_allocvec(&state).unwrap();
        assert_eq!(bytes, [1, 1, b'l', 1, 2, 1, b'a', 0, 0]);
        let frozen: V3 = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(postcard::to_allocvec(&frozen).unwrap(), bytes);
        let entry =
            V3Entry { value: V3Value::List(vec![b"a".to_vec(), Vec::new()]), expires_at_ms: None };
        assert_eq!(frozen, V3 { entries: [(b"l".to_vec(), entry)].into_iter().collect() });
    }

    /// What the host checks before it pauses anything, and what it hands over.
    #[test]
    fn it_rewrites_kv_2_to_3_and_nothing_else() {
        let info = describe::<KvV2ToV3>();
        assert_eq!(info.name, "kv-v2-to-v3");
        let steps: Vec<_> =
            info.steps.iter().map(|s| (s.name.as_str(), s.from_version, s.to_version)).collect();
        assert_eq!(steps, [("kv", 2, 3)]);

        // Not its version, not its section: passed through, even bytes it could not read.
        let input = snapshot(vec![section("kv", 1, vec![9, 9]), section("other", 2, vec![9])]);
        let output = run::<KvV2ToV3>(input).unwrap();
        let sections: Vec<_> =
            output.sections.iter().map(|s| (s.name.as_str(), s.version, s.bytes.clone())).collect();
        assert_eq!(sections, [("kv", 1, vec![9, 9]), ("other", 2, vec![9])]);
    }

    /// Bytes that are not kv 2.0.0's state are refused, naming the transformer and the section:
    /// the host then rolls the upgrade back.
    #[test]
    fn undecodable_state_is_refused() {
        // One entry announced, then the key is cut short.
        for bytes in [vec![1, 5, b'a'], vec![1, 1, b'k', 1, b'v', 2]] {
            let error = run::<KvV2ToV3>(snapshot(vec![section("kv", 2, bytes)])).unwrap_err();
            assert!(
                error.starts_with("kv-v2-to-v3: section `kv` version 2 does not decode"),
                "{error}"
            );
        }
    }
}

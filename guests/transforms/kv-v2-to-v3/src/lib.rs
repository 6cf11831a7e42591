//! kv state version 2 → 3: every value, a byte string, becomes a string value; every key and
//! every deadline is kept as it is.
//!
//! kv 3.0.0 reads only state version 3, on purpose: this component is how a running kv 2.0.0
//! reaches it (`tasuki upgrade kv_v3.wasm --transform kv_v2_to_v3.wasm`), and, after
//! `kv-v1-to-v2`, a running kv 1.0.0. The component that shipped is
//! `releases/kv_v2_to_v3.wasm`; this source is kept as an example, and must keep building a
//! component that transforms every state into the same bytes as that one
//! (`tests/e2e/releases.rs`).
//!
//! Both shapes are the frozen state types of `kv-states` (`guests/kv-states`, modules `v2` and
//! `v3`, where each type says what it encodes as): postcard is not self-describing, so these
//! must be the releases' types field for field, in order, forever. A new state version gets a
//! new transformer.
//!
//! The keyspace is a `tasuki_guest::Map` here as in the releases (it encodes as a `HashMap`
//! does), converted with `Map::convert`: in a pre-copied upgrade the conversion runs on each
//! chunk of entries as it crosses, before the pause.

use kv_states::{v2, v3};

struct KvV2ToV3;

impl tasuki_guest::Transform for KvV2ToV3 {
    const NAME: &'static str = "kv-v2-to-v3";
    const SECTION: &'static str = "kv";
    const FROM: u32 = 2;
    const TO: u32 = 3;
    type Old = v2::Kv;
    type New = v3::Kv;

    fn transform(old: v2::Kv) -> Result<v3::Kv, String> {
        let entries = old.entries.convert(|_, v2::Entry { value, expires_at_ms }| {
            Ok(v3::Entry { value: v3::Value::String(value), expires_at_ms })
        })?;
        Ok(v3::Kv { entries })
    }
}

tasuki_guest::export_transform!(KvV2ToV3);

#[cfg(test)]
mod tests {
    use super::*;
    use tasuki_guest::transform::bindings::tasuki::server::types::{Section, Snapshot};
    use tasuki_guest::transform::{describe, run};

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
    fn v2_entries() -> Vec<(Vec<u8>, v2::Entry)> {
        let entry =
            |value: &[u8], expires_at_ms| v2::Entry { value: value.to_vec(), expires_at_ms };
        vec![
            (b"greeting".to_vec(), entry(b"hello", None)),
            (b"counter".to_vec(), entry(b"41", Some(T0 + 10_000))),
            (b"".to_vec(), entry(b"", None)),
            (vec![0, 255, b'\r', b'\n'], entry(&[1, 2, 3, 0], Some(u64::MAX))),
            (b"stale".to_vec(), entry(b"x", Some(1))),
        ]
    }

    /// kv 2.0.0's exported state, through the component's entry point, comes out as state that
    /// kv 3.0.0 decodes, with every key, value and deadline, in order; the other sections pass
    /// untouched.
    #[test]
    fn every_key_value_and_deadline_crosses() {
        let old = v2::Kv { entries: v2_entries().into_iter().collect() };
        let conns = vec![3, 7, 0, 0, 1, 2];
        let input = snapshot(vec![
            section("kv", 2, postcard::to_allocvec(&old).unwrap()),
            section("tasuki.conns", 1, conns.clone()),
        ]);

        let output = run::<KvV2ToV3>(input).unwrap();
        assert_eq!((output.app.as_str(), output.app_version.as_str()), ("kv", "2.0.0"));
        assert_eq!(output.sections.len(), 2);
        let (kv, other) = (&output.sections[0], &output.sections[1]);
        assert_eq!((kv.name.as_str(), kv.version), ("kv", 3));
        assert_eq!((other.name.as_str(), other.version), ("tasuki.conns", 1));
        assert_eq!(other.bytes, conns);

        let new: v3::Kv = postcard::from_bytes(&kv.bytes).unwrap();
        let expected: v3::Kv = v3::Kv {
            entries: v2_entries()
                .into_iter()
                .map(|(key, v2::Entry { value, expires_at_ms })| {
                    (key, v3::Entry { value: v3::Value::String(value), expires_at_ms })
                })
                .collect(),
        };
        assert_eq!(new, expected);
        let keys = |kv: &v3::Kv| kv.entries.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&new), keys(&expected), "the order of the entries is kept");
    }

    /// The bytes, written out: kv 2.0.0's `{"k": "v" until 5}` and kv 3.0.0's (the same bytes
    /// `guests/kv-states` pins for each release).
    #[test]
    fn the_encodings_byte_for_byte() {
        let v2 = [1, 1, b'k', 1, b'v', 1, 5];
        let v3 = [1, 1, b'k', 0, 1, b'v', 1, 5];
        let output = run::<KvV2ToV3>(snapshot(vec![section("kv", 2, v2.to_vec())])).unwrap();
        assert_eq!(output.sections[0].bytes, v3);

        // An empty keyspace is a zero count in both versions.
        let empty = run::<KvV2ToV3>(snapshot(vec![section("kv", 2, vec![0])])).unwrap();
        assert_eq!(empty.sections[0].bytes, [0]);
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

//! kv state version 3 → 4: every key, value and deadline is kept as it is; the server's
//! per-connection state starts empty and its counters at zero.
//!
//! kv 4.0.0 reads only state version 4, on purpose: this component is how a running kv 3.0.0
//! reaches it (`tasuki upgrade kv_v4.wasm --transform kv_v3_to_v4.wasm`), and, after the
//! transformers before it, kv 2.0.0 and 1.0.0. Connections open at the upgrade have no entry in
//! the new state; kv 4.0.0 makes one at each one's next request, speaking RESP2 as before.
//!
//! The component that shipped is `releases/kv_v3_to_v4.wasm`; this source is kept as an
//! example, and must keep building a component that transforms every state into the same bytes
//! as that one (`tests/e2e/releases.rs`).
//!
//! Both shapes are the frozen state types of `kv-states` (`guests/kv-states`, modules `v3` and
//! `v4`, where each type says what it encodes as): postcard is not self-describing, so these
//! must be the releases' types field for field, in order, forever. Version 4's first three
//! kinds of value are version 3's, at the same indexes; sets and sorted sets come after.

use kv_states::{v3, v4};

struct KvV3ToV4;

impl tasuki_guest::Transform for KvV3ToV4 {
    const NAME: &'static str = "kv-v3-to-v4";
    const SECTION: &'static str = "kv";
    const FROM: u32 = 3;
    const TO: u32 = 4;
    type Old = v3::Kv;
    type New = v4::Kv;

    fn transform(old: v3::Kv) -> Result<v4::Kv, String> {
        // Entry by entry, as each pre-copied chunk crosses (`Map::convert`).
        let entries = old.entries.convert(|_, v3::Entry { value, expires_at_ms }| {
            let value = match value {
                v3::Value::String(bytes) => v4::Value::String(bytes),
                v3::Value::List(list) => v4::Value::List(list),
                v3::Value::Hash(hash) => v4::Value::Hash(hash),
            };
            Ok(v4::Entry { value, expires_at_ms })
        })?;
        // No connection has state yet (kv 4 makes each one's at its next request), and the
        // counters start at zero: "count from this upgrade on".
        Ok(v4::Kv { entries, clients: Default::default(), stats: v4::Stats::default() })
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
    /// 4.0.0's: the same entries, then an empty client table and three zero counters
    /// (`guests/kv-states` pins both releases' types to such bytes).
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

//! kv state version 1 → 2: every value gains "no deadline".
//!
//! The same conversion kv 2.0.0 carries as a migration, as a component of its own, so that a
//! release that no longer reads version 1 (kv 3.0.0) can still be reached from a running kv
//! 1.0.0: `tasuki upgrade kv_v3.wasm --transform kv_v1_to_v2.wasm --transform
//! kv_v2_to_v3.wasm`. The component that shipped is `releases/kv_v1_to_v2.wasm`; this source
//! is kept as an example, and must keep building a component that transforms every state into
//! the same bytes as that one (`tests/e2e/releases.rs`).
//!
//! Both shapes are the frozen state types of `kv-states` (`guests/kv-states`): postcard is not
//! self-describing, so a transformer must read and write exactly the types the releases did.
//! The keyspace is a `tasuki_guest::Map` on both sides, converted with `Map::convert`: in an
//! upgrade that is pre-copied, the conversion runs on each chunk of entries as it crosses, before
//! the pause; given a whole snapshot (`tasuki migrate`, a full transfer) it runs on every entry
//! at once. The order of the entries is kept.

use kv_states::{v1, v2};

struct KvV1ToV2;

impl tasuki_guest::Transform for KvV1ToV2 {
    const NAME: &'static str = "kv-v1-to-v2";
    const SECTION: &'static str = "kv";
    const FROM: u32 = 1;
    const TO: u32 = 2;
    type Old = v1::Kv;
    type New = v2::Kv;

    fn transform(old: v1::Kv) -> Result<v2::Kv, String> {
        let entries =
            old.entries.convert(|_, value| Ok(v2::Entry { value, expires_at_ms: None }))?;
        Ok(v2::Kv { entries })
    }
}

tasuki_guest::export_transform!(KvV1ToV2);

#[cfg(test)]
mod tests {
    use super::*;
    use tasuki_guest::transform::bindings::tasuki::server::types::{Section, Snapshot};
    use tasuki_guest::transform::{describe, run};

    /// kv 1.0.0's `{"k": "v", "e": ""}` as it writes it comes out as kv 2.0.0's, each value
    /// without a deadline; other sections pass untouched.
    #[test]
    fn the_encodings_byte_for_byte() {
        let v1 = [2, 1, b'k', 1, b'v', 1, b'e', 0];
        let v2 = [2, 1, b'k', 1, b'v', 0, 1, b'e', 0, 0];
        let output = run::<KvV1ToV2>(Snapshot {
            app: "kv".into(),
            app_version: "1.0.0".into(),
            sections: vec![
                Section { name: "kv".into(), version: 1, bytes: v1.to_vec() },
                Section { name: "tasuki.conns".into(), version: 1, bytes: vec![1, 7] },
            ],
        })
        .unwrap();
        assert_eq!((output.sections[0].name.as_str(), output.sections[0].version), ("kv", 2));
        assert_eq!(output.sections[0].bytes, v2);
        assert_eq!(output.sections[1].bytes, [1, 7], "other sections pass untouched");
    }

    #[test]
    fn it_rewrites_kv_1_to_2_and_nothing_else() {
        let info = describe::<KvV1ToV2>();
        assert_eq!(info.name, "kv-v1-to-v2");
        let steps: Vec<_> =
            info.steps.iter().map(|s| (s.name.as_str(), s.from_version, s.to_version)).collect();
        assert_eq!(steps, [("kv", 1, 2)]);
    }
}

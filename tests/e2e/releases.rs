//! Releases are frozen: kv 1 … 4 and their transformers are the `.wasm` files that shipped, kept
//! in releases/ with their sha256, and every test starts from those exact files. Here: the files
//! are byte for byte what `releases/SHA256SUMS` says and are what `tasuki_artifacts` names;
//! today's host loads every one of them (they are the previous-contract regression set); a
//! running kv 1 goes through every release and the frozen transformers to kv 4, then to kv 5
//! built from source, keeping every key; and the transformers' sources, built today over the
//! frozen state types of `guests/kv-states`, transform a state to exactly the bytes the frozen
//! transformers do.

use kv_states::{v1, v2, v3, v4};
use redis::Commands;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tasuki::bindings::{Section, Snapshot};
use tasuki::limits::Limits;
use tasuki::runtime::Runtime;
use tasuki::sandbox::Sandbox;
use tasuki::transformer::Pipeline;
use tasuki::upgrade::UpgradeOptions;
use tasuki_tests::{TestHost, artifacts};

fn releases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../releases").canonicalize().expect("releases/")
}

/// `releases/SHA256SUMS`: (listed sha256, file name under releases/), in order.
fn listed() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(releases_dir().join("SHA256SUMS")).expect("SHA256SUMS");
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (hash, file) = line.split_once("  ").unwrap_or_else(|| panic!("line {line:?}"));
            (hash.to_string(), file.to_string())
        })
        .collect()
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The released components, frozen: (constant's path, file under releases/).
const FROZEN: &[(&str, &str)] = &[
    (artifacts::KV_V1, "kv_v1.wasm"),
    (artifacts::KV_V2, "kv_v2.wasm"),
    (artifacts::KV_V3, "kv_v3.wasm"),
    (artifacts::KV_V4, "kv_v4.wasm"),
    (artifacts::KV_V1_TO_V2, "kv_v1_to_v2.wasm"),
    (artifacts::KV_V2_TO_V3, "kv_v2_to_v3.wasm"),
    (artifacts::KV_V3_TO_V4, "kv_v3_to_v4.wasm"),
    (artifacts::KV_V3_INCR_OFF_BY_ONE, "fixtures/kv_v3_incr_off_by_one.wasm"),
];

#[test]
fn the_released_files_are_byte_for_byte_the_ones_that_shipped_and_the_tests_use_them() {
    let dir = releases_dir();
    let listed = listed();
    for (hash, file) in &listed {
        assert_eq!(&sha256(&dir.join(file)), hash, "releases/{file} is not the file that shipped");
    }
    // Every component the tests know as released is listed, and its constant names that file,
    // not a build from today's sources.
    for (constant, file) in FROZEN {
        assert!(listed.iter().any(|(_, f)| f == file), "releases/{file} is not in SHA256SUMS");
        assert_eq!(Path::new(constant), dir.join(file), "the constant for {file}");
    }
    // No component lies in releases/ unlisted, where nothing would check it.
    let mut stack = vec![dir.clone()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "wasm") {
                let name = path.strip_prefix(&dir).unwrap().to_str().unwrap().to_string();
                assert!(listed.iter().any(|(_, f)| *f == name), "releases/{name} is not listed");
            }
        }
    }
    // kv 5 is in development: built from source, not frozen.
    assert!(artifacts::KV_V5.contains("/guests/wasm32-wasip2/"), "{}", artifacts::KV_V5);
}

/// The previous-contract regression set: today's host takes every frozen server and serves
/// with it, naming the release it is, and loads every frozen transformer.
#[test]
fn todays_host_accepts_every_frozen_component() {
    let servers = [
        (artifacts::KV_V1, "kv 1.0.0"),
        (artifacts::KV_V2, "kv 2.0.0"),
        (artifacts::KV_V3, "kv 3.0.0"),
        (artifacts::KV_V4, "kv 4.0.0"),
        (artifacts::KV_V3_INCR_OFF_BY_ONE, "kv 3.0.0"),
    ];
    for (wasm, name) in servers {
        let host = TestHost::start(wasm);
        assert_eq!(host.status().app.to_string(), name, "{wasm}");
        let mut client = host.client();
        let () = client.set("k", "v").unwrap();
        let value: String = client.get("k").unwrap();
        assert_eq!(value, "v", "{wasm}");
    }
    let runtime = Runtime::new(Limits::default(), Sandbox::default()).unwrap();
    for wasm in [artifacts::KV_V1_TO_V2, artifacts::KV_V2_TO_V3, artifacts::KV_V3_TO_V4] {
        Pipeline::load(&runtime, &[PathBuf::from(wasm)]).unwrap_or_else(|e| panic!("{wasm}: {e}"));
    }
}

/// The keys written before the first upgrade: plain ones, an empty value, binary bytes.
fn keys() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut keys: Vec<(Vec<u8>, Vec<u8>)> = (0..2_000)
        .map(|i| (format!("key:{i}").into_bytes(), format!("value-{i}").into_bytes()))
        .collect();
    keys.push((b"empty".to_vec(), Vec::new()));
    keys.push((vec![0, 255, b'\r', b'\n'], vec![1, 2, 0, 3]));
    keys
}

/// A client INCRing a counter for as long as it runs, across every upgrade: the count of
/// acknowledged INCRs is what the counter must hold at the end.
struct Writer {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    fn start(host: &TestHost) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicU64::new(0));
        let mut conn = host.client();
        let thread = {
            let (stop, acknowledged) = (Arc::clone(&stop), Arc::clone(&acknowledged));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _: i64 = conn.incr("counter", 1).expect("INCR across the upgrades");
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        Self { stop, acknowledged, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the writer");
        self.acknowledged.load(Ordering::Relaxed)
    }
}

/// Every key reads back with its value.
fn every_key_kept(host: &TestHost, stage: &str) {
    let mut client = host.client();
    for (key, value) in keys() {
        let got: Option<Vec<u8>> = client.get(&key).unwrap();
        assert_eq!(got.as_deref(), Some(value.as_slice()), "{stage}: key {key:?}");
    }
}

fn through(transforms: &[&str]) -> UpgradeOptions {
    UpgradeOptions {
        transforms: transforms.iter().map(PathBuf::from).collect(),
        ..UpgradeOptions::default()
    }
}

/// A running kv 1 (frozen) upgraded release by release, under a client that INCRs throughout:
/// to kv 2 (its own migration), kv 3 and kv 4 (each through its frozen transformer), then to kv 5
/// built from source. Every key is kept at every step, and no INCR is lost.
#[test]
fn a_running_kv_1_goes_release_by_release_to_kv_5_keeping_every_key() {
    let host = TestHost::start(artifacts::KV_V1);
    {
        let mut client = host.client();
        for chunk in keys().chunks(500) {
            let () = client.mset(chunk).unwrap();
        }
    }
    let writer = Writer::start(&host);
    let steps: [(&str, &[&str], &str); 4] = [
        (artifacts::KV_V2, &[], "kv 2.0.0"),
        (artifacts::KV_V3, &[artifacts::KV_V2_TO_V3], "kv 3.0.0"),
        (artifacts::KV_V4, &[artifacts::KV_V3_TO_V4], "kv 4.0.0"),
        (artifacts::KV_V5, &[], "kv 5.0.0"),
    ];
    for (wasm, transforms, name) in steps {
        std::thread::sleep(Duration::from_millis(50));
        let report = host
            .host_upgrade_with(wasm, &through(transforms))
            .unwrap_or_else(|e| panic!("to {name}: {e}"));
        assert_eq!(report.to.to_string(), name);
        assert_eq!(host.status().app.to_string(), name);
        every_key_kept(&host, name);
    }
    let acknowledged = writer.stop();
    let counter: u64 = host.client().get("counter").unwrap();
    assert_eq!(counter, acknowledged, "no INCR lost");
}

/// A running kv 1 (frozen) goes to kv 4 in one upgrade through the three frozen transformers,
/// then to kv 5 built from source, keeping every key.
#[test]
fn a_running_kv_1_goes_through_the_frozen_transformers_to_kv_4_then_kv_5() {
    let host = TestHost::start(artifacts::KV_V1);
    {
        let mut client = host.client();
        for chunk in keys().chunks(500) {
            let () = client.mset(chunk).unwrap();
        }
    }
    let writer = Writer::start(&host);
    std::thread::sleep(Duration::from_millis(50));
    let chain = [artifacts::KV_V1_TO_V2, artifacts::KV_V2_TO_V3, artifacts::KV_V3_TO_V4];
    let report = host.host_upgrade_with(artifacts::KV_V4, &through(&chain)).expect("kv 1 -> 4");
    assert_eq!(report.transformers, ["kv-v1-to-v2", "kv-v2-to-v3", "kv-v3-to-v4"]);
    assert_eq!(report.to.to_string(), "kv 4.0.0");
    every_key_kept(&host, "kv 4");
    host.upgrade(artifacts::KV_V5).expect("kv 4 -> 5");
    assert_eq!(host.status().app.to_string(), "kv 5.0.0");
    every_key_kept(&host, "kv 5");
    let acknowledged = writer.stop();
    let counter: u64 = host.client().get("counter").unwrap();
    assert_eq!(counter, acknowledged, "no INCR lost");
}

/// Runs `transformer` on a `kv` section of `version` holding `bytes`; the section it writes.
fn transform(runtime: &Runtime, transformer: &str, version: u32, bytes: Vec<u8>) -> Section {
    let pipeline = Pipeline::load(runtime, &[PathBuf::from(transformer)]).unwrap();
    let snapshot = Snapshot {
        app: "kv".into(),
        app_version: format!("{version}.0.0"),
        sections: vec![Section { name: "kv".into(), version, bytes }],
    };
    let mut out = pipeline.apply(snapshot).unwrap_or_else(|e| panic!("{transformer}: {e}"));
    out.sections.remove(0)
}

/// The transformers' sources, built today over `kv-states`, write the very bytes the frozen
/// transformers write, for a state of every kind of value each reads; and the result decodes as
/// the next version's frozen types with every key, value and deadline.
#[test]
fn the_transformers_built_from_source_write_what_the_frozen_ones_write() {
    let runtime = Runtime::new(Limits::default(), Sandbox::default()).unwrap();
    let pairs = [
        (artifacts::KV_V1_TO_V2, artifacts::KV_V1_TO_V2_FROM_SOURCE),
        (artifacts::KV_V2_TO_V3, artifacts::KV_V2_TO_V3_FROM_SOURCE),
        (artifacts::KV_V3_TO_V4, artifacts::KV_V3_TO_V4_FROM_SOURCE),
    ];
    let same = |(frozen, source): (&str, &str), version: u32, bytes: Vec<u8>| {
        let from_frozen = transform(&runtime, frozen, version, bytes.clone());
        let from_source = transform(&runtime, source, version, bytes);
        assert_eq!(from_frozen.version, version + 1);
        assert_eq!(from_source.version, from_frozen.version, "{source}");
        let (a, b) = (&from_source.bytes, &from_frozen.bytes);
        // Named by the first byte that differs: the states are thousands of bytes long.
        if let Some(at) = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)) {
            let around =
                |bytes: &[u8]| bytes[at.saturating_sub(8)..(at + 8).min(bytes.len())].to_vec();
            panic!(
                "{source} (built from source) and {frozen} (frozen) write different bytes from \
                 byte {at} of {} / {}: {:?} / {:?}",
                a.len(),
                b.len(),
                around(a),
                around(b)
            );
        }
        from_frozen.bytes
    };

    let state_1 = v1::Kv { entries: keys().into_iter().collect() };
    let bytes_2 = same(pairs[0], 1, postcard::to_allocvec(&state_1).unwrap());
    let state_2: v2::Kv = postcard::from_bytes(&bytes_2).unwrap();
    assert_eq!(state_2.entries.len(), state_1.entries.len());
    assert!(state_2.entries.values().all(|e| e.expires_at_ms.is_none()));

    // Version 2 with deadlines, as kv 2 would hold it.
    let mut with_deadlines = state_2.clone();
    with_deadlines.entries.insert(
        b"expiring".to_vec(),
        v2::Entry { value: b"soon".to_vec(), expires_at_ms: Some(4_102_444_800_000) },
    );
    let bytes_3 = same(pairs[1], 2, postcard::to_allocvec(&with_deadlines).unwrap());
    let state_3: v3::Kv = postcard::from_bytes(&bytes_3).unwrap();
    assert_eq!(
        state_3.entries.get(b"expiring".as_slice()),
        Some(&v3::Entry {
            value: v3::Value::String(b"soon".to_vec()),
            expires_at_ms: Some(4_102_444_800_000)
        })
    );

    // Version 3 with lists and hashes, as kv 3 would hold them.
    let mut typed = state_3.clone();
    typed.entries.insert(
        b"list".to_vec(),
        v3::Entry { value: v3::Value::List(vec![b"a".to_vec(), Vec::new()]), expires_at_ms: None },
    );
    typed.entries.insert(
        b"hash".to_vec(),
        v3::Entry {
            value: v3::Value::Hash(vec![(b"f".to_vec(), b"v".to_vec())]),
            expires_at_ms: Some(7),
        },
    );
    let bytes_4 = same(pairs[2], 3, postcard::to_allocvec(&typed).unwrap());
    let state_4: v4::Kv = postcard::from_bytes(&bytes_4).unwrap();
    assert_eq!(state_4.entries.len(), typed.entries.len());
    assert!(state_4.clients.is_empty());
    assert_eq!(state_4.stats, v4::Stats::default());
    assert_eq!(
        state_4.entries.get(b"hash".as_slice()).map(|e| (&e.value, e.expires_at_ms)),
        Some((&v4::Value::Hash(vec![(b"f".to_vec(), b"v".to_vec())]), Some(7)))
    );
    for (key, value) in keys() {
        assert_eq!(
            state_4.entries.get(&key).map(|e| &e.value),
            Some(&v4::Value::String(value)),
            "key {key:?}"
        );
    }
}

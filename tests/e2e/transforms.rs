//! Transformers: a running kv v1 goes straight to v3 through two sandboxed transformers, under
//! live clients; a bad chain is refused before the pause; a transformer that fails rolls back.

use redis::Commands;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tasuki::bindings::{Section, Snapshot};
use tasuki::limits::Limits;
use tasuki::runtime::Runtime;
use tasuki::sandbox::Sandbox;
use tasuki::transformer::Pipeline;
use tasuki::upgrade::UpgradeOptions;
use tasuki::{HostConfig, UpgradeError};
use tasuki_tests::{TestHost, artifacts};

fn through(transforms: &[&str]) -> UpgradeOptions {
    UpgradeOptions {
        transforms: transforms.iter().map(PathBuf::from).collect(),
        ..UpgradeOptions::default()
    }
}

#[test]
fn a_running_v1_goes_straight_to_v3_under_live_clients() {
    let host = TestHost::start(artifacts::KV_V1);
    let mut client = host.client();
    for i in 0..500 {
        let _: () = client.set(format!("key:{i}"), format!("value:{i}")).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let writer = {
        let mut conn = host.client();
        let (stop, acknowledged) = (Arc::clone(&stop), Arc::clone(&acknowledged));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _: i64 = conn.incr("counter", 1).expect("INCR across the upgrade");
                acknowledged.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let report = host
        .host_upgrade_with(
            artifacts::KV_V3,
            &through(&[artifacts::KV_V1_TO_V2, artifacts::KV_V2_TO_V3]),
        )
        .expect("v1 -> v3 in one upgrade");
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    assert_eq!(report.to.to_string(), "kv 3.0.0");
    assert_eq!(report.transformers, ["kv-v1-to-v2", "kv-v2-to-v3"]);
    let kv = report.sections.iter().find(|s| s.name == "kv").unwrap();
    assert_eq!(kv.version, 3, "v3 imported section version 3");
    assert!(report.to_string().contains("transformed  by kv-v1-to-v2 -> kv-v2-to-v3"), "{report}");

    for i in [0, 250, 499] {
        let value: String = client.get(format!("key:{i}")).unwrap();
        assert_eq!(value, format!("value:{i}"));
    }
    let counter: u64 = client.get("counter").unwrap();
    assert_eq!(counter, acknowledged.load(Ordering::Relaxed), "no INCR lost");
    // v3's own features, on the same connection.
    let _: () = client.rpush("list", &["a", "b"]).unwrap();
    let list: Vec<String> = client.lrange("list", 0, -1).unwrap();
    assert_eq!(list, ["a", "b"]);
    let kind: String = redis::cmd("TYPE").arg("key:0").query(&mut client).unwrap();
    assert_eq!(kind, "string");
    let err = client.lpush::<_, _, i64>("key:0", "x").unwrap_err();
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
}

#[test]
fn a_chain_that_does_not_reach_the_new_version_is_refused_before_the_pause() {
    let host = TestHost::start(artifacts::KV_V1);
    let err = host.upgrade(artifacts::KV_V3).unwrap_err().to_string();
    assert!(err.starts_with("refused before any pause"), "{err}");
    assert!(err.contains("section `kv` version 1"), "{err}");

    let err = host
        .host_upgrade_with(artifacts::KV_V3, &through(&[artifacts::KV_V2_TO_V3]))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("refused before any pause"), "{err}");
    assert!(
        err.contains("kv-v2-to-v3")
            && err.contains("reads section `kv` version 2")
            && err.contains("has version 1"),
        "{err}"
    );

    let err = host
        .host_upgrade_with(artifacts::KV_V3, &through(&[artifacts::KV_V1_TO_V2]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("section `kv` is version 2, which kv 3.0.0 does not read (it reads versions [3]); add a transformer from 2 to 3"),
        "{err}"
    );
    assert_eq!(host.status().app.to_string(), "kv 1.0.0");
}

fn faulty_host(fault: &str, limits: Limits) -> TestHost {
    let host = TestHost::with(HostConfig {
        app: artifacts::KV_V1.into(),
        limits,
        ..HostConfig::default()
    });
    let mut client = host.client();
    let _: () = client.set("kept", "yes").unwrap();
    let _: () = client.set("fault", fault).unwrap();
    host
}

/// The trap a transformer's failure carries, typed.
fn transformer_trap(err: &UpgradeError) -> &tasuki::instance::Trap {
    match err {
        UpgradeError::Transform { error, .. } => match &**error {
            tasuki::transformer::TransformError::Trap { trap, .. } => trap,
            other => panic!("not a trap: {other}"),
        },
        other => panic!("not a transformer failure: {other}"),
    }
}

fn rolls_back(host: &TestHost, transforms: &[&str], target: &str) -> String {
    rolls_back_with(host, transforms, target).1
}

fn rolls_back_with(host: &TestHost, transforms: &[&str], target: &str) -> (UpgradeError, String) {
    let err = host.host_upgrade_with(target, &through(transforms)).unwrap_err();
    assert!(matches!(err, UpgradeError::Transform { .. } | UpgradeError::Import { .. }), "{err}");
    let text = err.to_string();
    assert!(text.starts_with("rolled back, kv 1.0.0 keeps serving"), "{text}");
    let mut client = host.client();
    let kept: String = client.get("kept").unwrap();
    assert_eq!(kept, "yes");
    assert_eq!(host.status().app.to_string(), "kv 1.0.0");
    (err, text)
}

#[test]
fn a_transformer_that_traps_rolls_back() {
    let host = faulty_host("trap", Limits::default());
    let (err, text) = rolls_back_with(&host, &[artifacts::FAULTY_TRANSFORM], artifacts::KV_V2);
    assert!(text.contains("transformer faulty-v1-to-v2 trapped"), "{text}");
    // A Rust panic ends in `unreachable`, and the code survives to the caller.
    assert_eq!(
        transformer_trap(&err).code,
        Some(tasuki::instance::TrapCode::UnreachableCodeReached)
    );
}

#[test]
fn a_transformer_that_loops_is_stopped_at_its_deadline_and_rolls_back() {
    let limits = Limits { upgrade_deadline: Duration::from_millis(500), ..Limits::default() };
    let host = faulty_host("loop", limits);
    let (err, text) = rolls_back_with(&host, &[artifacts::FAULTY_TRANSFORM], artifacts::KV_V2);
    assert!(text.contains("ran past its deadline"), "{text}");
    assert!(transformer_trap(&err).is_deadline(), "{err}");
}

#[test]
fn a_transformer_past_its_memory_cap_rolls_back() {
    let host = faulty_host("alloc", Limits { memory: 64 << 20, ..Limits::default() });
    let (err, _) = rolls_back_with(&host, &[artifacts::FAULTY_TRANSFORM], artifacts::KV_V2);
    let trap = transformer_trap(&err);
    assert!(!trap.is_deadline() && trap.code.is_some(), "a trap in guest code: {trap:?}");
}

#[test]
fn a_transformer_that_refuses_rolls_back_with_its_reason() {
    let host = faulty_host("refuse", Limits::default());
    let text = rolls_back(&host, &[artifacts::FAULTY_TRANSFORM], artifacts::KV_V2);
    assert!(text.contains("refused: the state holds a `fault` key"), "{text}");
}

#[test]
fn bytes_the_next_stage_cannot_decode_roll_back() {
    let host = faulty_host("garbage", Limits::default());
    // The next transformer cannot read them...
    let text =
        rolls_back(&host, &[artifacts::FAULTY_TRANSFORM, artifacts::KV_V2_TO_V3], artifacts::KV_V3);
    assert!(text.contains("kv-v2-to-v3") && text.contains("does not decode"), "{text}");
    // ...nor can the app.
    let text = rolls_back(&host, &[artifacts::FAULTY_TRANSFORM], artifacts::KV_V2);
    assert!(
        text.contains("failed to import the state") && text.contains("does not decode"),
        "{text}"
    );
}

#[test]
fn sections_no_stage_claims_pass_through_untouched() {
    let runtime = Runtime::new(Limits::default(), Sandbox::default()).unwrap();
    let pipeline = Pipeline::load(
        &runtime,
        &[PathBuf::from(artifacts::KV_V1_TO_V2), PathBuf::from(artifacts::KV_V2_TO_V3)],
    )
    .unwrap();
    // An empty v1 map, and two sections nobody claims, one of them with bytes that would not
    // decode as anything.
    let other = Section { name: "other".into(), version: 7, bytes: vec![0xde, 0xad, 0xbe, 0xef] };
    let conns =
        Section { name: "tasuki.conns".into(), version: 1, bytes: vec![1, 5, 3, b'a', b'b', b'c'] };
    let snapshot = Snapshot {
        app: "kv".into(),
        app_version: "1.0.0".into(),
        sections: vec![
            conns.clone(),
            Section { name: "kv".into(), version: 1, bytes: vec![0] },
            other.clone(),
        ],
    };
    let out = pipeline.apply(snapshot).unwrap();
    let names: Vec<&str> = out.sections.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["tasuki.conns", "kv", "other"], "order kept");
    for (got, want) in [(&out.sections[0], &conns), (&out.sections[2], &other)] {
        assert_eq!((&got.name, got.version, &got.bytes), (&want.name, want.version, &want.bytes));
    }
    assert_eq!(out.sections[1].version, 3);
}

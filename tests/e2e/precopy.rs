//! Pre-copy: the state crosses in chunks while the old version serves, and the pause moves only
//! what changed since. The guarantees are the same as for a transfer inside the pause: every
//! acknowledged write is readable after the upgrade, and nothing deleted comes back.

use redis::Commands;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tasuki::limits::Limits;
use tasuki::upgrade::{UpgradeOptions, UpgradeReport};
use tasuki::{HostConfig, UpgradeError};
use tasuki_tests::keys::{Expected, change, check, load};
use tasuki_tests::{TestHost, artifacts};

const KEYS: usize = 100_000;

/// A host whose pre-copy moves `chunk` bytes per step.
fn host(app: &str, chunk: u64) -> TestHost {
    TestHost::with(HostConfig {
        app: app.into(),
        limits: Limits { precopy_chunk: chunk, ..Limits::default() },
        ..HostConfig::default()
    })
}

/// True while `tasuki status` shows a pre-copy under way.
fn precopying(control: &std::path::Path) -> bool {
    match tasuki::control::request(control, &tasuki::control::Request::Status) {
        Ok(tasuki::control::Response::Status(status)) => status.precopy.is_some(),
        other => panic!("status: {other:?}"),
    }
}

/// Writes, overwrites and deletes keys (old ones and new ones) until `stop`, and records every
/// acknowledged change. `during` counts the changes made entirely inside the pre-copy: `tasuki
/// status` showed it under way both before the request was sent and after its reply came.
fn writer(
    host: &TestHost,
    stop: Arc<AtomicBool>,
    during: Arc<AtomicU64>,
) -> std::thread::JoinHandle<Expected> {
    let mut client = host.client();
    let control = host.control.clone();
    std::thread::spawn(move || {
        let mut expected = Expected::new();
        let mut n: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let before = precopying(&control);
            change(&mut client, n, KEYS, &mut expected);
            if before && precopying(&control) {
                during.fetch_add(1, Ordering::Relaxed);
            }
        }
        expected
    })
}

/// Upgrades under a writer and checks every key after.
fn upgrade_under_writes(host: &TestHost, wasm: &str, transforms: &[&str]) -> (UpgradeReport, u64) {
    let mut client = host.client();
    load(&mut client, KEYS);
    let stop = Arc::new(AtomicBool::new(false));
    let during = Arc::new(AtomicU64::new(0));
    let writing = writer(host, Arc::clone(&stop), Arc::clone(&during));
    let options = UpgradeOptions {
        transforms: transforms.iter().map(Into::into).collect(),
        ..UpgradeOptions::default()
    };
    let report = host.host_upgrade_with(wasm, &options).expect("upgrade");
    stop.store(true, Ordering::Relaxed);
    let expected = writing.join().unwrap();
    check(&mut client, KEYS, &expected);
    (report, during.load(Ordering::Relaxed))
}

#[test]
fn an_upgrade_pre_copied_under_writes_keeps_every_write_and_no_deleted_key_returns() {
    // 16 KiB steps: some 250 of them for this state, each between events.
    let host = host(artifacts::KV_V2, 16 << 10);
    let (report, during) = upgrade_under_writes(&host, artifacts::KV_V3, &[artifacts::KV_V2_TO_V3]);
    let precopy = report.precopy.expect("the state was pre-copied");
    assert!(precopy.steps > 100, "{precopy:?}");
    assert!(during > 0, "the writer wrote while the pre-copy was under way");
    assert!(
        precopy.paused_bytes < precopy.bytes / 10,
        "the pause moved only what changed since: {precopy:?}"
    );
    assert_eq!(host.status().app.to_string(), "kv 3.0.0");
}

/// kv 5 keeps kv 4's state in another layout, in the same encoding: either way, the state is
/// pre-copied under writes with no transformer, and every key reads as last written.
#[test]
fn kv4_to_kv5_and_back_pre_copied_under_writes_with_no_transformer() {
    let host = host(artifacts::KV_V4, 16 << 10);
    let (report, during) = upgrade_under_writes(&host, artifacts::KV_V5, &[]);
    let precopy = report.precopy.expect("the state was pre-copied");
    assert!(precopy.steps > 100 && during > 0, "{precopy:?}, {during} writes during it");
    assert_eq!(host.status().app.to_string(), "kv 5.0.0");
    // The first writer's keys beyond the loaded ones would outlive the next load.
    redis::cmd("FLUSHALL").query::<()>(&mut host.client()).unwrap();
    let (report, during) = upgrade_under_writes(&host, artifacts::KV_V4, &[]);
    let precopy = report.precopy.expect("the state was pre-copied");
    assert!(precopy.steps > 100 && during > 0, "{precopy:?}, {during} writes during it");
    assert_eq!(host.status().app.to_string(), "kv 4.0.0");
}

#[test]
fn a_v1_to_v4_upgrade_through_three_transformers_is_pre_copied() {
    let host = host(artifacts::KV_V1, 64 << 10);
    let (report, _) = upgrade_under_writes(
        &host,
        artifacts::KV_V4,
        &[artifacts::KV_V1_TO_V2, artifacts::KV_V2_TO_V3, artifacts::KV_V3_TO_V4],
    );
    let precopy = report.precopy.expect("the state was pre-copied");
    assert!(precopy.steps > 10, "{precopy:?}");
    assert_eq!(report.transformers, ["kv-v1-to-v2", "kv-v2-to-v3", "kv-v3-to-v4"]);
    // The v4 keyspace: a v1 string value is a string, with no deadline.
    let mut client = host.client();
    let kind: String = redis::cmd("TYPE").arg("key:00000001").query(&mut client).unwrap();
    assert_eq!(kind, "string");
    let ttl: i64 = client.ttl("key:00000001").unwrap();
    assert_eq!(ttl, -1);
}

#[test]
fn an_in_release_migration_is_pre_copied_too() {
    let host = host(artifacts::KV_V1, 64 << 10);
    let (report, _) = upgrade_under_writes(&host, artifacts::KV_V2, &[]);
    assert!(report.precopy.expect("pre-copied").steps > 10);
}

#[test]
fn a_release_built_before_pre_copy_is_upgraded_by_a_full_transfer() {
    // kv 2.0.0 as built against the previous contract: no `precopy` export.
    let old = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/contract-0.1/kv_v2.wasm");
    let host = host(old, 16 << 10);
    let mut client = host.client();
    load(&mut client, 1000);
    let options =
        UpgradeOptions { transforms: vec![artifacts::KV_V2_TO_V3.into()], ..Default::default() };
    let report = host.host_upgrade_with(artifacts::KV_V3, &options).expect("upgrade");
    assert!(report.precopy.is_none(), "nothing to pre-copy from: {report:?}");
    for i in 0..1000 {
        let value: String = client.get(format!("key:{i:08}")).unwrap();
        assert_eq!(value, format!("value-{i}"));
    }
    // And the other way: today's release 1 into the old-contract release 2.
    let host = TestHost::start(artifacts::KV_V1);
    let mut client = host.client();
    load(&mut client, 1000);
    let report = host.upgrade(old).expect("upgrade");
    assert!(report.precopy.is_none());
    let value: String = client.get("key:00000999").unwrap();
    assert_eq!(value, "value-999");
}

#[test]
fn with_precopy_off_the_state_crosses_in_the_pause() {
    let host = host(artifacts::KV_V1, 0);
    let mut client = host.client();
    load(&mut client, 1000);
    let report = host.upgrade(artifacts::KV_V2).expect("upgrade");
    assert!(report.precopy.is_none());
    let value: String = client.get("key:00000999").unwrap();
    assert_eq!(value, "value-999");
}

#[test]
fn a_state_past_max_state_rolls_back_during_the_pre_copy() {
    let host = TestHost::with(HostConfig {
        app: artifacts::KV_V1.into(),
        limits: Limits { precopy_chunk: 16 << 10, max_state: 1 << 20, ..Limits::default() },
        ..HostConfig::default()
    });
    let mut client = host.client();
    load(&mut client, 50_000);
    match host.upgrade(artifacts::KV_V2) {
        Err(UpgradeError::TooLarge { bytes, limit, .. }) => {
            assert!(bytes > limit, "{bytes} > {limit}")
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(host.status().app.to_string(), "kv 1.0.0");
    let value: String = client.get("key:00049999").unwrap();
    assert_eq!(value, "value-49999");
}

/// A value of `len` bytes that differs for every key, so a mix-up between keys shows.
fn big_value(i: usize, len: usize) -> Vec<u8> {
    let mut value = vec![0u8; len];
    for (j, b) in value.iter_mut().enumerate() {
        *b = (i.wrapping_mul(31) ^ j.wrapping_mul(7)) as u8;
    }
    value
}

#[test]
fn a_300_mib_state_is_upgraded_and_snapshotted() {
    // One list<u8> of 300 MiB is past wasmtime's default budget for a host call (128 MiB): a
    // state that size once failed both. Pre-copy moves it in chunks; a snapshot moves it whole
    // under the budget --max-state sets (512 MiB by default).
    const KEYS: usize = 300;
    const LEN: usize = 1 << 20;
    let host = TestHost::start(artifacts::KV_V2);
    let mut client = host.client();
    for i in 0..KEYS {
        let _: () = client.set(format!("big:{i}"), big_value(i, LEN)).unwrap();
    }
    let report = host.upgrade(artifacts::KV_V2).expect("upgrade");
    assert!(report.state_bytes > (300 << 20), "{report:?}");
    assert!(report.precopy.is_some(), "{report:?}");
    for i in (0..KEYS).step_by(7) {
        let value: Vec<u8> = client.get(format!("big:{i}")).unwrap();
        assert!(value == big_value(i, LEN), "big:{i} after the upgrade");
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.snap");
    let written = host.snapshot(&file);
    assert!(written.file_bytes > (300 << 20), "{written:?}");
    drop(client);
    drop(host);
    let restored = TestHost::with(HostConfig {
        app: artifacts::KV_V2.into(),
        restore: Some(tasuki::host::Restore { file, transforms: Vec::new() }),
        ..HostConfig::default()
    });
    let mut client = restored.client();
    let n: usize = redis::cmd("DBSIZE").query(&mut client).unwrap();
    assert_eq!(n, KEYS);
    for i in (0..KEYS).step_by(7) {
        let value: Vec<u8> = client.get(format!("big:{i}")).unwrap();
        assert!(value == big_value(i, LEN), "big:{i} after the restore");
    }
}

/// A misbehave host holding `n` entries, pre-copied 1 KiB at a time: the entries span dozens of
/// chunks, and an entry added last lies in one of the last.
fn misbehave_with(n: usize) -> (TestHost, tasuki_tests::LineClient) {
    let host = host(artifacts::MISBEHAVE, 1);
    let mut lines = host.lines();
    for i in 0..n {
        assert_eq!(lines.call(&format!("set k{i} value-{i}")), "ok");
    }
    (host, lines)
}

fn all_there(lines: &mut tasuki_tests::LineClient, n: usize) {
    for i in 0..n {
        assert_eq!(lines.call(&format!("get k{i}")), format!("value-{i}"), "k{i}");
    }
}

#[test]
fn the_new_version_trapping_on_a_chunk_rolls_back_and_the_old_serves_on() {
    let (host, mut lines) = misbehave_with(2000);
    assert_eq!(lines.call("set poison trap-when-imported"), "ok");
    match host.upgrade(artifacts::MISBEHAVE) {
        Err(UpgradeError::Import { error, .. }) => assert!(error.trap().is_some(), "{error}"),
        other => panic!("expected the import to trap, got {other:?}"),
    }
    assert_eq!(host.status().upgrades, 0);
    all_there(&mut lines, 2000);
    // The old instance's session was dropped: once the value is harmless, an upgrade pre-copies.
    assert_eq!(lines.call("set poison harmless"), "ok");
    let report = host.upgrade(artifacts::MISBEHAVE).expect("upgrade");
    assert!(report.precopy.expect("pre-copied").steps > 10);
    all_there(&mut lines, 2000);
    assert_eq!(lines.call("get poison"), "harmless");
}

#[test]
fn the_old_version_trapping_while_chunks_are_taken_is_rebuilt_and_serves_on() {
    let (host, mut lines) = misbehave_with(2000);
    assert_eq!(lines.call("set poison trap-when-copied"), "ok");
    match host.upgrade(artifacts::MISBEHAVE) {
        Err(UpgradeError::Export { error, rebuilt, .. }) => {
            assert!(error.trap().is_some(), "{error}");
            assert!(rebuilt, "the trapped instance was rebuilt from its checkpoint and journal");
        }
        other => panic!("expected the export to trap, got {other:?}"),
    }
    // Same connection, rebuilt instance, every entry.
    all_there(&mut lines, 2000);
    assert_eq!(host.status().recovery.recoveries, 1);
    assert_eq!(lines.call("set poison harmless"), "ok");
    let report = host.upgrade(artifacts::MISBEHAVE).expect("upgrade");
    assert!(report.precopy.is_some());
    all_there(&mut lines, 2000);
}

#[test]
fn a_transformer_trapping_on_a_chunk_rolls_back_and_the_old_serves_on() {
    let host = host(artifacts::KV_V1, 1 << 10);
    let mut client = host.client();
    load(&mut client, 20_000);
    let _: () = client.set("poison", "trap-in-transform").unwrap();
    let options = UpgradeOptions {
        transforms: vec![artifacts::CHUNK_TRAP_TRANSFORM.into()],
        ..UpgradeOptions::default()
    };
    match host.host_upgrade_with(artifacts::KV_V2, &options) {
        Err(UpgradeError::Transform { error, .. }) => {
            assert!(error.to_string().contains("trapped"), "{error}")
        }
        other => panic!("expected the transformer to trap, got {other:?}"),
    }
    assert_eq!(host.status().app.to_string(), "kv 1.0.0");
    check(&mut client, 20_000, &Expected::new());
    let _: () = client.set("poison", "harmless").unwrap();
    let report = host.host_upgrade_with(artifacts::KV_V2, &options).expect("upgrade");
    assert!(report.precopy.expect("pre-copied").steps > 10);
    let value: String = client.get("poison").unwrap();
    assert_eq!(value, "harmless");
}

#[test]
fn a_queue_pushed_and_shifted_through_a_pre_copied_upgrade_arrives_whole() {
    // misbehave keeps a queue in a tasuki_guest::List; 1-byte steps, so the copy of 200,000
    // elements takes as many steps, and pushes and shifts go on until the upgrade returns.
    // Whether they land inside the copy depends on timing here; the simulator's
    // `a_queue_changed_between_the_pre_copy_steps_…` proves that case at every boundary.
    let host = host(artifacts::MISBEHAVE, 1);
    let mut lines = host.lines();
    assert_eq!(lines.call("fill 200000"), "ok");
    let mut model: std::collections::VecDeque<String> =
        (0..200_000).map(|i| format!("f{i}")).collect();
    let upgrading = {
        let host_wasm = artifacts::MISBEHAVE;
        let control = host.control.clone();
        std::thread::spawn(move || {
            tasuki::host::request_upgrade(
                &control,
                std::path::Path::new(host_wasm),
                UpgradeOptions::default(),
            )
        })
    };
    let mut n = 0;
    loop {
        n += 1;
        if n % 3 == 0 {
            let got = lines.call("shift");
            assert_eq!(Some(got), model.pop_front());
        } else {
            assert_eq!(lines.call(&format!("push q{n}")), "ok");
            model.push_back(format!("q{n}"));
        }
        if upgrading.is_finished() {
            break;
        }
    }
    let response = upgrading.join().unwrap().expect("control");
    let tasuki::control::Response::Upgraded(report) = response else {
        panic!("upgrade failed: {response:?}")
    };
    assert!(report.precopy.is_some(), "{report:?}");
    let want: Vec<String> = model.into_iter().collect();
    assert!(lines.call("list") == want.join(","), "the queue after the upgrade");
}

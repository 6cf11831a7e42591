//! Snapshot files: written from a running host without stopping it, restored into a fresh one
//! (through transformers when the versions differ); damaged or foreign files are refused.

use redis::Commands;
use tasuki::host::Restore;
use tasuki::{Host, HostConfig};
use tasuki_tests::{TestHost, artifacts};

fn restore(app: &str, file: &std::path::Path, transforms: &[&str]) -> Result<TestHost, String> {
    // Host::start first, to see its error; then the same config through TestHost.
    let config = HostConfig {
        app: app.into(),
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        restore: Some(Restore {
            file: file.into(),
            transforms: transforms.iter().map(Into::into).collect(),
        }),
        ..HostConfig::default()
    };
    match Host::start(config.clone()) {
        Ok(probe) => {
            probe.shutdown();
            Ok(TestHost::with(config))
        }
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn a_snapshot_round_trips_into_the_same_and_into_a_later_version() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kv.snap");
    let host = TestHost::start(artifacts::KV_V1);
    let mut client = host.client();
    for i in 0..1000 {
        let _: () = client.set(format!("k{i}"), i).unwrap();
    }
    let report = host.snapshot(&file);
    assert_eq!(report.app, "kv");
    assert!(report.file_bytes > 1000);
    // Service went on.
    let _: () = client.set("after", "snapshot").unwrap();

    let same = restore(artifacts::KV_V1, &file, &[]).expect("restore into v1");
    let mut c = same.client();
    let v: i64 = c.get("k999").unwrap();
    assert_eq!(v, 999);
    let after: Option<String> = c.get("after").unwrap();
    assert_eq!(after, None, "the snapshot is of its moment");

    let later = restore(artifacts::KV_V3, &file, &[artifacts::KV_V1_TO_V2, artifacts::KV_V2_TO_V3])
        .expect("restore into v3");
    let mut c = later.client();
    let v: i64 = c.get("k0").unwrap();
    assert_eq!(v, 0);
    let n: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    assert_eq!(n, 1000);
    assert_eq!(later.status().app.to_string(), "kv 3.0.0");
}

#[test]
fn damaged_or_foreign_snapshot_files_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kv.snap");
    let host = TestHost::start(artifacts::KV_V1);
    let mut client = host.client();
    let _: () = client.set("k", "v").unwrap();
    host.snapshot(&file);
    let good = std::fs::read(&file).unwrap();

    let truncated = dir.path().join("truncated.snap");
    std::fs::write(&truncated, &good[..good.len() - 10]).unwrap();
    let err = restore(artifacts::KV_V1, &truncated, &[]).unwrap_err();
    assert!(err.contains("is truncated"), "{err}");

    let corrupt = dir.path().join("corrupt.snap");
    let mut bytes = good.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&corrupt, &bytes).unwrap();
    let err = restore(artifacts::KV_V1, &corrupt, &[]).unwrap_err();
    assert!(err.contains("is corrupt") && err.contains("checksum"), "{err}");

    let not = dir.path().join("not.snap");
    std::fs::write(&not, b"hello world, not a snapshot").unwrap();
    let err = restore(artifacts::KV_V1, &not, &[]).unwrap_err();
    assert!(err.contains("is not a tasuki snapshot"), "{err}");

    let err = restore(artifacts::MISBEHAVE, &file, &[]).unwrap_err();
    assert!(err.contains("is a snapshot of app `kv`, not of `misbehave`"), "{err}");

    let err = restore(artifacts::KV_V3, &file, &[]).unwrap_err();
    assert!(err.contains("section `kv` is version 1, which kv 3.0.0 does not read"), "{err}");

    let err = restore(artifacts::KV_V1, &dir.path().join("missing.snap"), &[]).unwrap_err();
    assert!(err.contains("cannot read"), "{err}");
}

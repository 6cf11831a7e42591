//! Upgrades that must not happen: the running version keeps serving and the operator is told why.

use redis::Commands;
use tasuki::UpgradeError;
use tasuki::control::Response;
use tasuki_tests::{TestHost, artifacts};

#[test]
fn an_upgrade_whose_import_fails_leaves_v1_serving_and_says_why() {
    let host = TestHost::start(artifacts::KV_V1);
    let mut client = host.client();
    let _: () = client.set("kept", "yes").unwrap();

    let Response::Failed(reason) = host.upgrade_via_control(artifacts::KV_REFUSES_IMPORT) else {
        panic!("the upgrade should have failed")
    };
    assert!(reason.contains("rolled back, kv 1.0.0 keeps serving"), "{reason}");
    assert!(
        reason.contains("values over 1 KiB are not supported"),
        "the guest's own text: {reason}"
    );

    // Same connection, same version, same data.
    let kept: String = client.get("kept").unwrap();
    assert_eq!(kept, "yes");
    let _: () = client.set("after", "still v1").unwrap();
    let status = host.status();
    assert_eq!(status.app.to_string(), "kv 1.0.0");
    assert_eq!(status.upgrades, 0);
    let last = status.last_upgrade.expect("the failure is recorded");
    assert!(last.outcome.unwrap_err().contains("values over 1 KiB"));

    // And a good upgrade still works afterwards.
    host.upgrade(artifacts::KV_V2).expect("upgrade after a rollback");
    let after: String = client.get("after").unwrap();
    assert_eq!(after, "still v1");
}

#[test]
fn a_downgrade_that_cannot_read_the_state_is_refused_before_any_pause() {
    let host = TestHost::start(artifacts::KV_V1);
    host.upgrade(artifacts::KV_V2).expect("upgrade");
    let err = host.upgrade(artifacts::KV_V1).unwrap_err();
    assert!(matches!(err, UpgradeError::Incompatible { .. }), "{err}");
    let text = err.to_string();
    assert!(text.starts_with("refused before any pause"), "{text}");
    assert!(text.contains("state section `kv` version 2"), "{text}");
    let mut client = host.client();
    let pong: String = redis::cmd("PING").query(&mut client).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn a_file_that_is_not_a_component_is_refused_before_any_pause() {
    let host = TestHost::start(artifacts::KV_V1);
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"definitely not wasm").unwrap();
    let err = host.upgrade(bogus.to_str().unwrap()).unwrap_err().to_string();
    assert!(err.contains("is not a WebAssembly file"), "{err}");
    let missing = host.upgrade("/nonexistent/kv.wasm").unwrap_err().to_string();
    assert!(missing.contains("cannot read /nonexistent/kv.wasm"), "{missing}");
    let mut client = host.client();
    let pong: String = redis::cmd("PING").query(&mut client).unwrap();
    assert_eq!(pong, "PONG");
}

//! Upgrades that fail at every step: refused before the pause when the new component is wrong,
//! rolled back after it when a guest fails; the serving version serves on, nothing is lost.

use std::sync::Arc;
use std::time::Duration;
use tasuki::control::Response;
use tasuki::{HostConfig, UpgradeError};
use tasuki_tests::{TestHost, artifacts};

fn refused_before_pause(host: &TestHost, wasm: &str) -> String {
    let err = host.upgrade(wasm).unwrap_err().to_string();
    assert!(err.starts_with("refused before any pause"), "{err}");
    err
}

#[test]
fn broken_files_are_refused_before_any_pause() {
    let host = TestHost::start(artifacts::KV_V1);
    let mut client = host.client();
    let dir = tempfile::tempdir().unwrap();

    let missing = refused_before_pause(&host, "/nonexistent/kv.wasm");
    assert!(missing.contains("cannot read /nonexistent/kv.wasm"), "{missing}");

    let text = dir.path().join("text.wasm");
    std::fs::write(&text, "hello").unwrap();
    assert!(refused_before_pause(&host, text.to_str().unwrap()).contains("not a WebAssembly file"));

    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let err = refused_before_pause(&host, core.to_str().unwrap());
    assert!(err.contains("core WebAssembly module, not a component"), "{err}");

    let whole = std::fs::read(artifacts::KV_V2).unwrap();
    let truncated = dir.path().join("truncated.wasm");
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    let err = refused_before_pause(&host, truncated.to_str().unwrap());
    assert!(err.contains("does not compile"), "{err}");

    let pong: String = redis::cmd("PING").query(&mut client).unwrap();
    assert_eq!(pong, "PONG");
    assert_eq!(host.status().app.to_string(), "kv 1.0.0");
}

#[test]
fn components_of_another_world_are_refused_naming_what_is_missing() {
    let host = TestHost::start(artifacts::KV_V1);
    let err = refused_before_pause(&host, artifacts::MISSING_EXPORT);
    assert!(err.contains("does not export tasuki:server/state@0.1.0"), "{err}");
    let err = refused_before_pause(&host, artifacts::EXTRA_IMPORT);
    assert!(err.contains("fixture:extra-import/secrets"), "names the unknown import: {err}");
    let err = refused_before_pause(&host, artifacts::MISBEHAVE);
    assert!(err.contains("is app `misbehave 1.0.0`, but the running app is `kv 1.0.0`"), "{err}");
}

#[test]
fn an_import_that_traps_rolls_back_with_the_old_version_serving() {
    let host =
        TestHost::with(HostConfig { app: artifacts::MISBEHAVE.into(), ..HostConfig::default() });
    let mut a = host.lines();
    assert_eq!(a.call("set k v"), "ok");
    assert_eq!(a.call("trap-import"), "ok");
    let err = host.upgrade(artifacts::MISBEHAVE).unwrap_err();
    let UpgradeError::Import { error, .. } = &err else { panic!("{err}") };
    assert!(error.trap().is_some_and(|t| !t.is_deadline()), "a trap, not a refusal: {err}");
    let text = err.to_string();
    assert!(text.contains("rolled back, misbehave 1.0.0 keeps serving"), "{text}");
    assert_eq!(a.call("get k"), "v");
}

#[test]
fn an_export_that_fails_rolls_back_with_the_guest_reason() {
    let host =
        TestHost::with(HostConfig { app: artifacts::MISBEHAVE.into(), ..HostConfig::default() });
    let mut a = host.lines();
    assert_eq!(a.call("set k v"), "ok");
    assert_eq!(a.call("fail-export"), "ok");
    let err = host.upgrade(artifacts::MISBEHAVE).unwrap_err().to_string();
    assert!(err.contains("failed to export its state"), "{err}");
    assert!(err.contains("export refused on request"), "the guest's text: {err}");
    assert_eq!(a.call("get k"), "v");
}

#[test]
fn an_export_that_traps_rolls_back_and_the_escape_hatch_moves_the_state() {
    let host =
        TestHost::with(HostConfig { app: artifacts::MISBEHAVE.into(), ..HostConfig::default() });
    let mut a = host.lines();
    assert_eq!(a.call("set before-checkpoint 1"), "ok");
    // A first upgrade gives the host a checkpoint; the events after it are journaled.
    host.upgrade(artifacts::MISBEHAVE).expect("a healthy upgrade");
    assert_eq!(a.call("set after-checkpoint 2"), "ok");
    assert_eq!(a.call("trap-export"), "ok");

    let err = host.upgrade(artifacts::MISBEHAVE).unwrap_err();
    let UpgradeError::Export { error, rebuilt, .. } = &err else { panic!("{err}") };
    assert!(error.trap().is_some(), "the export trapped: {err}");
    assert!(*rebuilt, "the trapped instance was rebuilt: {err}");
    let err = err.to_string();
    assert!(err.contains("--from-checkpoint"), "points at the escape hatch: {err}");
    // The trapped instance was rebuilt with everything; the connection is still open.
    assert_eq!(a.call("get after-checkpoint"), "2");

    // The app can never export again (its state says so), but it is not stuck.
    let report = host.upgrade_from_checkpoint(artifacts::MISBEHAVE).expect("escape hatch");
    let shown = report.to_string();
    assert!(shown.contains("state from   the checkpoint of"), "{shown}");
    assert!(shown.contains("events replayed"), "{shown}");
    assert_eq!(a.call("get before-checkpoint"), "1");
    assert_eq!(a.call("get after-checkpoint"), "2");
}

#[test]
fn two_upgrades_at_once_one_runs_the_other_is_refused() {
    // init sleeps 500 ms, so the first upgrade is still preparing when the second arrives.
    let host = Arc::new(TestHost::with(HostConfig {
        app: artifacts::MISBEHAVE.into(),
        args: vec!["slow-init=500".into()],
        ..HostConfig::default()
    }));
    let first = {
        let host = Arc::clone(&host);
        std::thread::spawn(move || host.upgrade(artifacts::MISBEHAVE))
    };
    std::thread::sleep(Duration::from_millis(150));
    let Response::Failed(reason) = host.upgrade_via_control(artifacts::MISBEHAVE) else {
        panic!("the second upgrade should be refused")
    };
    assert!(reason.contains("upgrade is already in progress"), "{reason}");
    first.join().unwrap().expect("the first upgrade runs to the end");
    assert_eq!(host.status().upgrades, 1);
}

#[test]
fn a_client_that_disconnects_during_the_pause_is_reported_to_the_new_version() {
    // The new version sleeps 400 ms after importing: a long pause to disconnect in.
    let host = Arc::new(TestHost::with(HostConfig {
        app: artifacts::MISBEHAVE.into(),
        args: vec!["slow-import=400".into()],
        ..HostConfig::default()
    }));
    let mut stays = host.lines();
    let mut leaves = host.lines();
    assert_eq!(leaves.call("count"), "2");
    let upgrade = {
        let host = Arc::clone(&host);
        std::thread::spawn(move || host.upgrade(artifacts::MISBEHAVE))
    };
    std::thread::sleep(Duration::from_millis(200));
    drop(leaves);
    let report = upgrade.join().unwrap().expect("upgrade");
    assert_eq!(report.connections, 2, "both were open when the pause began");
    assert!(report.pause >= Duration::from_millis(300), "{report}");
    assert_eq!(stays.call("count"), "1", "the new version got the disconnect");
}

//! `tasuki upgrade --canary` as an operator runs it: under redis-benchmark, a wrong release
//! caught and a right one committed; `status` during a canary; SIGTERM during a canary.

use crate::support::{Reply, Running, poll, tasuki, tasuki_ok, text};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tasuki_artifacts::{KV_V2, KV_V2_TO_V3, KV_V3, KV_V3_INCR_OFF_BY_ONE};

const PATIENCE: Duration = Duration::from_secs(60);

fn spawn_canary(dir: &Path, wasm: &str, window: &str) -> Child {
    Command::new(crate::support::TASUKI)
        .current_dir(dir)
        .args(["upgrade", wasm, "--transform", KV_V2_TO_V3, "--canary", window])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `tasuki status` shows a canary of kv 3 under way; its status text.
fn canary_shown(dir: &Path, upgrade: &mut Child) -> String {
    poll(PATIENCE, || {
        assert!(
            upgrade.try_wait().unwrap().is_none(),
            "the upgrade ended before its canary was seen"
        );
        let status = tasuki_ok(dir, &["status"]);
        status.contains("canary       kv 3.0.0").then_some(status)
    })
    .expect("status never showed the canary")
}

#[test]
fn under_redis_benchmark_a_wrong_release_is_caught_and_a_right_one_commits() {
    let dir = tempfile::tempdir().unwrap();
    let host = Running::start(dir.path(), KV_V2);
    let port = host.addr.rsplit(':').next().unwrap().to_string();
    let mut bench = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port, "-t", "incr", "-n", "100000000"])
        .args(["-c", "4", "-q", "-e"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run redis-benchmark ({e}): install redis-tools"));
    // Without -r, redis-benchmark's INCR key is this, literally: it is writing once it exists.
    let mut watcher = host.resp();
    poll(PATIENCE, || {
        (watcher.call(&[b"EXISTS", b"counter:__rand_int__"]) == Reply::Int(1)).then_some(())
    })
    .expect("redis-benchmark never wrote");

    // kv 3 built with INCR adding one too many: caught at the first INCR the candidate runs
    // (60 s is only a bound, so that a canary that misses it fails the test).
    let wrong = spawn_canary(dir.path(), KV_V3_INCR_OFF_BY_ONE, "60s").wait_with_output().unwrap();
    assert!(!wrong.status.success(), "{}", text(&wrong.stdout));
    let err = text(&wrong.stderr);
    assert!(err.contains("upgrade failed: rolled back, kv 2.0.0 keeps serving"), "{err}");
    assert!(err.contains("answered differently in the canary; no client saw its replies"), "{err}");
    assert!(err.contains("request      \"*2\\r\\n$4\\r\\nINCR\\r\\n"), "{err}");
    assert!(err.contains("old replied  \":") && err.contains("new replied  \":"), "{err}");
    assert!(tasuki_ok(dir.path(), &["status"]).contains("app          kv 2.0.0"));
    // Saved as a test in the working directory: the printed command fails the same way.
    let command = err
        .lines()
        .find_map(|line| line.trim().strip_prefix("tasuki test "))
        .unwrap_or_else(|| panic!("no reproduce command: {err}"));
    let args: Vec<&str> = std::iter::once("test").chain(command.split(' ')).collect();
    let replay = tasuki(dir.path(), &args);
    assert_eq!(replay.status.code(), Some(1), "{}{}", text(&replay.stdout), text(&replay.stderr));
    assert!(
        text(&replay.stdout).contains("did not receive what was expected"),
        "{}",
        text(&replay.stdout)
    );

    let mut right = spawn_canary(dir.path(), KV_V3, "2s");
    let status = canary_shown(dir.path(), &mut right);
    assert!(status.contains("client events compared of 2.0 s"), "{status}");
    assert!(status.contains("s left"), "{status}");
    let second = tasuki(dir.path(), &["upgrade", KV_V3, "--transform", KV_V2_TO_V3]);
    assert!(!second.status.success());
    assert!(text(&second.stderr).contains("a canary"), "{}", text(&second.stderr));
    let right = right.wait_with_output().unwrap();
    let out = text(&right.stdout);
    assert!(right.status.success(), "{out}{}", text(&right.stderr));
    assert!(out.contains("upgraded kv 2.0.0 -> kv 3.0.0"), "{out}");
    let events: u64 = out
        .split("canary       ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no canary line: {out}"));
    assert!(events > 100, "the canary ran beside redis-benchmark: {out}");
    assert!(out.contains("committed by swapping instances"), "{out}");
    // kv 3 answers now, not only in status: INFO names the release that serves.
    let Reply::Bulk(Some(info)) = watcher.call(&[b"INFO", b"server"]) else {
        panic!("INFO is not a bulk string")
    };
    assert!(text(&info).contains("tasuki_version:3.0.0"), "{}", text(&info));

    // redis-benchmark never got an error reply, before, during or after either canary.
    assert!(bench.try_wait().unwrap().is_none(), "redis-benchmark stopped early");
    bench.kill().unwrap();
    let bench = bench.wait_with_output().unwrap();
    assert!(!text(&bench.stdout).contains("ERR"), "{}", text(&bench.stdout));
    assert!(tasuki_ok(dir.path(), &["status"]).contains("app          kv 3.0.0"));
}

#[test]
fn sigterm_during_a_canary_drops_the_candidate_and_the_cli_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = Running::spawn(
        dir.path(),
        &["run", KV_V2, "--listen", "127.0.0.1:0", "--snapshot-dir", "snaps"],
    );
    assert_eq!(host.resp().call(&[b"SET", b"kept", b"by kv 2"]), Reply::Status("OK".into()));
    let mut upgrade = spawn_canary(dir.path(), KV_V3, "10m");
    canary_shown(dir.path(), &mut upgrade);
    let sent = Command::new("kill").args(["-TERM", &host.child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let out = upgrade.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("not done: the host is stopping"), "{}", text(&out.stderr));
    let status = poll(PATIENCE, || host.child.try_wait().unwrap()).expect("the host exits");
    assert_eq!(status.code(), Some(0), "{}", host.log());
    // The last snapshot is the old version's state: kv 2 starts from it (it reads no state
    // section of kv 3's), with the key.
    let restarted = Running::spawn(
        dir.path(),
        &["run", KV_V2, "--listen", "127.0.0.1:0", "--snapshot-dir", "snaps"],
    );
    assert_eq!(restarted.resp().call(&[b"GET", b"kept"]), Reply::Bulk(Some(b"by kv 2".to_vec())));
    assert!(tasuki_ok(dir.path(), &["status"]).contains("app          kv 2.0.0"));
}

#[test]
fn a_canary_window_is_events_or_a_duration_with_its_unit() {
    let dir = tempfile::tempdir().unwrap();
    let out = tasuki(dir.path(), &["upgrade", KV_V3, "--canary", "5h"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("unknown unit `h` for a canary window"), "{err}");
    let out = tasuki(dir.path(), &["upgrade", KV_V3, "--canary", "10", "--from-checkpoint"]);
    assert!(text(&out.stderr).contains("cannot be used with"), "{}", text(&out.stderr));
}

/// `tasuki test --canary`: a wrong release fails at the boundaries where its window sees the
/// bug, and the printed command reproduces one of them with the canary (it used to drop
/// `--canary`, and so passed); a rebuild at every boundary would end every canary, so that
/// combination is refused.
#[test]
fn tasuki_test_with_a_canary_prints_a_command_that_reproduces_it() {
    let dir = tempfile::tempdir().unwrap();
    let trace = "connect a\nsend a \"INCR n\\r\\n\"\nexpect a \":1\\r\\n\"\n\
                 send a \"INCR n\\r\\n\"\nexpect a \":2\\r\\n\"\n";
    std::fs::write(dir.path().join("incr.trace"), trace).unwrap();
    let args = ["test", "incr.trace", "--app", KV_V2, "--upgrade", KV_V3_INCR_OFF_BY_ONE];
    let canary = [&args[..], &["--transform", KV_V2_TO_V3, "--canary", "2"]].concat();
    let out = tasuki(dir.path(), &canary);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{shown}{}", text(&out.stderr));
    let reproduce = shown
        .lines()
        .skip_while(|l| !l.contains("reproduce only that case"))
        .nth(1)
        .unwrap_or_else(|| panic!("{shown}"))
        .trim();
    assert!(reproduce.contains("--canary 2"), "{reproduce}");
    let words: Vec<&str> = reproduce.split(' ').skip(1).collect();
    let again = tasuki(dir.path(), &words);
    assert_eq!(again.status.code(), Some(1), "reproduced: {}", text(&again.stdout));

    let both = tasuki(dir.path(), &[&canary[..], &["--rebuild-at", "every"]].concat());
    assert_eq!(both.status.code(), Some(2));
    assert!(text(&both.stderr).contains("--canary cannot be combined"), "{}", text(&both.stderr));
}

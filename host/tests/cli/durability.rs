//! What survives the process: snapshots on a schedule into `--snapshot-dir`, a restart that
//! picks the newest valid one, and a SIGTERM that drains. Each test is a story an operator
//! lives through: the host is killed or stopped, started again, and every key written before
//! the last snapshot is read back through a real client.

use crate::support::{Reply, Resp, Running, closed, poll, tasuki, tasuki_ok, text};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;
use tasuki_artifacts::KV_V1;

/// How long a test waits for something the host does on its own (a snapshot, an exit).
const PATIENCE: Duration = Duration::from_secs(60);

/// `count` keys from `first` on, each with a value of its own.
fn keys(first: usize, count: usize) -> Vec<(String, Vec<u8>)> {
    (first..first + count)
        .map(|i| (format!("key:{i}"), format!("value-{i}").into_bytes()))
        .collect()
}

/// Snapshots written so far, as `tasuki status` counts them.
fn snapshots_written(dir: &Path) -> u64 {
    let status = tasuki_ok(dir, &["status"]);
    let line = status.lines().find(|l| l.starts_with("snapshots")).unwrap_or_else(|| {
        panic!("status shows no snapshots line:\n{status}");
    });
    let (before, _) = line.split_once(" written").expect("snapshots line counts them");
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

/// The snapshot files in `dir`, oldest first.
fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .collect();
    files.sort();
    files
}

fn signal(child: &Child, name: &str) {
    let sent = std::process::Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Waits for the host to exit; fails the test (killing it) if it has not after [`PATIENCE`].
fn exit_code(host: &mut Running) -> Option<i32> {
    let status = poll(PATIENCE, || host.child.try_wait().unwrap());
    match status {
        Some(status) => status.code(),
        None => panic!("the host did not exit:\n{}", host.log()),
    }
}

/// Waits until the host's log (read on a thread of its own, so possibly behind its exit) holds
/// `words`; fails the test if it never does.
fn said(host: &Running, words: &str) {
    poll(PATIENCE, || host.whole_log().contains(words).then_some(()))
        .unwrap_or_else(|| panic!("the host never said {words:?}:\n{}", host.log()));
}

fn run_with(dir: &Path, extra: &[&str]) -> Running {
    let mut args = vec!["run", KV_V1, "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Running::spawn(dir, &args)
}

#[test]
fn a_kill_9_loses_at_most_what_came_after_the_newest_snapshot_and_a_torn_one_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let schedule = ["--snapshot-dir", "snaps", "--snapshot-every", "50ms"];
    let mut host = run_with(dir.path(), &schedule);
    let written = keys(0, 2000);
    host.resp().set_all(&written);
    // Snapshot N+1 may have been cut before the writes were answered; N+2 was asked for after
    // N+1 was written, so after this count was read, so after every write above.
    let seen = snapshots_written(dir.path());
    poll(PATIENCE, || (snapshots_written(dir.path()) >= seen + 2).then_some(()))
        .unwrap_or_else(|| panic!("no snapshot was written:\n{}", host.log()));
    host.resp().set_all(&keys(2000, 100)); // may or may not survive: after the snapshot
    host.child.kill().unwrap(); // SIGKILL: no drain, no last snapshot
    host.child.wait().unwrap();

    let snaps = dir.path().join("snaps");
    let files = snapshot_files(&snaps);
    assert!(!files.is_empty() && files.len() <= 3, "three kept by default: {files:?}");
    for file in &files {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    // The newest file torn by a crash of the disk under it: refused by name, the one before used.
    let newest = files.last().unwrap();
    let torn = snaps.join("snapshot-9999999999999999.snap");
    let bytes = std::fs::read(newest).unwrap();
    std::fs::write(&torn, &bytes[..bytes.len() / 2]).unwrap();

    let restarted = run_with(dir.path(), &["--snapshot-dir", "snaps"]);
    let log = restarted.log();
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    let refused = log.lines().find(|l| l.contains("refusing")).unwrap_or_default();
    assert!(refused.contains(&name(&torn)) && refused.contains("truncated"), "{log}");
    let restored = log.lines().find(|l| l.contains("restored from")).unwrap_or_default();
    assert!(restored.contains(&name(newest)), "{log}");
    let missing = restarted.resp().wrong_or_missing(&written);
    assert!(missing.is_empty(), "{} keys lost, e.g. {:?}", missing.len(), &missing[..1]);
}

#[test]
fn restore_latest_without_a_snapshot_to_restore_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = tasuki(
        dir.path(),
        &[
            "run",
            KV_V1,
            "--listen",
            "127.0.0.1:0",
            "--snapshot-dir",
            "empty",
            "--restore",
            "latest",
        ],
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("holds no snapshot to restore"), "{}", text(&out.stderr));
    let out = tasuki(dir.path(), &["run", KV_V1, "--listen", "127.0.0.1:0", "--restore", "latest"]);
    assert!(
        text(&out.stderr).contains("--restore latest needs --snapshot-dir"),
        "{}",
        text(&out.stderr)
    );
}

/// Sets a value of `len` bytes under `key` and asks for it back without reading the reply past
/// its first line: the host then holds most of it queued.
fn queue_a_big_reply(host: &Running, key: &[u8], len: usize) -> Resp {
    let mut client = host.resp();
    assert_eq!(client.call(&[b"SET", key, &vec![b'v'; len]]), Reply::Status("OK".into()));
    client.stream().write_all(&crate::support::command(&[b"GET", key])).unwrap();
    let mut header = vec![0; format!("${len}\r\n").len()];
    client.stream().read_exact(&mut header).unwrap();
    assert_eq!(text(&header), format!("${len}\r\n"));
    client
}

#[test]
fn sigterm_drains_writes_every_queued_reply_and_a_last_snapshot_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = run_with(dir.path(), &["--snapshot-dir", "snaps"]);
    let len = 32 << 20;
    let mut reader = queue_a_big_reply(&host, b"big", len);
    let written = keys(0, 500);
    host.resp().set_all(&written);

    signal(&host.child, "TERM");
    // The reply queued before the signal arrives whole, then the connection closes.
    let mut rest = Vec::new();
    let end = reader.stream().read_to_end(&mut rest);
    assert!(end.is_ok() || end.as_ref().is_err_and(closed), "{end:?}");
    assert_eq!(rest.len(), len + 2, "the queued reply was cut short:\n{}", host.log());
    assert_eq!(exit_code(&mut host), Some(0), "{}", host.log());
    assert!(TcpStream::connect(&host.addr).is_err(), "the port is closed");

    // The last snapshot holds every answered write.
    let restarted = run_with(dir.path(), &["--snapshot-dir", "snaps"]);
    let missing = restarted.resp().wrong_or_missing(&written);
    assert!(missing.is_empty(), "{} keys lost, e.g. {:?}", missing.len(), &missing[..1]);
}

#[test]
fn a_drain_gives_up_on_a_client_that_does_not_read_and_a_second_sigterm_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // A bounded drain: the client never reads, the host exits 0 once the deadline passes.
    let mut host = run_with(dir.path(), &["--drain-timeout", "200"]);
    let _stuck = queue_a_big_reply(&host, b"big", 32 << 20);
    signal(&host.child, "TERM");
    assert_eq!(exit_code(&mut host), Some(0), "{}", host.log());

    // An unbounded one (10 minutes): the second SIGTERM ends it at once, with status 1.
    let mut host = run_with(dir.path(), &["--drain-timeout", "600000"]);
    let _stuck = queue_a_big_reply(&host, b"big", 32 << 20);
    signal(&host.child, "TERM");
    said(&host, "draining");
    assert!(TcpStream::connect(&host.addr).is_err(), "no longer accepting while draining");
    signal(&host.child, "TERM");
    assert_eq!(exit_code(&mut host), Some(1), "{}", host.log());
    said(&host, "second signal: exiting at once");
}

#[test]
fn run_exits_non_zero_with_the_reason_when_its_event_loop_dies() {
    let dir = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(crate::support::TASUKI)
        .current_dir(dir.path())
        .args(["run", KV_V1, "--listen", "127.0.0.1:0"])
        .env("TASUKI_LOG", "info")
        .env("TASUKI_FAULT_LOOP_PANIC_ON_ACCEPT", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut host = Running::adopt(child);
    // The first connection makes the loop panic: nothing can be served from then on.
    let _client = TcpStream::connect(&host.addr).unwrap();
    assert_eq!(exit_code(&mut host), Some(1), "{}", host.log());
    said(&host, "error: the event loop stopped: it panicked");
    assert!(TcpStream::connect(&host.addr).is_err(), "the port is released");
    assert!(!dir.path().join("tasuki.sock").exists(), "the control socket is removed");
}

#[test]
fn sigterm_stops_the_host_even_after_its_control_socket_file_was_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = run_with(dir.path(), &[]);
    // A cleanup script removing the host's temporary directory, say.
    std::fs::remove_file(dir.path().join("tasuki.sock")).unwrap();
    signal(&host.child, "TERM");
    assert_eq!(exit_code(&mut host), Some(0), "{}", host.log());
}

/// `tasuki upgrade` as a child, its output piped.
fn spawn_upgrade(dir: &Path, wasm: &str) -> Child {
    std::process::Command::new(crate::support::TASUKI)
        .current_dir(dir)
        .args(["upgrade", wasm])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn ctrl_c_on_upgrade_does_not_cancel_it_and_the_cli_stays_to_report_the_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let host = run_with(dir.path(), &[]);
    host.resp().set_all(&keys(0, 10));
    let upgrade = spawn_upgrade(dir.path(), tasuki_artifacts::KV_V2);
    // The request reached the host, so the CLI's handler is in place.
    said(&host, "upgrade to");
    signal(&upgrade, "INT");
    let out = upgrade.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("upgraded kv 1.0.0 -> kv 2.0.0"), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("Ctrl-C does not cancel it"), "{}", text(&out.stderr));
    assert!(tasuki_ok(dir.path(), &["status"]).contains("kv 2.0.0"));
    assert!(
        tasuki(dir.path(), &["upgrade", "--help"])
            .stdout
            .windows(22)
            .any(|w| w == b"Ctrl-C does not cancel")
    );
}

#[test]
fn a_host_stopped_mid_upgrade_tells_the_cli_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = run_with(dir.path(), &[]);
    let upgrade = spawn_upgrade(dir.path(), tasuki_artifacts::KV_V2);
    said(&host, "upgrade to");
    signal(&host.child, "TERM");
    let out = upgrade.wait_with_output().unwrap();
    assert_eq!(exit_code(&mut host), Some(0), "{}", host.log());
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(err.contains("not done: the host is stopping"), "{err}");
}

#[test]
fn a_connection_over_max_connections_is_told_why_before_it_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let refusal = "-ERR max number of clients reached\r\n";
    let host = run_with(
        dir.path(),
        &["--max-connections", "1", "--refuse-reply", r"-ERR max number of clients reached\r\n"],
    );
    let mut first = host.resp();
    assert_eq!(first.call(&[b"PING"]), Reply::Status("PONG".into()), "the one allowed");
    let mut second = TcpStream::connect(&host.addr).unwrap();
    second.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut said = Vec::new();
    let end = second.read_to_end(&mut said);
    assert!(end.is_ok() || end.as_ref().is_err_and(closed), "{end:?}");
    assert_eq!(text(&said), refusal);
    assert_eq!(first.call(&[b"PING"]), Reply::Status("PONG".into()), "the first stays served");
}

/// Small faults an operator meets on the first day, each once.
#[test]
fn operator_papercuts_status_into_head_localhost_missing_dir_one_cause_quiet_debug() {
    let dir = tempfile::tempdir().unwrap();
    // `--listen localhost:PORT` is a name, resolved.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let localhost = format!("localhost:{free}");
    let host = Running::spawn(dir.path(), &["run", KV_V1, "--listen", &localhost]);
    assert!(host.addr.contains(&format!("127.0.0.1:{free}")), "{}", host.addr);

    // `tasuki status | head`: the reader may go away first; no panic, exit 0.
    let mut piped = std::process::Command::new(crate::support::TASUKI)
        .current_dir(dir.path())
        .arg("status")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(piped.stdout.take()); // the reader is gone before a byte is written
    let out = piped.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?} {}", out.status, text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));

    // A snapshot into a directory that is not there names it.
    let out = tasuki(dir.path(), &["snapshot", "--out", "no/such/dir/kv.snap"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("no/such/dir"), "{}", text(&out.stderr));

    // A port in use: the cause is said once.
    let out = tasuki(dir.path(), &["run", KV_V1, "--listen", &host.addr, "--control", "b.sock"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
    drop(host);

    // TASUKI_LOG=debug: tasuki's own debug lines, not the compiler's.
    let debug = std::process::Command::new(crate::support::TASUKI)
        .current_dir(dir.path())
        .args(["run", KV_V1, "--listen", "127.0.0.1:0", "--control", "d.sock"])
        .env("TASUKI_LOG", "debug")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let host = Running::adopt(debug);
    host.resp().call(&[b"PING"]);
    // The connection's debug line comes after the compile; the compile's lines, if any were let
    // through, came before it.
    said(&host, "DEBUG tasuki");
    let log = host.whole_log();
    let foreign = log.lines().filter(|l| l.contains("cranelift") || l.contains("wasmtime")).count();
    assert_eq!(foreign, 0, "{}", host.log());
}

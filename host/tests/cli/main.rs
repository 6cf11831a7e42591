//! The `tasuki` command as an operator uses it: `run` in the background, `status` and `upgrade`
//! from another process, Ctrl-C to stop. `recovery` holds the end-to-end tests of recovery from a
//! trap; `support` what every test shares.

mod backpressure;
mod canary;
mod durability;
mod ftp;
mod listeners;
mod memory;
mod recovery;
mod support;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{Running, TASUKI, roundtrip, tasuki, text};

#[test]
fn run_status_upgrade_from_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let host = Running::start(dir.path(), tasuki_artifacts::KV_V1);
    let mut client = TcpStream::connect(&host.addr).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(roundtrip(&mut client, b"SET hello world\r\n", 5), "+OK\r\n");

    let status = tasuki(dir.path(), &["status"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    let shown = text(&status.stdout);
    assert!(shown.contains("kv 1.0.0"), "{shown}");
    assert!(shown.contains("connections  1"), "{shown}");

    let upgrade = tasuki(dir.path(), &["upgrade", tasuki_artifacts::KV_V2]);
    assert!(upgrade.status.success(), "{}", text(&upgrade.stderr));
    let shown = text(&upgrade.stdout);
    assert!(shown.contains("upgraded kv 1.0.0 -> kv 2.0.0"), "{shown}");
    assert!(shown.contains("pause"), "{shown}");
    assert!(shown.contains("state moved"), "{shown}");

    assert_eq!(roundtrip(&mut client, b"GET hello\r\n", 11), "$5\r\nworld\r\n");
    assert_eq!(roundtrip(&mut client, b"TTL hello\r\n", 5), ":-1\r\n");

    let status = text(&tasuki(dir.path(), &["status"]).stdout);
    assert!(status.contains("kv 2.0.0"), "{status}");
    assert!(status.contains("last upgrade"), "{status}");
}

#[test]
fn a_failed_upgrade_exits_non_zero_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let _host = Running::start(dir.path(), tasuki_artifacts::KV_V1);
    let out = tasuki(dir.path(), &["upgrade", tasuki_artifacts::KV_REFUSES_IMPORT]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("upgrade failed: rolled back, kv 1.0.0 keeps serving"), "{err}");

    let out = tasuki(dir.path(), &["upgrade", "missing.wasm"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cannot read missing.wasm"), "{}", text(&out.stderr));
}

#[test]
fn commands_without_a_running_host_say_so() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["status"][..], &["upgrade", tasuki_artifacts::KV_V2][..]] {
        let out = tasuki(dir.path(), args);
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.contains("no tasuki host is listening at tasuki.sock"), "{err}");
    }
}

/// A burst of new clients while the loop is busy inside a call waits in the kernel's queue
/// and is accepted at once afterwards: with std's backlog of 128, the clients past it had their
/// SYNs dropped and connected a second or more later (`LISTEN_BACKLOG`).
#[test]
fn a_burst_of_connections_during_a_long_call_is_queued_not_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["run", tasuki_artifacts::MISBEHAVE, "--listen", "127.0.0.1:0"];
    let host = Running::spawn(dir.path(), &args);
    // The guest spins until the 1 s call deadline: the loop accepts nobody meanwhile.
    let mut busy = TcpStream::connect(&host.addr).unwrap();
    std::io::Write::write_all(&mut busy, b"loop\n").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let mut burst = Vec::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..600 {
        let started = std::time::Instant::now();
        burst.push(TcpStream::connect(&host.addr).unwrap());
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(900),
        "a connect took {slowest:?}: its SYN was dropped"
    );
    // And every one of them is served once the call is over.
    let last = burst.last_mut().unwrap();
    last.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(roundtrip(last, b"set k v\n", 3), "ok\n");
}

#[test]
fn run_refuses_bad_input_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk.wasm"), b"\0asm\x01\0\0\0junk").unwrap();
    let out = tasuki(dir.path(), &["run", "junk.wasm", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is a core WebAssembly module, not a component"),
        "{}",
        text(&out.stderr)
    );

    let out = tasuki(dir.path(), &["run", tasuki_artifacts::KV_V1]);
    assert!(!out.status.success(), "--listen is required");
    let out = tasuki(dir.path(), &["run", tasuki_artifacts::KV_V1, "--listen", "not-an-address"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("invalid value 'not-an-address'"), "{}", text(&out.stderr));
}

#[test]
fn a_second_host_on_the_same_control_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Running::start(dir.path(), tasuki_artifacts::KV_V1);
    let out = tasuki(dir.path(), &["run", tasuki_artifacts::KV_V1, "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already listening at tasuki.sock"),
        "{}",
        text(&out.stderr)
    );
}

#[cfg(unix)]
#[test]
fn sigterm_stops_the_host_and_removes_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = Running::start(dir.path(), tasuki_artifacts::KV_V1);
    let socket = dir.path().join("tasuki.sock");
    assert!(socket.exists());
    let killed =
        Command::new("kill").args(["-TERM", &host.child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = host.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "the control socket is removed on a clean stop");
}

#[test]
fn run_help_shows_every_limit_with_its_default() {
    let dir = tempfile::tempdir().unwrap();
    let help = text(&tasuki(dir.path(), &["run", "--help"]).stdout);
    for (flag, default) in [
        ("--memory-limit", "1024"),
        ("--call-deadline", "1000"),
        ("--upgrade-deadline", "10000"),
        ("--max-state", "512"),
        ("--max-connections", "10000"),
        ("--output-buffer", "8192"),
        ("--journal", "256"),
    ] {
        let line = help
            .lines()
            .position(|l| l.contains(flag))
            .unwrap_or_else(|| panic!("{flag}:\n{help}"));
        let described: String = help.lines().skip(line).take(6).collect::<Vec<_>>().join("\n");
        assert!(described.contains(&format!("[default: {default}]")), "{flag}:\n{described}");
    }
    assert!(help.contains("--dir <HOST[::GUEST]>") && help.contains("--env <KEY=VALUE>"), "{help}");

    let out = tasuki(
        dir.path(),
        &["run", tasuki_artifacts::KV_V1, "--listen", "127.0.0.1:0", "--memory-limit", "0"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--memory-limit must be at least 1 MiB"),
        "{}",
        text(&out.stderr)
    );
    let out = tasuki(
        dir.path(),
        &["run", tasuki_artifacts::KV_V1, "--listen", "127.0.0.1:0", "--dir", "/no/such/dir"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--dir /no/such/dir: not a directory"),
        "{}",
        text(&out.stderr)
    );
    let out = tasuki(
        dir.path(),
        &["run", tasuki_artifacts::KV_V1, "--listen", "127.0.0.1:0", "--checkpoint-dir", "/no/dir"],
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--checkpoint-dir /no/dir: not a directory"), "{stderr}");
}

/// A `--checkpoint-dir` that cannot hold a file is refused before a socket is bound, naming the
/// directory and why, rather than the host serving with its recovery state in memory.
#[test]
fn a_checkpoint_dir_that_cannot_hold_a_file_is_refused_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    // /proc: a directory no one can make a file in, root included.
    let args =
        ["run", tasuki_artifacts::KV_V1, "--listen", "127.0.0.1:0", "--checkpoint-dir", "/proc"];
    let mut child = Command::new(TASUKI)
        .current_dir(dir.path())
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = support::poll(Duration::from_secs(30), || child.try_wait().unwrap());
    if exited.is_none() {
        child.kill().unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(exited.is_some_and(|s| !s.success()), "it must exit non-zero at once:\n{stderr}");
    let said = "--checkpoint-dir /proc: cannot write the recovery checkpoint's file there";
    assert!(stderr.contains(said), "{stderr}");
    assert!(!stderr.contains("serving on"), "refused before serving: {stderr}");
}

#[test]
fn snapshot_migrate_check_and_restore_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let host = Running::start(dir.path(), tasuki_artifacts::KV_V1);
    let mut client = TcpStream::connect(&host.addr).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(roundtrip(&mut client, b"SET kept yes\r\n", 5), "+OK\r\n");

    let out = tasuki(dir.path(), &["snapshot", "--out", "kv.snap"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("kv.snap"), "{}", text(&out.stdout));
    assert_eq!(roundtrip(&mut client, b"PING\r\n", 7), "+PONG\r\n", "still serving");

    // Offline: v1's snapshot through both transformers, proven against v3, written out.
    let out = tasuki(
        dir.path(),
        &[
            "migrate",
            "--in",
            "kv.snap",
            "--transform",
            tasuki_artifacts::KV_V1_TO_V2,
            "--transform",
            tasuki_artifacts::KV_V2_TO_V3,
            "--check",
            tasuki_artifacts::KV_V3,
            "--out",
            "kv-v3.snap",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("kv v3"), "{shown}");
    assert!(shown.contains("checked: kv 3.0.0"), "{shown}");

    // A check that fails says why, and writes nothing.
    let out = tasuki(
        dir.path(),
        &["migrate", "--in", "kv.snap", "--check", tasuki_artifacts::KV_V3, "--out", "no.snap"],
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("add a transformer from 1 to 3"), "{}", text(&out.stderr));
    assert!(!dir.path().join("no.snap").exists());

    // A fresh v3 host starts from the migrated file.
    let other = tempfile::tempdir().unwrap();
    let restored = std::process::Command::new(TASUKI)
        .current_dir(other.path())
        .args(["run", tasuki_artifacts::KV_V3, "--listen", "127.0.0.1:0"])
        .arg("--restore")
        .arg(dir.path().join("kv-v3.snap"))
        .env("TASUKI_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let v3 = Running::adopt(restored);
    let mut client = TcpStream::connect(&v3.addr).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(roundtrip(&mut client, b"GET kept\r\n", 9), "$3\r\nyes\r\n");
    assert_eq!(roundtrip(&mut client, b"TYPE kept\r\n", 9), "+string\r\n");

    // A truncated file is refused with a clear error.
    let bytes = std::fs::read(dir.path().join("kv.snap")).unwrap();
    std::fs::write(dir.path().join("cut.snap"), &bytes[..bytes.len() / 2]).unwrap();
    let out = tasuki(
        other.path(),
        &[
            "run",
            tasuki_artifacts::KV_V1,
            "--listen",
            "127.0.0.1:0",
            "--control",
            "x.sock",
            "--restore",
        ],
    );
    assert!(!out.status.success());
    let cut = dir.path().join("cut.snap");
    let out = tasuki(
        other.path(),
        &[
            "run",
            tasuki_artifacts::KV_V1,
            "--listen",
            "127.0.0.1:0",
            "--control",
            "x.sock",
            "--restore",
            cut.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("is truncated"), "{}", text(&out.stderr));
}

fn traces() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/traces")
}

#[test]
fn the_ftp_control_trace_holds_at_every_boundary_over_a_directory_granted_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let trace = traces().join("ftp-control.trace");
    let site = traces().join("ftp-site");
    let grant = format!("{}::/srv", site.display());
    let before = std::fs::read_dir(&site).unwrap().count();
    for rebuild in ["never", "every"] {
        let out = tasuki(
            dir.path(),
            &[
                "test",
                trace.to_str().unwrap(),
                "--app",
                tasuki_artifacts::FTP_V1,
                "--upgrade",
                tasuki_artifacts::FTP_V2,
                "--rebuild-at",
                rebuild,
                "--dir",
                &grant,
                "--arg",
                "user=alice:secret",
                "--arg",
                "anonymous",
            ],
        );
        let shown = text(&out.stdout);
        assert!(out.status.success(), "{shown}{}", text(&out.stderr));
        assert!(shown.contains("28 ok, 0 failed (28 upgraded)"), "{shown}");
    }
    // Nothing was written: every run found the same files.
    assert_eq!(std::fs::read_dir(&site).unwrap().count(), before);
    assert!(!site.join("new.txt").exists());
}

#[test]
fn the_ftp_idle_timeout_trace_holds_when_release_2_is_upgraded_to_3_at_each_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let trace = traces().join("ftp-idle.trace");
    // Release 2 alone never times out, so the trace holds only with the upgrade in it: at each
    // boundary up to the last command, one run each (after it, release 2 would see the
    // quiet time out), with and without a rebuild at every boundary.
    for at in ["0", "1", "2", "3", "4"] {
        for rebuild in ["never", "every"] {
            let out = tasuki(
                dir.path(),
                &[
                    "test",
                    trace.to_str().unwrap(),
                    "--app",
                    tasuki_artifacts::FTP_V2,
                    "--upgrade",
                    tasuki_artifacts::FTP_V3,
                    "--upgrade-at",
                    at,
                    // Moved inside the pause, so that the upgrade commits at its boundary
                    // (pre-copied, it would commit an event later, and none may follow).
                    "--precopy-chunk",
                    "0",
                    "--rebuild-at",
                    rebuild,
                    "--arg",
                    "user=alice:secret",
                ],
            );
            let shown = text(&out.stdout);
            assert!(out.status.success(), "upgrade at {at}: {shown}{}", text(&out.stderr));
            assert!(shown.contains("1 ok, 0 failed (1 upgraded)"), "{shown}");
        }
    }
}

#[test]
fn tasuki_test_reports_the_smallest_failing_boundary_and_how_to_reproduce_it() {
    let dir = tempfile::tempdir().unwrap();
    let trace = traces().join("kv-empty-values.trace");
    let trace = trace.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "test",
            trace,
            "--app",
            tasuki_artifacts::KV_V1,
            "--upgrade",
            tasuki_artifacts::KV_V2,
        ];
        args.extend_from_slice(extra);
        tasuki(dir.path(), &args)
    };
    let ok = run(&["--transform", tasuki_artifacts::KV_V1_TO_V2, "--upgrade-at", "every"]);
    assert!(ok.status.success(), "{}{}", text(&ok.stdout), text(&ok.stderr));
    assert!(text(&ok.stdout).contains("7 ok, 0 failed"), "{}", text(&ok.stdout));

    let bad = run(&["--transform", tasuki_artifacts::FAULTY_TRANSFORM, "--upgrade-at", "every"]);
    assert_eq!(bad.status.code(), Some(1));
    let shown = text(&bad.stdout);
    assert!(shown.contains("smallest failing boundary: 3 (after line 7)"), "{shown}");
    assert!(shown.contains("expected \"$0\\r\\n\\r\\n\""), "{shown}");
    let reproduce = shown
        .lines()
        .skip_while(|l| !l.contains("reproduce only that case"))
        .nth(1)
        .unwrap()
        .trim();
    assert!(reproduce.ends_with("--upgrade-at 3"), "{reproduce}");
    let words: Vec<&str> = reproduce.split(' ').skip(1).collect();
    let again = tasuki(dir.path(), &words);
    assert_eq!(again.status.code(), Some(1), "the printed command reproduces the failure");
    assert!(
        text(&again.stdout).contains("upgrade at boundaries 3..=3: 0 ok, 1 failed"),
        "{}",
        text(&again.stdout)
    );

    std::fs::write(dir.path().join("bad.trace"), "connect a\nsend b \"x\"\n").unwrap();
    let bad_trace = tasuki(dir.path(), &["test", "bad.trace", "--app", tasuki_artifacts::KV_V1]);
    assert_eq!(bad_trace.status.code(), Some(2));
    assert!(
        text(&bad_trace.stderr).contains("bad.trace:2: connection `b` is not open"),
        "{}",
        text(&bad_trace.stderr)
    );
}

#[test]
fn a_recorded_session_replays_as_a_test() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(TASUKI)
        .current_dir(dir.path())
        .args([
            "run",
            tasuki_artifacts::KV_V1,
            "--listen",
            "127.0.0.1:0",
            "--record",
            "session.trace",
        ])
        .env("TASUKI_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let host = Running::adopt(child);
    let mut a = TcpStream::connect(&host.addr).unwrap();
    a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(roundtrip(&mut a, b"SET visits 41\r\n", 5), "+OK\r\n");
    assert_eq!(roundtrip(&mut a, b"INCR visits\r\n", 5), ":42\r\n");
    assert_eq!(roundtrip(&mut a, b"*2\r\n$3\r\nGET\r\n$6\r\nvisits\r\n", 8), "$2\r\n42\r\n");
    drop(a);
    std::thread::sleep(Duration::from_millis(200));
    drop(host);
    let recorded = std::fs::read_to_string(dir.path().join("session.trace")).unwrap();
    assert!(recorded.contains("send c1 \"INCR visits\\r\\n\""), "{recorded}");
    assert!(recorded.contains("expect c1 \":42\\r\\n\""), "{recorded}");
    assert!(recorded.contains("close c1"), "{recorded}");
    let replay = tasuki(
        dir.path(),
        &[
            "test",
            "session.trace",
            "--app",
            tasuki_artifacts::KV_V1,
            "--upgrade",
            tasuki_artifacts::KV_V2,
            "--upgrade-at",
            "every",
        ],
    );
    assert!(replay.status.success(), "{}\n{recorded}", text(&replay.stdout));
}

#[test]
fn tasuki_test_refuses_what_upgrade_refuses_and_fails_when_no_upgrade_ran() {
    let dir = tempfile::tempdir().unwrap();
    let trace = traces().join("kv-trap-after-transform.trace");
    let trace = trace.to_str().unwrap();
    let test = |extra: &[&str]| {
        let mut args = vec!["test", trace, "--app", tasuki_artifacts::KV_V1];
        args.extend_from_slice(extra);
        tasuki(dir.path(), &args)
    };

    // --upgrade alone places the upgrade at every boundary, and a fault after a transformed
    // upgrade keeps every key, with a rebuild at every boundary too.
    let chain = [
        "--upgrade",
        tasuki_artifacts::KV_V3,
        "--transform",
        tasuki_artifacts::KV_V1_TO_V2,
        "--transform",
        tasuki_artifacts::KV_V2_TO_V3,
    ];
    let ok = test(&chain);
    assert!(ok.status.success(), "{}{}", text(&ok.stdout), text(&ok.stderr));
    assert!(text(&ok.stdout).contains("12 ok, 0 failed (12 upgraded)"), "{}", text(&ok.stdout));
    let mut rebuilt = chain.to_vec();
    rebuilt.extend(["--rebuild-at", "every"]);
    let ok = test(&rebuilt);
    assert!(ok.status.success(), "{}{}", text(&ok.stdout), text(&ok.stderr));
    assert!(text(&ok.stdout).contains("rebuilds"), "{}", text(&ok.stdout));

    // A chain whose versions do not line up: refused before anything runs, with the very
    // message `tasuki upgrade` gives a running host.
    let misaligned =
        ["--upgrade", tasuki_artifacts::KV_V3, "--transform", tasuki_artifacts::KV_V2_TO_V3];
    let refused = test(&misaligned);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stdout));
    let host = Running::start(dir.path(), tasuki_artifacts::KV_V1);
    let live = tasuki(
        dir.path(),
        &["upgrade", tasuki_artifacts::KV_V3, "--transform", tasuki_artifacts::KV_V2_TO_V3],
    );
    drop(host);
    assert!(!live.status.success());
    let reason = text(&live.stderr);
    let reason = reason.trim().trim_start_matches("upgrade failed: ");
    assert!(reason.contains("reads section `kv` version 2"), "{reason}");
    assert!(text(&refused.stderr).contains(reason), "{}\nvs\n{reason}", text(&refused.stderr));

    // Asked for an upgrade and told `never`: nothing would be tested.
    let mut never = chain.to_vec();
    never.extend(["--upgrade-at", "never"]);
    let never = test(&never);
    assert_eq!(never.status.code(), Some(2));
    assert!(text(&never.stderr).contains("no upgrade would run"), "{}", text(&never.stderr));

    // Placed past the last boundary: the run fails and says the upgrade never ran.
    let mut past = chain.to_vec();
    past.extend(["--upgrade-at", "1000"]);
    let past = test(&past);
    assert_eq!(past.status.code(), Some(1), "{}", text(&past.stdout));
    assert!(text(&past.stdout).contains("no upgrade ran"), "{}", text(&past.stdout));
}

/// A host of another control protocol version (here a stand-in that answers as one would): the
/// CLI names both versions instead of misreading the answer.
#[test]
fn a_host_of_another_control_protocol_version_is_named() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let listener = std::os::unix::net::UnixListener::bind(dir.path().join("tasuki.sock")).unwrap();
    std::fs::set_permissions(
        dir.path().join("tasuki.sock"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let host = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut header = [0u8; 12];
        stream.read_exact(&mut header).unwrap();
        assert_eq!(&header[..4], tasuki::control::FRAME_MAGIC, "the request is framed");
        let mut answer = tasuki::control::FRAME_MAGIC.to_vec();
        answer.extend_from_slice(&99u32.to_be_bytes());
        answer.extend_from_slice(&3u32.to_be_bytes());
        answer.extend_from_slice(b"new");
        stream.write_all(&answer).unwrap();
    });
    let out = tasuki(dir.path(), &["status"]);
    host.join().unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let named = format!(
        "speaks control protocol 99, this tasuki speaks {}",
        tasuki::control::PROTOCOL_VERSION
    );
    assert!(err.contains(&named), "{err}");
}

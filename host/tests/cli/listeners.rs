//! Listeners an app opens while it runs (FTP's passive data ports), through the real CLI and
//! real loopback sockets: `examples/passive` opens a port when its control connection asks, and
//! a client that connects to that port gets the data. The port is the host's: it stays open
//! across an upgrade, a rollback and a trap's recovery, is lost (and the app told) across a
//! restart from a snapshot, and is freed when the app closes it; the operator bounds how many
//! and which ports.

use crate::support::{Lines, Running, read_to_close, tasuki, tasuki_ok, text};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use tasuki_artifacts::PASSIVE;

/// Asks for a data port on `control` with `request` (`LISTEN`, `PASV`, ...): its id and port.
fn open_port(control: &mut Lines, request: &str) -> (u64, u16) {
    let reply = control.call(request);
    let words: Vec<&str> = reply.split(' ').collect();
    match words[..] {
        ["PORT", id, port] => (id.parse().unwrap(), port.parse().unwrap()),
        _ => panic!("{request} answered {reply:?}"),
    }
}

/// Connects to the data port and reads what it sends until the server hangs up.
fn fetch(port: u16) -> String {
    let mut data = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("the data port {port} is not open: {e}"));
    data.set_read_timeout(Some(crate::support::REPLY_TIMEOUT)).unwrap();
    read_to_close(&mut data)
}

/// The `run-time listeners` line of `tasuki status`, or "" if it shows none.
fn status_listeners(dir: &Path) -> String {
    let status = tasuki_ok(dir, &["status"]);
    status.lines().find(|l| l.starts_with("run-time listeners")).unwrap_or_default().to_string()
}

#[test]
fn a_data_port_opened_before_an_upgrade_accepts_after_it_and_closing_it_frees_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let host = Running::start(dir.path(), PASSIVE);
    let mut control = host.lines();
    assert_eq!(control.call("PUT hello"), "OK");
    let (id, port) = open_port(&mut control, "LISTEN");
    assert_eq!(
        status_listeners(dir.path()),
        format!("run-time listeners  1: {id} on 127.0.0.1:{port} (0 accepted)")
    );

    let upgrade = tasuki_ok(dir.path(), &["upgrade", PASSIVE]);
    assert!(upgrade.contains("upgraded passive 1.0.0 -> passive 1.0.0"), "{upgrade}");
    // The new version accepts on the port the old one opened, and knows whose it is.
    assert_eq!(fetch(port), format!("DATA {id} hello\n"));
    assert_eq!(control.line(), format!("SENT {id}"));
    assert_eq!(fetch(port), format!("DATA {id} hello\n"));
    assert_eq!(control.line(), format!("SENT {id}"));
    assert_eq!(
        status_listeners(dir.path()),
        format!("run-time listeners  1: {id} on 127.0.0.1:{port} (2 accepted)")
    );

    assert_eq!(control.call(&format!("CLOSE {id}")), format!("CLOSED {id}"));
    let refused = TcpStream::connect(("127.0.0.1", port));
    assert!(refused.is_err(), "the closed port still accepts");
    TcpListener::bind(("127.0.0.1", port)).expect("the closed port is free to bind");
    assert_eq!(status_listeners(dir.path()), "");
    // A PASV port takes one data connection and closes.
    let (id, port) = open_port(&mut control, "PASV");
    assert_eq!(fetch(port), format!("DATA {id} hello\n"));
    assert_eq!(control.line(), format!("SENT {id}"));
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "a PASV port stays open");
    assert_eq!(control.call("INFO"), "passive 1.0.0 served=3 listeners=0 lost=0");
}

#[test]
fn a_rolled_back_upgrade_and_a_trap_leave_the_data_port_open() {
    let dir = tempfile::tempdir().unwrap();
    let host = Running::start(dir.path(), PASSIVE);
    let mut control = host.lines();
    assert_eq!(control.call("PUT kept"), "OK");
    let (id, port) = open_port(&mut control, "LISTEN");

    // Rolled back: the running version refuses to export its state.
    assert_eq!(control.call("HOLD"), "OK");
    let out = tasuki(dir.path(), &["upgrade", PASSIVE]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("held by HOLD"), "{}", text(&out.stderr));
    assert_eq!(fetch(port), format!("DATA {id} kept\n"));
    assert_eq!(control.line(), format!("SENT {id}"));
    assert_eq!(control.call("RELEASE"), "OK");

    // A trap on another connection: the instance is rebuilt from its checkpoint and journal,
    // and the rebuilt one still knows the port and its session.
    let mut crasher = host.lines();
    assert!(crasher.try_call("CRASH").is_err(), "the trapping connection is closed");
    assert_eq!(fetch(port), format!("DATA {id} kept\n"));
    assert_eq!(control.line(), format!("SENT {id}"));
    assert_eq!(control.call("INFO"), "passive 1.0.0 served=2 listeners=1 lost=0");
    assert!(status_listeners(dir.path()).contains(&format!("{id} on 127.0.0.1:{port}")));
}

#[test]
fn a_restart_from_a_snapshot_tells_the_app_its_data_ports_are_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = Running::start(dir.path(), PASSIVE);
    let mut control = host.lines();
    let (_, port) = open_port(&mut control, "LISTEN");
    tasuki_ok(dir.path(), &["snapshot", "--out", "passive.snap"]);
    host.child.kill().unwrap(); // SIGKILL
    host.child.wait().unwrap();
    drop(host);

    let args = ["run", PASSIVE, "--listen", "127.0.0.1:0", "--restore", "passive.snap"];
    let host = Running::spawn(dir.path(), &args);
    let mut control = host.lines();
    assert_eq!(control.call("INFO"), "passive 1.0.0 served=0 listeners=0 lost=1");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "nothing listens on the old port");
    assert_eq!(status_listeners(dir.path()), "");
    // And the app opens new ones as before.
    let (id, port) = open_port(&mut control, "PASV");
    assert_eq!(id, 2, "ids go on from the restored state");
    assert_eq!(fetch(port), format!("DATA {id} \n"));
}

#[test]
fn ports_outside_the_operators_range_and_past_the_limit_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    // Above Linux's ephemeral range (32768-60999), so no client socket holds them.
    let args = [
        "run",
        PASSIVE,
        "--listen",
        "127.0.0.1:0",
        "--data-ports",
        "61000-61001",
        "--max-listeners",
        "2",
    ];
    let host = Running::spawn(dir.path(), &args);
    let mut control = host.lines();
    let (first, port) = open_port(&mut control, "LISTEN");
    assert_eq!(port, 61000);
    assert_eq!(control.call("LISTEN 61000"), "ERR in use: port 61000 is in use");
    assert_eq!(
        control.call("LISTEN 22"),
        "ERR not allowed: port 22 is outside --data-ports 61000-61001; ask for one of those, or \
         0 for any"
    );
    assert_eq!(open_port(&mut control, "LISTEN").1, 61001);
    assert_eq!(
        control.call("LISTEN"),
        "ERR 2 listeners are open, the most the host allows (--max-listeners)"
    );
    // Closing one makes room, and frees its port for the next.
    assert_eq!(control.call(&format!("CLOSE {first}")), format!("CLOSED {first}"));
    assert_eq!(open_port(&mut control, "LISTEN").1, 61000);
    drop(host);

    // Without --data-ports only port 0 is allowed.
    let host = Running::start(dir.path(), PASSIVE);
    let mut control = host.lines();
    assert_eq!(
        control.call("LISTEN 8080"),
        "ERR not allowed: port 8080: without --data-ports the host opens only port 0 (a free \
         port the system picks)"
    );
}

#[test]
fn run_refuses_a_bad_data_port_range_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    for (range, says) in
        [("50100-50000", "LOW must be at least 1 and at most HIGH"), ("21", "LOW-HIGH")]
    {
        let out =
            tasuki(dir.path(), &["run", PASSIVE, "--listen", "127.0.0.1:0", "--data-ports", range]);
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
    }
}

#[test]
fn a_trace_with_a_data_port_passes_with_an_upgrade_and_a_rebuild_at_every_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("passive.trace");
    std::fs::write(
        &trace,
        r#"# A control connection asks for data ports; clients connect to them.
connect a
send a "PUT hi\n"
expect a "OK\n"
send a "LISTEN\n"
expect a "PORT 1 49152\n"
connect d port 49152
expect d "DATA 1 hi\n"
expect a "SENT 1\n"
send a "PASV\n"
expect a "PORT 2 49153\n"
connect e port 49153
expect e "DATA 2 hi\n"
expect a "SENT 2\n"
send a "CLOSE 1\n"
expect a "CLOSED 1\n"
send a "INFO\n"
expect a "passive 1.0.0 served=2 listeners=0 lost=0\n"
"#,
    )
    .unwrap();
    let trace = trace.to_str().unwrap();
    let upgrade = ["test", trace, "--app", PASSIVE, "--upgrade", PASSIVE];
    // With the upgrade pre-copied (its swap one step after its boundary), then swapped at the
    // boundary itself with a rebuild from checkpoint and journal at every boundary too (a
    // rebuild restarts a pre-copy, so the two are run apart).
    let rebuilt = [&upgrade[..], &["--precopy-chunk", "0", "--rebuild-at", "every"]].concat();
    // As a canary of three events: the candidate hears the same answers and accepts.
    let canary = [&upgrade[..], &["--canary", "3"]].concat();
    for args in [&upgrade[..], &rebuilt[..], &canary[..]] {
        let first = tasuki(dir.path(), args);
        assert!(first.status.success(), "{}{}", text(&first.stdout), text(&first.stderr));
        let shown = text(&first.stdout);
        assert!(shown.contains("9 ok, 0 failed (9 upgraded)"), "{shown}");
        // The same verdicts every run.
        let again = tasuki(dir.path(), args);
        assert_eq!(text(&again.stdout).lines().nth(3), shown.lines().nth(3));
    }

    // The operator's bounds apply in the simulator as in `tasuki run`.
    std::fs::write(
        dir.path().join("bounded.trace"),
        "connect a\nsend a \"LISTEN\\n\"\nexpect a \"PORT 1 50000\\n\"\nsend a \"LISTEN\\n\"\n\
         expect a \"ERR 1 listeners are open, the most the host allows (--max-listeners)\\n\"\n",
    )
    .unwrap();
    let bounded = ["--data-ports", "50000-50001", "--max-listeners", "1"];
    let args = [&["test", "bounded.trace", "--app", PASSIVE][..], &bounded[..]].concat();
    let out = tasuki(dir.path(), &args);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));

    // A client that connects to a port the app does not listen on fails the run.
    std::fs::write(dir.path().join("nobody.trace"), "connect x port 49152\n").unwrap();
    let out = tasuki(dir.path(), &["test", "nobody.trace", "--app", PASSIVE]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("no listener on port 49152"), "{}", text(&out.stdout));
}

/// A release built before run-time listeners (here, kv 2 as built for contract 0.1) has no
/// `listening` export: a state whose app has listeners open is refused by its import, so an
/// upgrade to it rolls back rather than leave listeners no version knows.
#[test]
fn a_release_built_before_run_time_listeners_refuses_a_state_that_has_them() {
    use tasuki::bindings::{Section, Snapshot};
    let old = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/contract-0.1/kv_v2.wasm");
    let runtime = tasuki::runtime::Runtime::new(Default::default(), Default::default()).unwrap();
    let version = tasuki::version::Version::load(&runtime, Path::new(old)).unwrap();
    let mut instance = tasuki::instance::Instance::new(&version).unwrap();
    instance.init(&[]).unwrap();
    assert!(!instance.listens());
    let section = |name: &str| Section { name: name.into(), version: 1, bytes: Vec::new() };
    let snapshot = Snapshot {
        app: "kv".into(),
        app_version: "2.0.0".into(),
        sections: vec![section("tasuki.listeners")],
    };
    let refused = instance.import_state(&snapshot, &[]).unwrap_err();
    assert!(refused.to_string().contains("built before them"), "{refused}");
}

/// SIGTERM drains a host with data ports open and exits 0; the last snapshot holds the app's
/// state, and the app restored from it hears its ports were lost.
#[test]
fn sigterm_drains_with_data_ports_open_and_the_restored_app_hears_they_are_lost() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["run", PASSIVE, "--listen", "127.0.0.1:0", "--snapshot-dir", "snaps"];
    let mut host = Running::spawn(dir.path(), &args);
    let mut control = host.lines();
    open_port(&mut control, "LISTEN");
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &host.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let patience = std::time::Duration::from_secs(30);
    let status = crate::support::poll(patience, || host.child.try_wait().unwrap())
        .unwrap_or_else(|| panic!("the host did not exit:\n{}", host.log()));
    assert_eq!(status.code(), Some(0), "{}", host.log());
    drop(host);

    let host = Running::spawn(dir.path(), &args);
    let mut control = host.lines();
    assert_eq!(control.call("INFO"), "passive 1.0.0 served=0 listeners=0 lost=1");
}

/// Reads one CRLF-terminated FTP reply line.
fn ftp_reply(reader: &mut std::io::BufReader<TcpStream>) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

#[test]
fn on_a_wildcard_listener_the_app_learns_the_address_the_client_reached() {
    use std::io::Write;
    // The FTP server's PASV reply names the address of its control connection: with `--listen
    // 0.0.0.0`, that must be the interface the client came in on (here 127.0.0.2, a loopback
    // address other than the default), not the wildcard.
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("served");
    std::fs::create_dir(&served).unwrap();
    let grant = format!("{}::/srv", served.display());
    let host = Running::spawn(
        dir.path(),
        &[
            "run",
            tasuki_artifacts::FTP_V1,
            "--listen",
            "0.0.0.0:0",
            "--dir",
            &grant,
            "--arg",
            "anonymous",
        ],
    );
    let port: u16 = host.addr.rsplit(':').next().unwrap().parse().unwrap();
    let control = TcpStream::connect(("127.0.0.2", port)).unwrap();
    control.set_read_timeout(Some(crate::support::REPLY_TIMEOUT)).unwrap();
    let mut writer = control.try_clone().unwrap();
    let mut reader = std::io::BufReader::new(control);
    assert_eq!(ftp_reply(&mut reader), "220 tasuki ftp ready");
    for (command, reply) in [
        ("USER anonymous", "331"),
        ("PASS me@example.org", "230"),
        ("PASV", "227 Entering Passive Mode (127,0,0,2,"),
    ] {
        writer.write_all(format!("{command}\r\n").as_bytes()).unwrap();
        let got = ftp_reply(&mut reader);
        assert!(got.starts_with(reply), "{command}: {got}\n{}", host.log());
    }
}

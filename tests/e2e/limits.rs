//! Bounds a host keeps whatever clients and guests do: back-pressure on a client that does not
//! read, ten thousand idle connections across an upgrade, and a guest with no ambient authority.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};
use tasuki::HostConfig;
use tasuki::limits::Limits;
use tasuki::sandbox::{Preopen, Sandbox};
use tasuki_tests::{TestHost, artifacts};

#[test]
fn a_client_that_stops_reading_is_throttled_and_loses_nothing() {
    let host = TestHost::with(HostConfig {
        app: artifacts::KV_V1.into(),
        limits: Limits { output_buffer: 1 << 20, ..Limits::default() },
        ..HostConfig::default()
    });
    let payload = "p".repeat(4096);
    let request = format!("*2\r\n$4\r\nECHO\r\n$4096\r\n{payload}\r\n");
    let reply = format!("$4096\r\n{payload}\r\n");

    let mut slow = host.raw();
    slow.set_nonblocking(true).unwrap();
    let (mut sent, mut partial) = (0usize, 0usize);
    let mut blocked_since: Option<Instant> = None;
    let started = Instant::now();
    // Write until the host has stopped reading for half a second.
    while blocked_since.is_none_or(|t| t.elapsed() < Duration::from_millis(500)) {
        assert!(started.elapsed() < Duration::from_secs(20), "the host never pushed back");
        match slow.write(&request.as_bytes()[partial..]) {
            Ok(n) => {
                blocked_since = None;
                partial += n;
                if partial == request.len() {
                    partial = 0;
                    sent += 1;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                blocked_since.get_or_insert_with(Instant::now);
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
    let written = sent * request.len() + partial;
    assert!(written < 64 << 20, "the host kept reading: {written} bytes accepted");

    // Other clients are served meanwhile.
    let mut other = host.client();
    let pong: String = redis::cmd("PING").query(&mut other).unwrap();
    assert_eq!(pong, "PONG");

    // Read every reply: nothing was dropped. Then finish the half-written last request.
    slow.set_nonblocking(false).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0; reply.len()];
    for i in 0..sent {
        slow.read_exact(&mut buf).unwrap_or_else(|e| panic!("reply {i} of {sent}: {e}"));
        assert!(buf == reply.as_bytes(), "reply {i} differs");
    }
    slow.write_all(&request.as_bytes()[partial..]).unwrap();
    slow.read_exact(&mut buf).unwrap();
    assert!(buf == reply.as_bytes(), "the connection still works");
}

#[test]
fn ten_thousand_idle_connections_stay_open_across_an_upgrade() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    const CONNS: usize = 10_000;
    // The host end of every connection lives in this process; the client ends in another.
    let mut nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    nofile.current = nofile.maximum;
    rustix::process::setrlimit(rustix::process::Resource::Nofile, nofile).unwrap();
    assert!(
        nofile.current.is_none_or(|n| n > CONNS as u64 + 200),
        "the open-file limit ({:?}) is too low for {CONNS} connections: raise `ulimit -Hn`",
        nofile.current
    );

    let host = TestHost::start(artifacts::KV_V1);
    let mut clients = Command::new(env!("CARGO_BIN_EXE_hold-connections"))
        .args([host.addr.to_string(), CONNS.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn hold-connections");
    let mut said = BufReader::new(clients.stdout.take().unwrap()).lines();
    let mut ask = clients.stdin.take().unwrap();
    assert_eq!(said.next().unwrap().unwrap(), "ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    while host.status().connections < CONNS as u64 {
        assert!(Instant::now() < deadline, "only {} accepted", host.status().connections);
        std::thread::sleep(Duration::from_millis(10));
    }

    let report = host.upgrade(artifacts::KV_V2).expect("upgrade");
    assert_eq!(report.connections, CONNS as u64);
    writeln!(ask, "echo").unwrap();
    assert_eq!(said.next().unwrap().unwrap(), "ok", "every connection answered by v2");
    assert_eq!(host.status().connections, CONNS as u64);
    drop(ask);
    assert!(clients.wait().unwrap().success());
    println!("pause with {CONNS} connections: {:?}", report.pause);
}

#[test]
fn a_guest_reaches_no_files_environment_or_network_by_default() {
    let host =
        TestHost::with(HostConfig { app: artifacts::MISBEHAVE.into(), ..HostConfig::default() });
    let mut a = host.lines();
    assert!(a.call("read /etc/hostname").starts_with("err"), "no filesystem");
    assert!(a.call("read /").starts_with("err"));
    assert!(a.call("env HOME").starts_with("err"), "no environment");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    assert!(a.call(&format!("connect {addr}")).starts_with("err"), "no network");
}

#[test]
fn dir_and_env_grant_exactly_what_they_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("motd.txt"), "granted\n").unwrap();
    let host = TestHost::with(HostConfig {
        app: artifacts::MISBEHAVE.into(),
        sandbox: Sandbox {
            dirs: vec![Preopen { host: dir.path().into(), guest: "/data".into() }],
            env: vec![("GREETING".into(), "hello".into())],
        },
        ..HostConfig::default()
    });
    let mut a = host.lines();
    assert_eq!(a.call("read /data/motd.txt"), "ok granted");
    assert!(a.call("read /etc/hostname").starts_with("err"), "only the granted directory");
    assert_eq!(a.call("env GREETING"), "ok hello");
    assert!(a.call("env HOME").starts_with("err"));
}

//! Bounds a host keeps whatever clients and guests do: a pipeline written before its replies
//! are read, a client that does not read, ten thousand idle connections across an upgrade, and
//! a guest with no ambient authority.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};
use tasuki::HostConfig;
use tasuki::limits::Limits;
use tasuki::sandbox::{Preopen, Sandbox};
use tasuki_tests::{TestHost, artifacts};

/// `SET v` with a 1 KiB value, then 400,000 `GET v` in one write before reading anything, as
/// redis-py's and Jedis's pipelines do: 8 MB of requests, 413 MB of replies. The write must
/// finish (the host keeps reading while the replies back up) and every reply must be the value.
#[test]
fn a_pipeline_written_whole_before_its_replies_are_read_completes() {
    const GETS: usize = 400_000;
    let host = TestHost::start(artifacts::KV_V1);
    let value = "v".repeat(1024);
    let mut conn = host.raw();
    // A host that stops reading makes the write fail here instead of hanging the test.
    conn.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut pipeline = format!("*3\r\n$3\r\nSET\r\n$1\r\nv\r\n$1024\r\n{value}\r\n");
    pipeline.push_str(&"*2\r\n$3\r\nGET\r\n$1\r\nv\r\n".repeat(GETS));
    conn.write_all(pipeline.as_bytes()).expect("the whole pipeline is written");

    let mut replies = std::io::BufReader::with_capacity(1 << 20, conn);
    let mut ok = [0; 5];
    replies.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"+OK\r\n");
    let expected = format!("$1024\r\n{value}\r\n");
    let mut reply = vec![0; expected.len()];
    for i in 0..GETS {
        replies.read_exact(&mut reply).unwrap_or_else(|e| panic!("reply {i} of {GETS}: {e}"));
        assert!(reply == expected.as_bytes(), "reply {i} is not the value");
    }
}

/// A client that stops reading its replies but goes on sending: what it sends is held (not
/// answered) up to `--input-buffer`, so a pipeline within that bound is answered in full once
/// it reads, and other clients are served meanwhile. One that sends past the bound is closed —
/// its write fails — rather than left waiting or costing the host more memory.
#[test]
fn a_client_that_stops_reading_loses_nothing_until_it_passes_the_input_buffer() {
    const INPUT: usize = 8 << 20;
    let host = TestHost::with(HostConfig {
        app: artifacts::KV_V1.into(),
        limits: Limits { output_buffer: 1 << 20, input_buffer: INPUT, ..Limits::default() },
        ..HostConfig::default()
    });
    let payload = "p".repeat(4096);
    let request = format!("*2\r\n$4\r\nECHO\r\n$4096\r\n{payload}\r\n");
    let reply = format!("$4096\r\n{payload}\r\n");

    // Within the bound: 6 MiB of requests (24 MiB of replies queued and held back) in one write.
    let count = (6 << 20) / request.len();
    let mut slow = host.raw();
    slow.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    slow.write_all(request.repeat(count).as_bytes()).expect("the host keeps reading");
    let mut other = host.client();
    let pong: String = redis::cmd("PING").query(&mut other).unwrap();
    assert_eq!(pong, "PONG", "other clients are served meanwhile");
    let mut buf = vec![0; reply.len()];
    for i in 0..count {
        slow.read_exact(&mut buf).unwrap_or_else(|e| panic!("reply {i} of {count}: {e}"));
        assert!(buf == reply.as_bytes(), "reply {i} differs");
    }

    // Past the bound: the host closes the connection, so the write fails.
    let mut flood = host.raw();
    flood.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let chunk = request.repeat(64);
    let started = Instant::now();
    let mut written = 0usize;
    let error = loop {
        match flood.write(chunk.as_bytes()) {
            Ok(n) => written += n,
            Err(e) => break e,
        }
        assert!(written < 16 * INPUT, "the host took {written} bytes from a client not reading");
        assert!(started.elapsed() < Duration::from_secs(60), "the host neither read nor closed");
    };
    assert!(
        matches!(error.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
        "the write failed with {error} after {written} bytes"
    );
    let pong: String = redis::cmd("PING").query(&mut other).unwrap();
    assert_eq!(pong, "PONG", "the host serves on");
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

#[test]
fn a_granted_directory_cannot_be_left_by_dot_dot_or_by_a_symlink() {
    // outer/secret.txt beside outer/served/, which is granted as /data; inside it, links out.
    let outer = tempfile::tempdir().unwrap();
    let served = outer.path().join("served");
    std::fs::create_dir_all(served.join("sub")).unwrap();
    std::fs::write(outer.path().join("secret.txt"), "secret\n").unwrap();
    std::fs::write(served.join("motd.txt"), "granted\n").unwrap();
    std::os::unix::fs::symlink("../secret.txt", served.join("up")).unwrap();
    std::os::unix::fs::symlink(outer.path().join("secret.txt"), served.join("absolute")).unwrap();
    std::os::unix::fs::symlink("motd.txt", served.join("inside")).unwrap();
    // The secret is readable where it is granted (/outer): an escape's error is the sandbox's.
    let host = TestHost::with(HostConfig {
        app: artifacts::MISBEHAVE.into(),
        sandbox: Sandbox {
            dirs: vec![
                Preopen { host: served.clone(), guest: "/data".into() },
                Preopen { host: outer.path().into(), guest: "/outer".into() },
            ],
            env: Vec::new(),
        },
        ..HostConfig::default()
    });
    let mut a = host.lines();
    assert_eq!(a.call("read /outer/secret.txt"), "ok secret");
    assert_eq!(a.call("read /data/sub/../motd.txt"), "ok granted", "`..` inside is fine");
    assert_eq!(a.call("read /data/inside"), "ok granted", "so is a link that stays inside");
    for escape in
        ["/data/../secret.txt", "/data/sub/../../secret.txt", "/data/up", "/data/absolute"]
    {
        let answer = a.call(&format!("read {escape}"));
        assert!(answer.starts_with("err"), "{escape}: {answer}");
    }
}

/// Reads until the host closes `stream`, expecting exactly `last_words` first.
fn expect_told_and_closed(stream: &mut std::net::TcpStream, last_words: &[u8]) {
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the host neither answered nor closed: {e} after {got:?}"),
    }
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(last_words));
}

/// A multibulk request: `*N`, then each argument as `$len` and its bytes.
fn request(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// With `--query-buffer 1` (MiB), kv's `proto-max-bulk-len` is 512 KiB: a request announcing a
/// longer argument is refused at once, and one that leaves more than 1 MiB unconsumed (several
/// arguments, the last still arriving) is told and closed. The rest of the state is untouched
/// and still moves in an upgrade.
#[test]
fn a_request_over_the_query_buffer_is_refused_and_the_keyspace_kept() {
    let host = TestHost::with(HostConfig {
        app: artifacts::KV_V4.into(),
        limits: Limits { query_buffer: 1 << 20, ..Limits::default() },
        ..HostConfig::default()
    });
    let mut client = host.client();
    let () = redis::cmd("SET").arg("kept").arg("yes").query(&mut client).unwrap();

    let mut announce = host.raw();
    announce.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$600000\r\n").unwrap();
    expect_told_and_closed(&mut announce, b"-ERR Protocol error: invalid bulk length\r\n");

    let value = vec![b'x'; 400_000];
    let whole = request(&[b"MSET", b"a", &value, b"b", &value, b"c", &value]);
    let mut trickle = host.raw();
    let mut error = None;
    for piece in whole[..1_100_000].chunks(100_000) {
        if let Err(e) = trickle.write_all(piece) {
            error = Some(e);
            break;
        }
    }
    expect_told_and_closed(
        &mut trickle,
        b"-ERR Protocol error: request over the query buffer limit\r\n",
    );

    host.upgrade(artifacts::KV_V4).expect("the state still moves");
    let kept: String = redis::cmd("GET").arg("kept").query(&mut client).unwrap();
    assert_eq!(kept, "yes");
    let exists: u64 = redis::cmd("EXISTS").arg("a").arg("b").query(&mut client).unwrap();
    assert_eq!(exists, 0, "nothing of the refused request ran (write error: {error:?})");
}

/// Half-received requests of all connections together never pass half of `--max-state`: with
/// 4 MiB, the connection holding the most is told and closed once they pass 2 MiB, whatever
/// order their bytes arrive in; the others finish their requests after an upgrade in between.
#[test]
fn half_received_requests_together_stay_under_half_of_max_state() {
    half_received_requests_stay_under_half_of_max_state(artifacts::KV_V4);
}

/// The same with kv 5, built with today's SDK: the SDK enforces the bound.
#[test]
fn half_received_requests_together_stay_under_half_of_max_state_with_todays_sdk() {
    half_received_requests_stay_under_half_of_max_state(artifacts::KV_V5);
}

fn half_received_requests_stay_under_half_of_max_state(app: &str) {
    let host = TestHost::with(HostConfig {
        app: app.into(),
        limits: Limits { query_buffer: 1 << 20, max_state: 4 << 20, ..Limits::default() },
        ..HostConfig::default()
    });
    let small = vec![b's'; 300_000];
    let large = vec![b'l'; 500_000];
    let small_request = request(&[b"MSET", b"s1", &small, b"s2", &small]);
    let large_request = request(&[b"MSET", b"l1", &large, b"l2", &large]);
    // About 600 KB, 600 KB and 1 MB unconsumed: 2.2 MB in all.
    let (small_part, large_part) = (small_request.len() - 10_000, large_request.len() - 10_000);
    let mut first = host.raw();
    let mut second = host.raw();
    let mut largest = host.raw();
    first.write_all(&small_request[..small_part]).unwrap();
    second.write_all(&small_request[..small_part]).unwrap();
    let _ = largest.write_all(&large_request[..large_part]);
    expect_told_and_closed(
        &mut largest,
        b"-ERR Protocol error: request over the query buffer limit\r\n",
    );

    let report = host.upgrade(app).expect("upgrade with requests half-received");
    assert_eq!(report.connections, 2);
    for conn in [&mut first, &mut second] {
        conn.write_all(&small_request[small_part..]).unwrap();
        tasuki_tests::expect_bytes(conn, b"+OK\r\n");
    }
    let mut client = host.client();
    let len: u64 = redis::cmd("STRLEN").arg("s2").query(&mut client).unwrap();
    assert_eq!(len, 300_000);
    let exists: u64 = redis::cmd("EXISTS").arg("l1").query(&mut client).unwrap();
    assert_eq!(exists, 0);
}

/// A `SETRANGE` just under 512 MB used to build a value the 1 GiB instance could not export,
/// so every checkpoint after it trapped. kv's `proto-max-bulk-len` is now half of
/// `--query-buffer` (64 MiB by default): past it the client gets redis's error, and a value up
/// to it still goes into a snapshot with the rest of the keyspace.
#[test]
fn a_value_too_large_to_keep_is_refused_with_an_error() {
    let host = TestHost::start(artifacts::KV_V4);
    let mut client = host.client();
    let () = redis::cmd("SET").arg("kept").arg("yes").query(&mut client).unwrap();
    let max: Vec<String> =
        redis::cmd("CONFIG").arg("GET").arg("proto-max-bulk-len").query(&mut client).unwrap();
    assert_eq!(max[1], (64 << 20).to_string());
    let refused = redis::cmd("SETRANGE")
        .arg("big")
        .arg(536_870_000)
        .arg("x")
        .query::<u64>(&mut client)
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        "ResponseError: string exceeds maximum allowed size (proto-max-bulk-len)"
    );
    let len: u64 =
        redis::cmd("SETRANGE").arg("big").arg((64 << 20) - 1).arg("x").query(&mut client).unwrap();
    assert_eq!(len, 64 << 20);
    let dir = tempfile::tempdir().unwrap();
    host.snapshot(&dir.path().join("state"));
    let kept: String = redis::cmd("GET").arg("kept").query(&mut client).unwrap();
    assert_eq!(kept, "yes");
}

/// `--call-deadline` below the 10 ms epoch tick used to become one tick, which stops a call at
/// the next tick however soon it comes: a call of a millisecond was stopped (and its connection
/// closed) about one time in ten. Rounded up to whole ticks plus one, 5 ms gives every call at
/// least 10 ms: 200 `KEYS *` over 10,000 keys, a millisecond or so each, are all answered.
#[test]
fn a_call_deadline_below_the_tick_stops_no_quick_call() {
    const KEYS: usize = 10_000;
    let host = TestHost::with(HostConfig {
        app: artifacts::KV_V1.into(),
        limits: Limits { call_deadline: Duration::from_millis(5), ..Limits::default() },
        ..HostConfig::default()
    });
    let mut client = host.client();
    for batch in (0..KEYS).collect::<Vec<_>>().chunks(500) {
        let mut mset = redis::cmd("MSET");
        for i in batch {
            mset.arg(format!("key:{i}")).arg(i);
        }
        let () = mset.query(&mut client).unwrap();
    }
    for i in 0..200 {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query(&mut client)
            .unwrap_or_else(|e| panic!("KEYS {i} was cut off: {e}"));
        assert_eq!(keys.len(), KEYS, "KEYS {i}");
    }
    assert_eq!(host.status().recovery.recoveries, 0, "no call was stopped");
}

/// An app may keep at most `MAX_TIMERS` timers armed: past that, a new one is not armed (the
/// host logs it), while re-arming an armed one still works. Without the bound, a guest arming a
/// timer per request would grow the host's queue without end.
#[test]
fn no_more_than_max_timers_are_armed() {
    use std::io::{BufRead, BufReader};
    use tasuki::limits::MAX_TIMERS;
    let host =
        TestHost::with(HostConfig { app: artifacts::MISBEHAVE.into(), ..HostConfig::default() });
    let conn = host.raw();
    let mut replies = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    // Every timer the limit allows, an hour away; then five more and a re-arm of timer 0, all
    // due in 1 ms and in this order (one batch, one event time: equal deadlines fire in the
    // order they were armed).
    let mut lines: String = (0..MAX_TIMERS).map(|id| format!("timer {id} 3600000\n")).collect();
    for id in 0..5 {
        lines.push_str(&format!("timer {} 1\n", MAX_TIMERS + id));
    }
    lines.push_str("timer 0 1\n");
    conn.write_all(lines.as_bytes()).unwrap();
    let mut reply = String::new();
    for i in 0..MAX_TIMERS + 6 {
        reply.clear();
        replies.read_line(&mut reply).unwrap();
        assert_eq!(reply, "ok\n", "command {i}");
    }
    let mut a = host.lines();
    let fired = loop {
        let fired = a.call("fired");
        if fired != "none" {
            break fired;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(fired, "0", "only the re-armed timer fired; the five over the limit were not armed");
}

/// One call may queue at most 32 × `--output-buffer` (at least 256 MiB) of output: the host used
/// to hold whatever a guest sent in a call until it returned. A guest that sends 300 MiB in one
/// event gets the connection cut off once it passes the bound — the client sees the connection
/// close, not 300 MiB — and the app hears that the connection went; other clients are served.
#[test]
fn one_call_cannot_queue_more_output_than_the_limit() {
    let host =
        TestHost::with(HostConfig { app: artifacts::MISBEHAVE.into(), ..HostConfig::default() });
    let limit = Limits::default().output_limit();
    let mut flood = host.raw();
    flood.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    flood.write_all(b"flood 300\n").unwrap();
    let mut received = 0usize;
    let mut buf = vec![0; 1 << 20];
    loop {
        match flood.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the connection was not closed after {received} bytes: {e}"),
        }
    }
    assert!(received <= limit, "{received} bytes arrived, over the {limit} one call may queue");
    let mut a = host.lines();
    assert_eq!(a.call("count"), "1", "the app heard that the flooded connection went");
}

/// All connections together buffer at most `--buffer-budget` (replies queued, input held):
/// three clients that each send 24 MiB of pipelined requests and read nothing until all three
/// have (the kernel takes 8 to 12 MiB of each: replies in the host's send buffer, requests in
/// the client's, so the host holds 12 to 16 MiB of each), against a budget of 20 MiB, cannot all
/// be buffered — any two pass it, one alone never does. The host closes the one buffering the
/// most (its client sees the connection close, not a hang), the others get every reply once
/// they read, and a well-behaved client is served throughout.
#[test]
fn all_connections_together_buffer_no_more_than_the_budget() {
    const FLOODERS: usize = 3;
    let host = TestHost::with(HostConfig {
        app: artifacts::KV_V1.into(),
        limits: Limits {
            output_buffer: 256 << 10,
            input_buffer: 32 << 20,
            buffer_budget: 20 << 20,
            ..Limits::default()
        },
        ..HostConfig::default()
    });
    let payload = "p".repeat(4096);
    let request = format!("*2\r\n$4\r\nECHO\r\n$4096\r\n{payload}\r\n");
    let reply = format!("$4096\r\n{payload}\r\n");
    let count = (24 << 20) / request.len();
    let pipeline = request.repeat(count);
    let all_written = std::sync::Arc::new(std::sync::Barrier::new(FLOODERS));

    let flooders: Vec<_> = (0..FLOODERS)
        .map(|_| {
            let mut conn = host.raw();
            let (pipeline, reply) = (pipeline.clone(), reply.clone());
            let all_written = std::sync::Arc::clone(&all_written);
            std::thread::spawn(move || {
                conn.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                // Closed by the host: the write or a read fails, never hangs.
                let closed = |e: std::io::Error| {
                    assert!(
                        matches!(
                            e.kind(),
                            ErrorKind::ConnectionReset
                                | ErrorKind::BrokenPipe
                                | ErrorKind::UnexpectedEof
                        ),
                        "{e}"
                    );
                    false
                };
                let written = conn.write_all(pipeline.as_bytes());
                all_written.wait();
                if let Err(e) = written {
                    return closed(e);
                }
                let mut buf = vec![0; reply.len()];
                for i in 0..count {
                    if let Err(e) = conn.read_exact(&mut buf) {
                        return closed(e);
                    }
                    assert!(buf == reply.as_bytes(), "reply {i} differs");
                }
                true
            })
        })
        .collect();
    let mut client = host.client();
    let pong: String = redis::cmd("PING").query(&mut client).unwrap();
    assert_eq!(pong, "PONG");
    let completed = flooders.into_iter().map(|f| f.join().unwrap()).filter(|&done| done).count();
    assert!(completed < FLOODERS, "all {FLOODERS} were buffered: the budget held nothing back");
    assert!(completed >= 1, "the host closed more than it had to");
    let pong: String = redis::cmd("PING").query(&mut client).unwrap();
    assert_eq!(pong, "PONG");
}

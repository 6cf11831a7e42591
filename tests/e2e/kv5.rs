//! kv 5 is kv 4 in less memory: the same state, byte for byte. A kv 4 and a kv 5 given the same
//! requests hold the same state bytes, and either upgrades into the other with no transformer,
//! every key readable with its value after (the pre-copied upgrade under writes is in
//! `precopy.rs`).

use redis::Commands;
use std::path::Path;
use std::time::{Duration, Instant};
use tasuki::HostConfig;
use tasuki::host::Restore;
use tasuki::snapshot::SnapshotFile;
use tasuki_tests::{TestHost, artifacts};

/// The first byte of a chunk of pre-copied records (the SDK's `precopy::RECORDS`; a skeleton
/// chunk starts with 0).
const RECORDS: u8 = 1;

/// A deadline far in the future (2100-01-01), so that no key expires during the test and the
/// state does not depend on when the test runs.
const FAR: u64 = 4_102_444_800_000;

/// Requests over every type and every path that lays a key or a value out differently in
/// kv 5: lengths on both sides of the 22 bytes kept in place, strings growing and shrinking
/// across it, deadlines set, changed and removed, deletes that move the last entry into the
/// hole, containers created, changed and emptied.
fn script() -> Vec<redis::Cmd> {
    let mut cmds = Vec::new();
    macro_rules! cmd {
        ($($arg:expr),+) => {{
            let mut c = redis::Cmd::new();
            $(c.arg($arg.to_string());)+
            cmds.push(c);
        }};
    }
    for i in 0..300usize {
        let key = format!("k{}", "x".repeat(i % 41));
        let key = format!("{key}{i}");
        let value = "v".repeat((i * 7) % 61);
        if i % 3 == 0 {
            cmd!("SET", key, value, "PXAT", (FAR + i as u64));
        } else {
            cmd!("SET", key, value);
        }
        match i % 11 {
            0 => cmd!("APPEND", key, "a".repeat(i % 30)),
            1 => cmd!("SETRANGE", key, (i % 25), "r".repeat(i % 9)),
            2 => cmd!("DEL", format!("k{}{}", "x".repeat((i - 2) % 41), i - 2)),
            3 => cmd!("PERSIST", key),
            4 => cmd!("PEXPIREAT", key, (FAR + 7)),
            5 => cmd!("SET", key, "short"),
            6 => cmd!("SET", key, "long".repeat(20)),
            7 => cmd!("GETDEL", key),
            8 => cmd!("RENAME", key, format!("renamed-{i}-{}", "y".repeat(i % 30))),
            _ => {}
        }
    }
    for i in 0..40usize {
        let counter = format!("counter:{i}");
        cmd!("INCRBY", counter, (i as i64 * 1_000_000_007));
        cmd!("INCR", counter);
        cmd!("INCRBYFLOAT", format!("float:{i}"), "10.5");
        cmd!("RPUSH", format!("list:{i}"), "a", "b".repeat(i), "");
        cmd!("LPOP", format!("list:{}", i / 2));
        cmd!("HSET", format!("hash:{i}"), "f", "v", format!("g{i}"), "w".repeat(i));
        cmd!("HDEL", format!("hash:{}", i / 3), "f");
        cmd!("SADD", format!("set:{i}"), "m", format!("n{i}"));
        cmd!("SREM", format!("set:{}", i / 2), "m");
        cmd!("ZADD", format!("zset:{i}"), 1.5, "m", (i as f64), format!("n{i}"));
        cmd!("ZREM", format!("zset:{}", i / 4), "m");
        if i % 4 == 0 {
            cmd!("PEXPIREAT", format!("hash:{i}"), (FAR + i as u64));
            cmd!("PEXPIREAT", format!("zset:{i}"), (FAR + i as u64));
        }
    }
    cmd!("MSET", "m1", "1", "m2", "x".repeat(30), "m3", "");
    cmd!("GETSET", "m2", "y");
    cmd!("SET", "k0", "over a string with a deadline");
    cmd!("UNLINK", "list:39", "set:39", "m1");
    cmds
}

/// Runs the script on a connection of its own, then closes it and waits until the host has
/// seen it go (the app forgets the connection, which is then not part of the state).
fn run_script(host: &TestHost) {
    {
        let mut client = host.client();
        for cmd in script() {
            let _: redis::Value = cmd.query(&mut client).expect("request");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while host.status().connections > 0 {
        assert!(Instant::now() < deadline, "the connection did not go");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A snapshot's state in a form that does not depend on how the host cut it into chunks: each
/// section (named) and skeleton chunk, and the pre-copied records back to back.
#[derive(Debug, PartialEq, Eq)]
struct State {
    parts: Vec<(String, Vec<u8>)>,
    records: Vec<u8>,
}

fn state_of(host: &TestHost, path: &Path) -> State {
    host.snapshot(path);
    let file = SnapshotFile::read(path).expect("a snapshot");
    let mut parts: Vec<(String, Vec<u8>)> = file
        .sections
        .iter()
        .map(|s| (format!("section {} v{}", s.name, s.version), s.bytes.clone()))
        .collect();
    let mut records = Vec::new();
    for chunk in &file.chunks {
        match chunk.bytes.split_first() {
            Some((&RECORDS, body)) => records.extend_from_slice(body),
            _ => parts.push((
                format!("skeleton of {} v{}", chunk.section, chunk.version),
                chunk.bytes.clone(),
            )),
        }
    }
    State { parts, records }
}

/// Fails naming the first byte where two states differ, rather than printing both.
fn assert_same(left: &State, right: &State, what: &str) {
    let names = |s: &State| s.parts.iter().map(|(name, _)| name.clone()).collect::<Vec<_>>();
    assert_eq!(names(left), names(right), "{what}: the states have different parts");
    let pairs =
        left.parts.iter().zip(&right.parts).map(|((name, l), (_, r))| (name.as_str(), l, r));
    for (name, l, r) in pairs.chain([("records", &left.records, &right.records)]) {
        if let Some(at) = (0..l.len().max(r.len())).find(|&i| l.get(i) != r.get(i)) {
            let around = |b: &[u8]| b[at.saturating_sub(8)..(at + 8).min(b.len())].to_vec();
            panic!(
                "{what}: {name} differs at byte {at} of {} / {}: {:?} / {:?}",
                l.len(),
                r.len(),
                around(l),
                around(r)
            );
        }
    }
}

#[test]
fn kv4_and_kv5_given_the_same_requests_hold_the_same_state_bytes() {
    let dir = tempfile::tempdir().unwrap();
    // Both start from one empty state, so the counters INFO shows (and the start time) agree.
    let kv4 = TestHost::start(artifacts::KV_V4);
    let empty = dir.path().join("empty.snap");
    kv4.snapshot(&empty);
    let kv5 = TestHost::with(HostConfig {
        app: artifacts::KV_V5.into(),
        restore: Some(Restore { file: empty, transforms: Vec::new() }),
        ..HostConfig::default()
    });
    run_script(&kv4);
    run_script(&kv5);
    let four = state_of(&kv4, &dir.path().join("kv4.snap"));
    let five = state_of(&kv5, &dir.path().join("kv5.snap"));
    assert!(four.records.len() > 10_000, "the keyspace was pre-copied: {four:?}");
    assert_same(&four, &five, "kv 4 and kv 5 after the same requests");
    // And every key reads back the same from both.
    let (mut c4, mut c5) = (kv4.client(), kv5.client());
    let keys: Vec<String> = c4.keys("*").unwrap();
    assert!(keys.len() > 300, "{}", keys.len());
    for key in keys {
        let dump = |c: &mut redis::Connection| -> (String, i64, String) {
            let kind: String = redis::cmd("TYPE").arg(&key).query(c).unwrap();
            let ttl: i64 = redis::cmd("PEXPIRETIME").arg(&key).query(c).unwrap();
            let value = match kind.as_str() {
                "string" => c.get(&key).unwrap(),
                "list" => format!("{:?}", c.lrange::<_, Vec<String>>(&key, 0, -1).unwrap()),
                "hash" => format!("{:?}", c.hgetall::<_, Vec<String>>(&key).unwrap()),
                "set" => format!("{:?}", c.smembers::<_, Vec<String>>(&key).unwrap()),
                "zset" => {
                    format!("{:?}", c.zrange_withscores::<_, Vec<String>>(&key, 0, -1).unwrap())
                }
                other => panic!("{other}"),
            };
            (kind, ttl, value)
        };
        assert_eq!(dump(&mut c4), dump(&mut c5), "key {key}");
    }
}

#[test]
fn kv4_upgrades_to_kv5_and_back_with_no_transformer_every_key_intact() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(artifacts::KV_V4);
    run_script(&host);
    let before = state_of(&host, &dir.path().join("a.snap"));
    let report = host.upgrade(artifacts::KV_V5).expect("kv 4 -> kv 5");
    assert!(report.transformers.is_empty());
    assert_eq!(host.status().app.to_string(), "kv 5.0.0");
    // kv 5 read kv 4's bytes and writes them again unchanged.
    assert_same(&state_of(&host, &dir.path().join("b.snap")), &before, "kv 5 after kv 4");
    host.upgrade(artifacts::KV_V4).expect("kv 5 -> kv 4");
    assert_eq!(host.status().app.to_string(), "kv 4.0.0");
    assert_same(&state_of(&host, &dir.path().join("c.snap")), &before, "kv 4 after kv 5");
}

/// String keys redis-py writes for the keyspace test: enough that the keyspace is pre-copied in
/// many chunks, few enough that the check takes a second.
const PY_KEYS: &str = "20000";

/// `redis_py_keyspace.py PORT MODE N` against `host`, to its `DONE`.
fn redis_py(host: &TestHost, mode: &str) {
    let python = crate::real_clients::installed("venv/bin/python");
    let out = std::process::Command::new(python)
        .arg(crate::real_clients::script("redis_py_keyspace.py"))
        .args([&host.addr.port().to_string(), mode, PY_KEYS])
        .output()
        .expect("run redis-py");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.trim() == format!("DONE {PY_KEYS}"),
        "redis-py {mode} against {}: {said}{}",
        host.status().app,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What redis-py wrote, read back by redis-py (every key: value, deadline, members) and by
/// redis-cli (a SCAN walk of the whole keyspace, and keys on both sides of kv 5's 22 bytes).
fn every_key_is_there(host: &TestHost, what: &str) {
    redis_py(host, "check");
    let cli = |args: &[&str]| crate::clients::cli(host, args);
    let walked = cli(&["--scan"]);
    let keys: usize = PY_KEYS.parse().unwrap();
    assert_eq!(walked.lines().count(), keys + 4, "{what}: redis-cli --scan");
    // The script's key(i) and value(i).
    let key = |i: usize| format!("key:{i:0width$}", width = 1 + i % 30);
    let value = |i: usize| format!("{i}:").repeat(40)[..i % 70].to_string();
    for i in [1, 21, 22, 23, 28, 69, 19_999] {
        assert_eq!(cli(&["GET", &key(i)]), value(i), "{what}: {}", key(i));
    }
    assert_eq!(cli(&["STRLEN", &key(69)]), "69", "{what}");
    assert_eq!(cli(&["PEXPIRETIME", &key(0)]), FAR.to_string(), "{what}");
    assert_eq!(cli(&["PEXPIRETIME", &key(1)]), "-1", "{what}");
    assert_eq!(cli(&["LLEN", "list"]), "100", "{what}");
}

/// Every key redis-py wrote to kv 4 is readable with its value and deadline after an upgrade
/// to kv 5, from a snapshot of that kv 5 restored into a fresh kv 5, and from kv 4's own
/// snapshot restored into kv 5: the compact keyspace reads kv 4's state and writes its own
/// back whole, through the pre-copy and through a snapshot file.
#[test]
fn kv5_keeps_every_key_across_an_upgrade_from_kv4_and_a_snapshot_restore() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(artifacts::KV_V4);
    redis_py(&host, "write");
    let of_kv4 = dir.path().join("kv4.snap");
    host.snapshot(&of_kv4);

    let report = host.upgrade(artifacts::KV_V5).expect("kv 4 -> kv 5");
    assert!(report.precopy.as_ref().is_some_and(|p| p.steps > 1), "pre-copied: {report:?}");
    assert_eq!(host.status().app.to_string(), "kv 5.0.0");
    every_key_is_there(&host, "kv 5 after the upgrade from kv 4");

    let of_kv5 = dir.path().join("kv5.snap");
    host.snapshot(&of_kv5);
    for (file, what) in [(of_kv5, "kv 5's snapshot"), (of_kv4, "kv 4's snapshot")] {
        let restored = TestHost::with(HostConfig {
            app: artifacts::KV_V5.into(),
            restore: Some(Restore { file, transforms: Vec::new() }),
            ..HostConfig::default()
        });
        assert_eq!(restored.status().app.to_string(), "kv 5.0.0");
        every_key_is_there(&restored, &format!("a fresh kv 5 restored from {what}"));
    }
}

/// A client that sends its last request and at once ends its side of the stream (a shell's
/// `printf ... | nc`, a script's `shutdown(SHUT_WR)`) gets the reply, then the host's close; and
/// the app hears of the close. The host reads a socket only until a read comes back short, so
/// this holds only if it reads on to the end of the stream that the poller reported queued
/// behind the data.
#[test]
fn requests_sent_just_before_the_end_of_the_stream_are_answered_and_the_close_is_heard() {
    use std::io::{Read, Write};
    let host = TestHost::start(artifacts::KV_V5);
    let mut watcher = host.client();
    const CLIENTS: usize = 100;
    // Every connection first, so that the host reads them in rounds, and each one's end of
    // stream is queued behind its request by the time it is read.
    let mut streams: Vec<_> = (0..CLIENTS).map(|_| host.raw()).collect();
    for (i, stream) in streams.iter_mut().enumerate() {
        let key = format!("last{i:03}");
        let request = format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n$1\r\nv\r\n", key.len());
        stream.write_all(request.as_bytes()).expect("send");
        stream.shutdown(std::net::Shutdown::Write).expect("end of stream");
    }
    for (i, mut stream) in streams.into_iter().enumerate() {
        let mut got = Vec::new();
        // The host closes once it has seen the end and written the reply; a read timeout here
        // is a host that never saw the end of the stream.
        stream.read_to_end(&mut got).unwrap_or_else(|e| {
            panic!("client {i}: no close from the host after its reply ({e}); read {got:?}")
        });
        assert_eq!(got, b"+OK\r\n", "client {i}");
    }
    for i in 0..CLIENTS {
        let value: Option<String> = watcher.get(format!("last{i:03}")).expect("GET");
        assert_eq!(value.as_deref(), Some("v"), "last{i:03}");
    }
    // The app heard every close: only the watcher is left.
    let info: String = redis::cmd("INFO").arg("clients").query(&mut watcher).expect("INFO");
    assert!(info.contains("connected_clients:1\r\n"), "{info}");
}

/// Urgent data (TCP's `MSG_OOB`, as telnet's Synch sends it) ends the host's read short at the
/// urgent mark with the rest still queued, and no new event comes for what was queued: the
/// host must read on. A request sent behind an urgent byte is answered at once, not when the
/// client next sends something.
#[test]
fn a_request_queued_behind_urgent_data_is_answered_without_waiting_for_more_input() {
    use rustix::net::{SendFlags, send, sockopt};
    use std::io::Read;
    let host = TestHost::start(artifacts::KV_V5);
    let mut stream = host.raw();
    // Corked, the two sends leave as one segment: both are queued before the host reads.
    sockopt::set_tcp_cork(&stream, true).expect("TCP_CORK");
    // The urgent byte is the last of the first send; the kernel keeps it out of the stream.
    send(&stream, b"*1\r\n$4\r\nPING\r\n!", SendFlags::OOB).expect("send with MSG_OOB");
    send(&stream, b"*2\r\n$4\r\nECHO\r\n$6\r\nbehind\r\n", SendFlags::empty()).expect("send");
    sockopt::set_tcp_cork(&stream, false).expect("uncork");
    let expected = b"+PONG\r\n$6\r\nbehind\r\n";
    let mut got = vec![0; expected.len()];
    // The read timeout (10 s, TestHost::raw) is a host that left the second request queued.
    stream.read_exact(&mut got).unwrap_or_else(|e| {
        panic!("the request behind the urgent byte was not answered ({e}); got {got:?}")
    });
    assert_eq!(got, expected);
}

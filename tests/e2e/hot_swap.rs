//! The main story: a running kv server is replaced by its next release under its clients.

use redis::Commands;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tasuki::control::Response;
use tasuki_tests::{TestHost, artifacts, expect_bytes, expect_silence};

#[test]
fn a_client_connected_before_the_upgrade_keeps_its_connection_and_reads_its_keys() {
    let host = TestHost::start(artifacts::KV_V1);
    let mut client = host.client();
    let _: () = client.set("greeting", "hello").unwrap();
    let _: () = redis::cmd("MSET").arg("a").arg("1").arg("b").arg("2").query(&mut client).unwrap();
    let n: i64 = client.incr("visits", 41).unwrap();
    assert_eq!(n, 41);

    let Response::Upgraded(report) = host.upgrade_via_control(artifacts::KV_V2) else {
        panic!("upgrade failed")
    };
    assert_eq!(report.from.to_string(), "kv 1.0.0");
    assert_eq!(report.to.to_string(), "kv 2.0.0");
    assert_eq!(report.connections, 1);
    assert!(report.state_bytes > 0);

    // Same connection, new version: the keys are there and v2's commands work.
    let greeting: String = client.get("greeting").unwrap();
    assert_eq!(greeting, "hello");
    let values: Vec<String> = client.mget(&["a", "b"]).unwrap();
    assert_eq!(values, ["1", "2"]);
    let n: i64 = client.incr("visits", 1).unwrap();
    assert_eq!(n, 42);
    let ttl: i64 = client.ttl("greeting").unwrap();
    assert_eq!(ttl, -1, "migrated keys carry no expiry");
    let set: bool = client.expire("greeting", 100).unwrap();
    assert!(set);

    let status = host.status();
    assert_eq!(status.app.to_string(), "kv 2.0.0");
    assert_eq!(status.upgrades, 1);
    assert_eq!(status.connections, 1);
    let last = status.last_upgrade.expect("last upgrade recorded");
    assert_eq!(last.outcome.expect("succeeded").to.version, "2.0.0");
}

#[test]
fn a_request_split_across_the_upgrade_is_answered_once() {
    let host = TestHost::start(artifacts::KV_V1);
    let mut raw = host.raw();
    // The first half of `SET split value`: the command name and key, not the value.
    raw.write_all(b"*3\r\n$3\r\nSET\r\n$5\r\nsplit\r\n").unwrap();
    // A round trip on another connection: once it returns, the host has read the half request
    // (loopback delivers synchronously, and the loop serves ready sockets in one pass).
    let mut other = host.client();
    let _: String = redis::cmd("PING").query(&mut other).unwrap();

    let report = host.upgrade(artifacts::KV_V2).expect("upgrade");
    let conns = report.sections.iter().find(|s| s.name == "tasuki.conns").expect("conns section");
    assert!(conns.bytes > 20, "the half request crossed in the state: {report:?}");

    raw.write_all(b"$5\r\nvalue\r\n").unwrap();
    expect_bytes(&mut raw, b"+OK\r\n");
    expect_silence(&mut raw, Duration::from_millis(200));
    raw.write_all(b"*2\r\n$3\r\nGET\r\n$5\r\nsplit\r\n").unwrap();
    expect_bytes(&mut raw, b"$5\r\nvalue\r\n");
}

/// Replies the old version wrote and the kernel could not take yet are still in the host at the
/// pause; they must come out complete, in order, before the new version's.
///
/// The client pipelines `GET big` / `INCR seq` pairs whose replies are more than the kernel can
/// buffer between the host and the client (this socket's receive buffer plus the most a TCP send
/// buffer grows to, `tcp_wmem`), and reads nothing until the upgrade committed. Another client
/// sees `seq` reach its last value first, so the old version had run the whole burst: at the
/// pause, everything past what the kernel holds was queued in the host.
#[test]
fn replies_queued_before_the_pause_come_out_in_order() {
    const VALUE: usize = 1 << 20;
    let host = TestHost::start(artifacts::KV_V1);
    let value: Vec<u8> = (0..VALUE).map(|i| b'a' + (i % 26) as u8).collect();
    let mut other = host.client();
    let _: () = other.set("big", value.as_slice()).unwrap();

    let mut raw = connect_with_small_receive_buffer(host.addr);
    let kernel_holds = socket_receive_buffer(&raw) + max_tcp_send_buffer();
    // Three replies more than the kernel can hold: at least 2 MiB stay in the host.
    let pairs = kernel_holds / VALUE + 3;
    let mut expected = Vec::new();
    for i in 1..=pairs {
        expected.extend_from_slice(format!("${VALUE}\r\n").as_bytes());
        expected.extend_from_slice(&value);
        expected.extend_from_slice(format!("\r\n:{i}\r\n").as_bytes());
    }
    let burst = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n*2\r\n$4\r\nINCR\r\n$3\r\nseq\r\n".repeat(pairs);
    raw.write_all(&burst).unwrap();
    wait_until("the old version ran the whole burst", || {
        let seq: Option<usize> = other.get("seq").unwrap();
        seq == Some(pairs)
    });

    let report = host.upgrade(artifacts::KV_V2).expect("upgrade");
    assert_eq!(report.to.to_string(), "kv 2.0.0");
    // Then the new version's replies, on the same connection.
    raw.write_all(b"*2\r\n$4\r\nINCR\r\n$3\r\nseq\r\n*2\r\n$3\r\nTTL\r\n$3\r\nseq\r\n").unwrap();
    expected.extend_from_slice(format!(":{}\r\n:-1\r\n", pairs + 1).as_bytes());
    expect_stream(&mut raw, &expected);
    expect_silence(&mut raw, Duration::from_millis(100));
}

/// A loopback connection to `addr` whose receive buffer is fixed small before the handshake,
/// so what the kernel can hold for it is known.
fn connect_with_small_receive_buffer(addr: std::net::SocketAddr) -> std::net::TcpStream {
    use rustix::net::{AddressFamily, SocketType, sockopt};
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    sockopt::set_socket_recv_buffer_size(&fd, 64 << 10).unwrap();
    rustix::net::connect(&fd, &addr).unwrap();
    let stream = std::net::TcpStream::from(fd);
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// Bytes the kernel accounts to `stream`'s receive buffer at most (data and overhead).
fn socket_receive_buffer(stream: &std::net::TcpStream) -> usize {
    rustix::net::sockopt::socket_recv_buffer_size(stream).unwrap()
}

/// The most a TCP socket's send buffer grows to: the third field of `tcp_wmem`.
fn max_tcp_send_buffer() -> usize {
    let wmem = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").unwrap();
    wmem.split_whitespace().nth(2).and_then(|max| max.parse().ok()).expect("tcp_wmem")
}

/// Reads `expected.len()` bytes and fails at the first one that differs, saying where.
fn expect_stream(stream: &mut std::net::TcpStream, expected: &[u8]) {
    let mut buf = vec![0; 64 << 10];
    let mut at = 0;
    while at < expected.len() {
        let want = buf.len().min(expected.len() - at);
        let n = match stream.read(&mut buf[..want]) {
            Ok(0) => panic!("closed after {at} of {} bytes", expected.len()),
            Ok(n) => n,
            Err(e) => panic!("after {at} of {} bytes: {e}", expected.len()),
        };
        if let Some(i) = (0..n).find(|&i| buf[i] != expected[at + i]) {
            let show = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(24)]).into_owned();
            panic!(
                "byte {} of {} differs: expected {:?}, got {:?}",
                at + i,
                expected.len(),
                show(&expected[at + i..]),
                show(&buf[i..n])
            );
        }
        at += n;
    }
}

/// Polls `done` until it holds, for at most 10 s.
#[track_caller]
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Four clients INCR one counter as fast as they can while the server is upgraded twenty
/// times, each upgrade only once every client got a reply from the version before. Every INCR
/// acknowledged must have been applied exactly once, and its reply sent to the client that
/// asked: the values the clients saw are exactly 1..=total, each client's in increasing order.
#[test]
fn concurrent_incrs_survive_twenty_upgrades_without_losing_one() {
    const CLIENTS: usize = 4;
    const UPGRADES: usize = 20;
    let host = TestHost::start(artifacts::KV_V1);
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged: Arc<Vec<AtomicU64>> =
        Arc::new((0..CLIENTS).map(|_| AtomicU64::new(0)).collect());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|me| {
            let mut client = host.client();
            let stop = Arc::clone(&stop);
            let acknowledged = Arc::clone(&acknowledged);
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let n: u64 = client.incr("counter", 1).expect("INCR failed during upgrades");
                    seen.push(n);
                    acknowledged[me].fetch_add(1, Ordering::Relaxed);
                }
                seen
            })
        })
        .collect();

    // v1 -> v2 first (a migration), then v2 -> v2 (same state version) for the rest.
    let counts = || acknowledged.iter().map(|n| n.load(Ordering::Relaxed)).collect::<Vec<_>>();
    for _ in 0..UPGRADES {
        let before = counts();
        wait_until("every client got a reply from the running version", || {
            counts().iter().zip(&before).all(|(now, then)| now > then)
        });
        let report = host.upgrade(artifacts::KV_V2).expect("upgrade under load");
        assert_eq!(report.connections, CLIENTS as u64);
    }
    stop.store(true, Ordering::Relaxed);
    let per_client: Vec<Vec<u64>> =
        clients.into_iter().map(|c| c.join().expect("client thread")).collect();
    for (i, seen) in per_client.iter().enumerate() {
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "client {i}'s replies out of order");
    }
    let mut all: Vec<u64> = per_client.concat();
    all.sort_unstable();
    let total = all.len() as u64;
    if let Some((got, want)) = all.iter().copied().zip(1..).find(|(got, want)| got != want) {
        let wrong = if got > want { format!("{want} is missing") } else { format!("{got} twice") };
        panic!("the {total} replies are not 1..={total}: {wrong}");
    }

    let counter: u64 = host.client().get("counter").unwrap();
    assert_eq!(counter, total, "every acknowledged INCR is in the final value, once");
    let status = host.status();
    assert_eq!(status.upgrades, UPGRADES as u64);
    assert_eq!(status.app.to_string(), "kv 2.0.0");
}

/// The `kv` section of the running state, from a snapshot: unlike any command, a snapshot
/// reads no key, so only the expiry timer (active expiry) can make an expired key leave it.
struct KvState<'a> {
    host: &'a TestHost,
    dir: tempfile::TempDir,
}

impl<'a> KvState<'a> {
    fn of(host: &'a TestHost) -> Self {
        Self { host, dir: tempfile::tempdir().unwrap() }
    }

    /// Bytes of the app's state: its section and the chunks its collections were copied in.
    fn bytes(&self) -> u64 {
        let report = self.host.snapshot(&self.dir.path().join("state.snapshot"));
        let section = report.sections.iter().find(|(name, ..)| name == "kv").expect("kv section");
        section.2 + report.chunk_bytes
    }
}

#[test]
fn expiry_works_on_keys_migrated_from_v1() {
    let host = TestHost::start(artifacts::KV_V1);
    let mut client = host.client();
    for i in 0..100 {
        let _: () = client.set(format!("key:{i}"), i).unwrap();
    }
    host.upgrade(artifacts::KV_V2).expect("v1 -> v2");
    let state = KvState::of(&host);
    let all_keys = state.bytes();

    // Active expiry, driven by a host timer: half the migrated keys get a short TTL and are
    // never read again; the running state loses them by itself, with no upgrade to help.
    // One pipeline, one event: the 50 deadlines are the same instant.
    let mut pexpire = redis::pipe();
    for i in 0..50 {
        pexpire.pexpire(format!("key:{i}"), 100);
    }
    let set: Vec<bool> = pexpire.query(&mut client).unwrap();
    assert!(set.iter().all(|&set| set));
    let pttl: i64 = client.pttl("key:0").unwrap();
    assert!((1..=100).contains(&pttl), "pttl {pttl}");
    let ttl: i64 = client.ttl("key:99").unwrap();
    assert_eq!(ttl, -1, "untouched keys keep no expiry");
    wait_until("the expiry timer removed the keys nobody reads", || {
        state.bytes() * 10 < all_keys * 6
    });

    // Lazy expiry, and the count.
    let gone: Option<String> = client.get("key:0").unwrap();
    assert_eq!(gone, None);
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut client).unwrap();
    assert_eq!(dbsize, 50, "key:50..=key:99 remain");
    let half_keys = state.bytes();

    // A TTL set under v2 crosses a v2 -> v2 upgrade with its deadline, and expires in the new
    // instance without being read.
    let _: () =
        redis::cmd("SET").arg("later").arg("y").arg("PX").arg(1000).query(&mut client).unwrap();
    host.upgrade(artifacts::KV_V2).expect("upgrade");
    let pttl: i64 = client.pttl("later").unwrap();
    assert!((1..=1000).contains(&pttl), "pttl {pttl}");
    wait_until("`later` expired in the new instance", || state.bytes() == half_keys);
}

/// Timers belong to the host: one the old instance armed fires in the new instance. kv
/// re-arms its expiry timer in `resumed`, which would hide a host that dropped its timers at
/// the swap; after `--from-checkpoint` the host's timers are the ones the new instance's replay
/// rebuilds, so the key expires only if the replayed `SET ... PX` is honoured. (The plain swap is
/// `a_timer_the_old_instance_armed_fires_after_a_plain_upgrade`.)
#[test]
fn a_timer_armed_before_an_upgrade_fires_in_the_new_version() {
    let host = TestHost::start(artifacts::KV_V2);
    let mut client = host.client();
    let _: () = client.set("stays", "x").unwrap();
    let state = KvState::of(&host);
    let without_later = state.bytes();
    let _: () =
        redis::cmd("SET").arg("later").arg("y").arg("PX").arg(500).query(&mut client).unwrap();

    let report = host.upgrade_from_checkpoint(artifacts::KV_V2).expect("upgrade");
    let tasuki::upgrade::StateSource::Checkpoint { events_replayed, complete, .. } = report.source
    else {
        panic!("not from the checkpoint: {report:?}")
    };
    assert!(events_replayed >= 1 && complete, "the SET was replayed: {report:?}");
    assert!(state.bytes() > without_later, "`later` is still there after the commit");

    // Nobody reads `later` and nothing is upgraded: only the old timer can remove it.
    wait_until("the timer armed by the old instance expired `later`", || {
        state.bytes() == without_later
    });
    let gone: Option<String> = client.get("later").unwrap();
    assert_eq!(gone, None);
    let stays: String = client.get("stays").unwrap();
    assert_eq!(stays, "x");
}

/// A normal upgrade keeps the host's timers: the misbehave fixture does not re-arm anything in
/// `resumed`, so timer 9 can fire only if the host kept it across the swap.
#[test]
fn a_timer_the_old_instance_armed_fires_after_a_plain_upgrade() {
    let host = TestHost::with(tasuki::HostConfig {
        app: artifacts::MISBEHAVE.into(),
        ..tasuki::HostConfig::default()
    });
    let mut a = host.lines();
    assert_eq!(a.call("timer 9 400"), "ok");
    assert_eq!(a.call("fired"), "none");
    host.upgrade(artifacts::MISBEHAVE).expect("upgrade");
    assert_eq!(a.call("armed"), "9", "the new instance believes it armed");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while a.call("fired") != "9" {
        assert!(std::time::Instant::now() < deadline, "timer 9 never fired after the upgrade");
        std::thread::sleep(Duration::from_millis(20));
    }
}

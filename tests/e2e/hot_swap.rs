//! The main story: a running kv server is replaced by its next release under its clients.

use redis::Commands;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
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

#[test]
fn replies_queued_before_the_pause_come_out_in_order() {
    let host = TestHost::start(artifacts::KV_V1);
    let mut raw = host.raw();
    // Pipelined: three commands in one write, then the upgrade, then more on the same socket.
    raw.write_all(b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n")
        .unwrap();
    expect_bytes(&mut raw, b"+PONG\r\n+OK\r\n:2\r\n");
    host.upgrade(artifacts::KV_V2).expect("upgrade");
    raw.write_all(b"*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n*2\r\n$3\r\nTTL\r\n$1\r\nk\r\n").unwrap();
    expect_bytes(&mut raw, b":3\r\n:-1\r\n");
}

#[test]
fn concurrent_incrs_survive_twenty_upgrades_without_losing_one() {
    const CLIENTS: usize = 4;
    const UPGRADES: usize = 20;
    let host = TestHost::start(artifacts::KV_V1);
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut client = host.client();
            let stop = Arc::clone(&stop);
            let acknowledged = Arc::clone(&acknowledged);
            std::thread::spawn(move || {
                let mut mine = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let _: i64 = client.incr("counter", 1).expect("INCR failed during upgrades");
                    mine += 1;
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                }
                mine
            })
        })
        .collect();

    // v1 -> v2 first (a migration), then v2 -> v2 (same state version) for the rest.
    let mut pauses = Vec::new();
    for _ in 0..UPGRADES {
        std::thread::sleep(Duration::from_millis(20));
        let report = host.upgrade(artifacts::KV_V2).expect("upgrade under load");
        assert_eq!(report.connections, CLIENTS as u64);
        pauses.push(report.pause);
    }
    stop.store(true, Ordering::Relaxed);
    let per_client: Vec<u64> =
        clients.into_iter().map(|c| c.join().expect("client thread")).collect();
    let total: u64 = per_client.iter().sum();
    assert!(per_client.iter().all(|&n| n > 0), "every client made progress: {per_client:?}");
    assert_eq!(total, acknowledged.load(Ordering::Relaxed));

    let counter: u64 = host.client().get("counter").unwrap();
    assert_eq!(counter, total, "every acknowledged INCR is in the final value");
    let status = host.status();
    assert_eq!(status.upgrades, UPGRADES as u64);
    assert_eq!(status.app.to_string(), "kv 2.0.0");
}

#[test]
fn expiry_works_on_keys_migrated_from_v1() {
    let host = TestHost::start(artifacts::KV_V1);
    let mut client = host.client();
    for i in 0..100 {
        let _: () = client.set(format!("key:{i}"), i).unwrap();
    }
    host.upgrade(artifacts::KV_V2).expect("v1 -> v2");
    let kv_bytes = |report: &tasuki::UpgradeReport| {
        report.sections.iter().find(|s| s.name == "kv").expect("kv section").bytes
    };
    let all_keys = kv_bytes(&host.upgrade(artifacts::KV_V2).expect("v2 -> v2"));

    // Active expiry, driven by a host timer: half the migrated keys get a short TTL and are
    // never read again; by the next upgrade they are no longer in the state.
    for i in 0..50 {
        let set: bool = client.pexpire(format!("key:{i}"), 100).unwrap();
        assert!(set);
    }
    let pttl: i64 = client.pttl("key:0").unwrap();
    assert!((1..=100).contains(&pttl), "pttl {pttl}");
    let ttl: i64 = client.ttl("key:99").unwrap();
    assert_eq!(ttl, -1, "untouched keys keep no expiry");
    std::thread::sleep(Duration::from_millis(500));
    let half_keys = kv_bytes(&host.upgrade(artifacts::KV_V2).expect("v2 -> v2"));
    assert!(
        half_keys * 10 < all_keys * 6,
        "expired keys left the state without being read: {half_keys} vs {all_keys} bytes"
    );

    // Lazy expiry, and the count.
    let gone: Option<String> = client.get("key:0").unwrap();
    assert_eq!(gone, None);
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut client).unwrap();
    assert_eq!(dbsize, 50, "key:50..=key:99 remain");

    // A TTL set under v2 survives a v2 -> v2 upgrade with its deadline, and its timer fires in
    // the new instance.
    let _: () =
        redis::cmd("SET").arg("later").arg("y").arg("PX").arg(1000).query(&mut client).unwrap();
    host.upgrade(artifacts::KV_V2).expect("upgrade");
    let pttl: i64 = client.pttl("later").unwrap();
    assert!((1..=1000).contains(&pttl), "pttl {pttl}");
    std::thread::sleep(Duration::from_millis(1300));
    let after = kv_bytes(&host.upgrade(artifacts::KV_V2).expect("v2 -> v2"));
    assert_eq!(after, half_keys, "`later` expired by timer after crossing an upgrade");
}

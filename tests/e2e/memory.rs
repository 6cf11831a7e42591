//! Memory given back: the host swaps the instance for a fresh one of the same release when
//! most of its linear memory is garbage (`--compact-below`), or on request (`tasuki compact`),
//! through the ordinary upgrade, so that no key and no connection is lost.

use std::time::{Duration, Instant};
use tasuki::HostConfig;
use tasuki::control::{self, Request, Response};
use tasuki::limits::Limits;
use tasuki_tests::{TestHost, artifacts};

fn host(wasm: &str, limits: Limits) -> TestHost {
    TestHost::with(HostConfig { app: wasm.into(), limits, ..HostConfig::default() })
}

/// `n` keys `key:N` with 64-byte values, written with pipelined MSETs.
fn load(conn: &mut redis::Connection, n: u64) {
    for start in (0..n).step_by(1000) {
        let mut mset = redis::cmd("MSET");
        for i in start..(start + 1000).min(n) {
            mset.arg(format!("key:{i}")).arg(value(i));
        }
        let () = mset.query(conn).unwrap();
    }
}

fn value(i: u64) -> String {
    format!("{i:064}")
}

/// Polls `tasuki status` until `done` says yes; fails after `limit`.
fn wait_for(host: &TestHost, limit: Duration, done: impl Fn(&tasuki::status::Status) -> bool) {
    let started = Instant::now();
    loop {
        let status = host.status();
        if done(&status) {
            return;
        }
        assert!(started.elapsed() < limit, "not reached in {limit:?}: {status:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn deleting_most_keys_makes_the_host_compact_by_itself() {
    let limits = Limits {
        compact_min_memory: 8 << 20,
        compact_interval: Duration::ZERO,
        ..Limits::default()
    };
    let host = host(artifacts::KV_V4, limits);
    let mut conn = host.client();
    let keys = 200_000;
    load(&mut conn, keys);
    wait_for(&host, Duration::from_secs(30), |s| {
        s.memory.usage.is_some_and(|u| u.linear_memory > 16 << 20)
    });
    assert_eq!(host.status().memory.compactions, 0, "compacted while full");

    // Delete nine keys in ten.
    let mut pipe = redis::pipe();
    for i in (0..keys).filter(|i| i % 10 != 0) {
        pipe.cmd("DEL").arg(format!("key:{i}")).ignore();
    }
    let () = pipe.query(&mut conn).unwrap();
    wait_for(&host, Duration::from_secs(30), |s| s.memory.compactions >= 1);

    let status = host.status();
    let last = status.memory.last_compaction.expect("a compaction");
    let report = last.outcome.expect("it committed");
    let memory = report.memory.expect("kv 4 reports its memory");
    assert!(
        memory.after.linear_memory * 2 < memory.before.linear_memory,
        "{memory:?}: the fresh instance should hold only the live keys"
    );
    assert!(report.compaction.as_deref().unwrap().contains("below 25%"), "{report:?}");
    assert_eq!(report.connections, 1, "the client's connection crossed");
    assert_eq!(status.upgrades, 0, "a compaction is not an upgrade");

    // The same connection reads every key that is left, and none that was deleted.
    let mut pipe = redis::pipe();
    for i in 0..keys {
        pipe.cmd("GET").arg(format!("key:{i}"));
    }
    let got: Vec<Option<String>> = pipe.query(&mut conn).unwrap();
    for (i, got) in got.into_iter().enumerate() {
        let expected = (i % 10 == 0).then(|| value(i as u64));
        assert_eq!(got, expected, "key:{i}");
    }
    // INFO's used_memory is the allocator's count, which the host saw too.
    let info: String = redis::cmd("INFO").arg("memory").query(&mut conn).unwrap();
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("used_memory");
    assert!(used > 0 && used < memory.after.linear_memory, "{used} of {memory:?}");
}

#[test]
fn a_compaction_on_request_reports_the_memory_given_back() {
    // Automatic compaction off.
    let host = host(artifacts::KV_V4, Limits { compact_below: 0, ..Limits::default() });
    let mut conn = host.client();
    load(&mut conn, 100_000);
    let () = redis::cmd("FLUSHALL").query(&mut conn).unwrap();
    let () = redis::cmd("SET").arg("kept").arg("yes").query(&mut conn).unwrap();
    let report = match control::request(&host.control, &Request::Compact).unwrap() {
        Response::Upgraded(report) => report,
        other => panic!("{other:?}"),
    };
    assert_eq!(report.compaction.as_deref(), Some("requested"));
    assert_eq!(report.from, report.to);
    let memory = report.memory.expect("memory before and after");
    assert!(memory.before.linear_memory > 10 << 20, "{memory:?}");
    assert!(memory.after.linear_memory < 4 << 20, "{memory:?}");
    let shown = report.to_string();
    assert!(shown.starts_with("compacted kv 4.0.0 (requested)"), "{shown}");
    let kept: String = redis::cmd("GET").arg("kept").query(&mut conn).unwrap();
    assert_eq!(kept, "yes");
    let status = host.status();
    assert_eq!((status.upgrades, status.memory.compactions), (0, 1));
    assert_eq!(status.memory.usage.map(|u| u.linear_memory), Some(memory.after.linear_memory));
    assert!(status.to_string().contains("compactions  1, last"), "{status}");
}

#[test]
fn an_app_that_cannot_report_its_heap_is_compacted_only_on_request() {
    // Built before the memory export existed.
    let old = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/contract-0.1/kv_v2.wasm");
    let limits =
        Limits { compact_min_memory: 0, compact_interval: Duration::ZERO, ..Limits::default() };
    let host = host(old, limits);
    let mut conn = host.client();
    let () = redis::cmd("SET").arg("k").arg("v").query(&mut conn).unwrap();
    let status = host.status();
    assert_eq!(status.memory.usage, None);
    assert!(status.to_string().contains("does not report its heap"), "{status}");
    let report = match control::request(&host.control, &Request::Compact).unwrap() {
        Response::Upgraded(report) => report,
        other => panic!("{other:?}"),
    };
    assert_eq!(report.memory, None);
    let got: String = redis::cmd("GET").arg("k").query(&mut conn).unwrap();
    assert_eq!(got, "v");
    assert_eq!(host.status().memory.compactions, 1, "only the requested one");
}

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

/// `used_memory` from kv's `INFO memory`.
fn info_used_memory(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("memory").query(conn).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("used_memory")
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
    let used = info_used_memory(&mut conn);
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
    // The pause status shows is the one the requester was told.
    let last = status.memory.last_compaction.expect("recorded").outcome.expect("committed");
    assert_eq!(last.pause, report.pause);
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

#[test]
fn a_failed_compaction_is_shown_as_one_and_the_running_instance_serves_on() {
    let host = host(artifacts::MISBEHAVE, Limits { compact_below: 0, ..Limits::default() });
    let mut lines = host.lines();
    assert_eq!(lines.call("set k v"), "ok");
    assert_eq!(lines.call("fail-export"), "ok");
    let reason = match control::request(&host.control, &Request::Compact).unwrap() {
        Response::Failed(reason) => reason,
        other => panic!("{other:?}"),
    };
    assert!(reason.contains("export refused on request"), "{reason}");
    let status = host.status();
    // Counted and shown as a compaction that failed, not as an upgrade.
    assert_eq!((status.upgrades, status.memory.compactions), (0, 0));
    assert!(status.last_upgrade.is_none(), "{status:#?}");
    let last = status.memory.last_compaction.as_ref().expect("the failed compaction");
    assert!(last.outcome.as_ref().is_err_and(|e| e.contains("export refused")), "{last:?}");
    assert!(status.to_string().contains("compactions  0, last"), "{status}");
    assert!(status.to_string().contains("failed: "), "{status}");
    // The same connection, the same instance, the same state.
    assert_eq!(lines.call("get k"), "v");
}

#[test]
fn an_idle_instance_is_left_alone_below_the_minimum_memory_and_within_the_interval() {
    // A fresh kv 4 uses almost none of its 1 MiB linear memory: far below 25%. It is not
    // compacted while its memory is under --compact-min-memory (the default 64 MiB) ...
    let small =
        host(artifacts::KV_V4, Limits { compact_interval: Duration::ZERO, ..Limits::default() });
    // ... nor, with no minimum, before --compact-interval has passed since the start.
    let waiting = host(
        artifacts::KV_V4,
        Limits {
            compact_min_memory: 0,
            compact_interval: Duration::from_secs(3600),
            ..Limits::default()
        },
    );
    for host in [&small, &waiting] {
        wait_for(host, Duration::from_secs(10), |s| {
            s.memory.usage.is_some_and(|u| u.used_share() < 0.25)
        });
    }
    // The compactor looks once a second.
    std::thread::sleep(Duration::from_millis(3500));
    for host in [&small, &waiting] {
        let status = host.status();
        assert_eq!(status.memory.compactions, 0, "{status}");
        assert!(status.memory.last_compaction.is_none(), "{status}");
    }
}

#[test]
fn info_used_memory_is_the_heap_the_host_sees() {
    let host = host(artifacts::KV_V4, Limits { compact_below: 0, ..Limits::default() });
    let mut conn = host.client();
    load(&mut conn, 50_000);
    // The host asks once a second; wait for a report taken after the load.
    wait_for(&host, Duration::from_secs(10), |s| {
        s.memory.usage.is_some_and(|u| u.heap_in_use > 4 << 20)
    });
    std::thread::sleep(Duration::from_millis(1500));
    let heap = host.status().memory.usage.expect("kv 4 reports its memory").heap_in_use;
    let used = info_used_memory(&mut conn);
    // The same counter, read a moment apart with no write in between (a checkpoint may have
    // run meanwhile).
    assert!(used.abs_diff(heap) < heap / 20, "INFO used_memory {used}, heap in use {heap}");
}

#[test]
fn an_upgrade_requested_during_a_compaction_waits_for_it_instead_of_failing() {
    // 128-byte steps through 200k keys (a second or more), so that the compaction's pre-copy
    // is still under way when the upgrade comes.
    let limits = Limits { compact_below: 0, precopy_chunk: 128, ..Limits::default() };
    let host = host(artifacts::KV_V4, limits);
    let mut conn = host.client();
    load(&mut conn, 200_000);
    let control = host.control.clone();
    let compaction = std::thread::spawn(move || control::request(&control, &Request::Compact));
    let started = Instant::now();
    loop {
        let status = host.status();
        if let Some(precopy) = &status.precopy {
            // Shown as what it is, not as an upgrade.
            assert!(precopy.compaction, "{precopy:?}");
            let shown = status.to_string();
            assert!(shown.contains("\ncompacting   kv 4.0.0: pre-copy under way"), "{shown}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no pre-copy seen");
        std::thread::sleep(Duration::from_millis(5));
    }
    let upgraded = host.upgrade(artifacts::KV_V4).expect("the upgrade waits, then runs");
    assert!(upgraded.compaction.is_none(), "{upgraded:?}");
    match compaction.join().unwrap().unwrap() {
        Response::Upgraded(report) => assert_eq!(report.compaction.as_deref(), Some("requested")),
        other => panic!("{other:?}"),
    }
    let status = host.status();
    assert_eq!((status.upgrades, status.memory.compactions), (1, 1));
    let got: String = redis::cmd("GET").arg("key:199999").query(&mut conn).unwrap();
    assert_eq!(got, value(199_999));
}

/// A checkpoint cut while writes outrun its copy (here: 1 KiB steps under a load of 40 MB, and a
/// journal of 8 MiB that forces cuts) takes what is owed in steps of at most 256 chunks, not in
/// one pass: a pass of everything owed is built in the instance's linear memory at once, which
/// never shrinks (a 1M x 1 KiB store loaded at full speed ended at 3.3 GB for a 1.1 GB heap).
/// A snapshot asked for during the load is such a checkpoint: its chunks show the steps.
#[test]
fn a_checkpoint_cut_with_much_owed_is_taken_in_bounded_steps() {
    let limits = Limits { precopy_chunk: 1024, journal: 8 << 20, ..Limits::default() };
    let host = host(artifacts::KV_V5, limits);
    let big = "v".repeat(1024);
    let writer = {
        let (mut conn, big) = (host.client(), big.clone());
        std::thread::spawn(move || {
            for start in (0..40_000).step_by(500) {
                let mut mset = redis::cmd("MSET");
                for i in start..start + 500 {
                    mset.arg(format!("key:{i}")).arg(&big);
                }
                let () = mset.query(&mut conn).unwrap();
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("during.snap");
    host.snapshot(&path);
    writer.join().unwrap();
    let file = tasuki::snapshot::SnapshotFile::read(&path).unwrap();
    let chunks: u64 = file.chunks.iter().map(|c| c.bytes.len() as u64).sum();
    let largest = file.chunks.iter().map(|c| c.bytes.len()).max().unwrap_or(0);
    assert!(chunks > 4 << 20, "the snapshot was taken during the load: {chunks} bytes");
    assert!(largest <= 300 << 10, "a chunk of {largest} bytes, of {chunks}");
    let mut conn = host.client();
    let got: String = redis::cmd("GET").arg("key:39999").query(&mut conn).unwrap();
    assert_eq!(got, big);
}

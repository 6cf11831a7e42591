//! A guest that faults while serving: the fault is contained to the event that caused it.
//! The instance is rebuilt from its checkpoint and journal, every other connection stays open,
//! and no state is lost except what the faulting event would have done.

use std::io::{Read, Write};
use std::time::{Duration, Instant};
use tasuki::HostConfig;
use tasuki::limits::Limits;
use tasuki_tests::{TestHost, artifacts};

fn misbehave(limits: Limits) -> TestHost {
    TestHost::with(HostConfig { app: artifacts::MISBEHAVE.into(), limits, ..HostConfig::default() })
}

fn short_deadline() -> Limits {
    Limits { call_deadline: Duration::from_millis(200), ..Limits::default() }
}

#[test]
fn a_handler_that_loops_forever_is_stopped_and_only_its_connection_closes() {
    let host = misbehave(short_deadline());
    let mut a = host.lines();
    for i in 0..100 {
        assert_eq!(a.call(&format!("set k{i} v{i}")), "ok");
    }
    let mut b = host.lines();
    let started = Instant::now();
    b.expect_closed("loop");
    assert!(started.elapsed() < Duration::from_secs(5), "the deadline stopped it");

    // A was never closed, and the rebuilt instance has every key A wrote.
    assert_eq!(a.call("get k0"), "v0");
    assert_eq!(a.call("get k99"), "v99");
    assert_eq!(a.call("count"), "1", "the rebuilt instance knows B is gone");
    let mut c = host.lines();
    assert_eq!(c.call("get k42"), "v42");
    assert_eq!(host.status().connections, 2);
}

#[test]
fn a_panicking_handler_loses_only_its_own_event() {
    let host = misbehave(Limits::default());
    let mut a = host.lines();
    assert_eq!(a.call("set before yes"), "ok");
    let mut b = host.lines();
    assert_eq!(b.call("set from-b also"), "ok");
    b.expect_closed("panic");
    assert_eq!(a.call("get before"), "yes");
    assert_eq!(a.call("get from-b"), "also", "B's earlier events were replayed");
    // Twice more: recovery composes.
    for _ in 0..2 {
        host.lines().expect_closed("panic");
    }
    assert_eq!(a.call("set after yes"), "ok");
    assert_eq!(a.call("get before"), "yes");
    assert_eq!(a.call("count"), "1");
}

#[test]
fn a_guest_past_its_memory_cap_traps_and_the_host_stays_up() {
    let host = misbehave(Limits { memory: 64 << 20, ..Limits::default() });
    let mut a = host.lines();
    assert_eq!(a.call("set k v"), "ok");
    assert_eq!(a.call("alloc 8"), "ok holding 8 MiB", "within the cap");
    host.lines().expect_closed("alloc 200");
    assert_eq!(a.call("get k"), "v");
    // The rebuilt instance replayed `alloc 8` too: it holds exactly what it held before.
    assert_eq!(host.lines().call("alloc 16"), "ok holding 24 MiB");
}

#[test]
fn a_trap_with_recovery_off_restarts_fresh_and_keeps_connections() {
    let host = misbehave(Limits { journal: 0, ..Limits::default() });
    let mut a = host.lines();
    assert_eq!(a.call("set k v"), "ok");
    host.lines().expect_closed("panic");
    // The documented cost of --journal 0: the state is gone, the connection is not.
    assert_eq!(a.call("get k"), "nil");
    assert_eq!(a.call("count"), "1");
}

#[test]
fn checkpoints_bound_the_journal_and_recovery_still_has_everything() {
    // A 1 MiB journal: checkpoints must come before half of it is used, every time.
    let journal = 1 << 20;
    let host = misbehave(Limits { journal, ..Limits::default() });
    let mut a = host.lines();
    let value = "x".repeat(1000);
    let mut largest = 0;
    for i in 0..6000 {
        assert_eq!(a.call(&format!("set k{i} {value}")), "ok");
        let recovery = host.status().recovery;
        assert_eq!(recovery.off, None, "recovery stays on");
        largest = largest.max(recovery.journal_bytes);
    }
    // 6 MB of input went through a 1 MiB journal: it was cut by checkpoints, and never held
    // more than the limit.
    assert!(largest > 0 && largest <= journal as u64, "journal peaked at {largest} bytes");
    let recovery = host.status().recovery;
    assert!(recovery.checkpoint.is_some(), "a checkpoint was taken");
    // A checkpoint falls due at half the journal and is built from chunks between events; one
    // may still be under way when the last reply arrives, and it is cut by three quarters.
    assert!(recovery.journal_bytes <= journal as u64 / 4 * 3 + 2048, "{recovery:?}");
    host.lines().expect_closed("panic");
    assert_eq!(a.call("get k0"), value);
    assert_eq!(a.call("get k5999"), value);
    assert_eq!(host.status().recovery.recoveries, 1);
}

/// Files in `dir` this process holds open: the checkpoint's and the journal's, which have no
/// name (`/proc` shows them as `DIR/#N (deleted)`).
fn open_files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

/// The host's copies of the state for recovery — the checkpoint's chunks and the journal's
/// bytes — are in files in `--checkpoint-dir`, not in its memory, and a trap is recovered from
/// them with every key.
#[test]
fn the_checkpoint_and_the_journal_are_kept_in_files_and_a_trap_recovers_from_them() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits { checkpoint_dir: Some(dir.path().into()), ..Limits::default() };
    let host = misbehave(limits);
    let mut a = host.lines();
    let value = "z".repeat(1000);
    for i in 0..3000 {
        assert_eq!(a.call(&format!("set k{i} {value}")), "ok");
    }
    // A snapshot is also the next checkpoint, built from chunks.
    host.snapshot(&dir.path().join("now.snap"));
    let recovery = host.status().recovery;
    let (_, bytes) = recovery.checkpoint.expect("a checkpoint");
    assert!(bytes > 3_000_000, "{recovery:?}");
    assert!(recovery.checkpoint_in_memory < 64 << 10, "{recovery:?}");
    // 2 MB journaled after it: all but the last MiB go to the journal's file.
    for i in 3000..5000 {
        assert_eq!(a.call(&format!("set k{i} {value}")), "ok");
    }
    assert!(host.status().recovery.journal_bytes > 2_000_000);
    assert_eq!(open_files_in(dir.path()), 2, "the checkpoint's file and the journal's");
    host.lines().expect_closed("panic");
    for i in (0..5000).step_by(7).chain([4999]) {
        assert_eq!(a.call(&format!("get k{i}")), value, "k{i} survived the trap");
    }
    assert_eq!(host.status().recovery.recoveries, 1);
}

#[test]
fn a_state_larger_than_the_journal_limit_still_recovers() {
    // 4 MB of state, a 1 MiB journal: each checkpoint is bigger than the whole journal may be.
    let host = misbehave(Limits { journal: 1 << 20, ..Limits::default() });
    let mut a = host.lines();
    let value = "y".repeat(2000);
    for i in 0..2000 {
        assert_eq!(a.call(&format!("set k{i} {value}")), "ok");
    }
    let status = host.status().recovery;
    assert_eq!(status.off, None, "recovery is on: {status:?}");
    let (_, checkpoint_bytes) = status.checkpoint.expect("checkpointed");
    assert!(checkpoint_bytes > 1 << 20, "the state outgrew the journal: {checkpoint_bytes}");
    host.lines().expect_closed("panic");
    for i in [0, 1000, 1999] {
        assert_eq!(a.call(&format!("get k{i}")), value, "k{i} survived the trap");
    }
    let last = host.status().recovery.last.expect("recorded");
    assert!(matches!(last.outcome, tasuki::status::RecoveryOutcome::Rebuilt { .. }), "{last:?}");
}

#[test]
fn status_shows_a_recovery_while_it_runs_and_what_it_cost_after() {
    // Every fresh instance takes 1.5 s in `init`, so a rebuild does too: long enough to look.
    let host = TestHost::with(HostConfig {
        app: artifacts::MISBEHAVE.into(),
        args: vec!["slow-init=1500".into()],
        ..HostConfig::default()
    });
    let mut a = host.lines();
    assert_eq!(a.call("set k v"), "ok");
    assert_eq!(host.status().recovery.recovering_since_unix_ms, None);
    // B's connection is closed before the rebuild starts: once B sees it, the loop is busy.
    host.lines().expect_closed("panic");
    let during = host.status();
    assert!(during.recovery.recovering_since_unix_ms.is_some(), "{during}");
    assert!(during.to_string().contains("RECOVERING for"), "{during}");
    // A's next request waits for the rebuild, and finds its key.
    assert_eq!(a.call("get k"), "v");
    let after = host.status().recovery;
    assert_eq!(after.recovering_since_unix_ms, None);
    let last = after.last.expect("recorded");
    assert!(last.took >= Duration::from_millis(1500), "{last:?}");
    assert!(
        matches!(&last.outcome, tasuki::status::RecoveryOutcome::Rebuilt { event_lost: true, closed, .. } if closed.len() == 1),
        "{last:?}"
    );
}

#[test]
fn an_export_that_traps_closes_the_client_holding_the_most_unanswered_input() {
    // B sends 8 MB of a line that never ends: input the guest holds, unanswered. A then makes
    // the next export trap. The host cannot tell why an export trapped; the likeliest cause is
    // a half-received request, so it closes the connection holding the most unanswered input
    // (B, past 1 MiB) and rebuilds without it. A, whose requests were all answered, stays.
    let host = misbehave(Limits::default());
    let mut a = host.lines();
    assert_eq!(a.call("set k v"), "ok");
    let mut b = host.raw();
    b.write_all(b"set big ").unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..8 {
        b.write_all(&chunk).unwrap();
    }
    // Once A is answered after B's bytes, the host has read them: the loop serves in turn.
    assert_eq!(a.call("count"), "2");
    assert_eq!(a.call("trap-export"), "ok");
    let dir = tempfile::tempdir().unwrap();
    let failed = host.try_snapshot(&dir.path().join("x.snap"));
    assert!(failed.is_err(), "the export was made to trap: {failed:?}");
    // B is closed by the host: end of file (or a reset), not our read timeout.
    b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    match b.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("B should have been closed by the host, got {other:?}"),
    }
    assert_eq!(a.call("get k"), "v", "A's state and connection survived");
    assert_eq!(a.call("count"), "1", "the rebuilt instance knows B is gone");
}

#[test]
fn a_trap_in_on_disconnect_loses_only_that_event() {
    // The rebuilt instance must not be told of the disconnect again: it would trap again, and
    // after a few rounds the host would give up and restart the app empty.
    let host = misbehave(Limits::default());
    let mut a = host.lines();
    assert_eq!(a.call("set k v"), "ok");
    let mut b = host.lines();
    assert_eq!(b.call("trap-on-close"), "ok");
    drop(b);
    // A is served after the disconnect and its recovery ran: the loop serves in turn.
    let deadline = Instant::now() + Duration::from_secs(10);
    while host.status().recovery.recoveries == 0 {
        assert!(Instant::now() < deadline, "the trap in on-disconnect was never recovered");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(a.call("get k"), "v", "the state survived");
    let last = host.status().recovery.last.expect("recorded");
    assert!(matches!(last.outcome, tasuki::status::RecoveryOutcome::Rebuilt { .. }), "{last:?}");
    assert_eq!(host.status().recovery.recoveries, 1, "one recovery, not a loop");
}

/// An event's random bytes (`wasi:random/random`) are part of what the journal replays: the
/// instance rebuilt after a trap holds the very bytes the first run drew and answered.
#[test]
fn a_rebuilt_instance_holds_the_random_bytes_its_clients_were_answered() {
    let host = misbehave(Limits::default());
    let mut a = host.lines();
    let kept: Vec<String> = (0..20).map(|i| a.call(&format!("keep-random r{i}"))).collect();
    assert!(kept.iter().all(|r| r.len() == 32), "{kept:?}");
    let distinct: std::collections::HashSet<&String> = kept.iter().collect();
    assert_eq!(distinct.len(), kept.len(), "each event reads bytes of its own: {kept:?}");
    assert_ne!(a.call("random"), a.call("random"), "and so does each later event");
    host.lines().expect_closed("panic");
    for (i, value) in kept.iter().enumerate() {
        assert_eq!(&a.call(&format!("get r{i}")), value, "r{i} after the rebuild");
    }
}

/// A host running misbehave, started with `args`, whose checkpoints cannot be built from chunks
/// (`--precopy-chunk 0`: as for an app that holds none of the SDK's collections), with a first
/// checkpoint of over 5 MiB taken (exported on the loop: there was none to rebuild a replica
/// from).
fn whole_state_checkpoints(args: &[&str]) -> TestHost {
    let host = TestHost::with(HostConfig {
        app: artifacts::MISBEHAVE.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        limits: Limits { precopy_chunk: 0, ..Limits::default() },
        ..HostConfig::default()
    });
    let mut a = host.lines();
    // Over CHECKPOINT_MIN (4 MiB) of input, and over REPLICA_MIN (1 MiB) of state.
    assert_eq!(a.call(&format!("set big {}", "v".repeat(5 << 20))), "ok");
    let recovery = until(&host, |recovery| recovery.checkpoints == 1);
    assert_eq!(recovery.whole_checkpoints, 1, "status counts a whole export apart: {recovery:?}");
    assert!(recovery.longest_whole_checkpoint > Duration::ZERO, "{recovery:?}");
    host
}

/// The bytes of the host's checkpoint.
fn checkpoint_bytes(recovery: &tasuki::status::RecoveryStatus) -> u64 {
    recovery.checkpoint.expect("a checkpoint").1
}

/// Waits (up to a minute, then fails) until the host's recovery status meets `done`; returns
/// it.
fn until(
    host: &TestHost,
    done: impl Fn(&tasuki::status::RecoveryStatus) -> bool,
) -> tasuki::status::RecoveryStatus {
    let started = Instant::now();
    loop {
        let recovery = host.status().recovery;
        if done(&recovery) {
            return *recovery;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never came: {recovery:?}");
        // Not a busy loop: the replica and the event loop share the machine's cores.
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// An app that cannot pre-copy has its checkpoints exported by a replica off the event loop, as
/// redis-server's BGSAVE writes from a forked child: the checkpoint is the state at the
/// boundary the replica was rebuilt from, and the events journaled while it worked stay in the
/// journal. A trap after it is recovered with every change, none applied twice.
#[test]
fn a_replica_exports_the_checkpoint_off_the_loop_and_the_journal_keeps_what_came_meanwhile() {
    // The replica runs the live arguments: its import of the last checkpoint takes 5 s, and
    // the pushes below come meanwhile (about a second of them on a quiet machine; 1.5 s was
    // too short when the machine was busy: the replica finished among them, and the events
    // after it were journaled but not counted as kept).
    let host = whole_state_checkpoints(&["slow-import=5000"]);
    let first = checkpoint_bytes(&host.status().recovery);
    let mut a = host.lines();
    // Before the next checkpoint's boundary: in the state the replica exports, not after it.
    assert_eq!(a.call("push before"), "ok");
    // The journal outgrows the checkpoint (it falls due while big2 arrives): a replica takes
    // the next.
    let big2 = "w".repeat(6 << 20);
    assert_eq!(a.call(&format!("set big2 {big2}")), "ok");
    // More events than a segment of the journal's index (4096), and more bytes than its tail
    // in the heap (1 MiB): the kept events are read back from segments and the journal's
    // file past the front let go of.
    let mut expected = vec!["before".to_string()];
    for i in 0..5000 {
        assert_eq!(a.call(&format!("push after{i}")), "ok");
        expected.push(format!("after{i}"));
    }
    let after = "x".repeat(3 << 20);
    assert_eq!(a.call(&format!("set after {after}")), "ok");
    let meanwhile = host.status().recovery;
    assert_eq!(meanwhile.replica_checkpoints, 0, "the events came while the replica worked");
    let recovery = until(&host, |recovery| recovery.replica_checkpoints == 1);
    let record = recovery.last_replica_checkpoint.clone().expect("recorded");
    assert_eq!(recovery.checkpoints, 2, "{recovery:?}");
    assert_eq!(recovery.whole_checkpoints, 1, "the second left the loop to a replica");
    let bytes = checkpoint_bytes(&recovery);
    assert!(bytes > first && record.bytes == bytes, "the replica's export: {recovery:?}");
    assert!(record.events_replayed >= 2, "`push before` and `set big2`: {record:?}");
    assert!(record.events_kept > 4096, "the pushes came while the replica worked: {record:?}");
    assert_eq!(recovery.journal_events, record.events_kept, "{recovery:?}");
    assert!(host.status().recovery.to_string().contains("1 by a replica off the event loop"));
    // A trap now rebuilds from the replica's checkpoint and the events kept after it.
    host.lines().expect_closed("panic");
    assert_eq!(a.call("list"), expected.join(","), "every push once, in order");
    assert_eq!(a.call("get big2"), big2);
    assert_eq!(a.call("get after"), after);
    assert_eq!(host.status().recovery.recoveries, 1);
}

/// A replica that cannot build the checkpoint (here its import traps) leaves it to an export
/// on the loop: the checkpoint is taken all the same, and nothing is lost.
#[test]
fn a_replica_that_fails_leaves_the_checkpoint_to_an_export_on_the_loop() {
    // Every import into an instance started with these arguments traps: the replica's, never
    // the live instance's (it was started fresh).
    let host = whole_state_checkpoints(&["trap-import"]);
    let first = checkpoint_bytes(&host.status().recovery);
    let mut a = host.lines();
    let big2 = "w".repeat(6 << 20);
    assert_eq!(a.call(&format!("set big2 {big2}")), "ok");
    let recovery = until(&host, |recovery| recovery.checkpoints == 2);
    assert_eq!(recovery.replica_checkpoints, 0, "{recovery:?}");
    let why = recovery.replica_off.as_deref().expect("the replica was tried, and failed");
    assert!(why.contains("trapped"), "{why}");
    assert!(recovery.to_string().contains("checkpoints exported on the loop: a replica failed"));
    assert!(checkpoint_bytes(&recovery) > first, "exported on the loop: {recovery:?}");
    assert_eq!(a.call("get big2"), big2);
    assert_eq!(a.call("get big").len(), 5 << 20);
}

/// An upgrade asked for while a replica builds a checkpoint begins once it is done (begun at
/// once, a second replica could hold a fourth copy of the state), and moves every change.
#[test]
fn an_upgrade_during_a_replicas_checkpoint_waits_for_it_and_keeps_every_write() {
    let host = std::sync::Arc::new(whole_state_checkpoints(&["slow-import=1500"]));
    let first = host.status().recovery.checkpoint.expect("a checkpoint").0;
    let mut a = host.lines();
    assert_eq!(a.call("push before"), "ok");
    let big2 = "w".repeat(6 << 20);
    assert_eq!(a.call(&format!("set big2 {big2}")), "ok");
    // The replica works (its import sleeps); another build's arguments: a whole-state upgrade
    // of the kind that takes a replica of its own.
    let upgrade = {
        let host = std::sync::Arc::clone(&host);
        std::thread::spawn(move || {
            let options = tasuki::upgrade::UpgradeOptions {
                no_precopy: true,
                args: Some(vec!["slow-import=1500".into(), "other".into()]),
                ..Default::default()
            };
            host.host_upgrade_with(artifacts::MISBEHAVE, &options)
        })
    };
    for i in 0..100 {
        assert_eq!(a.call(&format!("push after{i}")), "ok");
    }
    let report = upgrade.join().unwrap().expect("the upgrade commits");
    // The upgrade's own replica was rebuilt from the checkpoint the first one built: it began
    // after it.
    let tasuki::upgrade::StateSource::Replica { at_unix_ms, .. } = report.source else {
        panic!("a replica's export: {report}");
    };
    assert!(at_unix_ms > first, "from the checkpoint taken at {first}: {report}");
    assert_eq!(host.status().recovery.replica_checkpoints, 1);
    assert_eq!(a.call("args"), "slow-import=1500 other", "{report}");
    let mut expected = vec!["before".to_string()];
    expected.extend((0..100).map(|i| format!("after{i}")));
    assert_eq!(a.call("list"), expected.join(","));
    assert_eq!(a.call("get big2"), big2);
}

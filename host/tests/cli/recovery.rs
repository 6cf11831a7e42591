//! Recovery from a trap, end to end: `tasuki run` as a process, clients on loopback, `upgrade`
//! and `snapshot` from other processes. Each test is one guarantee a user relies on: after a
//! guest traps, every key written before is still readable with its value, and only the
//! connection whose event trapped is closed.
//!
//! Most tests make kv trap the same way: with `--memory-limit 64`, one request asks for a reply
//! of 100 MiB (`MGET` of a 1 MiB value a hundred times). The request is a few hundred bytes and
//! the state stays small, so the trap is that one event's and nothing else's.

use crate::support::{Reply, Resp, Running, closed, poll, tasuki_ok};
use std::io::{ErrorKind, Write};
use std::time::{Duration, Instant};
use tasuki_artifacts::{KV_V1, KV_V1_TO_V2, KV_V2, KV_V2_TO_V3, KV_V3, KV_V5, MISBEHAVE};

/// `count` keys from `first` on, each with a value of its own of `len` bytes.
fn keys(first: usize, count: usize, len: usize) -> Vec<(String, Vec<u8>)> {
    (first..first + count)
        .map(|i| {
            let mut value = format!("value-{i}-").into_bytes();
            value.extend((0..len.saturating_sub(value.len())).map(|j| b'a' + ((i + j) % 26) as u8));
            (format!("key:{i}"), value)
        })
        .collect()
}

/// The value the trapping request asks for a hundred times.
fn big() -> Vec<u8> {
    vec![b'b'; 1 << 20]
}

/// Stores `big` (through `a`, which stays open), then makes the guest trap on a connection of
/// its own: `MGET big` ×100 needs a 100 MiB reply, past `--memory-limit 64`. That connection
/// must be closed, unanswered.
fn trap(host: &Running, a: &mut Resp) {
    assert_eq!(a.call(&[b"SET", b"big", &big()]), Reply::Status("OK".into()));
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(std::iter::repeat_n(&b"big"[..], 100));
    let answered = host.resp().expect_closed(&args);
    assert!(
        answered.is_empty(),
        "a 100 MiB reply under --memory-limit 64 must trap the guest, yet {} bytes came back",
        answered.len()
    );
}

/// The keys of `pairs` that `client` does not read back with their value, as a failure message
/// (empty when all are there).
fn lost(client: &mut Resp, pairs: &[(String, Vec<u8>)], host: &Running) -> Option<String> {
    let wrong = client.wrong_or_missing(pairs);
    (!wrong.is_empty()).then(|| {
        format!(
            "{} of {} keys missing or changed, e.g. {:?}\n--- host log (tail) ---\n{}",
            wrong.len(),
            pairs.len(),
            &wrong[..wrong.len().min(3)],
            host.log()
        )
    })
}

fn kv(dir: &std::path::Path, wasm: &str, extra: &[&str]) -> Running {
    let mut args = vec!["run", wasm, "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Running::spawn(dir, &args)
}

/// Fault 0. The value is one RESP bulk of 80 MB, sent in 1 MiB pieces: more than the guest's
/// whole memory. Whatever the host does with that request, the rest of the keyspace is not its
/// to lose.
#[test]
fn one_client_sending_an_80_mb_value_loses_no_other_key_and_closes_no_other_connection() {
    const VALUE: usize = 80_000_000;
    let dir = tempfile::tempdir().unwrap();
    let host = kv(dir.path(), KV_V2, &["--memory-limit", "64"]);
    let mut a = host.resp();
    let mut idle = host.resp();
    let pairs = keys(0, 2000, 100);
    a.set_all(&pairs);
    assert_eq!(idle.call(&[b"PING"]), Reply::Status("PONG".into()));

    let started = Instant::now();
    let mut b = host.resp();
    b.stream().set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let header = format!("*3\r\n$3\r\nSET\r\n$4\r\nhuge\r\n${VALUE}\r\n");
    b.stream().write_all(header.as_bytes()).unwrap();
    let piece = vec![b'x'; 1 << 20];
    let mut sent = 0;
    let mut outcome = None;
    while sent < VALUE {
        let n = piece.len().min(VALUE - sent);
        match b.stream().write_all(&piece[..n]) {
            Ok(()) => sent += n,
            Err(e) if closed(&e) => {
                outcome = Some(format!("closed by the host after {sent} bytes of the value"));
                break;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                // Allowed too: the client loses its request. The host read nothing more of it.
                outcome = Some(format!("no longer read by the host after {sent} bytes"));
                break;
            }
            Err(e) => panic!("sending the value failed after {sent} bytes: {e}"),
        }
    }
    // Wait for the host to be done with the request (an answer, or the connection closed), so
    // that the reads below come after it.
    let outcome = outcome.unwrap_or_else(|| {
        match b.stream().write_all(b"\r\n").and_then(|()| b.read_reply()) {
            Ok(reply) => format!("answered {reply:?} after the whole value"),
            Err(e) if closed(&e) => "closed by the host after the whole value".into(),
            Err(e) => format!("neither answered nor closed after the whole value ({e})"),
        }
    });
    eprintln!("80 MB SET: {outcome}, {:.1} s", started.elapsed().as_secs_f64());

    if let Some(lost) = lost(&mut a, &pairs, &host) {
        panic!("after one client sent an 80 MB value ({outcome}): {lost}");
    }
    assert_eq!(
        idle.try_call(&[b"PING"]).ok(),
        Some(Reply::Status("PONG".into())),
        "an idle connection was closed"
    );
}

/// Fault 1. After `upgrade kv_v3 --transform kv_v1_to_v2 --transform kv_v2_to_v3` a trap in
/// v3 must rebuild v3 from a state v3 reads.
#[test]
fn keys_survive_a_trap_after_an_upgrade_through_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let host = kv(dir.path(), KV_V1, &["--memory-limit", "64"]);
    let mut a = host.resp();
    let pairs = keys(0, 500, 100);
    a.set_all(&pairs);

    let report = tasuki_ok(
        dir.path(),
        &["upgrade", KV_V3, "--transform", KV_V1_TO_V2, "--transform", KV_V2_TO_V3],
    );
    assert!(report.contains("upgraded kv 1.0.0 -> kv 3.0.0"), "{report}");
    assert_eq!(a.call(&[b"TYPE", b"key:0"]), Reply::Status("string".into()), "v3 serves");

    trap(&host, &mut a);
    if let Some(lost) = lost(&mut a, &pairs, &host) {
        panic!("after a trap in kv v3 (upgraded from v1 through two transformers): {lost}");
    }
    assert_eq!(a.call(&[b"STRLEN", b"big"]), Reply::Int(1 << 20), "written after the upgrade");
}

/// Fault 2. A state started from with `run --restore` is recovered like any other.
#[test]
fn keys_restored_from_a_snapshot_file_survive_a_trap() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = keys(0, 500, 100);
    let first = kv(dir.path(), KV_V2, &[]);
    first.resp().set_all(&pairs);
    let shown = tasuki_ok(dir.path(), &["snapshot", "--out", "kv.snap"]);
    assert!(shown.contains("kv.snap"), "{shown}");
    drop(first); // killed: the file is all that is left of it

    let host = kv(dir.path(), KV_V2, &["--restore", "kv.snap", "--memory-limit", "64"]);
    let mut a = host.resp();
    if let Some(lost) = lost(&mut a, &pairs, &host) {
        panic!("the restore itself: {lost}");
    }
    trap(&host, &mut a);
    if let Some(lost) = lost(&mut a, &pairs, &host) {
        panic!("after a trap in a host started with --restore: {lost}");
    }
}

/// Fault 3. `--journal 1` with 3 MB of keys: the state is larger than the journal may grow,
/// and a trap must still find it. Twice, so that protection is not a one-off.
#[test]
fn a_state_larger_than_the_journal_limit_survives_traps() {
    let dir = tempfile::tempdir().unwrap();
    let host = kv(dir.path(), KV_V2, &["--journal", "1", "--memory-limit", "64"]);
    let mut a = host.resp();
    let mut pairs = keys(0, 3000, 1000);
    a.set_all(&pairs);
    trap(&host, &mut a);
    if let Some(lost) = lost(&mut a, &pairs, &host) {
        panic!("after a trap with 3 MB of keys and --journal 1: {lost}");
    }

    let more = keys(3000, 3000, 1000);
    a.set_all(&more);
    pairs.extend(more);
    trap(&host, &mut a);
    if let Some(lost) = lost(&mut a, &pairs, &host) {
        panic!("after a second trap, 6 MB of keys and --journal 1: {lost}");
    }
}

/// How long a timer that is due in a few tens of milliseconds gets to fire before the test
/// gives up on it.
const TIMER_PATIENCE: Duration = Duration::from_secs(5);

/// Fault 4, first half. With `--arg resume-timer=7:50` the misbehave fixture's `resumed` (the
/// hook the version taking over runs, where kv v2 arms its expiry timer) arms timer 7. After a
/// normal upgrade it fires; after `upgrade --from-checkpoint` it must fire too.
///
/// kv cannot show this: its `resumed` arms timer 1 for the earliest deadline, and the version
/// being replaced had armed the same timer for the same deadline (the host keeps timers across
/// an upgrade), so the timer that was dropped is never missed.
#[test]
fn a_timer_armed_when_resuming_from_a_checkpoint_fires() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["run", MISBEHAVE, "--listen", "127.0.0.1:0", "--arg", "resume-timer=7:50"];
    let host = Running::spawn(dir.path(), &args);
    let mut a = host.lines();
    assert_eq!(a.call("set k v"), "ok");
    assert_eq!(a.call("fired"), "none");

    // The fixture and the normal path: the new version's `resumed` arms 7, and it fires.
    let report = tasuki_ok(dir.path(), &["upgrade", MISBEHAVE]);
    assert!(report.contains("upgraded misbehave"), "{report}");
    let fired = poll(TIMER_PATIENCE, || Some(a.call("fired")).filter(|f| f == "7"));
    assert!(fired.is_some(), "after a normal upgrade timer 7 fired: {}", a.call("fired"));

    // A checkpoint of that state, then the escape hatch: the new version resumes from it.
    tasuki_ok(dir.path(), &["snapshot", "--out", "checkpoint.snap"]);
    let report = tasuki_ok(dir.path(), &["upgrade", MISBEHAVE, "--from-checkpoint"]);
    assert!(report.contains("upgraded misbehave"), "{report}");
    assert_eq!(a.call("get k"), "v");
    let fired = poll(TIMER_PATIENCE, || Some(a.call("fired")).filter(|f| f == "7 7"));
    assert!(
        fired.is_some(),
        "timer 7, armed by `resumed` of the version that took over with --from-checkpoint, \
         did not fire within {TIMER_PATIENCE:?}: fired = {:?}, believed armed = {:?}\n\
         --- host log (tail) ---\n{}",
        a.call("fired"),
        a.call("armed"),
        host.log()
    );
}

/// Fault 4, second half. A timer whose handler traps loses that firing, like any event; but
/// the rebuilt instance believes the timer is armed (it replayed the request that armed it),
/// so the timer must fire again. Its handler traps only while the event time is within
/// 300 ms of arming: a re-fire after a backoff gets through.
#[test]
fn a_timer_whose_handler_trapped_fires_again() {
    let dir = tempfile::tempdir().unwrap();
    let host = Running::start(dir.path(), MISBEHAVE);
    let mut a = host.lines();
    assert_eq!(a.call("set k v"), "ok");
    // A control: a timer that does not trap fires.
    assert_eq!(a.call("timer 6 10"), "ok");
    let fired = poll(TIMER_PATIENCE, || Some(a.call("fired")).filter(|f| f == "6"));
    assert!(fired.is_some(), "timer 6 fired: {}", a.call("fired"));

    assert_eq!(a.call("timer 5 50 300"), "ok");
    let fired = poll(TIMER_PATIENCE, || Some(a.call("fired")).filter(|f| f == "6 5"));
    assert!(
        fired.is_some(),
        "timer 5, whose handler trapped on its first firing, did not fire again within \
         {TIMER_PATIENCE:?}: fired = {:?}, believed armed = {:?}\n--- host log (tail) ---\n{}",
        a.call("fired"),
        a.call("armed"),
        host.log()
    );
    assert_eq!(a.call("get k"), "v", "the state was recovered");
    assert_eq!(a.call("count"), "1", "no connection was closed by the timer's trap");
    // It fired again after a delay, not in a loop: its handler traps for 300 ms, and the
    // retries come after 100 ms, then 200 ms — a handful of recoveries, not hundreds.
    let status = tasuki_ok(dir.path(), &["status"]);
    let recoveries: u64 = status
        .split(" in all)")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no recovery count in {status}"));
    assert!((1..=4).contains(&recoveries), "{recoveries} recoveries:\n{status}");
}

/// Not one of the faults: a trap on its own loses only its own request, so the failures above
/// are the faults' and not the way the tests make kv trap.
#[test]
fn a_trap_in_kv_loses_only_the_request_that_trapped() {
    let dir = tempfile::tempdir().unwrap();
    let host = kv(dir.path(), KV_V2, &["--memory-limit", "64"]);
    let mut a = host.resp();
    let pairs = keys(0, 200, 100);
    a.set_all(&pairs);
    trap(&host, &mut a);
    if let Some(lost) = lost(&mut a, &pairs, &host) {
        panic!("{lost}");
    }
    // The operator sees what happened: one recovery, rebuilt, only the trapping request lost.
    let status = tasuki_ok(dir.path(), &["status"]);
    assert!(status.contains("(1 in all)"), "{status}");
    assert!(status.contains("rebuilt from the "), "{status}");
    assert!(status.contains("lost: the faulting event, connections ["), "{status}");
}

/// Unnamed files (`DIR/#N (deleted)` in /proc) that the process `pid` holds open in `dir`.
fn open_files_in(pid: u32, dir: &std::path::Path) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir))
        .count()
}

/// `tasuki run kv_v5.wasm --checkpoint-dir DIR`: the recovery checkpoint and the journal are
/// two files the host holds open in DIR, not its memory; a trap rebuilds kv 5 from them with
/// every key, and a SIGTERM's last snapshot, written from the checkpoint's file, restores every
/// key on the next start.
#[test]
fn with_checkpoint_dir_a_trap_and_a_restart_recover_every_key_from_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let spill = tempfile::tempdir().unwrap();
    let spill_arg = spill.path().to_str().unwrap();
    let flags = ["--memory-limit", "64", "--checkpoint-dir", spill_arg, "--snapshot-dir", "snaps"];
    let mut host = kv(dir.path(), KV_V5, &flags);
    let mut a = host.resp();
    let checkpointed = keys(0, 4000, 1000);
    a.set_all(&checkpointed);
    // A snapshot is also the next checkpoint, built from chunks: 4 MB of them.
    tasuki_ok(dir.path(), &["snapshot", "--out", "now.snap"]);
    let journaled = keys(4000, 2000, 1000);
    a.set_all(&journaled);
    let status = tasuki_ok(dir.path(), &["status"]);
    let line = status.lines().find(|l| l.contains("checkpoint of")).unwrap_or_default();
    // "checkpoint of 1s ago (4.1 MiB, 312 B of it in memory)": the snapshot of what is not
    // pre-copied stays in memory, the chunks do not.
    assert!(line.contains("MiB, ") && line.contains(" B of it in memory"), "{status}");
    assert_eq!(
        open_files_in(host.child.id(), spill.path()),
        2,
        "the checkpoint's file and the journal's, in --checkpoint-dir"
    );

    trap(&host, &mut a);
    for (pairs, what) in [(&checkpointed, "checkpoint"), (&journaled, "journal")] {
        if let Some(lost) = lost(&mut a, pairs, &host) {
            panic!("after a rebuild from the {what}'s file: {lost}");
        }
    }
    let status = tasuki_ok(dir.path(), &["status"]);
    assert!(status.contains("last recovery"), "{status}");

    let sent = std::process::Command::new("kill")
        .args(["-TERM", &host.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let exit = poll(Duration::from_secs(60), || host.child.try_wait().unwrap());
    assert_eq!(exit.and_then(|s| s.code()), Some(0), "{}", host.log());
    let restarted = kv(dir.path(), KV_V5, &flags);
    let mut b = restarted.resp();
    for (pairs, what) in [(&checkpointed, "checkpoint"), (&journaled, "journal")] {
        if let Some(lost) = lost(&mut b, pairs, &restarted) {
            panic!("after a restart, keys of the {what}: {lost}");
        }
    }
}

/// `tasuki upgrade --arg`: the new version starts with the new arguments, and so does every
/// rebuild of it after a trap (the host keeps them from the commit on); a plain upgrade after
/// that keeps them too.
#[test]
fn an_upgrades_arguments_are_what_a_rebuild_after_a_trap_starts_with() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["run", MISBEHAVE, "--listen", "127.0.0.1:0", "--arg", "colour=red"];
    let host = Running::spawn(dir.path(), &args);
    let mut a = host.lines();
    assert_eq!(a.call("args"), "colour=red");
    tasuki_ok(dir.path(), &["upgrade", MISBEHAVE, "--arg", "colour=blue", "--arg", "size=9"]);
    assert_eq!(a.call("args"), "colour=blue size=9");
    // A trap: the instance is rebuilt from its checkpoint, with the upgrade's arguments.
    assert!(a.try_call("panic").is_err(), "the connection whose event trapped is closed");
    let mut b = host.lines();
    assert_eq!(b.call("args"), "colour=blue size=9");
    tasuki_ok(dir.path(), &["upgrade", MISBEHAVE]);
    assert_eq!(b.call("args"), "colour=blue size=9");
}

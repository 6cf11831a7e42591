//! Catch-up upgrades: an app whose state cannot be pre-copied moves it whole, but only the
//! export pauses the loop. The new version imports on a thread of its own while the old one
//! serves, then runs the events since the export, its replies compared with the old version's,
//! and takes over once it has caught up. The guarantees are a transfer in the pause's: every
//! acknowledged write is readable after, nothing deleted comes back, a failure rolls back.

use redis::Commands;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tasuki::UpgradeError;
use tasuki::upgrade::{StateSource, UpgradeOptions, UpgradeReport};
use tasuki_tests::keys::{Expected, change, check, load};
use tasuki_tests::{TestHost, artifacts};

/// kv 2.0.0 as built against the previous contract: no `precopy` export, so its state moves
/// whole.
const KV_V2_CONTRACT_0_1: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/contract-0.1/kv_v2.wasm");

const KEYS: usize = 100_000;

/// Sets, overwrites and deletes keys all over the keyspace until `stop`, recording every
/// acknowledged change.
fn writer(host: &TestHost, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Expected> {
    let mut client = host.client();
    std::thread::spawn(move || {
        let mut expected = Expected::new();
        let mut n: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            change(&mut client, n, KEYS, &mut expected);
        }
        expected
    })
}

/// Loads the keys, upgrades with `options` while a writer writes, and checks every key after.
fn upgrade_under_writes(
    host: &TestHost,
    wasm: &str,
    options: &UpgradeOptions,
) -> Result<UpgradeReport, UpgradeError> {
    let mut client = host.client();
    load(&mut client, KEYS);
    let stop = Arc::new(AtomicBool::new(false));
    let writing = writer(host, Arc::clone(&stop));
    let upgraded = host.host_upgrade_with(wasm, options);
    stop.store(true, Ordering::Relaxed);
    let expected = writing.join().unwrap();
    check(&mut client, KEYS, &expected);
    upgraded
}

/// Why the catch-up of `report`'s upgrade was given up; fails the test if none was tried or
/// it was not given up.
fn abandoned_because(report: &UpgradeReport) -> &str {
    let catch_up = report.catch_up.as_ref().expect("a catch-up was tried");
    catch_up.abandoned.as_deref().expect("and abandoned")
}

fn through_v2_to_v3() -> UpgradeOptions {
    UpgradeOptions { transforms: vec![artifacts::KV_V2_TO_V3.into()], ..UpgradeOptions::default() }
}

#[test]
fn a_whole_state_is_imported_off_the_loop_and_the_new_version_catches_up_with_the_writes() {
    // Recovery off: no checkpoint to rebuild a replica from, so the old version exports in
    // the pause.
    let host = TestHost::with(tasuki::HostConfig {
        app: KV_V2_CONTRACT_0_1.into(),
        limits: tasuki::limits::Limits { journal: 0, ..tasuki::limits::Limits::default() },
        ..tasuki::HostConfig::default()
    });
    // Through a transformer, which runs off the loop too.
    let report = upgrade_under_writes(&host, artifacts::KV_V3, &through_v2_to_v3()).unwrap();
    assert_eq!(report.source, StateSource::Export, "{report}");
    assert!(report.precopy.is_none(), "nothing to pre-copy from: {report}");
    let catch_up = report.catch_up.as_ref().expect("the import ran off the loop");
    assert_eq!(catch_up.abandoned, None, "{report}");
    assert!(catch_up.events > 0, "the old version served writes during the import: {report}");
    assert!(catch_up.bytes_compared > 0, "their replies were compared: {report}");
    assert_eq!(report.transformers, ["kv-v2-to-v3"]);
    assert!(report.to_string().contains("caught up    the new version ran the"), "{report}");
    assert_eq!(host.status().app.to_string(), "kv 3.0.0");
    // It serves as kv 3: a command kv 2 did not have.
    let mut client = host.client();
    let _: () = client.rpush("list", "x").unwrap();
}

#[test]
fn the_same_release_catches_up_from_the_checkpoint_and_the_journal_with_no_export() {
    let host = contract_0_1_with_a_checkpoint();
    let report = upgrade_under_writes(&host, KV_V2_CONTRACT_0_1, &UpgradeOptions::default())
        .expect("upgrade");
    let StateSource::Checkpoint { events_replayed, complete, .. } = report.source else {
        panic!("the same component, same arguments: the journal, not an export: {report}");
    };
    assert!(events_replayed > 0 && complete, "{report}");
    let catch_up = report.catch_up.as_ref().expect("caught up");
    assert_eq!(catch_up.abandoned, None, "{report}");
    assert!(catch_up.events > 0, "the old version served writes meanwhile: {report}");
    assert!(report.to_string().contains("no export: the journal copied"), "{report}");
    // The new instance holds the journal: a trap now is recovered with every key.
    assert!(host.status().recovery.off.is_none());
}

/// A host running kv 2 built against the previous contract (it cannot pre-copy) with
/// [`KEYS`] keys and a checkpoint taken; keys changed after it are in the journal only.
fn contract_0_1_with_a_checkpoint() -> TestHost {
    let host = TestHost::start(KV_V2_CONTRACT_0_1);
    let mut client = host.client();
    load(&mut client, KEYS);
    // Each checkpoint is an export at one boundary: this release cannot pre-copy.
    while host.status().recovery.checkpoint.is_none() {
        load(&mut client, KEYS);
    }
    host
}

#[test]
fn another_component_takes_the_state_from_a_replica_with_no_export_in_the_pause() {
    let host = contract_0_1_with_a_checkpoint();
    // kv 3 through a transformer: another component, so the journal cannot be replayed into
    // it; a replica of the running kv 2, rebuilt from the checkpoint and the journal off the
    // loop, exports for it instead. Every key is checked after.
    let report = upgrade_under_writes(&host, artifacts::KV_V3, &through_v2_to_v3()).unwrap();
    let StateSource::Replica { events_replayed, rebuild, export, .. } = report.source else {
        panic!("a state over REPLICA_MIN with a checkpoint: a replica exports it: {report}");
    };
    assert!(events_replayed > 0, "keys changed after the checkpoint: {report}");
    assert!(rebuild > export && export > std::time::Duration::ZERO, "{report}");
    let catch_up = report.catch_up.as_ref().expect("caught up");
    assert_eq!(catch_up.abandoned, None, "{report}");
    assert!(catch_up.events > 0, "the old version served writes meanwhile: {report}");
    assert!(report.to_string().contains("a replica of the old version rebuilt"), "{report}");
    assert_eq!(host.status().app.to_string(), "kv 3.0.0");
    assert!(host.status().recovery.off.is_none());
}

#[test]
fn another_build_of_the_same_release_takes_the_state_from_a_replica_too() {
    let host = contract_0_1_with_a_checkpoint();
    // Today's build of kv 2 is another component: not the journal (its replies to events
    // before the boundary were never compared), but a replica.
    let report =
        upgrade_under_writes(&host, artifacts::KV_V2, &UpgradeOptions::default()).expect("upgrade");
    assert!(matches!(report.source, StateSource::Replica { .. }), "{report}");
    assert_eq!(report.catch_up.as_ref().expect("caught up").abandoned, None, "{report}");
}

/// A misbehave host holding more than `REPLICA_MIN` with a checkpoint taken: the next
/// upgrade to another component (or with other arguments) goes through a replica.
fn misbehave_with_a_checkpoint(args: &[&str]) -> Arc<TestHost> {
    let host = misbehave(args);
    let mut client = host.lines();
    // Over REPLICA_MIN, and more input than a checkpoint waits for (CHECKPOINT_MIN, 4 MiB).
    assert_eq!(client.call(&format!("set big {}", "v".repeat(5 << 20))), "ok");
    while host.status().recovery.checkpoint.is_none() {
        assert_eq!(client.call("set k v"), "ok");
    }
    host
}

#[test]
fn a_replica_replays_each_event_with_the_random_bytes_it_first_read() {
    let host = misbehave_with_a_checkpoint(&[]);
    let mut client = host.lines();
    // After the checkpoint: values made of `wasi:random` bytes, in the journal only. The
    // replica must draw the same bytes for each, or the state it exports is not the live one
    // (and no reply after the boundary would show it).
    let kept: Vec<String> = (0..20).map(|i| client.call(&format!("keep-random r{i}"))).collect();
    // Other arguments: not the journal's route into the new version, a replica's.
    let report = upgrade_misbehave_with(&host, Some(&["other"])).join().unwrap().expect("upgrade");
    assert!(matches!(report.source, StateSource::Replica { .. }), "{report}");
    assert_eq!(report.catch_up.as_ref().expect("caught up").abandoned, None, "{report}");
    for (i, value) in kept.iter().enumerate() {
        assert_eq!(&client.call(&format!("get r{i}")), value, "r{i}");
    }
    assert_eq!(client.call("args"), "other");
}

#[test]
fn a_replica_over_max_state_rolls_the_upgrade_back_and_the_old_version_serves_on() {
    // A checkpoint is not bounded by --max-state; an upgrade's state is.
    let host = Arc::new(TestHost::with(tasuki::HostConfig {
        app: artifacts::MISBEHAVE.into(),
        limits: tasuki::limits::Limits { max_state: 4 << 20, ..tasuki::limits::Limits::default() },
        ..tasuki::HostConfig::default()
    }));
    let mut client = host.lines();
    assert_eq!(client.call("set k v"), "ok");
    // Each request under the limit, the state over it.
    // (the input a connection may hold is half of --max-state).
    for i in 0..5 {
        assert_eq!(client.call(&format!("set big{i} {}", "v".repeat(1 << 20))), "ok");
    }
    while host.status().recovery.checkpoint.is_none() {
        assert_eq!(client.call("set k v"), "ok");
    }
    let error = upgrade_misbehave_with(&host, Some(&["other"])).join().unwrap().unwrap_err();
    assert!(matches!(error, UpgradeError::TooLarge { .. }), "{error}");
    assert_eq!(client.call("get k"), "v");
    assert_eq!(client.call("args"), "none", "the old version serves on");
}

#[test]
fn a_replica_that_fails_leaves_the_export_to_the_pause_with_nothing_lost() {
    // `trap-import`: any instance of this one's that imports traps — its replica, which
    // imports the checkpoint; the live instance was started by `init`.
    let host = misbehave_with_a_checkpoint(&["trap-import"]);
    let mut client = host.lines();
    assert_eq!(client.call("set k v2"), "ok");
    // The new version without `trap-import`: other arguments, so not the journal's route.
    let report = upgrade_misbehave_with(&host, Some(&[])).join().unwrap().expect("upgrade");
    let why = abandoned_because(&report);
    assert!(why.contains("the replica failed to import") && why.contains("trapped"), "{why}");
    assert_eq!(report.source, StateSource::Export, "the live instance exported: {report}");
    assert_eq!(client.call("args"), "none");
    assert_eq!(client.call("get k"), "v2");
    assert_eq!(client.call("get big").len(), 5 << 20);
}

#[test]
fn with_catch_up_off_the_import_is_inside_the_pause() {
    let host = TestHost::start(KV_V2_CONTRACT_0_1);
    let options = UpgradeOptions { no_catch_up: true, ..through_v2_to_v3() };
    let report = upgrade_under_writes(&host, artifacts::KV_V3, &options).unwrap();
    assert_eq!(report.catch_up, None, "{report}");
    assert!(report.pause >= report.import, "{report}");
}

#[test]
fn a_new_version_whose_replies_differ_during_the_catch_up_takes_the_state_in_the_pause() {
    // Through a replica (a checkpoint is taken first); on the export's route the same is shown
    // by `a_new_version_that_traps_on_a_kept_event_…`.
    let host = contract_0_1_with_a_checkpoint();
    // A client INCRs throughout: kv 3 built with INCR adding one too many answers otherwise
    // than the old version to the first INCR it runs again.
    let stop = Arc::new(AtomicBool::new(false));
    let incr = {
        let mut client = host.client();
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _: i64 = client.incr("counter", 1).unwrap();
            }
        })
    };
    let report = upgrade_under_writes(&host, artifacts::KV_V3_INCR_OFF_BY_ONE, &through_v2_to_v3());
    stop.store(true, Ordering::Relaxed);
    incr.join().unwrap();
    // Every key the writer wrote meanwhile was checked above: nothing lost on the way.
    let report = report.expect("the upgrade commits, moving the state in the pause");
    let why = abandoned_because(&report);
    assert!(why.contains("output differed"), "{why}");
    assert_eq!(report.source, StateSource::Export, "moved by an export in the pause: {report}");
    assert!(why.contains("INCR") || why.contains("incr"), "names the request: {why}");
    assert!(report.to_string().contains("catch-up     abandoned after"), "{report}");
    assert_eq!(host.status().app.to_string(), "kv 3.0.0");
}

#[test]
fn an_import_that_fails_off_the_loop_rolls_back_and_the_old_version_kept_every_write() {
    // kv 1 can pre-copy; --no-precopy moves its state whole, so it catches up.
    let host = TestHost::start(artifacts::KV_V1);
    let mut client = host.client();
    let _: () = client.set("big", "x".repeat(2000)).unwrap();
    let options = UpgradeOptions { no_precopy: true, ..UpgradeOptions::default() };
    let error = upgrade_under_writes(&host, artifacts::KV_REFUSES_IMPORT, &options).unwrap_err();
    let text = error.to_string();
    assert!(matches!(error, UpgradeError::Import { .. }), "{text}");
    assert!(text.contains("rolled back, kv 1.0.0 keeps serving"), "{text}");
    assert!(text.contains("values over 1 KiB are not supported"), "{text}");
    assert_eq!(host.status().app.to_string(), "kv 1.0.0");
    let big: String = client.get("big").unwrap();
    assert_eq!(big.len(), 2000);
    // A good upgrade still catches up afterwards.
    let report = host.host_upgrade_with(artifacts::KV_V2, &options).expect("upgrade");
    assert_eq!(report.catch_up.expect("caught up").abandoned, None);
}

#[test]
fn the_old_version_answers_while_the_new_one_imports_and_status_shows_it() {
    // The new version sleeps 2 s at the end of its import: the old one must serve meanwhile.
    let host = misbehave_importing_slowly(2000);
    let mut client = host.lines();
    assert_eq!(client.call("count"), "1");
    let upgrade = upgrade_misbehave(&host);
    let shown = until_importing(&host, &upgrade).to_string();
    assert!(shown.contains("importing the state off the loop"), "{shown}");
    // Answered now, by the old version, while the new one is still in its import.
    assert_eq!(client.call("count"), "1");
    let status = host.status();
    assert!(status.catch_up.is_some_and(|c| c.importing && c.kept >= 1), "the request was kept");
    let report = upgrade.join().unwrap().expect("upgrade");
    let catch_up = report.catch_up.expect("caught up");
    assert_eq!(catch_up.abandoned, None);
    assert!(catch_up.events >= 1, "{catch_up:?}");
    assert!(host.status().catch_up.is_none());
    assert_eq!(client.call("count"), "1", "the same connection, served by the new version");
}

/// Waits until `host` shows a catch-up importing off the loop, while `upgrade` still runs;
/// the status that showed it.
fn until_importing<T>(
    host: &TestHost,
    upgrade: &std::thread::JoinHandle<T>,
) -> tasuki::status::Status {
    loop {
        let status = host.status();
        if status.catch_up.as_ref().is_some_and(|c| c.importing) {
            return status;
        }
        assert!(!upgrade.is_finished(), "the upgrade ended before its import was seen");
        std::thread::yield_now();
    }
}

/// Asks `client` (of the `misbehave` fixture) which timers fired until it answers `fired`,
/// for at most 30 s.
fn until_fired(client: &mut tasuki_tests::LineClient, fired: &str) {
    let last = fired.rsplit(' ').next().unwrap_or(fired);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while client.call("fired") != fired {
        assert!(
            std::time::Instant::now() < deadline,
            "timer {last} never fired in the new version"
        );
        std::thread::yield_now();
    }
}

/// Upgrades the `misbehave` host to itself with its state moved whole, on a thread.
fn upgrade_misbehave(
    host: &Arc<TestHost>,
) -> std::thread::JoinHandle<Result<UpgradeReport, UpgradeError>> {
    upgrade_misbehave_with(host, None)
}

/// [`upgrade_misbehave`], the new version started with `args` (`tasuki upgrade --arg`).
fn upgrade_misbehave_with(
    host: &Arc<TestHost>,
    args: Option<&[&str]>,
) -> std::thread::JoinHandle<Result<UpgradeReport, UpgradeError>> {
    let host = Arc::clone(host);
    let args = args.map(|args| args.iter().map(|a| a.to_string()).collect());
    let options = UpgradeOptions { no_precopy: true, args, ..UpgradeOptions::default() };
    std::thread::spawn(move || host.host_upgrade_with(artifacts::MISBEHAVE, &options))
}

/// A host running `misbehave`, started with `args`.
fn misbehave(args: &[&str]) -> Arc<TestHost> {
    Arc::new(TestHost::with(tasuki::HostConfig {
        app: artifacts::MISBEHAVE.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        ..tasuki::HostConfig::default()
    }))
}

fn misbehave_importing_slowly(ms: u64) -> Arc<TestHost> {
    misbehave(&[&format!("slow-import={ms}")])
}

#[test]
fn timers_and_connections_during_the_import_are_caught_up_too() {
    let host = misbehave_importing_slowly(4000);
    let mut a = host.lines();
    let b = host.lines();
    assert_eq!(a.call("count"), "2");
    // Armed before the export; due a second later, while the new version imports (or, if the
    // upgrade is slow to start, before the export: then the check below still holds).
    assert_eq!(a.call("timer 1 1000"), "ok");
    let upgrade = upgrade_misbehave(&host);
    until_importing(&host, &upgrade);
    // A client connects and another leaves while the new version imports.
    let mut c = host.lines();
    let _ = b.stream.shutdown(std::net::Shutdown::Both);
    drop(b);
    while a.call("count") != "2" {}
    // The old version fires timer 1, then timer 2, armed during the import; timer 3 is due
    // long after the commit. The answers are kept, and the new version must give the same
    // once it runs these requests again.
    while a.call("fired") != "1" {}
    assert_eq!(a.call("timer 2 50"), "ok");
    assert_eq!(a.call("timer 3 7000"), "ok");
    while a.call("fired") != "1 2" {}
    assert_eq!(c.call("armed"), "3");
    assert!(
        host.status().catch_up.is_some_and(|up| up.importing),
        "the timers fired and the connections changed during the import"
    );
    let report = upgrade.join().unwrap().expect("upgrade");
    let catch_up = report.catch_up.as_ref().expect("caught up");
    assert_eq!(catch_up.abandoned, None, "{report}");
    // The new version holds the same: the timers fired, the connections, and timer 3, armed
    // in the old version after the export, fires in the new one.
    assert_eq!(a.call("count"), "2");
    assert_eq!(c.call("armed"), "3");
    until_fired(&mut c, "1 2 3");
    assert_eq!(c.call("armed"), "none");
}

/// Writes k1, upgrades with `args` (see [`upgrade_misbehave_with`]), writes k2 while the new
/// version imports, traps the old version (the culprit's connection closes and it is rebuilt),
/// writes k3; the catch-up must then be given up for the pause with every write kept. The
/// client that wrote, on the new version now.
fn trap_the_old_version_during_the_import(
    host: &Arc<TestHost>,
    args: Option<&[&str]>,
) -> tasuki_tests::LineClient {
    let mut a = host.lines();
    let mut culprit = host.lines();
    assert_eq!(a.call("set k1 v1"), "ok");
    let upgrade = upgrade_misbehave_with(host, args);
    until_importing(host, &upgrade);
    assert_eq!(a.call("set k2 v2"), "ok");
    culprit.expect_closed("panic");
    assert_eq!(a.call("set k3 v3"), "ok");
    let report = upgrade.join().unwrap().expect("the state moves in the pause instead");
    let why = abandoned_because(&report);
    assert!(why.contains("old version trapped"), "{why}");
    assert!(report.to_string().contains("catch-up     abandoned after"), "{report}");
    // Served by the new version, on the same connection, with every acknowledged write.
    for (key, value) in [("k1", "v1"), ("k2", "v2"), ("k3", "v3")] {
        assert_eq!(a.call(&format!("get {key}")), value);
    }
    a
}

#[test]
fn an_old_version_that_traps_during_the_import_abandons_the_catch_up_and_keeps_every_write() {
    let host = misbehave_importing_slowly(2000);
    let mut a = trap_the_old_version_during_the_import(&host, None);
    assert_eq!(a.call("count"), "1");
    assert!(host.status().catch_up.is_none());
}

#[test]
fn an_old_version_that_traps_while_its_replica_works_abandons_the_catch_up_too() {
    // The replica (started with the live arguments) and the new instance both import slowly;
    // other arguments for the new version make it the replica's route.
    let host = misbehave_with_a_checkpoint(&["slow-import=1500"]);
    let args = ["slow-import=1500", "other"];
    let mut a = trap_the_old_version_during_the_import(&host, Some(&args));
    assert_eq!(a.call("args"), "slow-import=1500 other");
}

#[test]
fn a_new_version_that_traps_on_a_kept_event_abandons_the_catch_up_with_nothing_lost() {
    // The new instance (and only it) traps on `set`, and imports slowly enough for the writes
    // below to be kept for it.
    let host = misbehave(&[]);
    let mut a = host.lines();
    assert_eq!(a.call("set k1 v1"), "ok");
    let upgrade = upgrade_misbehave_with(&host, Some(&["slow-import=2000", "trap-on=set"]));
    until_importing(&host, &upgrade);
    // The old version answers; the new one will trap running this again.
    assert_eq!(a.call("set k2 v2"), "ok");
    assert_eq!(a.call("get k2"), "v2");
    let report = upgrade.join().unwrap().expect("the state moves in the pause instead");
    let why = abandoned_because(&report);
    assert!(why.contains("the new version failed at data: trapped"), "{why}");
    // The new version holds every acknowledged write, on the same connection (it has its
    // arguments: it still traps on `set`, and `args` says so).
    assert_eq!(a.call("get k1"), "v1");
    assert_eq!(a.call("get k2"), "v2");
    assert_eq!(a.call("count"), "1");
    assert_eq!(a.call("args"), "slow-import=2000 trap-on=set");
    assert!(host.status().catch_up.is_none());
}

#[test]
fn the_import_off_the_loop_reads_the_clock_of_the_export_whatever_the_loop_runs_meanwhile() {
    let host = misbehave(&[]);
    let mut a = host.lines();
    let upgrade = upgrade_misbehave_with(&host, Some(&["slow-import=1500", "note-import"]));
    until_importing(&host, &upgrade);
    // Events the old version runs while the new one sleeps in its import, the last one read
    // at a later millisecond than the export (the first is at or after it).
    let first: u64 = a.call("now").parse().unwrap();
    let later = loop {
        let now: u64 = a.call("now").parse().unwrap();
        if now > first {
            break now;
        }
    };
    assert!(host.status().catch_up.is_some_and(|c| c.importing), "still importing");
    let report = upgrade.join().unwrap().expect("upgrade");
    assert_eq!(report.catch_up.as_ref().expect("caught up").abandoned, None, "{report}");
    // The import, done after those events, read the clock of the boundary it started from
    // (an import at the boundary reads the same), not the loop's clock of the moment.
    let clock: u64 = a.call("get import-clock").parse().unwrap();
    assert!(clock <= first, "the import read {clock}, the export was at or before {first}");
    assert!(clock < later);
    assert_eq!(a.call("get import-random").len(), 32);
}

#[test]
fn clients_that_quit_during_the_catch_up_are_closed_alike_by_both_versions() {
    let host = TestHost::start(KV_V2_CONTRACT_0_1);
    // Clients come, QUIT (the old version closes them) and go throughout the upgrade: the
    // new version closes them too when it runs those events again.
    let stop = Arc::new(AtomicBool::new(false));
    let quitter = {
        let stop = Arc::clone(&stop);
        let address = host.raw().peer_addr().unwrap();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut quits = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut stream = std::net::TcpStream::connect(address).unwrap();
                stream.write_all(b"*1\r\n$4\r\nQUIT\r\n").unwrap();
                let mut reply = Vec::new();
                stream.read_to_end(&mut reply).unwrap();
                assert_eq!(reply, b"+OK\r\n");
                quits += 1;
            }
            quits
        })
    };
    let report = upgrade_under_writes(&host, artifacts::KV_V3, &through_v2_to_v3());
    stop.store(true, Ordering::Relaxed);
    assert!(quitter.join().unwrap() > 0);
    let report = report.expect("upgrade");
    let catch_up = report.catch_up.as_ref().expect("the import ran off the loop");
    assert_eq!(catch_up.abandoned, None, "{report}");
    assert_eq!(host.status().app.to_string(), "kv 3.0.0");
}

#[test]
fn a_timer_the_new_version_arms_in_its_import_fires_after_the_catch_up() {
    // `resumed` arms timer 9 in the instance that imports; the old version never armed it.
    let host = misbehave(&["slow-import=500", "resume-timer=9:100"]);
    let mut client = host.lines();
    assert_eq!(client.call("set k v"), "ok");
    let report = upgrade_misbehave(&host).join().unwrap().expect("upgrade");
    assert_eq!(report.catch_up.as_ref().expect("caught up").abandoned, None, "{report}");
    until_fired(&mut client, "9");
    assert_eq!(client.call("get k"), "v");
}

#[test]
fn a_timer_the_import_arms_fires_after_a_catch_up_from_the_journal_too() {
    // `resumed` arms timer 9 in whichever instance imports: here the checkpoint, replayed
    // with the journal (the same component, same arguments), as a rebuild would.
    let host = misbehave(&["resume-timer=9:100"]);
    let mut client = host.lines();
    // More input than a checkpoint waits for (CHECKPOINT_MIN, 4 MiB), so that there is one.
    assert_eq!(client.call(&format!("set big {}", "v".repeat(5 << 20))), "ok");
    while host.status().recovery.checkpoint.is_none() {
        assert_eq!(client.call("set k v"), "ok");
    }
    assert_eq!(client.call("set k v2"), "ok");
    let report = upgrade_misbehave(&host).join().unwrap().expect("upgrade");
    assert!(matches!(report.source, StateSource::Checkpoint { .. }), "{report}");
    assert_eq!(report.catch_up.as_ref().expect("caught up").abandoned, None, "{report}");
    until_fired(&mut client, "9");
    assert_eq!(client.call("get k"), "v2");
    assert_eq!(client.call("get big").len(), 5 << 20);
}

#[test]
fn a_host_stopped_while_the_new_version_imports_stops_and_rolls_the_upgrade_back() {
    let host = misbehave_importing_slowly(6000);
    let host = Arc::try_unwrap(host).expect("one owner");
    let mut client = host.lines();
    assert_eq!(client.call("set k v"), "ok");
    let control = host.control.clone();
    let upgrade = std::thread::spawn(move || {
        let request = tasuki::control::Request::Upgrade {
            wasm: artifacts::MISBEHAVE.into(),
            options: UpgradeOptions { no_precopy: true, ..UpgradeOptions::default() },
        };
        tasuki::control::request(&control, &request)
    });
    until_importing(&host, &upgrade);
    let stopping = std::time::Instant::now();
    drop(host);
    // The loop does not wait for the import (6 s) to stop.
    let took = stopping.elapsed();
    assert!(took < std::time::Duration::from_secs(4), "stopping took {took:?}");
    let answer = upgrade.join().unwrap();
    assert!(
        !matches!(answer, Ok(tasuki::control::Response::Upgraded(_))),
        "the upgrade did not commit: {answer:?}"
    );
}

#[test]
fn events_kept_past_their_bound_abandon_the_catch_up_for_the_pause_with_nothing_lost() {
    let host = misbehave_importing_slowly(4000);
    let mut a = host.lines();
    assert_eq!(a.call("set k1 v1"), "ok");
    let upgrade = upgrade_misbehave(&host);
    until_importing(&host, &upgrade);
    // One event whose output alone is past the kept events' bound (64 MiB).
    let mib = (tasuki::catchup::KEPT_MAX >> 20) + 1;
    let reply = a.call(&format!("flood {mib}"));
    assert_eq!(reply.len(), (mib << 20) + 2, "the old version sent it all");
    assert!(reply.ends_with("ok"));
    assert_eq!(a.call("set k2 v2"), "ok");
    assert!(host.status().catch_up.is_some_and(|c| c.importing), "all during the import");
    let report = upgrade.join().unwrap().expect("the state moves in the pause instead");
    let why = abandoned_because(&report);
    assert!(why.contains("outgrew 64 MiB"), "{why}");
    assert_eq!(a.call("get k1"), "v1");
    assert_eq!(a.call("get k2"), "v2");
}

#[test]
fn an_abandoned_catch_up_counts_the_fresh_instance_it_starts_on_the_loop_in_the_pause() {
    // The fresh instance of the new version is started (1 s in its `init`) on the loop, then
    // imports (1.5 s): clients wait for both, and the report's pause must say so.
    let host = misbehave(&["slow-init=1000", "slow-import=1500"]);
    let mut culprit = host.lines();
    let upgrade = upgrade_misbehave(&host);
    until_importing(&host, &upgrade);
    culprit.expect_closed("panic");
    let report = upgrade.join().unwrap().expect("the state moves in the pause instead");
    assert!(report.catch_up.as_ref().and_then(|c| c.abandoned.as_ref()).is_some(), "{report}");
    let loop_stopped = std::time::Duration::from_millis(1000 + 1500);
    assert!(report.pause >= loop_stopped, "{report}");
}

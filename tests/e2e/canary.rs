//! Canary upgrades (`tasuki upgrade --canary`): the new version runs beside the old one on live
//! traffic, its replies compared and never sent, and takes over only if every byte agreed.

use redis::Commands;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;
use tasuki::UpgradeError;
use tasuki::canary::Window;
use tasuki::upgrade::UpgradeOptions;
use tasuki_tests::{TestHost, artifacts};

/// Clients that INCR counters of their own, one request at a time, and check every reply
/// against their own count: a reply the old version would not have given fails them.
struct Counters {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<Result<u64, String>>>,
}

impl Counters {
    fn start(host: &TestHost, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicU64::new(0));
        let threads = (0..clients)
            .map(|i| {
                let mut conn = host.client();
                let stop = Arc::clone(&stop);
                let acknowledged = Arc::clone(&acknowledged);
                thread::spawn(move || {
                    let key = format!("canary:counter:{i}");
                    let mut expected = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let got: u64 = conn.incr(&key, 1).map_err(|e| e.to_string())?;
                        expected += 1;
                        if got != expected {
                            return Err(format!("{key}: INCR answered {got}, expected {expected}"));
                        }
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(expected)
                })
            })
            .collect();
        Self { stop, acknowledged, threads }
    }

    /// Waits until the clients have had `n` more replies.
    fn wait_for(&self, n: u64) {
        let target = self.acknowledged.load(Ordering::Relaxed) + n;
        while self.acknowledged.load(Ordering::Relaxed) < target {
            assert!(self.threads.iter().all(|t| !t.is_finished()), "a client stopped early");
            thread::yield_now();
        }
    }

    /// Stops the clients; each one's count, or the first wrong reply any of them saw.
    fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| t.join().expect("client thread").unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }
}

fn v2_with_keys(keys: usize) -> TestHost {
    let host = TestHost::start(artifacts::KV_V2);
    let mut conn = host.client();
    for chunk in (0..keys).collect::<Vec<_>>().chunks(500) {
        let pairs: Vec<(String, String)> =
            chunk.iter().map(|i| (format!("key:{i}"), format!("value-{i}"))).collect();
        let () = conn.mset(&pairs).unwrap();
    }
    host
}

fn to_v3(canary: Window) -> UpgradeOptions {
    UpgradeOptions {
        transforms: vec![artifacts::KV_V2_TO_V3.into()],
        canary: Some(canary),
        ..UpgradeOptions::default()
    }
}

fn every_key_readable(host: &TestHost, keys: usize) {
    let mut conn = host.client();
    for i in 0..keys {
        let value: Option<String> = conn.get(format!("key:{i}")).unwrap();
        assert_eq!(value.as_deref(), Some(format!("value-{i}").as_str()), "key:{i}");
    }
}

#[test]
fn a_canary_that_agrees_commits_by_swapping_and_every_reply_and_key_is_kept() {
    const KEYS: usize = 5_000;
    const WINDOW: u64 = 3_000;
    let host = Arc::new(v2_with_keys(KEYS));
    let clients = Counters::start(&host, 3);
    clients.wait_for(100);

    let upgrading = {
        let host = Arc::clone(&host);
        thread::spawn(move || {
            host.host_upgrade_with(artifacts::KV_V3, &to_v3(Window::Events(WINDOW)))
        })
    };
    // While it runs, status shows it, and a second upgrade is refused.
    let progress = loop {
        if let Some(canary) = host.status().canary {
            break canary;
        }
        assert!(!upgrading.is_finished(), "the upgrade ended before its canary was seen");
        thread::yield_now();
    };
    assert_eq!(progress.to.to_string(), "kv 3.0.0");
    assert_eq!(progress.window, Window::Events(WINDOW));
    assert_eq!(
        host.status().app.to_string(),
        "kv 2.0.0",
        "the old version serves during the canary"
    );
    let second = host.upgrade(artifacts::KV_V2).unwrap_err();
    assert!(matches!(second, UpgradeError::InProgress), "{second}");

    let report = upgrading.join().unwrap().expect("the canary agreed and committed");
    let counts = clients.stop();

    let canary = report.canary.as_ref().expect("the report has the canary");
    assert!(canary.events >= WINDOW, "{report}");
    assert!(canary.bytes_compared > 0, "{report}");
    assert_eq!(report.to.to_string(), "kv 3.0.0");
    assert!(report.to_string().contains("committed by swapping instances"), "{report}");
    assert_eq!(host.status().app.to_string(), "kv 3.0.0");
    assert!(host.status().canary.is_none());
    // The new version holds every key and every acknowledged INCR, including those it ran as
    // the candidate.
    every_key_readable(&host, KEYS);
    let mut conn = host.client();
    for (i, count) in counts.iter().enumerate() {
        let value: u64 = conn.get(format!("canary:counter:{i}")).unwrap();
        assert_eq!(value, *count, "canary:counter:{i}");
    }
    // v3's own commands work: it is serving.
    let _: () = conn.rpush("canary:list", "x").unwrap();
}

#[test]
fn a_wrong_release_is_caught_by_its_canary_and_no_client_sees_its_replies() {
    const KEYS: usize = 2_000;
    let host = v2_with_keys(KEYS);
    let clients = Counters::start(&host, 2);
    clients.wait_for(100);

    // kv 3 built with INCR adding one too many: the canary must catch it before its window
    // ends (at once, with clients INCRing throughout; 20 s is only so that a canary that fails
    // to catch it fails the test soon).
    let saved = tempfile::tempdir().unwrap();
    let options = UpgradeOptions {
        divergence_dir: Some(saved.path().into()),
        ..to_v3(Window::Time(Duration::from_secs(20)))
    };
    let error = host.host_upgrade_with(artifacts::KV_V3_INCR_OFF_BY_ONE, &options).unwrap_err();
    clients.wait_for(100);
    let counts = clients.stop();

    let UpgradeError::Diverged { divergence, saved: Some(command), .. } = &error else {
        panic!("expected a divergence, saved, got: {error}");
    };
    // The report names the request and both replies: the old version's count and one more.
    let request = String::from_utf8_lossy(&divergence.request).to_string();
    assert!(request.contains("INCR") || request.contains("incr"), "{error}");
    let old = String::from_utf8_lossy(&divergence.old).to_string();
    let new = String::from_utf8_lossy(&divergence.new).to_string();
    let number = |s: &str| s.trim_start_matches(':').trim_end().parse::<i64>();
    let (old_n, new_n) = (number(&old).expect(&old), number(&new).expect(&new));
    assert_eq!(new_n, old_n + 1, "{error}");
    let text = error.to_string();
    assert!(text.starts_with("rolled back, kv 2.0.0 keeps serving"), "{text}");
    assert!(text.contains("no client saw its replies"), "{text}");

    // Saved as a test: the trace from the state the new version imported, with the old
    // version's replies as expectations, fails with the wrong release where the canary did,
    // and passes with the right one.
    assert!(text.contains(command.as_str()), "{text}");
    let file = |ext: &str| {
        let found = std::fs::read_dir(saved.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == ext));
        found.unwrap_or_else(|| panic!("no .{ext} saved"))
    };
    let (trace, snap) = (file("trace"), file("snap"));
    assert!(command.ends_with(&format!("--restore {}", snap.display())), "{command}");
    let replay = |app: &str| {
        let config = tasuki::sim::SimConfig {
            app: app.into(),
            restore: Some(snap.clone()),
            ..tasuki::sim::SimConfig::default()
        };
        let trace = tasuki::sim::trace::Trace::read(&trace).unwrap();
        let sim = tasuki::sim::Simulator::new(config).unwrap();
        sim.run(&trace, tasuki::sim::UpgradeAt::Never).unwrap()
    };
    let reproduced = replay(artifacts::KV_V3_INCR_OFF_BY_ONE);
    let failure =
        reproduced.baseline.as_ref().expect_err("the saved trace fails as the canary did");
    let old_reply = format!("\"{}\"", tasuki::sim::trace::escape(&divergence.old));
    assert_eq!(failure.expected.as_deref(), Some(old_reply.as_str()), "{reproduced}");
    let fixed = replay(artifacts::KV_V3);
    assert!(fixed.passed(), "{fixed}");

    // The old version serves on, with every key and every acknowledged INCR (the clients
    // checked each reply against their own count, so none saw the candidate's).
    assert_eq!(host.status().app.to_string(), "kv 2.0.0");
    assert!(host.status().canary.is_none());
    assert!(host.status().last_upgrade.expect("recorded").outcome.is_err());
    every_key_readable(&host, KEYS);
    let mut conn = host.client();
    for (i, count) in counts.iter().enumerate() {
        let value: u64 = conn.get(format!("canary:counter:{i}")).unwrap();
        assert_eq!(value, *count, "canary:counter:{i}");
    }
}

#[test]
fn a_time_window_ends_on_the_clock_with_no_traffic_at_all() {
    let host = v2_with_keys(100);
    let report = host
        .host_upgrade_with(artifacts::KV_V3, &to_v3(Window::Time(Duration::from_millis(300))))
        .expect("an idle canary agrees");
    let canary = report.canary.expect("canary report");
    assert_eq!(canary.events, 0);
    assert!(canary.took >= Duration::from_millis(300), "{canary:?}");
    every_key_readable(&host, 100);
}

#[test]
fn replies_that_depend_on_the_clock_and_on_random_picks_agree() {
    // kv 4's PTTL reads the clock, and RANDOMKEY and SPOP draw from a generator seeded by the
    // event (its clock reading, connection and command count): both versions run each event at
    // the same frozen clock reading, so they agree.
    let host = Arc::new(TestHost::start(artifacts::KV_V4));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let client = {
        let (mut conn, stop, sent) = (host.client(), Arc::clone(&stop), Arc::clone(&sent));
        thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = format!("ttl:{}", i % 50);
                let () = redis::cmd("SET")
                    .arg(&key)
                    .arg(i)
                    .arg("PX")
                    .arg(60_000)
                    .query(&mut conn)
                    .unwrap();
                let pttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
                assert!((0..=60_000).contains(&pttl), "PTTL {pttl}");
                let _: usize = redis::cmd("SADD").arg("set").arg(i % 200).query(&mut conn).unwrap();
                let _: Option<String> = redis::cmd("SPOP").arg("set").query(&mut conn).unwrap();
                let _: Option<String> = redis::cmd("RANDOMKEY").query(&mut conn).unwrap();
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while sent.load(Ordering::Relaxed) < 50 {
        thread::yield_now();
    }
    let options =
        UpgradeOptions { canary: Some(Window::Events(3_000)), ..UpgradeOptions::default() };
    let report = host.host_upgrade_with(artifacts::KV_V4, &options);
    stop.store(true, Ordering::Relaxed);
    client.join().expect("client");
    let report = report.expect("the canary agreed on clock- and randomness-dependent replies");
    assert!(report.canary.expect("canary report").events >= 3_000);
}

#[test]
fn replies_made_of_wasi_random_bytes_agree() {
    // The misbehave fixture answers `random` with 16 bytes of `wasi:random/random`: the
    // candidate is fed each event with the random stream the running version read.
    let host = Arc::new(TestHost::start(artifacts::MISBEHAVE));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let client = {
        let (mut lines, stop, sent) = (host.lines(), Arc::clone(&stop), Arc::clone(&sent));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(lines.call("random").len(), 32);
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while sent.load(Ordering::Relaxed) < 10 {
        thread::yield_now();
    }
    let options = UpgradeOptions { canary: Some(Window::Events(500)), ..UpgradeOptions::default() };
    let report = host.host_upgrade_with(artifacts::MISBEHAVE, &options);
    stop.store(true, Ordering::Relaxed);
    client.join().expect("client");
    let report = report.expect("the canary agreed on replies of random bytes");
    assert!(report.canary.expect("canary report").events >= 500);
}

#[test]
fn differences_the_new_release_declares_are_taken_as_agreeing_and_counted() {
    // kv 3 declares INFO (it names the release) and the commands kv 2 refused as unknown.
    let host = Arc::new(v2_with_keys(10));
    let mut conn = host.client();
    let upgrading = {
        let host = Arc::clone(&host);
        thread::spawn(move || host.host_upgrade_with(artifacts::KV_V3, &to_v3(Window::Events(6))))
    };
    while host.status().canary.is_none() {
        assert!(!upgrading.is_finished(), "the upgrade ended before its canary was seen");
        thread::yield_now();
    }
    // The old version answers every one of these; the candidate differs on INFO and on LPUSH.
    let info: String = redis::cmd("INFO").query(&mut conn).unwrap();
    assert!(info.contains("tasuki_version:2.0.0"), "{info}");
    let refused = redis::cmd("LPUSH").arg("l").arg("x").query::<i64>(&mut conn).unwrap_err();
    assert!(refused.to_string().contains("unknown command"), "{refused}");
    // Status counts them while the canary runs (4 of its 6 events are still to come).
    let started = std::time::Instant::now();
    loop {
        let progress = host.status().canary.expect("the canary still runs");
        if progress.declared_differences == 2 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "status shows {progress:?}");
        thread::yield_now();
    }
    for i in 0..4 {
        let () = conn.set(format!("k{i}"), i).unwrap();
    }
    let report = upgrading.join().unwrap().expect("declared differences do not fail the canary");
    let canary = report.canary.as_ref().expect("canary report");
    assert_eq!(canary.declared_differences, 2, "{canary:?}");
    assert!(report.to_string().contains("but for 2 differences the new release declares expected"));
}

#[test]
fn a_saved_divergence_replays_at_the_times_the_canary_ran_so_ttl_replies_match() {
    // A key with a deadline set before the canary: its PTTL during the canary depends on the
    // wall clock, which the saved trace must set as it was for each event.
    let host = Arc::new(v2_with_keys(10));
    let mut conn = host.client();
    let () = redis::cmd("SET").arg("ttl").arg("v").arg("PX").arg(600_000).query(&mut conn).unwrap();
    let saved = tempfile::tempdir().unwrap();
    let options = UpgradeOptions {
        divergence_dir: Some(saved.path().into()),
        ..to_v3(Window::Time(Duration::from_secs(60)))
    };
    let upgrading = {
        let host = Arc::clone(&host);
        thread::spawn(move || host.host_upgrade_with(artifacts::KV_V3_INCR_OFF_BY_ONE, &options))
    };
    while host.status().canary.is_none() {
        assert!(!upgrading.is_finished(), "the upgrade ended before its canary was seen");
        thread::yield_now();
    }
    for _ in 0..3 {
        let pttl: i64 = redis::cmd("PTTL").arg("ttl").query(&mut conn).unwrap();
        assert!((590_000..=600_000).contains(&pttl), "PTTL {pttl}");
        thread::sleep(Duration::from_millis(3)); // so that each PTTL reads another time
    }
    let _: i64 = conn.incr("counter", 1).unwrap();
    let error = upgrading.join().unwrap().unwrap_err();
    assert!(matches!(error, UpgradeError::Diverged { saved: Some(_), .. }), "{error}");

    let file = |ext: &str| {
        std::fs::read_dir(saved.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == ext))
            .unwrap_or_else(|| panic!("no .{ext} saved"))
    };
    let trace_file = file("trace");
    let text = std::fs::read_to_string(&trace_file).unwrap();
    assert!(text.matches("PTTL").count() >= 3, "{text}");
    let config = tasuki::sim::SimConfig {
        app: artifacts::KV_V3.into(),
        restore: Some(file("snap")),
        ..tasuki::sim::SimConfig::default()
    };
    let trace = tasuki::sim::trace::Trace::read(&trace_file).unwrap();
    let replayed = tasuki::sim::Simulator::new(config)
        .unwrap()
        .run(&trace, tasuki::sim::UpgradeAt::Never)
        .unwrap();
    // The right release passes it: every PTTL the old version answered is answered alike.
    assert!(replayed.passed(), "{replayed}\n{text}");
}

#[test]
fn the_candidate_hears_of_connections_opened_during_the_canary_and_fires_its_timers_in_step() {
    // The misbehave fixture answers `count` with the connections it was told of and `fired`
    // with the timers that fired, in order: a candidate that missed a connect, or whose timers
    // never armed or fired, answers differently.
    let host = Arc::new(TestHost::start(artifacts::MISBEHAVE));
    let mut lines = host.lines();
    assert_eq!(lines.call("fired"), "none");
    let upgrading = {
        let host = Arc::clone(&host);
        let options = UpgradeOptions {
            canary: Some(Window::Time(Duration::from_secs(2))),
            ..UpgradeOptions::default()
        };
        thread::spawn(move || host.host_upgrade_with(artifacts::MISBEHAVE, &options))
    };
    while host.status().canary.is_none() {
        assert!(!upgrading.is_finished(), "the upgrade ended before its canary was seen");
        thread::yield_now();
    }
    let mut late = host.lines();
    assert_eq!(late.call("count"), "2");
    assert_eq!(lines.call("timer 7 20"), "ok");
    // Until the old version's timer fired: each `fired` runs in the candidate too.
    while lines.call("fired") != "7" {
        if upgrading.is_finished() {
            panic!("the canary ended early: {:?}", upgrading.join().unwrap());
        }
    }
    let report = upgrading.join().unwrap().expect("the candidate agreed");
    let canary = report.canary.expect("canary report");
    assert_eq!(canary.timers, 1, "{canary:?}");
    // The candidate took over with its own timers.
    assert_eq!(late.call("timer 8 10"), "ok");
    let started = std::time::Instant::now();
    while lines.call("fired") != "7 8" {
        assert!(started.elapsed() < Duration::from_secs(10), "timer 8 never fired");
    }
    assert_eq!(host.status().app.to_string(), report.to.to_string());
}

#[test]
fn a_candidate_silent_where_the_old_version_replied_is_reported_with_the_request() {
    // The fixture answers ECHO with nothing: no byte differs, the candidate only falls behind,
    // which a byte-stream comparison can tell only when the window ends. The report still
    // names the request after which it fell behind.
    let host = Arc::new(v2_with_keys(10));
    let mut conn = host.client();
    let upgrading = {
        let host = Arc::clone(&host);
        thread::spawn(move || {
            host.host_upgrade_with(artifacts::KV_V3_INCR_OFF_BY_ONE, &to_v3(Window::Events(4)))
        })
    };
    while host.status().canary.is_none() {
        assert!(!upgrading.is_finished(), "the upgrade ended before its canary was seen");
        thread::yield_now();
    }
    let () = conn.set("a", 1).unwrap();
    let echoed: String = redis::cmd("ECHO").arg("hello").query(&mut conn).unwrap();
    assert_eq!(echoed, "hello", "the old version answers");
    // Nothing more on that connection (a next reply there would differ byte for byte): the
    // window's last two events come from another.
    let mut other = host.client();
    for _ in 0..2 {
        let _: Option<String> = other.get("a").unwrap();
    }
    let error = upgrading.join().unwrap().unwrap_err();
    let UpgradeError::Diverged { divergence, .. } = &error else {
        panic!("expected a divergence, got: {error}");
    };
    let request = String::from_utf8_lossy(&divergence.request).to_string();
    assert!(request.contains("ECHO") && request.contains("hello"), "{error}");
    assert!(divergence.new.is_empty(), "{error}");
    assert!(String::from_utf8_lossy(&divergence.old).starts_with("$5\r\nhello"), "{error}");
    assert_eq!(host.status().app.to_string(), "kv 2.0.0");
}

#[test]
fn the_arguments_a_canary_commits_are_the_ones_a_rebuild_starts_the_new_version_with() {
    let host = Arc::new(TestHost::with(tasuki::HostConfig {
        app: artifacts::MISBEHAVE.into(),
        args: vec!["first".into()],
        ..tasuki::HostConfig::default()
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (mut lines, stop) = (host.lines(), Arc::clone(&stop));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(lines.call("set k v"), "ok");
            }
        })
    };
    let options = UpgradeOptions {
        canary: Some(Window::Events(50)),
        args: Some(vec!["second".into()]),
        ..UpgradeOptions::default()
    };
    let report = host.host_upgrade_with(artifacts::MISBEHAVE, &options);
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    report.expect("the canary agreed");
    assert_eq!(host.lines().call("args"), "second");
    // A trap: the instance is rebuilt from the journal, started with the arguments it runs with.
    host.lines().expect_closed("panic");
    let mut client = host.lines();
    assert_eq!(client.call("get k"), "v");
    assert_eq!(client.call("args"), "second", "the rebuilt instance's arguments");
}

//! The deterministic simulator: the KV traces in tests/traces run with an upgrade at every event
//! boundary, and a deliberately faulty transformer is caught at exactly the boundaries where
//! its bug shows.

use std::path::{Path, PathBuf};
use std::time::Instant;
use tasuki::sim::trace::Trace;
use tasuki::sim::{Report, SimConfig, Simulator, Target, UpgradeAt};
use tasuki_tests::artifacts;

fn trace(name: &str) -> Trace {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("traces").join(name);
    Trace::read(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// A simulator of `app` upgrading to `to` through `transforms`, checking recovery at every
/// boundary too when `rebuild` is set.
fn simulator(app: &str, to: &str, transforms: &[&str], rebuild: bool) -> Simulator {
    Simulator::new(SimConfig {
        app: app.into(),
        upgrade: Some(Target {
            wasm: to.into(),
            transforms: transforms.iter().map(PathBuf::from).collect(),
        }),
        rebuild_every_boundary: rebuild,
        ..SimConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn simulate(app: &str, to: &str, transforms: &[&str], trace: &Trace, at: UpgradeAt) -> Report {
    simulator(app, to, transforms, false).run(trace, at).unwrap_or_else(|e| panic!("{e}"))
}

fn every(app: &str, to: &str, transforms: &[&str], name: &str) -> Report {
    let t = trace(name);
    let report = simulate(app, to, transforms, &t, UpgradeAt::Every);
    println!("{report}");
    report
}

#[test]
fn kv_basics_hold_with_an_upgrade_at_every_boundary_v1_to_v2() {
    let report = every(artifacts::KV_V1, artifacts::KV_V2, &[], "kv-basics.trace");
    assert!(report.passed(), "{report}");
    assert_eq!(report.runs.len(), report.events + 1, "one run per boundary, 0..=events");
    assert_eq!(report.upgraded, report.runs.len(), "the upgrade committed in every run");
    assert!(report.events >= 15, "{report}");
}

#[test]
fn kv_basics_hold_from_v1_to_v3_through_transformers() {
    let report = every(
        artifacts::KV_V1,
        artifacts::KV_V3,
        &[artifacts::KV_V1_TO_V2, artifacts::KV_V2_TO_V3],
        "kv-basics.trace",
    );
    assert!(report.passed(), "{report}");
}

#[test]
fn expiry_holds_across_every_boundary_under_the_virtual_clock() {
    for (to, transforms) in
        [(artifacts::KV_V2, vec![]), (artifacts::KV_V3, vec![artifacts::KV_V2_TO_V3])]
    {
        let report = every(artifacts::KV_V2, to, &transforms, "kv-expiry.trace");
        assert!(report.passed(), "{report}");
        // Two client events are not all: the expiry timer fired inside the `advance`s.
        assert!(report.events > trace("kv-expiry.trace").client_events(), "{report}");
    }
}

#[test]
fn every_boundary_mode_catches_a_faulty_transformer_exactly_where_it_bites() {
    let t = trace("kv-empty-values.trace");
    // The right transformer: fine everywhere.
    let good = simulate(
        artifacts::KV_V1,
        artifacts::KV_V2,
        &[artifacts::KV_V1_TO_V2],
        &t,
        UpgradeAt::Every,
    );
    assert!(good.passed(), "{good}");
    // Without an injected upgrade, and with the upgrade at the ends, the faulty one passes too...
    let faulty = [artifacts::FAULTY_TRANSFORM];
    let alone = Simulator::new(SimConfig { app: artifacts::KV_V1.into(), ..SimConfig::default() })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(alone.run(&t, UpgradeAt::Never).unwrap().passed());
    for at in [UpgradeAt::Boundary(0), UpgradeAt::Boundary(6)] {
        let report = simulate(artifacts::KV_V1, artifacts::KV_V2, &faulty, &t, at);
        assert!(report.passed(), "{at:?}: {report}");
    }
    // ...but every boundary finds the two where an empty value is held across the upgrade.
    let report = simulate(artifacts::KV_V1, artifacts::KV_V2, &faulty, &t, UpgradeAt::Every);
    println!("{report}");
    assert!(!report.passed());
    assert_eq!(report.failed_boundaries(), [3, 4]);
    let (boundary, line, failure) = report.first_failure().unwrap();
    assert_eq!((boundary, line), (3, 7), "after `send a ...SET empty...` on line 7");
    assert_eq!(failure.line, 12, "the `expect` of the empty value");
    assert_eq!(failure.expected.as_deref(), Some("\"$0\\r\\n\\r\\n\""));
    assert_eq!(failure.actual.as_deref(), Some("$-1\\r\\n"));
    // The single case reproduces on its own.
    let alone = simulate(artifacts::KV_V1, artifacts::KV_V2, &faulty, &t, UpgradeAt::Boundary(3));
    assert!(!alone.passed());
}

#[test]
fn the_same_trace_gives_the_same_result_every_run() {
    let t = trace("kv-empty-values.trace");
    let faulty = [artifacts::FAULTY_TRANSFORM];
    let first = simulate(artifacts::KV_V1, artifacts::KV_V2, &faulty, &t, UpgradeAt::Every);
    let second = simulate(artifacts::KV_V1, artifacts::KV_V2, &faulty, &t, UpgradeAt::Every);
    let outcomes =
        |r: &Report| r.runs.iter().map(|(b, l, res)| (*b, *l, res.clone())).collect::<Vec<_>>();
    assert_eq!(outcomes(&first), outcomes(&second));
}

#[test]
fn a_thousand_events_give_a_thousand_and_one_upgraded_runs() {
    let mut text = String::from("connect a\nconnect b\n");
    for i in 0..499 {
        text.push_str(&format!("send a \"SET k{i} {i}\\r\\n\"\nexpect a \"+OK\\r\\n\"\n"));
        text.push_str(&format!("send b \"INCR counter\\r\\n\"\nexpect b \":{}\\r\\n\"\n", i + 1));
    }
    let t = Trace::parse("generated", &text, Path::new(".")).unwrap();
    let started = Instant::now();
    let report = simulate(artifacts::KV_V1, artifacts::KV_V2, &[], &t, UpgradeAt::Every);
    assert!(report.passed(), "{report}");
    assert_eq!(report.events, 1000);
    assert_eq!(report.runs.len(), 1001);
    assert_eq!(report.upgraded, 1001, "each run upgraded at its boundary");
    // Measured, not asserted: bench/ reports the figure.
    println!("1,000 events, 1,001 upgrade points: {:.2} s", started.elapsed().as_secs_f64());
}

#[test]
fn traces_can_be_built_in_code_for_an_apps_own_cargo_tests() {
    let t = Trace::new("built")
        .connect("a")
        .send("a", "SET k v PX 100\r\n")
        .expect("a", "+OK\r\n")
        .advance(std::time::Duration::from_millis(50))
        .send("a", "PTTL k\r\n")
        .expect_match("a", r":50\r\n")
        .unwrap()
        .advance(std::time::Duration::from_millis(60))
        .send("a", "EXISTS k\r\n")
        .expect("a", ":0\r\n")
        .quiet("a")
        .close("a");
    let report = simulate(
        artifacts::KV_V2,
        artifacts::KV_V3,
        &[artifacts::KV_V2_TO_V3],
        &t,
        UpgradeAt::Every,
    );
    assert!(report.passed(), "{report}");
}

#[test]
fn a_trap_after_a_transformed_upgrade_keeps_every_key_at_every_boundary() {
    // The upgrade lands before the fault at boundaries 0..=7: recovery must rebuild kv v3 from
    // what v3 imported (after both transformers). Rebuilding from v1's export, which v3 does not
    // read, restarts v3 empty and the GETs after the fault fail.
    let report = every(
        artifacts::KV_V1,
        artifacts::KV_V3,
        &[artifacts::KV_V1_TO_V2, artifacts::KV_V2_TO_V3],
        "kv-trap-after-transform.trace",
    );
    assert!(report.passed(), "{report}");
    assert_eq!(report.runs.len(), report.events + 1);
    assert_eq!(report.upgraded, report.runs.len(), "every run upgraded: {report}");
    // And the same holds within one release, where the journal replays into the same version.
    let same = every(artifacts::KV_V2, artifacts::KV_V2, &[], "kv-trap-after-transform.trace");
    assert!(same.passed(), "{same}");
}

#[test]
fn the_simulator_refuses_what_tasuki_upgrade_refuses_with_the_same_message() {
    // kv v1 writes section `kv` version 1; the v2-to-v3 transformer reads version 2.
    let simulator = simulator(artifacts::KV_V1, artifacts::KV_V3, &[artifacts::KV_V2_TO_V3], false);
    let refused = simulator.run(&trace("kv-basics.trace"), UpgradeAt::Every).unwrap_err();
    let host = tasuki_tests::TestHost::start(artifacts::KV_V1);
    let options = tasuki::upgrade::UpgradeOptions {
        transforms: vec![artifacts::KV_V2_TO_V3.into()],
        ..Default::default()
    };
    let live = host.host_upgrade_with(artifacts::KV_V3, &options).unwrap_err();
    assert!(matches!(refused, tasuki::sim::SimError::Refused(_)), "{refused}");
    assert_eq!(refused.to_string(), live.to_string());
    assert!(live.to_string().contains("reads section `kv` version 2"), "{live}");
}

#[test]
fn an_upgrade_that_never_runs_fails_the_test() {
    let t = trace("kv-basics.trace");
    let simulator = simulator(artifacts::KV_V1, artifacts::KV_V2, &[], false);
    // Asked for an upgrade, told to place it nowhere: refused before anything runs.
    let never = simulator.run(&t, UpgradeAt::Never).unwrap_err();
    assert!(matches!(never, tasuki::sim::SimError::NoUpgrade), "{never}");
    // Placed past the last boundary: the run fails, naming why.
    let events = simulator.run(&t, UpgradeAt::Boundary(0)).unwrap().events;
    let past = simulator.run(&t, UpgradeAt::Boundary(events + 1)).unwrap();
    assert!(!past.passed(), "{past}");
    let (_, _, failure) = past.first_failure().unwrap();
    assert!(failure.message.contains("no upgrade ran"), "{failure}");
    assert_eq!(past.upgraded, 0);
    // At the last boundary it runs.
    let last = simulator.run(&t, UpgradeAt::Boundary(events)).unwrap();
    assert!(last.passed(), "{last}");
    assert_eq!(last.upgraded, 1);
}

#[test]
fn checkpoint_and_journal_are_the_live_state_at_every_boundary() {
    // At every boundary of every run, the live instance is replaced by a rebuild from its
    // checkpoint and journal — through the upgrade, the transformers and the fault — and every
    // expectation must still hold.
    let cases: [(&str, &str, &[&str], &str); 4] = [
        (artifacts::KV_V1, artifacts::KV_V2, &[], "kv-basics.trace"),
        (
            artifacts::KV_V1,
            artifacts::KV_V3,
            &[artifacts::KV_V1_TO_V2, artifacts::KV_V2_TO_V3],
            "kv-trap-after-transform.trace",
        ),
        (artifacts::KV_V2, artifacts::KV_V3, &[artifacts::KV_V2_TO_V3], "kv-expiry.trace"),
        (artifacts::KV_V2, artifacts::KV_V2, &[], "kv-expiry.trace"),
    ];
    for (app, to, transforms, name) in cases {
        let report =
            simulator(app, to, transforms, true).run(&trace(name), UpgradeAt::Every).unwrap();
        println!("{report}");
        assert!(report.passed(), "{name}: {report}");
        // One rebuild per boundary of each run: the baseline's and every upgraded run's.
        let boundaries = report.events + 1;
        assert!(report.rebuilds >= boundaries * (boundaries + 1), "{name}: {report}");
        // Timers survive every rebuild: the expiry timer still fires inside the `advance`s.
        assert!(
            report.events > trace(name).client_events() || !name.contains("expiry"),
            "{report}"
        );
    }
}

#[test]
fn a_trace_naming_a_missing_component_is_refused_before_it_runs() {
    let t = Trace::parse("t", "connect a\nupgrade no-such.wasm\n", Path::new("/nowhere")).unwrap();
    let simulator =
        Simulator::new(SimConfig { app: artifacts::KV_V1.into(), ..SimConfig::default() }).unwrap();
    let err = simulator.run(&t, UpgradeAt::Never).unwrap_err();
    assert!(matches!(err, tasuki::sim::SimError::Load(_)), "{err}");
    assert!(err.to_string().contains("no-such.wasm"), "{err}");
}

/// A trace of writes, overwrites, deletes, deadlines that pass (and the expiry timer that
/// removes them) and FLUSHALL, built from a seeded generator with a model of what kv answers,
/// ending with a read of every key. With a 32-byte pre-copy step, an upgrade placed at any
/// boundary crosses over dozens of steps, one between every two events, so these changes land
/// on entries already copied, not yet copied, and in between.
fn churn_trace(seed: u64) -> Trace {
    let mut rng = seed;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    // key -> (value, deadline in virtual ms)
    let mut model: std::collections::HashMap<u64, (String, Option<u64>)> = Default::default();
    let mut now = 0u64;
    let live = |model: &std::collections::HashMap<u64, (String, Option<u64>)>, k: u64, now: u64| {
        model.get(&k).filter(|(_, d)| d.is_none_or(|d| d > now)).map(|(v, _)| v.clone())
    };
    let mut t = Trace::new("churn").connect("a");
    for i in 0..160 {
        let k = next(24);
        match next(100) {
            0..=44 => {
                let value = format!("v{i}");
                t = t.send("a", format!("SET k{k} {value}\r\n")).expect("a", "+OK\r\n");
                model.insert(k, (value, None));
            }
            45..=59 => {
                let value = format!("x{i}");
                let px = 20 + next(200);
                t = t.send("a", format!("SET k{k} {value} PX {px}\r\n")).expect("a", "+OK\r\n");
                model.insert(k, (value, Some(now + px)));
            }
            60..=74 => {
                let existed = live(&model, k, now).is_some();
                model.remove(&k);
                t = t
                    .send("a", format!("DEL k{k}\r\n"))
                    .expect("a", format!(":{}\r\n", u8::from(existed)));
            }
            75..=84 => {
                let reply = match live(&model, k, now) {
                    Some(v) => format!("${}\r\n{v}\r\n", v.len()),
                    None => "$-1\r\n".to_string(),
                };
                t = t.send("a", format!("GET k{k}\r\n")).expect("a", reply);
            }
            85..=86 => {
                model.clear();
                t = t.send("a", "FLUSHALL\r\n").expect("a", "+OK\r\n");
            }
            _ => {
                let by = 10 + next(120);
                now += by;
                t = t.advance(std::time::Duration::from_millis(by));
            }
        }
    }
    for k in 0..24 {
        let reply = match live(&model, k, now) {
            Some(v) => format!("${}\r\n{v}\r\n", v.len()),
            None => "$-1\r\n".to_string(),
        };
        t = t.send("a", format!("GET k{k}\r\n")).expect("a", reply);
    }
    t.quiet("a").close("a")
}

#[test]
fn changes_interleaved_with_the_pre_copy_steps_all_reach_the_new_version() {
    for seed in [1, 7, 42] {
        let trace = churn_trace(seed);
        let simulator = Simulator::new(SimConfig {
            app: artifacts::KV_V2.into(),
            upgrade: Some(Target {
                wasm: artifacts::KV_V3.into(),
                transforms: vec![artifacts::KV_V2_TO_V3.into()],
            }),
            limits: tasuki::limits::Limits { precopy_chunk: 32, ..Default::default() },
            ..SimConfig::default()
        })
        .unwrap();
        let report = simulator.run(&trace, UpgradeAt::Every).unwrap();
        assert!(report.passed(), "seed {seed}: {report}");
        assert_eq!(report.upgraded, report.runs.len(), "every run upgraded: {report}");
        // The same, with every boundary also a rebuild from checkpoint and journal: the
        // checkpoint a pre-copied commit leaves (its chunks and snapshot) rebuilds the state.
        let simulator = Simulator::new(SimConfig {
            app: artifacts::KV_V2.into(),
            upgrade: Some(Target {
                wasm: artifacts::KV_V3.into(),
                transforms: vec![artifacts::KV_V2_TO_V3.into()],
            }),
            limits: tasuki::limits::Limits { precopy_chunk: 32, ..Default::default() },
            rebuild_every_boundary: true,
            ..SimConfig::default()
        })
        .unwrap();
        let report = simulator.run(&trace, UpgradeAt::Every).unwrap();
        assert!(report.passed(), "seed {seed}, rebuilding: {report}");
    }
}

/// misbehave's queue (a `tasuki_guest::List`) filled, then pushed to and shifted from at both
/// ends of a trace, with the model's replies, and read whole at the end.
fn queue_trace() -> Trace {
    let mut model: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut t = Trace::new("queue").connect("a").send("a", "fill 40\n").expect("a", "ok\n");
    model.extend((0..40).map(|i| format!("f{i}")));
    for i in 0..120u32 {
        if i % 3 == 2 {
            let got = model.pop_front().unwrap_or_else(|| "nil".into());
            t = t.send("a", "shift\n").expect("a", format!("{got}\n"));
        } else {
            t = t.send("a", format!("push p{i}\n")).expect("a", "ok\n");
            model.push_back(format!("p{i}"));
        }
    }
    let all: Vec<String> = model.into_iter().collect();
    t.send("a", "list\n").expect("a", format!("{}\n", all.join(","))).quiet("a").close("a")
}

#[test]
fn a_queue_changed_between_the_pre_copy_steps_arrives_whole_at_every_boundary() {
    let simulator = misbehave_to_itself(16);
    let report = simulator.run(&queue_trace(), UpgradeAt::Every).unwrap();
    assert!(report.passed(), "{report}");
    assert_eq!(report.upgraded, report.runs.len(), "every run upgraded: {report}");
}

/// The misbehave fixture upgraded to itself, pre-copied `chunk` bytes a step.
fn misbehave_to_itself(chunk: u64) -> Simulator {
    Simulator::new(SimConfig {
        app: artifacts::MISBEHAVE.into(),
        upgrade: Some(Target { wasm: artifacts::MISBEHAVE.into(), transforms: Vec::new() }),
        limits: tasuki::limits::Limits { precopy_chunk: chunk, ..Default::default() },
        ..SimConfig::default()
    })
    .unwrap()
}

/// 60 entries, then 150 events that each change the first 20 (already copied, once the
/// pre-copy has passed them) — or, without `changes`, read one — then a read of every entry.
fn outrun_trace(changes: bool) -> Trace {
    let mut values: Vec<String> = (0..60).map(|i| format!("v{i}")).collect();
    let mut t = Trace::new("outrun").connect("a");
    for (i, v) in values.iter().enumerate() {
        t = t.send("a", format!("set k{i} {v}\n")).expect("a", "ok\n");
    }
    for _ in 0..150 {
        if changes {
            t = t.send("a", "touch 20\n").expect("a", "ok 20\n");
            for v in values.iter_mut().take(20) {
                v.push('+');
            }
        } else {
            t = t.send("a", "get k0\n").expect("a", "v0\n");
        }
    }
    for (i, v) in values.iter().enumerate() {
        t = t.send("a", format!("get k{i}\n")).expect("a", format!("{v}\n"));
    }
    t.quiet("a").close("a")
}

#[test]
fn when_changes_outrun_the_copy_the_host_stops_iterating_and_says_so() {
    // One record per step (a 1-byte chunk) and one step per event, while each event changes
    // 20 entries: what is owed never shrinks for long, so the host stops iterating after its
    // bound and moves the rest in the pause; every entry must still read right after.
    let simulator = misbehave_to_itself(1);
    // Placed after the 60 SETs (61 events with the connect): the 150 touches follow.
    let report = simulator.run(&outrun_trace(true), UpgradeAt::Boundary(61)).unwrap();
    assert!(report.passed(), "{report}");
    let [(_, precopy)] = report.precopies.as_slice() else { panic!("one pre-copy: {report}") };
    assert!(!precopy.converged, "{precopy:?}");
    assert!(precopy.owed_at_pause > 0, "{precopy:?}");
    assert!(precopy.steps < 150, "stopped iterating before the trace ran out: {precopy:?}");
    // With reads instead of the changes, the same pre-copy converges.
    let quiet = simulator.run(&outrun_trace(false), UpgradeAt::Boundary(61)).unwrap();
    assert!(quiet.passed(), "{quiet}");
    let [(_, precopy)] = quiet.precopies.as_slice() else { panic!("one pre-copy: {quiet}") };
    assert!(precopy.converged, "{precopy:?}");
}

/// 60 entries, then 150 events that each add two new ones, then a read of every entry.
fn growing_trace() -> Trace {
    let mut t = Trace::new("growing").connect("a");
    for i in 0..60 {
        t = t.send("a", format!("set k{i} v{i}\n")).expect("a", "ok\n");
    }
    for i in 0..150 {
        t = t.send("a", format!("set n{i} a{i}\nset m{i} b{i}\n")).expect("a", "ok\nok\n");
    }
    for i in 0..60 {
        t = t.send("a", format!("get k{i}\n")).expect("a", format!("v{i}\n"));
    }
    for i in 0..150 {
        t = t.send("a", format!("get n{i}\nget m{i}\n")).expect("a", format!("a{i}\nb{i}\n"));
    }
    t.quiet("a").close("a")
}

#[test]
fn when_inserts_outrun_one_chunk_the_steps_grow_until_the_copy_catches_up() {
    // About one record per step at first (16 bytes), while every event adds two entries: a
    // copy that kept its step would never catch up and would leave the whole rest to the pause (as a checkpoint
    // of a store being loaded once left 176 MB to its cut). The steps grow instead, and the
    // pre-copy converges long before the trace runs out.
    let simulator = misbehave_to_itself(16);
    let report = simulator.run(&growing_trace(), UpgradeAt::Boundary(61)).unwrap();
    assert!(report.passed(), "{report}");
    let [(_, precopy)] = report.precopies.as_slice() else { panic!("one pre-copy: {report}") };
    assert!(precopy.converged, "{precopy:?}");
    assert!(precopy.steps < 100, "{precopy:?}");
}

/// Six events, the INCR fifth of them: the trace `canary_windows_end_at_every_boundary` runs.
fn incr_trace() -> Trace {
    Trace::new("canary")
        .connect("a")
        .send("a", "SET k 1\r\n")
        .expect("a", "+OK\r\n")
        .send("a", "GET k\r\n")
        .expect("a", "$1\r\n1\r\n")
        .send("a", "GET k\r\n")
        .expect("a", "$1\r\n1\r\n")
        .send("a", "GET k\r\n")
        .expect("a", "$1\r\n1\r\n")
        .send("a", "INCR n\r\n")
        .expect("a", ":1\r\n")
        .send("a", "GET k\r\n")
        .expect("a", "$1\r\n1\r\n")
}

fn canary_every(to: &str, window: u64) -> Report {
    Simulator::new(SimConfig {
        app: artifacts::KV_V2.into(),
        upgrade: Some(Target {
            wasm: to.into(),
            transforms: vec![PathBuf::from(artifacts::KV_V2_TO_V3)],
        }),
        canary: Some(window),
        // The whole state in the pause, so that the canary starts at the boundary itself
        // rather than after pre-copy steps spread over the next events.
        limits: tasuki::limits::Limits { precopy_chunk: 0, ..Default::default() },
        ..SimConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}"))
    .run(&incr_trace(), UpgradeAt::Every)
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn canary_windows_end_at_every_boundary_with_the_same_verdict_every_run() {
    // The right release agrees wherever its canary starts and ends.
    let right = canary_every(artifacts::KV_V3, 2);
    assert!(right.passed(), "{right}");
    assert_eq!(right.upgraded, right.runs.len(), "{right}");

    // The off-by-one release, with a canary of two events: started at boundary 4 or 5, its
    // window holds the INCR (event 6) and catches it; started earlier, its window ends before
    // the INCR, it commits, and the client gets its wrong reply; started later, the INCR ran
    // on the old version and nothing differs.
    let wrong = canary_every(artifacts::KV_V3_INCR_OFF_BY_ONE, 2);
    println!("{wrong}");
    let verdicts =
        |r: &Report| r.runs.iter().map(|(b, _, res)| (*b, res.clone())).collect::<Vec<_>>();
    for (boundary, result) in verdicts(&wrong) {
        match boundary {
            0..=3 => {
                let failure = result.expect_err("committed before the INCR: the client sees :2");
                assert_eq!(failure.actual.as_deref(), Some(":2\\r\\n"), "{failure:?}");
            }
            4 | 5 => {
                let failure = result.expect_err("the canary's window holds the INCR");
                assert!(
                    failure.message.contains("answered differently in the canary"),
                    "{failure:?}"
                );
                assert!(failure.message.contains("INCR"), "{failure:?}");
            }
            _ => assert!(result.is_ok(), "boundary {boundary}: {result:?}"),
        }
    }
    // The same verdicts, byte for byte, on another run.
    assert_eq!(verdicts(&wrong), verdicts(&canary_every(artifacts::KV_V3_INCR_OFF_BY_ONE, 2)));
}

#[test]
fn with_a_rebuild_at_every_boundary_a_pre_copied_upgrade_still_commits_where_it_was_placed() {
    // Enough state that the pre-copy takes many steps (64 bytes each), then a command only the
    // new version knows: answered only if the upgrade committed before it. A rebuild restarts a
    // pre-copy, so a rebuild at every boundary used to hold the upgrade off to the trace's end.
    let mut t = Trace::new("built").connect("a");
    for i in 0..20 {
        t = t.send("a", format!("SET key:{i} value-{i}\r\n")).expect("a", "+OK\r\n");
    }
    let t = t.send("a", "RPUSH list x\r\n").expect("a", ":1\r\n").close("a");
    let report = simulator(artifacts::KV_V2, artifacts::KV_V3, &[artifacts::KV_V2_TO_V3], true)
        .run(&t, UpgradeAt::Boundary(3))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.passed(), "{report}");
    assert!(report.upgraded >= 1, "{report}");
}

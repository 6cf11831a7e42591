//! Auto-converge: when clients write faster than a pre-copy or a checkpoint copies, the host
//! reads less of their input per round until the copy catches up, instead of leaving the whole
//! state to one call that stops every client (the pause of an upgrade, the cut of a checkpoint).
//! Each test floods the host with pipelined 1 KiB writes over a state the copy needs many steps
//! for, and checks that the copy converged and that every acknowledged write is readable.

use redis::Commands;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use tasuki::HostConfig;
use tasuki::limits::Limits;
use tasuki_tests::{TestHost, artifacts};

/// 20,000 keys of 1 KiB: about 20 MB of state.
const KEYS: usize = 20_000;
const VALUE: usize = 1000;
const WRITERS: usize = 3;
/// SETs per pipeline: 500 KB a write, more than a round reads from one connection.
const BATCH: usize = 500;

fn key(i: usize) -> String {
    format!("key:{i:08}")
}

fn value(tag: &str) -> String {
    format!("{tag}-{}", "x".repeat(VALUE - tag.len() - 1))
}

fn load(host: &TestHost) {
    let mut client = host.client();
    for batch in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &i in batch {
            pipe.cmd("SET").arg(key(i)).arg(value(&format!("loaded{i}"))).ignore();
        }
        pipe.query::<()>(&mut client).unwrap();
    }
}

/// Writers flooding the host with pipelined SETs, each over its own share of the keys (key
/// `i` belongs to writer `i % WRITERS`), until stopped.
struct Flood {
    stop: Arc<AtomicBool>,
    batches: Arc<AtomicU64>,
    writers: Vec<std::thread::JoinHandle<HashMap<usize, String>>>,
}

impl Flood {
    /// Starts the writers and returns once each has had a batch acknowledged.
    fn start(host: &TestHost) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let batches = Arc::new(AtomicU64::new(0));
        let started = Arc::new(Barrier::new(WRITERS + 1));
        let writers = (0..WRITERS)
            .map(|w| {
                let mut client = host.client();
                let (stop, batches, started) =
                    (Arc::clone(&stop), Arc::clone(&batches), Arc::clone(&started));
                std::thread::spawn(move || {
                    let mut acked = HashMap::new();
                    let mut n = 0usize;
                    let mut first = true;
                    while first || !stop.load(Ordering::Relaxed) {
                        let mut pipe = redis::pipe();
                        let mut sent = Vec::with_capacity(BATCH);
                        for _ in 0..BATCH {
                            n += 1;
                            // Spread over the writer's share, so writes hit entries already
                            // copied as well as entries not yet.
                            let i = (n * 7919 % (KEYS / WRITERS)) * WRITERS + w;
                            let v = value(&format!("w{w}n{n}"));
                            pipe.cmd("SET").arg(key(i)).arg(&v).ignore();
                            sent.push((i, v));
                        }
                        pipe.query::<()>(&mut client).unwrap();
                        acked.extend(sent);
                        batches.fetch_add(1, Ordering::Relaxed);
                        if first {
                            first = false;
                            started.wait();
                        }
                    }
                    acked
                })
            })
            .collect();
        started.wait();
        Self { stop, batches, writers }
    }

    fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Stops the writers and checks every key: as its writer last had it acknowledged, or as
    /// loaded.
    fn stop_and_check(self, host: &TestHost) {
        self.stop.store(true, Ordering::Relaxed);
        let mut expected: HashMap<usize, String> = HashMap::new();
        for writer in self.writers {
            expected.extend(writer.join().unwrap());
        }
        let mut client = host.client();
        let names: Vec<usize> = (0..KEYS).collect();
        for batch in names.chunks(2000) {
            let keys: Vec<String> = batch.iter().map(|&i| key(i)).collect();
            let values: Vec<Option<String>> = client.mget(&keys).unwrap();
            for (&i, got) in batch.iter().zip(values) {
                let want =
                    expected.get(&i).cloned().unwrap_or_else(|| value(&format!("loaded{i}")));
                assert_eq!(got.as_deref(), Some(want.as_str()), "key {}", key(i));
            }
        }
        let size: usize = redis::cmd("DBSIZE").query(&mut client).unwrap();
        assert_eq!(size, KEYS);
    }
}

#[test]
fn an_upgrade_under_a_write_flood_slows_the_writers_until_its_copy_converges() {
    // 16 KiB steps (at most 256 KiB once grown) against three connections that can each hand
    // the host 256 KiB a round: without a bound on input, what is owed stops shrinking and the
    // host stops iterating with most of the state left for the pause.
    let host = TestHost::with(HostConfig {
        app: artifacts::KV_V4.into(),
        limits: Limits { precopy_chunk: 16 << 10, ..Limits::default() },
        ..HostConfig::default()
    });
    load(&host);
    let flood = Flood::start(&host);
    let before = flood.batches();
    let report = host.upgrade(artifacts::KV_V4).expect("upgrade");
    let during = flood.batches() - before;
    let precopy = report.precopy.clone().expect("pre-copied");
    assert!(precopy.converged, "the copy caught up: {report}");
    assert!(precopy.throttled_rounds > 0, "the writers were slowed: {report}");
    assert!(
        precopy.paused_bytes < precopy.bytes / 20,
        "the pause moved only what changed since: {report}"
    );
    assert!(during > 0, "the writers were slowed, not stopped: no batch was acknowledged");
    flood.stop_and_check(&host);
}

#[test]
fn checkpoints_under_a_write_flood_slow_the_writers_until_their_copy_converges() {
    // An 8 MiB journal: a checkpoint is due after 4 MiB of input and must be cut by 6 MiB, so
    // a copy of the 20 MB state has 2 MiB of input to finish in — a few rounds of the flood.
    let host = TestHost::with(HostConfig {
        app: artifacts::KV_V4.into(),
        limits: Limits { journal: 8 << 20, ..Limits::default() },
        ..HostConfig::default()
    });
    load(&host);
    let before = host.status().recovery;
    let taken = before.checkpoints;
    let flood = Flood::start(&host);
    // Each batch is 500 KB of journal: wait for three checkpoints taken under the flood.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let last = loop {
        let recovery = host.status().recovery;
        if recovery.checkpoints >= taken + 3 {
            break recovery.last_checkpoint.expect("built from chunks");
        }
        assert!(
            std::time::Instant::now() < give_up,
            "no checkpoints under the flood: {recovery:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let state = last.bytes;
    assert!(state > (KEYS * VALUE) as u64, "{last:?}");
    // None of them stopped every client for a whole export (status counts those apart: the
    // last record above is only ever one built from chunks).
    let whole = host.status().recovery.whole_checkpoints;
    assert_eq!(whole, before.whole_checkpoints, "a checkpoint under the flood was exported whole");
    assert!(last.throttled_rounds > 0, "the writers were slowed: {last:?}");
    // What clients wait for is the cut: it moves what is still owed at one boundary. Whether
    // the copy got all the way down to a quarter chunk first (`converged`) depends on how the
    // writers and the steps share the machine; without the slowing the cut moves nearly the
    // whole state.
    assert!(last.cut_bytes < state / 20, "the cut moved only what changed since: {last:?}");
    flood.stop_and_check(&host);
    assert!(host.status().recovery.off.is_none(), "recovery stayed on");
}

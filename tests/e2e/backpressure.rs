//! Back-pressure: a server streams a payload of any size to a client that reads slowly, and the
//! host holds about one `--output-buffer` of it. What the guest may still send (its window) and
//! what is left of a stream are state: they cross an upgrade, a trap's recovery from the
//! checkpoint and journal, and the simulator's upgrade and rebuild at every event boundary.
//! A component built before back-pressure gets the host's limits alone.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tasuki::HostConfig;
use tasuki::limits::Limits;
use tasuki::sandbox::{Preopen, Sandbox};
use tasuki::sim::trace::Trace;
use tasuki::sim::{Report, SimConfig, Simulator, Target, UpgradeAt};
use tasuki::status::RecoveryOutcome;
use tasuki_tests::{TestHost, artifacts};

/// The output buffer of these tests: small, so that a payload of a few MiB takes many windows.
const OUTPUT_BUFFER: usize = 256 << 10;

fn host(app: &str) -> TestHost {
    TestHost::with(HostConfig {
        app: app.into(),
        limits: Limits { output_buffer: OUTPUT_BUFFER, ..Limits::default() },
        ..HostConfig::default()
    })
}

/// Byte `offset` of a generated payload (download's `GEN`, misbehave's `stream`).
fn generated(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// A client that reads what it is sent a piece at a time.
struct Reader {
    stream: BufReader<TcpStream>,
}

impl Reader {
    fn connect(host: &TestHost) -> Self {
        Self { stream: BufReader::with_capacity(64 << 10, host.raw()) }
    }

    fn send(&mut self, bytes: &str) {
        self.stream.get_mut().write_all(bytes.as_bytes()).unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stream.read_line(&mut line).unwrap();
        line
    }

    /// Reads bytes `from..from + len` of a generated payload and checks each one.
    fn payload(&mut self, from: u64, len: u64) {
        let mut buf = vec![0; 64 << 10];
        let mut at = from;
        while at < from + len {
            let n = (from + len - at).min(buf.len() as u64) as usize;
            self.stream
                .read_exact(&mut buf[..n])
                .unwrap_or_else(|e| panic!("byte {at} of the payload did not come: {e}"));
            for (i, &b) in buf[..n].iter().enumerate() {
                assert_eq!(b, generated(at + i as u64), "byte {} of the payload", at + i as u64);
            }
            at += n as u64;
        }
    }
}

/// Waits until the host shows a connection whose app waits for its client to read (the
/// guest spent its window and asked to be told): the event these tests act on.
fn wait_until_waiting(host: &TestHost) {
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    while host.status().output.waiting == 0 {
        assert!(std::time::Instant::now() < give_up, "no connection waits: {}", host.status());
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_stream_under_way_crosses_two_upgrades_and_arrives_whole() {
    const LEN: u64 = 64 << 20;
    let host = host(artifacts::DOWNLOAD);
    let mut client = Reader::connect(&host);
    client.send(&format!("GEN {LEN}\nSTATS\n"));
    assert_eq!(client.line(), format!("OK {LEN}\n"));

    let mut at = 0;
    for round in 0..2 {
        client.payload(at, 16 << 20);
        at += 16 << 20;
        // The guest has sent its window and waits for the client: the stream is under way.
        wait_until_waiting(&host);
        if round == 0 {
            // Held by the host while the guest waits, across both upgrades.
            client.send("STATS\n");
        }
        let report = host.upgrade(artifacts::DOWNLOAD).expect("upgrade mid-stream");
        assert!(
            report.sections.iter().any(|s| s.name == "tasuki.streams"),
            "the stream crossed: {report}"
        );
        assert_eq!(report.connections, 1);
    }
    client.payload(at, LEN - at);
    assert_eq!(client.line(), format!("1 {LEN}\n"), "STATS, answered after the payload");
    assert_eq!(client.line(), format!("1 {LEN}\n"), "the STATS the host held, answered next");

    let output = host.status().output;
    assert!(output.writable_calls >= LEN / OUTPUT_BUFFER as u64, "{output:?}");
    // One window and one piece of a stream over it at most, however large the payload.
    assert!(output.largest_queue <= 2 * OUTPUT_BUFFER as u64, "{output:?}");
    assert!(output.largest_call <= 2 * OUTPUT_BUFFER as u64, "{output:?}");
}

/// A file crosses an upgrade by path and offset: the new instance opens it again where the
/// old one stood (an open file is instance state that cannot cross).
#[test]
fn a_file_under_a_granted_directory_is_streamed_across_an_upgrade() {
    const LEN: u64 = 24 << 20;
    let dir = tempfile::tempdir().unwrap();
    let contents: Vec<u8> = (0..LEN).map(generated).collect();
    std::fs::write(dir.path().join("big.bin"), &contents).unwrap();
    let host = TestHost::with(HostConfig {
        app: artifacts::DOWNLOAD.into(),
        limits: Limits { output_buffer: OUTPUT_BUFFER, ..Limits::default() },
        sandbox: Sandbox {
            dirs: vec![Preopen { host: dir.path().into(), guest: "/data".into() }],
            env: vec![],
        },
        ..HostConfig::default()
    });
    let mut client = Reader::connect(&host);
    client.send("FILE /data/big.bin\n");
    assert_eq!(client.line(), format!("OK {LEN}\n"));
    client.payload(0, 8 << 20);
    wait_until_waiting(&host);
    let report = host.upgrade(artifacts::DOWNLOAD).expect("upgrade mid-file");
    assert!(report.sections.iter().any(|s| s.name == "tasuki.streams"), "{report}");
    client.payload(8 << 20, LEN - (8 << 20));
    client.send("FILE /etc/hostname\n");
    assert!(client.line().starts_with("ERR "), "nothing outside the granted directory");
}

#[test]
fn a_trap_mid_stream_is_recovered_and_the_stream_goes_on_from_where_it_stood() {
    const LEN: u64 = 32 << 20;
    let host = host(artifacts::MISBEHAVE);
    let mut keeper = host.lines();
    assert_eq!(keeper.call("set k v"), "ok");
    let mut client = Reader::connect(&host);
    client.send(&format!("stream {LEN}\n"));
    client.payload(0, 4 << 20);
    wait_until_waiting(&host);

    // Another connection traps the instance: it is rebuilt from its checkpoint and journal,
    // which replays every on-writable the stream had, with the window it had.
    let mut culprit = host.lines();
    culprit.expect_closed("panic");
    let give_up = std::time::Instant::now() + Duration::from_secs(30);
    while host.status().recovery.recoveries == 0 {
        assert!(std::time::Instant::now() < give_up, "no recovery: {}", host.status());
        std::thread::sleep(Duration::from_millis(5));
    }
    let last = host.status().recovery.last.expect("the recovery");
    match &last.outcome {
        // Replayed from the start: every on-writable the stream had is in the journal.
        RecoveryOutcome::Rebuilt { replayed, from_checkpoint: false, .. } => {
            assert!(*replayed > 10, "{last:?}")
        }
        other => panic!("{other:?}"),
    }

    client.payload(4 << 20, LEN - (4 << 20));
    assert_eq!(client.line(), format!("ok streamed {LEN}\n"));
    assert_eq!(keeper.call("get k"), "v");
}

/// kv (release 2.0.0) as built against the contract before back-pressure: it never asks to be
/// told when a connection can take more, and the host's limits alone bound what it queues.
#[test]
fn a_component_built_before_back_pressure_gets_the_hosts_limits_alone() {
    const GETS: usize = 200;
    let old = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/contract-0.1/kv_v2.wasm");
    let host = host(old);
    let mut client = host.raw();
    let value = "v".repeat(64 << 10);
    client.write_all(format!("SET big {value}\r\n").as_bytes()).unwrap();
    tasuki_tests::expect_bytes(&mut client, b"+OK\r\n");
    client.write_all(&b"GET big\r\n".repeat(GETS)).unwrap();
    let reply = format!("${}\r\n{value}\r\n", value.len());
    for _ in 0..GETS {
        tasuki_tests::expect_bytes(&mut client, reply.as_bytes());
    }
    let output = host.status().output;
    assert_eq!(output.writable_calls, 0, "{output:?}");
    assert!(output.largest_call > OUTPUT_BUFFER as u64, "a batch at once: {output:?}");
}

/// `trace` against `app` in the simulator with a 64 KiB output buffer, twice: with an upgrade
/// to the same release at every event boundary, and with a rebuild from checkpoint and journal
/// at every boundary (apart: a rebuild right after an upgrade replays the journal into the new
/// version, and would hide what the upgrade lost). Both must pass; the first report is given.
fn at_every_boundary(app: &str, trace: &Trace) -> Report {
    let config = |rebuild: bool| SimConfig {
        app: app.into(),
        upgrade: (!rebuild).then(|| Target { wasm: app.into(), transforms: vec![] }),
        limits: Limits { output_buffer: 64 << 10, ..Limits::default() },
        rebuild_every_boundary: rebuild,
        ..SimConfig::default()
    };
    let upgraded = Simulator::new(config(false)).unwrap().run(trace, UpgradeAt::Every).unwrap();
    assert!(upgraded.passed(), "{upgraded}");
    assert_eq!(upgraded.upgraded, upgraded.runs.len(), "{upgraded}");
    let rebuilt = Simulator::new(config(true)).unwrap().run(trace, UpgradeAt::Never).unwrap();
    assert!(rebuilt.passed(), "{rebuilt}");
    assert!(rebuilt.rebuilds > upgraded.events, "{rebuilt}");
    upgraded
}

/// The simulator: kv answers a pipeline whose replies are many windows long, with an upgrade
/// (and apart, a rebuild from checkpoint and journal) at every event boundary — among them the
/// boundaries between on-writable calls.
#[test]
fn a_pipeline_of_large_replies_holds_with_an_upgrade_or_a_rebuild_at_every_boundary() {
    let value = "x".repeat(4 << 10);
    let reply = format!("${}\r\n{value}\r\n", value.len());
    let trace = Trace::new("large replies")
        .connect("a")
        .send("a", format!("SET big {value}\r\n"))
        .expect("a", "+OK\r\n")
        .send("a", "GET big\r\n".repeat(200))
        .expect("a", reply.repeat(200))
        .send("a", "PING\r\n")
        .expect("a", "+PONG\r\n");
    let report = at_every_boundary(artifacts::KV_V4, &trace);
    // 800 KiB of replies at 64 KiB a window (and at most a slice's replies over it): the
    // on-writable calls are events, and their boundaries were tried too.
    assert!(report.events >= 4 + 8, "{} events", report.events);
}

#[test]
fn a_stream_holds_with_an_upgrade_or_a_rebuild_at_every_boundary() {
    const LEN: u64 = 1 << 20;
    let payload: Vec<u8> = (0..LEN).map(generated).collect();
    let trace = Trace::new("stream")
        .connect("a")
        .send("a", format!("GEN {LEN}\nSTATS\n"))
        .expect("a", format!("OK {LEN}\n"))
        .expect("a", payload)
        .expect("a", format!("1 {LEN}\n"))
        .close("a");
    let first = at_every_boundary(artifacts::DOWNLOAD, &trace);
    assert!(first.events > 16, "{} events", first.events);
    // Deterministic: the same trace gives the same boundaries and the same outcomes.
    let second = at_every_boundary(artifacts::DOWNLOAD, &trace);
    assert_eq!(first.runs, second.runs);
    assert_eq!(first.events, second.events);
}

//! One client's bulk input does not hold up the others: the host reads a connection for about
//! a millisecond a turn (`READ_TIME_BUDGET`, checked after each `on-data` call of up to
//! `READ_CHUNK` bytes) and once a turn, then serves the rest. A client loading keys while others query
//! them is what a user does on every restore.

use std::io::{BufRead, BufReader, Write};
use std::thread;
use tasuki::HostConfig;
use tasuki::limits::{Limits, READ_CHUNK};
use tasuki_tests::{LineClient, TestHost, artifacts};

/// Entries each of the loader's lines touches (`touch N` appends `+` to the first N values):
/// enough work that one call of `READ_CHUNK` bytes of such lines takes milliseconds, far more than
/// the time budget and than a test thread's scheduling delays.
const TOUCHED: usize = 1000;

/// Bytes of each of the loader's lines, padded (the fixture ignores words past the count), so
/// that the value the probe reads grows by few bytes a call and its reply is one write.
const LINE_BYTES: usize = 100;

/// Lines in one `on-data` call of held input (`READ_CHUNK`; a call can end mid-line).
const LINES_PER_CALL: usize = READ_CHUNK / LINE_BYTES + 1;

/// Lines the loader pipelines.
const LINES: usize = 20 * LINES_PER_CALL;

/// `--output-buffer`: small, so that the loader's input is held as soon as its first reply
/// (`flood`, more than the kernel's socket buffers take) backs up.
const OUTPUT_BUFFER: usize = 64 << 10;

/// MiB of the loader's first reply.
const FLOOD_MIB: usize = 16;

/// The first value's length: one byte to begin with and one more for each line run so far.
fn progress(probe: &mut LineClient) -> usize {
    probe.call("get k0").len()
}

/// A loader asks for a large reply and pipelines 20 calls' worth of lines behind it without
/// reading, so that the host holds its input (in memory: not bounded by a socket's buffer);
/// then it reads its replies, and the host hands the held input over while a probe asks for the first value
/// over and over. Between two of the probe's replies the loader gets the rest of one turn and
/// one more (the probe's request waits for the turn after the one it arrives in): 2 calls,
/// at most 3. The loop used to hand over 256 KiB a turn (4 calls, 8 between two replies), and
/// once more each turn for every event the connection had while it was queued (17 reads a
/// turn by the end of a 1M-key load with `redis-cli --pipe`).
#[test]
fn a_client_pipelining_work_holds_up_another_for_at_most_a_read_or_two() {
    let host = TestHost::with(HostConfig {
        app: artifacts::MISBEHAVE.into(),
        limits: Limits { output_buffer: OUTPUT_BUFFER, ..Limits::default() },
        ..HostConfig::default()
    });
    let mut probe = host.lines();
    for k in 0..TOUCHED {
        assert_eq!(probe.call(&format!("set k{k} v")), "ok");
    }
    let mut loader = host.raw();
    let line = format!("touch {TOUCHED} ");
    let line = format!("{line}{}\n", "x".repeat(LINE_BYTES - line.len() - 1));
    let pipeline = format!("flood {FLOOD_MIB}\n") + &line.repeat(LINES);
    loader.write_all(pipeline.as_bytes()).expect("the pipeline is taken in");
    // The host stopped running the loader's lines once their replies backed up: two of the
    // probe's replies in a row show no progress.
    let mut held_at = progress(&mut probe);
    loop {
        let now = progress(&mut probe);
        if now == held_at {
            break;
        }
        held_at = now;
    }
    // The call that ran the flood ran the rest of its READ_CHUNK too.
    assert!(held_at <= 1 + LINES_PER_CALL, "the loader's input was not held ({held_at} run)");
    let replies = BufReader::new(loader.try_clone().expect("clone"));
    let reader = thread::spawn(move || {
        let mut answered = 0;
        let mut replies = replies.lines();
        let flood = replies.next().expect("the flood").expect("the flood");
        assert_eq!(flood.len(), (FLOOD_MIB << 20) + 2, "the flood, then ok");
        for reply in replies {
            assert_eq!(reply.expect("a reply"), format!("ok {TOUCHED}"));
            answered += 1;
            if answered == LINES {
                break;
            }
        }
        answered
    });
    let mut seen = held_at;
    let mut gaps = Vec::new();
    while seen < 1 + LINES {
        let now = progress(&mut probe);
        assert!(now >= seen, "the value shrank: {seen} then {now}");
        gaps.push(now - seen);
        seen = now;
    }
    assert_eq!(reader.join().expect("reader"), LINES, "every line answered");
    drop(loader);
    for k in 0..TOUCHED {
        assert_eq!(probe.call(&format!("get k{k}")).len(), 1 + LINES, "k{k} touched by every line");
    }
    let during: Vec<usize> = gaps.into_iter().filter(|gap| *gap > 0).collect();
    assert!(
        during.len() >= 6,
        "the probe was answered only {} times during the load",
        during.len()
    );
    let worst = during.iter().max().copied().unwrap_or(0);
    assert!(
        worst <= 3 * LINES_PER_CALL,
        "the loader ran {worst} lines between two of the probe's replies (a call is up to \
         {LINES_PER_CALL}): {during:?}"
    );
}

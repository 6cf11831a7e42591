//! Back-pressure and streams, through the `TestHost` with an output buffer: a batch app whose
//! replies are far larger than its requests, and an app that streams payloads of each kind.

use crate::testing::{Effect, HostInfo, TestHost};
use crate::{ConnId, Ctx, Server, Source, StreamEnd};
use serde::{Deserialize, Serialize};

/// The size of one reply of [`Batch`]: a 64 KiB value, as the soak's slow readers ask for.
const REPLY: usize = 64 << 10;

/// Answers every whole line of `input` in one call, as kv does: `get` with a 64 KiB value
/// (`v`s, numbered by a header), anything else with a short echo. Counts its calls.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Batch {
    answered: u64,
    calls: u64,
    /// The longest input it was offered.
    longest_offer: usize,
}

impl Server for Batch {
    const NAME: &'static str = "batch";
    const STATE_VERSION: u32 = 1;

    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
        self.answer(ctx, conn, input, usize::MAX)
    }
}

impl Batch {
    /// Answers the lines of `input` until the output for `conn` reaches `limit` bytes.
    fn answer(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8], limit: usize) -> usize {
        self.calls += 1;
        self.longest_offer = self.longest_offer.max(input.len());
        let mut consumed = 0;
        while ctx.output(conn).len() < limit
            && let Some(end) = input[consumed..].iter().position(|&b| b == b'\n')
        {
            let line = &input[consumed..consumed + end];
            let out = ctx.output(conn);
            if line == b"get" {
                let header = format!("{:08}\n", self.answered);
                out.extend_from_slice(header.as_bytes());
                out.resize(out.len() + REPLY - header.len(), b'v');
            } else {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
            self.answered += 1;
            consumed += end + 1;
        }
        consumed
    }
}

/// The largest `Send` one event made, over all `effects`.
fn largest_send(effects: &[Effect]) -> usize {
    effects
        .iter()
        .map(|e| match e {
            Effect::Send { bytes, .. } => bytes.len(),
            _ => 0,
        })
        .max()
        .unwrap_or(0)
}

fn bounded<S: Server>(output_buffer: u64) -> TestHost<S> {
    let mut host = TestHost::<S>::new();
    host.set_host_info(HostInfo { output_buffer, ..HostInfo::default() });
    host
}

/// Reads `len` bytes from `conn` 300 KiB at a time, as a slow client does, checking that no
/// event sent more than a `window` and a reply.
fn read_slowly<S: Server>(
    host: &mut TestHost<S>,
    conn: ConnId,
    len: usize,
    window: u64,
) -> Vec<u8> {
    let mut replies = Vec::new();
    while replies.len() < len {
        let read = host.read_some(conn, (300 << 10).min(len - replies.len()));
        assert!(!read.is_empty(), "stuck after {} bytes", replies.len());
        replies.extend(read);
        let sent = largest_send(&host.take_effects());
        assert!(sent as u64 <= window + REPLY as u64, "{sent} bytes in one event");
    }
    replies
}

/// Checks that `replies` are `count` `get` replies numbered from `first`, whole and in order.
fn check_replies(replies: &[u8], first: u64, count: usize) {
    assert_eq!(replies.len(), count * REPLY, "{count} replies, whole");
    for (i, reply) in replies.chunks(REPLY).enumerate() {
        assert_eq!(&reply[..9], format!("{:08}\n", first + i as u64).as_bytes(), "reply {i}");
        assert!(reply[9..].iter().all(|&b| b == b'v'), "reply {i}'s value");
    }
}

#[test]
fn a_batch_app_makes_about_one_window_of_output_per_event_and_goes_on_as_the_client_reads() {
    const WINDOW: u64 = 1 << 20;
    const GETS: usize = 200; // 12.5 MiB of replies to 800 bytes of requests
    let mut host = bounded::<Batch>(WINDOW);
    let a = host.connect();
    host.send(a, "get\n".repeat(GETS));

    // One window's worth (and the reply that passed it), then the SDK stops and asks.
    let first = host.take_effects();
    let sent = largest_send(&first);
    assert!(sent as u64 >= WINDOW - REPLY as u64, "the window was used: {sent}");
    assert!(sent as u64 <= WINDOW + REPLY as u64, "{sent} bytes in one event, window {WINDOW}");
    assert!(first.contains(&Effect::NotifyWritable(a)), "{first:?}");
    assert!(host.waiting(a));
    assert!(host.unconsumed(a) > 0, "the rest of the input waits");

    // Input sent while it waits is held by the host, and comes after.
    host.send(a, "tail\n");
    assert_eq!(host.held(a), 5);

    // Each read makes room; the app hears of it and sends the next window.
    check_replies(&read_slowly(&mut host, a, GETS * REPLY, WINDOW), 0, GETS);
    assert_eq!(host.read(a), b"tail\n", "the held input answered after, in order");
    assert!(!host.waiting(a));
    assert_eq!(host.held(a), 0);
    // Slices of at most MAX_OFFER bytes: the app was never offered the whole pipeline at once.
    assert!(host.server().longest_offer <= crate::runtime::MAX_OFFER);
}

#[test]
fn without_an_output_buffer_a_pipeline_is_answered_in_one_event_as_before() {
    let mut host = TestHost::<Batch>::new();
    let a = host.connect();
    host.send(a, "get\n".repeat(50));
    assert_eq!(host.server().calls, 1, "offered whole, once");
    check_replies(&host.read(a), 0, 50);
    assert!(!host.take_effects().iter().any(|e| matches!(e, Effect::NotifyWritable(_))));
}

/// [`Batch`] that stops at [`Ctx::output_limit`], as kv does: offered whole input.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Stopping(Batch);

impl Server for Stopping {
    const NAME: &'static str = "stopping";
    const STATE_VERSION: u32 = 1;
    const STOPS_AT_OUTPUT_LIMIT: bool = true;

    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
        let limit = ctx.output_limit(conn);
        self.0.answer(ctx, conn, input, limit)
    }
}

#[test]
fn an_app_that_stops_at_the_window_is_offered_a_pipelined_batch_in_one_call() {
    let batch = format!("{:<44}\n", "set key:000000000042 xxx").repeat(16);
    let mut sliced = bounded::<Batch>(1 << 20);
    let mut stopping = bounded::<Stopping>(1 << 20);
    let (a, b) = (sliced.connect(), stopping.connect());
    for _ in 0..10 {
        sliced.send(a, &batch);
        stopping.send(b, &batch);
        assert_eq!(sliced.read(a), batch.as_bytes());
        assert_eq!(stopping.read(b), batch.as_bytes());
    }
    // Sliced: 64, 128, 256 and the last 272 bytes of each 720-byte batch.
    assert_eq!(sliced.server().calls, 40);
    assert_eq!(stopping.server().0.calls, 10, "one call per batch");
}

#[test]
fn an_app_that_stops_at_the_window_makes_about_one_window_per_event_and_loses_nothing() {
    const WINDOW: u64 = 1 << 20;
    const GETS: usize = 200; // 12.5 MiB of replies to 800 bytes of requests
    let mut host = bounded::<Stopping>(WINDOW);
    let a = host.connect();
    host.send(a, "get\n".repeat(GETS));
    // Offered all 800 bytes at once, it stopped after the reply that reached the window.
    assert_eq!(host.server().0.longest_offer, GETS * 4);
    let first = largest_send(&host.take_effects());
    assert!(first as u64 >= WINDOW, "the window was used: {first}");
    assert!(first as u64 <= WINDOW + REPLY as u64, "{first} bytes in one event");
    assert!(host.waiting(a));
    host.send(a, "tail\n");
    check_replies(&read_slowly(&mut host, a, GETS * REPLY, WINDOW), 0, GETS);
    assert_eq!(host.read(a), b"tail\n", "the held input answered after, in order");
    // Without a bound it is offered everything and answers everything, as before.
    let mut unbounded = TestHost::<Stopping>::new();
    let c = unbounded.connect();
    unbounded.send(c, "get\n".repeat(50));
    assert_eq!(unbounded.server().0.calls, 1);
    check_replies(&unbounded.read(c), 0, 50);
}

/// Echoes lines of any length (up to 64 KiB): a message can be longer than a slice.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Echo;

impl Server for Echo {
    const NAME: &'static str = "echo";
    const STATE_VERSION: u32 = 1;
    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
        let Some(end) = input.iter().position(|&b| b == b'\n') else { return 0 };
        ctx.send(conn, &input[..=end]);
        end + 1
    }
}

#[test]
fn a_message_cut_at_a_slice_end_is_offered_again_longer() {
    let mut host = bounded::<Echo>(1 << 20);
    let a = host.connect();
    let mut sent = Vec::new();
    // Lines of 1 to 20,000 bytes, in reads that cut them anywhere.
    let mut seed = 7u64;
    for _ in 0..200 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let len = 1 + (seed >> 33) as usize % 20_000;
        sent.extend(std::iter::repeat_n(b'a' + (seed % 26) as u8, len));
        sent.push(b'\n');
    }
    let mut received = Vec::new();
    for read in sent.chunks(7_777) {
        host.send(a, read);
        received.extend(host.read(a));
    }
    received.extend(host.read(a));
    assert!(received == sent, "every line echoed once, in order");
}

/// Streams on request, one command per line: `gen N` (N generated bytes, as chunks the app
/// makes), `bytes N` (N bytes held in the state), `file PATH [LEN]`, `gen-close N` (then
/// closes), `ping` (answers `pong`). Records how each stream ended.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Streamer {
    ended: Vec<(ConnId, String)>,
    /// `next_chunk` calls, to see that a payload is made as it is wanted.
    chunks: u64,
}

/// The byte at `offset` of a generated payload.
fn generated(offset: u64) -> u8 {
    (offset.wrapping_mul(2654435761) >> 7) as u8
}

impl Server for Streamer {
    const NAME: &'static str = "streamer";
    const STATE_VERSION: u32 = 1;

    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
        let Some(end) = input.iter().position(|&b| b == b'\n') else { return 0 };
        let line = String::from_utf8_lossy(&input[..end]).into_owned();
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["gen", n] => ctx.stream(conn, Source::Chunks { key: format!("gen {n}") }),
            ["gen-close", n] => {
                ctx.stream(conn, Source::Chunks { key: format!("gen {n}") });
                ctx.close(conn);
            }
            ["bytes", n] => {
                let n: u64 = n.parse().unwrap();
                ctx.stream(conn, Source::Bytes((0..n).map(generated).collect()));
            }
            ["file", path] => {
                ctx.stream(conn, Source::File { path: path.to_string(), offset: 0, len: None })
            }
            ["file", path, len] => ctx.stream(
                conn,
                Source::File { path: path.to_string(), offset: 0, len: Some(len.parse().unwrap()) },
            ),
            ["ping"] => ctx.send(conn, b"pong\n"),
            _ => ctx.send(conn, b"?\n"),
        }
        end + 1
    }

    fn next_chunk(
        &mut self,
        _: ConnId,
        key: &str,
        offset: u64,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        self.chunks += 1;
        let total: u64 = key.strip_prefix("gen ").and_then(|n| n.parse().ok()).ok_or("bad key")?;
        // At most 10,000 bytes at a time: the SDK asks again while the window lasts.
        let n = (total - offset).min(max as u64).min(10_000);
        out.extend((offset..offset + n).map(generated));
        Ok(())
    }

    fn on_stream_end(&mut self, ctx: &mut Ctx, conn: ConnId, end: StreamEnd) {
        self.ended.push((conn, format!("{end:?}")));
        if let StreamEnd::Done { bytes } = end {
            ctx.send(conn, format!("\ndone {bytes}\n").as_bytes());
        }
    }
}

fn expected(n: u64) -> Vec<u8> {
    (0..n).map(generated).collect()
}

/// Reads `conn` in pieces of `piece` bytes until `len` bytes came, checking that no event
/// sends more than `most`.
fn read_stream(host: &mut TestHost<Streamer>, conn: ConnId, len: usize, piece: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < len {
        let read = host.read_some(conn, piece.min(len - got.len()));
        assert!(!read.is_empty(), "stuck after {} of {len} bytes", got.len());
        got.extend(read);
    }
    got
}

#[test]
fn a_stream_is_sent_a_window_at_a_time_and_whole() {
    const WINDOW: u64 = 256 << 10;
    const LEN: u64 = 10 << 20;
    let mut host = bounded::<Streamer>(WINDOW);
    let a = host.connect();
    host.send(a, format!("gen {LEN}\nping\n"));
    assert_eq!(host.window(a), Some(0), "the first window was sent at once");
    assert!(host.waiting(a));
    let got = read_stream(&mut host, a, LEN as usize, 100_000);
    assert!(got == expected(LEN), "every byte, in order");
    let sent = largest_send(host.effects());
    assert!(sent as u64 <= WINDOW, "{sent} bytes in one event, window {WINDOW}");
    // The end is told, and what the app sent then and the input after the stream follow it.
    assert_eq!(host.read(a), format!("\ndone {LEN}\npong\n").as_bytes());
    assert_eq!(host.server().ended, [(a, format!("Done {{ bytes: {LEN} }}"))]);
    assert!(host.server().chunks >= LEN / 10_000, "made as it was wanted");
}

#[test]
fn output_queued_after_a_stream_waits_for_it_and_close_comes_last() {
    let mut host = bounded::<Streamer>(64 << 10);
    let a = host.connect();
    host.send(a, "bytes 300000\nping\n");
    // A timer or another event writing meanwhile goes behind the stream too.
    let got = read_stream(&mut host, a, 300_000, 50_000);
    assert!(got == expected(300_000));
    assert_eq!(host.read(a), b"\ndone 300000\npong\n");

    let b = host.connect();
    host.send(b, "gen-close 200000\n");
    assert!(host.is_open(b), "closed only once the stream is sent");
    let got = read_stream(&mut host, b, 200_000, 30_000);
    assert!(got == expected(200_000));
    assert_eq!(host.read(b), b"\ndone 200000\n");
    assert!(host.closed_by_app(b));
}

#[test]
fn a_stream_under_way_crosses_an_upgrade_and_the_new_version_sends_the_rest() {
    const LEN: u64 = 3 << 20;
    let mut host = bounded::<Streamer>(128 << 10);
    let a = host.connect();
    host.send(a, format!("gen {LEN}\nping\n"));
    let mut got = read_stream(&mut host, a, 1 << 20, 40_000);
    let chunks_before = host.server().chunks;

    let mut host = host.upgrade::<Streamer>().expect("the same release reads its state");
    assert_eq!(host.server().chunks, chunks_before, "the state crossed");
    got.extend(read_stream(&mut host, a, (LEN - (1 << 20)) as usize, 40_000));
    assert!(got == expected(LEN), "the new version sent the rest, from where it stood");
    assert_eq!(host.read(a), format!("\ndone {LEN}\npong\n").as_bytes());
}

#[test]
fn a_file_is_streamed_by_path_and_one_shorter_than_asked_fails_the_stream() {
    let dir = std::env::temp_dir().join(format!("tasuki-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("payload");
    std::fs::write(&path, expected(500_000)).unwrap();
    let path = path.to_str().unwrap().to_string();

    let mut host = bounded::<Streamer>(100_000);
    let a = host.connect();
    host.send(a, format!("file {path}\n"));
    let got = read_stream(&mut host, a, 500_000, 60_000);
    assert!(got == expected(500_000));
    assert_eq!(host.read(a), b"\ndone 500000\n");

    host.send(a, format!("file {path} 600000\n"));
    assert_eq!(host.read(a), b"", "nothing of a file shorter than asked");
    let (_, end) = host.server().ended.last().unwrap();
    assert!(end.starts_with("Failed { bytes: 0, error: ") && end.contains("shorter"), "{end}");
    assert!(host.is_open(a), "the app decides what a failed stream means");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_client_that_goes_away_mid_stream_ends_it_as_gone() {
    let mut host = bounded::<Streamer>(50_000);
    let a = host.connect();
    host.send(a, "gen 1000000\n");
    host.read_some(a, 40_000);
    host.disconnect(a);
    let ended = &host.server().ended;
    assert_eq!(ended.len(), 1);
    assert!(ended[0].1.starts_with("Gone { bytes: "), "{ended:?}");
}

/// Writes to every connection it has seen: each line `L` from a connection queues `L<from>`
/// for every connection, `big` a reply of 100 KiB first to its sender, and `s` a stream of
/// `streamed` to its sender behind that sender's output, then `after` behind the stream.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Fan {
    seen: Vec<ConnId>,
}

impl Server for Fan {
    const NAME: &'static str = "fan";
    const STATE_VERSION: u32 = 1;

    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
        if !self.seen.contains(&conn) {
            self.seen.push(conn);
        }
        let Some(end) = input.iter().position(|&b| b == b'\n') else { return 0 };
        let line = &input[..end];
        if line == b"big" {
            ctx.send(conn, &vec![b'b'; 100 << 10]);
        }
        for &to in &self.seen {
            let out = ctx.output(to);
            out.extend_from_slice(line);
            out.extend_from_slice(format!("<{conn}").as_bytes());
        }
        if line == b"s" {
            ctx.stream(conn, Source::Bytes(b"streamed".to_vec()));
            ctx.send(conn, b"after");
        }
        end + 1
    }
}

/// Each event's sends, as (connection, bytes as text).
fn sends(host: &mut TestHost<Fan>) -> Vec<(ConnId, String)> {
    host.take_effects()
        .into_iter()
        .filter_map(|e| match e {
            Effect::Send { conn, bytes } => Some((conn, String::from_utf8_lossy(&bytes).into())),
            _ => None,
        })
        .collect()
}

/// The SDK writes each event's output into the buffers of the events before it: whatever one
/// event queued — a large reply, output to several connections, a stream — the next sends
/// exactly its own bytes, each to its own connection.
#[test]
fn each_event_sends_exactly_its_own_output() {
    let mut host = TestHost::<Fan>::new();
    let (a, b) = (host.connect(), host.connect());
    host.send(b, "hi\n");
    assert_eq!(sends(&mut host), [(b, format!("hi<{b}"))]);
    host.send(a, "big\n");
    let big = format!("{}big<{a}", "b".repeat(100 << 10));
    assert_eq!(sends(&mut host), [(a, big), (b, format!("big<{a}"))]);
    host.send(b, "x\n");
    assert_eq!(sends(&mut host), [(b, format!("x<{b}")), (a, format!("x<{b}"))]);
    host.send(a, "s\n");
    let sent = sends(&mut host);
    let to_a: String = sent.iter().filter(|(c, _)| *c == a).map(|(_, s)| s.as_str()).collect();
    let to_b: Vec<&(ConnId, String)> = sent.iter().filter(|(c, _)| *c == b).collect();
    assert_eq!(to_a, format!("s<{a}streamedafter"));
    assert_eq!(to_b, [&(b, format!("s<{a}"))]);
    host.send(b, "y\n");
    assert_eq!(sends(&mut host), [(b, format!("y<{b}")), (a, format!("y<{b}"))]);
}

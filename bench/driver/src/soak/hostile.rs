//! The hostile clients of the soak, each a thread that misbehaves in one way until the soak
//! ends, reconnecting whenever the host closes it, and recording how each connection ended:
//!
//! - **slow readers** pipeline `GET` of a large value and stop reading their replies: the host
//!   queues replies up to `--output-buffer`, then holds their further input up to
//!   `--input-buffer`, and closes them there or when all connections together pass
//!   `--buffer-budget`;
//! - **flooders** pipeline small requests (`INCR`) as fast as the socket takes them and read
//!   nothing: the same limits, reached through many cheap requests instead of big replies;
//! - **bulk announcers** announce a `$536870912` argument (redis's own limit, 512 MiB) and
//!   trickle it: kv 4 refuses anything over its `proto-max-bulk-len` (half `--query-buffer`,
//!   64 MiB) at once, with `-ERR Protocol error: invalid bulk length`, and closes;
//! - **tricklers** announce the longest argument kv accepts and send it a KiB at a time: within
//!   every limit, so they must still be open at the end;
//! - **hoarders** send a request of two such arguments at full speed: past `--query-buffer`
//!   (128 MiB) of unconsumed input kv says `-ERR Protocol error: request over the query buffer
//!   limit` and closes;
//! - **idle** connections connect and send nothing: they must all still be open at the end.

use super::encode;
use crate::raw::Raw;
use anyhow::{Context, anyhow, bail};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct HostileArgs {
    /// Idle connections, opened before the clock starts and held to the end.
    #[arg(long, default_value_t = 5000)]
    pub(super) idle: usize,
    /// Clients that pipeline `GET` of a large value and stop reading.
    #[arg(long, default_value_t = 4)]
    slow_readers: usize,
    /// The size of the value slow readers `GET`, in KiB.
    #[arg(long, default_value_t = 64)]
    big_value_kib: usize,
    /// Clients that pipeline `INCR` as fast as they can and never read.
    #[arg(long, default_value_t = 1)]
    flooders: usize,
    /// Clients that announce a 512 MiB argument and trickle it.
    #[arg(long, default_value_t = 2)]
    bulk_announcers: usize,
    /// Clients that trickle the longest argument kv accepts, a KiB every 50 ms.
    #[arg(long, default_value_t = 4)]
    tricklers: usize,
    /// Clients that send more than `--query-buffer` of one request at full speed.
    #[arg(long, default_value_t = 1)]
    hoarders: usize,
}

/// The reply kv gives an argument over its `proto-max-bulk-len`, before it closes.
const INVALID_BULK: &[u8] = b"-ERR Protocol error: invalid bulk length\r\n";

/// The reply kv gives a connection past `--query-buffer`, before it closes.
const OVER_QUERY_BUFFER: &[u8] = b"-ERR Protocol error: request over the query buffer limit\r\n";

/// How each kind of hostile client fared, shared by its threads.
#[derive(Debug, Default)]
struct Tally {
    /// Connections opened.
    connections: AtomicU64,
    /// Connections the host closed (as the limit says, for kinds that expect a reply).
    closed: AtomicU64,
    /// Of those closes, the ones whose documented reply did not arrive (see
    /// [`Client::expect_close`]).
    reply_lost: AtomicU64,
    /// Bytes sent.
    sent: AtomicU64,
}

/// Every hostile client, running.
pub(super) struct Crowd {
    idle: Vec<TcpStream>,
    threads: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
    tallies: Vec<(&'static str, usize, Arc<Tally>)>,
    /// What went wrong that should not have: a client within its limits closed, a close
    /// without the documented reply.
    failures: Arc<Mutex<Vec<String>>>,
    /// Tricklers still open at the end.
    trickling: Arc<AtomicU64>,
}

/// The crowd after the soak.
pub(super) struct Outcome {
    raw: Raw,
    pub(super) failures: Vec<String>,
}

impl Outcome {
    pub(super) fn record(&self, raw: &mut Raw) {
        for key in self.raw.keys() {
            raw.set(key, self.raw.get(key).unwrap_or_default());
        }
    }
}

impl Crowd {
    pub(super) fn start(
        args: &HostileArgs,
        addr: &str,
        stop: &Arc<AtomicBool>,
    ) -> anyhow::Result<Self> {
        let mut setup = TcpStream::connect(addr)?;
        setup.set_read_timeout(Some(Duration::from_secs(10)))?;
        let big = "v".repeat(args.big_value_kib * 1024);
        let reply = request(&mut setup, &encode(&["SET", "soak:big", &big]))?;
        anyhow::ensure!(reply.starts_with(b"+OK"), "SET soak:big answered {reply:?}");
        let reply = request(&mut setup, &encode(&["CONFIG", "GET", "proto-max-bulk-len"]))?;
        let max_bulk: usize = String::from_utf8_lossy(&reply)
            .lines()
            .filter_map(|l| l.parse().ok())
            .next()
            .ok_or_else(|| anyhow!("CONFIG GET proto-max-bulk-len answered {reply:?}"))?;

        let mut idle = Vec::with_capacity(args.idle);
        for i in 0..args.idle {
            idle.push(
                TcpStream::connect(addr)
                    .with_context(|| format!("opening idle connection {i} of {}", args.idle))?,
            );
        }

        let mut crowd = Self {
            idle,
            threads: Vec::new(),
            tallies: Vec::new(),
            failures: Arc::default(),
            trickling: Arc::default(),
        };
        let get_big = encode(&["GET", "soak:big"]).repeat(64);
        let incr = encode(&["INCR", "soak:flood"]).repeat(1000);
        let kinds: [(&'static str, usize); 5] = [
            ("slow_reader", args.slow_readers),
            ("flooder", args.flooders),
            ("bulk_announcer", args.bulk_announcers),
            ("trickler", args.tricklers),
            ("hoarder", args.hoarders),
        ];
        for (kind, count) in kinds {
            let tally = Arc::new(Tally::default());
            crowd.tallies.push((kind, count, Arc::clone(&tally)));
            for n in 0..count {
                let client = Client {
                    addr: addr.to_string(),
                    stop: Arc::clone(stop),
                    tally: Arc::clone(&tally),
                    failures: Arc::clone(&crowd.failures),
                };
                let thread = std::thread::Builder::new().name(format!("{kind}-{n}"));
                let thread = match kind {
                    "slow_reader" => {
                        let batch = get_big.clone();
                        thread.spawn(move || client.pipeline_without_reading(&batch))?
                    }
                    "flooder" => {
                        let batch = incr.clone();
                        thread.spawn(move || client.pipeline_without_reading(&batch))?
                    }
                    "bulk_announcer" => thread.spawn(move || client.announce_huge_bulks())?,
                    "trickler" => {
                        let open = Arc::clone(&crowd.trickling);
                        thread.spawn(move || client.trickle(n, max_bulk, &open))?
                    }
                    _ => thread.spawn(move || client.hoard(max_bulk))?,
                };
                crowd.threads.push((kind, thread));
            }
        }
        Ok(crowd)
    }

    /// Stops and joins every client (the caller has set `stop`), and checks the idle
    /// connections: each must still be open when `host_alive`.
    pub(super) fn finish(self, host_alive: bool) -> anyhow::Result<Outcome> {
        let mut raw = Raw::default();
        for (kind, thread) in self.threads {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.failures.lock().expect("unpoisoned").push(format!("{kind}: {e:#}"))
                }
                Err(_) => bail!("a {kind} thread panicked"),
            }
        }
        let mut failures = std::mem::take(&mut *self.failures.lock().expect("unpoisoned"));
        for (kind, count, tally) in &self.tallies {
            raw.set(&format!("{kind}_count"), count);
            raw.set(&format!("{kind}_connections"), tally.connections.load(Ordering::Relaxed));
            raw.set(&format!("{kind}_closed"), tally.closed.load(Ordering::Relaxed));
            raw.set(&format!("{kind}_sent_bytes"), tally.sent.load(Ordering::Relaxed));
            raw.set(&format!("{kind}_reply_lost"), tally.reply_lost.load(Ordering::Relaxed));
        }
        raw.set("trickler_open_at_end", self.trickling.load(Ordering::Relaxed));
        let idle = self.idle.len();
        let open = self.idle.iter().filter(|s| still_open(s)).count();
        raw.set("idle", idle);
        raw.set("idle_open_at_end", open);
        if host_alive && open < idle {
            failures.push(format!("{} of {idle} idle connections were closed", idle - open));
        }
        Ok(Outcome { raw, failures })
    }
}

/// Whether the host still holds `stream` open: nothing to read and no end of stream.
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0];
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    matches!(stream.peek(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

/// Writes a request and reads what arrives within a moment (one reply of a setup request).
fn request(stream: &mut TcpStream, request: &[u8]) -> anyhow::Result<Vec<u8>> {
    stream.write_all(request)?;
    let mut buf = vec![0; 4096];
    let n = stream.read(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// What every hostile client holds.
struct Client {
    addr: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    failures: Arc<Mutex<Vec<String>>>,
}

impl Client {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn connect(&self) -> anyhow::Result<TcpStream> {
        let stream = TcpStream::connect(&self.addr)?;
        // Short timeouts, so that a blocked client still sees the end of the soak.
        stream.set_write_timeout(Some(Duration::from_millis(200)))?;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        self.tally.connections.fetch_add(1, Ordering::Relaxed);
        Ok(stream)
    }

    fn fail(&self, what: String) {
        self.failures.lock().expect("unpoisoned").push(what);
    }

    /// Writes all of `bytes` unless the soak ends first. `Ok(false)`: the host closed the
    /// connection.
    fn send(&self, stream: &mut TcpStream, bytes: &[u8]) -> anyhow::Result<bool> {
        let mut at = 0;
        while at < bytes.len() {
            if self.stopped() {
                return Ok(true);
            }
            match stream.write(&bytes[at..]) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    at += n;
                    self.tally.sent.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if matches!(e.kind(), ErrorKind::Interrupted) => {}
                Err(e) if closed(&e) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// Reads until the host closes the connection, the soak ends or `patience` passes;
    /// returns what arrived and whether the connection was closed.
    fn read_to_close(&self, stream: &mut TcpStream, patience: Duration) -> (Vec<u8>, bool) {
        let since = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0; 4096];
        while !self.stopped() && since.elapsed() < patience {
            match stream.read(&mut buf) {
                Ok(0) => return (got, true),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if closed(&e) => return (got, true),
                Err(_) => {}
            }
        }
        (got, false)
    }

    /// Slow readers and flooders: the same batch written over and over, nothing read; a new
    /// connection whenever the host closes one.
    fn pipeline_without_reading(&self, batch: &[u8]) -> anyhow::Result<()> {
        while !self.stopped() {
            let mut stream = self.connect()?;
            while !self.stopped() {
                if !self.send(&mut stream, batch)? {
                    self.tally.closed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        Ok(())
    }

    /// `SET soak:bulk <$536870912 announced>`, then a byte every 100 ms: kv must refuse it with
    /// its documented error and close, at once.
    fn announce_huge_bulks(&self) -> anyhow::Result<()> {
        while !self.stopped() {
            let mut stream = self.connect()?;
            let header = b"*3\r\n$3\r\nSET\r\n$9\r\nsoak:bulk\r\n$536870912\r\n";
            if !self.send(&mut stream, header)? {
                self.fail("a bulk announcer was closed before its header was written".into());
                continue;
            }
            let since = Instant::now();
            let mut got = Vec::new();
            let mut buf = [0; 256];
            let closed_by_host = loop {
                if self.stopped() || since.elapsed() > Duration::from_secs(10) {
                    break false;
                }
                match stream.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if closed(&e) => break true,
                    Err(_) => {
                        // The trickle: one byte of the announced value per read timeout.
                        let _ = stream.write(b"x");
                    }
                }
            };
            self.expect_close("a $536870912 bulk", INVALID_BULK, &got, closed_by_host);
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The longest argument kv accepts, announced and sent a KiB every 50 ms: within every
    /// limit, so the host must neither answer nor close it.
    fn trickle(&self, n: usize, max_bulk: usize, open: &AtomicU64) -> anyhow::Result<()> {
        let mut stream = self.connect()?;
        let key = format!("soak:trickle:{n}");
        let header = format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${max_bulk}\r\n", key.len());
        let piece = [b't'; 1024];
        let mut sent = 0;
        let mut ok = self.send(&mut stream, header.as_bytes())?;
        while ok && !self.stopped() && sent + piece.len() < max_bulk {
            std::thread::sleep(Duration::from_millis(50));
            ok = self.send(&mut stream, &piece)?;
            sent += piece.len();
        }
        let mut byte = [0];
        let answered = match stream.read(&mut byte) {
            Ok(0) => "closed",
            Ok(_) => "answered",
            Err(e) if closed(&e) => "closed",
            Err(_) => "",
        };
        if !ok || !answered.is_empty() {
            self.tally.closed.fetch_add(1, Ordering::Relaxed);
            self.fail(format!(
                "a trickler within every limit was {} after {sent} bytes",
                if ok { answered } else { "closed" }
            ));
        } else {
            open.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// `MSET` of three pairs whose values are as long as kv accepts, sent at full speed: after
    /// two values the request is still incomplete and more than `--query-buffer` (twice the
    /// longest value) is held unconsumed, so kv must say so and close.
    fn hoard(&self, max_bulk: usize) -> anyhow::Result<()> {
        let body = vec![b'h'; max_bulk];
        let pair = |key: &str, first: bool| {
            let lead = if first { "*7\r\n$4\r\nMSET\r\n" } else { "\r\n" };
            format!("{lead}${}\r\n{key}\r\n${max_bulk}\r\n", key.len()).into_bytes()
        };
        let (first, second) = (pair("soak:h1", true), pair("soak:h2", false));
        while !self.stopped() {
            let mut stream = self.connect()?;
            let mut ok = true;
            for part in [&first, &body, &second, &body] {
                ok = ok && self.send(&mut stream, part)?;
            }
            if self.stopped() {
                break;
            }
            let (got, closed_by_host) = self.read_to_close(&mut stream, Duration::from_secs(10));
            self.expect_close(
                "a request over --query-buffer",
                OVER_QUERY_BUFFER,
                &got,
                !ok || closed_by_host,
            );
            std::thread::sleep(Duration::from_secs(1));
        }
        Ok(())
    }

    /// Counts a close at a limit whose documented reply is `reply`. The reply may be lost when
    /// the host resets a connection with unread input (a client still sending), so a close
    /// with nothing read counts apart; any other reply, or no close, is a failure.
    fn expect_close(&self, what: &str, reply: &[u8], got: &[u8], closed_by_host: bool) {
        if closed_by_host && got == reply {
            self.tally.closed.fetch_add(1, Ordering::Relaxed);
        } else if closed_by_host && got.is_empty() {
            self.tally.closed.fetch_add(1, Ordering::Relaxed);
            self.tally.reply_lost.fetch_add(1, Ordering::Relaxed);
        } else if !self.stopped() {
            self.fail(format!(
                "{what} got {:?} and {}",
                String::from_utf8_lossy(&got[..got.len().min(200)]),
                if closed_by_host { "a close" } else { "no close within 10 s" }
            ));
        }
    }
}

/// Whether a socket error means the peer closed the connection.
fn closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
    )
}

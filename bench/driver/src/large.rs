//! One large request: an `RPUSH` of N elements sent on one connection while another client
//! PINGs in a loop. Measures the time from the first byte sent to the reply, and the slowest
//! PING meanwhile: what a server that parses a partly received request from its start again on
//! every read (kv 3) costs the sender and everyone else.

use crate::raw::Raw;
use anyhow::{Context, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct LargeArgs {
    /// The server, `HOST:PORT`.
    #[arg(long)]
    addr: String,
    /// Elements in the `RPUSH`.
    #[arg(long, default_value_t = 1_000_000)]
    elements: usize,
    /// Where to write the raw result.
    #[arg(long)]
    out: PathBuf,
}

/// `RPUSH key e0000000 e0000001 ...`: 13 bytes per element, as a client encodes it.
fn request(key: &str, elements: usize) -> Vec<u8> {
    let mut out =
        format!("*{}\r\n$5\r\nRPUSH\r\n${}\r\n{key}\r\n", elements + 2, key.len()).into_bytes();
    out.reserve(elements * 13);
    for i in 0..elements {
        write!(out, "$7\r\n{:07}\r\n", i % 10_000_000).expect("a Vec takes every write");
    }
    out
}

/// Sends PINGs on `pinger` one at a time until `done`: each one's round trip, in ms.
pub fn ping_until(mut pinger: TcpStream, done: &AtomicBool) -> anyhow::Result<Vec<f64>> {
    let mut pong = [0u8; 7];
    let mut latencies = Vec::new();
    while !done.load(Ordering::Relaxed) {
        let start = Instant::now();
        pinger.write_all(b"PING\r\n")?;
        pinger.read_exact(&mut pong)?;
        if &pong != b"+PONG\r\n" {
            bail!("PING answered {:?}", String::from_utf8_lossy(&pong));
        }
        latencies.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(latencies)
}

pub fn run(args: &LargeArgs) -> anyhow::Result<()> {
    let key = "bench:large";
    let mut sender = TcpStream::connect(&args.addr).context("connecting the sender")?;
    sender.set_read_timeout(Some(Duration::from_secs(120)))?;
    sender.write_all(format!("*2\r\n$3\r\nDEL\r\n${}\r\n{key}\r\n", key.len()).as_bytes())?;
    let mut reader = BufReader::new(sender.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let body = request(key, args.elements);

    let pinger = TcpStream::connect(&args.addr).context("connecting the pinger")?;
    pinger.set_read_timeout(Some(Duration::from_secs(120)))?;
    let done = AtomicBool::new(false);
    let (reply_ms, reply, pings) = std::thread::scope(|scope| -> anyhow::Result<_> {
        let pings = scope.spawn(|| ping_until(pinger, &done));
        let start = Instant::now();
        sender.write_all(&body)?;
        line.clear();
        reader.read_line(&mut line)?;
        let reply_ms = start.elapsed().as_secs_f64() * 1e3;
        done.store(true, Ordering::Relaxed);
        let pings = pings.join().map_err(|_| anyhow::anyhow!("the pinger panicked"))??;
        Ok((reply_ms, line.trim_end().to_string(), pings))
    })?;
    if reply != format!(":{}", args.elements) {
        bail!("RPUSH of {} elements answered {reply:?}", args.elements);
    }
    let mut raw = Raw::default();
    raw.set("elements", args.elements);
    raw.set("request_bytes", body.len());
    raw.set("reply_ms", format!("{reply_ms:.3}"));
    raw.set("pings", pings.len());
    raw.set("ping_max_ms", format!("{:.3}", pings.iter().copied().fold(0.0, f64::max)));
    crate::write_raw(&args.out, &raw)?;
    println!("reply in {reply_ms:.1} ms; {} PINGs meanwhile", pings.len());
    Ok(())
}

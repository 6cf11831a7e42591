//! A bulk load beside another client: one connection streams `keys` keys as 1000-key MSETs,
//! all written at once and their replies read as they come (what `redis-cli --pipe` does with
//! a file of commands), while a second client PINGs one request at a time. Measures how long
//! the load takes and what the PINGs waited meanwhile: the store grows from empty to `keys`,
//! so the second client sees every growth of the keyspace's index and every long turn the
//! loader's input gives the server.

use crate::large::ping_until;
use crate::load::{MSET_KEYS, key, value};
use crate::raw::Raw;
use crate::stats::{max, percentile};
use anyhow::{Context, ensure};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct BulkArgs {
    /// The server, `HOST:PORT`.
    #[arg(long)]
    addr: String,
    /// Keys to load (`key:000000000000` …, 16-byte values), after a FLUSHALL.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Where to write the raw result.
    #[arg(long)]
    out: PathBuf,
}

/// The MSETs that load `keys` keys, RESP-encoded as a client sends them.
fn pipeline(keys: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut next = 0;
    while next < keys {
        let end = (next + MSET_KEYS).min(keys);
        write!(out, "*{}\r\n$4\r\nMSET\r\n", 1 + 2 * (end - next)).expect("a Vec takes it");
        for i in next..end {
            let (k, v) = (key(i), value(i, 16));
            write!(out, "${}\r\n{k}\r\n${}\r\n", k.len(), v.len()).expect("a Vec takes it");
            out.extend_from_slice(&v);
            out.extend_from_slice(b"\r\n");
        }
        next = end;
    }
    out
}

/// Sends `command` (inline) and reads its one-line reply.
fn call(reader: &mut BufReader<TcpStream>, command: &str) -> anyhow::Result<String> {
    reader.get_mut().write_all(format!("{command}\r\n").as_bytes())?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

pub fn run(args: &BulkArgs) -> anyhow::Result<()> {
    let loader = TcpStream::connect(&args.addr).context("connecting the loader")?;
    loader.set_read_timeout(Some(Duration::from_secs(300)))?;
    let mut replies = BufReader::new(loader.try_clone()?);
    ensure!(call(&mut replies, "FLUSHALL")? == "+OK", "FLUSHALL refused");
    let body = pipeline(args.keys);
    let msets = args.keys.div_ceil(MSET_KEYS);
    let pinger = TcpStream::connect(&args.addr).context("connecting the pinger")?;
    pinger.set_read_timeout(Some(Duration::from_secs(300)))?;
    pinger.set_nodelay(true)?;
    let done = AtomicBool::new(false);
    let (load_ms, pings) = std::thread::scope(|scope| -> anyhow::Result<_> {
        let pings = scope.spawn(|| ping_until(pinger, &done));
        let start = Instant::now();
        let mut writer = loader.try_clone()?;
        let body = &body;
        let written = scope.spawn(move || writer.write_all(body));
        let mut line = String::new();
        for n in 0..msets {
            line.clear();
            replies.read_line(&mut line)?;
            ensure!(line == "+OK\r\n", "MSET {n} of {msets} answered {line:?}");
        }
        let load_ms = start.elapsed().as_secs_f64() * 1e3;
        done.store(true, Ordering::Relaxed);
        written.join().map_err(|_| anyhow::anyhow!("the writer panicked"))??;
        let pings = pings.join().map_err(|_| anyhow::anyhow!("the pinger panicked"))??;
        Ok((load_ms, pings))
    })?;
    let size = call(&mut replies, "DBSIZE")?;
    ensure!(size == format!(":{}", args.keys), "loaded {} keys, DBSIZE says {size}", args.keys);
    ensure!(!pings.is_empty(), "no PING was answered during the load");
    let mut raw = Raw::default();
    raw.set("keys", args.keys);
    raw.set("request_bytes", body.len());
    raw.set("load_ms", format!("{load_ms:.3}"));
    raw.set("pings", pings.len());
    raw.set("ping_max_ms", format!("{:.3}", max(&pings)));
    raw.set("ping_p99_ms", format!("{:.3}", percentile(&pings, 99.0)));
    raw.set("ping_p999_ms", format!("{:.3}", percentile(&pings, 99.9)));
    crate::write_raw(&args.out, &raw)?;
    println!(
        "{} keys in {load_ms:.0} ms; {} PINGs meanwhile, slowest {:.2} ms",
        args.keys,
        pings.len(),
        max(&pings)
    );
    Ok(())
}

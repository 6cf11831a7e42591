//! Filling a store: FLUSHALL, then `keys` keys by pipelined MSETs of 1,000 keys each.

use crate::url;
use anyhow::{Context, ensure};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The server, `host:port`.
    #[arg(long)]
    pub addr: String,
    /// How many keys (`key:000000000000` …, the names redis-benchmark -r uses).
    #[arg(long)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 16)]
    pub value_size: usize,
}

pub const MSET_KEYS: u64 = 1000;
const MSETS_IN_FLIGHT: u64 = 8;

pub fn key(i: u64) -> String {
    format!("key:{i:012}")
}

pub fn value(i: u64, size: usize) -> Vec<u8> {
    let mut v = format!("{i:0size$}").into_bytes();
    v.truncate(size);
    v
}

/// Loads the keys and checks DBSIZE afterwards; returns a one-line summary.
pub fn run(args: &LoadArgs) -> anyhow::Result<String> {
    let started = Instant::now();
    let client = redis::Client::open(url(&args.addr))?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .with_context(|| format!("connecting to {}", args.addr))?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    redis::cmd("FLUSHALL").query::<()>(&mut conn).context("FLUSHALL")?;
    let mut next = 0;
    while next < args.keys {
        let mut pipe = redis::pipe();
        for _ in 0..MSETS_IN_FLIGHT {
            if next >= args.keys {
                break;
            }
            let end = (next + MSET_KEYS).min(args.keys);
            let mut mset = redis::cmd("MSET");
            for i in next..end {
                mset.arg(key(i)).arg(value(i, args.value_size));
            }
            pipe.add_command(mset).ignore();
            next = end;
        }
        pipe.query::<()>(&mut conn).context("MSET")?;
    }
    let size: u64 = redis::cmd("DBSIZE").query(&mut conn).context("DBSIZE")?;
    ensure!(size == args.keys, "loaded {} keys but DBSIZE says {size}", args.keys);
    Ok(format!(
        "keys={} value_size={} load_s={:.3}",
        args.keys,
        args.value_size,
        started.elapsed().as_secs_f64()
    ))
}

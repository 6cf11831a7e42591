//! A client that keeps a kv server busy and proves nothing was lost: it INCRs one key in a tight
//! loop on a single connection, prints what it sees four times a second (including which release
//! answered `INFO`), and at the end checks the counter against the INCRs that were acknowledged.
//!
//! `live-client ADDR SECONDS` — used by scripts/demo while the server is upgraded under it.

use anyhow::{Context, bail};
use redis::Commands;
use std::time::{Duration, Instant};

fn release(conn: &mut redis::Connection) -> anyhow::Result<String> {
    let info: String = redis::cmd("INFO").query(conn)?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("tasuki_version:"))
        .map_or_else(|| "?".to_string(), |v| format!("kv {}", v.trim())))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().context("usage: live-client ADDR SECONDS")?;
    let seconds: u64 = args.next().context("usage: live-client ADDR SECONDS")?.parse()?;

    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let mut conn = client.get_connection().context("connecting")?;
    let _: () = redis::cmd("DEL").arg("demo:counter").query(&mut conn)?;
    let started = Instant::now();
    let mut acked: u64 = 0;
    let mut slowest = Duration::ZERO;
    let mut next_report = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(seconds) {
        let t = Instant::now();
        let _: u64 = conn.incr("demo:counter", 1).context("INCR failed")?;
        slowest = slowest.max(t.elapsed());
        acked += 1;
        if started.elapsed() >= next_report {
            println!(
                "client  t={:>4.1}s  served by {:<9}  INCRs acknowledged {:>8}  slowest reply {:>7.3} ms",
                started.elapsed().as_secs_f64(),
                release(&mut conn)?,
                acked,
                slowest.as_secs_f64() * 1e3
            );
            slowest = Duration::ZERO;
            next_report += Duration::from_millis(500);
        }
    }
    let counter: u64 = conn.get("demo:counter")?;
    println!(
        "client  done: counter = {counter}, acknowledged INCRs = {acked}, one connection throughout"
    );
    if counter != acked {
        bail!("lost {} INCRs", acked.abs_diff(counter));
    }
    println!("client  nothing lost");
    Ok(())
}

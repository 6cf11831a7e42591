//! The load that runs while a server is upgraded or restarted: each client owns one counter key
//! and INCRs it in a loop on one connection, one request at a time. Because nobody else touches
//! the key, every reply must be the previous one plus one, and at the end the counter must equal
//! the INCRs acknowledged: a lost, repeated or failed request shows up as a mismatch.

use crate::stats::Hist;
use crate::url;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What one client saw.
#[derive(Debug, Default, Clone)]
pub struct ClientStats {
    pub key: String,
    /// INCRs answered with an integer.
    pub acked: u64,
    /// Requests answered with an error reply (`-ERR …`).
    pub error_replies: u64,
    /// Requests that got no answer because the connection failed.
    pub conn_errors: u64,
    /// Connections opened after the first one (after a failure).
    pub reconnects: u64,
    /// Failed attempts to reconnect (the server was down).
    pub refused: u64,
    /// Replies that were not the previous reply plus one, on the same connection.
    pub sequence_breaks: u64,
    pub latency: Hist,
}

/// Clients running on threads of their own until [`Load::stop`].
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<anyhow::Result<ClientStats>>>,
}

fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

impl Load {
    /// Starts `clients` clients against `addr`; the counters (`bench:counter:N`) are reset
    /// first. With `reconnect`, a client whose connection fails keeps trying to reconnect (what a
    /// redis client does across a restart); without it, a failed connection ends the client and
    /// is counted.
    pub fn start(addr: &str, clients: usize, reconnect: bool) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let client = redis::Client::open(url(addr))?;
        let mut threads = Vec::new();
        for n in 0..clients {
            let key = format!("bench:counter:{n}");
            let mut conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
            conn.set_read_timeout(Some(Duration::from_secs(30)))?;
            redis::cmd("DEL").arg(&key).query::<()>(&mut conn)?;
            let stop = Arc::clone(&stop);
            let client = client.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("client-{n}"))
                    .spawn(move || run_client(client, conn, key, &stop, reconnect))?,
            );
        }
        Ok(Self { stop, threads })
    }

    /// Stops the clients and returns what each saw.
    pub fn stop(self) -> anyhow::Result<Vec<ClientStats>> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| t.join().map_err(|_| anyhow::anyhow!("a client panicked"))?)
            .collect()
    }
}

fn run_client(
    client: redis::Client,
    mut conn: redis::Connection,
    key: String,
    stop: &AtomicBool,
    reconnect: bool,
) -> anyhow::Result<ClientStats> {
    let mut stats = ClientStats { key: key.clone(), ..ClientStats::default() };
    let mut last: Option<i64> = None;
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        match redis::cmd("INCR").arg(&key).query::<i64>(&mut conn) {
            Ok(value) => {
                stats.latency.record(sent.elapsed());
                stats.acked += 1;
                if last.is_some_and(|l| value != l + 1) {
                    stats.sequence_breaks += 1;
                }
                last = Some(value);
            }
            Err(e) if is_connection_error(&e) => {
                stats.conn_errors += 1;
                if !reconnect {
                    break;
                }
                // The INCR in flight may or may not have been applied: the sequence restarts.
                last = None;
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return Ok(stats);
                    }
                    match client.get_connection_with_timeout(Duration::from_secs(1)) {
                        Ok(c) => {
                            conn = c;
                            conn.set_read_timeout(Some(Duration::from_secs(30)))?;
                            stats.reconnects += 1;
                            break;
                        }
                        Err(_) => {
                            stats.refused += 1;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
            }
            Err(_) => {
                // An error reply, e.g. `-LOADING` while redis-server reads its RDB.
                stats.error_replies += 1;
                last = None;
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }
    Ok(stats)
}

/// The counters' values now, read on a fresh connection.
pub fn final_values(addr: &str, stats: &[ClientStats]) -> anyhow::Result<Vec<i64>> {
    let client = redis::Client::open(url(addr))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
    stats
        .iter()
        .map(|s| {
            let v: Option<i64> = redis::cmd("GET").arg(&s.key).query(&mut conn)?;
            Ok(v.unwrap_or(0))
        })
        .collect()
}

/// Totals over every client, as raw fields.
pub fn summarize(raw: &mut crate::raw::Raw, stats: &[ClientStats], finals: &[i64]) {
    let sum = |f: fn(&ClientStats) -> u64| stats.iter().map(f).sum::<u64>();
    let acked = sum(|s| s.acked);
    let total: i64 = finals.iter().sum();
    // Per client, so a loss on one and a duplicate on another do not cancel out.
    let lost: u64 = stats.iter().zip(finals).map(|(s, f)| s.acked.saturating_sub(*f as u64)).sum();
    let unacked: u64 =
        stats.iter().zip(finals).map(|(s, f)| (*f as u64).saturating_sub(s.acked)).sum();
    let mut latency = Hist::default();
    for s in stats {
        latency.merge(&s.latency);
    }
    raw.set("clients", stats.len());
    raw.set("incr_acked", acked);
    raw.set("incr_final_total", total);
    raw.set("incr_mismatch", lost + unacked);
    raw.set("incr_lost", lost);
    raw.set("incr_unacked_applied", unacked);
    raw.set("error_replies", sum(|s| s.error_replies));
    raw.set("conn_errors", sum(|s| s.conn_errors));
    raw.set("reconnects", sum(|s| s.reconnects));
    raw.set("reconnect_refused", sum(|s| s.refused));
    raw.set("sequence_breaks", sum(|s| s.sequence_breaks));
    raw.set("client_p50_us", latency.percentile_us(50.0));
    raw.set("client_p99_us", latency.percentile_us(99.0));
    raw.set("client_p999_us", latency.percentile_us(99.9));
    raw.set("client_max_us", latency.max_us());
}

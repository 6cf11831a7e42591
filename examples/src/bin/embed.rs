//! The host as a library: start kv v1 in-process, write through a real Redis client, hot-swap to
//! v2, and read back on the same connection — the whole story in one `main`.
//!
//! `cargo run --release -p tasuki-examples --bin embed`

use redis::Commands;
use tasuki::{Host, HostConfig};

fn main() -> anyhow::Result<()> {
    let host = Host::start(HostConfig {
        app: tasuki_artifacts::KV_V1.into(),
        listen: vec!["127.0.0.1:0".parse()?],
        control: None,
        args: Vec::new(),
        ..HostConfig::default()
    })?;
    let addr = host.local_addrs()[0];
    let mut conn = redis::Client::open(format!("redis://{addr}/"))?.get_connection()?;
    let _: () = conn.set("greeting", "hello from v1")?;

    let report = host.upgrade(tasuki_artifacts::KV_V2.as_ref())?;
    println!("{report}");

    let greeting: String = conn.get("greeting")?;
    let ttl: i64 = conn.ttl("greeting")?;
    println!("same connection, now {}: greeting = {greeting:?}, ttl = {ttl}", report.to);
    host.shutdown();
    Ok(())
}

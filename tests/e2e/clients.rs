//! Unmodified Redis tools from the distribution (`redis-tools`) against the kv server, across an
//! upgrade. scripts/test installs them when they are missing.

use std::process::{Command, Output};
use tasuki_tests::{TestHost, artifacts};

fn tool(name: &str, args: &[&str]) -> Output {
    Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {name} ({e}): install redis-tools (scripts/test does it on Debian)")
    })
}

fn cli(host: &TestHost, args: &[&str]) -> String {
    let port = host.addr.port().to_string();
    let mut full = vec!["-h", "127.0.0.1", "-p", &port];
    full.extend_from_slice(args);
    let out = tool("redis-cli", &full);
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

#[test]
fn redis_cli_works_before_and_after_an_upgrade() {
    let host = TestHost::start(artifacts::KV_V1);
    assert_eq!(cli(&host, &["PING"]), "PONG");
    assert_eq!(cli(&host, &["SET", "tool", "redis-cli"]), "OK");
    assert_eq!(cli(&host, &["SET", "tool", "x", "EX", "10"]), "ERR syntax error");
    assert_eq!(cli(&host, &["INCRBY", "n", "5"]), "5");
    assert_eq!(
        cli(&host, &["NOSUCH", "a"]),
        "ERR unknown command 'NOSUCH', with args beginning with: 'a'"
    );
    assert_eq!(cli(&host, &["GET"]), "ERR wrong number of arguments for 'get' command");

    host.upgrade(artifacts::KV_V2).expect("upgrade");
    assert_eq!(cli(&host, &["GET", "tool"]), "redis-cli");
    assert_eq!(cli(&host, &["SET", "tool", "x", "EX", "10"]), "OK");
    let ttl: i64 = cli(&host, &["TTL", "tool"]).parse().unwrap();
    assert!((9..=10).contains(&ttl), "ttl {ttl}");
    assert_eq!(cli(&host, &["KEYS", "*"]).lines().count(), 2);
    assert!(cli(&host, &["INFO"]).contains("tasuki_version:2.0.0"));
}

#[test]
fn redis_benchmark_runs_through_an_upgrade_without_errors() {
    let host = TestHost::start(artifacts::KV_V1);
    let port = host.addr.port().to_string();
    let bench = std::thread::spawn(move || {
        // -e prints every error reply; there must be none.
        tool(
            "redis-benchmark",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                "set,get,incr",
                "-n",
                "30000",
                "-c",
                "8",
                "-q",
                "-e",
            ],
        )
    });
    std::thread::sleep(std::time::Duration::from_millis(150));
    host.upgrade(artifacts::KV_V2).expect("upgrade under redis-benchmark");
    let out = bench.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for test in ["SET", "GET", "INCR"] {
        assert!(stdout.contains(&format!("{test}: ")), "{test} missing:\n{stdout}");
    }
    assert!(!stdout.contains("ERR"), "error replies:\n{stdout}");
    // The host sees the last disconnects a moment after redis-benchmark exits.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while host.status().connections > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(host.status().connections, 0, "redis-benchmark's connections all closed cleanly");
}

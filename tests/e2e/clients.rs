//! Unmodified Redis tools from the distribution (`redis-tools`) against the kv server, across an
//! upgrade. scripts/test installs them when they are missing.

use redis::Commands;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tasuki_tests::{TestHost, artifacts};

fn tool(name: &str, args: &[&str]) -> Output {
    Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {name} ({e}): install redis-tools (scripts/test does it on Debian)")
    })
}

pub(crate) fn cli(host: &TestHost, args: &[&str]) -> String {
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

/// redis-benchmark's SET, GET and INCR runs (8 connections, 100,000 requests each) go through a
/// v1 -> v2 upgrade without an error reply. The upgrade starts once the benchmark is writing
/// (its SET key exists), and the test proves it overlapped: at the commit the benchmark's
/// connections were open, its INCR run had not finished, and afterwards every one of its
/// INCRs is in the counter.
#[test]
fn redis_benchmark_runs_through_an_upgrade_without_errors() {
    // Enough that the benchmark outlasts the upgrade (compile, pre-copy and pause) even when
    // the other tests load the machine: with 30,000 it was over before the commit now and then.
    const REQUESTS: i64 = 100_000;
    let host = TestHost::start(artifacts::KV_V1);
    let port = host.addr.port().to_string();
    let requests = REQUESTS.to_string();
    // -e prints every error reply; there must be none.
    let args = ["-h", "127.0.0.1", "-p", &port, "-t", "set,get,incr", "-n", &requests];
    let mut bench = Command::new("redis-benchmark")
        .args(args)
        .args(["-c", "8", "-q", "-e"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run redis-benchmark ({e}): install redis-tools"));

    // Without -r, redis-benchmark's keys are these, literally.
    let mut watcher = host.client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let writing: bool = watcher.exists("key:__rand_int__").unwrap();
        if writing {
            break;
        }
        if let Some(exit) = bench.try_wait().unwrap() {
            panic!("redis-benchmark exited ({exit}) before it wrote anything");
        }
        assert!(Instant::now() < deadline, "redis-benchmark wrote nothing in 10 s");
        std::thread::sleep(Duration::from_millis(1));
    }

    let report = host.upgrade(artifacts::KV_V2).expect("upgrade under redis-benchmark");
    let incrs_at_commit: Option<i64> =
        watcher.get("counter:__rand_int__").expect("our client's connection survives the upgrade");
    assert!(
        report.connections >= 2,
        "only {} connection(s) open at the commit: redis-benchmark's were gone",
        report.connections
    );
    assert!(
        incrs_at_commit.unwrap_or(0) < REQUESTS,
        "redis-benchmark had already finished its INCRs at the commit"
    );

    let out = bench.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for test in ["SET", "GET", "INCR"] {
        assert!(stdout.contains(&format!("{test}: ")), "{test} missing:\n{stdout}");
    }
    assert!(!stdout.contains("ERR"), "error replies:\n{stdout}");
    let incrs: i64 = watcher.get("counter:__rand_int__").unwrap();
    assert_eq!(incrs, REQUESTS, "every INCR, before and after the commit, counted once");
    assert!(cli(&host, &["INFO"]).contains("tasuki_version:2.0.0"));

    // The host sees the last disconnects a moment after redis-benchmark exits.
    drop(watcher);
    let deadline = Instant::now() + Duration::from_secs(5);
    while host.status().connections > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(host.status().connections, 0, "redis-benchmark's connections all closed cleanly");
}

/// The names of the tests a `redis-benchmark -q` run reported (`SET: 1234.5 requests per
/// second ...`).
fn benchmark_tests(stdout: &str) -> Vec<String> {
    stdout
        .split(['\r', '\n'])
        .filter(|line| line.contains(" requests per second"))
        .filter_map(|line| line.split_once(": ").map(|(name, _)| name.trim().to_string()))
        .collect()
}

/// Plain `redis-benchmark -q`, no `-t`: every test it runs against redis-server that uses
/// commands kv has runs against kv 4 too, without an error reply (redis-benchmark stops at the
/// first one). Streams (`XADD`, in redis-benchmark 7.2's default suite) are the one thing kv
/// lacks.
#[test]
fn plain_redis_benchmark_runs_every_test_kv_covers() {
    let run = |port: u16| {
        let out = tool(
            "redis-benchmark",
            &["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "-n", "2000", "-c", "4"],
        );
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let redis = tasuki_tests::RedisServer::start();
    let (ok, stdout, stderr) = run(redis.addr.port());
    assert!(ok, "against redis-server: {stdout}\n{stderr}");
    let known: Vec<String> =
        benchmark_tests(&stdout).into_iter().filter(|test| !test.starts_with("XADD")).collect();
    for test in
        ["SADD", "SPOP", "ZADD", "ZPOPMIN", "MSET (10 keys)", "LRANGE_600 (first 600 elements)"]
    {
        assert!(known.iter().any(|known| known == test), "{test} in {known:?}");
    }

    let host = TestHost::start(artifacts::KV_V4);
    let (ok, stdout, stderr) = run(host.addr.port());
    let ran = benchmark_tests(&stdout);
    for test in &known {
        assert!(ran.contains(test), "{test} did not run against kv:\n{stdout}\n{stderr}");
    }
    let streams_only = stderr.trim().is_empty()
        || stderr.trim()
            == "Error from server: ERR unknown command 'XADD', with args beginning with: 'mystream' '*' 'myfield' 'VXK'";
    assert!(ok || streams_only, "an error reply:\n{stderr}");
    assert!(!stderr.contains("Error") || streams_only, "{stderr}");
}

/// `INFO` reports what only the host knows, as redis's fields: the process's resident memory
/// and the connection limit the host was started with.
#[test]
fn info_reports_the_hosts_resident_memory_and_connection_limit() {
    let host = TestHost::with(tasuki::HostConfig {
        app: artifacts::KV_V4.into(),
        limits: tasuki::limits::Limits { max_connections: 123, ..Default::default() },
        ..tasuki::HostConfig::default()
    });
    let mut client = host.client();
    let info: String = redis::cmd("INFO").arg("clients").arg("memory").query(&mut client).unwrap();
    let field = |name: &str| -> u64 {
        let line = info
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in {info}"));
        line.trim().parse().unwrap_or_else(|_| panic!("{name}: {line}"))
    };
    assert_eq!(field("maxclients"), 123);
    // The host process (wasmtime, the instance's memory) holds far more than a megabyte.
    assert!(field("used_memory_rss") > 1 << 20, "{info}");
}

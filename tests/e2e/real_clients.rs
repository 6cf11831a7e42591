//! Client libraries as their users run them, unmodified and with their defaults, against kv
//! release 4, each through a hot swap in the middle of its work: redis-py 8 (RESP3, `HELLO`,
//! `CLIENT SETINFO`, MULTI/EXEC pipelines; sync and asyncio), the Rust `redis` crate with
//! RESP3, and raw bytes for what a library hides (a `MULTI` left open across the swap).
//!
//! The Python and Node clients live in a project-local directory that scripts/test fills
//! (`scripts/install-clients`): `$TASUKI_CLIENTS_DIR`, by default `target/clients`.

use redis::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use tasuki::upgrade::UpgradeOptions;
use tasuki_tests::{TestHost, artifacts, expect_bytes};

/// Where scripts/install-clients put the Python and Node clients.
fn clients_dir() -> PathBuf {
    match std::env::var_os("TASUKI_CLIENTS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/clients"),
    }
}

pub(crate) fn installed(relative: &str) -> PathBuf {
    let path = clients_dir().join(relative);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-clients {} (scripts/test does)",
        path.display(),
        clients_dir().display()
    );
    path
}

pub(crate) fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients").join(name)
}

/// Upgrades kv 4 to itself: the state, every connection's included, goes through export and
/// import exactly as in an upgrade to a newer release.
fn swap(host: &TestHost) -> tasuki::UpgradeReport {
    host.upgrade(artifacts::KV_V4).expect("upgrade kv 4 -> kv 4")
}

/// A client process that prints `READY` when it is in the middle of its work, waits for `GO`
/// on stdin (sent after the swap), and prints `DONE <n>` when it checked everything.
fn run_through_a_swap(host: &TestHost, program: &PathBuf, args: &[&str]) -> u64 {
    let port = host.addr.port().to_string();
    let mut child = Command::new(program)
        .args(args)
        .arg(&port)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    if first != "READY" {
        let out = child.wait_with_output().expect("wait");
        panic!("{first}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let report = swap(host);
    assert!(report.connections >= 2, "the client's connections were open at the swap");
    child.stdin.take().expect("stdin").write_all(b"GO\n").expect("GO");
    let last = lines.next().and_then(Result::ok).unwrap_or_default();
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{last}\n{}", String::from_utf8_lossy(&out.stderr));
    last.strip_prefix("DONE ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected last line {last:?}"))
}

/// redis-py 8 with its defaults — `HELLO 3`, `CLIENT SETINFO`, pipelines wrapped in
/// MULTI/EXEC, `WATCH` transactions — sync and asyncio at once, keeps working through a swap:
/// no error, no lost write, the same connections, still RESP3.
#[test]
fn redis_py_with_its_defaults_works_through_a_hot_swap() {
    let python = installed("venv/bin/python");
    let host = TestHost::start(artifacts::KV_V4);
    let done = run_through_a_swap(
        &host,
        &python,
        &[script("redis_py_through_upgrade.py").to_str().expect("utf-8 path")],
    );
    // 2 x 200 pipelined transactions per client, and the sync client's WATCH transaction.
    assert_eq!(done, 801);
    let mut client = host.client();
    let n: i64 = redis::cmd("GET").arg("sync:n").query(&mut client).unwrap();
    let m: i64 = redis::cmd("GET").arg("async:n").query(&mut client).unwrap();
    assert_eq!(n + m, 801, "every acknowledged increment is there");
}

/// ioredis from the npm registry, with its defaults (RESP2, MULTI/EXEC transactions), keeps
/// working through a swap on one connection: no error, no lost write.
#[test]
fn ioredis_works_through_a_hot_swap() {
    let modules = installed("node/node_modules");
    let host = TestHost::start(artifacts::KV_V4);
    let port = host.addr.port().to_string();
    let mut child = Command::new("node")
        .arg(script("ioredis_through_upgrade.js"))
        .arg(&port)
        .env("NODE_PATH", &modules)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node: {e} (scripts/install-clients installs it)"));
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    if first != "READY" {
        let out = child.wait_with_output().expect("wait");
        panic!("{first}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    swap(&host);
    child.stdin.take().expect("stdin").write_all(b"GO\n").expect("GO");
    let last = lines.next().and_then(Result::ok).unwrap_or_default();
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{last}\n{}", String::from_utf8_lossy(&out.stderr));
    let done: i64 = last.strip_prefix("DONE ").and_then(|n| n.parse().ok()).expect("DONE <n>");
    assert!(done >= 400, "{done}");
    let mut client = host.client();
    let n: i64 = redis::cmd("GET").arg("node:n").query(&mut client).unwrap();
    assert_eq!(n, done, "every acknowledged transaction is there");
}

fn resp3_client(host: &TestHost) -> redis::Connection {
    let client =
        redis::Client::open(format!("redis://{}/?protocol=resp3", host.addr)).expect("client");
    client.get_connection().expect("connect with HELLO 3")
}

/// The Rust `redis` crate asks for RESP3; kv answers maps, sets, nulls and doubles as RESP3
/// types, before a swap and after it, on the same connection.
#[test]
fn the_redis_crate_with_resp3_keeps_resp3_across_a_hot_swap() {
    let host = TestHost::start(artifacts::KV_V4);
    let mut conn = resp3_client(&host);
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut conn).unwrap();
    let _: () = redis::cmd("HSET").arg("h").arg("f").arg("v").query(&mut conn).unwrap();
    let is_resp3 = |conn: &mut redis::Connection| {
        let hash: Value = redis::cmd("HGETALL").arg("h").query(conn).unwrap();
        let missing: Value = redis::cmd("GET").arg("nope").query(conn).unwrap();
        matches!(hash, Value::Map(_)) && matches!(missing, Value::Nil)
    };
    assert!(is_resp3(&mut conn), "RESP3 before the swap");
    // Another connection, RESP2, stays RESP2.
    let mut resp2 = host.client();
    let hash: Value = redis::cmd("HGETALL").arg("h").query(&mut resp2).unwrap();
    assert!(matches!(hash, Value::Array(_)), "{hash:?}");

    swap(&host);

    assert!(is_resp3(&mut conn), "RESP3 after the swap");
    let same: i64 = redis::cmd("CLIENT").arg("ID").query(&mut conn).unwrap();
    assert_eq!(same, id, "the same connection");
    let hash: Value = redis::cmd("HGETALL").arg("h").query(&mut resp2).unwrap();
    assert!(matches!(hash, Value::Array(_)), "RESP2 after the swap: {hash:?}");
}

/// A `MULTI` opened under one instance is executed by the next with its queue, and a `WATCH`
/// armed before the swap still aborts on a write after it.
#[test]
fn a_transaction_open_at_the_swap_crosses_it() {
    let host = TestHost::start(artifacts::KV_V4);
    let mut tx = host.raw();
    tx.write_all(b"HELLO 3\r\n").unwrap();
    read_hello(&mut tx);
    tx.write_all(b"SET k 1\r\nMULTI\r\nINCR k\r\nHSET h f v\r\n").unwrap();
    expect_bytes(&mut tx, b"+OK\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n");

    let mut watcher = host.raw();
    watcher.write_all(b"WATCH w\r\nMULTI\r\nSET w mine\r\n").unwrap();
    expect_bytes(&mut watcher, b"+OK\r\n+OK\r\n+QUEUED\r\n");

    swap(&host);

    tx.write_all(b"HGETALL h\r\nEXEC\r\n").unwrap();
    expect_bytes(&mut tx, b"+QUEUED\r\n*3\r\n:2\r\n:1\r\n%1\r\n$1\r\nf\r\n$1\r\nv\r\n");
    let mut other = host.raw();
    other.write_all(b"SET w theirs\r\n").unwrap();
    expect_bytes(&mut other, b"+OK\r\n");
    watcher.write_all(b"EXEC\r\nGET w\r\n").unwrap();
    expect_bytes(&mut watcher, b"*-1\r\n$6\r\ntheirs\r\n");
}

/// Reads a `HELLO 3` reply (a map whose last entry is the empty module list).
fn read_hello(stream: &mut std::net::TcpStream) {
    let mut reply = Vec::new();
    let mut byte = [0];
    while !reply.ends_with(b"$7\r\nmodules\r\n*0\r\n") {
        std::io::Read::read_exact(stream, &mut byte).expect("the HELLO reply");
        reply.push(byte[0]);
    }
    assert!(reply.starts_with(b"%7\r\n"), "{}", String::from_utf8_lossy(&reply));
}

/// kv 1 reaches kv 4 in one upgrade through the chain of transformers, under a client that
/// then says `HELLO 3` on the connection it opened under kv 1.
#[test]
fn kv_1_reaches_kv_4_through_the_chain() {
    let host = TestHost::start(artifacts::KV_V1);
    let mut conn = host.client();
    let _: () = redis::cmd("SET").arg("k").arg("v1").query(&mut conn).unwrap();
    let options = UpgradeOptions {
        transforms: vec![
            artifacts::KV_V1_TO_V2.into(),
            artifacts::KV_V2_TO_V3.into(),
            artifacts::KV_V3_TO_V4.into(),
        ],
        ..UpgradeOptions::default()
    };
    let report = host.host_upgrade_with(artifacts::KV_V4, &options).expect("upgrade 1 -> 4");
    assert_eq!(report.to.to_string(), "kv 4.0.0");
    let hello: Value = redis::cmd("HELLO").arg(3).query(&mut conn).unwrap();
    assert!(matches!(hello, Value::Map(_)), "{hello:?}");
    let value: String = redis::cmd("GET").arg("k").query(&mut conn).unwrap();
    assert_eq!(value, "v1");
}

/// redis-py writes a whole pipeline before it reads a reply: 400,000 `GET`s of a 1 KiB value
/// are 8 MB of requests and 413 MB of replies. The host must keep reading while the replies
/// back up, or the client blocks in its write while the host waits for it to read.
#[test]
fn a_redis_py_pipeline_of_400_000_gets_completes_with_every_reply() {
    let python = installed("venv/bin/python");
    let host = TestHost::start(artifacts::KV_V4);
    let out = Command::new(python)
        .arg(script("redis_py_pipeline.py"))
        .arg(host.addr.port().to_string())
        .output()
        .expect("run redis_py_pipeline.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), "DONE 400000");
}

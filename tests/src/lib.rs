//! Helpers for the end-to-end tests: start a host in-process on a free loopback port with its
//! own control socket, talk to it with a real Redis client, and stop it when the test ends.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tasuki::control::{self, Request, Response};
use tasuki::status::Status;
use tasuki::{Host, HostConfig, RunningHost, UpgradeError, UpgradeReport};

pub use tasuki_artifacts as artifacts;

pub mod keys;

/// Sends the host's log (at `RUST_LOG`'s level, `info` when unset) to the test harness's
/// captured output: a failing test prints what the host said while it ran (the host's threads
/// inherit the capture of the test that started them), a passing one prints nothing.
fn log_to_test_output() {
    // Once per test binary: the subscriber set first serves every test.
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_test_writer()
            .try_init();
    });
}

/// A host serving one app on `127.0.0.1:<free port>`, stopped on drop.
#[derive(Debug)]
pub struct TestHost {
    host: Option<RunningHost>,
    pub addr: SocketAddr,
    pub control: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestHost {
    /// Starts `wasm` (one of [`artifacts`]) with the default limits.
    pub fn start(wasm: &str) -> Self {
        Self::with(HostConfig { app: wasm.into(), ..HostConfig::default() })
    }

    /// Starts `config.app` with `config`'s limits, sandbox and arguments, on a free loopback
    /// port with a control socket of its own.
    pub fn with(mut config: HostConfig) -> Self {
        log_to_test_output();
        let dir = tempfile::tempdir().expect("temp dir");
        let control = dir.path().join("tasuki.sock");
        config.listen = vec!["127.0.0.1:0".parse().expect("addr")];
        config.control = Some(control.clone());
        let host = Host::start(config).unwrap_or_else(|e| panic!("host did not start: {e}"));
        let addr = host.local_addrs()[0];
        Self { host: Some(host), addr, control, _dir: dir }
    }

    fn host(&self) -> &RunningHost {
        self.host.as_ref().expect("running")
    }

    /// A Redis client connected to the app.
    pub fn client(&self) -> redis::Connection {
        let client = redis::Client::open(format!("redis://{}/", self.addr)).expect("client");
        let conn = client.get_connection().expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        conn
    }

    /// A raw TCP connection to the app, for byte-exact conversations.
    pub fn raw(&self) -> std::net::TcpStream {
        let stream = std::net::TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        stream
    }

    /// Upgrades in-process (the path the control socket takes too).
    pub fn upgrade(&self, wasm: &str) -> Result<UpgradeReport, UpgradeError> {
        self.host().upgrade(Path::new(wasm))
    }

    /// Upgrades with options (transformers, `--from-checkpoint`), in-process.
    pub fn host_upgrade_with(
        &self,
        wasm: &str,
        options: &tasuki::upgrade::UpgradeOptions,
    ) -> Result<UpgradeReport, UpgradeError> {
        self.host().upgrade_with(Path::new(wasm), options)
    }

    /// Writes a snapshot file, as `tasuki snapshot --out` does.
    pub fn snapshot(&self, out: &Path) -> tasuki::snapshot::SnapshotReport {
        self.host().snapshot(out).unwrap_or_else(|e| panic!("snapshot: {e}"))
    }

    /// Writes a snapshot file, or says why it could not.
    pub fn try_snapshot(&self, out: &Path) -> Result<tasuki::snapshot::SnapshotReport, String> {
        self.host().snapshot(out).map_err(|e| e.to_string())
    }

    /// Upgrades from the last checkpoint and journal (`tasuki upgrade --from-checkpoint`).
    pub fn upgrade_from_checkpoint(&self, wasm: &str) -> Result<UpgradeReport, UpgradeError> {
        self.host().upgrade_from_checkpoint(Path::new(wasm))
    }

    /// Upgrades through the control socket, as `tasuki upgrade` does.
    pub fn upgrade_via_control(&self, wasm: &str) -> Response {
        let request = Request::Upgrade {
            wasm: wasm.into(),
            options: tasuki::upgrade::UpgradeOptions::default(),
        };
        control::request(&self.control, &request).expect("control")
    }

    /// A line-protocol client (for the `misbehave` fixture).
    pub fn lines(&self) -> LineClient {
        let stream = self.raw();
        LineClient { reader: std::io::BufReader::new(stream.try_clone().expect("clone")), stream }
    }

    /// `tasuki status`, through the control socket.
    pub fn status(&self) -> Status {
        match control::request(&self.control, &Request::Status).expect("control") {
            Response::Status(status) => *status,
            other => panic!("unexpected answer: {other:?}"),
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(host) = self.host.take() {
            host.shutdown();
        }
    }
}

/// Reads from `stream` until `expected.len()` bytes arrived, and checks they are `expected`.
pub fn expect_bytes(stream: &mut std::net::TcpStream, expected: &[u8]) {
    use std::io::Read;
    let mut got = vec![0; expected.len()];
    stream
        .read_exact(&mut got)
        .unwrap_or_else(|e| panic!("waiting for {:?}: {e}", String::from_utf8_lossy(expected)));
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(expected));
}

/// Asserts nothing more arrives on `stream` within `wait`.
pub fn expect_silence(stream: &mut std::net::TcpStream, wait: Duration) {
    use std::io::Read;
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => panic!("connection closed"),
        Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => assert!(
            matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            "{e}"
        ),
    }
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
}

/// One command per line, one reply line each: the `misbehave` fixture's protocol.
#[derive(Debug)]
pub struct LineClient {
    pub stream: std::net::TcpStream,
    reader: std::io::BufReader<std::net::TcpStream>,
}

impl LineClient {
    /// Sends `line`, returns the reply without its newline.
    pub fn call(&mut self, line: &str) -> String {
        self.try_call(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    /// Like [`LineClient::call`], but an `Err` when the connection is closed or fails.
    pub fn try_call(&mut self, line: &str) -> std::io::Result<String> {
        use std::io::{BufRead, Write};
        self.stream.write_all(format!("{line}\n").as_bytes())?;
        let mut reply = String::new();
        if self.reader.read_line(&mut reply)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(reply.trim_end().to_string())
    }

    /// Sends `line` and waits for the host to close the connection instead of answering.
    pub fn expect_closed(&mut self, line: &str) {
        if let Ok(reply) = self.try_call(line) {
            panic!("{line:?} was answered ({reply:?}); the connection should close")
        }
    }
}

/// Debian's `redis-server`, started on a free loopback port in a directory of its own, for
/// comparing replies with the real thing; killed on drop. scripts/test installs it.
#[derive(Debug)]
pub struct RedisServer {
    child: std::process::Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server` with no persistence and one database (as kv has), and returns once
    /// it says it is ready to accept connections.
    pub fn start() -> Self {
        use std::io::BufRead;
        // The port is free when picked; if another process takes it first, redis-server
        // exits and we pick again.
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free port")
                .port();
            let mut child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
                .args(["--appendonly", "no", "--databases", "1", "--loglevel", "notice"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run redis-server ({e}): scripts/test installs it on Debian")
                });
            let stdout = child.stdout.take().expect("stdout");
            let mut lines = std::io::BufReader::new(stdout).lines();
            let ready = lines
                .by_ref()
                .map_while(Result::ok)
                .any(|line| line.contains("Ready to accept connections"));
            if ready {
                // Its log keeps coming to the pipe: drain it, so that redis-server never blocks.
                std::thread::spawn(move || lines.for_each(drop));
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                return Self { child, addr, _dir: dir };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start");
    }

    /// A raw TCP connection to it.
    pub fn raw(&self) -> std::net::TcpStream {
        let stream = std::net::TcpStream::connect(self.addr).expect("connect to redis-server");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        stream
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads exactly one RESP2 or RESP3 reply from `reader` and returns its bytes.
pub fn read_reply(reader: &mut impl std::io::BufRead) -> Vec<u8> {
    let mut reply = Vec::new();
    read_one(reader, &mut reply);
    reply
}

fn read_one(reader: &mut impl std::io::BufRead, reply: &mut Vec<u8>) {
    let start = reply.len();
    let read = reader.read_until(b'\n', reply).expect("a reply");
    assert!(read > 0 && reply.ends_with(b"\r\n"), "connection closed inside a reply");
    let line = &reply[start..reply.len() - 2];
    let number = || -> i64 {
        std::str::from_utf8(&line[1..])
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad reply header {:?}", String::from_utf8_lossy(line)))
    };
    match line.first() {
        // A string with a length: its bytes and CRLF follow.
        Some(b'$' | b'=' | b'!') => {
            let len = number();
            if len >= 0 {
                let at = reply.len();
                reply.resize(at + usize::try_from(len).expect("length") + 2, 0);
                reader.read_exact(&mut reply[at..]).expect("a bulk string");
            }
        }
        Some(b'*' | b'~' | b'>') => {
            for _ in 0..number().max(0) {
                read_one(reader, reply);
            }
        }
        Some(b'%' | b'|') => {
            for _ in 0..2 * number().max(0) {
                read_one(reader, reply);
            }
        }
        // One line: +simple, -error, :integer, ,double, #boolean, _null, (big number.
        _ => {}
    }
}

//! Helpers for the end-to-end tests: start a host in-process on a free loopback port with its
//! own control socket, talk to it with a real Redis client, and stop it when the test ends.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tasuki::control::{self, Request, Response};
use tasuki::status::Status;
use tasuki::{Host, HostConfig, RunningHost, UpgradeError, UpgradeReport};

pub use tasuki_artifacts as artifacts;

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

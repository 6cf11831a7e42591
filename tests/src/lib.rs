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
    /// Starts `wasm` (one of [`artifacts`]).
    pub fn start(wasm: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let control = dir.path().join("tasuki.sock");
        let host = Host::start(HostConfig {
            app: wasm.into(),
            listen: vec!["127.0.0.1:0".parse().expect("addr")],
            control: Some(control.clone()),
            args: Vec::new(),
        })
        .unwrap_or_else(|e| panic!("host did not start: {e}"));
        let addr = host.local_addrs()[0];
        Self { host: Some(host), addr, control, _dir: dir }
    }

    fn host(&self) -> &RunningHost {
        self.host.as_ref().expect("running")
    }

    /// A Redis client connected to the app.
    pub fn client(&self) -> redis::Connection {
        let client = redis::Client::open(format!("redis://{}/", self.addr)).expect("client");
        let mut conn = client.get_connection().expect("connect");
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

    /// Upgrades through the control socket, as `tasuki upgrade` does.
    pub fn upgrade_via_control(&self, wasm: &str) -> Response {
        control::request(&self.control, &Request::Upgrade { wasm: wasm.into() }).expect("control")
    }

    /// `tasuki status`, through the control socket.
    pub fn status(&self) -> Status {
        match control::request(&self.control, &Request::Status).expect("control") {
            Response::Status(status) => status,
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

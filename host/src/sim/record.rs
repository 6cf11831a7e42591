//! `tasuki run --record FILE`: writes the live session as a trace, so a production session
//! becomes a test. Every connection, every byte each client sent and every reply it got, and the
//! time between them, in the format of [`super::trace`].

use super::trace::escape;
use std::collections::HashMap;
use std::io::{LineWriter, Write};
use std::path::Path;
use std::time::Instant;

/// Appends trace lines as the dispatcher serves.
#[derive(Debug)]
pub struct Recorder {
    out: LineWriter<std::fs::File>,
    started: Instant,
    /// Milliseconds since `started` of the last line written.
    last_ms: u128,
    names: HashMap<u64, String>,
    failed: bool,
}

impl crate::dispatch::Tap for Recorder {
    fn connect(&mut self, conn: u64) {
        self.connect_conn(conn, None);
    }
    fn accept(&mut self, conn: u64, address: &str) {
        let port = address.rsplit(':').next().and_then(|p| p.parse().ok());
        self.connect_conn(conn, port);
    }
    fn send(&mut self, conn: u64, bytes: &[u8]) {
        self.sent(conn, bytes);
    }
    fn reply(&mut self, conn: u64, bytes: &[u8]) {
        self.replied(conn, bytes);
    }
    fn close(&mut self, conn: u64) {
        self.closed(conn);
    }
    fn forget(&mut self, conn: u64) {
        self.forgot(conn);
    }
}

impl Recorder {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let mut out = LineWriter::new(std::fs::File::create(path)?);
        writeln!(out, "# recorded by `tasuki run --record`; replay with `tasuki test`")?;
        Ok(Self { out, started: Instant::now(), last_ms: 0, names: HashMap::new(), failed: false })
    }

    fn line(&mut self, line: &str) {
        if self.failed {
            return;
        }
        let now = self.started.elapsed().as_millis();
        let mut result = Ok(());
        if now > self.last_ms {
            result = writeln!(self.out, "advance {}ms", now - self.last_ms);
            self.last_ms = now;
        }
        if let Err(e) = result.and_then(|()| writeln!(self.out, "{line}")) {
            tracing::error!("recording stopped: {e}");
            self.failed = true;
        }
    }

    /// `conn` connected, to the app's run-time listener on `port` if given.
    fn connect_conn(&mut self, conn: u64, port: Option<u16>) {
        let name = format!("c{conn}");
        match port {
            Some(port) => self.line(&format!("connect {name} port {port}")),
            None => self.line(&format!("connect {name}")),
        }
        self.names.insert(conn, name);
    }

    fn sent(&mut self, conn: u64, bytes: &[u8]) {
        if let Some(name) = self.names.get(&conn).cloned() {
            self.line(&format!("send {name} \"{}\"", escape(bytes)));
        }
    }

    fn replied(&mut self, conn: u64, bytes: &[u8]) {
        if let Some(name) = self.names.get(&conn).cloned() {
            self.line(&format!("expect {name} \"{}\"", escape(bytes)));
        }
    }

    fn closed(&mut self, conn: u64) {
        if let Some(name) = self.names.remove(&conn) {
            self.line(&format!("close {name}"));
        }
    }

    /// The server closed `conn`: later lines never mention it.
    fn forgot(&mut self, conn: u64) {
        self.names.remove(&conn);
    }
}

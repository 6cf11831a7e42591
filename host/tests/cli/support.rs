//! What every test of the `tasuki` command shares: the binary in the background, the binary in
//! the foreground, and clients for the two protocols the test apps speak (RESP for kv, lines for
//! the misbehave fixture), over real loopback sockets.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TASUKI: &str = env!("CARGO_BIN_EXE_tasuki");

/// `VmRSS` of process `pid` (a host the test started), in bytes.
pub fn resident(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

/// How long a client waits for a reply before the test fails. Generous: a reply normally takes
/// microseconds, but a recovery replays a journal first, on a loaded 2-core machine.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// `tasuki run` in the background, killed on drop. Its log (stderr) is kept, so that a failing
/// test can show what the host said.
pub struct Running {
    pub child: Child,
    pub addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Running {
    pub fn start(dir: &Path, wasm: &str) -> Self {
        Self::spawn(dir, &["run", wasm, "--listen", "127.0.0.1:0"])
    }

    /// `tasuki ARGS...` in `dir` (ARGS starting with `run`), once it says where it serves.
    pub fn spawn(dir: &Path, args: &[&str]) -> Self {
        let child = Command::new(TASUKI)
            .current_dir(dir)
            .args(args)
            .env("TASUKI_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tasuki run");
        Self::adopt(child)
    }

    /// Waits for a spawned `tasuki run` (stderr piped) to say where it serves.
    pub fn adopt(mut child: Child) -> Self {
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let addr = loop {
            let Some(line) = lines.next() else {
                let said = log.lock().unwrap().join("\n");
                panic!("tasuki run exited before serving:\n{said}");
            };
            let line = line.expect("stderr line");
            log.lock().unwrap().push(line.clone());
            if let Some((_, rest)) = line.split_once("serving on ") {
                break rest.trim().to_string();
            }
        };
        // Keep draining stderr so the host never blocks on a full pipe.
        let keep = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                keep.lock().unwrap().push(line);
            }
        });
        Self { child, addr, log }
    }

    /// Everything the host logged so far, for failure messages.
    pub fn log(&self) -> String {
        let log = self.log.lock().unwrap();
        let skip = log.len().saturating_sub(40);
        log[skip..].join("\n")
    }

    /// Everything the host logged so far.
    pub fn whole_log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn resp(&self) -> Resp {
        Resp::connect(&self.addr)
    }

    pub fn lines(&self) -> Lines {
        Lines::connect(&self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tasuki ARGS...` in `dir`, to completion.
pub fn tasuki(dir: &Path, args: &[&str]) -> Output {
    Command::new(TASUKI).current_dir(dir).args(args).output().expect("run tasuki")
}

/// Like [`tasuki`], and it must succeed; its stdout.
pub fn tasuki_ok(dir: &Path, args: &[&str]) -> String {
    let out = tasuki(dir, args);
    assert!(
        out.status.success(),
        "tasuki {} failed:\n{}{}",
        args.join(" "),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn roundtrip(stream: &mut TcpStream, request: &[u8], reply_len: usize) -> String {
    stream.write_all(request).unwrap();
    let mut reply = vec![0; reply_len];
    stream.read_exact(&mut reply).unwrap();
    text(&reply)
}

/// Whether a read error means the peer closed or reset the connection.
pub fn closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Reads until the peer closes the connection; whatever arrived before, as text. Fails the
/// test if the connection is still open after [`REPLY_TIMEOUT`].
pub fn read_to_close(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return text(&got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if closed(&e) => return text(&got),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!(
                "the connection was expected to close, but it is still open ({e}); \
                 it received {} bytes",
                got.len()
            ),
        }
    }
}

/// A RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// A RESP request: an array of bulk strings.
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A Redis-protocol client on a raw socket.
pub struct Resp {
    reader: BufReader<TcpStream>,
}

impl Resp {
    pub fn connect(addr: &str) -> Self {
        let stream = TcpStream::connect(addr).expect("connect to tasuki");
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(REPLY_TIMEOUT)).unwrap();
        Self { reader: BufReader::with_capacity(1 << 16, stream) }
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    pub fn try_call(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        self.stream().write_all(&command(args))?;
        self.read_reply()
    }

    pub fn call(&mut self, args: &[&[u8]]) -> Reply {
        let name = text(args[0]);
        self.try_call(args).unwrap_or_else(|e| panic!("{name}: no reply ({e})"))
    }

    /// Sends every request, then reads one reply for each.
    pub fn pipeline(&mut self, requests: &[Vec<u8>]) -> io::Result<Vec<Reply>> {
        let batch: Vec<u8> = requests.concat();
        self.stream().write_all(&batch)?;
        (0..requests.len()).map(|_| self.read_reply()).collect()
    }

    /// Sends `args` and expects the host to close the connection instead of answering (the
    /// guest trapped on it). Returns whatever arrived before the close.
    pub fn expect_closed(&mut self, args: &[&[u8]]) -> String {
        // The host may close before it has read everything: a failed write is a close too.
        if let Err(e) = self.stream().write_all(&command(args)) {
            assert!(closed(&e), "writing the request failed: {e}");
            return String::new();
        }
        let buffered = text(self.reader.buffer());
        let rest = read_to_close(self.reader.get_mut());
        format!("{buffered}{rest}")
    }

    pub fn read_reply(&mut self) -> io::Result<Reply> {
        let line = self.line()?;
        let (kind, rest) = line.split_at(1);
        Ok(match kind {
            "+" => Reply::Status(rest.into()),
            "-" => Reply::Error(rest.into()),
            ":" => Reply::Int(rest.parse().map_err(|_| bad(&line))?),
            "$" => {
                let len: i64 = rest.parse().map_err(|_| bad(&line))?;
                if len < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut bytes = vec![0; len as usize + 2];
                    self.reader.read_exact(&mut bytes)?;
                    bytes.truncate(len as usize);
                    Reply::Bulk(Some(bytes))
                }
            }
            "*" => {
                let len: i64 = rest.parse().map_err(|_| bad(&line))?;
                if len < 0 {
                    Reply::Array(None)
                } else {
                    Reply::Array(Some(
                        (0..len).map(|_| self.read_reply()).collect::<io::Result<_>>()?,
                    ))
                }
            }
            _ => return Err(bad(&line)),
        })
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line)?;
        if !line.ends_with(b"\r\n") {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        line.truncate(line.len() - 2);
        if line.is_empty() {
            return Err(bad(""));
        }
        Ok(text(&line))
    }

    /// Stores every `(key, value)`, in pipelined batches; each must be answered `+OK`.
    pub fn set_all(&mut self, pairs: &[(String, Vec<u8>)]) {
        for batch in pairs.chunks(500) {
            let requests: Vec<Vec<u8>> =
                batch.iter().map(|(k, v)| command(&[b"SET", k.as_bytes(), v])).collect();
            let replies = self.pipeline(&requests).expect("SET batch answered");
            for ((key, _), reply) in batch.iter().zip(replies) {
                assert_eq!(reply, Reply::Status("OK".into()), "SET {key}");
            }
        }
    }

    /// Reads back every key with MGET: the keys whose value is missing or differs from the one
    /// stored.
    pub fn wrong_or_missing(&mut self, pairs: &[(String, Vec<u8>)]) -> Vec<String> {
        let mut wrong = Vec::new();
        for batch in pairs.chunks(500) {
            let mut args: Vec<&[u8]> = vec![b"MGET"];
            args.extend(batch.iter().map(|(k, _)| k.as_bytes()));
            let reply = self.try_call(&args).unwrap_or_else(|e| {
                panic!("the connection reading the keys back failed ({e}): was it closed?")
            });
            let Reply::Array(Some(values)) = reply else { panic!("MGET answered {reply:?}") };
            for ((key, expected), got) in batch.iter().zip(values) {
                if got != Reply::Bulk(Some(expected.clone())) {
                    wrong.push(key.clone());
                }
            }
        }
        wrong
    }
}

fn bad(line: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("not a RESP reply: {line:?}"))
}

/// A client of the misbehave fixture's line protocol: one line out, one line back.
pub struct Lines {
    reader: BufReader<TcpStream>,
}

impl Lines {
    pub fn connect(addr: &str) -> Self {
        let stream = TcpStream::connect(addr).expect("connect to tasuki");
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        Self { reader: BufReader::new(stream) }
    }

    pub fn try_call(&mut self, line: &str) -> io::Result<String> {
        self.reader.get_mut().write_all(format!("{line}\n").as_bytes())?;
        let mut reply = String::new();
        if self.reader.read_line(&mut reply)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(reply.trim_end().to_string())
    }

    pub fn call(&mut self, line: &str) -> String {
        self.try_call(line).unwrap_or_else(|e| panic!("{line}: no reply ({e})"))
    }

    /// The next line the server sends, unasked.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => panic!("the server closed the connection"),
            Ok(_) => line.trim_end().to_string(),
            Err(e) => panic!("no line from the server ({e})"),
        }
    }
}

/// Polls `check` until it returns `Some`, or `None` once `limit` has passed. For guarantees
/// about time passing (timers), where there is no event to wait for.
pub fn poll<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    loop {
        if let Some(found) = check() {
            return Some(found);
        }
        if started.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

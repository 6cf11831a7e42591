//! Traces: client sessions written as text, for the simulator.
//!
//! ```text
//! # Lines starting with `#` are comments. Strings take \r \n \t \\ \" and \xHH escapes.
//! connect a                      # open a connection named `a`
//! send a "SET k 1\r\n"           # a sends bytes (one event)
//! expect a "+OK\r\n"             # the next bytes a receives are exactly these
//! expect a ~ "^:[0-9]+\r\n"      # ...or match this regular expression (anchored at the start)
//! quiet a                        # a has received nothing it has not expected
//! advance 1500ms                 # the virtual clock moves on (ms or s); due timers fire
//! clock 2026-12-01T05:44:16.5Z   # the virtual clock moves on to this time (RFC 3339, only
//!                                # forward; it starts at 2026-01-01T00:00:00Z); due timers fire
//! close a                        # a disconnects (one event)
//! fault a "GET k\r\n"            # a sends bytes and the guest traps handling them (one event
//!                                # that fails): the host closes a and rebuilds the app
//! upgrade kv_v2.wasm             # upgrade here, paths relative to the trace's directory
//! upgrade kv_v3.wasm via kv_v1_to_v2.wasm kv_v2_to_v3.wasm
//! ```
//!
//! Events are `connect`, `send`, `close`, `fault` and each timer that fires during `advance`; the
//! point before the first event and after each one are the trace's event boundaries. A `fault`
//! makes the guest trap (as a bug or a missed deadline would), so a trace can check that
//! recovery keeps every key: after it, `a` is closed by the server.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One line of a trace.
#[derive(Debug, Clone)]
pub enum Step {
    Connect(String),
    /// `connect NAME port N`: a client connects to the listener the app opened at run time on
    /// port N (`listeners.listen`; the simulator gives port 0 the first free port from
    /// [`crate::listeners::VIRTUAL_FIRST_PORT`], or from `--data-ports`).
    ConnectPort(String, u16),
    Send(String, Vec<u8>),
    Expect(String, Expected),
    Quiet(String),
    Advance(Duration),
    /// The virtual clock moves on to this wall-clock time, in ns since the Unix epoch.
    Clock(u64),
    Close(String),
    /// The connection sends bytes and the guest traps handling them.
    Fault(String, Vec<u8>),
    Upgrade {
        wasm: PathBuf,
        transforms: Vec<PathBuf>,
    },
}

/// What an `expect` wants.
#[derive(Debug, Clone)]
pub enum Expected {
    Exact(Vec<u8>),
    Pattern(regex::bytes::Regex),
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(bytes) => write!(f, "\"{}\"", escape(bytes)),
            Self::Pattern(re) => write!(f, "~ \"{}\"", re.as_str()),
        }
    }
}

/// A parsed trace: steps with their line numbers.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub name: String,
    pub steps: Vec<(usize, Step)>,
}

/// A trace that does not parse, with where and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct TraceError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// Writes bytes the way a trace string reads them.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// The bytes a string with `\\r \\n \\t \\\\ \\" \\xHH` escapes stands for (a trace's strings,
/// `tasuki run --refuse-reply`).
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some('r') => out.push(b'\r'),
            Some('n') => out.push(b'\n'),
            Some('t') => out.push(b'\t'),
            Some('\\') => out.push(b'\\'),
            Some('"') => out.push(b'"'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                let byte = u8::from_str_radix(&hex, 16)
                    .map_err(|_| format!("`\\x{hex}` is not a hex byte (\\xHH)"))?;
                out.push(byte);
            }
            Some(other) => {
                return Err(format!(
                    "unknown escape `\\{other}` (use \\r \\n \\t \\\\ \\\" \\xHH)"
                ));
            }
            None => return Err("a string ends with a lone `\\`".into()),
        }
    }
    Ok(out)
}

/// Splits `"..."` off the front of `rest`; returns the string's raw text and what follows.
fn quoted(rest: &str) -> Result<(&str, &str), String> {
    let rest = rest.trim_start();
    let body = rest.strip_prefix('"').ok_or("expected a \"quoted string\"")?;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Ok((&body[..i], &body[i + 1..])),
            _ => escaped = false,
        }
    }
    Err("the string has no closing `\"`".into())
}

fn duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration (like 250ms or 2s)");
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().map(Duration::from_millis).map_err(|_| bad());
    }
    if let Some(secs) = s.strip_suffix('s') {
        return secs.parse().map(Duration::from_secs).map_err(|_| bad());
    }
    Err(bad())
}

/// An RFC 3339 time (`2026-12-01T05:44:16.123456789Z`), in ns since the Unix epoch.
fn timestamp(s: &str) -> Result<u64, String> {
    let bad = |why: String| format!("`{s}` is not a time like 2026-12-01T05:44:16.5Z: {why}");
    let at = humantime::parse_rfc3339(s.trim()).map_err(|e| bad(e.to_string()))?;
    let since = at.duration_since(std::time::UNIX_EPOCH).map_err(|e| bad(e.to_string()))?;
    u64::try_from(since.as_nanos()).map_err(|e| bad(e.to_string()))
}

/// `ns` since the Unix epoch as a trace's `clock` line writes it.
pub fn format_timestamp(ns: u64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_nanos(ns);
    humantime::format_rfc3339_nanos(at).to_string()
}

impl Trace {
    /// Reads a trace file; relative paths in `upgrade` lines are resolved against its directory.
    pub fn read(path: &Path) -> Result<Self, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|e| TraceError {
            file: path.display().to_string(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&path.display().to_string(), &text, &dir)
    }

    /// Parses trace text; `name` appears in errors.
    pub fn parse(name: &str, text: &str, dir: &Path) -> Result<Self, TraceError> {
        let mut steps = Vec::new();
        let mut open: Vec<String> = Vec::new();
        let mut ever: Vec<String> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let err = |message: String| TraceError { file: name.to_string(), line, message };
            let content = raw.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let (word, rest) = content.split_once(char::is_whitespace).unwrap_or((content, ""));
            let rest = rest.trim();
            let (conn, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let needs_open = |conn: &str| -> Result<String, TraceError> {
                if conn.is_empty() {
                    return Err(err(format!("`{word}` needs a connection name")));
                }
                if !open.iter().any(|c| c == conn) {
                    let hint = if ever.iter().any(|c| c == conn) {
                        "it was closed earlier, by `close` or a `fault`"
                    } else {
                        "open it first with `connect`"
                    };
                    return Err(err(format!("connection `{conn}` is not open ({hint})")));
                }
                Ok(conn.to_string())
            };
            let step = match word {
                "connect" => {
                    let port = match after.split_whitespace().collect::<Vec<_>>()[..] {
                        [] => None,
                        ["port", port] => Some(port.parse::<u16>().map_err(|e| {
                            err(format!("connect: port `{port}` is not a port number: {e}"))
                        })?),
                        _ => return Err(err("usage: connect NAME [port N]".into())),
                    };
                    if conn.is_empty() {
                        return Err(err("usage: connect NAME [port N]".into()));
                    }
                    if open.iter().any(|c| c == conn) {
                        return Err(err(format!("connection `{conn}` is already open")));
                    }
                    open.push(conn.to_string());
                    ever.push(conn.to_string());
                    match port {
                        Some(port) => Step::ConnectPort(conn.to_string(), port),
                        None => Step::Connect(conn.to_string()),
                    }
                }
                "send" => {
                    let conn = needs_open(conn)?;
                    let (body, tail) = quoted(after).map_err(|m| err(format!("send: {m}")))?;
                    if !tail.trim().is_empty() {
                        return Err(err(format!("unexpected `{}` after the string", tail.trim())));
                    }
                    Step::Send(conn, unescape(body).map_err(err)?)
                }
                "expect" => {
                    let conn = needs_open(conn)?;
                    let (pattern, after) = match after.strip_prefix('~') {
                        Some(after) => (true, after),
                        None => (false, after),
                    };
                    let (body, tail) = quoted(after).map_err(|m| err(format!("expect: {m}")))?;
                    if !tail.trim().is_empty() {
                        return Err(err(format!("unexpected `{}` after the string", tail.trim())));
                    }
                    let expected = if pattern {
                        let anchored = format!("^(?:{body})");
                        Expected::Pattern(
                            regex::bytes::Regex::new(&anchored)
                                .map_err(|e| err(format!("bad pattern: {e}")))?,
                        )
                    } else {
                        Expected::Exact(unescape(body).map_err(err)?)
                    };
                    Step::Expect(conn, expected)
                }
                "fault" => {
                    let conn = needs_open(conn)?;
                    let (body, tail) = quoted(after).map_err(|m| err(format!("fault: {m}")))?;
                    if !tail.trim().is_empty() {
                        return Err(err(format!("unexpected `{}` after the string", tail.trim())));
                    }
                    open.retain(|c| *c != conn);
                    Step::Fault(conn, unescape(body).map_err(err)?)
                }
                "quiet" => Step::Quiet(needs_open(conn)?),
                "close" => {
                    let conn = needs_open(conn)?;
                    open.retain(|c| *c != conn);
                    Step::Close(conn)
                }
                "advance" => Step::Advance(duration(rest).map_err(err)?),
                "clock" => Step::Clock(timestamp(rest).map_err(err)?),
                "upgrade" => {
                    let mut words = rest.split_whitespace();
                    let wasm = words
                        .next()
                        .ok_or_else(|| err("usage: upgrade NEW.wasm [via T.wasm ...]".into()))?;
                    let transforms = match words.next() {
                        None => Vec::new(),
                        Some("via") => words.map(|t| dir.join(t)).collect(),
                        Some(other) => return Err(err(format!("expected `via`, found `{other}`"))),
                    };
                    Step::Upgrade { wasm: dir.join(wasm), transforms }
                }
                other => {
                    return Err(err(format!(
                        "unknown step `{other}` (connect, send, expect, quiet, advance, close, fault, upgrade)"
                    )));
                }
            };
            steps.push((line, step));
        }
        Ok(Self { name: name.to_string(), steps })
    }

    /// An empty trace, to build in code: `Trace::new("t").connect("a").send("a", "PING\r\n")`.
    /// Steps are numbered 1, 2, … where a file would give line numbers.
    pub fn new(name: &str) -> Self {
        Self { name: name.to_string(), steps: Vec::new() }
    }

    fn push(mut self, step: Step) -> Self {
        let line = self.steps.len() + 1;
        self.steps.push((line, step));
        self
    }

    /// Opens connection `conn`.
    pub fn connect(self, conn: &str) -> Self {
        self.push(Step::Connect(conn.into()))
    }

    /// Opens connection `conn` to the listener the app opened on `port`.
    pub fn connect_port(self, conn: &str, port: u16) -> Self {
        self.push(Step::ConnectPort(conn.into(), port))
    }

    /// `conn` sends `bytes`.
    pub fn send(self, conn: &str, bytes: impl AsRef<[u8]>) -> Self {
        self.push(Step::Send(conn.into(), bytes.as_ref().to_vec()))
    }

    /// The next bytes `conn` receives are exactly `bytes`.
    pub fn expect(self, conn: &str, bytes: impl AsRef<[u8]>) -> Self {
        self.push(Step::Expect(conn.into(), Expected::Exact(bytes.as_ref().to_vec())))
    }

    /// The next bytes `conn` receives match `pattern` (a regular expression, anchored).
    pub fn expect_match(self, conn: &str, pattern: &str) -> Result<Self, regex::Error> {
        let re = regex::bytes::Regex::new(&format!("^(?:{pattern})"))?;
        Ok(self.push(Step::Expect(conn.into(), Expected::Pattern(re))))
    }

    /// `conn` has received nothing it has not expected.
    pub fn quiet(self, conn: &str) -> Self {
        self.push(Step::Quiet(conn.into()))
    }

    /// The virtual clock moves on by `by`; due timers fire.
    pub fn advance(self, by: Duration) -> Self {
        self.push(Step::Advance(by))
    }

    /// The virtual clock moves on to `unix_ns` (ns since the Unix epoch); due timers fire.
    pub fn clock(self, unix_ns: u64) -> Self {
        self.push(Step::Clock(unix_ns))
    }

    /// `conn` disconnects.
    pub fn close(self, conn: &str) -> Self {
        self.push(Step::Close(conn.into()))
    }

    /// `conn` sends `bytes` and the guest traps handling them; the host closes `conn`.
    pub fn fault(self, conn: &str, bytes: impl AsRef<[u8]>) -> Self {
        self.push(Step::Fault(conn.into(), bytes.as_ref().to_vec()))
    }

    /// Events in the trace, not counting timers (which depend on the app).
    pub fn client_events(&self) -> usize {
        self.steps
            .iter()
            .filter(|(_, s)| {
                matches!(
                    s,
                    Step::Connect(_)
                        | Step::ConnectPort(..)
                        | Step::Send(..)
                        | Step::Close(_)
                        | Step::Fault(..)
                )
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_line_names_a_time_to_the_nanosecond_and_reads_back_as_written() {
        let ns = timestamp("2026-12-01T05:44:16.123456789Z").unwrap();
        assert_eq!(ns, 1_796_103_856_123_456_789);
        assert_eq!(format_timestamp(ns), "2026-12-01T05:44:16.123456789Z");
        assert_eq!(timestamp(&format_timestamp(ns)).unwrap(), ns);
        let err = timestamp("yesterday").unwrap_err();
        assert!(err.contains("is not a time like"), "{err}");
    }

    fn parse(text: &str) -> Result<Trace, TraceError> {
        Trace::parse("t.trace", text, Path::new("/traces"))
    }

    #[test]
    fn a_complete_trace_parses() {
        let t = parse(
            "# a comment\nconnect a\nsend a \"SET k \\\"x\\\"\\r\\n\\x00\"\nexpect a \"+OK\\r\\n\"\n\
             expect a ~ \"^:[0-9]+\\r\\n\"\nquiet a\nadvance 1500ms\nadvance 2s\nclose a\n\
             upgrade v2.wasm via a.wasm b.wasm\n",
        )
        .unwrap();
        assert_eq!(t.steps.len(), 9);
        let Step::Send(_, bytes) = &t.steps[1].1 else { panic!() };
        assert_eq!(bytes, b"SET k \"x\"\r\n\0");
        assert!(matches!(t.steps[5].1, Step::Advance(d) if d == Duration::from_millis(1500)));
        let Step::Upgrade { wasm, transforms } = &t.steps[8].1 else { panic!() };
        assert_eq!(wasm, Path::new("/traces/v2.wasm"));
        assert_eq!(transforms.len(), 2);
        assert_eq!(t.client_events(), 3);
    }

    #[test]
    fn errors_name_the_line_and_the_fix() {
        for (text, wanted) in [
            (
                "send a \"x\"",
                "t.trace:1: connection `a` is not open (open it first with `connect`)",
            ),
            (
                "connect a\nclose a\nsend a \"x\"",
                "t.trace:3: connection `a` is not open (it was closed earlier",
            ),
            ("connect a\nsend a \"x", "t.trace:2: send: the string has no closing `\"`"),
            ("connect a\nsend a x", "t.trace:2: send: expected a \"quoted string\""),
            ("advance 3 minutes", "t.trace:1: `3 minutes` is not a duration (like 250ms or 2s)"),
            ("connect a\nexpect a ~ \"(\"", "t.trace:2: bad pattern"),
            ("connect a\nsend a \"\\q\"", "t.trace:2: unknown escape `\\q`"),
            ("jump a", "t.trace:1: unknown step `jump`"),
            ("connect a\nconnect a", "t.trace:2: connection `a` is already open"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.starts_with(wanted), "{text:?}: {err}");
        }
    }

    #[test]
    fn escape_and_unescape_agree() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unescape(&escape(&bytes)).unwrap(), bytes);
    }
}

//! The control socket: how `tasuki upgrade` and `tasuki status` reach a running host.
//!
//! A Unix socket, created owner-only (mode 0600), so only the user running the host can drive it.
//! One request, one response, per connection. Each message is a frame:
//!
//! | bytes | what |
//! |---|---|
//! | 4 | magic `TSKC` |
//! | 4 | control protocol version, big-endian ([`PROTOCOL_VERSION`]) |
//! | 4 | body length, big-endian |
//! | N | body: postcard of a [`Request`] or a [`Response`] |
//!
//! A host and a client of different versions do not guess at each other's bodies: the host
//! answers a request of another version with a frame of its own version, and the client names
//! both versions. Frames without the magic come from a tasuki older than versioned frames (whose
//! frame was the length and the body); the host answers those in that old frame, with an error
//! it shows as it is.
//!
//! Every size and wait is bounded ([`MAX_CONTROL_MESSAGE`], [`CONTROL_READ_TIMEOUT`] for the
//! whole request, however it trickles in): a client that sends garbage or stalls gets an error
//! or is dropped, and the host goes on.

use crate::limits::{
    CONTROL_READ_TIMEOUT, CONTROL_STOP_GRACE, MAX_CONTROL_CLIENTS, MAX_CONTROL_MESSAGE,
};
use crate::snapshot::SnapshotReport;
use crate::status::Status;
use crate::upgrade::{UpgradeOptions, UpgradeReport};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;
use tracing::{debug, info, warn};

/// Where `run` listens and `upgrade`/`status` connect when `--control` is not given: a file in
/// the current directory, so commands started from the same place find each other.
pub const DEFAULT_CONTROL_PATH: &str = "tasuki.sock";

/// The frame's first bytes.
pub const FRAME_MAGIC: &[u8; 4] = b"TSKC";
/// The control protocol this tasuki speaks. Bump it whenever [`Request`] or [`Response`] (or
/// anything in them) changes shape.
pub const PROTOCOL_VERSION: u32 = 8;

/// A request to a running host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Status,
    /// Upgrade to the component at this path (absolute, read by the host).
    Upgrade {
        wasm: PathBuf,
        options: UpgradeOptions,
    },
    /// Write the running state to this file (absolute), at an event boundary.
    Snapshot {
        out: PathBuf,
    },
    /// Swap the live instance for a fresh one of the same release (`tasuki compact`); the
    /// answer is an [`Response::Upgraded`] whose report has `compaction` set.
    Compact,
}

/// A host's answer.
///
/// `Failed` must stay the fourth variant: it is what a tasuki older than versioned frames reads
/// (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Status(Box<Status>),
    Upgraded(Box<UpgradeReport>),
    Snapshotted(SnapshotReport),
    /// The request was understood and failed, or was not understood; the text says which.
    Failed(String),
}

/// Why a control request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "no tasuki host is listening at {path} ({reason}); start one with `tasuki run`, \
         or point at its socket with --control"
    )]
    NoHost { path: PathBuf, reason: io::Error },
    #[error("control socket {path}: {reason}")]
    Io { path: PathBuf, reason: io::Error },
    #[error(
        "refusing to use the control socket {path}: {reason}; a socket others can reach could be \
         a stranger's host. Only the user running `tasuki run` may drive it."
    )]
    Insecure { path: PathBuf, reason: String },
    #[error("control message of {0} bytes exceeds the limit of {MAX_CONTROL_MESSAGE}")]
    TooLarge(usize),
    #[error("control message does not decode: {0}")]
    Decode(String),
    #[error(
        "the host at {path} speaks control protocol {host}, this tasuki speaks {PROTOCOL_VERSION}: \
         use the tasuki binary the host was started with"
    )]
    Version { path: PathBuf, host: u32 },
    #[error(
        "the host at {path} did not answer in tasuki's control protocol: it may be a tasuki \
         from before versioned control frames; use the tasuki binary it was started with"
    )]
    NotTasuki { path: PathBuf },
    #[error(
        "the host at {path} closed the connection without an answer: it stopped or crashed \
         while handling the request (`tasuki status` shows whether it is still running)"
    )]
    NoAnswer { path: PathBuf },
}

fn write_message<T: Serialize>(stream: &mut impl Write, message: &T) -> io::Result<()> {
    write_frame(
        stream,
        PROTOCOL_VERSION,
        &postcard::to_allocvec(message).map_err(io::Error::other)?,
    )
}

fn write_frame(stream: &mut impl Write, version: u32, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(12 + body.len());
    frame.extend_from_slice(FRAME_MAGIC);
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    stream.write_all(&frame)?;
    stream.flush()
}

/// A frame as a tasuki from before versioned frames wrote and reads it: the length, the body.
fn write_unversioned<T: Serialize>(stream: &mut impl Write, message: &T) -> io::Result<()> {
    let body = postcard::to_allocvec(message).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    stream.write_all(&len.to_be_bytes())?;
    stream.write_all(&body)?;
    stream.flush()
}

/// Reads one frame of this protocol version and decodes its body, refusing anything over
/// [`MAX_CONTROL_MESSAGE`] before allocating.
pub fn decode_message<T: DeserializeOwned>(stream: &mut impl Read) -> Result<T, MessageError> {
    // The magic alone first: a frame without it may be shorter than a header.
    let mut header = [0u8; 12];
    stream.read_exact(&mut header[..4]).map_err(MessageError::Io)?;
    if &header[..4] != FRAME_MAGIC {
        return Err(MessageError::NotTasuki);
    }
    stream.read_exact(&mut header[4..]).map_err(MessageError::Io)?;
    let version = u32::from_be_bytes(header[4..8].try_into().unwrap_or_default());
    if version != PROTOCOL_VERSION {
        return Err(MessageError::Version(version));
    }
    let len = u32::from_be_bytes(header[8..12].try_into().unwrap_or_default()) as usize;
    if len > MAX_CONTROL_MESSAGE {
        return Err(MessageError::TooLarge(len));
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).map_err(MessageError::Io)?;
    postcard::from_bytes(&body).map_err(|e| MessageError::Decode(e.to_string()))
}

/// Why a framed message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("{0}")]
    Io(io::Error),
    #[error("message of {0} bytes exceeds the limit of {MAX_CONTROL_MESSAGE}")]
    TooLarge(usize),
    #[error("message does not decode: {0}")]
    Decode(String),
    #[error(
        "the client speaks control protocol {0}, this host speaks {PROTOCOL_VERSION}: use the \
         tasuki binary the host was started with"
    )]
    Version(u32),
    #[error(
        "not a tasuki control frame (no `TSKC` magic): a tasuki from before versioned control \
         frames? Use the tasuki binary the host was started with"
    )]
    NotTasuki,
}

/// A reader that fails once `deadline` passes, however the bytes trickle in: the bound is on
/// the whole request, not on each read.
struct Deadline<'a> {
    stream: &'a UnixStream,
    deadline: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the request took too long"));
        }
        self.stream.set_read_timeout(Some(left))?;
        (&mut &*self.stream).read(buf)
    }
}

/// The socket must belong to us and be closed to everyone else, like the host creates it.
fn check_owner(path: &Path) -> Result<(), ControlError> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(()); // connect reports the missing socket
    };
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(ControlError::Insecure {
            path: path.into(),
            reason: format!("it belongs to uid {}, not to you (uid {me})", meta.uid()),
        });
    }
    if meta.mode() & 0o077 != 0 {
        return Err(ControlError::Insecure {
            path: path.into(),
            reason: format!(
                "its mode is {:o}, open to other users (the host makes it 600)",
                meta.mode() & 0o777
            ),
        });
    }
    Ok(())
}

/// Sends one request to the host at `path` and waits for its answer.
pub fn request(path: &Path, request: &Request) -> Result<Response, ControlError> {
    check_owner(path)?;
    let mut stream = UnixStream::connect(path)
        .map_err(|reason| ControlError::NoHost { path: path.into(), reason })?;
    let io_err = |reason| ControlError::Io { path: path.into(), reason };
    write_message(&mut stream, request).map_err(io_err)?;
    decode_message(&mut stream).map_err(|e| match e {
        MessageError::Io(reason) if reason.kind() == io::ErrorKind::UnexpectedEof => {
            ControlError::NoAnswer { path: path.into() }
        }
        MessageError::Io(reason) => ControlError::Io { path: path.into(), reason },
        MessageError::TooLarge(n) => ControlError::TooLarge(n),
        MessageError::Decode(reason) => ControlError::Decode(reason),
        MessageError::Version(host) => ControlError::Version { path: path.into(), host },
        MessageError::NotTasuki => ControlError::NotTasuki { path: path.into() },
    })
}

/// Serves the control socket on a thread of its own; each client gets a thread, so a slow
/// upgrade never delays a `status`.
#[derive(Debug)]
pub(crate) struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    /// The listening socket, shared with the accept thread: shutting it down wakes a blocked
    /// `accept` even when the socket's file was deleted (connecting to it would then fail).
    wake: UnixListener,
    thread: Option<JoinHandle<()>>,
    /// Clients being served: a stopping host lets them have their answer first.
    clients: Arc<AtomicUsize>,
}

/// Binds `path`, replacing a stale socket left by a host that died, but never a live one or a
/// file that is not a socket.
fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket; refusing to replace it", path.display()),
            ));
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another tasuki host is already listening at {}", path.display()),
                ));
            }
            Err(_) => {
                debug!("removing stale control socket {}", path.display());
                std::fs::remove_file(path)?;
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

impl ControlServer {
    pub(crate) fn start(
        path: &Path,
        handle: impl Fn(Request) -> Response + Send + Sync + 'static,
    ) -> io::Result<Self> {
        let listener = bind(path)?;
        let wake = listener.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = Arc::new(handle);
        let shown = path.display().to_string();
        let clients = Arc::new(AtomicUsize::new(0));
        let serving = Arc::clone(&clients);
        let thread =
            std::thread::Builder::new().name("tasuki-control".into()).spawn(move || {
                for stream in listener.incoming() {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    let stream = match stream {
                        Ok(stream) => stream,
                        Err(e) => {
                            warn!("control accept failed: {e}");
                            continue;
                        }
                    };
                    if let Err(reason) = check_peer(&stream) {
                        warn!("control connection refused: {reason}");
                        continue;
                    }
                    if clients.fetch_add(1, Ordering::AcqRel) >= MAX_CONTROL_CLIENTS {
                        clients.fetch_sub(1, Ordering::AcqRel);
                        warn!(
                            "control connection refused: {MAX_CONTROL_CLIENTS} clients connected"
                        );
                        continue;
                    }
                    let handle = Arc::clone(&handle);
                    let count = Arc::clone(&clients);
                    let spawned = std::thread::Builder::new()
                        .name("tasuki-control-client".into())
                        .spawn(move || {
                            serve(stream, &*handle);
                            count.fetch_sub(1, Ordering::AcqRel);
                        });
                    if let Err(e) = spawned {
                        clients.fetch_sub(1, Ordering::AcqRel);
                        warn!("cannot serve a control client: {e}");
                    }
                }
            })?;
        info!("control socket at {shown}");
        Ok(Self { path: path.into(), stop, wake, thread: Some(thread), clients: serving })
    }
}

/// Only the host's own user (or root) may drive it. The socket's mode already keeps others out;
/// this holds even if someone loosened it.
fn check_peer(stream: &UnixStream) -> Result<(), String> {
    let peer = rustix::net::sockopt::socket_peercred(stream).map_err(|e| e.to_string())?;
    let me = rustix::process::geteuid();
    if peer.uid == me || peer.uid.is_root() {
        Ok(())
    } else {
        Err(format!("peer uid {} is not the host's uid {}", peer.uid.as_raw(), me.as_raw()))
    }
}

fn serve(mut stream: UnixStream, handle: &dyn Fn(Request) -> Response) {
    let deadline = Instant::now() + CONTROL_READ_TIMEOUT;
    let response = match decode_message::<Request>(&mut Deadline { stream: &stream, deadline }) {
        Ok(request) => {
            debug!(?request, "control request");
            handle(request)
        }
        Err(MessageError::Io(e)) => {
            debug!("control client went away or stalled: {e}");
            return;
        }
        Err(MessageError::NotTasuki) => {
            warn!("bad control request: {}", MessageError::NotTasuki);
            let answer = Response::Failed(format!(
                "this host speaks tasuki control protocol {PROTOCOL_VERSION}, with versioned \
                 frames; this client does not: use the tasuki binary the host was started with"
            ));
            if let Err(e) = write_unversioned(&mut stream, &answer) {
                debug!("control client went away before the answer: {e}");
            }
            return;
        }
        Err(e) => {
            warn!("bad control request: {e}");
            Response::Failed(format!("bad request: {e}"))
        }
    };
    if let Err(e) = write_message(&mut stream, &response) {
        debug!("control client went away before the answer: {e}");
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag: shutting the listening socket down makes
        // `accept` return at once (Linux), whether or not its file still exists.
        if let Err(e) = rustix::net::shutdown(&self.wake, rustix::net::Shutdown::Read) {
            debug!("control socket shutdown: {e}");
            let _ = UnixStream::connect(&self.path);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // A client mid-request (an upgrade the stop cancelled, say) gets its answer rather than
        // a connection closed under it; bounded, as a stop must be.
        let grace = Instant::now() + CONTROL_STOP_GRACE;
        while self.clients.load(Ordering::Acquire) > 0 && Instant::now() < grace {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(request: &Request) -> Vec<u8> {
        let mut bytes = Vec::new();
        write_message(&mut bytes, request).unwrap();
        bytes
    }

    #[test]
    fn a_request_round_trips() {
        let request = Request::Upgrade {
            wasm: "/srv/kv-v2.wasm".into(),
            options: UpgradeOptions {
                transforms: vec!["/srv/a.wasm".into(), "/srv/b.wasm".into()],
                from_checkpoint: true,
                no_precopy: true,
                no_catch_up: true,
                canary: Some(crate::canary::Window::Time(std::time::Duration::from_millis(1500))),
                divergence_dir: Some("/srv/canaries".into()),
                args: Some(vec!["idle=60".into(), "user=a:b".into()]),
            },
        };
        let bytes = frame(&request);
        assert_eq!(decode_message::<Request>(&mut &bytes[..]).unwrap(), request);
    }

    #[test]
    fn every_truncation_and_every_byte_flip_is_refused_or_decoded_never_a_panic() {
        let bytes = frame(&Request::Upgrade {
            wasm: "/a/b.wasm".into(),
            options: UpgradeOptions::default(),
        });
        for len in 0..bytes.len() {
            assert!(decode_message::<Request>(&mut &bytes[..len]).is_err(), "truncated at {len}");
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[i] ^= 1 << bit;
                let _ = decode_message::<Request>(&mut &flipped[..]);
            }
        }
    }

    #[test]
    fn random_input_never_panics() {
        // A fixed xorshift stream: the same inputs every run.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if bytes.len() >= 12 && next() % 2 == 0 {
                // A plausible header, so the body decoder is reached too.
                let body = (bytes.len() - 12) as u32;
                bytes[..4].copy_from_slice(FRAME_MAGIC);
                bytes[4..8].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
                bytes[8..12].copy_from_slice(&body.to_be_bytes());
            }
            let _ = decode_message::<Request>(&mut &bytes[..]);
            let _ = decode_message::<Response>(&mut &bytes[..]);
        }
    }

    #[test]
    fn another_protocol_version_or_an_unversioned_frame_is_named() {
        let mut bytes = frame(&Request::Status);
        let other = PROTOCOL_VERSION - 1;
        bytes[4..8].copy_from_slice(&other.to_be_bytes());
        let err = decode_message::<Request>(&mut &bytes[..]).unwrap_err();
        assert!(matches!(err, MessageError::Version(v) if v == other), "{err}");
        let named = format!("control protocol {other}, this host speaks {PROTOCOL_VERSION}");
        assert!(err.to_string().contains(&named), "{err}");
        // What a tasuki from before versioned frames sends: a length, then the body.
        let body = postcard::to_allocvec(&Request::Status).unwrap();
        let mut old = (body.len() as u32).to_be_bytes().to_vec();
        old.extend_from_slice(&body);
        let err = decode_message::<Request>(&mut &old[..]).unwrap_err();
        assert!(matches!(err, MessageError::NotTasuki), "{err}");
    }

    #[test]
    fn a_length_over_the_limit_is_refused_before_allocating() {
        let mut bytes = FRAME_MAGIC.to_vec();
        bytes.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        bytes.extend_from_slice(&(MAX_CONTROL_MESSAGE as u32 + 1).to_be_bytes());
        assert!(matches!(
            decode_message::<Request>(&mut &bytes[..]),
            Err(MessageError::TooLarge(_))
        ));
    }
}

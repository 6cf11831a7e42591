//! The control socket: how `tasuki upgrade` and `tasuki status` reach a running host.
//!
//! A Unix socket, created owner-only (mode 0600), so only the user running the host can drive it.
//! Each message is a 4-byte big-endian length and a postcard body; one request, one response,
//! per connection. Every size and wait is bounded ([`MAX_CONTROL_MESSAGE`],
//! [`CONTROL_READ_TIMEOUT`]): a client that sends garbage or stalls gets an error or is dropped,
//! and the host goes on.

use crate::limits::{CONTROL_READ_TIMEOUT, MAX_CONTROL_MESSAGE};
use crate::status::Status;
use crate::upgrade::UpgradeReport;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use tracing::{debug, info, warn};

/// Where `run` listens and `upgrade`/`status` connect when `--control` is not given: a file in
/// the current directory, so commands started from the same place find each other.
pub const DEFAULT_CONTROL_PATH: &str = "tasuki.sock";

/// A request to a running host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Status,
    /// Upgrade to the component at this path (absolute, read by the host).
    Upgrade {
        wasm: PathBuf,
    },
}

/// A host's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Status(Status),
    Upgraded(UpgradeReport),
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
    #[error("control message of {0} bytes exceeds the limit of {MAX_CONTROL_MESSAGE}")]
    TooLarge(usize),
    #[error("control message does not decode: {0}")]
    Decode(String),
}

fn write_message<T: Serialize>(stream: &mut impl Write, message: &T) -> io::Result<()> {
    let body = postcard::to_allocvec(message).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    stream.write_all(&frame)?;
    stream.flush()
}

/// Reads one framed message, refusing anything over [`MAX_CONTROL_MESSAGE`] before allocating.
pub fn decode_message<T: DeserializeOwned>(stream: &mut impl Read) -> Result<T, MessageError> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).map_err(MessageError::Io)?;
    let len = u32::from_be_bytes(len) as usize;
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
}

/// Sends one request to the host at `path` and waits for its answer.
pub fn request(path: &Path, request: &Request) -> Result<Response, ControlError> {
    let mut stream = UnixStream::connect(path)
        .map_err(|reason| ControlError::NoHost { path: path.into(), reason })?;
    let io_err = |reason| ControlError::Io { path: path.into(), reason };
    write_message(&mut stream, request).map_err(io_err)?;
    decode_message(&mut stream).map_err(|e| match e {
        MessageError::Io(reason) => ControlError::Io { path: path.into(), reason },
        MessageError::TooLarge(n) => ControlError::TooLarge(n),
        MessageError::Decode(reason) => ControlError::Decode(reason),
    })
}

/// Serves the control socket on a thread of its own; each client gets a thread, so a slow
/// upgrade never delays a `status`.
#[derive(Debug)]
pub(crate) struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
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
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = Arc::new(handle);
        let shown = path.display().to_string();
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
                    let handle = Arc::clone(&handle);
                    let spawned = std::thread::Builder::new()
                        .name("tasuki-control-client".into())
                        .spawn(move || serve(stream, &*handle));
                    if let Err(e) = spawned {
                        warn!("cannot serve a control client: {e}");
                    }
                }
            })?;
        info!("control socket at {shown}");
        Ok(Self { path: path.into(), stop, thread: Some(thread) })
    }
}

fn serve(mut stream: UnixStream, handle: &dyn Fn(Request) -> Response) {
    if let Err(e) = stream.set_read_timeout(Some(CONTROL_READ_TIMEOUT)) {
        warn!("control client: {e}");
        return;
    }
    let response = match decode_message::<Request>(&mut stream) {
        Ok(request) => {
            debug!(?request, "control request");
            handle(request)
        }
        Err(MessageError::Io(e)) => {
            debug!("control client went away or stalled: {e}");
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
        // Wake the accept loop so it sees the flag.
        let _ = UnixStream::connect(&self.path);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

//! Streams: "send this to that connection" as one call ([`crate::Ctx::stream`]), sent as fast
//! as the client reads and no faster, and carried on by the next version if an upgrade comes
//! first.
//!
//! The SDK keeps, per connection, a send window: what the host takes before that connection's
//! queued output passes `--output-buffer` (`tasuki run`). A stream sends what the window
//! allows, then the SDK asks the host to say when the connection can take more
//! (`net.notify-writable`) and sends the next part when it does (`on-writable`). So streaming
//! a gigabyte costs the host one `--output-buffer` of memory, not a gigabyte, and a client that
//! reads slowly slows the stream, not the host.
//!
//! A stream's place is state: each [`Source`] is something the SDK can write down and take up
//! again — bytes held in the state, a file by its path and offset, chunks the app makes from
//! its own state by offset — never a handle that only this instance holds (a file descriptor, an
//! iterator), which could not cross an upgrade. What is left of a stream crosses with its
//! connection (the `tasuki.conns` section), and the new version sends the rest.

use crate::{ConnId, Server};
use serde::{Deserialize, Serialize};

/// What a stream sends. Each kind can be taken up again where it stopped, in another version
/// of the app (an upgrade) or in a rebuilt instance (after a trap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// These bytes. They are held in the state until sent, and so cross an upgrade inside its
    /// pause: for payloads built in memory (a directory listing, a reply built whole), not
    /// for big ones.
    Bytes(Vec<u8>),
    /// The file at `path` (as the guest sees it: under a directory `tasuki run --dir` granted),
    /// from byte `offset`, `len` bytes or (`None`) to its end as it is when the stream gets
    /// there. Read a window at a time; an open file cannot cross an upgrade, so its path and
    /// position do, and the version that carries the stream on opens it again there (what
    /// Ekiden did for descriptors). A file that cannot be opened or read, or that ends before
    /// `len`, ends the stream with [`StreamEnd::Failed`].
    File {
        /// The file's path.
        path: String,
        /// Where to start, in bytes from its beginning.
        offset: u64,
        /// How many bytes to send; `None` for the rest of the file.
        len: Option<u64>,
    },
    /// Bytes the app makes as they are wanted, from its state: [`Server::next_chunk`] with this
    /// key and the offset reached so far. An iterator of chunks that can cross an upgrade,
    /// because where it stands is a number: for a payload too big to hold, or one the app
    /// reads from a source of its own.
    Chunks {
        /// The app's name for what to send (passed to [`Server::next_chunk`]).
        key: String,
    },
}

/// How a stream ended, as [`Server::on_stream_end`] is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// Every byte was queued for the connection (the host writes it, in order, before
    /// anything queued later).
    Done {
        /// Bytes sent.
        bytes: u64,
    },
    /// The source failed after `bytes` were sent (a file went away or is shorter than asked,
    /// [`Server::next_chunk`] returned an error): the rest is not sent. The connection stays
    /// open; close it if the protocol cannot go on after a truncated payload.
    Failed {
        /// Bytes sent before the failure.
        bytes: u64,
        /// What failed, in words.
        error: String,
    },
    /// The connection went away before the stream was sent: its client disconnected, or the
    /// SDK closed it past an input limit.
    Gone {
        /// Bytes sent before it went.
        bytes: u64,
    },
}

/// A stream under way on a connection: its source and how far it got. Part of the per-connection
/// state that crosses an upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stream {
    pub(crate) source: Source,
    /// Bytes sent so far.
    pub(crate) sent: u64,
    /// Started by the app ([`crate::Ctx::stream`]), which is told when it ends; the SDK's own
    /// streams carry output the app queued behind another stream, in order.
    pub(crate) told: bool,
}

/// What one [`Stream::fill`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Filled {
    /// It appended what it was allowed, and there is more.
    More,
    /// It reached the end of the source.
    Done,
    /// The source failed, for this reason.
    Failed(String),
}

impl Stream {
    pub(crate) fn new(source: Source, told: bool) -> Self {
        Self { source, sent: 0, told }
    }

    /// Appends the next bytes, at most `max` (at least 1), to `out`, which the caller sends to
    /// `conn`.
    pub(crate) fn fill<S: Server>(
        &mut self,
        server: &mut S,
        conn: ConnId,
        out: &mut Vec<u8>,
        max: usize,
    ) -> Filled {
        let start = out.len();
        let filled = match &self.source {
            Source::Bytes(bytes) => {
                let from = usize::try_from(self.sent).unwrap_or(usize::MAX).min(bytes.len());
                let n = max.min(bytes.len() - from);
                out.extend_from_slice(&bytes[from..from + n]);
                if from + n == bytes.len() { Filled::Done } else { Filled::More }
            }
            Source::File { path, offset, len } => {
                match read_file(path, offset.saturating_add(self.sent), *len, self.sent, out, max) {
                    Ok(true) => Filled::Done,
                    Ok(false) => Filled::More,
                    Err(e) => Filled::Failed(e),
                }
            }
            Source::Chunks { key } => {
                let mut filled = Filled::More;
                while out.len() - start < max {
                    let before = out.len();
                    let offset = self.sent + (before - start) as u64;
                    let room = max - (before - start);
                    if let Err(e) = server.next_chunk(conn, key, offset, room, out) {
                        out.truncate(before);
                        filled = Filled::Failed(e);
                        break;
                    }
                    if out.len() == before {
                        filled = Filled::Done;
                        break;
                    }
                    // More than asked is kept: the app's bytes are never dropped.
                }
                filled
            }
        };
        self.sent += (out.len() - start) as u64;
        if let (Source::Bytes(bytes), Filled::Done) = (&mut self.source, &filled) {
            // Sent bytes need not be held until the stream is forgotten.
            *bytes = Vec::new();
        }
        filled
    }
}

/// Reads up to `max` bytes of the file at `path` from `at` into `out`. `len` is how much of it
/// the stream sends in all, of which `sent` are sent. True when the stream reached its end.
fn read_file(
    path: &str,
    at: u64,
    len: Option<u64>,
    sent: u64,
    out: &mut Vec<u8>,
    max: usize,
) -> Result<bool, String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot open {path}: {e}"))?;
    let size = file.metadata().map_err(|e| format!("cannot read {path}: {e}"))?.len();
    let end = match len {
        Some(len) => {
            let end = at.saturating_add(len - sent.min(len));
            if end > size {
                return Err(format!(
                    "{path} is {size} bytes, shorter than the {} asked for from byte {}",
                    len,
                    at - sent
                ));
            }
            end
        }
        None => size,
    };
    if at >= end {
        return Ok(true);
    }
    let want = usize::try_from(end - at).unwrap_or(usize::MAX).min(max);
    file.seek(SeekFrom::Start(at)).map_err(|e| format!("cannot seek in {path}: {e}"))?;
    let start = out.len();
    out.resize(start + want, 0);
    let mut got = 0;
    while got < want {
        match file.read(&mut out[start + got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                out.truncate(start);
                return Err(format!("cannot read {path}: {e}"));
            }
        }
    }
    out.truncate(start + got);
    if got < want {
        return Err(format!("{path} ended at byte {} while being sent", at + got as u64));
    }
    Ok(at + got as u64 == end)
}

#[cfg(test)]
mod tests;

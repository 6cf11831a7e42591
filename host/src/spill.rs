//! What the host keeps only to rebuild a trapped instance — a checkpoint's pre-copied chunks
//! ([`Chunks`]; an upgrade's too, on their way to becoming the new version's first checkpoint)
//! and the recovery journal's bytes ([`Log`]) — written to a file rather than held in the
//! heap.
//!
//! A checkpoint is a second copy of the app's state, and the journal grows to about as much
//! again before the next checkpoint. Held in the heap they added up to twice the state's size
//! to the host's resident memory (a checkpoint of 37 MiB for 1M keys of 16 bytes, and the
//! journal's buffer kept at its peak), where redis-server holds one copy. In a file they cost
//! page cache instead, which the kernel writes back and reclaims when memory is short, and
//! which is not the process's resident memory. Each file is unnamed (`O_TMPFILE` where the
//! system has it): it goes with the last handle to it, a crash leaves nothing to clean up, and
//! no other process can open it. Reading back — a rebuild after a trap, `tasuki snapshot`,
//! `upgrade --from-checkpoint` — is rare.
//!
//! Writing never fails a checkpoint or loses a journaled event: if the file cannot be made or
//! written (a missing directory, a full disk), what comes from then on is kept in the heap, as
//! before, and the log says so (once per process).
//!
//! The directory is `--checkpoint-dir` (the system's temporary directory by default). On a
//! tmpfs the files are RAM all the same, only not counted as the process's; put them on a disk
//! for the memory to be given back.

use crate::bindings::Chunk;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, mpsc};

/// Whether the log has said that recovery state is kept in the heap because a file failed.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Says (once per process) that a file in `dir` failed and the heap is used instead.
fn warn_heap(dir: Option<&Path>, error: &io::Error) {
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "cannot write recovery state to a file in {} ({error}): keeping it in memory \
             (--checkpoint-dir)",
            dir.map_or("?".into(), |d| d.display().to_string())
        );
    }
}

/// Drops `value` on a thread of its own (`tasuki-drop`, started by the first call), or here if
/// that thread cannot be started.
///
/// For the files of a checkpoint that was replaced and of a journal that starts over: freeing a
/// file's blocks takes milliseconds per tens of MiB, and more on a file system mounted with
/// `discard` (which hands each freed extent to the device at once). Measured on the machine of
/// `bench/RESULTS.md` (ext4, `discard`): closing the last handle of an unnamed 38 MiB file 1–9
/// ms, truncating it once written back 10 ms, 80 MiB 25 ms — on the event loop, the longest a
/// checkpoint's cut kept SETs waiting (10.9 ms at 1M keys). Big heap buffers go the same way:
/// unmapping their pages costs as much per page.
pub(crate) fn drop_later<T: Send + 'static>(value: T) {
    type Parcel = Box<dyn Send>;
    static DROPPER: OnceLock<Option<mpsc::Sender<Parcel>>> = OnceLock::new();
    let dropper = DROPPER.get_or_init(|| {
        let (send, receive) = mpsc::channel::<Parcel>();
        std::thread::Builder::new()
            .name("tasuki-drop".into())
            .spawn(move || receive.into_iter().for_each(drop))
            .ok()
            .map(|_| send)
    });
    if let Some(dropper) = dropper {
        // The thread never ends, so the send cannot fail; if it did, the value comes back
        // inside the error and is dropped here.
        let _ = dropper.send(Box::new(value));
    }
}

/// Bytes of the journal kept in the heap before they are written to its file: one write per
/// MiB of input.
const LOG_TAIL: usize = 1 << 20;

/// Bytes of chunks read back at once when they are imported: a rebuild needs the checkpoint's
/// chunks in the host's heap only a batch at a time.
pub(crate) const IMPORT_BATCH: u64 = 16 << 20;

/// Chunks in order, in a file or (failing that, or when asked) in the heap.
#[derive(Clone)]
pub(crate) struct Chunks {
    /// Where the file is made when the first chunk arrives; `None` keeps chunks in the heap.
    dir: Option<PathBuf>,
    /// Shared by the clones (a snapshot being written off the loop reads it).
    file: Option<Arc<File>>,
    /// Bytes written to the file.
    end: u64,
    stored: Vec<Stored>,
    bytes: u64,
}

#[derive(Clone)]
struct Stored {
    section: String,
    version: u32,
    place: Place,
}

#[derive(Clone)]
enum Place {
    File { offset: u64, len: usize },
    Heap(Vec<u8>),
}

impl Chunks {
    /// No chunks; those that come are written to a file made in `dir` (`None`: kept in the
    /// heap).
    pub(crate) fn new(dir: Option<&Path>) -> Self {
        Self { dir: dir.map(Path::to_path_buf), file: None, end: 0, stored: Vec::new(), bytes: 0 }
    }

    /// `chunks`, written to a file made in `dir`.
    pub(crate) fn from_vec(dir: Option<&Path>, chunks: Vec<Chunk>) -> Self {
        let mut stored = Self::new(dir);
        stored.extend(chunks);
        stored
    }

    /// Appends `chunk`.
    pub(crate) fn push(&mut self, chunk: Chunk) {
        let Chunk { section, version, bytes } = chunk;
        self.bytes += bytes.len() as u64;
        let place = match self.write(&bytes) {
            Ok(Some(offset)) => Place::File { offset, len: bytes.len() },
            Ok(None) => Place::Heap(bytes),
            Err(e) => {
                warn_heap(self.dir.as_deref(), &e);
                self.dir = None;
                Place::Heap(bytes)
            }
        };
        self.stored.push(Stored { section, version, place });
    }

    /// Appends each of `chunks`.
    pub(crate) fn extend(&mut self, chunks: impl IntoIterator<Item = Chunk>) {
        for chunk in chunks {
            self.push(chunk);
        }
    }

    /// Writes `bytes` at the end of the file (made now if this is the first): their offset, or
    /// `None` when chunks are kept in the heap.
    fn write(&mut self, bytes: &[u8]) -> io::Result<Option<u64>> {
        let Some(dir) = &self.dir else { return Ok(None) };
        if self.file.is_none() {
            self.file = Some(Arc::new(tempfile::tempfile_in(dir)?));
        }
        let file = self.file.as_ref().expect("made above");
        file.write_all_at(bytes, self.end)?;
        let offset = self.end;
        self.end += bytes.len() as u64;
        Ok(Some(offset))
    }

    /// Bytes of the chunks.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes of the chunks kept in the heap (not in the file).
    pub(crate) fn heap_bytes(&self) -> u64 {
        self.stored
            .iter()
            .map(|s| match &s.place {
                Place::Heap(bytes) => bytes.len() as u64,
                Place::File { .. } => 0,
            })
            .sum()
    }

    fn read_one(&self, stored: &Stored) -> io::Result<Chunk> {
        let bytes = match &stored.place {
            Place::Heap(bytes) => bytes.clone(),
            Place::File { offset, len } => {
                let file = self.file.as_ref().expect("a chunk in the file");
                let mut bytes = vec![0; *len];
                file.read_exact_at(&mut bytes, *offset)?;
                bytes
            }
        };
        Ok(Chunk { section: stored.section.clone(), version: stored.version, bytes })
    }

    /// Every chunk, read back into the heap.
    pub(crate) fn read(&self) -> io::Result<Vec<Chunk>> {
        self.stored.iter().map(|s| self.read_one(s)).collect()
    }

    /// The chunks in order, read back a batch of about `max_bytes` at a time and handed to
    /// `each`; stops at the first error, of the file (`Err(Err)`) or of `each`.
    pub(crate) fn read_batches<E>(
        &self,
        max_bytes: u64,
        mut each: impl FnMut(Vec<Chunk>) -> Result<(), E>,
    ) -> Result<(), Result<io::Error, E>> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        for stored in &self.stored {
            let chunk = self.read_one(stored).map_err(Ok)?;
            bytes += chunk.bytes.len() as u64;
            batch.push(chunk);
            if bytes >= max_bytes {
                each(std::mem::take(&mut batch)).map_err(Err)?;
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            each(batch).map_err(Err)?;
        }
        Ok(())
    }
}

impl Drop for Chunks {
    /// The file (if this is its last handle) is freed off the caller's thread: see
    /// [`drop_later`].
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            drop_later(file);
        }
    }
}

impl std::fmt::Debug for Chunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunks")
            .field("chunks", &self.stored.len())
            .field("bytes", &self.bytes)
            .field("in_file", &(self.bytes - self.heap_bytes()))
            .finish()
    }
}

/// Bytes appended at the end and read back whole (the recovery journal's): all but the last
/// [`LOG_TAIL`] or so in a file.
pub(crate) struct Log {
    /// Where the file is made when the tail first fills; `None` keeps everything in the heap.
    dir: Option<PathBuf>,
    file: Option<File>,
    /// The log's first `flushed` bytes are in the file; the rest in `tail`.
    flushed: usize,
    tail: Vec<u8>,
}

/// A [`Log`]'s bytes at one moment ([`Log::copy`]).
#[derive(Debug)]
pub(crate) struct LogCopy {
    file: Option<File>,
    flushed: usize,
    tail: Vec<u8>,
}

impl LogCopy {
    /// Every byte of the log as it was, read back into the heap.
    pub(crate) fn read(self) -> io::Result<Vec<u8>> {
        read_log(self.file.as_ref(), self.flushed, &self.tail)
    }
}

/// A log's first `flushed` bytes from `file`, then `tail`, into the heap.
fn read_log(file: Option<&File>, flushed: usize, tail: &[u8]) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0; flushed];
    if let Some(file) = file {
        file.read_exact_at(&mut bytes, 0)?;
    }
    bytes.extend_from_slice(tail);
    Ok(bytes)
}

impl Drop for Log {
    /// The file is freed off the caller's thread: see [`drop_later`].
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            drop_later(file);
        }
    }
}

impl Log {
    /// An empty log whose bytes go to a file made in `dir` (`None`: kept in the heap).
    pub(crate) fn new(dir: Option<&Path>) -> Self {
        Self { dir: dir.map(Path::to_path_buf), file: None, flushed: 0, tail: Vec::new() }
    }

    /// Bytes in the log.
    pub(crate) fn len(&self) -> usize {
        self.flushed + self.tail.len()
    }

    /// Appends `bytes`; where they are in the log.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.len();
        self.tail.extend_from_slice(bytes);
        if self.tail.len() >= LOG_TAIL && self.dir.is_some() {
            self.flush();
        }
        start..self.len()
    }

    /// Moves the tail to the file; on failure it stays, and so does everything after it.
    fn flush(&mut self) {
        let Some(dir) = &self.dir else { return };
        let written = match &self.file {
            Some(file) => Ok(file),
            None => tempfile::tempfile_in(dir).map(|file| &*self.file.insert(file)),
        }
        .and_then(|file| file.write_all_at(&self.tail, self.flushed as u64));
        match written {
            Ok(()) => {
                self.flushed += self.tail.len();
                self.tail.clear();
                if self.tail.capacity() > 2 * LOG_TAIL {
                    self.tail.shrink_to(LOG_TAIL);
                }
            }
            Err(e) => {
                warn_heap(self.dir.as_deref(), &e);
                self.dir = None;
            }
        }
    }

    /// Empties the log, giving back the heap and the file's pages. The file is dropped off
    /// the caller's thread ([`drop_later`]: truncating it in place cost as long) and the next
    /// flush makes a new one.
    pub(crate) fn clear(&mut self) {
        self.tail = Vec::new();
        self.flushed = 0;
        if let Some(file) = self.file.take() {
            drop_later(file);
        }
    }

    /// The log as it stands, to be read back later on another thread: the file's written
    /// bytes stay as they are (the log only appends to its file, and a cleared log lets go of
    /// its file rather than truncate it), so a second handle and the tail suffice.
    pub(crate) fn copy(&self) -> io::Result<LogCopy> {
        let file = self.file.as_ref().map(File::try_clone).transpose()?;
        Ok(LogCopy { file, flushed: self.flushed, tail: self.tail.clone() })
    }

    /// Every byte of the log, read back into the heap.
    pub(crate) fn read(&self) -> io::Result<Vec<u8>> {
        read_log(self.file.as_ref(), self.flushed, &self.tail)
    }

    /// Bytes of it kept in the heap.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.tail.len()
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("flushed", &self.flushed)
            .field("tail", &self.tail.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(i: u8, len: usize) -> Chunk {
        Chunk { section: format!("s{i}"), version: u32::from(i), bytes: vec![i; len] }
    }

    fn parts(chunks: &[Chunk]) -> Vec<(String, u32, Vec<u8>)> {
        chunks.iter().map(|c| (c.section.clone(), c.version, c.bytes.clone())).collect()
    }

    /// Where a value handed to `drop_later` is dropped, and that it is: the caller's thread (the
    /// event loop's, for a checkpoint's cut) never pays for it.
    #[test]
    fn drop_later_drops_on_a_thread_of_its_own() {
        struct Noted(mpsc::Sender<Option<String>>);
        impl Drop for Noted {
            fn drop(&mut self) {
                let _ = self.0.send(std::thread::current().name().map(str::to_owned));
            }
        }
        let (send, dropped) = mpsc::channel();
        drop_later(Noted(send));
        let on = dropped.recv_timeout(std::time::Duration::from_secs(10)).expect("dropped");
        assert_eq!(on.as_deref(), Some("tasuki-drop"));
    }

    /// A journal that starts over lets go of its file (freed off the caller's thread) and
    /// writes the next bytes to a new one, which holds only them.
    #[test]
    fn a_cleared_log_starts_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::new(Some(dir.path()));
        log.append(&vec![1; LOG_TAIL]);
        assert!(log.file.is_some(), "flushed to a file");
        log.clear();
        assert!(log.file.is_none(), "the file is let go of, not truncated in place");
        assert_eq!(log.len(), 0);
        log.append(&vec![2; LOG_TAIL]);
        let second = log.file.as_ref().expect("flushed to a file");
        assert_eq!(second.metadata().unwrap().len(), LOG_TAIL as u64);
        assert_eq!(log.read().unwrap(), vec![2; LOG_TAIL]);
    }

    /// What goes in comes back, in order, from the file or the heap, whole or in batches; the
    /// file holds it, the heap does not.
    #[test]
    fn chunks_read_back_as_they_were_written() {
        let dir = tempfile::tempdir().unwrap();
        let written: Vec<Chunk> = (0..20).map(|i| chunk(i, 1000 + usize::from(i))).collect();
        for store in [Some(dir.path()), None] {
            let stored = Chunks::from_vec(store, written.clone());
            assert_eq!(parts(&stored.read().unwrap()), parts(&written));
            assert_eq!(stored.bytes(), written.iter().map(|c| c.bytes.len() as u64).sum());
            assert_eq!(stored.heap_bytes(), if store.is_some() { 0 } else { stored.bytes() });
            let mut batches = Vec::new();
            stored
                .read_batches(5000, |batch| {
                    batches.push(batch.len());
                    Ok::<(), ()>(())
                })
                .unwrap();
            assert_eq!(batches, [5, 5, 5, 5]);
            // A clone shares the file: it reads the same after the original is gone.
            let clone = stored.clone();
            drop(stored);
            assert_eq!(parts(&clone.read().unwrap()), parts(&written));
        }
    }

    /// A directory that cannot hold the file leaves the chunks in the heap, none lost.
    #[test]
    fn a_directory_that_fails_keeps_the_chunks_in_the_heap() {
        let missing = Path::new("/nonexistent/tasuki-checkpoints");
        let written: Vec<Chunk> = (0..3).map(|i| chunk(i, 10)).collect();
        let stored = Chunks::from_vec(Some(missing), written.clone());
        assert_eq!(parts(&stored.read().unwrap()), parts(&written));
        assert_eq!(stored.heap_bytes(), 30);
    }

    /// The journal's bytes come back as appended, across the tail's flushes to the file, and
    /// start over when cleared; only the tail is in the heap.
    #[test]
    fn a_log_reads_back_what_was_appended() {
        let dir = tempfile::tempdir().unwrap();
        for store in [Some(dir.path()), None, Some(Path::new("/nonexistent/tasuki"))] {
            let mut log = Log::new(store);
            let mut expected = Vec::new();
            for i in 0..300u32 {
                let bytes = vec![i as u8; 10_000 + i as usize];
                let range = log.append(&bytes);
                assert_eq!(range, expected.len()..expected.len() + bytes.len());
                expected.extend_from_slice(&bytes);
            }
            assert_eq!(log.len(), expected.len());
            assert_eq!(log.read().unwrap(), expected);
            let in_heap = if store == Some(dir.path()) { LOG_TAIL } else { expected.len() };
            assert!(log.heap_bytes() <= in_heap, "{} in the heap", log.heap_bytes());
            log.clear();
            assert_eq!((log.len(), log.read().unwrap()), (0, Vec::new()));
            log.append(b"again");
            assert_eq!(log.read().unwrap(), b"again");
        }
    }
}

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
///
/// Positions are offsets from the log's first byte ever, and stay valid when the front is let
/// go of ([`Log::drop_front`]): a checkpoint built off the loop replaces only the events up to
/// where it was taken, and the rest keep their places.
pub(crate) struct Log {
    /// Where the file is made when the tail first fills; `None` keeps everything in the heap.
    dir: Option<PathBuf>,
    file: Option<File>,
    /// Bytes before this position were let go of: not counted, not read back.
    start: usize,
    /// Bytes of the file before this position have been handed back to the file system.
    freed: usize,
    /// The tail starts at this position; the bytes before it (from `start` on) are in the file.
    flushed: usize,
    tail: Vec<u8>,
    /// One more holder for every [`LogCopy`] not yet read back: while there is one, no byte of
    /// the file is freed (the copy may still read it).
    readers: Arc<()>,
}

/// A [`Log`]'s bytes at one moment ([`Log::copy`]).
#[derive(Debug)]
pub(crate) struct LogCopy {
    file: Option<File>,
    start: usize,
    flushed: usize,
    tail: Vec<u8>,
    _reader: Arc<()>,
}

impl LogCopy {
    /// Every byte of the log as it was, read back into the heap.
    pub(crate) fn read(self) -> io::Result<LogBytes> {
        read_log(self.file.as_ref(), self.start, self.flushed, &self.tail)
    }
}

/// A log's bytes read back, indexed by their positions in the log.
#[derive(Debug)]
pub(crate) struct LogBytes {
    /// The position of `bytes[0]`.
    from: usize,
    bytes: Vec<u8>,
}

impl LogBytes {
    /// The bytes at `range`, a range [`Log::append`] returned.
    ///
    /// # Panics
    /// When `range` is not within what was read back.
    pub(crate) fn get(&self, range: Range<usize>) -> &[u8] {
        &self.bytes[range.start - self.from..range.end - self.from]
    }
}

/// A log's bytes from `start` on: those before `flushed` from `file`, then `tail` (which
/// starts at `flushed`), into the heap.
fn read_log(
    file: Option<&File>,
    start: usize,
    flushed: usize,
    tail: &[u8],
) -> io::Result<LogBytes> {
    let mut bytes = vec![0; flushed.saturating_sub(start)];
    if let Some(file) = file {
        file.read_exact_at(&mut bytes, start as u64)?;
    }
    bytes.extend_from_slice(&tail[start.saturating_sub(flushed)..]);
    Ok(LogBytes { from: start, bytes })
}

/// Dead bytes at the front of a log's file handed back to the file system at once: a
/// `fallocate` per 16 MiB of journal let go of, at most.
const PUNCH_MIN: usize = 16 << 20;

/// A range of a file to hand back to the file system when dropped (`fallocate` with
/// `FALLOC_FL_PUNCH_HOLE`: the file keeps its size and every other byte's offset), which
/// [`drop_later`] does off the caller's thread. Where the file system cannot, the blocks stay
/// until the file is dropped.
struct Punch {
    file: File,
    range: Range<usize>,
}

impl Drop for Punch {
    fn drop(&mut self) {
        use rustix::fs::{FallocateFlags, fallocate};
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        let (offset, len) = (self.range.start as u64, (self.range.end - self.range.start) as u64);
        if let Err(e) = fallocate(&self.file, flags, offset, len) {
            tracing::debug!("cannot free {len} bytes of the journal's file: {e}");
        }
    }
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
        Self {
            dir: dir.map(Path::to_path_buf),
            file: None,
            start: 0,
            freed: 0,
            flushed: 0,
            tail: Vec::new(),
            readers: Arc::new(()),
        }
    }

    /// Bytes in the log (from the front let go of on).
    pub(crate) fn len(&self) -> usize {
        self.end() - self.start
    }

    /// The position after the last byte.
    pub(crate) fn end(&self) -> usize {
        self.flushed + self.tail.len()
    }

    /// Appends `bytes`; where they are in the log.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.end();
        self.tail.extend_from_slice(bytes);
        if self.tail.len() >= LOG_TAIL && self.dir.is_some() {
            self.flush();
        }
        start..self.end()
    }

    /// Lets go of the bytes before position `to` (at most [`Self::end`]): they are no longer
    /// counted or read back; those in the file are handed back to the file system off the
    /// caller's thread, 16 MiB or more at a time ([`PUNCH_MIN`]) and only while no copy waits
    /// to read them ([`Log::copy`]); those in the tail are removed here, the bytes after them
    /// moved down (at most [`LOG_TAIL`] and one append with a file; the whole journal kept in
    /// the heap when there is none, whose buffer keeps its capacity).
    pub(crate) fn drop_front(&mut self, to: usize) {
        let to = to.clamp(self.start, self.end());
        self.start = to;
        if to > self.flushed {
            self.tail.drain(..to - self.flushed);
            self.flushed = to;
        }
        let dead = self.start.min(self.flushed);
        if let Some(file) = &self.file
            && dead - self.freed >= PUNCH_MIN
            && Arc::strong_count(&self.readers) == 1
            && let Ok(file) = file.try_clone()
        {
            drop_later(Punch { file, range: self.freed..dead });
            self.freed = dead;
        }
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
        (self.start, self.freed, self.flushed) = (0, 0, 0);
        if let Some(file) = self.file.take() {
            drop_later(file);
        }
    }

    /// The log as it stands, to be read back later on another thread: the file's written
    /// bytes stay as they are (the log only appends to its file, and a cleared log lets go of
    /// its file rather than truncate it), so a second handle and the tail suffice.
    pub(crate) fn copy(&self) -> io::Result<LogCopy> {
        let file = self.file.as_ref().map(File::try_clone).transpose()?;
        Ok(LogCopy {
            file,
            start: self.start,
            flushed: self.flushed,
            tail: self.tail.clone(),
            _reader: Arc::clone(&self.readers),
        })
    }

    /// Every byte of the log, read back into the heap.
    pub(crate) fn read(&self) -> io::Result<LogBytes> {
        read_log(self.file.as_ref(), self.start, self.flushed, &self.tail)
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
            .field("start", &self.start)
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
        assert_eq!(log.read().unwrap().bytes, vec![2; LOG_TAIL]);
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
            assert_eq!(log.read().unwrap().bytes, expected);
            let in_heap = if store == Some(dir.path()) { LOG_TAIL } else { expected.len() };
            assert!(log.heap_bytes() <= in_heap, "{} in the heap", log.heap_bytes());
            log.clear();
            assert_eq!((log.len(), log.read().unwrap().bytes), (0, Vec::new()));
            log.append(b"again");
            assert_eq!(log.read().unwrap().bytes, b"again");
        }
    }

    /// Returns once the drop thread has dropped everything handed to it before.
    fn dropped_all_before() {
        struct Signal(mpsc::Sender<()>);
        impl Drop for Signal {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        let (send, dropped) = mpsc::channel();
        drop_later(Signal(send));
        dropped.recv().unwrap();
    }

    /// A log whose front is let go of reads back the rest at the positions `append` gave,
    /// from the file, its tail or the heap, and so does a copy; the file's dead blocks go back
    /// to the file system while its size (every later byte's offset) stays.
    #[test]
    fn a_log_whose_front_is_let_go_of_keeps_the_rest_where_it_was() {
        let dir = tempfile::tempdir().unwrap();
        for store in [Some(dir.path()), None] {
            let mut log = Log::new(store);
            let pieces: Vec<(Range<usize>, Vec<u8>)> = (0..400u32)
                .map(|i| {
                    let bytes = vec![(i % 251) as u8; 100_000 + i as usize];
                    (log.append(&bytes), bytes)
                })
                .collect();
            let end = log.end();
            // A copy taken before, not yet read: what it reads stays in the file until it has
            // (freed on the drop thread, whose work is done once it has dropped a later parcel).
            let early = log.copy().unwrap();
            log.drop_front(pieces[200].0.start);
            assert_eq!(log.freed, 0, "a copy may still read it");
            dropped_all_before();
            let early = early.read().unwrap();
            for (range, bytes) in &pieces {
                assert_eq!(early.get(range.clone()), &bytes[..]);
            }
            drop(early);
            // The front let go of: first inside the file, then inside the tail.
            for cut in [200, 399] {
                let to = pieces[cut].0.start;
                log.drop_front(to);
                assert_eq!(log.len(), end - to);
                let read = log.read().unwrap();
                let copy = log.copy().unwrap().read().unwrap();
                for (range, bytes) in &pieces[cut..] {
                    assert_eq!(read.get(range.clone()), &bytes[..]);
                    assert_eq!(copy.get(range.clone()), &bytes[..]);
                }
                assert_eq!(read.bytes.len(), end - to, "only what is kept is read back");
            }
            // A tail's worth more: flushed to the file at its place after the front let go of
            // (past the file's end, when the front moved into the tail).
            let more = log.append(&vec![9; LOG_TAIL]);
            assert_eq!(log.read().unwrap().get(more.clone()), &vec![9; LOG_TAIL][..]);
            assert_eq!(log.copy().unwrap().read().unwrap().get(more), &vec![9; LOG_TAIL][..]);
            if store.is_some() {
                let file = log.file.as_ref().expect("a file");
                assert_eq!(log.freed, pieces[399].0.start.min(log.flushed));
                dropped_all_before();
                use std::os::unix::fs::MetadataExt;
                let allocated = file.metadata().unwrap().blocks() * 512;
                assert!(allocated <= 8 << 20, "{allocated} bytes still allocated");
            } else {
                assert!(log.tail.len() <= log.len(), "the heap keeps what is kept only");
            }
        }
    }
}

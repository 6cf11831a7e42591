//! Snapshot files: an app's state at one event boundary, on disk.
//!
//! # Format (version 2)
//!
//! | bytes | what |
//! |---|---|
//! | 8 | magic `TASUKISN` |
//! | 4 | format version, little-endian `u32` (2; version 1 files are still read) |
//! | 8 | body length N, little-endian `u64` |
//! | N | body: postcard of [`SnapshotFile`] — app name, app version, creation time, each section's name, version and bytes, then the pre-copied chunks (section, version, bytes), in order |
//! | 4 | CRC-32 (IEEE) of the body, little-endian |
//!
//! Version 2 adds the chunks: a state taken by pre-copy (the app's `tasuki_guest::Map`s, copied
//! a chunk at a time between events) is its chunks plus the sections, whose collections refer to
//! the chunks; it is imported chunks first. Version 1 bodies are the same without the chunks.
//!
//! A file that is truncated, has another magic or format version, a body length that does not
//! match the file, or a wrong checksum is refused before anything is decoded. Sections are the
//! app's own encoding, moved without being looked into — the same sections an upgrade moves.

use crate::bindings::{Chunk, Section, Snapshot};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file's first eight bytes.
pub const MAGIC: &[u8; 8] = b"TASUKISN";
/// The format version this host writes.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this host reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// Largest body a snapshot file may declare. Beyond it the file is refused before anything is
/// allocated: the host's whole state limit ([`crate::limits::MAX_STATE`]) is far smaller.
pub const MAX_BODY: u64 = 4 << 30;

const HEADER: usize = 8 + 4 + 8;
const TRAILER: usize = 4;

/// One section, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSection {
    pub name: String,
    pub version: u32,
    pub bytes: Vec<u8>,
}

/// One pre-copied chunk, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChunk {
    pub section: String,
    pub version: u32,
    pub bytes: Vec<u8>,
}

/// The body of a snapshot file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    pub app: String,
    pub app_version: String,
    /// When the state was exported, ms since the Unix epoch.
    pub created_unix_ms: u64,
    pub sections: Vec<FileSection>,
    /// Pre-copied chunks, imported before the sections (none for a state exported whole).
    pub chunks: Vec<FileChunk>,
}

/// The body of a format 1 file.
#[derive(Debug, Deserialize)]
struct SnapshotFileV1 {
    app: String,
    app_version: String,
    created_unix_ms: u64,
    sections: Vec<FileSection>,
}

/// What `tasuki snapshot` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotReport {
    pub path: PathBuf,
    pub app: String,
    pub app_version: String,
    /// Bytes of the whole file.
    pub file_bytes: u64,
    pub sections: Vec<(String, u32, u64)>,
    /// Bytes of pre-copied chunks (taken between events while the app served); 0 when the
    /// state was exported whole.
    pub chunk_bytes: u64,
    /// How long the app paused: the whole export, or the cut of a pre-copied state.
    pub pause: Duration,
}

impl SnapshotReport {
    /// What was written: `file`, `file_bytes` long, at `path`, after a cut of `pause`.
    pub fn new(path: &Path, file: &SnapshotFile, file_bytes: u64, pause: Duration) -> Self {
        Self {
            path: path.into(),
            app: file.app.clone(),
            app_version: file.app_version.clone(),
            file_bytes,
            sections: file
                .sections
                .iter()
                .map(|s| (s.name.clone(), s.version, s.bytes.len() as u64))
                .collect(),
            chunk_bytes: file.chunks.iter().map(|c| c.bytes.len() as u64).sum(),
            pause,
        }
    }
}

impl std::fmt::Display for SnapshotReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sections: Vec<String> =
            self.sections.iter().map(|(n, v, b)| format!("{n} v{v} {b} B")).collect();
        write!(
            f,
            "wrote {} ({} bytes): {} {}, sections {}",
            self.path.display(),
            self.file_bytes,
            self.app,
            self.app_version,
            sections.join(", "),
        )?;
        if self.chunk_bytes > 0 {
            write!(
                f,
                ", {} bytes pre-copied while serving; paused {:.3} ms for the cut",
                self.chunk_bytes,
                self.pause.as_secs_f64() * 1e3
            )
        } else {
            write!(f, "; paused {:.3} ms to export", self.pause.as_secs_f64() * 1e3)
        }
    }
}

/// Why a snapshot file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a tasuki snapshot (no `TASUKISN` magic)")]
    NotSnapshot { path: PathBuf },
    #[error(
        "{path} is snapshot format {found}; this tasuki reads formats {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}"
    )]
    Format { path: PathBuf, found: u32 },
    #[error("{path} is truncated: {detail}")]
    Truncated { path: PathBuf, detail: String },
    #[error("{path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("{path} is a snapshot of app `{found}`, not of `{expected}`")]
    WrongApp { path: PathBuf, found: String, expected: String },
}

impl SnapshotFile {
    /// Captures a state — pre-copied `chunks` (none for a whole export) and `snapshot` — as of
    /// now.
    pub fn from_state(chunks: &[Chunk], snapshot: &Snapshot) -> Self {
        let mut file = Self::from_snapshot(snapshot);
        file.chunks = chunks
            .iter()
            .map(|c| FileChunk {
                section: c.section.clone(),
                version: c.version,
                bytes: c.bytes.clone(),
            })
            .collect();
        file
    }

    /// Captures `snapshot`, exported whole, as of now.
    pub fn from_snapshot(snapshot: &Snapshot) -> Self {
        Self {
            chunks: Vec::new(),
            app: snapshot.app.clone(),
            app_version: snapshot.app_version.clone(),
            created_unix_ms: crate::clock::now_unix_ms(),
            sections: snapshot
                .sections
                .iter()
                .map(|s| FileSection {
                    name: s.name.clone(),
                    version: s.version,
                    bytes: s.bytes.clone(),
                })
                .collect(),
        }
    }

    /// The state an app imports: the chunks first, then the snapshot.
    pub fn into_state(mut self) -> (Vec<Chunk>, Snapshot) {
        let chunks = std::mem::take(&mut self.chunks)
            .into_iter()
            .map(|c| Chunk { section: c.section, version: c.version, bytes: c.bytes })
            .collect();
        (chunks, self.into_snapshot())
    }

    /// Bytes of state the file holds, chunks and sections.
    pub fn state_bytes(&self) -> u64 {
        let chunks: usize = self.chunks.iter().map(|c| c.bytes.len()).sum();
        let sections: usize = self.sections.iter().map(|s| s.bytes.len()).sum();
        (chunks + sections) as u64
    }

    /// The snapshot an app imports; the file must hold no chunks (see [`Self::into_state`]).
    fn into_snapshot(self) -> Snapshot {
        Snapshot {
            app: self.app,
            app_version: self.app_version,
            sections: self
                .sections
                .into_iter()
                .map(|s| Section { name: s.name, version: s.version, bytes: s.bytes })
                .collect(),
        }
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let body = postcard::to_allocvec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(HEADER + body.len() + TRAILER);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out
    }

    /// Parses a file's bytes; `path` only names it in errors.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Self, SnapshotFileError> {
        let path = || path.to_path_buf();
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(SnapshotFileError::NotSnapshot { path: path() });
        }
        if bytes.len() < HEADER + TRAILER {
            return Err(SnapshotFileError::Truncated {
                path: path(),
                detail: format!("{} bytes, shorter than a header", bytes.len()),
            });
        }
        let found = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&found) {
            return Err(SnapshotFileError::Format { path: path(), found });
        }
        let declared = u64::from_le_bytes(bytes[12..20].try_into().unwrap_or_default());
        let actual = (bytes.len() - HEADER - TRAILER) as u64;
        if declared > MAX_BODY {
            return Err(SnapshotFileError::Corrupt {
                path: path(),
                detail: format!("it declares a body of {declared} bytes"),
            });
        }
        if actual < declared {
            return Err(SnapshotFileError::Truncated {
                path: path(),
                detail: format!(
                    "the header declares {declared} bytes of state, the file holds {actual}"
                ),
            });
        }
        if actual > declared {
            return Err(SnapshotFileError::Corrupt {
                path: path(),
                detail: format!("{} bytes follow the declared end", actual - declared),
            });
        }
        let body = &bytes[HEADER..HEADER + declared as usize];
        let stored =
            u32::from_le_bytes(bytes[HEADER + declared as usize..].try_into().unwrap_or_default());
        let computed = crc32fast::hash(body);
        if stored != computed {
            return Err(SnapshotFileError::Corrupt {
                path: path(),
                detail: format!("checksum {computed:08x} does not match the stored {stored:08x}"),
            });
        }
        let corrupt = |e: postcard::Error| SnapshotFileError::Corrupt {
            path: path(),
            detail: format!("body: {e}"),
        };
        if found == 1 {
            let v1: SnapshotFileV1 = postcard::from_bytes(body).map_err(corrupt)?;
            return Ok(Self {
                app: v1.app,
                app_version: v1.app_version,
                created_unix_ms: v1.created_unix_ms,
                sections: v1.sections,
                chunks: Vec::new(),
            });
        }
        postcard::from_bytes(body).map_err(corrupt)
    }

    /// Reads and checks the file at `path`. A file larger than any snapshot may be is refused
    /// from its size, before a byte of it is read.
    pub fn read(path: &Path) -> Result<Self, SnapshotFileError> {
        Self::read_at_most(path, MAX_BODY)
    }

    /// [`Self::read`] with a body of at most `max_body` bytes.
    fn read_at_most(path: &Path, max_body: u64) -> Result<Self, SnapshotFileError> {
        let read_err = |source| SnapshotFileError::Read { path: path.into(), source };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let size = file.metadata().map_err(read_err)?.len();
        let max_file = max_body + (HEADER + TRAILER) as u64;
        if size > max_file {
            return Err(SnapshotFileError::Corrupt {
                path: path.into(),
                detail: format!(
                    "it is {size} bytes, more than a snapshot may be ({max_file}); not read"
                ),
            });
        }
        // `take`: a file that grows after the check is still read only up to the bound.
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(max_file + 1).read_to_end(&mut bytes).map_err(read_err)?;
        Self::decode(path, &bytes)
    }

    /// Writes the file at `path` atomically and durably: a temporary file beside it (owner-only,
    /// mode 0600: a state holds the app's data), written and fsynced, renamed over `path`, and
    /// the directory fsynced, so that after a crash `path` is either the old file or the whole
    /// new one, and the rename itself survives a power loss. Returns the file's size.
    pub fn write(&self, path: &Path) -> Result<u64, SnapshotFileError> {
        use std::os::unix::fs::OpenOptionsExt;
        let err = |source| SnapshotFileError::Write { path: path.into(), source };
        let bytes = self.encode();
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        // A temporary file left by a crash is ours to replace; `create_new` then guarantees the
        // mode (an existing file would keep its own).
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
            _ => {}
        }
        let written = (|| {
            let mut file =
                std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)?;
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            std::fs::File::open(dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(e));
        }
        Ok(bytes.len() as u64)
    }
}

/// A directory of snapshots taken on a schedule (`tasuki run --snapshot-dir`): the newest valid
/// one is where a restarted host starts from.
///
/// Files are named `snapshot-<ms since the Unix epoch, 16 digits>.snap`, so their names sort in
/// the order they were taken (a name is never older than the newest already there, even if the
/// clock steps back). Each is written as [`SnapshotFile::write`] writes: a crash leaves at most
/// a `.tmp` file, which is removed when the directory is next opened. Only files of that form
/// are ever read or pruned; anything else in the directory is left alone.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    path: PathBuf,
    keep: usize,
}

/// Why a snapshot directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotDirError {
    #[error("snapshot directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "snapshot directory {path} holds snapshots but none is valid ({refused}); refusing to \
         start empty over them: move them away to start empty, or --restore one of them"
    )]
    NoneValid { path: PathBuf, refused: String },
    #[error("snapshot directory {path} holds no snapshot to restore")]
    Empty { path: PathBuf },
}

const PREFIX: &str = "snapshot-";
const SUFFIX: &str = ".snap";

impl SnapshotDir {
    /// Opens `path`, creating it (owner-only) if it does not exist, and removes the temporary
    /// files a crash mid-write left. `keep` snapshots are kept; older ones are pruned after each
    /// write.
    pub fn open(path: &Path, keep: usize) -> Result<Self, SnapshotDirError> {
        use std::os::unix::fs::DirBuilderExt;
        let err = |source| SnapshotDirError::Io { path: path.into(), source };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path).map_err(err)?;
        let dir = Self { path: path.into(), keep: keep.max(1) };
        for entry in std::fs::read_dir(path).map_err(err)? {
            let name = entry.map_err(err)?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(PREFIX) && name.ends_with(".tmp") {
                tracing::info!("removing {name}, a snapshot a crash left half-written");
                let _ = std::fs::remove_file(path.join(&*name));
            }
        }
        Ok(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The snapshots in the directory, oldest first, each with the time in its name.
    fn list(&self) -> Result<Vec<(u64, PathBuf)>, SnapshotDirError> {
        let err = |source| SnapshotDirError::Io { path: self.path.clone(), source };
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.path).map_err(err)? {
            let name = entry.map_err(err)?.file_name();
            let Some(ms) = name
                .to_str()
                .and_then(|n| n.strip_prefix(PREFIX)?.strip_suffix(SUFFIX))
                .filter(|ms| ms.len() == 16)
                .and_then(|ms| ms.parse::<u64>().ok())
            else {
                continue;
            };
            found.push((ms, self.path.join(name)));
        }
        found.sort();
        Ok(found)
    }

    /// Writes `file` as the newest snapshot and prunes the oldest beyond the number kept.
    /// Returns its path and size.
    pub fn write(&self, file: &SnapshotFile) -> Result<(PathBuf, u64), SnapshotFileError> {
        let listed = self.list().map_err(|e| SnapshotFileError::Write {
            path: self.path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let newest = listed.last().map_or(0, |(ms, _)| *ms);
        let ms = file.created_unix_ms.max(newest + 1);
        let path = self.path.join(format!("{PREFIX}{ms:016}{SUFFIX}"));
        let bytes = file.write(&path)?;
        let excess = (listed.len() + 1).saturating_sub(self.keep);
        for (_, old) in listed.into_iter().take(excess) {
            if let Err(e) = std::fs::remove_file(&old) {
                tracing::warn!("cannot prune the old snapshot {}: {e}", old.display());
            }
        }
        Ok((path, bytes))
    }

    /// The newest snapshot that reads back whole, newest first: each one refused (torn,
    /// truncated, corrupt) is logged by name and the one before it tried. `None` if the
    /// directory holds no snapshot at all; an error if it holds some and none is valid, so that
    /// a host never starts empty over a directory of damaged state without being told.
    pub fn latest(&self) -> Result<Option<(PathBuf, SnapshotFile)>, SnapshotDirError> {
        let listed = self.list()?;
        if listed.is_empty() {
            return Ok(None);
        }
        let mut refused = Vec::new();
        for (_, path) in listed.into_iter().rev() {
            match SnapshotFile::read(&path) {
                Ok(file) => return Ok(Some((path, file))),
                Err(e) => {
                    tracing::warn!("refusing {}: {e}; trying the one before it", path.display());
                    refused.push(e.to_string());
                }
            }
        }
        Err(SnapshotDirError::NoneValid { path: self.path.clone(), refused: refused.join("; ") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SnapshotFile {
        SnapshotFile {
            app: "kv".into(),
            app_version: "1.0.0".into(),
            created_unix_ms: 1_700_000_000_000,
            sections: vec![
                FileSection { name: "kv".into(), version: 1, bytes: vec![1, 2, 3, 4] },
                FileSection { name: "tasuki.conns".into(), version: 1, bytes: vec![0] },
            ],
            chunks: vec![FileChunk { section: "kv".into(), version: 1, bytes: vec![1, 0, 9] }],
        }
    }

    #[test]
    fn a_format_1_file_is_read() {
        #[derive(Serialize)]
        struct V1<'a> {
            app: &'a str,
            app_version: &'a str,
            created_unix_ms: u64,
            sections: &'a [FileSection],
        }
        let mut sample = sample();
        sample.chunks.clear();
        let body = postcard::to_allocvec(&V1 {
            app: &sample.app,
            app_version: &sample.app_version,
            created_unix_ms: sample.created_unix_ms,
            sections: &sample.sections,
        })
        .unwrap();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        assert_eq!(SnapshotFile::decode(Path::new("s"), &bytes).unwrap(), sample);
    }

    #[test]
    fn round_trips() {
        let bytes = sample().encode();
        assert_eq!(SnapshotFile::decode(Path::new("s"), &bytes).unwrap(), sample());
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            let err = SnapshotFile::decode(Path::new("s"), &bytes[..len]).unwrap_err();
            assert!(
                matches!(
                    err,
                    SnapshotFileError::Truncated { .. } | SnapshotFileError::NotSnapshot { .. }
                ),
                "{len}: {err}"
            );
        }
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[i] ^= 1 << bit;
                assert!(
                    SnapshotFile::decode(Path::new("s"), &flipped).is_err(),
                    "byte {i} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn another_format_version_is_named() {
        let mut bytes = sample().encode();
        bytes[8] = 3;
        let err = SnapshotFile::decode(Path::new("s"), &bytes).unwrap_err().to_string();
        assert!(err.contains("snapshot format 3"), "{err}");
    }

    #[test]
    fn random_input_never_panics() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid = sample().encode();
        for _ in 0..20_000 {
            let mut bytes = valid.clone();
            let flips = 1 + next() % 4;
            for _ in 0..flips {
                let i = (next() as usize) % bytes.len();
                bytes[i] = next() as u8;
            }
            bytes.truncate((next() as usize) % (valid.len() + 1));
            let _ = SnapshotFile::decode(Path::new("s"), &bytes);
        }
    }
    #[test]
    fn a_file_over_the_size_limit_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.snap");
        let bytes = sample().encode();
        std::fs::write(&path, &bytes).unwrap();
        let body = (bytes.len() - HEADER - TRAILER) as u64;
        assert_eq!(SnapshotFile::read_at_most(&path, body).unwrap(), sample());
        let err = SnapshotFile::read_at_most(&path, body - 1).unwrap_err().to_string();
        assert!(err.contains("more than a snapshot may be") && err.contains("not read"), "{err}");
    }

    #[test]
    fn a_written_file_is_owner_only_and_leaves_no_temporary_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snap");
        // A temporary file a crash left, open to everyone: replaced, not reused.
        std::fs::write(dir.path().join("s.snap.tmp"), b"junk").unwrap();
        std::fs::set_permissions(
            dir.path().join("s.snap.tmp"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        sample().write(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.path().join("s.snap.tmp").exists());
        assert_eq!(SnapshotFile::read(&path).unwrap(), sample());
    }

    #[test]
    fn a_directory_keeps_the_newest_and_skips_a_torn_one_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(&tmp.path().join("snaps"), 2).unwrap();
        assert!(dir.latest().unwrap().is_none());
        let mut written = Vec::new();
        for n in 0..3u8 {
            let mut file = sample();
            file.sections[0].bytes = vec![n];
            written.push(dir.write(&file).unwrap().0);
        }
        assert!(!written[0].exists(), "pruned beyond the two kept");
        let (path, file) = dir.latest().unwrap().unwrap();
        assert_eq!((path, file.sections[0].bytes.clone()), (written[2].clone(), vec![2]));
        // The newest torn in half: the one before it is used.
        let bytes = std::fs::read(&written[2]).unwrap();
        std::fs::write(&written[2], &bytes[..bytes.len() / 2]).unwrap();
        let (path, file) = dir.latest().unwrap().unwrap();
        assert_eq!((path, file.sections[0].bytes.clone()), (written[1].clone(), vec![1]));
        // None valid: an error naming each, never an empty start.
        std::fs::write(&written[1], b"TASUKISN").unwrap();
        let err = dir.latest().unwrap_err().to_string();
        let name = written[2].display().to_string();
        assert!(err.contains(&name) && err.contains("none is valid"), "{err}");
    }
}

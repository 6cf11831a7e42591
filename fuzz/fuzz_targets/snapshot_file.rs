//! Any bytes in a snapshot file: decoding must refuse or decode, never panic or over-allocate.
//! The same bytes are also tried as the body of a file whose header and checksum are right, so
//! that the body's decoder is reached and not only the checks in front of it; a body that
//! decodes must encode to a file that decodes to the same snapshot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tasuki::snapshot::{FORMAT_VERSION, MAGIC, OLDEST_FORMAT_VERSION, SnapshotFile};

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.snap");
    let _ = SnapshotFile::decode(path, data);
    for version in OLDEST_FORMAT_VERSION..=FORMAT_VERSION {
        let mut file = Vec::with_capacity(data.len() + 24);
        file.extend_from_slice(MAGIC);
        file.extend_from_slice(&version.to_le_bytes());
        file.extend_from_slice(&(data.len() as u64).to_le_bytes());
        file.extend_from_slice(data);
        file.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
        if let Ok(snapshot) = SnapshotFile::decode(path, &file) {
            let again = SnapshotFile::decode(path, &snapshot.encode());
            assert_eq!(again.ok().as_ref(), Some(&snapshot), "a decoded snapshot re-encodes");
        }
    }
});

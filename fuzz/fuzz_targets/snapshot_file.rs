//! Any bytes in a snapshot file: decoding must refuse or decode, never panic or over-allocate.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tasuki::snapshot::SnapshotFile;

fuzz_target!(|data: &[u8]| {
    let _ = SnapshotFile::decode(std::path::Path::new("fuzz.snap"), data);
});

//! Any bytes a client sends to kv, cut anywhere by the network: the RESP request parsers must
//! parse the same requests however the bytes were split (the incremental parser, with its
//! position crossing an upgrade at every cut, and the stateless one of releases 1 to 3), never
//! take more than they were given, and hold their size limits. The properties live in
//! `guests/resp/src/fuzzing.rs`, where the unit tests replay this target's corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| resp::fuzzing::check(data));

//! Paths of the guest components built from guests/, for tests, examples and benchmarks.
//! `build.rs` builds them; depending on this crate is all it takes.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

//! Paths of the guest components, for tests, examples and benchmarks: the released ones frozen
//! in releases/ (`KV_V1` … `KV_V4`, the transformers, the fixtures frozen with them), checked
//! against releases/SHA256SUMS when this crate builds, and the rest built from guests/
//! (`KV_V5`, the fixtures, the examples). `build.rs` does both; depending on this crate is all
//! it takes.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

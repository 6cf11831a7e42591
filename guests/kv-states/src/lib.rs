//! The state types of kv's released versions, frozen: one module per state version, each holding
//! exactly the serde types that define how that version's state is encoded, as the release that
//! wrote it encoded it.
//!
//! The releases themselves are the components in `releases/` (kv 1.0.0 … 4.0.0); their server
//! code is gone from the source tree, and these types are all of them that stays. Whatever must
//! read or write an old release's state — the transformers in `guests/transforms/`, a later
//! release that still reads a version, tests — uses these.
//!
//! **Never change a type here.** Postcard is not self-describing: a state is read field by field,
//! in order, with each enum variant known by its index, so one changed, reordered or added field
//! or variant silently misreads every state that release ever wrote. A new shape is a new state
//! version, in a new module. The tests pin each version's bytes.
//!
//! What the releases kept but never encoded (`#[serde(skip)]` fields: deadline indexes, timers,
//! configuration) is not here: skipped fields are not written, and a struct adds no framing, so
//! a release's `Kv { db: Db { entries, deadlines (skipped) }, timer (skipped) }` encodes exactly
//! as `Kv { entries }` does. Where a release used a container that encodes as another does
//! (`VecDeque` and `Vec`, a `HashMap` and a sequence of pairs, its `Set` and `ZSet` as sequences)
//! the simpler one is used; the doc of each field says what the release had.
//!
//! The keyspace is a [`tasuki_guest::Map`] in every version, as in the releases: it encodes as a
//! `HashMap` does, and lets an upgrade pre-copy it in chunks (see `docs/migrations.md`).

pub mod v1;
pub mod v2;
pub mod v3;
pub mod v4;

#[cfg(test)]
mod tests;

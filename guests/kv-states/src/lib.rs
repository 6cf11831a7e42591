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

/// The bytes kv 4.0.0 wrote (state version 4) after `SET k v PXAT 5`, `RPUSH l a ""`, `HSET h f
/// v`, `SADD s m n`, `ZADD z 1.5 m 2 n`, `HELLO 3`, `CLIENT SETNAME me`, `CLIENT SETINFO
/// LIB-NAME lib`, `WATCH k`, `MULTI`, `SET k w` (queued), then half a request
/// (`*2\r\n$3\r\nGET\r\n`), at time 0 on connection 7. Pinned once for two checks: this crate's
/// tests decode them as [`v4`], kv 5's that kv 5 writes them given the same requests.
#[doc(hidden)]
pub const V4_PINNED: &[u8] = &[
    5, //
    1, b'k', 0, 1, b'v', 1, 5, //
    1, b'l', 1, 2, 1, b'a', 0, 0, //
    1, b'h', 2, 1, 1, b'f', 1, b'v', 0, //
    1, b's', 3, 2, 1, b'm', 1, b'n', 0, //
    1, b'z', 4, 2, 1, b'm', 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 1, b'n', 0, 0, 0, 0, 0, 0, 0, 0x40,
    0, // One client, connection 7.
    1, 7, //
    1, 2, b'm', b'e', 3, b'l', b'i', b'b', 0, 1, 0, 0, 0, 0, 0, 0, 0, //
    5, b'm', b'u', b'l', b't', b'i', //
    1, 1, 3, 3, b'S', b'E', b'T', 1, b'k', 1, b'w', 0, //
    1, 1, b'k', 0, //
    1, 1, 1, 8, 3, 13, 0, 0, //
    // The counters.
    0, 0, 11,
];

#[cfg(test)]
mod tests;

//! The keyspace: every key and its value, as plain byte strings.
//!
//! The map is the state that crosses an upgrade: a `tasuki_guest::Map`, so an upgrade copies it
//! in chunks while the server serves, and the pause moves only the keys changed since. Its
//! hasher is std's `DefaultHasher` with fixed keys rather than `RandomState`: the same requests
//! then build the same table and iterate it in the same order, so snapshots and `KEYS` replies
//! are reproducible (the simulator replays a trace and compares bytes). Clients choose keys, so
//! a fixed key gives up protection against deliberate collisions; SipHash still spreads ordinary
//! keys well.

use serde::{Deserialize, Serialize};
use tasuki_guest::Map;

/// Keys and their values.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Db {
    entries: Map<Vec<u8>, Vec<u8>>,
}

impl Db {
    /// The value under `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.entries.get(key).map(Vec::as_slice)
    }

    /// The value under `key`, to change in place.
    pub(crate) fn get_mut(&mut self, key: &[u8]) -> Option<&mut Vec<u8>> {
        self.entries.get_mut(key)
    }

    /// Stores `value` under `key`, replacing any value there.
    pub(crate) fn set(&mut self, key: &[u8], value: &[u8]) {
        match self.entries.get_mut(key) {
            // Overwriting in place spares allocating the key again (and often the value).
            Some(old) => replace_bytes(old, value),
            None => {
                self.entries.insert(key.to_vec(), value.to_vec());
            }
        }
    }

    /// Removes `key`; whether it was there.
    pub(crate) fn remove(&mut self, key: &[u8]) -> bool {
        self.entries.remove(key).is_some()
    }

    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.entries.contains_key(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.keys().map(Vec::as_slice)
    }

    /// Removes every key, and gives the table's memory back.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

/// Makes `buffer` hold `bytes`, reusing its allocation unless that would keep far more memory
/// than the new value needs (a large value overwritten by a small one).
pub(crate) fn replace_bytes(buffer: &mut Vec<u8>, bytes: &[u8]) {
    if buffer.capacity() > 2 * bytes.len() + 64 {
        *buffer = bytes.to_vec();
    } else {
        buffer.clear();
        buffer.extend_from_slice(bytes);
    }
}

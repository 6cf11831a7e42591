//! The order `SCAN` walks the keyspace in, and what its cursor means.
//!
//! Redis's cursor is a position in its hash table, and its guarantee is that a key present from
//! the first call to the last is returned at least once, whatever is added or removed meanwhile.
//! The keyspace here is a `HashMap` whose buckets are not ours to walk, so `SCAN` walks its own
//! order instead: keys sorted by a 64-bit FNV-1a hash of their bytes (then by the bytes), and
//! the cursor is the hash to continue from. A key present throughout keeps its hash, so it is
//! passed exactly once; keys added or removed meanwhile may or may not be returned, as in redis.
//! The hash depends on nothing but the key, so a cursor stays valid across an upgrade, in any
//! later release.
//!
//! The order is an index of its own, a second copy of every key: it is built by the first
//! `SCAN` (one pass over the keyspace) and kept up to date from then on, so a server that never
//! scans never pays for it. It is derived, not transferred: the next `SCAN` after an upgrade
//! builds it again, and old cursors mean the same in it.

use std::collections::BTreeSet;

/// Keys in `SCAN` order.
#[derive(Debug, Default)]
pub(crate) struct ScanOrder {
    keys: BTreeSet<(u64, Vec<u8>)>,
}

/// FNV-1a, 64 bits: fixed forever, so cursors keep their meaning in every release.
pub(crate) fn scan_hash(key: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in key {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl ScanOrder {
    /// The order of `keys`.
    pub(crate) fn new<'k>(keys: impl Iterator<Item = &'k Vec<u8>>) -> Self {
        Self { keys: keys.map(|key| (scan_hash(key), key.clone())).collect() }
    }

    pub(crate) fn insert(&mut self, key: &[u8]) {
        self.keys.insert((scan_hash(key), key.to_vec()));
    }

    pub(crate) fn remove(&mut self, key: &[u8]) {
        self.keys.remove(&(scan_hash(key), key.to_vec()));
    }

    /// At least `count` keys (fewer at the end) from `cursor` on, and the next cursor, 0 at the
    /// end. Keys sharing a hash are returned together, so that the cursor (a hash) can resume
    /// after them.
    pub(crate) fn walk(&self, cursor: u64, count: usize) -> (Vec<Vec<u8>>, u64) {
        let mut found = Vec::new();
        let mut last = None;
        for (hash, key) in self.keys.range((cursor, Vec::new())..) {
            if found.len() >= count.max(1) && last != Some(*hash) {
                // `last` is below `hash` here, so it is below u64::MAX.
                return (found, last.map_or(0, |last: u64| last + 1));
            }
            found.push(key.clone());
            last = Some(*hash);
        }
        (found, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full walk in steps of `count`, while `change` adds and removes keys between steps.
    fn walk_all(
        order: &mut ScanOrder,
        count: usize,
        mut change: impl FnMut(&mut ScanOrder, usize),
    ) -> Vec<Vec<u8>> {
        let mut seen = Vec::new();
        let mut cursor = 0;
        let mut step = 0;
        loop {
            let (keys, next) = order.walk(cursor, count);
            seen.extend(keys);
            change(order, step);
            step += 1;
            if next == 0 {
                return seen;
            }
            assert!(next > cursor, "the cursor moves forward");
            cursor = next;
        }
    }

    #[test]
    fn a_key_present_throughout_is_returned_exactly_once() {
        let keys: Vec<Vec<u8>> = (0..1000).map(|i| format!("key:{i}").into_bytes()).collect();
        let mut order = ScanOrder::new(keys.iter());
        let seen = walk_all(&mut order, 7, |order, step| {
            // Churn: keys come and go between the calls.
            order.insert(format!("new:{step}").as_bytes());
            order.remove(format!("new:{}", step / 2).as_bytes());
        });
        for key in &keys {
            assert_eq!(seen.iter().filter(|k| *k == key).count(), 1, "{key:?}");
        }
    }

    #[test]
    fn the_hash_is_fixed() {
        // FNV-1a test vectors: cursors handed out by one release mean the same in the next.
        assert_eq!(scan_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(scan_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(scan_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }
}

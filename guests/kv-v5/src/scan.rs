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
//!
//! `HSCAN`, `SSCAN` and `ZSCAN` walk a value's fields or members in the same order, with the
//! same cursor and the same guarantee, but without an index: [`walk_collection`] selects the
//! next batch in one pass over the collection. A collection of at most
//! [`SMALL_COLLECTION`] elements is returned whole with cursor 0, as redis returns one held in a
//! listpack; a larger one gives at least a 32nd of its elements per call, so a whole walk costs
//! at most about 32 passes, whatever `COUNT` says (redis, too, treats `COUNT` as a hint).

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
    pub(crate) fn new<'k>(keys: impl Iterator<Item = &'k [u8]>) -> Self {
        Self { keys: keys.map(|key| (scan_hash(key), key.to_vec())).collect() }
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

/// Up to this many elements, a collection is scanned in one call (redis's listpack limit for
/// hashes and sorted sets, `hash-max-listpack-entries`).
pub(crate) const SMALL_COLLECTION: usize = 128;

/// The batch of a field or member walk from `cursor` over `items` (`len` of them, unique): at
/// least `count` of them (and at least a 32nd of all) in `SCAN` order, then the next cursor, 0
/// at the end.
pub(crate) fn walk_collection<'a>(
    items: impl Iterator<Item = &'a [u8]>,
    len: usize,
    cursor: u64,
    count: usize,
) -> (Vec<&'a [u8]>, u64) {
    if len <= SMALL_COLLECTION {
        return (items.collect(), 0);
    }
    let want = count.max(len / 32).max(1);
    let mut candidates: Vec<(u64, &[u8])> =
        items.map(|item| (scan_hash(item), item)).filter(|(hash, _)| *hash >= cursor).collect();
    if candidates.len() > want {
        candidates.select_nth_unstable(want - 1);
        let last = candidates[want - 1].0;
        // Everything sharing the last hash goes too, so that the cursor can resume after it.
        let (mut batch, rest): (Vec<_>, Vec<_>) =
            candidates.into_iter().partition(|(hash, _)| *hash <= last);
        batch.sort_unstable();
        let next = if rest.is_empty() { 0 } else { last + 1 };
        return (batch.into_iter().map(|(_, item)| item).collect(), next);
    }
    candidates.sort_unstable();
    (candidates.into_iter().map(|(_, item)| item).collect(), 0)
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
        let mut order = ScanOrder::new(keys.iter().map(Vec::as_slice));
        let seen = walk_all(&mut order, 7, |order, step| {
            // Churn: keys come and go between the calls.
            order.insert(format!("new:{step}").as_bytes());
            order.remove(format!("new:{}", step / 2).as_bytes());
        });
        for key in &keys {
            assert_eq!(seen.iter().filter(|k| *k == key).count(), 1, "{key:?}");
        }
    }

    /// The same guarantee for fields and members: every element present throughout is returned
    /// once, though elements come and go between calls.
    #[test]
    fn a_collection_walk_returns_every_element_present_throughout_once() {
        let stable: Vec<Vec<u8>> = (0..1000).map(|i| format!("field:{i}").into_bytes()).collect();
        let mut seen = Vec::new();
        let (mut cursor, mut step) = (0, 0);
        loop {
            let churn: Vec<Vec<u8>> =
                (step * 10..step * 10 + 40).map(|i| format!("churn:{i}").into_bytes()).collect();
            let items = stable.iter().chain(&churn).map(Vec::as_slice);
            let (batch, next) = walk_collection(items, stable.len() + churn.len(), cursor, 5);
            seen.extend(batch.into_iter().map(<[u8]>::to_vec));
            step += 1;
            if next == 0 {
                break;
            }
            assert!(next > cursor);
            cursor = next;
        }
        assert!(step > 1 && step <= 40, "{step} calls");
        for item in &stable {
            assert_eq!(seen.iter().filter(|seen| *seen == item).count(), 1, "{item:?}");
        }
        let small: Vec<Vec<u8>> = (0..SMALL_COLLECTION).map(|i| vec![i as u8]).collect();
        let (all, next) = walk_collection(small.iter().map(Vec::as_slice), small.len(), 99, 1);
        assert_eq!((all.len(), next), (SMALL_COLLECTION, 0), "a small one comes whole");
    }

    #[test]
    fn the_hash_is_fixed() {
        // FNV-1a test vectors: cursors handed out by one release mean the same in the next.
        assert_eq!(scan_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(scan_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(scan_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }
}

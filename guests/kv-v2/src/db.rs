//! The keyspace: every key, its value and its deadline, and the index that finds the next
//! deadline.
//!
//! A deadline is absolute Unix time in milliseconds, as `Ctx::now_ms` reads the clock, so it
//! means the same instant after an upgrade, in another instance, or in a later release.
//!
//! Expiry is lazy and active, as in redis. Lazy: every access to a key checks its deadline
//! first, so a key is gone the moment its deadline passes, whatever the timer is doing. Active:
//! the server's expiry timer removes keys nobody reads again, so their memory comes back. Both
//! go through [`Db::deadlines`], which orders keys by deadline: a lookup pays for the expiry
//! check only while some key is overdue, which the timer keeps rare.
//!
//! The map is the state that crosses an upgrade, a `tasuki_guest::Map` (pre-copied in chunks
//! while the server serves); its hasher is std's `DefaultHasher` with fixed
//! keys, so the same requests build the same table and iterate it in the same order (snapshots
//! and `KEYS` replies are reproducible). The deadline index is derived from the map and is
//! rebuilt after an upgrade rather than transferred.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use tasuki_guest::Map;

/// A value and when it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) value: Vec<u8>,
    /// Unix time in milliseconds from which the key no longer exists; `None` keeps it forever.
    pub(crate) expires_at_ms: Option<u64>,
}

impl Entry {
    fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|deadline| deadline <= now_ms)
    }
}

/// Keys, their values and deadlines.
///
/// Invariant: `deadlines` holds `(deadline, key)` for exactly the entries with a deadline. Every
/// change to a deadline goes through this type for that reason.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Db {
    entries: Map<Vec<u8>, Entry>,
    /// Keys with a deadline, earliest first. Derived from `entries`: rebuilt by
    /// [`Db::start_rebuild`] after an upgrade instead of transferred.
    #[serde(skip)]
    deadlines: BTreeSet<(u64, Vec<u8>)>,
    /// While the index is being rebuilt after an upgrade: entries at positions below this are
    /// not indexed yet (0 when the index is whole). See [`Db::start_rebuild`].
    #[serde(skip)]
    unindexed: usize,
}

impl Db {
    /// A keyspace of `values` without deadlines (what release 1 hands over).
    pub(crate) fn without_deadlines(values: Map<Vec<u8>, Vec<u8>>) -> Result<Self, String> {
        let entries = values.convert(|_, value| Ok(Entry { value, expires_at_ms: None }))?;
        Ok(Self { entries, deadlines: BTreeSet::new(), unindexed: 0 })
    }

    /// Starts deriving the deadline index from the entries, after the state was imported: a
    /// batch at a time ([`Db::rebuild_some`]), so that an upgrade's pause does not walk every
    /// key. Until it is whole, lazy expiry checks every key it touches (the index cannot tell
    /// whether one is overdue) and the expiry timer keeps firing to carry the rebuild on.
    ///
    /// The scan goes from the last position down: a removal moves the last entry into the hole,
    /// so an entry only ever moves from the scanned part into the unscanned one (scanned again,
    /// harmlessly), never the other way; entries added meanwhile are indexed as they are set.
    pub(crate) fn start_rebuild(&mut self) {
        self.deadlines.clear();
        self.unindexed = self.entries.len();
    }

    /// True while the deadline index is being rebuilt.
    pub(crate) fn rebuilding(&self) -> bool {
        self.unindexed > 0
    }

    /// Indexes up to `batch` more entries of the rebuild under way.
    pub(crate) fn rebuild_some(&mut self, batch: usize) {
        let end = self.unindexed.min(self.entries.len());
        let start = end.saturating_sub(batch);
        for index in start..end {
            if let Some((key, entry)) = self.entries.get_index(index)
                && let Some(deadline) = entry.expires_at_ms
            {
                self.deadlines.insert((deadline, key.clone()));
            }
        }
        self.unindexed = start;
    }

    /// Derives the whole deadline index from the entries at once.
    #[cfg(test)]
    pub(crate) fn rebuild_deadlines(&mut self) {
        self.deadlines = self
            .entries
            .iter()
            .filter_map(|(key, entry)| entry.expires_at_ms.map(|deadline| (deadline, key.clone())))
            .collect();
    }

    /// The live entry under `key`; an expired one is removed and reads as missing.
    pub(crate) fn get(&mut self, key: &[u8], now_ms: u64) -> Option<&Entry> {
        self.expire_if_due(key, now_ms);
        self.entries.get(key)
    }

    /// The live value under `key`, to change in place; its deadline stays as it is.
    pub(crate) fn value_mut(&mut self, key: &[u8], now_ms: u64) -> Option<&mut Vec<u8>> {
        self.expire_if_due(key, now_ms);
        self.entries.get_mut(key).map(|entry| &mut entry.value)
    }

    pub(crate) fn contains(&mut self, key: &[u8], now_ms: u64) -> bool {
        self.get(key, now_ms).is_some()
    }

    /// Stores `value` under `key` with deadline `expires_at_ms`, replacing any value and
    /// deadline there. A deadline already past leaves no key at all.
    pub(crate) fn set(
        &mut self,
        key: &[u8],
        value: &[u8],
        expires_at_ms: Option<u64>,
        now_ms: u64,
    ) {
        if expires_at_ms.is_some_and(|deadline| deadline <= now_ms) {
            self.remove_entry(key);
            return;
        }
        match self.entries.get_mut(key) {
            // Overwriting in place spares allocating the key again (and often the value).
            Some(entry) => {
                replace_bytes(&mut entry.value, value);
                reindex(&mut self.deadlines, key, entry, expires_at_ms);
            }
            None => {
                if let Some(deadline) = expires_at_ms {
                    self.deadlines.insert((deadline, key.to_vec()));
                }
                self.entries.insert(key.to_vec(), Entry { value: value.to_vec(), expires_at_ms });
            }
        }
    }

    /// Stores `value` under `key`, keeping the deadline of the live key there, if any.
    pub(crate) fn set_keep_deadline(&mut self, key: &[u8], value: &[u8], now_ms: u64) {
        let deadline = self.get(key, now_ms).and_then(|entry| entry.expires_at_ms);
        self.set(key, value, deadline, now_ms);
    }

    /// Gives the live key `key` the deadline `expires_at_ms` (`None`: never expires). Returns
    /// whether there was such a key. A deadline already past removes the key.
    pub(crate) fn set_deadline(
        &mut self,
        key: &[u8],
        expires_at_ms: Option<u64>,
        now_ms: u64,
    ) -> bool {
        self.expire_if_due(key, now_ms);
        if expires_at_ms.is_some_and(|deadline| deadline <= now_ms) {
            return self.remove_entry(key);
        }
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        reindex(&mut self.deadlines, key, entry, expires_at_ms);
        true
    }

    /// Removes `key`; whether a live key was there.
    pub(crate) fn remove(&mut self, key: &[u8], now_ms: u64) -> bool {
        self.expire_if_due(key, now_ms);
        self.remove_entry(key)
    }

    /// How many live keys there are.
    pub(crate) fn len(&mut self, now_ms: u64) -> usize {
        self.remove_expired(now_ms, usize::MAX);
        self.entries.len()
    }

    /// How many live keys have a deadline.
    pub(crate) fn with_deadline(&mut self, now_ms: u64) -> usize {
        self.remove_expired(now_ms, usize::MAX);
        self.deadlines.len()
    }

    /// Every live key, in the table's order.
    pub(crate) fn keys(&mut self, now_ms: u64) -> impl Iterator<Item = &[u8]> {
        self.remove_expired(now_ms, usize::MAX);
        self.entries.keys().map(Vec::as_slice)
    }

    /// Removes every key, and gives the table's memory back.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.deadlines = BTreeSet::new();
    }

    /// The earliest deadline of any key, past or future.
    pub(crate) fn next_deadline(&self) -> Option<u64> {
        self.deadlines.first().map(|(deadline, _)| *deadline)
    }

    /// Removes up to `limit` keys whose deadline has passed, earliest first; how many it removed.
    pub(crate) fn remove_expired(&mut self, now_ms: u64, limit: usize) -> usize {
        let mut removed = 0;
        while removed < limit && self.next_deadline().is_some_and(|deadline| deadline <= now_ms) {
            if let Some((_, key)) = self.deadlines.pop_first() {
                self.entries.remove(&key);
                removed += 1;
            }
        }
        removed
    }

    /// Lazy expiry: removes `key` if its deadline has passed. Costs a lookup only while some key
    /// is overdue, which the expiry timer keeps rare.
    fn expire_if_due(&mut self, key: &[u8], now_ms: u64) {
        if (self.rebuilding() || self.next_deadline().is_some_and(|deadline| deadline <= now_ms))
            && self.entries.get(key).is_some_and(|entry| entry.is_expired(now_ms))
        {
            self.remove_entry(key);
        }
    }

    /// Removes `key`, live or not, and its deadline; whether it was there.
    fn remove_entry(&mut self, key: &[u8]) -> bool {
        let Some(entry) = self.entries.remove(key) else {
            return false;
        };
        if let Some(deadline) = entry.expires_at_ms {
            self.deadlines.remove(&(deadline, key.to_vec()));
        }
        true
    }
}

/// Changes the deadline of `entry`, stored under `key`, to `new`, moving it in the index.
fn reindex(
    deadlines: &mut BTreeSet<(u64, Vec<u8>)>,
    key: &[u8],
    entry: &mut Entry,
    new: Option<u64>,
) {
    if entry.expires_at_ms == new {
        return;
    }
    let indexed = entry.expires_at_ms.and_then(|old| deadlines.take(&(old, key.to_vec())));
    if let Some(new) = new {
        // The key's copy in the index is reused when there is one.
        let key = indexed.map_or_else(|| key.to_vec(), |(_, key)| key);
        deadlines.insert((new, key));
    }
    entry.expires_at_ms = new;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn live_keys(db: &mut Db, now: u64) -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> = db.keys(now).map(<[u8]>::to_vec).collect();
        keys.sort();
        keys
    }

    /// The index mirrors the entries exactly.
    fn check_index(db: &Db) {
        let mut rebuilt = Db { entries: db.entries.clone(), ..Db::default() };
        rebuilt.rebuild_deadlines();
        assert_eq!(rebuilt.deadlines, db.deadlines);
    }

    #[test]
    fn a_key_expires_at_its_deadline() {
        let mut db = Db::default();
        db.set(b"k", b"v", Some(1_000), 0);
        assert!(db.contains(b"k", 999));
        assert!(!db.contains(b"k", 1_000));
        assert!(db.entries.is_empty() && db.deadlines.is_empty(), "lazy expiry removes it");
    }

    #[test]
    fn deadlines_follow_every_change() {
        let mut db = Db::default();
        db.set(b"a", b"1", Some(100), 0);
        db.set(b"b", b"2", Some(50), 0);
        db.set(b"c", b"3", None, 0);
        check_index(&db);
        assert_eq!(db.next_deadline(), Some(50));
        db.set(b"b", b"2", None, 0);
        check_index(&db);
        assert_eq!(db.next_deadline(), Some(100));
        db.set_keep_deadline(b"a", b"one", 0);
        assert_eq!(db.get(b"a", 0).and_then(|e| e.expires_at_ms), Some(100));
        assert!(db.set_deadline(b"c", Some(70), 0));
        assert!(!db.set_deadline(b"nope", Some(70), 0));
        check_index(&db);
        assert!(db.remove(b"c", 0));
        check_index(&db);
        assert!(db.set_deadline(b"a", None, 0));
        check_index(&db);
        assert_eq!(db.next_deadline(), None);
    }

    #[test]
    fn a_past_deadline_leaves_no_key() {
        let mut db = Db::default();
        db.set(b"k", b"v", None, 10);
        db.set(b"k", b"v", Some(10), 10);
        assert!(!db.contains(b"k", 10));
        db.set(b"k", b"v", None, 10);
        assert!(db.set_deadline(b"k", Some(5), 10));
        assert!(!db.contains(b"k", 10));
        check_index(&db);
    }

    #[test]
    fn counts_and_listings_skip_expired_keys() {
        let mut db = Db::default();
        db.set(b"a", b"1", Some(100), 0);
        db.set(b"b", b"2", Some(200), 0);
        db.set(b"c", b"3", None, 0);
        assert_eq!((db.len(150), db.with_deadline(150)), (2, 1));
        assert_eq!(live_keys(&mut db, 150), [b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(live_keys(&mut db, 250), [b"c".to_vec()]);
    }

    /// After an upgrade the index is rebuilt a batch at a time; meanwhile an overdue key the
    /// rebuild has not reached yet still reads as missing, and removals during the rebuild
    /// (which move entries) leave the finished index exact.
    #[test]
    fn the_index_rebuilt_in_batches_is_exact_and_lazy_expiry_holds_meanwhile() {
        let mut db = Db::default();
        for i in 0..100u64 {
            let deadline = if i % 3 == 0 { None } else { Some(50 + i) };
            db.set(format!("k{i}").as_bytes(), b"v", deadline, 0);
        }
        let mut whole = Db { entries: db.entries.clone(), ..Db::default() };
        whole.rebuild_deadlines();
        db.start_rebuild();
        db.rebuild_some(10);
        assert!(db.rebuilding());
        // k1 sits at position 1, far from the 10 indexed last: overdue at 60, and missing.
        assert!(db.get(b"k1", 60).is_none(), "lazy expiry while the index is partial");
        whole.remove(b"k1", 0);
        for i in [2u64, 5, 40, 97] {
            db.remove(format!("k{i}").as_bytes(), 0);
            whole.remove(format!("k{i}").as_bytes(), 0);
        }
        while db.rebuilding() {
            db.rebuild_some(7);
        }
        assert_eq!(db.deadlines, whole.deadlines);
    }

    #[test]
    fn remove_expired_is_bounded_and_earliest_first() {
        let mut db = Db::default();
        for i in 0..10u64 {
            db.set(format!("k{i}").as_bytes(), b"v", Some(100 - i), 0);
        }
        assert_eq!(db.remove_expired(100, 4), 4);
        assert_eq!(db.next_deadline(), Some(95));
        assert_eq!(db.remove_expired(100, usize::MAX), 6);
        assert_eq!(db.remove_expired(100, usize::MAX), 0);
        assert!(db.entries.is_empty());
    }

    /// Only the entries cross an upgrade; the index is rebuilt from them.
    #[test]
    fn the_index_is_not_serialized() {
        let mut db = Db::default();
        db.set(b"a", b"1", Some(100), 0);
        db.set(b"b", b"2", None, 0);
        let bytes = postcard::to_allocvec(&db).unwrap();
        let map: std::collections::HashMap<Vec<u8>, Entry> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(map.len(), 2);
        let mut back: Db = postcard::from_bytes(&bytes).unwrap();
        assert!(back.deadlines.is_empty());
        back.rebuild_deadlines();
        assert_eq!(back.deadlines, db.deadlines);
    }
}

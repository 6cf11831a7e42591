//! The storage under a [`crate::Map`]: its entries in order, in segments of a fixed size, and a
//! hash table of their positions.
//!
//! Why not an `IndexMap` (a vector of entries and a table of positions), which this replaced: a
//! vector grows by doubling, so at any size it may hold up to twice the entries' memory, and
//! each doubling copies every entry into a new buffer and frees the old one. In a WebAssembly
//! instance the linear memory never shrinks, so each freed buffer stays resident: a keyspace of
//! 1M entries left about 1.5 times its entries' size behind as garbage. Here a segment, once
//! allocated, never moves: growing allocates one more segment, and at most one segment is
//! partly used (plus one kept empty, so that a map going back and forth over a segment's edge
//! does not allocate each time). The table holds `u32` positions, and no hash is stored per
//! entry: a hash is computed again from the key when an entry moves to a new table.
//!
//! The index grows (or sheds its tombstones) incrementally, as redis's dict does (`rehashidx`
//! in its `dict.c`): the full index is kept beside a new, larger one, and each insert or removal
//! moves [`MIGRATE_BATCH`] entries across, in position order, while lookups look in both. Moving
//! every entry in one go cost one insert 55 ms at 458,752 entries and 127 ms at 917,504 (kv 5 in
//! wasmtime), and every client of the instance waited that long.
//!
//! The order is the [`crate::Map`]'s: insertion order, a removal moving the last entry into the
//! hole, [`Table::retain`] keeping the order of what it keeps.

use crate::map::FixedState;
use hashbrown::HashTable;
use indexmap::Equivalent;
use std::cell::RefCell;
use std::hash::{BuildHasher, Hash};

/// An entry as it is stored.
#[derive(Clone)]
pub(crate) struct Slot<K, V> {
    pub(crate) key: K,
    pub(crate) value: V,
}

/// Bytes a segment should hold at most: large enough that the vector of segments is small
/// (16 segments per MiB of entries), small enough that the partly used one wastes little.
const SEGMENT_BYTES: usize = 64 * 1024;

/// Entries of a first segment, which grows by doubling up to a whole segment.
const FIRST_SEGMENT: usize = 4;

/// A table at most 1/`SHRINK_BELOW` full of the capacity it last grew to gives memory back:
/// redis shrinks a dict when at most 1/8 of it is used (`HASHTABLE_MIN_FILL` in its
/// `server.h`). Without it a map emptied by deletes would keep its peak memory, and so would the
/// instance (the host's compaction sees it as in use).
pub(crate) const SHRINK_BELOW: usize = 8;

/// Capacity below which a table keeps its memory: too little to matter.
pub(crate) const SHRINK_MIN: usize = 64;

/// Entries an insert or a removal moves from the old index to the new one while the index
/// grows. A move costs about 200 ns in wasmtime at 1M entries (a hash and two cache misses),
/// so 4 add under a microsecond to an insert; with 16, a 64 KiB call of 1000-key MSETs ran
/// 5 ms longer while the index grew. Any number above 1 finishes the move before the new index
/// fills: it has room for twice the entries the old one held, and the move is done after at
/// most 1/`MIGRATE_BATCH` as many inserts as there were entries.
const MIGRATE_BATCH: usize = 4;

/// The hash of `key` in every [`Table`] (and as `std`'s `HashMap<_, _, FixedState>` computes it).
pub(crate) fn hash_of<Q: Hash + ?Sized>(key: &Q) -> u64 {
    #[cfg(test)]
    tests::HASHES.with(|hashes| hashes.set(hashes.get() + 1));
    FixedState::default().hash_one(key)
}

/// Entries in order, in fixed-size segments, found by key through a table of positions.
pub(crate) struct Table<K, V> {
    /// Every segment but the last is full; only the first may have less capacity than a
    /// segment (it grows by doubling, so a small map stays small).
    segments: Vec<Vec<Slot<K, V>>>,
    len: usize,
    /// The positions, by key. In a cell because a lookup (`&self`) moves a batch of entries
    /// while the index grows, as redis's `dictFind` does a rehash step: a keyspace that is only
    /// read after it grew would otherwise look in two tables for good. A move touches only the
    /// index, never an entry, so references to entries stay valid.
    index: RefCell<Index>,
    /// A segment emptied by removals, kept for the next growth.
    spare: Option<Vec<Slot<K, V>>>,
}

/// A [`Table`]'s positions by the hash of their keys, in one hash table, or two while it grows.
#[derive(Clone, Default)]
struct Index {
    /// The position of every entry; while the index grows, of the entries already moved out of
    /// `old` (every one below position `moved`, and those inserted since).
    table: HashTable<u32>,
    /// While the index grows: the positions of the entries not moved yet (each position is in
    /// exactly one of the two). Empty, with no memory, otherwise.
    old: HashTable<u32>,
    /// While the index grows: every entry at a position below this one is in `table`.
    moved: usize,
    /// The capacity the index last grew or shrank to. The table's own capacity will not do for
    /// deciding to shrink: it drops with every tombstone a removal leaves.
    peak: usize,
}

impl<K, V> Table<K, V> {
    /// log2 of the entries in a (full) segment: a power of two, so that a position splits into
    /// segment and offset with a shift and a mask.
    const SHIFT: u32 = {
        let size = size_of::<Slot<K, V>>();
        let per = match SEGMENT_BYTES.checked_div(size) {
            Some(per) => per,
            None => 1 << 16,
        };
        let per = if per < 16 { 16 } else { per };
        usize::BITS - 1 - per.leading_zeros()
    };
    const SEGMENT: usize = 1 << Self::SHIFT;
    const MASK: usize = Self::SEGMENT - 1;

    pub(crate) fn new() -> Self {
        Self { segments: Vec::new(), len: 0, index: RefCell::default(), spare: None }
    }

    /// Room for `capacity` entries in the index; the segments are allocated as they fill.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let mut table = Self::new();
        if capacity > 0 {
            let index = HashTable::with_capacity(capacity);
            table.index =
                RefCell::new(Index { peak: index.capacity(), table: index, ..Index::default() });
            table.segments.push(Vec::with_capacity(capacity.min(Self::SEGMENT)));
        }
        table
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many entries fit before the index grows.
    pub(crate) fn capacity(&self) -> usize {
        let index = self.index.borrow();
        index.table.capacity().saturating_sub(index.old.len())
    }

    /// Checks that every entry is indexed once, at its position, and that every entry below
    /// the move's cursor is in the new index.
    #[cfg(test)]
    fn check_index(&self)
    where
        K: Hash + Eq + std::fmt::Debug,
    {
        let index = self.index.borrow();
        assert_eq!(index.table.len() + index.old.len(), self.len, "entries indexed");
        for (position, slot) in self.segments.iter().flatten().enumerate() {
            let hash = hash_of(&slot.key);
            let new = index.table.find(hash, |&p| p as usize == position).is_some();
            let old = index.old.find(hash, |&p| p as usize == position).is_some();
            assert!(
                new != old,
                "{:?} at {position}: in the new index {new}, the old {old}",
                slot.key
            );
            assert!(
                new || position >= index.moved,
                "{:?} at {position} below the cursor",
                slot.key
            );
        }
    }

    /// Entries the segments have room for (the allocated ones, the spare included).
    #[cfg(test)]
    pub(crate) fn slots(&self) -> usize {
        self.segments.iter().chain(&self.spare).map(Vec::capacity).sum()
    }

    fn slot(&self, position: usize) -> &Slot<K, V> {
        Self::at(&self.segments, position)
    }

    fn at(segments: &[Vec<Slot<K, V>>], position: usize) -> &Slot<K, V> {
        &segments[position >> Self::SHIFT][position & Self::MASK]
    }

    fn slot_mut(&mut self, position: usize) -> &mut Slot<K, V> {
        &mut self.segments[position >> Self::SHIFT][position & Self::MASK]
    }

    /// The entry at `position` (below [`Table::len`]).
    pub(crate) fn get_index(&self, position: usize) -> Option<(&K, &V)> {
        (position < self.len).then(|| {
            let slot = self.slot(position);
            (&slot.key, &slot.value)
        })
    }

    fn push(&mut self, slot: Slot<K, V>) {
        let position = self.len;
        assert!(
            u32::try_from(position).is_ok(),
            "a tasuki_guest::Map holds at most 2^32 - 1 entries"
        );
        match self.segments.last_mut() {
            Some(last) if last.len() < Self::SEGMENT => {
                if last.len() == last.capacity() {
                    // Only the first segment can be short of a whole one: double it.
                    let grown = (last.capacity() * 2).clamp(FIRST_SEGMENT, Self::SEGMENT);
                    last.reserve_exact(grown - last.len());
                }
                last.push(slot);
            }
            _ => {
                let mut segment = match self.spare.take() {
                    Some(spare) => spare,
                    None if self.segments.is_empty() => {
                        Vec::with_capacity(FIRST_SEGMENT.min(Self::SEGMENT))
                    }
                    None => Vec::with_capacity(Self::SEGMENT),
                };
                segment.push(slot);
                self.segments.push(segment);
            }
        }
        self.len += 1;
    }

    fn pop(&mut self) -> Option<Slot<K, V>> {
        let last = self.segments.last_mut()?;
        let slot = last.pop()?;
        self.len -= 1;
        if last.is_empty() && self.segments.len() > 1 {
            self.spare = self.segments.pop();
        }
        Some(slot)
    }

    /// Removes the entry at `position`, moving the last one into its place (the index is not
    /// touched).
    fn swap_remove_slot(&mut self, position: usize) -> Slot<K, V> {
        let last = self.pop().expect("position below len");
        if position == self.len { last } else { std::mem::replace(self.slot_mut(position), last) }
    }

    /// Swaps the entries at `a` and `b` (the index is not touched).
    fn swap_slots(&mut self, a: usize, b: usize) {
        let (low, high) = if a < b { (a, b) } else { (b, a) };
        let (segment_low, segment_high) = (low >> Self::SHIFT, high >> Self::SHIFT);
        if segment_low == segment_high {
            self.segments[segment_low].swap(low & Self::MASK, high & Self::MASK);
        } else {
            let (left, right) = self.segments.split_at_mut(segment_high);
            std::mem::swap(
                &mut left[segment_low][low & Self::MASK],
                &mut right[0][high & Self::MASK],
            );
        }
    }

    /// Builds the index again, for at least `capacity` entries, reading the entries in order
    /// (and ends a move in progress): `O(len)` in one go, for the callers that are `O(len)`
    /// already.
    fn rebuild_index(&mut self, capacity: usize)
    where
        K: Hash,
    {
        Self::rebuild(&self.segments, self.len, self.index.get_mut(), capacity);
    }

    fn rebuild(segments: &[Vec<Slot<K, V>>], len: usize, index: &mut Index, capacity: usize)
    where
        K: Hash,
    {
        let mut table = HashTable::with_capacity(capacity.max(len));
        for (position, slot) in segments.iter().flatten().enumerate() {
            table.insert_unique(hash_of(&slot.key), position as u32, |_| {
                unreachable!("the index was sized for every entry")
            });
        }
        *index = Index { peak: table.capacity(), table, ..Index::default() };
    }

    /// Makes room in the index for one more entry. When it is full, a new index takes its
    /// place, twice as large when more than half of it holds entries, or of the same size when
    /// removals' tombstones used up its room; the entries move to it a batch at a time
    /// ([`Table::migrate`]).
    fn reserve_one(&mut self)
    where
        K: Hash,
    {
        let Self { segments, len, index, .. } = self;
        let index = index.get_mut();
        if index.table.len() < index.table.capacity() {
            return;
        }
        if !index.old.is_empty() {
            // The new index filled before the move ended, which takes a churn of removals
            // leaving tombstones: finish in one go rather than keep three tables.
            let peak = index.peak;
            Self::rebuild(segments, *len, index, peak);
            if index.table.len() < index.table.capacity() {
                return;
            }
        }
        let wanted = *len + 1;
        let capacity =
            if wanted > index.peak / 2 { wanted.max(index.peak * 2) } else { index.peak };
        if *len == 0 {
            Self::rebuild(segments, *len, index, capacity);
            return;
        }
        index.old = std::mem::replace(&mut index.table, HashTable::with_capacity(capacity));
        index.moved = 0;
        index.peak = index.table.capacity();
    }

    /// Puts `position` (whose key hashes to `hash`, and whose slot holds its entry) into the
    /// index; when the index has no room left, rebuilds it from the slots instead, which indexes
    /// `position` with the rest.
    fn put(segments: &[Vec<Slot<K, V>>], len: usize, index: &mut Index, hash: u64, position: usize)
    where
        K: Hash,
    {
        if index.table.len() < index.table.capacity() {
            index.table.insert_unique(hash, position as u32, |&p| {
                hash_of(&Self::at(segments, p as usize).key)
            });
        } else {
            let peak = index.peak;
            Self::rebuild(segments, len, index, peak);
        }
    }

    /// Moves up to `batch` positions' entries from the old index to the new one, in position
    /// order, and drops the old index once every entry is across.
    fn migrate(segments: &[Vec<Slot<K, V>>], len: usize, index: &mut Index, batch: usize)
    where
        K: Hash,
    {
        let end = index.moved.saturating_add(batch).min(len);
        while index.moved < end && !index.old.is_empty() {
            let position = index.moved;
            let hash = hash_of(&Self::at(segments, position).key);
            if let Ok(entry) = index.old.find_entry(hash, |&p| p as usize == position) {
                entry.remove();
                Self::put(segments, len, index, hash, position);
            }
            index.moved += 1;
        }
        if index.old.is_empty() || index.moved >= len {
            // Once a move: dropping an old index with entries left would lose them silently.
            assert!(index.old.is_empty(), "every entry below len was moved");
            index.old = HashTable::new();
            index.moved = 0;
        }
    }

    /// A batch of the index's growth, if it is under way (after an insert or a removal).
    fn step(&mut self)
    where
        K: Hash,
    {
        let Self { segments, len, index, .. } = self;
        let index = index.get_mut();
        if !index.old.is_empty() {
            Self::migrate(segments, *len, index, MIGRATE_BATCH);
        }
    }

    /// Shrinks the index to twice the entries when they are at most 1/[`SHRINK_BELOW`] of what
    /// it last grew to, and lets the spare segment go: `O(len)`, once per halving or more of the
    /// map, so removals stay `O(1)` amortized. The order is kept (a pre-copy's cursor stays
    /// valid).
    pub(crate) fn give_back(&mut self)
    where
        K: Hash,
    {
        let peak = self.index.get_mut().peak;
        if peak > SHRINK_MIN && self.len * SHRINK_BELOW <= peak {
            self.spare = None;
            if let [only] = self.segments.as_mut_slice() {
                only.shrink_to(self.len * 2);
            }
            self.rebuild_index(self.len * 2);
        }
    }

    /// Removes every entry and gives the memory back.
    pub(crate) fn clear(&mut self) {
        *self = Self::new();
    }

    /// The position and entry under `key`.
    pub(crate) fn get_full<Q>(&self, key: &Q) -> Option<(usize, &K, &V)>
    where
        K: Hash,
        Q: ?Sized + Hash + Equivalent<K>,
    {
        if self.len == 0 {
            return None;
        }
        let hash = hash_of(key);
        let is_key = |&p: &u32| key.equivalent(&self.slot(p as usize).key);
        let index = self.index.borrow();
        let found = index.table.find(hash, is_key).copied();
        let position = if index.old.is_empty() {
            found?
        } else {
            let found = found.or_else(|| index.old.find(hash, is_key).copied());
            drop(index);
            // The index grows: every lookup moves a batch too (hit or miss, as redis's
            // `dictFind` does), so that a map only read from, or a hot set of keys already
            // moved, does not keep two tables for good. The step is skipped if the index is
            // borrowed already: a key's `Hash` or `Eq` that looks up the same map.
            if let Ok(mut index) = self.index.try_borrow_mut() {
                Self::migrate(&self.segments, self.len, &mut index, MIGRATE_BATCH);
            }
            found?
        };
        let slot = self.slot(position as usize);
        Some((position as usize, &slot.key, &slot.value))
    }

    /// The position and entry under `key`, its value to change.
    pub(crate) fn get_full_mut<Q>(&mut self, key: &Q) -> Option<(usize, &K, &mut V)>
    where
        K: Hash,
        Q: ?Sized + Hash + Equivalent<K>,
    {
        let (position, _, _) = self.get_full(key)?;
        let slot = self.slot_mut(position);
        Some((position, &slot.key, &mut slot.value))
    }

    /// Sets `key` to `value`: its position, and the value it replaces.
    pub(crate) fn insert_full(&mut self, key: K, value: V) -> (usize, Option<V>)
    where
        K: Hash + Eq,
    {
        match self.get_full_mut(&key) {
            Some((position, _, old)) => (position, Some(std::mem::replace(old, value))),
            None => (self.push_new(hash_of(&key), key, value), None),
        }
    }

    /// Adds an entry whose key (of hash `hash`) is not in the table: its position.
    fn push_new(&mut self, hash: u64, key: K, value: V) -> usize
    where
        K: Hash,
    {
        self.reserve_one();
        let position = self.len;
        self.push(Slot { key, value });
        let Self { segments, len, index, .. } = self;
        Self::put(segments, *len, index.get_mut(), hash, position);
        self.step();
        position
    }

    /// The value under `key`, inserting `default()` first if there is none: its position,
    /// whether it was there, and the value.
    pub(crate) fn get_or_insert_with(
        &mut self,
        key: K,
        default: impl FnOnce() -> V,
    ) -> (usize, bool, &K, &mut V)
    where
        K: Hash + Eq,
    {
        let (position, existed) = match self.get_full(&key) {
            Some((position, _, _)) => (position, true),
            None => (self.push_new(hash_of(&key), key, default()), false),
        };
        let slot = self.slot_mut(position);
        (position, existed, &slot.key, &mut slot.value)
    }

    /// Removes `key`: the position it had and its entry. The last entry takes that position.
    pub(crate) fn swap_remove_full<Q>(&mut self, key: &Q) -> Option<(usize, K, V)>
    where
        K: Hash,
        Q: ?Sized + Hash + Equivalent<K>,
    {
        if self.len == 0 {
            return None;
        }
        let hash = hash_of(key);
        let Self { segments, index, .. } = self;
        let index = index.get_mut();
        let is_key = |p: &u32| key.equivalent(&Self::at(segments, *p as usize).key);
        let position = match index.table.find_entry(hash, is_key) {
            Ok(found) => found.remove().0,
            Err(_) if index.old.is_empty() => return None,
            Err(_) => index.old.find_entry(hash, is_key).ok()?.remove().0,
        };
        let (position, last) = (position as usize, self.len - 1);
        let Slot { key, value } = self.swap_remove_slot(position);
        if position != last {
            // The last entry now sits at `position`: point its index entry there, and move it
            // to the new index if it came from the old one below the move's cursor.
            let Self { segments, len, index, .. } = self;
            let index = index.get_mut();
            let hash = hash_of(&Self::at(segments, position).key);
            if let Some(slot) = index.table.find_mut(hash, |&p| p as usize == last) {
                *slot = position as u32;
            } else {
                let found = index.old.find_entry(hash, |&p| p as usize == last);
                let mut found = found.expect("every entry is indexed");
                if position < index.moved {
                    found.remove();
                    Self::put(segments, *len, index, hash, position);
                } else {
                    *found.get_mut() = position as u32;
                }
            }
        }
        self.step();
        Some((position, key, value))
    }

    /// Keeps the entries `keep` says yes to, in their order; `keep` sees each entry once, in
    /// order.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool)
    where
        K: Hash,
    {
        let mut kept = 0;
        for position in 0..self.len {
            let slot = self.slot(position);
            if keep(&slot.key, &slot.value) {
                if kept != position {
                    self.swap_slots(kept, position);
                }
                kept += 1;
            }
        }
        if kept == self.len {
            return;
        }
        while self.len > kept {
            self.pop();
        }
        let peak = self.index.get_mut().peak;
        self.rebuild_index(peak);
    }

    /// The entries, in order.
    pub(crate) fn iter(&self) -> Iter<'_, K, V> {
        Iter { segments: &self.segments, shift: Self::SHIFT, front: 0, back: self.len }
    }

    /// Every value, mutably, in order.
    pub(crate) fn values_mut(&mut self) -> ValuesMut<'_, K, V> {
        ValuesMut { slots: self.segments.iter_mut().flatten(), left: self.len }
    }
}

impl<K: Clone, V: Clone> Clone for Table<K, V> {
    fn clone(&self) -> Self {
        Self {
            segments: self.segments.clone(),
            len: self.len,
            index: self.index.clone(),
            spare: None,
        }
    }
}

impl<K, V> Default for Table<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> IntoIterator for Table<K, V> {
    type Item = (K, V);
    type IntoIter = IntoIter<K, V>;
    fn into_iter(self) -> IntoIter<K, V> {
        IntoIter { slots: self.segments.into_iter().flatten(), left: self.len }
    }
}

/// The entries of a [`crate::Map`], in its order.
pub struct Iter<'a, K, V> {
    segments: &'a [Vec<Slot<K, V>>],
    shift: u32,
    front: usize,
    back: usize,
}

impl<'a, K, V> Iter<'a, K, V> {
    fn at(&self, position: usize) -> (&'a K, &'a V) {
        let mask = (1 << self.shift) - 1;
        let slot = &self.segments[position >> self.shift][position & mask];
        (&slot.key, &slot.value)
    }
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        (self.front < self.back).then(|| {
            self.front += 1;
            self.at(self.front - 1)
        })
    }

    fn nth(&mut self, n: usize) -> Option<Self::Item> {
        self.front = self.front.saturating_add(n).min(self.back);
        self.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.back - self.front;
        (left, Some(left))
    }
}

impl<K, V> DoubleEndedIterator for Iter<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        (self.front < self.back).then(|| {
            self.back -= 1;
            self.at(self.back)
        })
    }
}

impl<K, V> ExactSizeIterator for Iter<'_, K, V> {}
impl<K, V> std::iter::FusedIterator for Iter<'_, K, V> {}

impl<K, V> Clone for Iter<'_, K, V> {
    fn clone(&self) -> Self {
        Self { ..*self }
    }
}

impl<K, V> std::fmt::Debug for Iter<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iter").field("left", &(self.back - self.front)).finish()
    }
}

/// The keys of a [`crate::Map`], in its order.
#[derive(Clone, Debug)]
pub struct Keys<'a, K, V>(pub(crate) Iter<'a, K, V>);

impl<'a, K, V> Iterator for Keys<'a, K, V> {
    type Item = &'a K;
    fn next(&mut self) -> Option<&'a K> {
        self.0.next().map(|(key, _)| key)
    }
    fn nth(&mut self, n: usize) -> Option<&'a K> {
        self.0.nth(n).map(|(key, _)| key)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<K, V> DoubleEndedIterator for Keys<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|(key, _)| key)
    }
}

impl<K, V> ExactSizeIterator for Keys<'_, K, V> {}
impl<K, V> std::iter::FusedIterator for Keys<'_, K, V> {}

/// The values of a [`crate::Map`], in its order.
#[derive(Clone, Debug)]
pub struct Values<'a, K, V>(pub(crate) Iter<'a, K, V>);

impl<'a, K, V> Iterator for Values<'a, K, V> {
    type Item = &'a V;
    fn next(&mut self) -> Option<&'a V> {
        self.0.next().map(|(_, value)| value)
    }
    fn nth(&mut self, n: usize) -> Option<&'a V> {
        self.0.nth(n).map(|(_, value)| value)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl<K, V> DoubleEndedIterator for Values<'_, K, V> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|(_, value)| value)
    }
}

impl<K, V> ExactSizeIterator for Values<'_, K, V> {}
impl<K, V> std::iter::FusedIterator for Values<'_, K, V> {}

/// The values of a [`crate::Map`], mutably, in its order.
pub struct ValuesMut<'a, K, V> {
    slots: std::iter::Flatten<std::slice::IterMut<'a, Vec<Slot<K, V>>>>,
    left: usize,
}

impl<'a, K, V> Iterator for ValuesMut<'a, K, V> {
    type Item = &'a mut V;
    fn next(&mut self) -> Option<&'a mut V> {
        let slot = self.slots.next()?;
        self.left -= 1;
        Some(&mut slot.value)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<K, V> ExactSizeIterator for ValuesMut<'_, K, V> {}

impl<K, V> std::fmt::Debug for ValuesMut<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValuesMut").field("left", &self.left).finish()
    }
}

/// The entries of a [`crate::Map`], taken, in its order.
pub struct IntoIter<K, V> {
    slots: std::iter::Flatten<std::vec::IntoIter<Vec<Slot<K, V>>>>,
    left: usize,
}

impl<K, V> Iterator for IntoIter<K, V> {
    type Item = (K, V);
    fn next(&mut self) -> Option<(K, V)> {
        let Slot { key, value } = self.slots.next()?;
        self.left -= 1;
        Some((key, value))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<K, V> ExactSizeIterator for IntoIter<K, V> {}

impl<K, V> std::fmt::Debug for IntoIter<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntoIter").field("left", &self.left).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::collections::HashMap;

    thread_local! {
        /// Keys hashed on this thread: the work of an operation on a [`Table`].
        pub(super) static HASHES: Cell<usize> = const { Cell::new(0) };
    }

    /// A seeded xorshift64 generator: the same walk on every run.
    fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        }
    }

    /// A random walk of inserts, overwrites and removals, checked against `std`'s map and an
    /// order kept by hand (the `IndexMap` order: push, swap-remove).
    #[test]
    fn matches_a_model_through_inserts_removals_and_retains() {
        let mut table: Table<u64, u64> = Table::new();
        let mut model: HashMap<u64, u64> = HashMap::new();
        let mut order: Vec<u64> = Vec::new();
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for step in 0..200_000u64 {
            let key = next() % 5_000;
            match next() % 10 {
                0..=5 => {
                    let (position, old) = table.insert_full(key, step);
                    assert_eq!(old, model.insert(key, step));
                    if old.is_none() {
                        order.push(key);
                    }
                    assert_eq!(order[position], key);
                }
                6..=8 => {
                    let removed = table.swap_remove_full(&key);
                    assert_eq!(
                        removed.as_ref().map(|(_, k, v)| (*k, *v)),
                        model.remove(&key).map(|v| (key, v))
                    );
                    if let Some((position, _, _)) = removed {
                        assert_eq!(order.swap_remove(position), key);
                    }
                    table.give_back();
                }
                _ if step % 1_000 == 0 => {
                    let cut = next() % 3;
                    table.retain(|k, _| k % 3 != cut);
                    model.retain(|k, _| k % 3 != cut);
                    order.retain(|k| k % 3 != cut);
                    table.give_back();
                }
                _ => {
                    let got = table.get_full(&key).map(|(p, k, v)| (order[p], *k, *v));
                    assert_eq!(got, model.get(&key).map(|v| (key, key, *v)));
                }
            }
            assert_eq!(table.len(), model.len());
            if step % 89 == 0 {
                table.check_index();
            }
        }
        let keys: Vec<u64> = table.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, order);
        assert_eq!(
            table.iter().rev().map(|(k, _)| *k).collect::<Vec<_>>(),
            order.iter().rev().copied().collect::<Vec<_>>()
        );
        for (n, key) in order.iter().enumerate().step_by(97) {
            assert_eq!(table.iter().nth(n).map(|(k, _)| k), Some(key));
            assert_eq!(table.get_index(n).map(|(k, _)| k), Some(key));
        }
        let taken: Vec<(u64, u64)> = table.into_iter().collect();
        assert_eq!(taken.len(), order.len());
    }

    /// No insert or removal moves more than a batch or two of entries to a new index, however large
    /// the table (a whole-index rebuild at 917,504 entries stalled an instance for 127 ms), and
    /// each move ends before the next begins, with every entry findable throughout.
    #[test]
    fn the_index_grows_a_batch_of_entries_at_a_time() {
        let mut table: Table<u64, u64> = Table::new();
        let mut grown = 0;
        let indexed = |table: &Table<u64, u64>| {
            let index = table.index.borrow();
            (index.table.len(), index.old.len())
        };
        for i in 0..300_000u64 {
            let (new_before, old_before) = indexed(&table);
            let hashes = HASHES.get();
            table.insert_full(i, i);
            let hashed = HASHES.get() - hashes;
            // Its lookup and its insert each move a batch.
            assert!(hashed <= 2 * MIGRATE_BATCH + 2, "insert {i} hashed {hashed} keys");
            let (new_after, old_after) = indexed(&table);
            if old_after > 0 && old_before == 0 {
                grown += 1;
            }
            let moved = if old_before == 0 && old_after > 0 {
                // A move began: the whole index became the old one.
                new_after
            } else {
                new_after - new_before
            };
            assert!(moved <= 2 * MIGRATE_BATCH + 1, "insert {i} indexed {moved} entries");
            assert!(old_after <= old_before.max(table.len()), "insert {i}");
            if i % 4_099 == 0 {
                table.check_index();
                for j in (0..=i).step_by(1_013) {
                    assert_eq!(table.get_full(&j).map(|(_, _, v)| *v), Some(j));
                }
            }
        }
        assert!(grown >= 14, "the index grew {grown} times");
        // Removals during a move: from the end (the last entry moves nowhere) and from the start
        // (the last entry moves below the cursor).
        while table.index.borrow().old.is_empty() {
            let i = table.len() as u64;
            table.insert_full(i, i);
        }
        let (mut front, mut back) = (0u64, table.len() as u64 - 1);
        while !table.index.borrow().old.is_empty() {
            let (new_before, _) = indexed(&table);
            let hashes = HASHES.get();
            table.swap_remove_full(&front);
            table.swap_remove_full(&back);
            let hashed = HASHES.get() - hashes;
            assert!(hashed <= 2 * (MIGRATE_BATCH + 2), "two removals hashed {hashed} keys");
            front += 1;
            back -= 1;
            let (new_after, _) = indexed(&table);
            assert!(new_after <= new_before + 2 * MIGRATE_BATCH, "a removal indexed {new_after}");
            if front % 1_009 == 0 {
                table.check_index();
            }
        }
        table.check_index();
        for (position, (key, value)) in table.iter().enumerate() {
            assert_eq!(key, value);
            assert_eq!(table.get_full(key).map(|(p, _, _)| p), Some(position));
        }
    }

    /// A map only read from after it grew finishes the move by its lookups, hits and misses
    /// alike, and then looks in one table: a keyspace loaded and then only read (a cache warmed
    /// by a restore) would otherwise pay a second probe on most lookups for good.
    #[test]
    fn lookups_alone_finish_a_move() {
        let mut table: Table<u64, u64> = Table::new();
        let mut i = 0;
        while table.index.borrow().old.is_empty() || table.index.borrow().old.len() < 50_000 {
            table.insert_full(i, i);
            i += 1;
        }
        let old = table.index.borrow().old.len();
        let mut lookups = 0;
        while !table.index.borrow().old.is_empty() {
            let key = (lookups * 7_919) % (2 * i);
            assert_eq!(table.get_full(&key).map(|(_, _, v)| *v), (key < i).then_some(key));
            lookups += 1;
            assert!(lookups <= 2 * i, "{lookups} lookups and still moving");
        }
        assert!(lookups as usize * MIGRATE_BATCH >= old, "{old} moved by {lookups} lookups");
        table.check_index();
    }

    /// Lookups of a few keys already moved (a hot set, read and overwritten) finish a move
    /// too: only misses of the new index used to take a step, and the old index stayed.
    #[test]
    fn a_hot_set_of_moved_keys_finishes_a_move() {
        let mut table: Table<u64, u64> = Table::new();
        let mut i = 0;
        while table.index.borrow().old.len() < 50_000 {
            table.insert_full(i, i);
            i += 1;
        }
        let hot = table.index.borrow().moved as u64;
        assert!(hot > 0, "some keys are in the new index");
        let mut n = 0u64;
        while !table.index.borrow().old.is_empty() {
            let key = n % hot;
            if n.is_multiple_of(2) {
                assert_eq!(table.get_full(&key).map(|(_, _, v)| *v), Some(key));
            } else {
                table.insert_full(key, key);
            }
            n += 1;
            assert!(n <= 2 * i, "{n} lookups of {hot} moved keys and still moving");
        }
        table.check_index();
    }

    /// Removals at full load leave tombstones that use up the index's room: the index is
    /// then moved to a new one of the same size, a batch at a time like a growth, and the
    /// churn of inserts and removals meanwhile (the last entry moving below the cursor from
    /// the old index, among others) loses nothing.
    #[test]
    fn a_churn_after_tombstones_moves_the_index_at_the_same_size() {
        let mut table: Table<u64, u64> = Table::new();
        let mut model: HashMap<u64, u64> = HashMap::new();
        let mut live: Vec<u64> = Vec::new();
        let mut next_random = xorshift(0x2545_f491_4f6c_dd1d);
        let mut next = 0u64;
        // To the brim: the next insert would start a growth.
        while next < 20_000 || {
            let index = table.index.borrow();
            index.table.len() < index.table.capacity()
        } {
            table.insert_full(next, next);
            model.insert(next, next);
            live.push(next);
            next += 1;
        }
        for _ in 0..live.len() * 6 / 10 {
            let key = live.swap_remove((next_random() % live.len() as u64) as usize);
            assert_eq!(table.swap_remove_full(&key).map(|(_, _, v)| v), model.remove(&key));
        }
        let (mut same_size, mut below_cursor) = (0, 0);
        for step in 0..400_000u64 {
            let (peak, moving) = {
                let index = table.index.borrow();
                (index.peak, !index.old.is_empty())
            };
            if next_random().is_multiple_of(2) {
                table.insert_full(next, next);
                model.insert(next, next);
                live.push(next);
                next += 1;
            } else {
                let key = live.swap_remove((next_random() % live.len() as u64) as usize);
                let last = table.len() - 1;
                let (old_has_last, cursor) = {
                    let index = table.index.borrow();
                    let hash = hash_of(table.get_index(last).expect("an entry").0);
                    (index.old.find(hash, |&p| p as usize == last).is_some(), index.moved)
                };
                let removed = table.swap_remove_full(&key);
                if old_has_last && removed.as_ref().is_some_and(|(p, _, _)| *p < cursor) {
                    below_cursor += 1;
                }
                assert_eq!(removed.map(|(_, _, v)| v), model.remove(&key), "step {step}");
            }
            let index = table.index.borrow();
            if !moving && !index.old.is_empty() && index.peak == peak {
                same_size += 1;
            }
            drop(index);
            if step % 4_999 == 0 {
                table.check_index();
            }
        }
        table.check_index();
        for (key, value) in &model {
            assert_eq!(table.get_full(key).map(|(_, _, v)| *v), Some(*value));
        }
        assert!(same_size > 0, "no same-size move began");
        assert!(below_cursor > 0, "no removal moved an old entry below the cursor");
    }

    /// Growing never keeps more than the entries plus a segment (and a spare), unlike a
    /// vector that doubles: at any size the slots are within one segment of the entries.
    #[test]
    fn segments_hold_the_entries_and_at_most_two_segments_more() {
        let mut table: Table<u64, [u64; 7]> = Table::new();
        let segment = Table::<u64, [u64; 7]>::SEGMENT;
        for i in 0..300_000u64 {
            table.insert_full(i, [i; 7]);
            if i % 9_973 == 0 {
                assert!(
                    table.slots() <= table.len() + 2 * segment,
                    "{} slots for {}",
                    table.slots(),
                    table.len()
                );
            }
        }
        for i in 0..299_000u64 {
            table.swap_remove_full(&i);
        }
        table.give_back();
        assert!(
            table.slots() <= table.len() + 2 * segment,
            "{} slots for {}",
            table.slots(),
            table.len()
        );
        assert!(table.capacity() <= 4 * table.len(), "an index of {}", table.capacity());
        for i in 299_000..300_000u64 {
            assert_eq!(table.get_full(&i).map(|(_, _, v)| v[0]), Some(i));
        }
    }

    /// Removals and inserts at a segment's edge reuse the spare segment instead of allocating.
    #[test]
    fn back_and_forth_over_a_segment_edge_keeps_one_spare() {
        let mut table: Table<u64, u64> = Table::new();
        let segment = Table::<u64, u64>::SEGMENT as u64;
        for i in 0..=segment {
            table.insert_full(i, i);
        }
        for _ in 0..100 {
            table.swap_remove_full(&segment);
            assert!(table.spare.is_some());
            table.insert_full(segment, segment);
            assert!(table.spare.is_none());
        }
        assert_eq!(table.len() as u64, segment + 1);
    }

    /// The first segment grows by doubling, so a small map stays small.
    #[test]
    fn a_small_table_is_small() {
        let mut table: Table<u8, u8> = Table::new();
        assert_eq!(table.slots(), 0);
        for i in 0..3 {
            table.insert_full(i, i);
        }
        assert_eq!(table.slots(), 4);
        assert!(table.capacity() <= 7);
    }
}

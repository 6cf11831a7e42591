//! [`Map`]: a hash map that pre-copies itself.

use crate::collection::{self, Converted, Extra, Plain, Read, Ref, Tracking};
use crate::precopy::{self, Mode, Sink};
pub use crate::table::{IntoIter, Iter, Keys, Values, ValuesMut};
use crate::table::{SHRINK_BELOW, SHRINK_MIN, Table};
use indexmap::{Equivalent, IndexSet};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::hash::{BuildHasherDefault, DefaultHasher, Hash};
use std::marker::PhantomData;

/// The hasher of every [`Map`]: std's SipHash with fixed keys, so the same operations build the
/// same table in every instance and iterate it in the same order (replays, snapshots and the
/// simulator are reproducible).
pub type FixedState = BuildHasherDefault<DefaultHasher>;

/// The most entries a decoded length may pre-allocate: a length read from a snapshot is not
/// trusted further (a larger map still decodes, growing as it goes).
const PRESIZE_MAX: u64 = 1 << 24;

/// A hash map whose contents cross an upgrade ahead of the pause.
///
/// Use it for an app's big collections in place of `HashMap`: outside an upgrade it is a hash
/// map in insertion order (entries in fixed-size segments, which never move or over-allocate
/// by more than a segment as the map grows, found through a table of `u32` positions hashed
/// with [`FixedState`]), and it serializes
/// exactly as a `HashMap` does (a length, then the pairs), so replacing one with the other keeps
/// the state's encoding. During an upgrade the host copies its entries in small chunks between
/// events while the app serves, and every change to an entry already copied is recorded and sent
/// again; the pause moves only those (see [`crate::precopy`] in the SDK's source).
///
/// Removal is [`Map::remove`], which moves the last entry into the hole (`O(1)`, as
/// `IndexMap::swap_remove`, whose order this keeps): the order of the entries is the order of insertion only until the
/// first removal.
///
/// In a migration or a transformer, a pre-copied map arrives as a reference to its chunks, not
/// as entries: convert it with [`Map::convert`] (the conversion then runs chunk by chunk as the
/// entries cross). Reading a reference's entries panics, naming this rule.
pub struct Map<K, V> {
    entries: Table<K, V>,
    extra: Extra<Track<K>>,
}

/// A map's part of an export session.
struct Track<K> {
    session: u64,
    stream: u32,
    /// Entries at positions below this were sent.
    cursor: usize,
    /// Keys sent and changed (or removed) since.
    dirty: IndexSet<K, FixedState>,
    /// Records handed out in this session.
    records: u64,
}

impl<K> Tracking for Track<K> {
    fn session(&self) -> u64 {
        self.session
    }
}

impl<K, V> Map<K, V> {
    /// An empty map.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty map with room for `capacity` entries.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::from_entries(Table::with_capacity(capacity))
    }

    fn from_entries(entries: Table<K, V>) -> Self {
        Self { entries, extra: Extra::none() }
    }

    fn reference(reference: Ref) -> Self {
        Self { entries: Table::new(), extra: Extra::reference(reference) }
    }

    fn readable(&self) -> &Table<K, V> {
        self.extra.check_readable();
        &self.entries
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.readable().len()
    }

    /// Slots the tracking of the export session holds for changed keys (stale or not).
    #[cfg(test)]
    pub(crate) fn dirty_capacity(&self) -> usize {
        self.extra.peek_tracked(|track| track.dirty.capacity()).unwrap_or(0)
    }

    /// How many entries fit before it allocates again. It shrinks when at most 1/8 of it is in
    /// use (a removal, [`Self::clear`]), so that memory freed by deletes can be given back.
    pub fn capacity(&self) -> usize {
        self.readable().capacity()
    }

    /// True if the map holds no entry.
    pub fn is_empty(&self) -> bool {
        self.readable().is_empty()
    }

    /// The entries, in the map's order.
    pub fn iter(&self) -> Iter<'_, K, V> {
        self.readable().iter()
    }

    /// The keys, in the map's order.
    pub fn keys(&self) -> Keys<'_, K, V> {
        Keys(self.readable().iter())
    }

    /// The entry at position `index` of the map's order (`0..len`), for scanning a map a part
    /// at a time. Positions change when entries are removed (the last takes the removed one's
    /// place).
    pub fn get_index(&self, index: usize) -> Option<(&K, &V)> {
        self.readable().get_index(index)
    }

    /// The values, in the map's order.
    pub fn values(&self) -> Values<'_, K, V> {
        Values(self.readable().iter())
    }

    /// Removes every entry, and gives their memory back. During an upgrade the map starts a
    /// new stream, so the entries copied so far are dropped by the reader rather than removed
    /// one by one.
    pub fn clear(&mut self) {
        self.extra.restart();
        self.entries.clear();
    }

    /// Every value, mutably. During an upgrade this makes the whole map be copied again
    /// (a change through the iterator cannot be told from no change): prefer [`Map::get_mut`].
    pub fn values_mut(&mut self) -> ValuesMut<'_, K, V> {
        self.extra.restart();
        self.entries.values_mut()
    }
}

impl<K: Hash + Eq + Clone, V> Map<K, V> {
    /// The value under `key`.
    pub fn get<Q: ?Sized + Hash + Equivalent<K>>(&self, key: &Q) -> Option<&V> {
        self.readable().get_full(key).map(|(_, _, value)| value)
    }

    /// The entry under `key`: the stored key and its value.
    pub fn get_key_value<Q: ?Sized + Hash + Equivalent<K>>(&self, key: &Q) -> Option<(&K, &V)> {
        self.readable().get_full(key).map(|(_, key, value)| (key, value))
    }

    /// True if `key` has an entry.
    pub fn contains_key<Q: ?Sized + Hash + Equivalent<K>>(&self, key: &Q) -> bool {
        self.readable().get_full(key).is_some()
    }

    /// The value under `key`, to change. The entry counts as changed.
    pub fn get_mut<Q: ?Sized + Hash + Equivalent<K>>(&mut self, key: &Q) -> Option<&mut V> {
        self.extra.check_readable();
        let Self { entries, extra, .. } = self;
        let (index, key, value) = entries.get_full_mut(key)?;
        if let Some(track) = extra.tracked()
            && index < track.cursor
        {
            track.dirty.insert(key.clone());
        }
        Some(value)
    }

    /// Sets `key` to `value`, returning the value it replaces.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.extra.check_readable();
        let Self { entries, extra } = self;
        let (index, old) = entries.insert_full(key, value);
        if old.is_some()
            && let Some(track) = extra.tracked()
            && index < track.cursor
        {
            let (key, _) = entries.get_index(index).expect("just inserted");
            track.dirty.insert(key.clone());
        }
        old
    }

    /// The value under `key`, inserting `default()` first if there is none. The entry counts
    /// as changed.
    pub fn get_or_insert_with(&mut self, key: K, default: impl FnOnce() -> V) -> &mut V {
        self.extra.check_readable();
        let Self { entries, extra } = self;
        let (index, existed, key, value) = entries.get_or_insert_with(key, default);
        if existed
            && let Some(track) = extra.tracked()
            && index < track.cursor
        {
            track.dirty.insert(key.clone());
        }
        value
    }

    /// Removes `key`, returning its value. The last entry takes its place (`O(1)`).
    pub fn remove<Q: ?Sized + Hash + Equivalent<K>>(&mut self, key: &Q) -> Option<V> {
        self.extra.check_readable();
        let Self { entries, extra } = self;
        let (index, key, value) = entries.swap_remove_full(key)?;
        if let Some(track) = extra.tracked() {
            // The last entry moved to `index`: if it was not sent yet and now sits below the
            // cursor, the cursor will not reach it.
            let moved_from = entries.len();
            if index < track.cursor && moved_from >= track.cursor && index < entries.len() {
                let (moved, _) = entries.get_index(index).expect("moved here");
                track.dirty.insert(moved.clone());
            }
            track.cursor = track.cursor.min(entries.len());
            track.dirty.insert(key);
        }
        entries.give_back();
        Some(value)
    }

    /// Keeps only the entries `keep` says yes to, in their order. `keep` sees each value but
    /// cannot change it (a change there could not be told from none, and would be lost by an
    /// upgrade in progress): change values with [`Map::get_mut`].
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.extra.check_readable();
        let Self { entries, extra } = self;
        match extra.tracked() {
            None => entries.retain(|key, value| keep(key, value)),
            Some(track) => {
                let (mut index, mut kept_below) = (0, 0);
                let cursor = track.cursor;
                entries.retain(|key, value| {
                    let kept = keep(key, value);
                    if !kept {
                        track.dirty.insert(key.clone());
                    } else if index < cursor {
                        kept_below += 1;
                    }
                    index += 1;
                    kept
                });
                track.cursor = kept_below;
            }
        }
        entries.give_back();
    }

    /// Converts every value with `convert`, keeping the keys: the way a migration or a
    /// transformer rewrites a map. On a map of entries it runs now; on a pre-copied map it runs
    /// on each entry as its chunk crosses, so the conversion happens before the pause. An error
    /// aborts the import (the upgrade rolls back, the old version serving on).
    pub fn convert<V2>(
        self,
        convert: impl Fn(&K, V) -> Result<V2, String> + 'static,
    ) -> Result<Map<K, V2>, String>
    where
        K: Serialize + for<'de> Deserialize<'de> + 'static,
        V: for<'de> Deserialize<'de> + 'static,
        V2: Serialize + 'static,
    {
        let Some(reference) = self.extra.referenced() else {
            let mut out = Map::with_capacity(self.entries.len());
            for (key, value) in self.entries {
                let value = convert(&key, value)?;
                out.entries.insert_full(key, value);
            }
            return Ok(out);
        };
        let read = collection::convert_reference::<Table<K, V2>>(reference, |store| {
            if store {
                Box::new(ConvertStore::<K, V, V2, _> {
                    entries: presized(reference.len),
                    applied: 0,
                    convert,
                    old: PhantomData,
                })
            } else {
                Box::new(ConvertEncode::<K, V, V2, _> { convert, types: PhantomData })
            }
        })?;
        Ok(match read {
            Read::Empty => Map::new(),
            Read::Built(entries) => Map::from_entries(entries),
            Read::Reference(reference) => Map::reference(reference),
        })
    }

    /// This map's share of a pass of an export session: records within the pass's budget,
    /// dirty entries first. Returns the reference written in its place.
    fn pass(&self) -> Result<Ref, String>
    where
        K: Serialize,
        V: Serialize,
    {
        precopy::with_pass(|pass| {
            let session = pass.session;
            let mut track = self.extra.for_pass(session, || Track {
                session,
                stream: pass.new_stream(),
                cursor: 0,
                dirty: IndexSet::default(),
                records: 0,
            })?;
            let track = &mut *track;
            let stream = track.stream;
            precopy::with_mode(Mode::Inline, || -> Result<(), String> {
                while pass.has_room() {
                    let Some(key) = track.dirty.pop() else { break };
                    let value = self.entries.get_full(&key).map(|(_, _, value)| value);
                    pass.record(stream, &key, value)?;
                    track.records += 1;
                }
                while pass.has_room() && track.cursor < self.entries.len() {
                    let (key, value) = self.entries.get_index(track.cursor).expect("below len");
                    pass.record(stream, key, Some(value))?;
                    track.cursor += 1;
                    track.records += 1;
                }
                Ok(())
            })?;
            // The dirty set drains as the pass sends it, but keeps its table: shrink it as the
            // map would, or a session that saw many writes (a mass delete during a checkpoint)
            // leaves that table allocated until the map is next written, which may be never.
            let dirty = &mut track.dirty;
            if dirty.capacity() > SHRINK_MIN && dirty.len() * SHRINK_BELOW <= dirty.capacity() {
                dirty.shrink_to(dirty.len() * 2);
            }
            let pending = (self.entries.len() - track.cursor + track.dirty.len()) as u64;
            pass.met(stream, pending);
            Ok(Ref { stream, len: self.entries.len() as u64, records: track.records })
        })
    }
}

fn presized<K, V>(len: u64) -> Table<K, V> {
    Table::with_capacity(len.min(PRESIZE_MAX) as usize)
}

impl<K, V> Default for Map<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone, V: Clone> Clone for Map<K, V> {
    /// A copy of the entries; the copy is not part of any upgrade in progress.
    fn clone(&self) -> Self {
        Self { entries: self.entries.clone(), extra: self.extra.copy() }
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for Map<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.extra.referenced() {
            Some(r) => write!(f, "Map(pre-copied stream {}, {} entries)", r.stream, r.len),
            None => f.debug_map().entries(self.entries.iter()).finish(),
        }
    }
}

impl<K: Hash + Eq, V: PartialEq> PartialEq for Map<K, V> {
    /// The same keys with the same values, in any order.
    fn eq(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len()
            && self.entries.iter().all(|(k, v)| other.entries.get_full(k).is_some_and(|e| e.2 == v))
    }
}

impl<K: Hash + Eq, V: Eq> Eq for Map<K, V> {}

impl<K: Hash + Eq + Clone, V> FromIterator<(K, V)> for Map<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = Map::new();
        map.extend(iter);
        map
    }
}

impl<K: Hash + Eq + Clone, V> Extend<(K, V)> for Map<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (key, value) in iter {
            self.insert(key, value);
        }
    }
}

impl<K, V> IntoIterator for Map<K, V> {
    type Item = (K, V);
    type IntoIter = IntoIter<K, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.extra.check_readable();
        self.entries.into_iter()
    }
}

impl<'a, K, V> IntoIterator for &'a Map<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<K: Serialize + Hash + Eq + Clone, V: Serialize> Serialize for Map<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        collection::serialize(
            &self.extra,
            self.entries.is_empty(),
            s,
            || self.pass(),
            |s| s.collect_map(self.entries.iter()),
        )
    }
}

impl<'de, K, V> Deserialize<'de> for Map<K, V>
where
    K: for<'a> Deserialize<'a> + Hash + Eq + Clone + 'static,
    V: for<'a> Deserialize<'a> + 'static,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if matches!(precopy::mode(), Mode::Inline | Mode::Pass) {
            return d.deserialize_map(Entries(PhantomData));
        }
        let read = collection::read_reference::<D, Table<K, V>>(d, |len| {
            Box::new(Store::<K, V> { entries: presized(len), applied: 0 })
        })?;
        Ok(match read {
            Read::Empty => Map::new(),
            Read::Built(entries) => Map::from_entries(entries),
            Read::Reference(reference) => Map::reference(reference),
        })
    }
}

/// Decodes a map in full, pre-sized from its length (serde's own maps cap that at 1 MiB of
/// entries and rehash several times for a big one).
struct Entries<K, V>(PhantomData<(K, V)>);

impl<'de, K, V> Visitor<'de> for Entries<K, V>
where
    K: Deserialize<'de> + Hash + Eq + Clone,
    V: Deserialize<'de>,
{
    type Value = Map<K, V>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let len = access.size_hint().unwrap_or(0) as u64;
        let mut entries = presized(len);
        while let Some((key, value)) = access.next_entry()? {
            entries.insert_full(key, value);
        }
        Ok(Map::from_entries(entries))
    }
}

/// A reader's sink that builds the map.
struct Store<K, V> {
    entries: Table<K, V>,
    /// Records applied.
    applied: u64,
}

/// Splits a record's payload into its key and the rest.
fn key_of<K: for<'de> Deserialize<'de>>(payload: &[u8]) -> Result<(K, &[u8]), String> {
    postcard::take_from_bytes(payload).map_err(|e| format!("a pre-copied key does not decode: {e}"))
}

fn value_of<V: for<'de> Deserialize<'de>>(rest: &[u8]) -> Result<V, String> {
    postcard::from_bytes(rest).map_err(|e| format!("a pre-copied value does not decode: {e}"))
}

impl<K, V> Sink for Store<K, V>
where
    K: for<'de> Deserialize<'de> + Hash + Eq + 'static,
    V: for<'de> Deserialize<'de> + 'static,
{
    fn counts(&self) -> (usize, u64) {
        (self.entries.len(), self.applied)
    }

    fn apply(&mut self, op: u8, payload: &[u8]) -> Result<(), String> {
        self.applied += 1;
        let (key, rest) = key_of::<K>(payload)?;
        if op == precopy::UPSERT {
            self.entries.insert_full(key, value_of(rest)?);
        } else {
            self.entries.swap_remove_full(&key);
        }
        Ok(())
    }

    fn rewrite(&mut self, _: u32, _: u8, _: &[u8], _: &mut Vec<u8>) -> Result<(), String> {
        Err("an importer's stream cannot rewrite records".into())
    }

    fn built(self: Box<Self>) -> Box<dyn Any> {
        Box::new(Plain(self.entries))
    }
}

/// A reader's sink that converts each value as it arrives, then builds the map.
struct ConvertStore<K, V, V2, F> {
    entries: Table<K, V2>,
    /// Records applied.
    applied: u64,
    convert: F,
    old: PhantomData<V>,
}

impl<K, V, V2, F> Sink for ConvertStore<K, V, V2, F>
where
    K: for<'de> Deserialize<'de> + Hash + Eq + 'static,
    V: for<'de> Deserialize<'de> + 'static,
    V2: 'static,
    F: Fn(&K, V) -> Result<V2, String> + 'static,
{
    fn counts(&self) -> (usize, u64) {
        (self.entries.len(), self.applied)
    }

    fn apply(&mut self, op: u8, payload: &[u8]) -> Result<(), String> {
        self.applied += 1;
        let (key, rest) = key_of::<K>(payload)?;
        if op == precopy::UPSERT {
            let value = (self.convert)(&key, value_of(rest)?)?;
            self.entries.insert_full(key, value);
        } else {
            self.entries.swap_remove_full(&key);
        }
        Ok(())
    }

    fn rewrite(&mut self, _: u32, _: u8, _: &[u8], _: &mut Vec<u8>) -> Result<(), String> {
        Err("an importer's stream cannot rewrite records".into())
    }

    fn built(self: Box<Self>) -> Box<dyn Any> {
        Box::new(Converted(self.entries))
    }
}

/// A transformer's sink that converts each value and writes the record again.
struct ConvertEncode<K, V, V2, F> {
    convert: F,
    types: PhantomData<(K, V, V2)>,
}

impl<K, V, V2, F> Sink for ConvertEncode<K, V, V2, F>
where
    K: for<'de> Deserialize<'de> + Serialize + 'static,
    V: for<'de> Deserialize<'de> + 'static,
    V2: Serialize + 'static,
    F: Fn(&K, V) -> Result<V2, String> + 'static,
{
    fn counts(&self) -> (usize, u64) {
        (0, 0)
    }

    fn apply(&mut self, _: u8, _: &[u8]) -> Result<(), String> {
        Err("a transformer's stream cannot build a map".into())
    }

    fn rewrite(
        &mut self,
        stream: u32,
        op: u8,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        if op != precopy::UPSERT {
            // The key keeps its type: a removal reads the same after the conversion.
            precopy::write_raw(out, precopy::Record { stream, op, payload });
            return Ok(());
        }
        let (key, rest) = key_of::<K>(payload)?;
        let value = (self.convert)(&key, value_of(rest)?)?;
        let mut payload = postcard::to_allocvec(&key).map_err(|e| format!("a key: {e}"))?;
        payload = postcard::to_extend(&value, payload).map_err(|e| format!("a value: {e}"))?;
        precopy::write_raw(out, precopy::Record { stream, op, payload: &payload });
        Ok(())
    }

    fn built(self: Box<Self>) -> Box<dyn Any> {
        Box::new(())
    }
}

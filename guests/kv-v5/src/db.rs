//! The keyspace: every key, its value (a string, a list, a hash, a set or a sorted set) and its
//! deadline; the index that finds the next deadline; the watchers `WATCH` registered; and the
//! hash order `SCAN` walks.
//!
//! A deadline is absolute Unix time in milliseconds, as `Ctx::now_ms` reads the clock, so it
//! means the same instant after an upgrade, in another instance, or in a later release. It
//! belongs to the key, whatever the type of its value.
//!
//! Expiry is lazy and active, as in redis. Lazy: every access to a key checks its deadline
//! first, so a key is gone the moment its deadline passes, whatever the timer is doing. Active:
//! the server's expiry timer removes keys nobody reads again, so their memory comes back. Both
//! go through [`Db::deadlines`], which orders keys by deadline: a lookup pays for the expiry
//! check only while some key is overdue, which the timer keeps rare.
//!
//! As in redis, a list or hash is never stored empty: the change that empties one (`LPOP`,
//! `HDEL`) deletes its key. [`Db::update_list`] and [`Db::update_hash`] keep that invariant, so
//! no command has to remember it.
//!
//! Every change to a key goes through this type, which is why it also tells [`Watches`] (the
//! keys connections `WATCH`) and [`ScanOrder`] (the order `SCAN` walks) about it: no command
//! has to remember either.
//!
//! The maps are the state that crosses an upgrade; their hasher is std's `DefaultHasher` with
//! fixed keys, so the same requests build the same tables and iterate them in the same order
//! (snapshots, `KEYS` and `HGETALL` replies are reproducible). The deadline index is derived
//! from the keyspace and is rebuilt after an upgrade rather than transferred.
//!
//! # Layout (what release 5 changed)
//!
//! Release 5 keeps release 4's state, byte for byte, in less memory. An entry of the keyspace
//! is a key and an [`Entry`], 56 bytes on `wasm32` in the SDK `Map`'s segments (plus about 10
//! bytes of its index): the key a [`Bytes`] (in place up to 22 bytes), the value a [`Value`]
//! of 24 bytes (a string in place up to 22 bytes, a longer one on the heap; a list, hash, set or
//! sorted set boxed, so that the common string does not pay for the largest collection's
//! header), the deadline 8 bytes with no deadline as `u64::MAX` (release 4 kept an
//! `Option<u64>`, 16 bytes aligned to 8). Each still encodes as release 4's types do, so kv 4
//! and kv 5 read each other's state with no transformer.

pub(crate) use crate::bytes::Bytes;
use crate::scan::ScanOrder;
pub(crate) use crate::set::Set;
use crate::watch::Watches;
use crate::zset::ZSet;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, DefaultHasher};
use tasuki_guest::Map;

/// The hasher of the keyspace and of hashes: deterministic, see the module docs.
pub(crate) type FixedState = BuildHasherDefault<DefaultHasher>;

/// A list's elements, head first.
pub(crate) type List = VecDeque<Vec<u8>>;

/// A hash's fields and their values.
pub(crate) type Hash = HashMap<Vec<u8>, Vec<u8>, FixedState>;

/// What a key holds.
///
/// Part of state version 4: postcard encodes the variant by its index, so the variants keep
/// their order and shape forever (add new ones at the end, in a new state version). The first
/// three are release 3's, unchanged; the kv-v3-to-v4 transformer writes this shape
/// (`kv_states::v4::Value`). A `Box` encodes as what it holds and [`Bytes`] as a `Vec<u8>`: this is release
/// 4's `Value` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Value {
    String(Bytes),
    List(Box<List>),
    Hash(Box<Hash>),
    Set(Box<Set>),
    ZSet(Box<ZSet>),
}

#[cfg(target_pointer_width = "32")]
const _: () = assert!(size_of::<Value>() == 24 && size_of::<Entry>() == 32);

impl Value {
    /// The type's name, as `TYPE` answers it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::List(_) => "list",
            Value::Hash(_) => "hash",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
        }
    }

    /// A list or hash without elements, which must not stay in the keyspace. An empty string
    /// is a value like any other (`SET k ""`).
    fn is_empty_container(&self) -> bool {
        match self {
            Value::String(_) => false,
            Value::List(list) => list.is_empty(),
            Value::Hash(hash) => hash.is_empty(),
            Value::Set(set) => set.is_empty(),
            Value::ZSet(zset) => zset.is_empty(),
        }
    }
}

/// A command met a key whose value is of another type: redis's `WRONGTYPE` error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WrongType;

/// A value and when it expires.
///
/// Encodes as release 4's `Entry { value: Value, expires_at_ms: Option<u64> }`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) value: Value,
    /// Unix time in milliseconds from which the key no longer exists, as two halves (low,
    /// high) so that it aligns to 4 bytes, not 8; [`NO_DEADLINE`] keeps it forever.
    deadline: [u32; 2],
}

/// The deadline of a key that has none. No deadline kv sets comes near: redis's (and kv's)
/// are at most `i64::MAX` milliseconds.
const NO_DEADLINE: u64 = u64::MAX;

impl Entry {
    pub(crate) fn new(value: Value, expires_at_ms: Option<u64>) -> Self {
        let mut entry = Self { value, deadline: [0; 2] };
        entry.set_expires_at_ms(expires_at_ms);
        entry
    }

    /// Unix time in milliseconds from which the key no longer exists; `None` keeps it forever.
    pub(crate) fn expires_at_ms(&self) -> Option<u64> {
        let ms = u64::from(self.deadline[0]) | (u64::from(self.deadline[1]) << 32);
        (ms != NO_DEADLINE).then_some(ms)
    }

    /// Only [`Db`] changes a deadline: it keeps the index of deadlines.
    fn set_expires_at_ms(&mut self, expires_at_ms: Option<u64>) {
        let ms = expires_at_ms.unwrap_or(NO_DEADLINE);
        self.deadline = [ms as u32, (ms >> 32) as u32];
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("value", &self.value)
            .field("expires_at_ms", &self.expires_at_ms())
            .finish()
    }
}

impl Serialize for Entry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut entry = serializer.serialize_struct("Entry", 2)?;
        entry.serialize_field("value", &self.value)?;
        entry.serialize_field("expires_at_ms", &self.expires_at_ms())?;
        entry.end()
    }
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Release 4's entry, field for field.
        #[derive(Deserialize)]
        #[serde(rename = "Entry")]
        struct Wire {
            value: Value,
            expires_at_ms: Option<u64>,
        }
        let Wire { value, expires_at_ms } = Wire::deserialize(deserializer)?;
        if expires_at_ms == Some(NO_DEADLINE) {
            // No release writes it (deadlines are at most i64::MAX ms); refused rather than
            // read as "no deadline".
            return Err(serde::de::Error::custom("a deadline of u64::MAX ms"));
        }
        Ok(Self::new(value, expires_at_ms))
    }
}

impl Value {
    /// Bytes this value takes, as redis's `MEMORY USAGE` estimates them: its own allocations,
    /// and for a list, hash, set or sorted set its table plus the average of its first
    /// `samples` elements times its length (0 samples: every element).
    pub(crate) fn usage(&self, samples: usize) -> u64 {
        /// Element bytes of a collection of `len`, from a sample of `items`.
        fn sampled(len: usize, items: impl Iterator<Item = usize>, samples: usize) -> u64 {
            let take = if samples == 0 { len } else { samples.min(len) };
            if take == 0 {
                return 0;
            }
            let sum: u64 = items.take(take).map(|n| n as u64).sum();
            sum * len as u64 / take as u64
        }
        const BYTES: u64 = size_of::<Vec<u8>>() as u64;
        // A boxed collection's header, on the heap.
        fn boxed<T>(_: &T) -> u64 {
            size_of::<T>() as u64
        }
        // A hash table slot: one control byte besides the entry (hashbrown); an IndexSet's
        // entry also keeps its hash, and its index table a usize per slot.
        const SLOT: u64 = 1;
        const INDEXED: u64 = size_of::<u64>() as u64 + size_of::<usize>() as u64 + SLOT;
        match self {
            Value::String(bytes) => bytes.heap_bytes() as u64,
            Value::List(list) => {
                boxed(&**list)
                    + list.capacity() as u64 * BYTES
                    + sampled(list.len(), list.iter().map(Vec::capacity), samples)
            }
            Value::Hash(hash) => {
                boxed(&**hash)
                    + hash.capacity() as u64 * (2 * BYTES + SLOT)
                    + sampled(
                        hash.len(),
                        hash.iter().map(|(f, v)| f.capacity() + v.capacity()),
                        samples,
                    )
            }
            Value::Set(set) => {
                boxed(&**set)
                    + set.len() as u64 * (BYTES + INDEXED)
                    + sampled(set.len(), set.iter().map(<[u8]>::len), samples)
            }
            Value::ZSet(zset) => {
                // A member is kept twice (by name, and in score order) with its score each time.
                let per = 2 * (BYTES + size_of::<f64>() as u64) + SLOT;
                boxed(&**zset)
                    + zset.len() as u64 * per
                    + 2 * sampled(zset.len(), zset.iter().map(|(member, _)| member.len()), samples)
            }
        }
    }
}

impl Entry {
    fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms().is_some_and(|deadline| deadline <= now_ms)
    }
}

/// Keys, their values and deadlines.
///
/// Invariants: `deadlines` holds `(deadline, key)` for exactly the entries with a deadline, and
/// no entry is an empty list or hash. Every change to a deadline or a container goes through
/// this type for that reason.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Db {
    entries: Map<Bytes, Entry>,
    /// Keys with a deadline, earliest first. Derived from `entries`: rebuilt by
    /// [`Db::start_rebuild`] after an upgrade instead of transferred.
    #[serde(skip)]
    deadlines: BTreeSet<(u64, Bytes)>,
    /// While the index is being rebuilt after an upgrade: entries at positions below this are
    /// not indexed yet (0 when the index is whole). See [`Db::start_rebuild`].
    #[serde(skip)]
    unindexed: usize,
    /// Who watches which key. Derived from the connections' state: rebuilt after an upgrade.
    #[serde(skip)]
    pub(crate) watches: Watches,
    /// The hash order `SCAN` walks, built by the first `SCAN` and kept up to date from then on.
    #[serde(skip)]
    scan_order: Option<ScanOrder>,
}

impl Db {
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
                && let Some(deadline) = entry.expires_at_ms()
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
            .filter_map(|(key, entry)| {
                entry.expires_at_ms().map(|deadline| (deadline, key.clone()))
            })
            .collect();
    }

    /// The live entry under `key`, of any type; an expired one is removed and reads as missing.
    pub(crate) fn get(&mut self, key: &[u8], now_ms: u64) -> Option<&Entry> {
        self.expire_if_due(key, now_ms);
        self.entries.get(key)
    }

    /// `MEMORY USAGE`: bytes `key` and its value take, the keyspace's slot included; `None`
    /// if there is no such live key.
    pub(crate) fn usage(&mut self, key: &[u8], now_ms: u64, samples: usize) -> Option<u64> {
        self.expire_if_due(key, now_ms);
        let (stored, entry) = self.entries.get_key_value(key)?;
        // The keyspace's slot: the key and entry in the map's segment, its position in the
        // index (a u32 and a control byte, the table at most 7/8 full).
        let slot = (size_of::<(Bytes, Entry)>() + size_of::<u32>() + 1) as u64;
        Some(slot + stored.heap_bytes() as u64 + entry.value.usage(samples))
    }

    /// The live string under `key`.
    pub(crate) fn get_string(
        &mut self,
        key: &[u8],
        now_ms: u64,
    ) -> Result<Option<&[u8]>, WrongType> {
        match self.get(key, now_ms) {
            None => Ok(None),
            Some(Entry { value: Value::String(bytes), .. }) => Ok(Some(bytes)),
            Some(_) => Err(WrongType),
        }
    }

    /// The live string under `key`, to change in place; its deadline stays as it is.
    pub(crate) fn string_mut(
        &mut self,
        key: &[u8],
        now_ms: u64,
    ) -> Result<Option<&mut Bytes>, WrongType> {
        self.expire_if_due(key, now_ms);
        match self.entries.get_mut(key) {
            None => Ok(None),
            Some(Entry { value: Value::String(bytes), .. }) => Ok(Some(bytes)),
            Some(_) => Err(WrongType),
        }
    }

    /// The live list under `key`.
    pub(crate) fn list(&mut self, key: &[u8], now_ms: u64) -> Result<Option<&List>, WrongType> {
        match self.get(key, now_ms) {
            None => Ok(None),
            Some(Entry { value: Value::List(list), .. }) => Ok(Some(list)),
            Some(_) => Err(WrongType),
        }
    }

    /// The live hash under `key`.
    pub(crate) fn hash(&mut self, key: &[u8], now_ms: u64) -> Result<Option<&Hash>, WrongType> {
        match self.get(key, now_ms) {
            None => Ok(None),
            Some(Entry { value: Value::Hash(hash), .. }) => Ok(Some(hash)),
            Some(_) => Err(WrongType),
        }
    }

    /// The live set under `key`.
    pub(crate) fn set_members(
        &mut self,
        key: &[u8],
        now_ms: u64,
    ) -> Result<Option<&Set>, WrongType> {
        match self.get(key, now_ms) {
            None => Ok(None),
            Some(Entry { value: Value::Set(set), .. }) => Ok(Some(set)),
            Some(_) => Err(WrongType),
        }
    }

    /// The live sorted set under `key`.
    pub(crate) fn zset(&mut self, key: &[u8], now_ms: u64) -> Result<Option<&ZSet>, WrongType> {
        match self.get(key, now_ms) {
            None => Ok(None),
            Some(Entry { value: Value::ZSet(zset), .. }) => Ok(Some(zset)),
            Some(_) => Err(WrongType),
        }
    }

    /// [`Db::update_list`] for a set.
    pub(crate) fn update_set<R>(
        &mut self,
        key: &[u8],
        now_ms: u64,
        create: bool,
        change: impl FnOnce(&mut Set) -> R,
    ) -> Result<Option<R>, WrongType> {
        let create = || create.then(|| Value::Set(Box::default()));
        self.update(key, now_ms, create, |value| match value {
            Value::Set(set) => Ok(change(set)),
            _ => Err(WrongType),
        })
        .transpose()
    }

    /// [`Db::update_list`] for a sorted set.
    pub(crate) fn update_zset<R>(
        &mut self,
        key: &[u8],
        now_ms: u64,
        create: bool,
        change: impl FnOnce(&mut ZSet) -> R,
    ) -> Result<Option<R>, WrongType> {
        let create = || create.then(|| Value::ZSet(Box::default()));
        self.update(key, now_ms, create, |value| match value {
            Value::ZSet(zset) => Ok(change(zset)),
            _ => Err(WrongType),
        })
        .transpose()
    }

    /// Runs `change` on the live list under `key` and returns what it returns; `Ok(None)` if
    /// there is no such key and `create` is false. With `create`, a missing key first becomes an
    /// empty list without deadline. A list `change` leaves empty is deleted, deadline and all.
    pub(crate) fn update_list<R>(
        &mut self,
        key: &[u8],
        now_ms: u64,
        create: bool,
        change: impl FnOnce(&mut List) -> R,
    ) -> Result<Option<R>, WrongType> {
        let create = || create.then(|| Value::List(Box::default()));
        self.update(key, now_ms, create, |value| match value {
            Value::List(list) => Ok(change(list)),
            _ => Err(WrongType),
        })
        .transpose()
    }

    /// [`Db::update_list`] for a hash.
    pub(crate) fn update_hash<R>(
        &mut self,
        key: &[u8],
        now_ms: u64,
        create: bool,
        change: impl FnOnce(&mut Hash) -> R,
    ) -> Result<Option<R>, WrongType> {
        let create = || create.then(|| Value::Hash(Box::default()));
        self.update(key, now_ms, create, |value| match value {
            Value::Hash(hash) => Ok(change(hash)),
            _ => Err(WrongType),
        })
        .transpose()
    }

    /// Runs `change` on the live value under `key`, or on the value `create` makes for a missing
    /// key (none: `None`), then deletes the key if the value is an empty container. The key
    /// counts as modified for `WATCH` whatever `change` did (redis skips a change that changed
    /// nothing, such as `SREM` of a missing member; here such a change also aborts a watcher's
    /// transaction).
    fn update<R>(
        &mut self,
        key: &[u8],
        now_ms: u64,
        create: impl FnOnce() -> Option<Value>,
        change: impl FnOnce(&mut Value) -> R,
    ) -> Option<R> {
        self.expire_if_due(key, now_ms);
        let value = match self.entries.get_mut(key) {
            Some(entry) => &mut entry.value,
            None => {
                let value = create()?;
                if let Some(order) = &mut self.scan_order {
                    order.insert(key);
                }
                &mut self.entries.get_or_insert_with(key.into(), || Entry::new(value, None)).value
            }
        };
        let result = change(value);
        self.watches.touch(key);
        if value.is_empty_container() {
            self.remove_entry(key);
        }
        Some(result)
    }

    pub(crate) fn contains(&mut self, key: &[u8], now_ms: u64) -> bool {
        self.get(key, now_ms).is_some()
    }

    /// Stores the string `value` under `key` with deadline `expires_at_ms`, replacing any value
    /// (of any type) and deadline there. A deadline already past leaves no key at all.
    pub(crate) fn set(
        &mut self,
        key: &[u8],
        value: &[u8],
        expires_at_ms: Option<u64>,
        now_ms: u64,
    ) {
        self.watches.touch(key);
        if expires_at_ms.is_some_and(|deadline| deadline <= now_ms) {
            self.remove_entry(key);
            return;
        }
        match self.entries.get_mut(key) {
            // Overwriting in place spares allocating the key again (and often the value).
            Some(entry) => {
                match &mut entry.value {
                    Value::String(bytes) => bytes.set(value),
                    other => *other = Value::String(value.into()),
                }
                reindex(&mut self.deadlines, key, entry, expires_at_ms);
            }
            None => {
                if let Some(deadline) = expires_at_ms {
                    self.deadlines.insert((deadline, key.into()));
                }
                if let Some(order) = &mut self.scan_order {
                    order.insert(key);
                }
                let value = Value::String(value.into());
                self.entries.insert(key.into(), Entry::new(value, expires_at_ms));
            }
        }
    }

    /// Stores the string `value` under `key`, keeping the deadline of the live key there, if
    /// any.
    pub(crate) fn set_keep_deadline(&mut self, key: &[u8], value: &[u8], now_ms: u64) {
        let deadline = self.get(key, now_ms).and_then(Entry::expires_at_ms);
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
        self.watches.touch(key);
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
        self.entries.keys().map(Bytes::as_slice)
    }

    /// Removes every key, and gives the table's memory back. Every watched key that existed
    /// counts as modified, as in redis.
    pub(crate) fn clear(&mut self) {
        let watched: Vec<Vec<u8>> = self
            .watches
            .keys()
            .filter(|key| self.entries.contains_key(*key))
            .map(<[u8]>::to_vec)
            .collect();
        for key in watched {
            self.watches.touch(&key);
        }
        self.entries.clear();
        self.deadlines = BTreeSet::new();
        self.scan_order = None;
    }

    /// Tells the watchers of `key` that it changed: for the commands that change a value in
    /// place through [`Db::string_mut`].
    pub(crate) fn touch(&mut self, key: &[u8]) {
        self.watches.touch(key);
    }

    /// Up to about `count` live keys from `cursor` on, in `SCAN`'s order, and the cursor to
    /// continue from (0 when the walk is over). See [`ScanOrder`] for its guarantees.
    pub(crate) fn scan(&mut self, cursor: u64, count: usize, now_ms: u64) -> (Vec<Vec<u8>>, u64) {
        self.remove_expired(now_ms, usize::MAX);
        let entries = &self.entries;
        let order = self
            .scan_order
            .get_or_insert_with(|| ScanOrder::new(entries.keys().map(Bytes::as_slice)));
        order.walk(cursor, count)
    }

    /// Moves the live value and deadline under `from` to `to`, replacing whatever `to` held.
    /// Whether there was a live `from`.
    pub(crate) fn rename(&mut self, from: &[u8], to: &[u8], now_ms: u64) -> bool {
        self.expire_if_due(from, now_ms);
        self.expire_if_due(to, now_ms);
        if !self.entries.contains_key(from) {
            return false;
        }
        if from == to {
            return true;
        }
        let Some(entry) = self.take_entry(from) else {
            return false;
        };
        self.remove_entry(to);
        if let Some(deadline) = entry.expires_at_ms() {
            self.deadlines.insert((deadline, to.into()));
        }
        if let Some(order) = &mut self.scan_order {
            order.insert(to);
        }
        self.watches.touch(to);
        self.entries.insert(to.into(), entry);
        true
    }

    /// A live key picked at random with `pick(n)`, a number below `n`; `None` in an empty
    /// keyspace.
    pub(crate) fn random_key(
        &mut self,
        now_ms: u64,
        pick: impl FnOnce(usize) -> usize,
    ) -> Option<&[u8]> {
        self.remove_expired(now_ms, usize::MAX);
        let len = self.entries.len();
        if len == 0 {
            return None;
        }
        self.entries.get_index(pick(len) % len).map(|(key, _)| key.as_slice())
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
                self.watches.touch(&key);
                if let Some(order) = &mut self.scan_order {
                    order.remove(&key);
                }
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
        self.take_entry(key).is_some()
    }

    /// Removes `key`, live or not, and its deadline, and returns its entry.
    fn take_entry(&mut self, key: &[u8]) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.watches.touch(key);
        if let Some(order) = &mut self.scan_order {
            order.remove(key);
        }
        if let Some(deadline) = entry.expires_at_ms() {
            self.deadlines.remove(&(deadline, key.into()));
        }
        Some(entry)
    }
}

/// Changes the deadline of `entry`, stored under `key`, to `new`, moving it in the index.
fn reindex(
    deadlines: &mut BTreeSet<(u64, Bytes)>,
    key: &[u8],
    entry: &mut Entry,
    new: Option<u64>,
) {
    let old = entry.expires_at_ms();
    if old == new {
        return;
    }
    let indexed = old.and_then(|old| deadlines.take(&(old, key.into())));
    if let Some(new) = new {
        // The key's copy in the index is reused when there is one.
        let key = indexed.map_or_else(|| key.into(), |(_, key)| key);
        deadlines.insert((new, key));
    }
    entry.set_expires_at_ms(new);
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

    /// The index mirrors the entries exactly, and no container is stored empty.
    fn check_invariants(db: &Db) {
        let mut rebuilt = Db { entries: db.entries.clone(), ..Db::default() };
        rebuilt.rebuild_deadlines();
        assert_eq!(rebuilt.deadlines, db.deadlines);
        assert!(db.entries.values().all(|entry| !entry.value.is_empty_container()));
    }

    fn push(db: &mut Db, key: &[u8], element: &[u8], now: u64) {
        let pushed = db.update_list(key, now, true, |list| list.push_back(element.to_vec()));
        assert_eq!(pushed, Ok(Some(())));
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
        check_invariants(&db);
        assert_eq!(db.next_deadline(), Some(50));
        db.set(b"b", b"2", None, 0);
        check_invariants(&db);
        assert_eq!(db.next_deadline(), Some(100));
        db.set_keep_deadline(b"a", b"one", 0);
        assert_eq!(db.get(b"a", 0).and_then(|e| e.expires_at_ms()), Some(100));
        assert!(db.set_deadline(b"c", Some(70), 0));
        assert!(!db.set_deadline(b"nope", Some(70), 0));
        check_invariants(&db);
        assert!(db.remove(b"c", 0));
        check_invariants(&db);
        assert!(db.set_deadline(b"a", None, 0));
        check_invariants(&db);
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
        check_invariants(&db);
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

    /// Each accessor sees only its own type; a write creates only when asked to, and never
    /// over a key of another type.
    #[test]
    fn typed_access_refuses_other_types() {
        let mut db = Db::default();
        db.set(b"s", b"v", None, 0);
        push(&mut db, b"l", b"x", 0);
        assert_eq!(
            db.update_hash(b"h", 0, true, |h| h.insert(b"f".to_vec(), b"v".to_vec())),
            Ok(Some(None))
        );
        assert_eq!(db.get_string(b"s", 0), Ok(Some(b"v".as_slice())));
        assert_eq!(db.get_string(b"l", 0), Err(WrongType));
        assert_eq!(db.string_mut(b"h", 0), Err(WrongType));
        assert_eq!(db.list(b"s", 0), Err(WrongType));
        assert_eq!(db.list(b"l", 0).map(|l| l.map(List::len)), Ok(Some(1)));
        assert_eq!(db.hash(b"l", 0), Err(WrongType));
        assert_eq!(db.update_list(b"h", 0, true, |_| ()), Err(WrongType));
        assert_eq!(db.update_hash(b"s", 0, true, |_| ()), Err(WrongType));
        assert_eq!(db.update_list(b"nope", 0, false, |_| ()), Ok(None));
        assert!(!db.contains(b"nope", 0), "no key appears without `create`");
        assert_eq!(db.list(b"nope", 0), Ok(None));
        let kinds: Vec<_> = [b"s", b"l", b"h"].map(|k| db.get(k, 0).map(|e| e.value.kind())).into();
        assert_eq!(kinds, [Some("string"), Some("list"), Some("hash")]);
    }

    /// The change that empties a list or hash deletes its key and its deadline; a change that
    /// creates and leaves nothing leaves no key either.
    #[test]
    fn an_emptied_container_is_deleted() {
        let mut db = Db::default();
        push(&mut db, b"l", b"x", 0);
        assert!(db.set_deadline(b"l", Some(100), 0));
        assert_eq!(
            db.update_list(b"l", 0, false, |l| l.pop_front()),
            Ok(Some(Some(b"x".to_vec())))
        );
        assert!(!db.contains(b"l", 0));
        check_invariants(&db);
        assert_eq!(db.next_deadline(), None);
        assert_eq!(db.update_hash(b"h", 0, true, |h| h.len()), Ok(Some(0)));
        assert!(!db.contains(b"h", 0));
        check_invariants(&db);
    }

    /// A container keeps its deadline across changes; `SET` replaces it with a string.
    #[test]
    fn containers_expire_and_set_overwrites_them() {
        let mut db = Db::default();
        push(&mut db, b"l", b"x", 0);
        assert!(db.set_deadline(b"l", Some(100), 0));
        push(&mut db, b"l", b"y", 50);
        assert_eq!(db.get(b"l", 50).and_then(|e| e.expires_at_ms()), Some(100));
        assert_eq!(db.list(b"l", 100), Ok(None));
        check_invariants(&db);
        push(&mut db, b"l", b"x", 100);
        assert_eq!(db.get(b"l", 100).and_then(|e| e.expires_at_ms()), None, "a new key");
        db.set(b"l", b"s", Some(500), 100);
        assert_eq!(db.get_string(b"l", 100), Ok(Some(b"s".as_slice())));
        check_invariants(&db);
    }

    /// Only the entries cross an upgrade; the index is rebuilt from them.
    #[test]
    fn the_index_is_not_serialized() {
        let mut db = Db::default();
        db.set(b"a", b"1", Some(100), 0);
        db.set(b"b", b"2", None, 0);
        push(&mut db, b"c", b"3", 0);
        assert!(db.set_deadline(b"c", Some(200), 0));
        let bytes = postcard::to_allocvec(&db).unwrap();
        let map: HashMap<Vec<u8>, Entry> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(map.len(), 3);
        let mut back: Db = postcard::from_bytes(&bytes).unwrap();
        assert!(back.deadlines.is_empty());
        back.rebuild_deadlines();
        assert_eq!(back.deadlines, db.deadlines);
    }
}

//! [`List`]: a double-ended list that pre-copies itself.

use crate::collection::{self, Converted, Extra, Plain, Read, Ref, Tracking};
use crate::precopy::{self, Mode, Sink, read_varint, varint};
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::collections::{BTreeSet, VecDeque};
use std::marker::PhantomData;

/// The most elements a decoded length may pre-allocate (see the same bound on [`crate::Map`]).
const PRESIZE_MAX: u64 = 1 << 24;

/// The logical index of the first element when a session starts: elements are named by logical
/// index during a session (physical index + origin), so pushes and pops at the front do not
/// rename the others. Far from both ends of `u64`, so either end can grow for ever in practice.
const ORIGIN: u64 = 1 << 62;

/// A double-ended list whose contents cross an upgrade ahead of the pause.
///
/// Use it for an app's big sequences (a log, a queue) in place of `Vec` or `VecDeque`: outside
/// an upgrade it is a `VecDeque`, and it serializes exactly as one (a length, then the
/// elements). During an upgrade the host copies its elements in chunks between events while the
/// app serves; pushes and pops at either end, and changes to elements already copied, are
/// recorded and sent again, so the pause moves only those.
///
/// [`List::insert`] and [`List::remove`] in the middle shift the elements after them: during an
/// upgrade they make the whole list be copied again, as do [`List::clear`] (cheaply: it starts
/// a new stream) and [`List::iter_mut`]. A queue (`push_back` + `pop_front`) or a log
/// (`push_back`, `truncate_front`) is tracked exactly.
///
/// In a migration or a transformer, convert it with [`List::convert`] (see [`crate::Map`]).
pub struct List<T> {
    elements: VecDeque<T>,
    extra: Extra<Track>,
}

/// A list's part of an export session, in logical indexes. The reader (after every record sent
/// so far) holds the range `lo..hi`; the list is `origin..origin + len`. Owed: the queued pops,
/// the changed elements in `dirty`, and the gaps between the two ranges at either end.
struct Track {
    session: u64,
    stream: u32,
    origin: u64,
    lo: u64,
    hi: u64,
    dirty: BTreeSet<u64>,
    /// Pops the reader must apply before anything else: `true` front, `false` back.
    pops: Vec<bool>,
    /// Records handed out in this session.
    records: u64,
}

impl Tracking for Track {
    fn session(&self) -> u64 {
        self.session
    }
}

impl<T> List<T> {
    /// An empty list.
    pub fn new() -> Self {
        Self::from_elements(VecDeque::new())
    }

    /// An empty list with room for `capacity` elements.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::from_elements(VecDeque::with_capacity(capacity))
    }

    fn from_elements(elements: VecDeque<T>) -> Self {
        Self { elements, extra: Extra::none() }
    }

    fn reference(reference: Ref) -> Self {
        Self { elements: VecDeque::new(), extra: Extra::reference(reference) }
    }

    fn readable(&self) -> &VecDeque<T> {
        self.extra.check_readable();
        &self.elements
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.readable().len()
    }

    /// How many elements fit before it allocates again. It shrinks when at most 1/8 of it is in
    /// use (a removal, [`Self::clear`]), so that memory freed by deletes can be given back.
    pub fn capacity(&self) -> usize {
        self.readable().capacity()
    }

    /// True if the list holds no element.
    pub fn is_empty(&self) -> bool {
        self.readable().is_empty()
    }

    /// The element at `index` (0 is the front).
    pub fn get(&self, index: usize) -> Option<&T> {
        self.readable().get(index)
    }

    /// The first element.
    pub fn front(&self) -> Option<&T> {
        self.readable().front()
    }

    /// The last element.
    pub fn back(&self) -> Option<&T> {
        self.readable().back()
    }

    /// The elements, front to back.
    pub fn iter(&self) -> std::collections::vec_deque::Iter<'_, T> {
        self.readable().iter()
    }

    /// The element at `index`, to change. It counts as changed.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        self.extra.check_readable();
        let Self { elements, extra } = self;
        let value = elements.get_mut(index)?;
        if let Some(track) = extra.tracked() {
            let logical = track.origin + index as u64;
            if (track.lo..track.hi).contains(&logical) {
                track.dirty.insert(logical);
            }
        }
        Some(value)
    }

    /// Appends `value`.
    pub fn push_back(&mut self, value: T) {
        self.extra.check_readable();
        self.elements.push_back(value);
    }

    /// Prepends `value`.
    pub fn push_front(&mut self, value: T) {
        self.extra.check_readable();
        let Self { elements, extra } = self;
        elements.push_front(value);
        if let Some(track) = extra.tracked() {
            track.origin -= 1;
            if track.lo == track.hi {
                // The reader holds nothing yet: its (empty) range follows the front.
                track.lo = track.origin;
                track.hi = track.origin;
            }
        }
    }

    /// Removes the last element.
    pub fn pop_back(&mut self) -> Option<T> {
        self.extra.check_readable();
        let Self { elements, extra } = self;
        let value = elements.pop_back()?;
        if let Some(track) = extra.tracked() {
            let end = track.origin + elements.len() as u64;
            track.dirty.remove(&end);
            if track.lo < track.hi && end < track.hi {
                track.pops.push(false);
                track.hi -= 1;
            } else if track.lo == track.hi && track.hi > end {
                // The reader holds nothing: its empty range stays within the list.
                track.lo = end;
                track.hi = end;
            }
        }
        give_back(elements);
        Some(value)
    }

    /// Removes the first element.
    pub fn pop_front(&mut self) -> Option<T> {
        self.extra.check_readable();
        let Self { elements, extra } = self;
        let value = elements.pop_front()?;
        if let Some(track) = extra.tracked() {
            let first = track.origin;
            track.dirty.remove(&first);
            track.origin += 1;
            if (track.lo..track.hi).contains(&first) {
                track.pops.push(true);
                track.lo += 1;
            } else if track.lo == track.hi && track.lo == first {
                track.lo = track.origin;
                track.hi = track.origin;
            }
        }
        give_back(elements);
        Some(value)
    }

    /// Drops the first `n` elements (a log's retention).
    pub fn truncate_front(&mut self, n: usize) {
        for _ in 0..n.min(self.elements.len()) {
            self.pop_front();
        }
    }

    /// Drops the elements past the first `len`.
    pub fn truncate(&mut self, len: usize) {
        while self.elements.len() > len {
            self.pop_back();
        }
    }

    /// Inserts `value` at `index`, shifting the elements after it. During an upgrade the whole
    /// list is copied again.
    pub fn insert(&mut self, index: usize, value: T) {
        self.restart();
        self.elements.insert(index, value);
    }

    /// Removes the element at `index`, shifting the elements after it. During an upgrade the
    /// whole list is copied again.
    pub fn remove(&mut self, index: usize) -> Option<T> {
        self.restart();
        let value = self.elements.remove(index);
        give_back(&mut self.elements);
        value
    }

    /// Removes every element. During an upgrade the list starts a new stream.
    pub fn clear(&mut self) {
        self.restart();
        self.elements.clear();
        give_back(&mut self.elements);
    }

    /// Every element, mutably. During an upgrade the whole list is copied again.
    pub fn iter_mut(&mut self) -> std::collections::vec_deque::IterMut<'_, T> {
        self.restart();
        self.elements.iter_mut()
    }

    /// Forgets the tracking: the list will be copied again as a new stream.
    fn restart(&mut self) {
        self.extra.restart();
    }

    /// Converts every element with `convert`: the way a migration or a transformer rewrites a
    /// list. On a pre-copied list it runs on each element as its chunk crosses.
    pub fn convert<U>(
        self,
        convert: impl Fn(T) -> Result<U, String> + 'static,
    ) -> Result<List<U>, String>
    where
        T: for<'de> Deserialize<'de> + 'static,
        U: Serialize + 'static,
    {
        let Some(reference) = self.extra.referenced() else {
            let elements = self.elements.into_iter().map(convert).collect::<Result<_, _>>()?;
            return Ok(List::from_elements(elements));
        };
        let read = collection::convert_reference::<VecDeque<U>>(reference, |store| {
            if store {
                Box::new(ListStore::<T, U, _> {
                    elements: presized(reference.len),
                    applied: 0,
                    lo: 0,
                    convert,
                    converted: true,
                    old: PhantomData,
                })
            } else {
                Box::new(ListEncode::<T, U, _> { convert, types: PhantomData })
            }
        })?;
        Ok(match read {
            Read::Empty => List::new(),
            Read::Built(elements) => List::from_elements(elements),
            Read::Reference(reference) => List::reference(reference),
        })
    }

    /// This list's share of a pass: queued pops, changed elements, then the gaps at either end.
    fn pass(&self) -> Result<Ref, String>
    where
        T: Serialize,
    {
        precopy::with_pass(|pass| {
            let session = pass.session;
            let mut track = self.extra.for_pass(session, || Track {
                session,
                stream: pass.new_stream(),
                origin: ORIGIN,
                lo: ORIGIN,
                hi: ORIGIN,
                dirty: BTreeSet::new(),
                pops: Vec::new(),
                records: 0,
            })?;
            let track = &mut *track;
            let stream = track.stream;
            let element = |logical: u64| &self.elements[(logical - track.origin) as usize];
            let written = pass.written();
            precopy::with_mode(Mode::Inline, || -> Result<(), String> {
                // The pops first, in order: the reader's range must match before indexes do.
                for front in track.pops.drain(..) {
                    let op = if front { precopy::LIST_POP_FRONT } else { precopy::LIST_POP_BACK };
                    pass.record_with(stream, op, Ok)?;
                }
                while pass.has_room() {
                    let Some(logical) = track.dirty.pop_first() else { break };
                    put(pass, stream, precopy::LIST_SET, logical, element(logical))?;
                }
                let end = track.origin + self.elements.len() as u64;
                while pass.has_room() && track.hi < end {
                    put(pass, stream, precopy::LIST_PUSH_BACK, track.hi, element(track.hi))?;
                    track.hi += 1;
                }
                while pass.has_room() && track.lo > track.origin {
                    track.lo -= 1;
                    put(pass, stream, precopy::LIST_PUSH_FRONT, track.lo, element(track.lo))?;
                }
                Ok(())
            })?;
            track.records += pass.written() - written;
            let end = track.origin + self.elements.len() as u64;
            let owed = track.dirty.len() as u64 + (end - track.hi) + (track.lo - track.origin);
            pass.met(stream, owed);
            Ok(Ref { stream, len: self.elements.len() as u64, records: track.records })
        })
    }
}

/// Writes one element record: its logical index, then the value.
fn put<T: Serialize>(
    pass: &mut precopy::Pass,
    stream: u32,
    op: u8,
    logical: u64,
    value: &T,
) -> Result<(), String> {
    pass.record_with(stream, op, |mut payload| {
        varint(&mut payload, logical);
        postcard::to_extend(value, payload).map_err(|e| format!("a list element: {e}"))
    })
}

fn presized<T>(len: u64) -> VecDeque<T> {
    VecDeque::with_capacity(len.min(PRESIZE_MAX) as usize)
}

impl<T> Default for List<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone> Clone for List<T> {
    /// A copy of the elements; the copy is not part of any upgrade in progress.
    fn clone(&self) -> Self {
        Self { elements: self.elements.clone(), extra: self.extra.copy() }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for List<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.extra.referenced() {
            Some(r) => write!(f, "List(pre-copied stream {}, {} elements)", r.stream, r.len),
            None => f.debug_list().entries(self.elements.iter()).finish(),
        }
    }
}

impl<T: PartialEq> PartialEq for List<T> {
    fn eq(&self, other: &Self) -> bool {
        self.elements == other.elements
    }
}

impl<T: Eq> Eq for List<T> {}

impl<T> FromIterator<T> for List<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Self::from_elements(iter.into_iter().collect())
    }
}

impl<T> Extend<T> for List<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        for value in iter {
            self.push_back(value);
        }
    }
}

impl<T> IntoIterator for List<T> {
    type Item = T;
    type IntoIter = std::collections::vec_deque::IntoIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        self.extra.check_readable();
        self.elements.into_iter()
    }
}

impl<'a, T> IntoIterator for &'a List<T> {
    type Item = &'a T;
    type IntoIter = std::collections::vec_deque::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<T: Serialize> Serialize for List<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        collection::serialize(
            &self.extra,
            self.elements.is_empty(),
            s,
            || self.pass(),
            |s| s.collect_seq(self.elements.iter()),
        )
    }
}

impl<'de, T: for<'a> Deserialize<'a> + 'static> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if matches!(precopy::mode(), Mode::Inline | Mode::Pass) {
            return d.deserialize_seq(Elements(PhantomData));
        }
        let read = collection::read_reference::<D, VecDeque<T>>(d, |len| {
            Box::new(ListStore::<T, T, _> {
                elements: presized(len),
                applied: 0,
                lo: 0,
                convert: Ok::<T, String>,
                converted: false,
                old: PhantomData,
            })
        })?;
        Ok(match read {
            Read::Empty => List::new(),
            Read::Built(elements) => List::from_elements(elements),
            Read::Reference(reference) => List::reference(reference),
        })
    }
}

struct Elements<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for Elements<T> {
    type Value = List<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut elements = presized(access.size_hint().unwrap_or(0) as u64);
        while let Some(value) = access.next_element()? {
            elements.push_back(value);
        }
        Ok(List::from_elements(elements))
    }
}

/// A reader's sink that rebuilds a list, converting each element (the identity for a list
/// read as it was written).
struct ListStore<T, U, F> {
    elements: VecDeque<U>,
    /// Records applied.
    applied: u64,
    /// The logical index of the first element.
    lo: u64,
    convert: F,
    /// Built through [`List::convert`] (rather than read as written): only a conversion may
    /// take it, so it is never converted twice.
    converted: bool,
    old: PhantomData<T>,
}

impl<T, U, F> ListStore<T, U, F> {
    fn index(&self, logical: u64) -> Result<usize, String> {
        let index = logical.checked_sub(self.lo).map(|i| i as usize);
        index.filter(|&i| i < self.elements.len()).ok_or_else(|| {
            format!("a pre-copied list element {logical} is outside the list's range")
        })
    }
}

fn element<T: for<'de> Deserialize<'de>>(mut payload: &[u8]) -> Result<(u64, T), String> {
    let logical = read_varint(&mut payload)?;
    let value = postcard::from_bytes(payload)
        .map_err(|e| format!("a pre-copied list element does not decode: {e}"))?;
    Ok((logical, value))
}

impl<T, U, F> Sink for ListStore<T, U, F>
where
    T: for<'de> Deserialize<'de> + 'static,
    U: 'static,
    F: Fn(T) -> Result<U, String> + 'static,
{
    fn counts(&self) -> (usize, u64) {
        (self.elements.len(), self.applied)
    }

    fn apply(&mut self, op: u8, payload: &[u8]) -> Result<(), String> {
        self.applied += 1;
        match op {
            precopy::LIST_POP_FRONT => {
                self.elements.pop_front().ok_or("a pre-copied list popped while empty")?;
                self.lo += 1;
            }
            precopy::LIST_POP_BACK => {
                self.elements.pop_back().ok_or("a pre-copied list popped while empty")?;
            }
            _ => {
                let (logical, value) = element::<T>(payload)?;
                let value = (self.convert)(value)?;
                if self.elements.is_empty() && op != precopy::LIST_SET {
                    self.lo = logical;
                    self.elements.push_back(value);
                    return Ok(());
                }
                match op {
                    precopy::LIST_SET => {
                        let index = self.index(logical)?;
                        self.elements[index] = value;
                    }
                    precopy::LIST_PUSH_BACK if logical == self.lo + self.elements.len() as u64 => {
                        self.elements.push_back(value);
                    }
                    precopy::LIST_PUSH_FRONT if logical + 1 == self.lo => {
                        self.elements.push_front(value);
                        self.lo = logical;
                    }
                    _ => {
                        return Err(format!(
                            "a pre-copied list record (op {op}, element {logical}) does not follow the list"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn rewrite(&mut self, _: u32, _: u8, _: &[u8], _: &mut Vec<u8>) -> Result<(), String> {
        Err("an importer's stream cannot rewrite records".into())
    }

    fn built(self: Box<Self>) -> Box<dyn Any> {
        // A list read as written is taken by `List::deserialize`, a converted one only by
        // `List::convert`.
        if self.converted {
            Box::new(Converted(self.elements))
        } else {
            Box::new(Plain(self.elements))
        }
    }
}

/// A transformer's sink that converts each element and writes the record again.
struct ListEncode<T, U, F> {
    convert: F,
    types: PhantomData<(T, U)>,
}

impl<T, U, F> Sink for ListEncode<T, U, F>
where
    T: for<'de> Deserialize<'de> + 'static,
    U: Serialize + 'static,
    F: Fn(T) -> Result<U, String> + 'static,
{
    fn counts(&self) -> (usize, u64) {
        (0, 0)
    }

    fn apply(&mut self, _: u8, _: &[u8]) -> Result<(), String> {
        Err("a transformer's stream cannot build a list".into())
    }

    fn rewrite(
        &mut self,
        stream: u32,
        op: u8,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        if op == precopy::LIST_POP_FRONT || op == precopy::LIST_POP_BACK {
            precopy::write_raw(out, precopy::Record { stream, op, payload });
            return Ok(());
        }
        let (logical, value) = element::<T>(payload)?;
        let value = (self.convert)(value)?;
        let mut payload = Vec::new();
        varint(&mut payload, logical);
        let payload =
            postcard::to_extend(&value, payload).map_err(|e| format!("a list element: {e}"))?;
        precopy::write_raw(out, precopy::Record { stream, op, payload: &payload });
        Ok(())
    }

    fn built(self: Box<Self>) -> Box<dyn Any> {
        Box::new(())
    }
}

/// A list at most 1/8 full gives memory back, as [`crate::Map`] does (redis's dicts shrink at
/// the same fill): to twice its length, `O(len)` once per halving or more, in order.
fn give_back<T>(elements: &mut VecDeque<T>) {
    use crate::table::{SHRINK_BELOW, SHRINK_MIN};
    let capacity = elements.capacity();
    if capacity > SHRINK_MIN && elements.len() * SHRINK_BELOW <= capacity {
        elements.shrink_to(elements.len() * 2);
    }
}

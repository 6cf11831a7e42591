//! Pre-copy: moving an app's big collections to the new version while the old one serves.
//!
//! An app's state is serialized with serde, as for a full transfer; what changes is how the SDK's
//! collections ([`crate::Map`]) serialize during a session. Each one is a *stream*: instead of
//! its entries it writes a reference `(stream, len, records)` into the state's *skeleton*, and hands its
//! entries out as *records*, a budget at a time, remembering what changed after it handed an entry
//! out. The host calls [`next`] between events until little is owed, then [`finish`] in the pause;
//! the new instance takes each batch with [`import_chunks`] and completes with the final
//! skeleton. Everything that is not an SDK collection crosses in the skeleton, inside the pause.
//!
//! # Chunk format (inside the WIT `chunk.bytes`, opaque to the host)
//! - `0` then the skeleton: the state section's bytes with every collection written as
//!   `(stream: u32, len: u64, records: u64)`, the last the records its stream carried so far. Sent before any record of a stream the reader has not seen.
//! - `1` then records, each `stream: varint`, `op: u8` (`1` upsert, `2` remove),
//!   `len: varint`, then `len` bytes: postcard of the key, followed for an upsert by postcard of
//!   the value.
//!
//! A reader learns a stream's key and value types from the skeleton: decoding it registers a
//! *sink* per stream (store the entries, or in a transformer convert and re-encode them).
//!
//! # Why a change is never lost (the invariant of [`crate::Map`]'s tracking)
//! For every key in a tracked map, either its current value was sent, or it is in the dirty set,
//! or its position is at or past the cursor; every removed key that may have been sent is in the
//! dirty set. A dirty key is sent as an upsert if present when sent, else as a removal.
//! Positions move only by `swap_remove`, which marks an entry it moves below the cursor dirty.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// The chunk kind byte of a skeleton.
pub(crate) const SKELETON: u8 = 0;
/// The chunk kind byte of records.
pub(crate) const RECORDS: u8 = 1;
/// Record op: the entry is (now) this key and value.
pub(crate) const UPSERT: u8 = 1;
/// Record op: the key is gone.
pub(crate) const REMOVE: u8 = 2;
/// List record op: the element at logical index L (a varint, then the value) follows the last.
pub(crate) const LIST_PUSH_BACK: u8 = 3;
/// List record op: the element at logical index L precedes the first.
pub(crate) const LIST_PUSH_FRONT: u8 = 4;
/// List record op: the element at logical index L is now this value.
pub(crate) const LIST_SET: u8 = 5;
/// List record op: the first element is gone.
pub(crate) const LIST_POP_FRONT: u8 = 6;
/// List record op: the last element is gone.
pub(crate) const LIST_POP_BACK: u8 = 7;

/// The name of the section that marks a snapshot as the end of a pre-copy session: its
/// collections are references to the chunks that came before it.
pub const PRECOPY_SECTION: &str = "tasuki.precopy";

/// How the SDK's collections serialize and deserialize right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Entries in full, as a map: a full transfer, and values inside records.
    Inline,
    /// A pass of an export session: hand out records, write references.
    Pass,
    /// References in and out, no records: a transformer's final skeleton.
    Reference,
    /// An importer decoding a skeleton chunk: register a sink per stream that builds it.
    Register,
    /// A transformer decoding a skeleton chunk: register a sink per stream that rewrites it.
    Rewrite,
    /// Decoding the final skeleton: take each stream's built collection.
    Resolve,
}

thread_local! {
    static MODE: Cell<Mode> = const { Cell::new(Mode::Inline) };
    /// The export session open on this instance (0: none).
    static SESSION: Cell<u64> = const { Cell::new(0) };
    static LAST_SESSION: Cell<u64> = const { Cell::new(0) };
    /// The pass in progress, while the state is serialized in [`Mode::Pass`].
    static PASS: RefCell<Option<Pass>> = const { RefCell::new(None) };
    /// What the streams of the current reader (importer or transformer) became.
    static READER: RefCell<Reader> = RefCell::new(Reader::default());
}

pub(crate) fn mode() -> Mode {
    MODE.get()
}

/// Runs `f` with the collections in `mode`, restoring the previous mode after.
pub(crate) fn with_mode<R>(mode: Mode, f: impl FnOnce() -> R) -> R {
    let before = MODE.replace(mode);
    let result = f();
    MODE.set(before);
    result
}

/// The export session open now, if any.
pub(crate) fn session() -> u64 {
    SESSION.get()
}

/// Opens a new export session; an open one is dropped (its maps notice on their next change).
pub(crate) fn begin_session() -> u64 {
    let id = LAST_SESSION.get() + 1;
    LAST_SESSION.set(id);
    SESSION.set(id);
    EXPORT.with_borrow_mut(|e| *e = Some(Export::default()));
    id
}

/// Closes the export session: every map stops recording on its next change.
pub(crate) fn end_session() {
    SESSION.set(0);
    EXPORT.with_borrow_mut(|e| *e = None);
}

/// What an export session remembers between passes.
#[derive(Debug, Default)]
struct Export {
    next_stream: u32,
    /// The streams the reader knows of: those of the last skeleton sent.
    sent: Vec<u32>,
    /// Bytes and count of the records handed out so far, for the estimate of what is owed.
    bytes: u64,
    records: u64,
}

thread_local! {
    static EXPORT: RefCell<Option<Export>> = const { RefCell::new(None) };
}

/// One pass over the state: the records handed out, the budget left, what is still owed.
#[derive(Debug)]
pub(crate) struct Pass {
    pub(crate) session: u64,
    budget: usize,
    records: Vec<u8>,
    count: u64,
    scratch: Vec<u8>,
    pending: u64,
    streams: Vec<u32>,
    next_stream: u32,
}

impl Pass {
    pub(crate) fn new_stream(&mut self) -> u32 {
        let id = self.next_stream;
        self.next_stream += 1;
        id
    }

    /// Records written in this pass so far.
    pub(crate) fn written(&self) -> u64 {
        self.count
    }

    /// Whether another record fits this pass.
    pub(crate) fn has_room(&self) -> bool {
        self.records.len() < self.budget
    }

    pub(crate) fn met(&mut self, stream: u32, pending: u64) {
        self.streams.push(stream);
        self.pending += pending;
    }

    /// Appends a record: `key`, and `value` if it is an upsert.
    pub(crate) fn record<K: serde::Serialize, V: serde::Serialize>(
        &mut self,
        stream: u32,
        key: &K,
        value: Option<&V>,
    ) -> Result<(), String> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch = postcard::to_extend(key, scratch).map_err(|e| format!("a key: {e}"))?;
        if let Some(value) = value {
            scratch = postcard::to_extend(value, scratch).map_err(|e| format!("a value: {e}"))?;
        }
        varint(&mut self.records, u64::from(stream));
        self.records.push(if value.is_some() { UPSERT } else { REMOVE });
        varint(&mut self.records, scratch.len() as u64);
        self.records.extend_from_slice(&scratch);
        self.count += 1;
        self.scratch = scratch;
        Ok(())
    }
}

impl Pass {
    /// Appends a record of operation `op` whose payload `payload` writes (onto an empty
    /// buffer it is given).
    pub(crate) fn record_with(
        &mut self,
        stream: u32,
        op: u8,
        payload: impl FnOnce(Vec<u8>) -> Result<Vec<u8>, String>,
    ) -> Result<(), String> {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch = payload(scratch)?;
        varint(&mut self.records, u64::from(stream));
        self.records.push(op);
        varint(&mut self.records, scratch.len() as u64);
        self.records.extend_from_slice(&scratch);
        self.count += 1;
        self.scratch = scratch;
        Ok(())
    }
}

/// Runs `f` with the pass in progress. Only the SDK's collections' serializers call it, in
/// [`Mode::Pass`], which [`pass`] sets only around a pass.
pub(crate) fn with_pass<R>(f: impl FnOnce(&mut Pass) -> R) -> R {
    PASS.with_borrow_mut(|pass| f(pass.as_mut().expect("Mode::Pass is set only during a pass")))
}

/// What a pass produced.
#[derive(Debug)]
pub(crate) struct Passed {
    /// The state section in skeleton form.
    pub(crate) skeleton: Vec<u8>,
    /// Whether the reader must be sent the skeleton before the records (a stream it does not
    /// know appeared).
    pub(crate) new_streams: bool,
    pub(crate) records: Vec<u8>,
    /// The streams the skeleton references.
    pub(crate) streams: Vec<u32>,
    /// Estimated bytes of the records still owed: their count times the mean size of the
    /// records handed out so far.
    pub(crate) pending: u64,
}

/// Serializes the state in [`Mode::Pass`] with a budget of `budget` bytes of records.
pub(crate) fn pass(
    budget: usize,
    encode: impl FnOnce() -> Result<Vec<u8>, String>,
) -> Result<Passed, String> {
    let session = session();
    if session == 0 {
        return Err("no pre-copy session is open (call `begin` first)".into());
    }
    let next_stream = EXPORT.with_borrow(|e| e.as_ref().map_or(0, |e| e.next_stream));
    PASS.with_borrow_mut(|p| {
        *p = Some(Pass {
            session,
            budget,
            records: Vec::new(),
            count: 0,
            scratch: Vec::new(),
            pending: 0,
            streams: Vec::new(),
            next_stream,
        });
    });
    let skeleton = with_mode(Mode::Pass, encode);
    let pass = PASS.with_borrow_mut(Option::take).expect("the pass set above");
    let skeleton = skeleton?;
    let (new_streams, pending) = EXPORT.with_borrow_mut(|e| {
        let e = e.as_mut().expect("a session is open");
        e.next_stream = pass.next_stream;
        e.bytes += pass.records.len() as u64;
        e.records += pass.count;
        let new = pass.streams.iter().any(|s| !e.sent.contains(s));
        if new {
            e.sent.clone_from(&pass.streams);
        }
        let mean = if e.records == 0 { 64 } else { e.bytes.div_ceil(e.records) };
        (new, pass.pending.saturating_mul(mean))
    });
    Ok(Passed { skeleton, new_streams, records: pass.records, streams: pass.streams, pending })
}

/// A skeleton chunk's body: the streams it references, then the skeleton.
pub(crate) fn skeleton_chunk(streams: &[u32], skeleton: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(skeleton.len() + 2 + streams.len() * 2);
    bytes.push(SKELETON);
    varint(&mut bytes, streams.len() as u64);
    for &stream in streams {
        varint(&mut bytes, u64::from(stream));
    }
    bytes.extend_from_slice(skeleton);
    bytes
}

/// Splits a skeleton chunk's body (after the kind byte) into its streams and the skeleton.
pub(crate) fn split_skeleton(mut body: &[u8]) -> Result<(Vec<u32>, &[u8]), String> {
    let count = read_varint(&mut body)?;
    let mut streams = Vec::new();
    for _ in 0..count {
        streams.push(u32::try_from(read_varint(&mut body)?).map_err(|_| "stream id")?);
    }
    Ok((streams, body))
}

/// Decodes a skeleton chunk's body with `decode` in `mode` ([`Mode::Register`] or
/// [`Mode::Rewrite`]) and checks that the decoded type took every stream the chunk lists.
pub(crate) fn register_skeleton<R>(
    mode: Mode,
    body: &[u8],
    decode: impl FnOnce(&[u8]) -> Result<R, String>,
) -> Result<R, String> {
    let (streams, skeleton) = split_skeleton(body)?;
    let value = register(mode, || decode(skeleton))?;
    let missing = with_reader(|r| streams.iter().copied().find(|s| !r.sinks.contains_key(s)));
    if let Some(stream) = missing {
        return Err(format!(
            "pre-copy is not possible: the state has a collection (stream {stream}) that the type \
             reading it here does not read as a `tasuki_guest::Map`; the state will cross whole \
             instead"
        ));
    }
    Ok(value)
}

/// Starts collecting the streams a skeleton serialized in [`Mode::Reference`] references.
pub(crate) fn collect_references() {
    with_reader(|r| r.referenced.clear());
}

/// The streams referenced since [`collect_references`].
pub(crate) fn references() -> Vec<u32> {
    with_reader(|r| std::mem::take(&mut r.referenced))
}

/// Appends `value` as an unsigned LEB128 varint.
pub(crate) fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads an unsigned LEB128 varint at the front of `input`.
pub(crate) fn read_varint(input: &mut &[u8]) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first().ok_or("a record is cut short")?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a varint runs past 64 bits".into())
}

/// One record, as a reader sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    pub(crate) stream: u32,
    pub(crate) op: u8,
    /// Postcard of the key, then of the value for an upsert.
    pub(crate) payload: &'a [u8],
}

/// Splits a records chunk (after its kind byte) into records.
pub(crate) fn records(mut input: &[u8]) -> impl Iterator<Item = Result<Record<'_>, String>> {
    std::iter::from_fn(move || {
        if input.is_empty() {
            return None;
        }
        let mut read = || -> Result<Record<'_>, String> {
            let stream = u32::try_from(read_varint(&mut input)?).map_err(|_| "stream id")?;
            let (&op, rest) = input.split_first().ok_or("a record is cut short")?;
            input = rest;
            let len = usize::try_from(read_varint(&mut input)?).map_err(|_| "record length")?;
            if len > input.len() {
                return Err("a record is cut short".into());
            }
            let (payload, rest) = input.split_at(len);
            input = rest;
            Ok(Record { stream, op, payload })
        };
        let record = read();
        if record.is_err() {
            input = &[];
        }
        Some(record)
    })
}

/// The stream id that stands for an empty collection with no records (a transformer's new,
/// empty collection).
pub(crate) const EMPTY_STREAM: u32 = u32::MAX;

/// A transformer's sink for a stream it does not convert: records pass unchanged.
pub(crate) struct PassThrough;

impl Sink for PassThrough {
    fn counts(&self) -> (usize, u64) {
        (0, 0)
    }

    fn apply(&mut self, _: u8, _: &[u8]) -> Result<(), String> {
        Err("a transformer's stream cannot build a collection".into())
    }

    fn rewrite(
        &mut self,
        stream: u32,
        op: u8,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        write_raw(out, Record { stream, op, payload });
        Ok(())
    }

    fn built(self: Box<Self>) -> Box<dyn Any> {
        Box::new(())
    }
}

/// Where a reader sends one stream's records.
pub(crate) trait Sink {
    /// Applies one record.
    fn apply(&mut self, op: u8, payload: &[u8]) -> Result<(), String>;
    /// For a transformer: the records to write in place of this one, appended to `out`.
    fn rewrite(
        &mut self,
        stream: u32,
        op: u8,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), String>;
    /// Elements the stream holds now, and records it applied (0 and 0 for a transformer's).
    fn counts(&self) -> (usize, u64);
    /// What the stream became, for [`Mode::Resolve`]: the built collection, wrapped in
    /// `collection::Plain` or `collection::Converted`.
    fn built(self: Box<Self>) -> Box<dyn Any>;
}

/// A stream's built collection and its counts (elements, records applied).
pub(crate) type Built = (Box<dyn Any>, (usize, u64));

/// What one reader built or will rewrite, stream by stream.
#[derive(Default)]
pub(crate) struct Reader {
    pub(crate) sinks: HashMap<u32, Box<dyn Sink>>,
    /// Streams the skeleton being decoded registered just now (a conversion may replace their
    /// sink; an older stream's sink holds entries already and is kept).
    pub(crate) fresh: Vec<u32>,
    /// During [`Mode::Resolve`]: the built collections not yet taken, with their counts.
    pub(crate) built: HashMap<u32, Built>,
    /// During [`Mode::Resolve`]: references no collection type took yet (a conversion must).
    pub(crate) unresolved: Vec<u32>,
    /// During [`Mode::Reference`] serialization: the streams written.
    pub(crate) referenced: Vec<u32>,
    /// During [`Mode::Resolve`]: why a collection could not be taken (the decoder's own error
    /// type cannot carry the text).
    pub(crate) failure: Option<String>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("streams", &self.sinks.len()).finish_non_exhaustive()
    }
}

/// Runs `f` with this instance's reader.
pub(crate) fn with_reader<R>(f: impl FnOnce(&mut Reader) -> R) -> R {
    READER.with_borrow_mut(f)
}

/// Forgets what the reader built (after an import completes, or a transformer's session ends).
pub(crate) fn reset_reader() {
    READER.with_borrow_mut(|r| *r = Reader::default());
}

/// Decodes a skeleton with `decode` in `mode` ([`Mode::Register`] or [`Mode::Rewrite`]), which
/// registers a sink per stream.
pub(crate) fn register<R>(
    mode: Mode,
    decode: impl FnOnce() -> Result<R, String>,
) -> Result<R, String> {
    with_reader(|r| r.fresh.clear());
    let result = with_mode(mode, decode);
    with_reader(|r| r.fresh.clear());
    result
}

/// Applies a records chunk to the registered sinks.
pub(crate) fn apply_records(bytes: &[u8]) -> Result<(), String> {
    with_reader(|reader| {
        for record in records(bytes) {
            let record = record?;
            let sink = reader.sinks.get_mut(&record.stream).ok_or_else(|| {
                format!(
                    "pre-copied records of collection stream {} arrived, but the state type this \
                     release reads names no such collection: every collection the old release \
                     keeps in a `tasuki_guest::Map` must be read as a `tasuki_guest::Map` (in \
                     the state type, a migration's frozen type, or a transformer's)",
                    record.stream
                )
            })?;
            sink.apply(record.op, record.payload)?;
        }
        Ok(())
    })
}

/// Rewrites a records chunk through the registered sinks (a transformer); records of streams
/// no skeleton named pass unchanged.
pub(crate) fn rewrite_records(bytes: &[u8]) -> Result<Vec<u8>, String> {
    with_reader(|reader| {
        let mut out = Vec::with_capacity(bytes.len() + 1);
        out.push(RECORDS);
        for record in records(bytes) {
            let record = record?;
            match reader.sinks.get_mut(&record.stream) {
                Some(sink) => sink.rewrite(record.stream, record.op, record.payload, &mut out)?,
                None => write_raw(&mut out, record),
            }
        }
        Ok(out)
    })
}

/// Appends a record unchanged.
pub(crate) fn write_raw(out: &mut Vec<u8>, record: Record<'_>) {
    varint(out, u64::from(record.stream));
    out.push(record.op);
    varint(out, record.payload.len() as u64);
    out.extend_from_slice(record.payload);
}

/// Decodes the final skeleton in [`Mode::Resolve`]: every sink hands over what it built, and a
/// reference left unresolved at the end is an error (a conversion that never ran).
pub(crate) fn resolve<R>(decode: impl FnOnce() -> Result<R, String>) -> Result<R, String> {
    with_reader(|r| {
        let sinks = std::mem::take(&mut r.sinks);
        r.built = sinks
            .into_iter()
            .map(|(id, sink)| {
                let counts = sink.counts();
                (id, (sink.built(), counts))
            })
            .collect();
        r.unresolved.clear();
    });
    let result = with_mode(Mode::Resolve, decode);
    let (unresolved, failure) =
        with_reader(|r| (std::mem::take(&mut r.unresolved), r.failure.take()));
    reset_reader();
    if let Some(failure) = failure {
        return Err(failure);
    }
    let value = result?;
    if let Some(stream) = unresolved.first() {
        return Err(format!(
            "pre-copied collection (stream {stream}) is of another type in this release, and no \
             migration converted it with `Map::convert`"
        ));
    }
    Ok(value)
}

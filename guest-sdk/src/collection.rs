//! What the SDK's collections ([`crate::Map`], [`crate::List`]) share: beside the elements, an
//! export session's tracking or a reader's reference to pre-copied chunks; and how they
//! serialize, deserialize and convert in each [`Mode`] of [`crate::precopy`].

use crate::precopy::{self, EMPTY_STREAM, Mode, PassThrough, Sink};
use serde::ser::{Error as _, Serializer};
use serde::{Deserialize, Deserializer, Serialize};
use std::cell::{RefCell, RefMut};

/// A collection's part of an export session.
pub(crate) trait Tracking {
    /// The session it belongs to: stale once another begins or the session ends.
    fn session(&self) -> u64;
}

/// What a collection knows beyond its elements, during an upgrade.
enum Side<T> {
    /// An export session is copying it.
    Tracked(T),
    /// In a reader: the collection is the stream of chunks `stream`, of `len` elements when
    /// last seen.
    Reference { stream: u32, len: u64 },
}

/// A built collection read as it was written (taken by the type's deserializer).
pub(crate) struct Plain<T>(pub(crate) T);
/// A built collection that went through a conversion (taken only by `convert`, so it is never
/// converted twice).
pub(crate) struct Converted<T>(pub(crate) T);

fn reference_misuse() -> ! {
    panic!(
        "this tasuki_guest collection (a Map or a List) is a reference to pre-copied chunks: in a \
         migration or a transformer, convert it with its `convert` instead of reading or \
         changing its elements"
    )
}

/// The session state beside a collection's elements: nothing outside an upgrade (one pointer).
pub(crate) struct Extra<T>(RefCell<Option<Box<Side<T>>>>);

impl<T: Tracking> Extra<T> {
    pub(crate) fn none() -> Self {
        Self(RefCell::new(None))
    }

    pub(crate) fn reference(stream: u32, len: u64) -> Self {
        Self(RefCell::new(Some(Box::new(Side::Reference { stream, len }))))
    }

    /// The stream this collection references, if it is a reference to pre-copied chunks.
    pub(crate) fn referenced(&self) -> Option<(u32, u64)> {
        match self.0.borrow().as_deref() {
            Some(Side::Reference { stream, len }) => Some((*stream, *len)),
            _ => None,
        }
    }

    /// Panics if the collection is a reference: its elements are not here.
    pub(crate) fn check_readable(&self) {
        if self.referenced().is_some() {
            reference_misuse();
        }
    }

    /// The live tracking, dropping a stale one (its session ended).
    pub(crate) fn tracked(&mut self) -> Option<&mut T> {
        let slot = self.0.get_mut();
        let live = match slot.as_deref() {
            None => return None,
            Some(Side::Tracked(track)) => track.session() == precopy::session(),
            Some(Side::Reference { .. }) => reference_misuse(),
        };
        if !live {
            *slot = None;
            return None;
        }
        match slot.as_deref_mut() {
            Some(Side::Tracked(track)) => Some(track),
            _ => None,
        }
    }

    /// Forgets the tracking: during an upgrade the collection is copied again, as a new stream.
    pub(crate) fn restart(&mut self) {
        self.check_readable();
        *self.0.get_mut() = None;
    }

    /// The tracking for a pass of session `session`, started with `start` if the collection
    /// has none for it (new, replaced, or cleared since).
    pub(crate) fn for_pass(
        &self,
        session: u64,
        start: impl FnOnce() -> T,
    ) -> Result<RefMut<'_, T>, String> {
        let mut side = self.0.borrow_mut();
        match side.as_deref() {
            Some(Side::Reference { .. }) => {
                return Err("a reference to pre-copied chunks cannot be exported".into());
            }
            Some(Side::Tracked(track)) if track.session() == session => {}
            _ => *side = Some(Box::new(Side::Tracked(start()))),
        }
        Ok(RefMut::map(side, |side| match side.as_deref_mut() {
            Some(Side::Tracked(track)) => track,
            _ => unreachable!("set above"),
        }))
    }

    /// A copy for `Clone`: a reference stays one; a tracked collection's copy is not tracked.
    pub(crate) fn copy(&self) -> Self {
        match self.referenced() {
            Some((stream, len)) => Self::reference(stream, len),
            None => Self::none(),
        }
    }
}

/// Serializes a collection for the current [`Mode`]: its share of a pass (written as its
/// reference), its reference, or its elements (`inline`).
pub(crate) fn serialize<S: Serializer, T: Tracking>(
    extra: &Extra<T>,
    empty: bool,
    s: S,
    pass: impl FnOnce() -> Result<(u32, u64), String>,
    inline: impl FnOnce(S) -> Result<S::Ok, S::Error>,
) -> Result<S::Ok, S::Error> {
    let referenced = extra.referenced();
    match precopy::mode() {
        Mode::Pass => pass().map_err(S::Error::custom)?.serialize(s),
        Mode::Reference => match referenced {
            Some(reference) => {
                precopy::with_reader(|r| r.referenced.push(reference.0));
                reference.serialize(s)
            }
            None if empty => (EMPTY_STREAM, 0u64).serialize(s),
            None => Err(S::Error::custom(
                "a transformer may fill a collection only from a pre-copied one, with `convert`",
            )),
        },
        Mode::Inline | Mode::Register | Mode::Rewrite | Mode::Resolve => match referenced {
            Some(_) => Err(S::Error::custom(
                "a reference to pre-copied chunks serialized outside its upgrade",
            )),
            None => inline(s),
        },
    }
}

/// What a collection's deserializer read, in a mode other than [`Mode::Inline`].
pub(crate) enum Read<B> {
    /// An empty collection with no stream.
    Empty,
    /// The built elements ([`Mode::Resolve`]).
    Built(B),
    /// A reference to stream `.0` of `.1` elements.
    Reference(u32, u64),
}

/// Reads a reference `(stream, len)`: in [`Mode::Register`] registers `store(len)` as the
/// stream's sink (a transformer's [`Mode::Rewrite`] passes records through until a conversion
/// says otherwise); in [`Mode::Resolve`] takes what the stream built, if it was built as `B`.
pub(crate) fn read_reference<'de, D: Deserializer<'de>, B: 'static>(
    d: D,
    store: impl FnOnce(u64) -> Box<dyn Sink>,
) -> Result<Read<B>, D::Error> {
    let mode = precopy::mode();
    let (stream, len) = <(u32, u64)>::deserialize(d)?;
    if stream == EMPTY_STREAM {
        return Ok(Read::Empty);
    }
    match mode {
        Mode::Register | Mode::Rewrite => precopy::with_reader(|reader| {
            if let std::collections::hash_map::Entry::Vacant(slot) = reader.sinks.entry(stream) {
                let sink: Box<dyn Sink> =
                    if mode == Mode::Register { store(len) } else { Box::new(PassThrough) };
                slot.insert(sink);
                reader.fresh.push(stream);
            }
        }),
        Mode::Resolve => {
            let built = precopy::with_reader(|reader| reader.built.remove(&stream));
            match built.map(|b| b.downcast::<Plain<B>>()) {
                None => return Ok(Read::Empty),
                Some(Ok(plain)) => return Ok(Read::Built(plain.0)),
                Some(Err(other)) => precopy::with_reader(|reader| {
                    // Built by a conversion: `convert` takes it.
                    reader.built.insert(stream, other);
                    reader.unresolved.push(stream);
                }),
            }
        }
        Mode::Inline | Mode::Pass | Mode::Reference => {}
    }
    Ok(Read::Reference(stream, len))
}

/// `convert` on a reference to stream `stream`: registers `sink(true)` (an importer's, which
/// builds) or `sink(false)` (a transformer's, which re-encodes) as the sink of a stream the
/// skeleton just named, or in [`Mode::Resolve`] takes what the conversion built, as `C`.
pub(crate) fn convert_reference<C: 'static>(
    stream: u32,
    sink: impl FnOnce(bool) -> Box<dyn Sink>,
) -> Result<Read<C>, String> {
    let register = |sink: Box<dyn Sink>| {
        precopy::with_reader(|reader| {
            if reader.fresh.contains(&stream) {
                reader.sinks.insert(stream, sink);
            }
        })
    };
    match precopy::mode() {
        Mode::Register => register(sink(true)),
        Mode::Rewrite => register(sink(false)),
        Mode::Resolve => {
            let built = precopy::with_reader(|reader| {
                reader.unresolved.retain(|s| *s != stream);
                reader.built.remove(&stream)
            });
            return match built {
                None => Ok(Read::Empty),
                Some(built) => match built.downcast::<Converted<C>>() {
                    Ok(converted) => Ok(Read::Built(converted.0)),
                    Err(_) => Err(format!(
                        "pre-copied collection (stream {stream}) was not converted to this type \
                         while its chunks crossed"
                    )),
                },
            };
        }
        Mode::Inline | Mode::Pass | Mode::Reference => {}
    }
    Ok(Read::Reference(stream, 0))
}

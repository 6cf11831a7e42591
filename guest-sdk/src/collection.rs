//! What the SDK's collections ([`crate::Map`], [`crate::List`]) share: beside the elements, an
//! export session's tracking or a reader's reference to pre-copied chunks; and how they
//! serialize, deserialize and convert in each [`Mode`] of [`crate::precopy`].

use crate::precopy::{self, EMPTY_STREAM, Mode, PassThrough, Sink};
use serde::de::Error as _;
use serde::ser::{Error as _, Serializer};
use serde::{Deserialize, Deserializer, Serialize};
use std::cell::{RefCell, RefMut};

/// A collection's part of an export session.
pub(crate) trait Tracking {
    /// The session it belongs to: stale once another begins or the session ends.
    fn session(&self) -> u64;
}

/// What a skeleton holds in a collection's place during a pre-copy: its stream, how many
/// elements it had, and how many records its stream had carried, at that pass. A reader checks
/// the last two against what it built, so a lost or extra record is an error, not a quiet
/// difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ref {
    pub(crate) stream: u32,
    pub(crate) len: u64,
    pub(crate) records: u64,
}

/// What a collection knows beyond its elements, during an upgrade.
enum Side<T> {
    /// An export session is copying it.
    Tracked(T),
    /// In a reader: the collection is a stream of chunks.
    Reference(Ref),
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

    pub(crate) fn reference(reference: Ref) -> Self {
        Self(RefCell::new(Some(Box::new(Side::Reference(reference)))))
    }

    /// The stream this collection references, if it is a reference to pre-copied chunks.
    pub(crate) fn referenced(&self) -> Option<Ref> {
        match self.0.borrow().as_deref() {
            Some(Side::Reference(reference)) => Some(*reference),
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
            Some(Side::Reference(_)) => reference_misuse(),
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

    /// The tracking as it is, stale or not (for tests of what it keeps).
    #[cfg(test)]
    pub(crate) fn peek_tracked<R>(&self, look: impl FnOnce(&T) -> R) -> Option<R> {
        match self.0.borrow().as_deref() {
            Some(Side::Tracked(track)) => Some(look(track)),
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
            Some(Side::Reference(_)) => {
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
            Some(reference) => Self::reference(reference),
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
    pass: impl FnOnce() -> Result<Ref, String>,
    inline: impl FnOnce(S) -> Result<S::Ok, S::Error>,
) -> Result<S::Ok, S::Error> {
    let referenced = extra.referenced();
    match precopy::mode() {
        Mode::Pass => pass().map_err(S::Error::custom)?.serialize(s),
        Mode::Reference => match referenced {
            Some(reference) => {
                precopy::with_reader(|r| r.referenced.push(reference.stream));
                reference.serialize(s)
            }
            None if empty => Ref { stream: EMPTY_STREAM, len: 0, records: 0 }.serialize(s),
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

/// Checks that the stream `reference` names arrived whole: its records built `len` elements
/// from `records` records, as the exporter's cut says. Anything else (chunks missing from a
/// file, a transformer that dropped records, a host that lost the last round) is an error,
/// never an empty, partial or stale collection.
fn complete(reference: Ref, (len, records): (usize, u64)) -> Result<(), String> {
    if len as u64 == reference.len && records == reference.records {
        return Ok(());
    }
    let failure = format!(
        "pre-copied collection (stream {}) should hold {} elements from {} records, but its \
         chunks built {len} from {records}: chunks are missing or were changed on the way",
        reference.stream, reference.len, reference.records
    );
    precopy::with_reader(|r| r.failure.get_or_insert_with(|| failure.clone()).clone());
    Err(failure)
}

/// What a collection's deserializer read, in a mode other than [`Mode::Inline`].
pub(crate) enum Read<B> {
    /// An empty collection with no stream.
    Empty,
    /// The built elements ([`Mode::Resolve`]).
    Built(B),
    /// A reference to a stream.
    Reference(Ref),
}

/// Reads a [`Ref`]: in [`Mode::Register`] registers `store(len)` as the
/// stream's sink (a transformer's [`Mode::Rewrite`] passes records through until a conversion
/// says otherwise); in [`Mode::Resolve`] takes what the stream built, if it was built as `B`.
pub(crate) fn read_reference<'de, D: Deserializer<'de>, B: 'static>(
    d: D,
    store: impl FnOnce(u64) -> Box<dyn Sink>,
) -> Result<Read<B>, D::Error> {
    let mode = precopy::mode();
    let reference = Ref::deserialize(d)?;
    let Ref { stream, len, .. } = reference;
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
            let Some((built, counts)) = built else {
                return complete(reference, (0, 0)).map(|()| Read::Empty).map_err(D::Error::custom);
            };
            match built.downcast::<Plain<B>>() {
                Ok(plain) => {
                    complete(reference, counts).map_err(D::Error::custom)?;
                    return Ok(Read::Built(plain.0));
                }
                Err(other) => precopy::with_reader(|reader| {
                    // Built by a conversion: `convert` takes it.
                    reader.built.insert(stream, (other, counts));
                    reader.unresolved.push(stream);
                }),
            }
        }
        Mode::Inline | Mode::Pass | Mode::Reference => {}
    }
    Ok(Read::Reference(reference))
}

/// `convert` on `reference`: registers `sink(true)` (an importer's, which
/// builds) or `sink(false)` (a transformer's, which re-encodes) as the sink of a stream the
/// skeleton just named, or in [`Mode::Resolve`] takes what the conversion built, as `C`.
pub(crate) fn convert_reference<C: 'static>(
    reference: Ref,
    sink: impl FnOnce(bool) -> Box<dyn Sink>,
) -> Result<Read<C>, String> {
    let stream = reference.stream;
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
                None => complete(reference, (0, 0)).map(|()| Read::Empty),
                Some((built, counts)) => match built.downcast::<Converted<C>>() {
                    Ok(converted) => {
                        complete(reference, counts)?;
                        Ok(Read::Built(converted.0))
                    }
                    Err(_) => Err(format!(
                        "pre-copied collection (stream {stream}) was not converted to this type \
                         while its chunks crossed"
                    )),
                },
            };
        }
        Mode::Inline | Mode::Pass | Mode::Reference => {}
    }
    Ok(Read::Reference(reference))
}

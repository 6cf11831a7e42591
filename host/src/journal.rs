//! The recovery journal's index: every event that completed since the checkpoint, with when it
//! ran, in order. (The bytes of `Data` events are kept apart, in [`crate::spill::Log`]; an
//! event here names its range of them.)
//!
//! # Why it is encoded
//! The index grows by one entry per event: at pipeline 1, one per request. As structs, an
//! entry took 88 bytes (the largest variant and its stamp) against the 30–50 bytes of a typical
//! request, so the index was most of the journal's memory, and its fresh pages cost a page fault
//! every 85 requests or so (11,785 faults in a million SETs of `redis-benchmark` on 1M keys; 1,813
//! encoded). Encoded, a
//! `Data` event takes about 10 bytes: its tag, its stamp as differences from the event before
//! it, its connection and its length (its range starts where the last one ended).
//!
//! # Format of a segment
//! Each event is a postcard encoding of `(StampDelta, Entry)` (postcard: unsigned integers as
//! LEB128 varints, signed ones zig-zag first, an enum's variant as a varint index; see
//! <https://postcard.jamesmunns.com/wire-format>). Differences are taken from the previous event
//! of the same segment (from zero for its first), so a segment decodes on its own. Events too
//! rare to be worth encoding (a connect, an accept, a listener's answer) are kept as they are,
//! beside the bytes, and the entry only says "the next of those".

use crate::bindings::ConnInfo;
use crate::listeners::ListenError;
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::sync::Arc;

/// When an event ran: the wall-clock time the guest saw (ns since the Unix epoch), the
/// dispatcher's monotonic time (ns), which timer deadlines are counted on, and the event's
/// serial number in this host (from 1), which picks the random bytes it read (see
/// [`crate::clock`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) wall: u64,
    pub(crate) mono: u64,
    pub(crate) serial: u64,
}

/// One event that completed, as the guest saw it.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    Connect(ConnInfo),
    /// A connection's bytes: a range of the journal's bytes ([`crate::spill::Log`]).
    Data(u64, Range<usize>),
    Disconnect(u64),
    Timer(u64),
    /// `on-writable(conn, window)`, with the window the guest was given: its send window is
    /// state, so the replay must grant the same.
    Writable(u64, u64),
    /// `on-listening(id, result)`: the host's answer, which a replay gives again rather than
    /// ask the system for another port.
    Listening(u64, Result<String, ListenError>),
    /// `on-accept(conn, listener)`.
    Accept(Box<ConnInfo>, u64),
    /// `on-listeners-lost()`.
    ListenersLost,
}

/// Events per segment of the index: a copy ([`Events::clone`]) copies at most one segment
/// that is still being filled (about 40 KiB of `Data` events), whatever the journal's length.
pub(crate) const SEGMENT: usize = 4096;

/// The most bytes one event adds to the index: its stamp and entry (at most six varints of 10
/// bytes and a tag), or an event kept as it is and the tag that refers to it.
pub(crate) const ENTRY_MAX: usize = 64 + std::mem::size_of::<Event>();

/// An event's stamp, as differences from the previous event's (wrapping, so a wall clock
/// stepped back encodes as a small negative number).
#[derive(Serialize, Deserialize)]
struct StampDelta(i64, i64, i64);

/// An event, encoded: what is not in the stamp.
#[derive(Serialize, Deserialize)]
enum Entry {
    /// `Data(conn, range)`, the range as how far it starts past the end of the previous
    /// `Data` event's (always 0 while the journal's bytes are appended in order) and its length.
    Data(u64, i64, u64),
    Disconnect(u64),
    Timer(u64),
    Writable(u64, u64),
    /// The next event of [`Segment::other`].
    Other,
}

/// Up to [`SEGMENT`] events, encoded.
#[derive(Debug, Default, Clone)]
pub(crate) struct Segment {
    bytes: Vec<u8>,
    /// The events kept as they are, in order (see the module docs).
    other: Vec<Event>,
    len: usize,
    /// What the next event is encoded against: the last one's stamp and data end.
    last: Cursor,
}

/// Where a segment's decoding stands.
#[derive(Debug, Default, Clone, Copy)]
struct Cursor {
    stamp: Stamp,
    data_end: usize,
}

fn delta(now: u64, before: u64) -> i64 {
    now.wrapping_sub(before) as i64
}

fn undelta(before: u64, delta: i64) -> u64 {
    before.wrapping_add(delta as u64)
}

impl Segment {
    /// Appends `event`: the bytes it added to the index.
    fn push(&mut self, (at, event): (Stamp, Event)) -> usize {
        let last = &mut self.last;
        let stamp = StampDelta(
            delta(at.wall, last.stamp.wall),
            delta(at.mono, last.stamp.mono),
            delta(at.serial, last.stamp.serial),
        );
        last.stamp = at;
        let entry = match event {
            Event::Data(conn, range) => {
                let start = delta(range.start as u64, last.data_end as u64);
                last.data_end = range.end;
                Entry::Data(conn, start, (range.end - range.start) as u64)
            }
            Event::Disconnect(conn) => Entry::Disconnect(conn),
            Event::Timer(id) => Entry::Timer(id),
            Event::Writable(conn, window) => Entry::Writable(conn, window),
            other => {
                self.other.push(other);
                Entry::Other
            }
        };
        let kept = matches!(entry, Entry::Other);
        let before = self.bytes.len();
        self.bytes = postcard::to_extend(&(stamp, entry), std::mem::take(&mut self.bytes))
            .expect("writing to a Vec cannot fail");
        self.len += 1;
        self.bytes.len() - before + if kept { std::mem::size_of::<Event>() } else { 0 }
    }

    /// Bytes its events take: their encoding, and the events kept as they are.
    fn size(&self) -> usize {
        self.bytes.len() + self.other.len() * std::mem::size_of::<Event>()
    }

    fn iter(&self) -> SegmentIter<'_> {
        SegmentIter { segment: self, at: 0, other: 0, cursor: Cursor::default() }
    }
}

/// Decodes a segment's events in order.
struct SegmentIter<'a> {
    segment: &'a Segment,
    /// Offset of the next event's bytes.
    at: usize,
    /// Index of the next event of [`Segment::other`].
    other: usize,
    cursor: Cursor,
}

impl Iterator for SegmentIter<'_> {
    type Item = (Stamp, Event);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.segment.bytes.get(self.at..).filter(|rest| !rest.is_empty())?;
        let ((StampDelta(wall, mono, serial), entry), after): ((StampDelta, Entry), _) =
            postcard::take_from_bytes(rest).expect("a segment decodes: the index wrote it");
        self.at = self.segment.bytes.len() - after.len();
        let last = &mut self.cursor;
        last.stamp = Stamp {
            wall: undelta(last.stamp.wall, wall),
            mono: undelta(last.stamp.mono, mono),
            serial: undelta(last.stamp.serial, serial),
        };
        let event = match entry {
            Entry::Data(conn, start, len) => {
                let start = undelta(last.data_end as u64, start) as usize;
                last.data_end = start + len as usize;
                Event::Data(conn, start..last.data_end)
            }
            Entry::Disconnect(conn) => Event::Disconnect(conn),
            Entry::Timer(id) => Event::Timer(id),
            Entry::Writable(conn, window) => Event::Writable(conn, window),
            Entry::Other => {
                self.other += 1;
                self.segment.other[self.other - 1].clone()
            }
        };
        Some((last.stamp, event))
    }
}

/// The journal's events, in order: full segments of [`SEGMENT`] events, each frozen behind an
/// `Arc` once filled, and the segment being filled. A clone shares the full segments and copies
/// the last, so that a copy of the recovery state does not grow with the journal (a whole `Vec`
/// of 500k events took 5–24 ms of the loop at 1M keys, bench/RESULTS.md); appending never
/// copies.
#[derive(Debug, Default, Clone)]
pub(crate) struct Events {
    pub(crate) full: Vec<Arc<Segment>>,
    filling: Segment,
    /// Events at the front let go of ([`Events::drop_front`]), fewer than a segment: of
    /// `full[0]`, or of `filling` while nothing is full.
    start: usize,
    /// Bytes the events take ([`Segment::size`] of each segment).
    held: usize,
}

impl Events {
    /// Appends an event: the bytes it added to the index (its encoding, and the event itself
    /// for one kept as it is).
    pub(crate) fn push(&mut self, event: (Stamp, Event)) -> usize {
        let added = self.filling.push(event);
        self.held += added;
        if self.filling.len == SEGMENT {
            let mut full = std::mem::take(&mut self.filling);
            full.bytes.shrink_to_fit();
            self.full.push(Arc::new(full));
        }
        added
    }

    /// Lets go of the first `n` events (at most [`Self::len`]); the next is index 0. Segments
    /// left whole go to the drop thread.
    pub(crate) fn drop_front(&mut self, n: usize) {
        self.start += n.min(self.len());
        let whole = (self.start / SEGMENT).min(self.full.len());
        if whole > 0 {
            let dropped: Vec<_> = self.full.drain(..whole).collect();
            self.held -= dropped.iter().map(|s| s.size()).sum::<usize>();
            crate::spill::drop_later(dropped);
            self.start -= whole * SEGMENT;
        }
        if self.full.is_empty() && self.start == self.filling.len {
            self.held -= self.filling.size();
            self.filling = Segment::default();
            self.start = 0;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.full.len() * SEGMENT + self.filling.len - self.start
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the events take: what the index costs the host's heap, besides the spare room of
    /// the segment being filled.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// The event at index `index` (decoding its segment up to it: for the rare paths that
    /// name one event, a rebuild's culprit).
    ///
    /// # Panics
    /// When `index` is not below [`Self::len`].
    pub(crate) fn get(&self, index: usize) -> (Stamp, Event) {
        assert!(index < self.len(), "event {index} of {}", self.len());
        let index = index + self.start;
        let segment = self.full.get(index / SEGMENT).map_or(&self.filling, |s| &**s);
        segment.iter().nth(index % SEGMENT).expect("the segment holds the event")
    }

    pub(crate) fn first(&self) -> Option<(Stamp, Event)> {
        (!self.is_empty()).then(|| self.get(0))
    }

    /// Every event, in order, decoded.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Stamp, Event)> + '_ {
        self.full
            .iter()
            .map(|segment| &**segment)
            .chain(std::iter::once(&self.filling))
            .flat_map(Segment::iter)
            .skip(self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::ConnInfo;

    fn timer(serial: u64) -> (Stamp, Event) {
        (Stamp { wall: serial, mono: serial, serial }, Event::Timer(serial))
    }

    fn serials(events: &Events) -> Vec<u64> {
        events.iter().map(|(at, _)| at.serial).collect()
    }

    fn conn(id: u64) -> ConnInfo {
        ConnInfo { id, peer: format!("127.0.0.1:{id}"), listener: "127.0.0.1:6379".into() }
    }

    /// What a real journal holds: every kind of event, stamps that step back (a wall clock
    /// set back) and jump, serials with gaps (events that trapped are not journaled), data
    /// ranges back to back and one that is not.
    fn mixed() -> Vec<(Stamp, Event)> {
        let mut at = Stamp { wall: 1_700_000_000_000_000_000, mono: 5_000, serial: 1 };
        let mut end = 0;
        let mut events = Vec::new();
        for i in 0..3 * SEGMENT as u64 {
            at.wall = match i % 97 {
                13 => at.wall - 3_000_000_000,
                50 => u64::MAX - i,
                51 => 0,
                _ => at.wall.wrapping_add(4_321),
            };
            at.mono += if i % 101 == 7 { 1 << 40 } else { 2_345 };
            at.serial += if i % 89 == 3 { 7 } else { 1 };
            let event = match i % 11 {
                0 => Event::Connect(conn(i)),
                1 => Event::Disconnect(i),
                2 => Event::Timer(u64::MAX - i),
                3 => Event::Writable(i, 1 << 20),
                4 => Event::Listening(i, Ok(format!("0.0.0.0:{i}"))),
                5 => Event::Listening(i, Err(ListenError::Limit(3))),
                6 => Event::Accept(Box::new(conn(i)), 2),
                7 => Event::ListenersLost,
                8 => {
                    // Not where the last range ended: encoded as a jump.
                    end += 1000;
                    Event::Data(i % 5, end - 1000 + 17..end)
                }
                _ => {
                    let len = (i as usize * 31) % 5000;
                    end += len;
                    Event::Data(i % 50, end - len..end)
                }
            };
            events.push((at, event));
        }
        events
    }

    /// Every event decodes as it was pushed, in order and by index, across segments.
    #[test]
    fn every_kind_of_event_decodes_as_it_was_pushed() {
        let expected = mixed();
        let mut events = Events::default();
        for event in &expected {
            events.push(event.clone());
        }
        assert_eq!(events.len(), expected.len());
        let got: Vec<_> = events.iter().collect();
        assert_eq!(format!("{got:?}"), format!("{expected:?}"));
        for index in [0, 1, SEGMENT - 1, SEGMENT, 2 * SEGMENT + 5, expected.len() - 1] {
            let (at, event) = events.get(index);
            assert_eq!(at, expected[index].0, "index {index}");
            assert_eq!(format!("{event:?}"), format!("{:?}", expected[index].1), "index {index}");
        }
    }

    /// The point of the encoding: a request's entry takes a few bytes, not the 88 of an
    /// event struct and its stamp, and [`Events::held`] counts what is held.
    #[test]
    fn a_request_costs_the_index_a_few_bytes() {
        let mut events = Events::default();
        let mut at = Stamp { wall: 1_700_000_000_000_000_000, mono: 9_000_000_000, serial: 1 };
        let mut end = 0;
        let mut added = 0;
        let n = 10 * SEGMENT;
        for i in 0..n {
            // 170k requests a second, on 50 connections, 45 bytes each: redis-benchmark's SET.
            at.wall += 5_900;
            at.mono += 5_900;
            at.serial += 1;
            added += events.push((at, Event::Data(i as u64 % 50, end..end + 45)));
            end += 45;
        }
        assert_eq!(events.held(), added);
        assert!(added <= 10 * n, "{} bytes an event", added as f64 / n as f64);
        events.drop_front(4 * SEGMENT + 1);
        assert!(events.held() < added * 7 / 10, "the dropped segments' bytes are let go of");
    }

    #[test]
    fn the_events_index_keeps_order_and_indices_across_segments() {
        let mut events = Events::default();
        let n = 2 * SEGMENT + 17;
        for serial in 0..n as u64 {
            events.push(timer(serial));
        }
        assert_eq!(events.len(), n);
        assert_eq!(serials(&events), (0..n as u64).collect::<Vec<_>>());
        for index in [0, SEGMENT - 1, SEGMENT, 2 * SEGMENT, n - 1] {
            assert_eq!(events.get(index).0.serial, index as u64, "index {index}");
        }
        assert_eq!(events.first().map(|(at, _)| at.serial), Some(0));
        assert!(Events::default().first().is_none());
    }

    /// Dropping every event resets the segment being filled whole: events pushed after it
    /// (data ranges counted from a new start, events kept as they are) decode as pushed, and
    /// what the index holds goes back to what they take.
    #[test]
    fn events_pushed_after_all_were_let_go_of_decode_as_pushed() {
        let events_of = mixed();
        for (dropped, pushed) in [(5, 5), (SEGMENT + 7, SEGMENT + 7), (2 * SEGMENT, 2 * SEGMENT)] {
            let mut events = Events::default();
            for event in &events_of[..pushed] {
                events.push(event.clone());
            }
            events.drop_front(dropped);
            assert_eq!((events.len(), events.held()), (0, 0), "all {dropped} let go of");
            let mut added = 0;
            for event in &events_of[pushed..pushed + 300] {
                added += events.push(event.clone());
            }
            assert_eq!(events.held(), added);
            let got: Vec<_> = events.iter().collect();
            assert_eq!(format!("{got:?}"), format!("{:?}", &events_of[pushed..pushed + 300]));
        }
    }

    #[test]
    fn a_copy_of_the_events_index_shares_its_full_segments_and_stays_as_it_was() {
        let mut events = Events::default();
        for serial in 0..(SEGMENT + 5) as u64 {
            events.push(timer(serial));
        }
        let copy = events.clone();
        // Shared, not copied: what makes a catch-up's copy cost one segment at most.
        assert!(Arc::ptr_eq(&events.full[0], &copy.full[0]));
        for serial in (SEGMENT + 5) as u64..(3 * SEGMENT) as u64 {
            events.push(timer(serial));
        }
        assert_eq!(serials(&copy), (0..(SEGMENT + 5) as u64).collect::<Vec<_>>());
        assert_eq!(events.len(), 3 * SEGMENT);
        assert_eq!(serials(&events), (0..(3 * SEGMENT) as u64).collect::<Vec<_>>());
    }

    /// Events let go of at the front leave the rest at indices from 0, in order, across
    /// segments, in a copy too; segments wholly let go of are freed.
    #[test]
    fn events_let_go_of_at_the_front_leave_the_rest_in_order_from_index_zero() {
        for dropped in [0, 5, SEGMENT - 1, SEGMENT, SEGMENT + 3, 2 * SEGMENT + 17, 2 * SEGMENT + 20]
        {
            let mut events = Events::default();
            let n = 2 * SEGMENT + 20;
            for serial in 0..n as u64 {
                events.push(timer(serial));
            }
            events.drop_front(dropped);
            assert_eq!(events.len(), n - dropped, "{dropped}");
            let rest: Vec<u64> = (dropped as u64..n as u64).collect();
            assert_eq!(serials(&events), rest, "{dropped}");
            assert_eq!(serials(&events.clone()), rest, "{dropped}");
            if dropped < n {
                assert_eq!(events.get(0).0.serial, dropped as u64);
                assert_eq!(events.get(n - dropped - 1).0.serial, n as u64 - 1);
            }
            assert_eq!(events.full.len(), (n / SEGMENT) - (dropped / SEGMENT).min(n / SEGMENT));
            // Pushing on after it keeps the order.
            for serial in n as u64..(n + SEGMENT) as u64 {
                events.push(timer(serial));
            }
            assert_eq!(
                serials(&events),
                (dropped as u64..(n + SEGMENT) as u64).collect::<Vec<_>>()
            );
        }
    }
}

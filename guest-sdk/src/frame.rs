//! Framing: where one message of a protocol ends in a connection's input.
//!
//! [`Server::on_data`](crate::Server::on_data) gets everything received and not yet consumed;
//! a framing finds the first whole message at its front and says how many bytes it takes, which
//! is what `on_data` returns. Because the SDK offers the rest again at once while the app makes
//! progress, an app can handle one message per call and still answer a whole pipeline in one
//! read:
//!
//! ```
//! use tasuki_guest::frame::{Framing, Lines};
//! use tasuki_guest::{ConnId, Ctx};
//!
//! const LINES: Lines = Lines::new(512);
//!
//! fn on_data(ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
//!     match LINES.next(input) {
//!         Ok(Some(line)) => {
//!             ctx.send(conn, line.payload);
//!             ctx.send(conn, b"\r\n");
//!             line.consumed
//!         }
//!         Ok(None) => 0, // the line is not whole yet: the SDK keeps it for the next bytes
//!         Err(too_long) => {
//!             ctx.send(conn, format!("500 {too_long}\r\n").as_bytes());
//!             ctx.close(conn);
//!             input.len()
//!         }
//!     }
//! }
//! ```
//!
//! An app that prefers to handle every whole message of a read at once iterates instead,
//! [`Framing::frames`], and returns [`Frames::consumed`].
//!
//! Two framings are here: [`Lines`] (text protocols: SMTP, FTP, POP3, IRC, redis's inline
//! commands) and [`LengthPrefixed`] (binary protocols that announce each message's length). Each
//! has a maximum message length, so that a client can never make the app hold an unbounded
//! message: past it the framing returns a [`FrameError`] at once, without waiting for the rest,
//! and the app answers in its protocol and closes. The host's own bound on unconsumed input
//! (`tasuki run --query-buffer`, [`crate::host::input_limit`]) still applies beneath it.

use std::fmt;

/// One whole message at the front of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The message without its framing: a line without its terminator, a frame without its
    /// length prefix.
    pub payload: &'a [u8],
    /// How many bytes of the input the message takes, framing included: what
    /// [`Server::on_data`](crate::Server::on_data) returns for it.
    pub consumed: usize,
}

/// Why the front of the input can never become a message this framing accepts. The app
/// should answer in its protocol and close the connection: where the next message would start
/// is unknowable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A line is longer than `max_len` bytes (its terminator not counted): seen either whole, or
    /// as more than `max_len` bytes without a terminator.
    LineTooLong {
        /// The framing's limit, in bytes.
        max_len: usize,
    },
    /// A length prefix announced `announced` bytes, more than `max_len`; or, when writing, a
    /// payload longer than the prefix can announce or than `max_len`.
    TooLong {
        /// The length announced (or, when writing, the payload's), in bytes.
        announced: u64,
        /// The framing's limit, in bytes.
        max_len: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::LineTooLong { max_len } => {
                write!(f, "line too long: over {max_len} bytes")
            }
            FrameError::TooLong { announced, max_len } => {
                write!(f, "message too long: {announced} bytes, over {max_len}")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// A way of cutting input into messages.
pub trait Framing {
    /// The first message at the front of `input`: `Ok(None)` while it has not arrived whole
    /// (consume nothing and wait for more), an error when it can never be accepted.
    fn next<'a>(&self, input: &'a [u8]) -> Result<Option<Frame<'a>>, FrameError>;

    /// Every whole message at the front of `input`, in order; the iteration stops at the
    /// first that is not whole yet, or after yielding an error. [`Frames::consumed`] then says
    /// how many bytes the messages yielded took.
    fn frames<'f, 'a>(&'f self, input: &'a [u8]) -> Frames<'f, 'a, Self>
    where
        Self: Sized,
    {
        Frames { framing: self, input, consumed: 0, done: false }
    }
}

/// The iterator of [`Framing::frames`]: each item is a message's payload, or the error that
/// ends the iteration.
#[derive(Debug)]
pub struct Frames<'f, 'a, F> {
    framing: &'f F,
    input: &'a [u8],
    consumed: usize,
    done: bool,
}

impl<F> Frames<'_, '_, F> {
    /// Bytes taken by the messages yielded so far: what `on_data` returns once the app has
    /// handled them. A message that failed is not counted.
    pub fn consumed(&self) -> usize {
        self.consumed
    }
}

impl<'a, F: Framing> Iterator for Frames<'_, 'a, F> {
    type Item = Result<&'a [u8], FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.framing.next(&self.input[self.consumed..]) {
            Ok(Some(frame)) => {
                self.consumed += frame.consumed;
                Some(Ok(frame.payload))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Lines ended by LF or CRLF, as text protocols send them (RFC 959's Telnet end-of-line is
/// CRLF; clients typed by hand and many tools send LF alone, and both are accepted). The
/// payload is the line without its terminator; a CR elsewhere stays in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lines {
    max_len: usize,
}

impl Lines {
    /// Lines of at most `max_len` bytes, the terminator not counted. A longer line is refused as
    /// soon as more than `max_len` bytes arrived without a terminator (not counting a last CR,
    /// which may be half of one), so an unfinished line holds at most `max_len + 1` bytes. FTP
    /// servers allow a few KiB (vsftpd 4 KiB); SMTP's RFC 5321 says 1000 bytes with the CRLF,
    /// IRC's RFC 1459 512.
    pub const fn new(max_len: usize) -> Self {
        Self { max_len }
    }

    /// The longest line accepted, in bytes, without its terminator.
    pub const fn max_len(&self) -> usize {
        self.max_len
    }
}

impl Framing for Lines {
    fn next<'a>(&self, input: &'a [u8]) -> Result<Option<Frame<'a>>, FrameError> {
        // Scan no further than the longest acceptable line and its CRLF.
        let window = &input[..input.len().min(self.max_len.saturating_add(2))];
        let Some(lf) = window.iter().position(|&b| b == b'\n') else {
            // More than the limit without a terminator: a CR at the end may still be half of
            // a CRLF, any other byte makes the line too long.
            let held = input.len() - usize::from(input.ends_with(b"\r"));
            return if held > self.max_len {
                Err(FrameError::LineTooLong { max_len: self.max_len })
            } else {
                Ok(None)
            };
        };
        let line = &input[..lf];
        let payload = line.strip_suffix(b"\r").unwrap_or(line);
        if payload.len() > self.max_len {
            return Err(FrameError::LineTooLong { max_len: self.max_len });
        }
        Ok(Some(Frame { payload, consumed: lf + 1 }))
    }
}

/// How a [`LengthPrefixed`] message announces its length: an unsigned integer of this width
/// and byte order, counting the payload's bytes only (not the prefix itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// One byte: payloads of up to 255 bytes.
    U8,
    /// Two bytes, big-endian (network order).
    U16Be,
    /// Two bytes, little-endian.
    U16Le,
    /// Four bytes, big-endian (network order).
    U32Be,
    /// Four bytes, little-endian.
    U32Le,
    /// Eight bytes, big-endian (network order).
    U64Be,
    /// Eight bytes, little-endian.
    U64Le,
}

impl Prefix {
    /// The prefix's size in bytes.
    pub const fn width(self) -> usize {
        match self {
            Prefix::U8 => 1,
            Prefix::U16Be | Prefix::U16Le => 2,
            Prefix::U32Be | Prefix::U32Le => 4,
            Prefix::U64Be | Prefix::U64Le => 8,
        }
    }

    /// The largest length it can announce.
    pub const fn max(self) -> u64 {
        match self {
            Prefix::U8 => u8::MAX as u64,
            Prefix::U16Be | Prefix::U16Le => u16::MAX as u64,
            Prefix::U32Be | Prefix::U32Le => u32::MAX as u64,
            Prefix::U64Be | Prefix::U64Le => u64::MAX,
        }
    }

    fn big_endian(self) -> bool {
        matches!(self, Prefix::U8 | Prefix::U16Be | Prefix::U32Be | Prefix::U64Be)
    }

    /// Reads the length from `bytes`, which are exactly [`Prefix::width`] long.
    fn read(self, bytes: &[u8]) -> u64 {
        let fold = |acc: u64, &b: &u8| (acc << 8) | u64::from(b);
        if self.big_endian() {
            bytes.iter().fold(0, fold)
        } else {
            bytes.iter().rev().fold(0, fold)
        }
    }

    fn write(self, len: u64, out: &mut Vec<u8>) {
        let be = len.to_be_bytes();
        let bytes = &be[be.len() - self.width()..];
        if self.big_endian() {
            out.extend_from_slice(bytes);
        } else {
            out.extend(bytes.iter().rev());
        }
    }
}

/// Messages that start with their length: a [`Prefix`], then that many bytes of payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthPrefixed {
    prefix: Prefix,
    max_len: usize,
}

impl LengthPrefixed {
    /// Messages whose length is announced by `prefix`, with payloads of at most `max_len` bytes.
    /// A longer announcement is refused as soon as its prefix arrived, before any payload is
    /// held.
    pub const fn new(prefix: Prefix, max_len: usize) -> Self {
        Self { prefix, max_len }
    }

    /// The longest payload accepted, in bytes.
    pub const fn max_len(&self) -> usize {
        self.max_len
    }

    /// Appends `payload` to `out` as one message: its prefix, then its bytes. Refused (nothing
    /// written) if it is longer than `max_len` or than the prefix can announce.
    pub fn write(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        let len = payload.len() as u64;
        if payload.len() > self.max_len || len > self.prefix.max() {
            return Err(FrameError::TooLong { announced: len, max_len: self.max_len });
        }
        out.reserve(self.prefix.width() + payload.len());
        self.prefix.write(len, out);
        out.extend_from_slice(payload);
        Ok(())
    }
}

impl Framing for LengthPrefixed {
    fn next<'a>(&self, input: &'a [u8]) -> Result<Option<Frame<'a>>, FrameError> {
        let width = self.prefix.width();
        let Some(header) = input.get(..width) else { return Ok(None) };
        let announced = self.prefix.read(header);
        // A length that does not fit in memory with its prefix can never arrive.
        let end = usize::try_from(announced)
            .ok()
            .filter(|&len| len <= self.max_len)
            .and_then(|len| len.checked_add(width))
            .ok_or(FrameError::TooLong { announced, max_len: self.max_len })?;
        Ok(input.get(width..end).map(|payload| Frame { payload, consumed: end }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(input: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, FrameError> {
        Lines::new(max).next(input).map(|f| f.map(|f| (f.payload, f.consumed)))
    }

    #[test]
    fn a_line_ends_at_lf_or_crlf_and_a_cr_elsewhere_stays() {
        assert_eq!(line(b"USER ann\r\nPASS", 64), Ok(Some((&b"USER ann"[..], 10))));
        assert_eq!(line(b"NOOP\nQUIT\n", 64), Ok(Some((&b"NOOP"[..], 5))));
        assert_eq!(line(b"a\rb\r\n", 64), Ok(Some((&b"a\rb"[..], 5))));
        assert_eq!(line(b"\r\n", 64), Ok(Some((&b""[..], 2))));
        assert_eq!(line(b"\n", 0), Ok(Some((&b""[..], 1))));
        assert_eq!(line(b"", 64), Ok(None));
        assert_eq!(line(b"USER ann\r", 64), Ok(None));
    }

    #[test]
    fn a_line_may_be_max_len_long_and_not_one_byte_more() {
        let max = 8;
        assert_eq!(line(b"12345678\r\n", max), Ok(Some((&b"12345678"[..], 10))));
        assert_eq!(line(b"12345678\n", max), Ok(Some((&b"12345678"[..], 9))));
        // Not whole yet, and still within the limit: a CR may be half of the terminator.
        assert_eq!(line(b"12345678", max), Ok(None));
        assert_eq!(line(b"12345678\r", max), Ok(None));
        let error = FrameError::LineTooLong { max_len: max };
        let too_long = Err(error);
        assert_eq!(line(b"123456789\n", max), too_long);
        assert_eq!(line(b"123456789\r\n", max), too_long);
        // Refused before the terminator arrives: the app never holds more than max + 1 bytes.
        assert_eq!(line(b"123456789", max), too_long);
        assert_eq!(line(b"12345678\rx", max), too_long);
        assert_eq!(line(&[b'x'; 10_000], max), too_long);
        assert_eq!(error.to_string(), "line too long: over 8 bytes");
    }

    #[test]
    fn frames_yields_every_whole_line_and_counts_what_they_took() {
        let input = b"one\r\ntwo\nthree\r\nfo";
        let lines = Lines::new(16);
        let mut frames = lines.frames(input);
        let got: Vec<&[u8]> = frames.by_ref().map(Result::unwrap).collect();
        assert_eq!(got, [&b"one"[..], b"two", b"three"]);
        assert_eq!(frames.consumed(), input.len() - 2);

        let lines = Lines::new(3);
        let mut frames = lines.frames(b"one\nthree\nsix\n");
        assert_eq!(frames.next(), Some(Ok(&b"one"[..])));
        assert_eq!(frames.next(), Some(Err(FrameError::LineTooLong { max_len: 3 })));
        assert_eq!(frames.next(), None, "an error ends the iteration");
        assert_eq!(frames.consumed(), 4);
    }

    #[test]
    fn a_length_prefixed_frame_waits_for_its_whole_payload() {
        let framing = LengthPrefixed::new(Prefix::U16Be, 100);
        assert_eq!(framing.next(b""), Ok(None));
        assert_eq!(framing.next(b"\x00"), Ok(None));
        assert_eq!(framing.next(b"\x00\x03ab"), Ok(None));
        let frame = framing.next(b"\x00\x03abcde").unwrap().unwrap();
        assert_eq!((frame.payload, frame.consumed), (&b"abc"[..], 5));
        let empty = framing.next(b"\x00\x00rest").unwrap().unwrap();
        assert_eq!((empty.payload, empty.consumed), (&b""[..], 2));
    }

    #[test]
    fn every_prefix_reads_what_it_writes() {
        let prefixes = [
            Prefix::U8,
            Prefix::U16Be,
            Prefix::U16Le,
            Prefix::U32Be,
            Prefix::U32Le,
            Prefix::U64Be,
            Prefix::U64Le,
        ];
        for prefix in prefixes {
            let framing = LengthPrefixed::new(prefix, 300);
            let mut out = Vec::new();
            let payloads: [&[u8]; 3] = [b"", b"hello", &[7; 255]];
            for payload in payloads {
                framing.write(payload, &mut out).unwrap();
            }
            let got: Vec<&[u8]> = framing.frames(&out).map(Result::unwrap).collect();
            assert_eq!(got, payloads, "{prefix:?}");
            assert_eq!(framing.frames(&out).count(), 3);
        }
        // The byte orders are the ones named.
        let mut out = Vec::new();
        LengthPrefixed::new(Prefix::U32Be, 10).write(b"ab", &mut out).unwrap();
        LengthPrefixed::new(Prefix::U32Le, 10).write(b"ab", &mut out).unwrap();
        assert_eq!(out, b"\x00\x00\x00\x02ab\x02\x00\x00\x00ab");
    }

    #[test]
    fn a_length_over_the_limit_is_refused_before_its_payload_arrives() {
        let framing = LengthPrefixed::new(Prefix::U32Be, 1024);
        let too_long = FrameError::TooLong { announced: 1025, max_len: 1024 };
        assert_eq!(framing.next(b"\x00\x00\x04\x01"), Err(too_long));
        assert_eq!(too_long.to_string(), "message too long: 1025 bytes, over 1024");
        assert!(framing.next(b"\x00\x00\x04\x00").unwrap().is_none());
        let unbounded = LengthPrefixed::new(Prefix::U64Le, usize::MAX);
        assert_eq!(
            unbounded.next(&[0xff; 8]),
            Err(FrameError::TooLong { announced: u64::MAX, max_len: usize::MAX }),
            "a length that cannot fit in memory beside its prefix"
        );

        let mut out = Vec::new();
        assert_eq!(
            LengthPrefixed::new(Prefix::U8, 1000).write(&[0; 256], &mut out),
            Err(FrameError::TooLong { announced: 256, max_len: 1000 }),
            "more than a one-byte prefix can announce"
        );
        assert_eq!(
            framing.write(&[0; 1025], &mut out),
            Err(FrameError::TooLong { announced: 1025, max_len: 1024 })
        );
        assert!(out.is_empty(), "a refused write writes nothing");
    }
}

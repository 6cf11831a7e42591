//! A connection's request parser that remembers how far it got, so that a request arriving in
//! many pieces is read once, in time linear in its bytes.
//!
//! [`crate::parse`] starts from the front of the input every time: a 12.9 MB `RPUSH` of a
//! million elements that arrives in 64 KiB reads is re-read from its start on every read, about
//! 200 times over. [`Parser`] keeps where the request in progress stands — the arguments read
//! so far and the offset the next one starts at — and resumes there when more bytes arrive.
//!
//! The parser is part of the connection's state and is serializable, so it crosses an upgrade
//! together with the unconsumed input the guest SDK keeps: a request half-received by one
//! release is finished by the next without reading its first half again. Every offset counts
//! from the start of the unconsumed input, which is where the request in progress starts.
//!
//! The limits are redis 7's (`processMultibulkBuffer` in networking.c): up to `INT_MAX`
//! arguments, arguments up to `proto-max-bulk-len`, and, until a connection has authenticated
//! on a server that requires it, at most 10 arguments of at most 16 KiB each.

use crate::request::{
    Arg, Line, MAX_INLINE_LEN, ProtocolError, header_line, parse_inline, request_form,
};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// The most arguments one multibulk request may carry in redis 7: `INT_MAX`.
pub const MAX_ARGS: usize = i32::MAX as usize;

/// The most arguments a request may carry before its connection authenticated, when the server
/// requires it (redis 7's hard-coded 10).
pub const MAX_UNAUTHENTICATED_ARGS: usize = 10;

/// The longest argument a request may carry before its connection authenticated, when the
/// server requires it (redis 7's hard-coded 16 KiB).
pub const MAX_UNAUTHENTICATED_BULK: usize = 16 * 1024;

/// Where the request at the front of a connection's unconsumed input stands.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parser {
    /// Arguments still to read; `None` until the `*N` header of a multibulk request is read.
    remaining: Option<usize>,
    /// The arguments read so far, as `(offset, length)` in the input.
    args: Vec<(usize, usize)>,
    /// Where the next thing to read starts: a `$N` header, or, with `bulk`, an argument's bytes.
    pos: usize,
    /// The length of the argument at `pos`, once its `$N` header is read.
    bulk: Option<usize>,
    /// For an inline request: how far the input was searched for its `\n`.
    scanned: usize,
}

impl Parser {
    /// Parses the request at the front of `input`, resuming where the last call on the same
    /// input stopped. `input` must start where it started then, with any new bytes appended.
    ///
    /// Returns how many bytes the request took (its arguments are in `args`), `Ok(None)` if it
    /// is not complete yet, or the protocol error that makes the rest of the input meaningless.
    /// `authenticated: false` applies redis's limits for a connection that has yet to `AUTH`.
    /// After a request or an error the parser is ready for the next request, at offset 0 of the
    /// input that follows it.
    pub fn parse<'a>(
        &mut self,
        input: &'a [u8],
        args: &mut Vec<Arg<'a>>,
        authenticated: bool,
    ) -> Result<Option<usize>, ProtocolError> {
        args.clear();
        if self.pos > input.len() || self.scanned > input.len() {
            // Not the input it was parsing: start over rather than index past the end.
            *self = Self::default();
        }
        let parsed = match request_form(input) {
            None => Ok(None),
            Some(true) => self.multibulk(input, args, authenticated),
            Some(false) => self.inline(input, args),
        };
        if !matches!(parsed, Ok(None)) {
            *self = Self::default();
        }
        parsed
    }

    /// Whether part of a request has been read.
    pub fn in_progress(&self) -> bool {
        self.pos > 0 || self.scanned > 0
    }

    fn inline<'a>(
        &mut self,
        input: &'a [u8],
        args: &mut Vec<Arg<'a>>,
    ) -> Result<Option<usize>, ProtocolError> {
        // Only the bytes not searched yet are searched for the end of the line.
        if !input[self.scanned..].contains(&b'\n') {
            self.scanned = input.len();
            return if input.len() > MAX_INLINE_LEN {
                Err(ProtocolError::TooBigInlineRequest)
            } else {
                Ok(None)
            };
        }
        parse_inline(input, args)
    }

    fn multibulk<'a>(
        &mut self,
        input: &'a [u8],
        args: &mut Vec<Arg<'a>>,
        authenticated: bool,
    ) -> Result<Option<usize>, ProtocolError> {
        let remaining = match self.remaining {
            Some(remaining) => remaining,
            None => {
                let cr = match header_line(input, 0) {
                    Line::End(cr) => cr,
                    Line::Incomplete => return Ok(None),
                    Line::TooLong => return Err(ProtocolError::TooBigMultibulkCount),
                };
                let count =
                    crate::parse_i64(&input[1..cr]).ok_or(ProtocolError::InvalidMultibulkLength)?;
                if usize::try_from(count).is_ok_and(|count| count > MAX_ARGS) {
                    return Err(ProtocolError::InvalidMultibulkLength);
                }
                // `*0` and `*-1` are empty requests: consumed, nothing to run.
                let count = usize::try_from(count).unwrap_or(0);
                if count > MAX_UNAUTHENTICATED_ARGS && !authenticated {
                    return Err(ProtocolError::UnauthenticatedMultibulkLength);
                }
                self.pos = cr + 2;
                // A claim, not an allocation: room is made as arguments arrive.
                self.args.reserve(count.min(1024));
                self.remaining = Some(count);
                count
            }
        };
        let mut remaining = remaining;
        while remaining > 0 {
            let len = match self.bulk {
                Some(len) => len,
                None => {
                    let cr = match header_line(input, self.pos) {
                        Line::End(cr) => cr,
                        Line::Incomplete => break,
                        Line::TooLong => return Err(ProtocolError::TooBigBulkCount),
                    };
                    if input[self.pos] != b'$' {
                        return Err(ProtocolError::ExpectedDollar(input[self.pos]));
                    }
                    let len = crate::parse_i64(&input[self.pos + 1..cr])
                        .and_then(|len| usize::try_from(len).ok())
                        .filter(|&len| len <= crate::max_bulk_len())
                        .ok_or(ProtocolError::InvalidBulkLength)?;
                    if len > MAX_UNAUTHENTICATED_BULK && !authenticated {
                        return Err(ProtocolError::UnauthenticatedBulkLength);
                    }
                    self.pos = cr + 2;
                    self.bulk = Some(len);
                    len
                }
            };
            // Like redis, the two bytes after the argument are taken as its `\r\n` unread.
            let end = self.pos.saturating_add(len);
            if input.len() < end.saturating_add(2) {
                break;
            }
            self.args.push((self.pos, len));
            self.pos = end + 2;
            self.bulk = None;
            remaining -= 1;
        }
        self.remaining = Some(remaining);
        if remaining > 0 {
            return Ok(None);
        }
        args.reserve(self.args.len());
        args.extend(self.args.iter().map(|&(at, len)| Cow::Borrowed(&input[at..at + len])));
        Ok(Some(self.pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Request = Vec<Vec<u8>>;

    /// Every request in `input` delivered in pieces of `piece` bytes, as a server loop with the
    /// SDK's buffer sees them: unconsumed bytes are offered again with the next piece appended.
    fn in_pieces(input: &[u8], piece: usize) -> Result<Vec<Request>, ProtocolError> {
        let mut parser = Parser::default();
        let mut buffer = Vec::new();
        let mut requests = Vec::new();
        for chunk in input.chunks(piece) {
            buffer.extend_from_slice(chunk);
            let mut args = Vec::new();
            let mut consumed = 0;
            while let Some(used) = parser.parse(&buffer[consumed..], &mut args, true)? {
                consumed += used;
                requests.push(args.iter().map(|a| a.to_vec()).collect());
            }
            buffer.drain(..consumed);
        }
        assert!(buffer.is_empty(), "every byte consumed");
        Ok(requests)
    }

    #[test]
    fn requests_in_pieces_of_every_size_parse_as_whole_ones() {
        let input: &[u8] = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$10\r\n0123456789\r\n\
            GET key\r\n*1\r\n$4\r\nPING\r\nSET  \"a b\" 'c\\'d'\n*0\r\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\n";
        let (whole, used) = {
            let mut requests = Vec::new();
            let mut pos = 0;
            while let Some((args, used)) = crate::parse(&input[pos..]).unwrap() {
                pos += used;
                requests.push(args.iter().map(|a| a.to_vec()).collect::<Request>());
            }
            (requests, pos)
        };
        assert_eq!(used, input.len());
        for piece in 1..=input.len() {
            assert_eq!(in_pieces(input, piece).unwrap(), whole, "pieces of {piece}");
        }
    }

    /// The parser crosses an upgrade in the state: a copy made mid-request, decoded, finishes it.
    #[test]
    fn a_parser_resumes_after_a_round_trip_through_its_encoding() {
        let input = b"*3\r\n$5\r\nRPUSH\r\n$1\r\nl\r\n$5\r\nhello\r\n";
        let mut parser = Parser::default();
        let mut args = Vec::new();
        assert_eq!(parser.parse(&input[..20], &mut args, true), Ok(None));
        assert!(parser.in_progress());
        let bytes = postcard::to_allocvec(&parser).unwrap();
        let mut copy: Parser = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(copy, parser);
        assert_eq!(copy.parse(input, &mut args, true), Ok(Some(input.len())));
        assert_eq!(args, [&b"RPUSH"[..], b"l", b"hello"]);
        assert!(!copy.in_progress());
    }

    /// More than the 1,048,576 arguments redis before 7.0 allowed, as redis 7 accepts them.
    #[test]
    fn more_than_a_million_arguments() {
        let count = 1_100_000;
        let mut input = format!("*{}\r\n$5\r\nRPUSH\r\n$1\r\nl\r\n", count + 2).into_bytes();
        for _ in 0..count {
            input.extend_from_slice(b"$1\r\nx\r\n");
        }
        let requests = in_pieces(&input, 64 * 1024).unwrap();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].len(), count + 2);
    }

    #[test]
    fn redis_7_limits() {
        let mut parser = Parser::default();
        let mut args = Vec::new();
        assert_eq!(parser.parse(b"*2147483647\r\n", &mut args, true), Ok(None));
        let mut parser = Parser::default();
        assert_eq!(
            parser.parse(b"*2147483648\r\n", &mut args, true),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        assert_eq!(
            parser.parse(b"*11\r\n", &mut args, false),
            Err(ProtocolError::UnauthenticatedMultibulkLength)
        );
        assert_eq!(parser.parse(b"*10\r\n", &mut args, false), Ok(None));
        let mut parser = Parser::default();
        assert_eq!(
            parser.parse(b"*1\r\n$16385\r\n", &mut args, false),
            Err(ProtocolError::UnauthenticatedBulkLength)
        );
        assert_eq!(
            parser.parse(b"*1\r\n$-1\r\n", &mut args, true),
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            ProtocolError::UnauthenticatedMultibulkLength.to_string(),
            "Protocol error: unauthenticated multibulk length"
        );
        assert_eq!(
            ProtocolError::UnauthenticatedBulkLength.to_string(),
            "Protocol error: unauthenticated bulk length"
        );
    }

    /// A parser handed a shorter input than it had seen starts over instead of failing.
    #[test]
    fn another_input_starts_over() {
        let mut parser = Parser::default();
        let mut args = Vec::new();
        assert_eq!(parser.parse(b"*2\r\n$3\r\nGET\r\n", &mut args, true), Ok(None));
        assert_eq!(parser.parse(b"PING\r\n", &mut args, true), Ok(Some(6)));
        assert_eq!(args, [&b"PING"[..]]);
    }
}

//! Requests: the multibulk frames clients send and the inline lines people type.
//!
//! A request is a list of arguments, the command name first. Redis decides the form from the
//! first byte (`*` starts a multibulk frame, anything else an inline line), and so do we.
//!
//! [`parse`] keeps no state between calls: the SDK keeps a connection's unconsumed input, across
//! upgrades too, and offers it again with the new bytes appended. An incomplete frame is
//! therefore the normal case, not an error, and is re-parsed from its start when more arrives.
//! Releases 1 to 3 parse that way; [`crate::Parser`] remembers where it stopped instead.

use std::borrow::Cow;
use std::fmt;

/// The most arguments one multibulk request may carry (`*N`), as in redis before 7.0. A
/// client's `N` is a claim, not an allocation: it is checked against this before anything else
/// is read.
pub const MAX_MULTIBULK_LEN: usize = 1024 * 1024;

/// The longest argument a multibulk request may carry (`$N`): redis's default
/// `proto-max-bulk-len`, 512 MiB. Also the longest value `APPEND` may build.
pub const MAX_BULK_LEN: usize = 512 * 1024 * 1024;

/// The `proto-max-bulk-len` in force: [`MAX_BULK_LEN`] unless the server lowered it to what its
/// host lets it keep of a request (one instance per process, so one value).
static BULK_LIMIT: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(MAX_BULK_LEN);

/// The longest argument accepted, and the longest value a command may build, now.
pub fn max_bulk_len() -> usize {
    BULK_LIMIT.load(std::sync::atomic::Ordering::Relaxed)
}

/// Lowers (or restores) [`max_bulk_len`]; never above [`MAX_BULK_LEN`].
pub fn set_max_bulk_len(len: usize) {
    BULK_LIMIT.store(len.min(MAX_BULK_LEN), std::sync::atomic::Ordering::Relaxed);
}

/// How far the parser looks for the end of a line before giving up: an inline request, or the
/// `*N` / `$N` header of a multibulk one. Redis's `PROTO_INLINE_MAX_SIZE`, 64 KiB.
pub const MAX_INLINE_LEN: usize = 64 * 1024;

/// One argument of a request. Borrowed from the input, except for an inline argument that was
/// written with quotes or escapes (`SET k "a b\n"`), which has to be rebuilt.
pub type Arg<'a> = Cow<'a, [u8]>;

/// A request that breaks the protocol. Redis answers it with `-ERR <Display text>` and closes the
/// connection after the reply, since it cannot know where the next request starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// `*N` where `N` is not an integer or exceeds [`MAX_MULTIBULK_LEN`].
    InvalidMultibulkLength,
    /// `$N` where `N` is not an integer, is negative, or exceeds [`MAX_BULK_LEN`].
    InvalidBulkLength,
    /// An argument of a multibulk request did not start with `$`; holds the byte found instead.
    ExpectedDollar(u8),
    /// No `\r` within [`MAX_INLINE_LEN`] bytes of a `*N` header.
    TooBigMultibulkCount,
    /// No `\r` within [`MAX_INLINE_LEN`] bytes of a `$N` header.
    TooBigBulkCount,
    /// No `\n` within [`MAX_INLINE_LEN`] bytes of an inline request.
    TooBigInlineRequest,
    /// An inline request with an unterminated quote, or a closing quote not followed by a space.
    UnbalancedQuotes,
    /// More than [`crate::parser::MAX_UNAUTHENTICATED_ARGS`] arguments before `AUTH`.
    UnauthenticatedMultibulkLength,
    /// An argument longer than [`crate::parser::MAX_UNAUTHENTICATED_BULK`] before `AUTH`.
    UnauthenticatedBulkLength,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Protocol error: ")?;
        match self {
            Self::InvalidMultibulkLength => f.write_str("invalid multibulk length"),
            Self::InvalidBulkLength => f.write_str("invalid bulk length"),
            // Redis prints the raw byte (`%c`); a byte that is not printable ASCII would not
            // survive as text, so it is shown escaped instead.
            Self::ExpectedDollar(byte) => {
                write!(f, "expected '$', got '{}'", byte.escape_ascii())
            }
            Self::TooBigMultibulkCount => f.write_str("too big mbulk count string"),
            Self::TooBigBulkCount => f.write_str("too big bulk count string"),
            Self::TooBigInlineRequest => f.write_str("too big inline request"),
            Self::UnbalancedQuotes => f.write_str("unbalanced quotes in request"),
            Self::UnauthenticatedMultibulkLength => f.write_str("unauthenticated multibulk length"),
            Self::UnauthenticatedBulkLength => f.write_str("unauthenticated bulk length"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Parses the request at the front of `input`.
///
/// Returns the arguments and how many bytes they took, `Ok(None)` if `input` does not hold a
/// whole request yet, or the protocol error that makes the rest of `input` meaningless. An empty
/// request (`*0\r\n`, a blank line) parses to no arguments: skip it, as redis does.
pub fn parse(input: &[u8]) -> Result<Option<(Vec<Arg<'_>>, usize)>, ProtocolError> {
    let mut args = Vec::new();
    Ok(parse_into(input, &mut args)?.map(|consumed| (args, consumed)))
}

/// [`parse`] into a caller's vector, so that a loop over pipelined requests reuses one
/// allocation. `args` is cleared first, and is left empty unless a whole request was parsed.
pub fn parse_into<'a>(
    input: &'a [u8],
    args: &mut Vec<Arg<'a>>,
) -> Result<Option<usize>, ProtocolError> {
    args.clear();
    let parsed = match request_form(input) {
        None => Ok(None),
        Some(true) => parse_multibulk(input, args),
        Some(false) => parse_inline(input, args),
    };
    if !matches!(parsed, Ok(Some(_))) {
        args.clear();
    }
    parsed
}

/// Whether the request at the front of `input` is a multibulk frame (`Some(true)`) or an inline
/// line (`Some(false)`); `None` for no input yet. Redis decides by the first byte.
pub(crate) fn request_form(input: &[u8]) -> Option<bool> {
    input.first().map(|&byte| byte == b'*')
}

/// Where the line starting at `start` ends: the index of its `\r`, once the byte after it (the
/// `\n`, which redis skips without looking at) has arrived too.
pub(crate) enum Line {
    End(usize),
    /// More input may complete the line.
    Incomplete,
    /// No `\r` within [`MAX_INLINE_LEN`] bytes.
    TooLong,
}

pub(crate) fn header_line(input: &[u8], start: usize) -> Line {
    let rest = input.get(start..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'\r') {
        None if rest.len() > MAX_INLINE_LEN => Line::TooLong,
        None => Line::Incomplete,
        Some(cr) if start + cr + 1 >= input.len() => Line::Incomplete,
        Some(cr) => Line::End(start + cr),
    }
}

fn parse_multibulk<'a>(
    input: &'a [u8],
    args: &mut Vec<Arg<'a>>,
) -> Result<Option<usize>, ProtocolError> {
    let cr = match header_line(input, 0) {
        Line::End(cr) => cr,
        Line::Incomplete => return Ok(None),
        Line::TooLong => return Err(ProtocolError::TooBigMultibulkCount),
    };
    let count = crate::parse_i64(&input[1..cr]).ok_or(ProtocolError::InvalidMultibulkLength)?;
    // `*0` and `*-1` are empty requests: consumed, nothing to run.
    let count = usize::try_from(count).unwrap_or(0);
    if count > MAX_MULTIBULK_LEN {
        return Err(ProtocolError::InvalidMultibulkLength);
    }
    let mut pos = cr + 2;
    for _ in 0..count {
        let cr = match header_line(input, pos) {
            Line::End(cr) => cr,
            Line::Incomplete => return Ok(None),
            Line::TooLong => return Err(ProtocolError::TooBigBulkCount),
        };
        if input[pos] != b'$' {
            return Err(ProtocolError::ExpectedDollar(input[pos]));
        }
        let len = crate::parse_i64(&input[pos + 1..cr])
            .and_then(|len| usize::try_from(len).ok())
            .filter(|&len| len <= max_bulk_len())
            .ok_or(ProtocolError::InvalidBulkLength)?;
        pos = cr + 2;
        // Like redis, the two bytes after the argument are taken as its `\r\n` unread.
        let end = pos.saturating_add(len);
        if input.len() < end.saturating_add(2) {
            return Ok(None);
        }
        args.push(Cow::Borrowed(&input[pos..end]));
        pos = end + 2;
    }
    Ok(Some(pos))
}

pub(crate) fn parse_inline<'a>(
    input: &'a [u8],
    args: &mut Vec<Arg<'a>>,
) -> Result<Option<usize>, ProtocolError> {
    let Some(newline) = input.iter().position(|&b| b == b'\n') else {
        return if input.len() > MAX_INLINE_LEN {
            Err(ProtocolError::TooBigInlineRequest)
        } else {
            Ok(None)
        };
    };
    let mut line = &input[..newline];
    if let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    // Redis splits the line as a C string: a NUL ends it.
    if let Some(nul) = line.iter().position(|&b| b == 0) {
        line = &line[..nul];
    }
    split_inline(line, args)?;
    Ok(Some(newline + 1))
}

/// `isspace` in the C locale: what separates inline arguments.
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

/// What ends an unquoted inline argument. Narrower than [`is_space`], as in redis's
/// `sdssplitargs`: a vertical tab or form feed inside a word belongs to the word.
fn ends_word(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

/// Splits an inline line into arguments the way redis's `sdssplitargs` does, quotes and escapes
/// included, so that `SET k "two words"` typed into telnet means what it means to redis.
fn split_inline<'a>(line: &'a [u8], args: &mut Vec<Arg<'a>>) -> Result<(), ProtocolError> {
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Ok(());
        }
        let start = i;
        while i < line.len() && !ends_word(line[i]) && line[i] != b'"' && line[i] != b'\'' {
            i += 1;
        }
        match line.get(i) {
            Some(b'"' | b'\'') => {
                let (arg, next) = quoted_word(line, start, i)?;
                args.push(Cow::Owned(arg));
                i = next;
            }
            _ => {
                // The common case: a plain word, borrowed as is.
                args.push(Cow::Borrowed(&line[start..i]));
            }
        }
    }
}

/// Finishes a word that has a quote at `quote` (the plain bytes `start..quote` come first).
/// Returns the word and where the next one may start.
fn quoted_word(line: &[u8], start: usize, quote: usize) -> Result<(Vec<u8>, usize), ProtocolError> {
    enum Mode {
        Plain,
        Double,
        Single,
    }
    let at = |i: usize| line.get(i).copied();
    let closing_ok = |i: usize| at(i + 1).is_none_or(is_space);

    let mut word = line[start..quote].to_vec();
    let mut mode = Mode::Plain;
    let mut i = quote;
    loop {
        let mut done = false;
        match (&mode, at(i)) {
            (Mode::Double, Some(b'\\')) if at(i + 1) == Some(b'x') => {
                match (at(i + 2).and_then(hex_value), at(i + 3).and_then(hex_value)) {
                    (Some(high), Some(low)) => {
                        word.push(high << 4 | low);
                        i += 3;
                    }
                    _ => {
                        // Not a hex escape after all: `\x` stands for `x`.
                        i += 1;
                        word.push(b'x');
                    }
                }
            }
            (Mode::Double, Some(b'\\')) if i + 1 < line.len() => {
                i += 1;
                word.push(match line[i] {
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'b' => b'\x08',
                    b'a' => b'\x07',
                    other => other,
                });
            }
            (Mode::Double, Some(b'"')) | (Mode::Single, Some(b'\'')) => {
                if !closing_ok(i) {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                done = true;
            }
            (Mode::Single, Some(b'\\')) if at(i + 1) == Some(b'\'') => {
                i += 1;
                word.push(b'\'');
            }
            (Mode::Double | Mode::Single, None) => return Err(ProtocolError::UnbalancedQuotes),
            (Mode::Double | Mode::Single, Some(byte)) => word.push(byte),
            (Mode::Plain, None) => done = true,
            (Mode::Plain, Some(byte)) if ends_word(byte) => done = true,
            (Mode::Plain, Some(b'"')) => mode = Mode::Double,
            (Mode::Plain, Some(b'\'')) => mode = Mode::Single,
            (Mode::Plain, Some(byte)) => word.push(byte),
        }
        if i < line.len() {
            i += 1;
        }
        if done {
            return Ok((word, i));
        }
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    char::from(byte).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request's arguments, owned.
    type Request = Vec<Vec<u8>>;

    /// Every request in `input`, parsed the way a server loop does, and the bytes they took.
    fn drain(input: &[u8]) -> Result<(Vec<Request>, usize), ProtocolError> {
        let mut requests = Vec::new();
        let mut pos = 0;
        while let Some((args, used)) = parse(&input[pos..])? {
            assert!(used > 0, "a parsed request consumes input");
            pos += used;
            requests.push(args.iter().map(|a| a.to_vec()).collect());
        }
        Ok((requests, pos))
    }

    fn words(list: &[&str]) -> Request {
        list.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn multibulk_request() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        let (args, used) = parse(input).unwrap().unwrap();
        assert_eq!(args, [&b"SET"[..], b"k", b"hello"]);
        assert_eq!(used, input.len());
    }

    #[test]
    fn multibulk_arguments_are_binary() {
        let input = b"*2\r\n$3\r\nGET\r\n$4\r\n\r\n\0\xff\r\n";
        let (args, _) = parse(input).unwrap().unwrap();
        assert_eq!(args[1], &b"\r\n\0\xff"[..]);
        assert!(args.iter().all(|a| matches!(a, Cow::Borrowed(_))));
    }

    #[test]
    fn empty_requests_are_consumed() {
        assert_eq!(parse(b"*0\r\n").unwrap().unwrap().1, 4);
        assert_eq!(parse(b"*-1\r\n").unwrap().unwrap().1, 5);
        assert_eq!(parse(b"\r\n").unwrap().unwrap(), (vec![], 2));
        assert_eq!(parse(b"   \n").unwrap().unwrap(), (vec![], 4));
    }

    #[test]
    fn empty_input_is_incomplete() {
        assert_eq!(parse(b""), Ok(None));
    }

    #[test]
    fn pipelined_requests_parse_one_at_a_time() {
        let input = b"*1\r\n$4\r\nPING\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\nECHO hi\n";
        let (requests, used) = drain(input).unwrap();
        assert_eq!(used, input.len());
        assert_eq!(
            requests,
            [words(&["PING"]), words(&["PING"]), words(&["GET", "k"]), words(&["ECHO", "hi"])]
        );
    }

    /// The SDK hands the parser whatever has arrived; a frame cut anywhere must wait for the
    /// rest and then parse exactly as if it had come whole.
    #[test]
    fn requests_split_at_every_offset() {
        let input: &[u8] = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$10\r\n0123456789\r\n\
            GET key\r\n*1\r\n$4\r\nPING\r\nSET  \"a b\" 'c\\'d'\n*0\r\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\n";
        let (whole, used) = drain(input).unwrap();
        assert_eq!(used, input.len());
        assert_eq!(whole.len(), 6);
        for split in 0..=input.len() {
            // What a connection buffer does: consume what parses, keep the rest, append more.
            let mut buffer = input[..split].to_vec();
            let (mut requests, used) = drain(&buffer).unwrap();
            buffer.drain(..used);
            buffer.extend_from_slice(&input[split..]);
            let (rest, used) = drain(&buffer).unwrap();
            assert_eq!(used, buffer.len(), "split at {split}");
            requests.extend(rest);
            assert_eq!(requests, whole, "split at {split}");
        }
    }

    #[test]
    fn incomplete_frames_wait() {
        for partial in [
            &b"*"[..],
            b"*2",
            b"*2\r",
            b"*2\r\n",
            b"*2\r\n$",
            b"*2\r\n$3\r",
            b"*2\r\n$3\r\nGET",
            b"*2\r\n$3\r\nGET\r",
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r",
            b"GET k",
            b"GET k\r",
        ] {
            assert_eq!(parse(partial), Ok(None), "{:?}", partial.escape_ascii().to_string());
        }
    }

    #[test]
    fn bad_lengths_are_redis_errors() {
        use ProtocolError::*;
        let cases: &[(&[u8], ProtocolError)] = &[
            (b"*x\r\n", InvalidMultibulkLength),
            (b"*\r\n", InvalidMultibulkLength),
            (b"*+1\r\n", InvalidMultibulkLength),
            (b"*01\r\n", InvalidMultibulkLength),
            (b"* 1\r\n", InvalidMultibulkLength),
            (b"*1048577\r\n", InvalidMultibulkLength),
            (b"*99999999999999999999999\r\n", InvalidMultibulkLength),
            (b"*1\r\n$-1\r\n", InvalidBulkLength),
            (b"*1\r\n$x\r\n", InvalidBulkLength),
            (b"*1\r\n$\r\n", InvalidBulkLength),
            (b"*1\r\n$536870913\r\n", InvalidBulkLength),
            (b"*1\r\n:1\r\n", ExpectedDollar(b':')),
            (b"*2\r\n$1\r\na\r\nb\r\n", ExpectedDollar(b'b')),
            (b"SET k \"v\n", UnbalancedQuotes),
            (b"SET k \"v\"x\n", UnbalancedQuotes),
            (b"SET k 'v\n", UnbalancedQuotes),
        ];
        for (input, error) in cases {
            assert_eq!(parse(input), Err(*error), "{}", input.escape_ascii());
        }
    }

    #[test]
    fn largest_allowed_sizes_are_accepted_as_incomplete() {
        assert_eq!(parse(b"*1048576\r\n"), Ok(None));
        assert_eq!(parse(b"*1\r\n$536870912\r\n"), Ok(None));
    }

    #[test]
    fn unterminated_lines_are_bounded() {
        let mut inline = vec![b'a'; MAX_INLINE_LEN];
        assert_eq!(parse(&inline), Ok(None));
        inline.push(b'a');
        assert_eq!(parse(&inline), Err(ProtocolError::TooBigInlineRequest));

        let mut count = b"*1".to_vec();
        count.resize(MAX_INLINE_LEN + 2, b'1');
        assert_eq!(parse(&count), Err(ProtocolError::TooBigMultibulkCount));

        let mut bulk = b"*1\r\n$1".to_vec();
        bulk.resize(4 + MAX_INLINE_LEN + 1, b'1');
        assert_eq!(parse(&bulk), Err(ProtocolError::TooBigBulkCount));
    }

    #[test]
    fn error_texts_are_redis_texts() {
        assert_eq!(
            ProtocolError::InvalidMultibulkLength.to_string(),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            ProtocolError::InvalidBulkLength.to_string(),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            ProtocolError::ExpectedDollar(b'x').to_string(),
            "Protocol error: expected '$', got 'x'"
        );
        assert_eq!(
            ProtocolError::TooBigInlineRequest.to_string(),
            "Protocol error: too big inline request"
        );
        assert_eq!(
            ProtocolError::UnbalancedQuotes.to_string(),
            "Protocol error: unbalanced quotes in request"
        );
    }

    #[test]
    fn inline_splits_on_whitespace() {
        let (args, used) = parse(b"  SET\tkey   value \r\n").unwrap().unwrap();
        assert_eq!(args, [&b"SET"[..], b"key", b"value"]);
        assert_eq!(used, 20);
        assert!(args.iter().all(|a| matches!(a, Cow::Borrowed(_))));
        // A bare `\n` ends the line too; a `\r` inside it separates words.
        assert_eq!(parse(b"a\rb\n").unwrap().unwrap().0, [&b"a"[..], b"b"]);
    }

    #[test]
    fn inline_quotes_and_escapes_follow_sdssplitargs() {
        let cases: &[(&[u8], &[&[u8]])] = &[
            (b"SET k \"a b\"\n", &[b"SET", b"k", b"a b"]),
            (b"SET k \"\\x41\\n\\t\\\"\\\\\"\n", &[b"SET", b"k", b"A\n\t\"\\"]),
            (b"SET k \"\\xZZ\"\n", &[b"SET", b"k", b"xZZ"]),
            (b"SET k 'it\\'s \\n'\n", &[b"SET", b"k", b"it's \\n"]),
            (b"SET k ab\"c d\"\n", &[b"SET", b"k", b"abc d"]),
            (b"SET k \"\"\n", &[b"SET", b"k", b""]),
            (b"ECHO a\x0bb\n", &[b"ECHO", b"a\x0bb"]),
            (b"ECHO a\0b c\n", &[b"ECHO", b"a"]),
        ];
        for (input, expected) in cases {
            let (args, used) = parse(input).unwrap().unwrap();
            assert_eq!(used, input.len());
            assert_eq!(&args, expected, "{}", input.escape_ascii());
        }
    }

    #[test]
    fn parse_into_reuses_and_clears() {
        let mut args = Vec::new();
        assert_eq!(parse_into(b"GET k\n", &mut args), Ok(Some(6)));
        assert_eq!(args.len(), 2);
        assert_eq!(parse_into(b"*2\r\n$3\r\nGET\r\n", &mut args), Ok(None));
        assert!(args.is_empty());
    }
}

/// The command names of the whole requests in `input`, in order, upper-cased (`[b"INFO"]` for
/// `*1\r\n$4\r\ninfo\r\n`); stops at a request cut short or a protocol error. For a release's
/// canary rules (the SDK's `Server::expected_difference`), which see one event's input.
pub fn command_names(mut input: &[u8]) -> Vec<Vec<u8>> {
    let mut names = Vec::new();
    while let Ok(Some((args, consumed))) = parse(input) {
        if let Some(name) = args.first() {
            names.push(name.to_ascii_uppercase());
        }
        input = &input[consumed..];
    }
    names
}

#[cfg(test)]
mod command_names_tests {
    use super::command_names;

    #[test]
    fn names_of_every_whole_request_upper_cased() {
        let input = b"*1\r\n$4\r\ninfo\r\nget k\r\n*2\r\n$3\r\nGET";
        assert_eq!(command_names(input), [b"INFO".to_vec(), b"GET".to_vec()]);
        assert!(command_names(b"*x\r\n").is_empty());
    }
}

//! The properties the request parsers must hold for any bytes a client sends, checked by the
//! `resp_request` fuzz target (`fuzz/`) and, on its checked-in corpus and on generated input,
//! by this crate's unit tests.
//!
//! A client controls every byte and where the network cuts them: whatever it sends, a parser
//! must answer or refuse without panicking, take no more than it was given, hold the size
//! limits, and — because the SDK offers a connection's unconsumed input again with the next
//! read appended — parse the same requests however the bytes were split. The parser's position
//! also crosses an upgrade in the state, so it is round-tripped through its encoding at every
//! cut, and releases 1 to 3 (the stateless [`crate::parse`]) must agree with release 4 (the
//! incremental [`Parser`]) wherever their limits agree.
//!
//! Input layout for [`check`]: byte 0 picks `proto-max-bulk-len` (so that small inputs reach
//! its limit) and whether a second, adversarial pass runs; byte 1 seeds where the stream is
//! cut; the rest is what the client sends.

use crate::parser::{MAX_UNAUTHENTICATED_ARGS, MAX_UNAUTHENTICATED_BULK};
use crate::request::{MAX_INLINE_LEN, MAX_MULTIBULK_LEN, ProtocolError};
use crate::{Parser, max_bulk_len, parse_into, set_max_bulk_len};

/// One request's arguments, owned, and whether it came as a multibulk frame.
type Request = (Vec<Vec<u8>>, bool);

/// What a connection made of a byte stream: the requests it ran, the error that closed it (if
/// any), and, when none did, the bytes left unconsumed at the end (a request still arriving).
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    requests: Vec<Request>,
    error: Option<ProtocolError>,
    left: usize,
}

/// Which parser a connection uses.
#[derive(Debug, Clone, Copy)]
enum Using {
    /// Release 4: the incremental parser, authenticated or not, its state round-tripped through
    /// postcard between reads when `upgrade` is set.
    Incremental { authenticated: bool, upgrade: bool },
    /// Releases 1 to 3: [`crate::parse`] from the front of the unconsumed input every time.
    Stateless,
}

/// Checks every property on `data` (layout in the module docs); panics with the reason if one
/// does not hold.
pub fn check(data: &[u8]) {
    check_with(data, true);
}

/// [`check`], with `proto-max-bulk-len` left alone unless `vary_limit`: it is one value for the
/// process, and unit tests run beside others that read it.
fn check_with(data: &[u8], vary_limit: bool) {
    let [mode, seed, stream @ ..] = data else { return };
    let previous = max_bulk_len();
    // Low values make the bulk limit reachable with a few bytes; 0xff keeps kv's real one.
    if vary_limit && mode >> 1 != 0x7f {
        set_max_bulk_len(usize::from(mode >> 1) * 3);
    }
    check_stream(stream, *seed);
    if mode & 1 == 1 {
        any_inputs_in_turn(stream, *seed);
    }
    set_max_bulk_len(previous);
}

/// The properties of one connection's byte stream.
fn check_stream(stream: &[u8], seed: u8) {
    // Beyond MAX_INLINE_LEN an unterminated line is refused when it is seen without its end, as
    // redis refuses it, so only shorter streams must parse the same in any pieces.
    let cuts = if stream.len() <= MAX_INLINE_LEN { cuts(stream.len(), seed) } else { Vec::new() };
    let incremental = Using::Incremental { authenticated: true, upgrade: false };
    let whole = connection(stream, &[], incremental);

    for request in &whole.requests {
        if let (args, true) = request {
            // The limits held, and a client's encoding of the same arguments reads back as them.
            assert!(args.iter().all(|a| a.len() <= max_bulk_len()), "an argument over the limit");
            assert!(args.len() <= crate::parser::MAX_ARGS);
            let encoded = encode(args);
            let mut parsed = Vec::new();
            let used = Parser::default().parse(&encoded, &mut parsed, true);
            assert_eq!(used, Ok(Some(encoded.len())), "a re-encoded request");
            assert!(parsed.iter().map(|a| &a[..]).eq(args.iter().map(|a| &a[..])));
        }
    }

    // However the network cut the bytes, the same requests and the same error.
    for using in
        [incremental, Using::Incremental { authenticated: true, upgrade: true }, Using::Stateless]
    {
        let split = connection(stream, &cuts, using);
        assert_eq!(split, connection(stream, &[], using), "{using:?} cut at {cuts:?}");
    }

    // Releases 1 to 3 agree with release 4, but for release 4's higher argument count: past a
    // `*N` that only release 4 accepts, anything may follow.
    let stateless = connection(stream, &[], Using::Stateless);
    if stateless.error == Some(ProtocolError::InvalidMultibulkLength) {
        assert_eq!(stateless.requests, whole.requests);
    } else {
        assert_eq!(stateless, whole, "stateless and incremental parsers disagree");
    }

    // Before AUTH: a prefix of the same requests, each within redis's unauthenticated limits,
    // cut short only by one of the two unauthenticated errors.
    let guarded =
        connection(stream, &cuts, Using::Incremental { authenticated: false, upgrade: true });
    assert!(whole.requests.starts_with(&guarded.requests), "unauthenticated requests differ");
    for (args, multibulk) in &guarded.requests {
        if *multibulk {
            assert!(args.len() <= MAX_UNAUTHENTICATED_ARGS);
            assert!(args.iter().all(|a| a.len() <= MAX_UNAUTHENTICATED_BULK));
        }
    }
    if guarded != whole {
        assert!(
            matches!(
                guarded.error,
                Some(
                    ProtocolError::UnauthenticatedMultibulkLength
                        | ProtocolError::UnauthenticatedBulkLength
                )
            ),
            "unauthenticated: {guarded:?}, authenticated: {whole:?}"
        );
    }
}

/// What a server loop over the SDK's input buffer makes of `stream` delivered in pieces ending
/// at `cuts` (and at the end): it parses what it can after each read, keeps the rest, and
/// stops at the first protocol error (kv replies and closes).
fn connection(stream: &[u8], cuts: &[usize], using: Using) -> Outcome {
    let mut parser = Parser::default();
    let mut buffer = Vec::new();
    let mut requests = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain([&stream.len()]) {
        buffer.extend_from_slice(&stream[from..to]);
        from = to;
        let mut consumed = 0;
        let mut args = Vec::new();
        loop {
            let input = &buffer[consumed..];
            let parsed = match using {
                Using::Incremental { authenticated, .. } => {
                    parser.parse(input, &mut args, authenticated)
                }
                Using::Stateless => parse_into(input, &mut args),
            };
            match parsed {
                Ok(Some(used)) => {
                    assert!(used > 0 && used <= input.len(), "took {used} of {}", input.len());
                    let multibulk = input[0] == b'*';
                    requests.push((args.iter().map(|a| a.to_vec()).collect(), multibulk));
                    consumed += used;
                }
                Ok(None) => break,
                Err(error) => {
                    // What is left then depends on how much had arrived: nothing is kept.
                    return Outcome { requests, error: Some(error), left: 0 };
                }
            }
        }
        buffer.drain(..consumed);
        if let Using::Incremental { upgrade: true, .. } = using {
            // What crosses an upgrade: the parser, through its encoding.
            let bytes = postcard::to_allocvec(&parser).expect("a parser encodes");
            parser = postcard::from_bytes(&bytes).expect("a parser decodes");
        }
    }
    Outcome { requests, error: None, left: buffer.len() }
}

/// Up to 16 increasing cut points in `0..len`, from `seed`.
fn cuts(len: usize, seed: u8) -> Vec<usize> {
    let mut state = u32::from(seed).wrapping_mul(0x9e37_79b9) | 1;
    let mut at = 0;
    let mut cuts = Vec::new();
    while cuts.len() < 16 {
        // xorshift32
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        // Mostly short pieces, so cuts land inside headers and CRLFs.
        let step = 1 + (state as usize % if state & 0x100 == 0 { 8 } else { 64 });
        at += step;
        if at >= len {
            break;
        }
        cuts.push(at);
    }
    cuts
}

/// A parser handed inputs that do not continue one another (not what the SDK does, but the
/// parser promises to start over rather than fail): never a panic, never more taken than given.
fn any_inputs_in_turn(stream: &[u8], seed: u8) {
    let mut parser = Parser::default();
    let mut args = Vec::new();
    let mut from = 0;
    for to in cuts(stream.len(), seed).into_iter().chain([stream.len()]) {
        // Each piece alone, then the stream from the start up to its end.
        for input in [&stream[from..to], &stream[..to]] {
            if let Ok(Some(used)) = parser.parse(input, &mut args, true) {
                assert!(used > 0 && used <= input.len());
            }
        }
        from = to;
    }
}

/// The multibulk frame a client library writes for `args`.
fn encode(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Releases 1 to 3 refuse more than this many arguments; release 4 takes up to `INT_MAX`.
const _: () = assert!(MAX_MULTIBULK_LEN < crate::parser::MAX_ARGS);

#[cfg(test)]
mod tests {
    use super::*;

    /// Pieces a hostile or unlucky client stream is made of: whole frames, cut ones, huge and
    /// malformed lengths, inline lines with quotes, stray bytes.
    const FRAGMENTS: &[&[u8]] = &[
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n",
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
        b"*1\r\n$4\r\nPING\r\n",
        b"*0\r\n",
        b"*-1\r\n",
        b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n",
        b"*3\r\n$3\r\nSET\r\n$4\r\nsoak\r\n$536870912\r\n",
        b"*1\r\n$67108864\r\n",
        b"*2147483647\r\n",
        b"*2147483648\r\n",
        b"*1048577\r\n",
        b"*11\r\n",
        b"*1\r\n$16385\r\n",
        b"*1\r\n$-1\r\n",
        b"*x\r\n",
        b"*1\r\n:1\r\n",
        b"$3\r\n",
        b"GET k\r\n",
        b"SET k \"a b\\x41\\n\"\r\n",
        b"SET k 'it\\'s'\n",
        b"SET k \"unterminated\n",
        b"ECHO a\0b\n",
        b"\r\n",
        b"\n",
        b"\r",
        b"*",
        b"$",
        b"'",
        b"\"",
        b"0123456789",
        b"\xff\x00",
    ];

    /// `count` streams of fragments, from a fixed seed.
    fn generated(count: usize) -> Vec<Vec<u8>> {
        let mut state = 0x2545_f491_u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as usize
        };
        (0..count)
            .map(|_| {
                let mut data = vec![next() as u8, next() as u8];
                for _ in 0..next() % 12 {
                    let fragment = FRAGMENTS[next() % FRAGMENTS.len()];
                    // Sometimes only a front part of a fragment: a frame cut short.
                    let keep = if next() % 4 == 0 {
                        next() % (fragment.len() + 1)
                    } else {
                        fragment.len()
                    };
                    data.extend_from_slice(&fragment[..keep]);
                }
                data
            })
            .collect()
    }

    #[test]
    fn generated_streams_hold_every_property() {
        for data in generated(5_000) {
            check_with(&data, false);
        }
    }

    /// The fuzz target's checked-in corpus (fuzz/corpus/resp_request), replayed in every test
    /// run: a crash the fuzzer once found stays fixed.
    #[test]
    fn the_fuzz_corpus_holds_every_property() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/resp_request");
        let mut replayed = 0;
        for entry in std::fs::read_dir(&dir).expect("the corpus is checked in") {
            let path = entry.unwrap().path();
            check_with(&std::fs::read(&path).unwrap(), false);
            replayed += 1;
        }
        assert!(replayed > 10, "only {replayed} inputs in {}", dir.display());
    }

    /// Found while writing the fuzz target's pass over inputs that do not continue each other:
    /// a parser that had searched an inline request's line further than the next input is long
    /// sliced past that input's end, where `parse` promises to start over.
    #[test]
    fn a_shorter_input_after_an_inline_search_starts_over() {
        let mut parser = Parser::default();
        let mut args = Vec::new();
        assert_eq!(parser.parse(b"GET key", &mut args, true), Ok(None));
        assert_eq!(parser.parse(b"PING\n", &mut args, true), Ok(Some(5)));
        assert_eq!(args, [&b"PING"[..]]);
    }

    #[test]
    fn cuts_are_increasing_and_inside() {
        for seed in 0..=255 {
            let cuts = cuts(100, seed);
            assert!(cuts.windows(2).all(|w| w[0] < w[1]) && cuts.iter().all(|&c| c > 0 && c < 100));
        }
    }
}

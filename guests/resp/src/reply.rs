//! Replies, encoded straight into a connection's output buffer.
//!
//! Every function appends one RESP2 value to `out` and allocates nothing beyond growing it: on
//! the hot path the buffer is the SDK's per-connection output, handed to the host when the event
//! returns.

use crate::int::write_i64;

const CRLF: &[u8] = b"\r\n";

/// `+OK`-style status reply. `status` must not contain `\r` or `\n`.
pub fn simple(out: &mut Vec<u8>, status: &str) {
    out.push(b'+');
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(CRLF);
}

/// `+OK`, the reply of most writes.
pub fn ok(out: &mut Vec<u8>) {
    out.extend_from_slice(b"+OK\r\n");
}

/// An error reply. `message` starts with the error code, as in `"ERR syntax error"` or
/// `"WRONGTYPE ..."`; any `\r` or `\n` in it becomes a space, as redis does, since an error is
/// one line.
pub fn error(out: &mut Vec<u8>, message: &str) {
    error_with(out, |out| out.extend_from_slice(message.as_bytes()));
}

/// An error reply whose text `write` appends to the buffer it is given. For messages that quote
/// a client's bytes (`unknown command 'foo'`) without building them in a separate string first;
/// `\r` and `\n` in what it writes become spaces.
pub fn error_with(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    out.push(b'-');
    let start = out.len();
    write(out);
    for byte in &mut out[start..] {
        if matches!(*byte, b'\r' | b'\n') {
            *byte = b' ';
        }
    }
    out.extend_from_slice(CRLF);
}

/// `:n`.
pub fn integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    write_i64(out, n);
    out.extend_from_slice(CRLF);
}

/// `$len` and the bytes: a binary-safe string.
pub fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    write_len(out, bytes.len());
    out.extend_from_slice(CRLF);
    out.extend_from_slice(bytes);
    out.extend_from_slice(CRLF);
}

/// `$-1`, the null bulk string: what `GET` answers for a missing key.
pub fn null_bulk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// `*len`: the header of an array; the caller writes its `len` elements next.
pub fn array(out: &mut Vec<u8>, len: usize) {
    out.push(b'*');
    write_len(out, len);
    out.extend_from_slice(CRLF);
}

/// `*-1`, the null array.
pub fn null_array(out: &mut Vec<u8>) {
    out.extend_from_slice(b"*-1\r\n");
}

fn write_len(out: &mut Vec<u8>, len: usize) {
    // No buffer in memory can be longer than i64::MAX bytes.
    write_i64(out, i64::try_from(len).unwrap_or(i64::MAX));
}

/// The protocol a connection speaks: RESP2 until it says `HELLO 3`. Replies whose type RESP3
/// tells apart (nulls, maps, sets, doubles, verbatim text) take it; the rest are the same in
/// both.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Protocol {
    /// RESP2, what every connection starts with.
    #[default]
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

impl Protocol {
    /// The number `HELLO` and `CLIENT INFO` show: 2 or 3.
    pub fn number(self) -> i64 {
        match self {
            Self::Resp2 => 2,
            Self::Resp3 => 3,
        }
    }
}

/// A missing value: RESP3's `_`, RESP2's null bulk string `$-1`.
pub fn null(out: &mut Vec<u8>, protocol: Protocol) {
    match protocol {
        Protocol::Resp2 => null_bulk(out),
        Protocol::Resp3 => out.extend_from_slice(b"_\r\n"),
    }
}

/// A missing array (`LPOP key count` of a missing key, an aborted `EXEC`): RESP3's `_`, RESP2's
/// null array `*-1`.
pub fn null_list(out: &mut Vec<u8>, protocol: Protocol) {
    match protocol {
        Protocol::Resp2 => null_array(out),
        Protocol::Resp3 => out.extend_from_slice(b"_\r\n"),
    }
}

/// The header of a map of `len` pairs (`HGETALL`, `CONFIG GET`, `HELLO`): RESP3's `%len`, in
/// RESP2 an array of `2 * len` elements. The caller writes the keys and values, alternating.
pub fn map(out: &mut Vec<u8>, protocol: Protocol, len: usize) {
    match protocol {
        Protocol::Resp2 => array(out, 2 * len),
        Protocol::Resp3 => {
            out.push(b'%');
            write_len(out, len);
            out.extend_from_slice(CRLF);
        }
    }
}

/// The header of a set of `len` elements (`SMEMBERS`): RESP3's `~len`, RESP2's array.
pub fn set(out: &mut Vec<u8>, protocol: Protocol, len: usize) {
    match protocol {
        Protocol::Resp2 => array(out, len),
        Protocol::Resp3 => {
            out.push(b'~');
            write_len(out, len);
            out.extend_from_slice(CRLF);
        }
    }
}

/// A floating-point number (`ZSCORE`, `INCRBYFLOAT`'s neighbours): RESP3's `,1.5`, in RESP2
/// the same text as a bulk string. Written as [`write_f64`] does.
pub fn double(out: &mut Vec<u8>, protocol: Protocol, value: f64) {
    let mut text = Vec::with_capacity(24);
    write_f64(&mut text, value);
    match protocol {
        Protocol::Resp2 => bulk(out, &text),
        Protocol::Resp3 => {
            out.push(b',');
            out.extend_from_slice(&text);
            out.extend_from_slice(CRLF);
        }
    }
}

/// A boolean: RESP3's `#t`/`#f`, RESP2's `:1`/`:0`.
pub fn boolean(out: &mut Vec<u8>, protocol: Protocol, value: bool) {
    match protocol {
        Protocol::Resp2 => integer(out, i64::from(value)),
        Protocol::Resp3 => out.extend_from_slice(if value { b"#t\r\n" } else { b"#f\r\n" }),
    }
}

/// Text meant for people (`INFO`, `CLIENT LIST`): RESP3's verbatim string `=len\r\ntxt:...`,
/// RESP2's bulk string.
pub fn verbatim(out: &mut Vec<u8>, protocol: Protocol, text: &[u8]) {
    match protocol {
        Protocol::Resp2 => bulk(out, text),
        Protocol::Resp3 => {
            out.push(b'=');
            write_len(out, text.len() + 4);
            out.extend_from_slice(CRLF);
            out.extend_from_slice(b"txt:");
            out.extend_from_slice(text);
            out.extend_from_slice(CRLF);
        }
    }
}

/// A double as redis 7.2 writes it (`fpconv_dtoa`): the shortest text that reads back as the
/// same number, `inf`, `-inf`, and an exponent written `e+21`/`e-07` past 21 digits.
pub fn write_f64(out: &mut Vec<u8>, value: f64) {
    use std::io::Write as _;
    if value.is_infinite() {
        out.extend_from_slice(if value > 0.0 { b"inf" } else { b"-inf" });
    } else if value == 0.0 {
        // `-0` stays `-0`, as in redis.
        out.extend_from_slice(if value.is_sign_negative() { b"-0" } else { b"0" });
    } else {
        let abs = value.abs();
        if (1e-6..1e21).contains(&abs) {
            // Rust's `{}` is the shortest round-trip text in positional notation.
            let _ = write!(out, "{value}");
        } else {
            // `{:e}` writes `1e21`, `1.5e-7`; redis writes `1e+21`, `1.5e-07`.
            let text = format!("{value:e}");
            let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
            let (sign, digits) = match exponent.strip_prefix('-') {
                Some(digits) => ('-', digits),
                None => ('+', exponent),
            };
            let _ = write!(out, "{mantissa}e{sign}{digits:0>2}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn encodes_each_type() {
        assert_eq!(encoded(|o| simple(o, "PONG")), "+PONG\r\n");
        assert_eq!(encoded(ok), "+OK\r\n");
        assert_eq!(encoded(|o| error(o, "ERR syntax error")), "-ERR syntax error\r\n");
        assert_eq!(encoded(|o| integer(o, 0)), ":0\r\n");
        assert_eq!(encoded(|o| integer(o, -42)), ":-42\r\n");
        assert_eq!(encoded(|o| integer(o, i64::MIN)), ":-9223372036854775808\r\n");
        assert_eq!(encoded(|o| bulk(o, b"")), "$0\r\n\r\n");
        assert_eq!(encoded(|o| bulk(o, b"a\r\nb")), "$4\r\na\r\nb\r\n");
        assert_eq!(encoded(null_bulk), "$-1\r\n");
        assert_eq!(encoded(|o| array(o, 0)), "*0\r\n");
        assert_eq!(encoded(|o| array(o, 12)), "*12\r\n");
        assert_eq!(encoded(null_array), "*-1\r\n");
    }

    #[test]
    fn resp3_types_and_their_resp2_forms() {
        use Protocol::*;
        assert_eq!(encoded(|o| null(o, Resp3)), "_\r\n");
        assert_eq!(encoded(|o| null(o, Resp2)), "$-1\r\n");
        assert_eq!(encoded(|o| null_list(o, Resp2)), "*-1\r\n");
        assert_eq!(encoded(|o| map(o, Resp3, 2)), "%2\r\n");
        assert_eq!(encoded(|o| map(o, Resp2, 2)), "*4\r\n");
        assert_eq!(encoded(|o| set(o, Resp3, 1)), "~1\r\n");
        assert_eq!(encoded(|o| set(o, Resp2, 1)), "*1\r\n");
        assert_eq!(encoded(|o| double(o, Resp3, 1.5)), ",1.5\r\n");
        assert_eq!(encoded(|o| double(o, Resp2, 1.5)), "$3\r\n1.5\r\n");
        assert_eq!(encoded(|o| double(o, Resp3, f64::NEG_INFINITY)), ",-inf\r\n");
        assert_eq!(encoded(|o| boolean(o, Resp3, true)), "#t\r\n");
        assert_eq!(encoded(|o| verbatim(o, Resp3, b"a:1")), "=7\r\ntxt:a:1\r\n");
        assert_eq!(encoded(|o| verbatim(o, Resp2, b"a:1")), "$3\r\na:1\r\n");
    }

    #[test]
    fn doubles_as_redis_writes_them() {
        let cases: &[(f64, &str)] = &[
            (1.0, "1"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (1.1, "1.1"),
            (1e21, "1e+21"),
            (1.5e-7, "1.5e-07"),
            (123456789012345680000.0, "123456789012345680000"),
            (0.0, "0"),
            (-0.0, "-0"),
            (f64::INFINITY, "inf"),
        ];
        for (value, text) in cases {
            assert_eq!(encoded(|o| write_f64(o, *value)), *text, "{value}");
        }
    }

    #[test]
    fn errors_stay_on_one_line() {
        assert_eq!(encoded(|o| error(o, "ERR a\r\nb")), "-ERR a  b\r\n");
        let mut out = b"+OK\r\n".to_vec();
        error_with(&mut out, |o| {
            o.extend_from_slice(b"ERR unknown command '");
            o.extend_from_slice(b"x\ny");
            o.push(b'\'');
        });
        assert_eq!(out, b"+OK\r\n-ERR unknown command 'x y'\r\n");
    }

    #[test]
    fn an_array_of_bulks() {
        let out = encoded(|o| {
            array(o, 2);
            bulk(o, b"save");
            bulk(o, b"");
        });
        assert_eq!(out, "*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
    }
}

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

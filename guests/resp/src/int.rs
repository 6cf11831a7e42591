//! Integers as redis reads and writes them.
//!
//! Redis accepts exactly the decimal form it would print itself, so that a value read as a
//! number and written back is the same string: no sign `+`, no spaces, no leading zeros, no
//! `-0`. [`parse_i64`] keeps that rule for `*N`/`$N` headers, `INCR` operands and stored values.

/// Parses `bytes` as redis's `string2ll` does: an optional `-`, then digits with no leading
/// zero (except `"0"` itself), fitting an `i64`. Anything else, the empty string included, is
/// `None`.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    // 20 characters is enough for every i64 ("-9223372036854775808"); redis rejects anything
    // of 21 or more before looking at it, and so do we.
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    if bytes == b"0" {
        return Some(0);
    }
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut magnitude: u64 = 0;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude.checked_mul(10)?.checked_add(u64::from(byte - b'0'))?;
    }
    if negative {
        // `i64::MIN` has no positive counterpart, so negate in the wider range first.
        0i128.checked_sub(i128::from(magnitude)).and_then(|n| i64::try_from(n).ok())
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Appends `n` in decimal to `out`, without allocating.
pub fn write_i64(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut magnitude = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_canonical_decimals() {
        for (text, value) in [
            ("0", 0),
            ("1", 1),
            ("-1", -1),
            ("10", 10),
            ("9223372036854775807", i64::MAX),
            ("-9223372036854775808", i64::MIN),
        ] {
            assert_eq!(parse_i64(text.as_bytes()), Some(value), "{text}");
        }
    }

    #[test]
    fn rejects_what_redis_rejects() {
        for text in [
            "",
            "-",
            "+1",
            " 1",
            "1 ",
            "01",
            "-0",
            "00",
            "1.0",
            "1e3",
            "0x10",
            "--1",
            "9223372036854775808",
            "-9223372036854775809",
            "99999999999999999999",
            "000000000000000000001",
        ] {
            assert_eq!(parse_i64(text.as_bytes()), None, "{text:?}");
        }
    }

    #[test]
    fn writes_what_it_reads() {
        for n in [0, 1, -1, 9, 10, -10, 12345, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            write_i64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
            assert_eq!(parse_i64(&out), Some(n));
        }
    }
}

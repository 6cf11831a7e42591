//! String commands: values as bytes (`SET`, `GET`, `APPEND`, `STRLEN`, `MGET`, `MSET`, `SETNX`),
//! with a deadline (`SET ... EX`, `SETEX`, `PSETEX`), and as 64-bit integers (`INCR`, `DECR`,
//! `INCRBY`, `DECRBY`).
//!
//! An integer is stored as its decimal text, as redis shows it to clients; `INCR` accepts only
//! the text redis would have written itself (see `resp::parse_i64`). A write that replaces a
//! value (`SET`, `MSET`) drops its deadline unless told to keep it (`KEEPTTL`); a write that
//! changes it (`APPEND`, `INCR`) keeps the deadline.
//!
//! A write that replaces a value replaces a list or hash too (`SET`, `MSET`, `SETEX`); a
//! command that reads or changes a string answers `WRONGTYPE` for a list or hash (`GET`,
//! `APPEND`, `INCR`, `STRLEN`, `SET ... GET`), except `MGET`, which reads it as missing, as
//! redis does.

use super::{NOT_AN_INTEGER, SYNTAX_ERROR, Session, WRONGTYPE, is, wrong_arity};
use crate::db::{Db, WrongType};
use resp::{Arg, max_bulk_len, reply};

/// How an expiry argument is meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExpiryForm {
    /// `EX seconds`: from now.
    Seconds,
    /// `PX milliseconds`: from now.
    Millis,
    /// `EXAT unix-seconds`.
    UnixSeconds,
    /// `PXAT unix-milliseconds`.
    UnixMillis,
}

/// The options of `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT ts|PXAT ms-ts|KEEPTTL]`.
#[derive(Debug, Default)]
struct SetOptions<'a> {
    only_if_missing: bool,
    only_if_present: bool,
    get: bool,
    keep_ttl: bool,
    expiry: Option<(ExpiryForm, &'a [u8])>,
}

impl<'a> SetOptions<'a> {
    /// Reads the options after `SET key value`, with redis's rules: `NX` and `XX` exclude each
    /// other, as do `KEEPTTL` and the expiry forms and the expiry forms among themselves (the same
    /// one twice is allowed, the last one wins); an expiry form needs its argument. `None` is a
    /// syntax error.
    fn parse(options: &'a [Arg<'a>]) -> Option<Self> {
        let mut parsed = Self::default();
        let mut rest = options.iter();
        while let Some(option) = rest.next() {
            let form = if is(option, "ex") {
                Some(ExpiryForm::Seconds)
            } else if is(option, "px") {
                Some(ExpiryForm::Millis)
            } else if is(option, "exat") {
                Some(ExpiryForm::UnixSeconds)
            } else if is(option, "pxat") {
                Some(ExpiryForm::UnixMillis)
            } else {
                None
            };
            if let Some(form) = form {
                let compatible =
                    !parsed.keep_ttl && parsed.expiry.is_none_or(|(other, _)| other == form);
                let amount = rest.next().filter(|_| compatible)?;
                parsed.expiry = Some((form, amount));
            } else if is(option, "nx") && !parsed.only_if_present {
                parsed.only_if_missing = true;
            } else if is(option, "xx") && !parsed.only_if_missing {
                parsed.only_if_present = true;
            } else if is(option, "get") {
                parsed.get = true;
            } else if is(option, "keepttl") && parsed.expiry.is_none() {
                parsed.keep_ttl = true;
            } else {
                return None;
            }
        }
        Some(parsed)
    }
}

/// The absolute deadline an expiry argument names, or `None` after replying redis's error: not an
/// integer, or not positive, or overflowing (`invalid expire time in '<command>' command`).
fn deadline(
    session: &mut Session<'_>,
    form: ExpiryForm,
    amount: &[u8],
    command: &str,
) -> Option<u64> {
    let Some(amount) = resp::parse_i64(amount) else {
        reply::error(session.out, NOT_AN_INTEGER);
        return None;
    };
    let now = i64::try_from(session.now_ms).unwrap_or(i64::MAX);
    let millis = match form {
        _ if amount <= 0 => None,
        ExpiryForm::Seconds => amount.checked_mul(1000).and_then(|ms| ms.checked_add(now)),
        ExpiryForm::Millis => amount.checked_add(now),
        ExpiryForm::UnixSeconds => amount.checked_mul(1000),
        ExpiryForm::UnixMillis => Some(amount),
    };
    match millis.and_then(|ms| u64::try_from(ms).ok()) {
        Some(deadline) => Some(deadline),
        None => {
            invalid_expire_time(session.out, command);
            None
        }
    }
}

/// `-ERR invalid expire time in 'set' command`.
pub(super) fn invalid_expire_time(out: &mut Vec<u8>, command: &str) {
    reply::error_with(out, |out| {
        out.extend_from_slice(b"ERR invalid expire time in '");
        out.extend_from_slice(command.as_bytes());
        out.extend_from_slice(b"' command");
    });
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT ts|PXAT ms-ts|KEEPTTL]`: `+OK`; with `GET`, the
/// old value; a null when `NX`/`XX` stopped it.
pub(super) fn set(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let (key, value) = (&args[1], &args[2]);
    let Some(options) = SetOptions::parse(&args[3..]) else {
        reply::error(session.out, SYNTAX_ERROR);
        return;
    };
    let expires_at = match options.expiry {
        Some((form, amount)) => match deadline(session, form, amount, "set") {
            Some(deadline) => Some(deadline),
            None => return,
        },
        None => None,
    };
    let now = session.now_ms;
    if options.get {
        // Redis answers the `GET` part first, and a key of another type stops the `SET` too.
        match db.get_string(key, now) {
            Ok(Some(old)) => reply::bulk(session.out, old),
            Ok(None) => reply::null(session.out, session.client.protocol),
            Err(WrongType) => {
                reply::error(session.out, WRONGTYPE);
                return;
            }
        }
    }
    if options.only_if_missing || options.only_if_present {
        let present = db.contains(key, now);
        if (options.only_if_missing && present) || (options.only_if_present && !present) {
            if !options.get {
                reply::null(session.out, session.client.protocol);
            }
            return;
        }
    }
    if options.keep_ttl {
        db.set_keep_deadline(key, value, now);
    } else {
        db.set(key, value, expires_at, now);
    }
    if !options.get {
        reply::ok(session.out);
    }
}

/// `SETEX key seconds value`.
pub(super) fn setex(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    set_with_expiry(db, session, args, ExpiryForm::Seconds, "setex");
}

/// `PSETEX key milliseconds value`.
pub(super) fn psetex(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    set_with_expiry(db, session, args, ExpiryForm::Millis, "psetex");
}

fn set_with_expiry(
    db: &mut Db,
    session: &mut Session<'_>,
    args: &[Arg<'_>],
    form: ExpiryForm,
    command: &str,
) {
    if let Some(expires_at) = deadline(session, form, &args[2], command) {
        db.set(&args[1], &args[3], Some(expires_at), session.now_ms);
        reply::ok(session.out);
    }
}

/// `SETNX key value`: 1 if it set the key, 0 if the key was there.
pub(super) fn setnx(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let now = session.now_ms;
    if db.contains(&args[1], now) {
        reply::integer(session.out, 0);
    } else {
        db.set(&args[1], &args[2], None, now);
        reply::integer(session.out, 1);
    }
}

/// `GET key`.
pub(super) fn get(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    match db.get_string(&args[1], session.now_ms) {
        Ok(Some(value)) => reply::bulk(session.out, value),
        Ok(None) => reply::null(session.out, session.client.protocol),
        Err(WrongType) => reply::error(session.out, WRONGTYPE),
    }
}

/// `APPEND key suffix`: the new length. A missing key starts empty.
pub(super) fn append(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let (key, suffix) = (&args[1], &args[2]);
    let len = match db.string_mut(key, session.now_ms) {
        Err(WrongType) => {
            reply::error(session.out, WRONGTYPE);
            return;
        }
        Ok(Some(value)) => {
            if value.len() + suffix.len() > max_bulk_len() {
                reply::error(
                    session.out,
                    "ERR string exceeds maximum allowed size (proto-max-bulk-len)",
                );
                return;
            }
            let len = value.edit(|value| {
                value.extend_from_slice(suffix);
                value.len()
            });
            db.touch(key);
            len
        }
        Ok(None) => {
            db.set(key, suffix, None, session.now_ms);
            suffix.len()
        }
    };
    reply::integer(session.out, i64::try_from(len).unwrap_or(i64::MAX));
}

/// `STRLEN key`: 0 for a missing key.
pub(super) fn strlen(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    match db.get_string(&args[1], session.now_ms) {
        Ok(value) => {
            let len = value.map_or(0, <[u8]>::len);
            reply::integer(session.out, i64::try_from(len).unwrap_or(i64::MAX));
        }
        Err(WrongType) => reply::error(session.out, WRONGTYPE),
    }
}

/// `INCR key`.
pub(super) fn incr(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    add(db, session, &args[1], 1);
}

/// `DECR key`.
pub(super) fn decr(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    add(db, session, &args[1], -1);
}

/// `INCRBY key increment`.
pub(super) fn incrby(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    match resp::parse_i64(&args[2]) {
        Some(increment) => add(db, session, &args[1], increment),
        None => reply::error(session.out, NOT_AN_INTEGER),
    }
}

/// `DECRBY key decrement`.
pub(super) fn decrby(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    match resp::parse_i64(&args[2]).map(i64::checked_neg) {
        Some(Some(increment)) => add(db, session, &args[1], increment),
        // `DECRBY k -9223372036854775808` cannot be turned into an increment.
        Some(None) => reply::error(session.out, "ERR decrement would overflow"),
        None => reply::error(session.out, NOT_AN_INTEGER),
    }
}

/// Adds `increment` to the integer under `key` (0 if missing) and replies the result. The key
/// keeps its deadline.
fn add(db: &mut Db, session: &mut Session<'_>, key: &[u8], increment: i64) {
    let current = match db.string_mut(key, session.now_ms) {
        Ok(Some(value)) => match resp::parse_i64(value) {
            Some(current) => Some((current, value)),
            None => {
                reply::error(session.out, NOT_AN_INTEGER);
                return;
            }
        },
        Ok(None) => None,
        Err(WrongType) => {
            reply::error(session.out, WRONGTYPE);
            return;
        }
    };
    let Some(next) = current.as_ref().map_or(0, |(n, _)| *n).checked_add(increment) else {
        reply::error(session.out, "ERR increment or decrement would overflow");
        return;
    };
    match current {
        // Rewritten in place: a counter is short enough to stay in the entry.
        Some((_, value)) => {
            value.edit(|value| {
                value.clear();
                resp::write_i64(value, next);
            });
            db.touch(key);
        }
        None => {
            let mut digits = Vec::with_capacity(20);
            resp::write_i64(&mut digits, next);
            db.set(key, &digits, None, session.now_ms);
        }
    }
    reply::integer(session.out, next);
}

/// `MGET key...`: a null for each missing key, and for each key that holds no string (redis
/// does not fail the whole reply for one of them).
pub(super) fn mget(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let keys = &args[1..];
    reply::array(session.out, keys.len());
    for key in keys {
        match db.get_string(key, session.now_ms) {
            Ok(Some(value)) => reply::bulk(session.out, value),
            Ok(None) | Err(WrongType) => reply::null(session.out, session.client.protocol),
        }
    }
}

/// `MSET key value [key value ...]`: each key loses its deadline, as with `SET`.
pub(super) fn mset(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    if args.len().is_multiple_of(2) {
        wrong_arity(session.out, "mset");
        return;
    }
    for pair in args[1..].chunks_exact(2) {
        db.set(&pair[0], &pair[1], None, session.now_ms);
    }
    reply::ok(session.out);
}

/// `MSETNX key value [key value ...]`: sets every key, or none if any of them exists; 1 or 0.
pub(super) fn msetnx(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    if args.len().is_multiple_of(2) {
        wrong_arity(session.out, "msetnx");
        return;
    }
    let now = session.now_ms;
    if args[1..].iter().step_by(2).any(|key| db.contains(key, now)) {
        reply::integer(session.out, 0);
        return;
    }
    for pair in args[1..].chunks_exact(2) {
        db.set(&pair[0], &pair[1], None, now);
    }
    reply::integer(session.out, 1);
}

/// `GETSET key value`: `SET key value GET`, the old value or a null; the deadline is dropped.
pub(super) fn getset(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let now = session.now_ms;
    match db.get_string(&args[1], now) {
        Ok(Some(old)) => reply::bulk(session.out, old),
        Ok(None) => reply::null(session.out, session.client.protocol),
        Err(WrongType) => {
            reply::error(session.out, WRONGTYPE);
            return;
        }
    }
    db.set(&args[1], &args[2], None, now);
}

/// `GETDEL key`: the value, or a null; the key is deleted.
pub(super) fn getdel(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let now = session.now_ms;
    match db.get_string(&args[1], now) {
        Ok(Some(value)) => {
            reply::bulk(session.out, value);
            db.remove(&args[1], now);
        }
        Ok(None) => reply::null(session.out, session.client.protocol),
        Err(WrongType) => reply::error(session.out, WRONGTYPE),
    }
}

/// `GETEX key [EX s|PX ms|EXAT ts|PXAT ms-ts|PERSIST]`: the value, or a null; and the key's
/// deadline set, or removed (`PERSIST`). A deadline already past deletes the key.
pub(super) fn getex(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    // Redis's rules: one expiry form or `PERSIST`, the same form twice allowed (the last wins).
    let mut expiry: Option<(ExpiryForm, &[u8])> = None;
    let mut persist = false;
    let mut rest = args[2..].iter();
    while let Some(option) = rest.next() {
        let form = [
            ("ex", ExpiryForm::Seconds),
            ("px", ExpiryForm::Millis),
            ("exat", ExpiryForm::UnixSeconds),
            ("pxat", ExpiryForm::UnixMillis),
        ]
        .into_iter()
        .find_map(|(word, form)| is(option, word).then_some(form));
        let next = match form {
            Some(form) if !persist && expiry.is_none_or(|(other, _)| other == form) => {
                rest.next().map(|amount| expiry = Some((form, amount)))
            }
            None if is(option, "persist") && expiry.is_none() => {
                persist = true;
                Some(())
            }
            _ => None,
        };
        if next.is_none() {
            reply::error(session.out, SYNTAX_ERROR);
            return;
        }
    }
    let now = session.now_ms;
    match db.get_string(&args[1], now) {
        Ok(Some(_)) => {}
        Ok(None) => {
            reply::null(session.out, session.client.protocol);
            return;
        }
        Err(WrongType) => {
            reply::error(session.out, WRONGTYPE);
            return;
        }
    }
    let deadline = match expiry {
        Some((form, amount)) => match deadline(session, form, amount, "getex") {
            Some(deadline) => Some(deadline),
            None => return,
        },
        None => None,
    };
    if let Ok(Some(value)) = db.get_string(&args[1], now) {
        reply::bulk(session.out, value);
    }
    if deadline.is_some() {
        db.set_deadline(&args[1], deadline, now);
    } else if persist && db.get(&args[1], now).is_some_and(|entry| entry.expires_at_ms().is_some())
    {
        db.set_deadline(&args[1], None, now);
    }
}

/// `SETRANGE key offset value`: writes `value` at byte `offset`, padding with zero bytes; the
/// new length. An empty `value` changes nothing (and creates no key).
pub(super) fn setrange(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let (key, value): (&[u8], &[u8]) = (&args[1], &args[3]);
    let Some(offset) = resp::parse_i64(&args[2]) else {
        reply::error(session.out, NOT_AN_INTEGER);
        return;
    };
    let Ok(offset) = usize::try_from(offset) else {
        reply::error(session.out, "ERR offset is out of range");
        return;
    };
    let too_long = || offset.checked_add(value.len()).is_none_or(|end| end > max_bulk_len());
    let now = session.now_ms;
    let len = match db.string_mut(key, now) {
        Err(WrongType) => {
            reply::error(session.out, WRONGTYPE);
            return;
        }
        Ok(Some(old)) if value.is_empty() => old.len(),
        Ok(None) if value.is_empty() => 0,
        _ if too_long() => {
            reply::error(
                session.out,
                "ERR string exceeds maximum allowed size (proto-max-bulk-len)",
            );
            return;
        }
        Ok(Some(old)) => {
            let end = offset + value.len();
            let len = old.edit(|old| {
                if old.len() < end {
                    old.resize(end, 0);
                }
                old[offset..end].copy_from_slice(value);
                old.len()
            });
            db.touch(key);
            len
        }
        Ok(None) => {
            let mut new = vec![0; offset];
            new.extend_from_slice(value);
            db.set(key, &new, None, now);
            new.len()
        }
    };
    reply::integer(session.out, i64::try_from(len).unwrap_or(i64::MAX));
}

/// `GETRANGE key start end` (and `SUBSTR`): the bytes from `start` to `end`, both included,
/// negative offsets counting from the end; empty for a missing key.
pub(super) fn getrange(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let (Some(start), Some(end)) = (resp::parse_i64(&args[2]), resp::parse_i64(&args[3])) else {
        reply::error(session.out, NOT_AN_INTEGER);
        return;
    };
    let value = match db.get_string(&args[1], session.now_ms) {
        Ok(value) => value.unwrap_or_default(),
        Err(WrongType) => {
            reply::error(session.out, WRONGTYPE);
            return;
        }
    };
    // Redis's arithmetic, step by step (t_string.c, getrangeCommand).
    let len = i64::try_from(value.len()).unwrap_or(i64::MAX);
    if start < 0 && end < 0 && start > end {
        reply::bulk(session.out, b"");
        return;
    }
    let start = if start < 0 { len + start } else { start }.max(0);
    let end = if end < 0 { len + end } else { end }.max(0).min(len - 1);
    if start > end || len == 0 {
        reply::bulk(session.out, b"");
        return;
    }
    // 0 <= start <= end < len here.
    let (start, end) = (start as usize, end as usize);
    reply::bulk(session.out, &value[start..=end]);
}

/// `INCRBYFLOAT key increment`: the new value, as text. The sum is computed in 64-bit floating
/// point and written as the shortest text that reads back as it (redis computes in `long
/// double` and writes 17 decimals, trimmed: the two differ in the last digits of sums that
/// are not exact in binary, such as `0.1 + 0.2`). The key keeps its deadline.
pub(super) fn incrbyfloat(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    const NOT_A_FLOAT: &str = "ERR value is not a valid float";
    let key = &args[1];
    let Some(increment) = parse_float(&args[2]) else {
        reply::error(session.out, NOT_A_FLOAT);
        return;
    };
    let now = session.now_ms;
    let current = match db.get_string(key, now) {
        Ok(Some(value)) => match parse_float(value) {
            Some(current) => current,
            None => {
                reply::error(session.out, NOT_A_FLOAT);
                return;
            }
        },
        Ok(None) => 0.0,
        Err(WrongType) => {
            reply::error(session.out, WRONGTYPE);
            return;
        }
    };
    let sum = current + increment;
    if !sum.is_finite() {
        reply::error(session.out, "ERR increment would produce NaN or Infinity");
        return;
    }
    let mut text = Vec::with_capacity(24);
    write_float(&mut text, sum);
    db.set_keep_deadline(key, &text, now);
    reply::bulk(session.out, &text);
}

/// A floating-point number as redis reads one (`strtod`): decimal or exponent notation, `inf`,
/// with no space around it; never NaN.
pub(super) fn parse_float(bytes: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.starts_with(|c: char| c.is_ascii_whitespace()) {
        return None;
    }
    text.parse::<f64>().ok().filter(|value| !value.is_nan())
}

/// `value` as `INCRBYFLOAT` stores it: positional notation, no exponent, no trailing zeros.
fn write_float(out: &mut Vec<u8>, value: f64) {
    use std::io::Write as _;
    if value == 0.0 {
        out.push(b'0');
    } else {
        let _ = write!(out, "{value}");
    }
}

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
use resp::{Arg, MAX_BULK_LEN, reply};

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
            Ok(None) => reply::null_bulk(session.out),
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
                reply::null_bulk(session.out);
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
        Ok(None) => reply::null_bulk(session.out),
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
            if value.len() + suffix.len() > MAX_BULK_LEN {
                reply::error(
                    session.out,
                    "ERR string exceeds maximum allowed size (proto-max-bulk-len)",
                );
                return;
            }
            value.extend_from_slice(suffix);
            value.len()
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
    // The wrong release the canary tests must catch (feature `fixture-incr-off-by-one`):
    // INCR, INCRBY, DECR and DECRBY all add one too many.
    let increment = if cfg!(feature = "fixture-incr-off-by-one") {
        increment.saturating_add(1)
    } else {
        increment
    };
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
        // Rewritten in place: a counter never allocates after its first increment.
        Some((_, value)) => {
            value.clear();
            resp::write_i64(value, next);
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
            Ok(None) | Err(WrongType) => reply::null_bulk(session.out),
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

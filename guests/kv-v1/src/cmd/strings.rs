//! String commands: values as bytes (`SET`, `GET`, `APPEND`, `STRLEN`, `MGET`, `MSET`) and as
//! 64-bit integers (`INCR`, `DECR`, `INCRBY`, `DECRBY`).
//!
//! An integer is stored as its decimal text, as redis shows it to clients; `INCR` accepts only
//! the text redis would have written itself (see `resp::parse_i64`).

use super::{NOT_AN_INTEGER, SYNTAX_ERROR, Session, wrong_arity};
use crate::db::Db;
use resp::{Arg, MAX_BULK_LEN, reply};

/// `SET key value`. Options (`EX`, `NX`, ...) arrive in release 2.
pub(super) fn set(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    if args.len() != 3 {
        reply::error(session.out, SYNTAX_ERROR);
        return;
    }
    db.set(&args[1], &args[2]);
    reply::ok(session.out);
}

/// `GET key`.
pub(super) fn get(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    match db.get(&args[1]) {
        Some(value) => reply::bulk(session.out, value),
        None => reply::null_bulk(session.out),
    }
}

/// `APPEND key suffix`: the new length. A missing key starts empty.
pub(super) fn append(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let (key, suffix) = (&args[1], &args[2]);
    let len = match db.get_mut(key) {
        Some(value) => {
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
        None => {
            db.set(key, suffix);
            suffix.len()
        }
    };
    reply::integer(session.out, i64::try_from(len).unwrap_or(i64::MAX));
}

/// `STRLEN key`: 0 for a missing key.
pub(super) fn strlen(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let len = db.get(&args[1]).map_or(0, <[u8]>::len);
    reply::integer(session.out, i64::try_from(len).unwrap_or(i64::MAX));
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

/// Adds `increment` to the integer under `key` (0 if missing) and replies the result.
fn add(db: &mut Db, session: &mut Session<'_>, key: &[u8], increment: i64) {
    let current = match db.get_mut(key) {
        Some(value) => match resp::parse_i64(value) {
            Some(current) => Some((current, value)),
            None => {
                reply::error(session.out, NOT_AN_INTEGER);
                return;
            }
        },
        None => None,
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
            db.set(key, &digits);
        }
    }
    reply::integer(session.out, next);
}

/// `MGET key...`: a null for each missing key.
pub(super) fn mget(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let keys = &args[1..];
    reply::array(session.out, keys.len());
    for key in keys {
        match db.get(key) {
            Some(value) => reply::bulk(session.out, value),
            None => reply::null_bulk(session.out),
        }
    }
}

/// `MSET key value [key value ...]`.
pub(super) fn mset(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    if args.len().is_multiple_of(2) {
        wrong_arity(session.out, "mset");
        return;
    }
    for pair in args[1..].chunks_exact(2) {
        db.set(&pair[0], &pair[1]);
    }
    reply::ok(session.out);
}

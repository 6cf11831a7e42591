//! Keyspace commands: keys as a whole rather than their values (`DEL`, `EXISTS`, `TYPE`, `KEYS`,
//! `RENAME`, `RANDOMKEY`, `DBSIZE`, `FLUSHALL`), whatever their type. An expired key is not
//! there for any of them. `SCAN` is in `scan.rs`.

use super::{SYNTAX_ERROR, Session, is};
use crate::db::Db;
use resp::{Arg, glob_match, reply};

/// `DEL key...` (and `UNLINK`): how many of the keys existed.
pub(super) fn del(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let removed = args[1..].iter().filter(|key| db.remove(key, session.now_ms)).count();
    reply::integer(session.out, i64::try_from(removed).unwrap_or(i64::MAX));
}

/// `EXISTS key...`: how many of the keys exist, a key named twice counting twice.
pub(super) fn exists(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let found = args[1..].iter().filter(|key| db.contains(key, session.now_ms)).count();
    reply::integer(session.out, i64::try_from(found).unwrap_or(i64::MAX));
}

/// `TYPE key`: `string`, `list`, `hash`, `set`, `zset`, or `none` for a missing key.
pub(super) fn type_(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let kind = db.get(&args[1], session.now_ms).map_or("none", |entry| entry.value.kind());
    reply::simple(session.out, kind);
}

/// `KEYS pattern`: every key matching the glob, in the table's (deterministic) order.
pub(super) fn keys(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let pattern: &[u8] = &args[1];
    // As in redis, `*` is every key without matching, the empty key included.
    let all = pattern == b"*";
    let keys: Vec<&[u8]> =
        db.keys(session.now_ms).filter(|key| all || glob_match(pattern, key)).collect();
    reply::array(session.out, keys.len());
    for key in keys {
        reply::bulk(session.out, key);
    }
}

/// `DBSIZE`.
pub(super) fn dbsize(db: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    reply::integer(session.out, i64::try_from(db.len(session.now_ms)).unwrap_or(i64::MAX));
}

/// `FLUSHALL [ASYNC|SYNC]` and `FLUSHDB [ASYNC|SYNC]`: one database, so the same thing. Either
/// way the keys are gone before the reply.
pub(super) fn flush(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    match args {
        [_] => {}
        [_, mode] if is(mode, "async") || is(mode, "sync") => {}
        _ => {
            reply::error(session.out, SYNTAX_ERROR);
            return;
        }
    }
    db.clear();
    reply::ok(session.out);
}

/// `RENAME key newkey`: moves the value and its deadline, replacing what `newkey` held.
pub(super) fn rename(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    if db.rename(&args[1], &args[2], session.now_ms) {
        reply::ok(session.out);
    } else {
        reply::error(session.out, NO_SUCH_KEY);
    }
}

/// `RENAMENX key newkey`: `RENAME` if `newkey` does not exist; 1, or 0 if it does.
pub(super) fn renamenx(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let now = session.now_ms;
    if !db.contains(&args[1], now) {
        reply::error(session.out, NO_SUCH_KEY);
    } else if db.contains(&args[2], now) {
        reply::integer(session.out, 0);
    } else {
        db.rename(&args[1], &args[2], now);
        reply::integer(session.out, 1);
    }
}

const NO_SUCH_KEY: &str = "ERR no such key";

/// `RANDOMKEY`: a key picked at random, or a null in an empty keyspace.
pub(super) fn randomkey(db: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    let rng = &mut session.rng;
    match db.random_key(session.now_ms, |n| rng.below(n)) {
        Some(key) => reply::bulk(session.out, key),
        None => reply::null(session.out, session.client.protocol),
    }
}

//! Iteration: `SCAN` over the keyspace, `HSCAN`, `SSCAN` and `ZSCAN` over one value, with
//! `MATCH`, `COUNT` and (for `SCAN`) `TYPE`.
//!
//! Redis's guarantee holds: an element present from the first call of a walk to the last is
//! returned (here exactly once), whatever is added or removed meanwhile; elements that come or
//! go during the walk may or may not be. The cursor is a position in an order that depends on
//! nothing but the key (`crate::scan`), so a walk begun under one release continues under the
//! next: a cursor stays valid across an upgrade. `MATCH` and `TYPE` filter each batch after it
//! is taken, as in redis, so a call may return nothing with a cursor that is not 0 yet.

use super::{NOT_AN_INTEGER, SYNTAX_ERROR, Session, WRONGTYPE, is};
use crate::db::{Db, WrongType};
use crate::scan::walk_collection;
use resp::{Arg, glob_match, reply};

/// `SCAN`'s default `COUNT`, as in redis.
const DEFAULT_COUNT: usize = 10;

/// What follows the cursor.
struct Options<'a> {
    count: usize,
    /// `None` for no pattern, or `*`.
    pattern: Option<&'a [u8]>,
    /// `TYPE`'s argument, as given.
    kind: Option<&'a [u8]>,
}

impl<'a> Options<'a> {
    /// Reads the options in `args`, or replies redis's error. `TYPE` only for `SCAN`.
    fn parse(out: &mut Vec<u8>, args: &'a [Arg<'a>], with_type: bool) -> Option<Self> {
        let mut options = Self { count: DEFAULT_COUNT, pattern: None, kind: None };
        let mut rest = args;
        while let [option, value, tail @ ..] = rest {
            if is(option, "count") {
                let Some(count) = resp::parse_i64(value) else {
                    reply::error(out, NOT_AN_INTEGER);
                    return None;
                };
                if count < 1 {
                    reply::error(out, SYNTAX_ERROR);
                    return None;
                }
                options.count = usize::try_from(count).unwrap_or(usize::MAX);
            } else if is(option, "match") {
                options.pattern = (value.as_ref() != b"*").then_some(value.as_ref());
            } else if with_type && is(option, "type") {
                options.kind = Some(value.as_ref());
            } else {
                break;
            }
            rest = tail;
        }
        if !rest.is_empty() {
            reply::error(out, SYNTAX_ERROR);
            return None;
        }
        Some(options)
    }

    fn matches(&self, item: &[u8]) -> bool {
        self.pattern.is_none_or(|pattern| glob_match(pattern, item))
    }
}

/// The cursor as redis reads it (`strtoul`): decimal digits after an optional sign, 64 bits, a
/// `-` wrapping around; else `-ERR invalid cursor`.
fn cursor(out: &mut Vec<u8>, arg: &[u8]) -> Option<u64> {
    let (negative, digits) = match arg.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, arg),
    };
    let parsed = std::str::from_utf8(digits)
        .ok()
        .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|text| text.parse::<u64>().ok())
        .map(|n| if negative { n.wrapping_neg() } else { n });
    if parsed.is_none() {
        reply::error(out, "ERR invalid cursor");
    }
    parsed
}

/// `[cursor, [item...]]`.
fn reply_batch(out: &mut Vec<u8>, next: u64, len: usize) {
    reply::array(out, 2);
    reply::bulk(out, next.to_string().as_bytes());
    reply::array(out, len);
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`.
pub(super) fn scan(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let Some(cursor) = cursor(session.out, &args[1]) else {
        return;
    };
    let Some(options) = Options::parse(session.out, &args[2..], true) else {
        return;
    };
    let now = session.now_ms;
    let (mut keys, next) = db.scan(cursor, options.count, now);
    keys.retain(|key| options.matches(key));
    if let Some(kind) = options.kind {
        // An unknown type name matches nothing, as in redis 7.2 (which plans an error for 8.0).
        keys.retain(|key| {
            db.get(key, now)
                .is_some_and(|entry| kind.eq_ignore_ascii_case(entry.value.kind().as_bytes()))
        });
    }
    reply_batch(session.out, next, keys.len());
    for key in &keys {
        reply::bulk(session.out, key);
    }
}

/// `HSCAN key cursor [MATCH pattern] [COUNT count]`: field, value, field, value...
pub(super) fn hscan(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let Some(cursor) = cursor(session.out, &args[2]) else {
        return;
    };
    let hash = match db.hash(&args[1], session.now_ms) {
        Ok(hash) => hash,
        Err(WrongType) => return reply::error(session.out, WRONGTYPE),
    };
    let Some(hash) = hash else {
        return reply_batch(session.out, 0, 0);
    };
    // As in redis, the key is looked up before the options are read.
    let Some(options) = Options::parse(session.out, &args[3..], false) else {
        return;
    };
    let (fields, next) =
        walk_collection(hash.keys().map(Vec::as_slice), hash.len(), cursor, options.count);
    let fields: Vec<&[u8]> = fields.into_iter().filter(|field| options.matches(field)).collect();
    reply_batch(session.out, next, 2 * fields.len());
    for field in fields {
        reply::bulk(session.out, field);
        reply::bulk(session.out, hash.get(field).map_or(&[][..], Vec::as_slice));
    }
}

/// `SSCAN key cursor [MATCH pattern] [COUNT count]`.
pub(super) fn sscan(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let Some(cursor) = cursor(session.out, &args[2]) else {
        return;
    };
    let set = match db.set_members(&args[1], session.now_ms) {
        Ok(set) => set,
        Err(WrongType) => return reply::error(session.out, WRONGTYPE),
    };
    let Some(set) = set else {
        return reply_batch(session.out, 0, 0);
    };
    // As in redis, the key is looked up before the options are read.
    let Some(options) = Options::parse(session.out, &args[3..], false) else {
        return;
    };
    let (members, next) = walk_collection(set.iter(), set.len(), cursor, options.count);
    let members: Vec<&[u8]> = members.into_iter().filter(|m| options.matches(m)).collect();
    reply_batch(session.out, next, members.len());
    for member in members {
        reply::bulk(session.out, member);
    }
}

/// `ZSCAN key cursor [MATCH pattern] [COUNT count]`: member, score, member, score... (scores as
/// text, in both protocols, as redis sends them).
pub(super) fn zscan(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let Some(cursor) = cursor(session.out, &args[2]) else {
        return;
    };
    let zset = match db.zset(&args[1], session.now_ms) {
        Ok(zset) => zset,
        Err(WrongType) => return reply::error(session.out, WRONGTYPE),
    };
    let Some(zset) = zset else {
        return reply_batch(session.out, 0, 0);
    };
    // As in redis, the key is looked up before the options are read.
    let Some(options) = Options::parse(session.out, &args[3..], false) else {
        return;
    };
    let (members, next) =
        walk_collection(zset.iter().map(|(member, _)| member), zset.len(), cursor, options.count);
    let members: Vec<&[u8]> = members.into_iter().filter(|m| options.matches(m)).collect();
    reply_batch(session.out, next, 2 * members.len());
    let mut text = Vec::with_capacity(24);
    for member in members {
        reply::bulk(session.out, member);
        text.clear();
        reply::write_f64(&mut text, zset.score(member).unwrap_or(0.0));
        reply::bulk(session.out, &text);
    }
}

//! Set commands: `SADD`, `SREM`, `SMEMBERS`, `SISMEMBER`, `SMISMEMBER`, `SCARD`, `SPOP`,
//! `SRANDMEMBER`.
//!
//! Redis's rules throughout: `SADD` creates a missing key, the change that removes the last
//! member deletes the key (`Db::update_set`), a read of a missing key reads an empty set, and a
//! key of another type answers `WRONGTYPE`. Random picks come from the event's generator
//! (`crate::random`), so that a replay after a trap picks the same members.

use super::{NOT_AN_INTEGER, SYNTAX_ERROR, Session, WRONGTYPE, count};
use crate::db::{Db, Set, WrongType};
use resp::{Arg, reply};
use std::collections::BTreeSet;

/// `SADD key member...`: how many members are new.
pub(super) fn sadd(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let members = &args[2..];
    match db.update_set(&args[1], session.now_ms, true, |set| {
        members.iter().filter(|member| set.insert(member)).count()
    }) {
        Ok(added) => count(session.out, added.unwrap_or(0)),
        Err(WrongType) => reply::error(session.out, WRONGTYPE),
    }
}

/// `SREM key member...`: how many of the members were there.
pub(super) fn srem(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let members = &args[2..];
    match db.update_set(&args[1], session.now_ms, false, |set| {
        members.iter().filter(|member| set.remove(member)).count()
    }) {
        Ok(removed) => count(session.out, removed.unwrap_or(0)),
        Err(WrongType) => reply::error(session.out, WRONGTYPE),
    }
}

/// The set under `key` (`None`: missing), or `None` after replying `WRONGTYPE`.
fn read<'d>(db: &'d mut Db, session: &mut Session<'_>, key: &[u8]) -> Option<Option<&'d Set>> {
    match db.set_members(key, session.now_ms) {
        Ok(set) => Some(set),
        Err(WrongType) => {
            reply::error(session.out, WRONGTYPE);
            None
        }
    }
}

/// `SMEMBERS key`: every member, a RESP3 set.
pub(super) fn smembers(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let Some(set) = read(db, session, &args[1]) else { return };
    let protocol = session.client.protocol;
    reply::set(session.out, protocol, set.map_or(0, Set::len));
    for member in set.into_iter().flat_map(Set::iter) {
        reply::bulk(session.out, member);
    }
}

/// `SISMEMBER key member`: 1 or 0.
pub(super) fn sismember(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let Some(set) = read(db, session, &args[1]) else { return };
    let found = set.is_some_and(|set| set.contains(&args[2]));
    reply::integer(session.out, i64::from(found));
}

/// `SMISMEMBER key member...`: 1 or 0 for each.
pub(super) fn smismember(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let Some(set) = read(db, session, &args[1]) else { return };
    reply::array(session.out, args.len() - 2);
    for member in &args[2..] {
        let found = set.is_some_and(|set| set.contains(member));
        reply::integer(session.out, i64::from(found));
    }
}

/// `SCARD key`: how many members; 0 for a missing key.
pub(super) fn scard(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let Some(set) = read(db, session, &args[1]) else { return };
    count(session.out, set.map_or(0, Set::len));
}

/// `SPOP key [count]`: removes and returns a random member (a null for a missing key), or up
/// to `count` of them as a RESP3 set.
pub(super) fn spop(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let protocol = session.client.protocol;
    let many = match args {
        [_, _] => None,
        [_, _, n] => match resp::parse_i64(n).and_then(|n| usize::try_from(n).ok()) {
            Some(n) => Some(n),
            None if resp::parse_i64(n).is_some_and(|n| n > 0) => Some(usize::MAX),
            None => {
                reply::error(session.out, "ERR value is out of range, must be positive");
                return;
            }
        },
        _ => return reply::error(session.out, SYNTAX_ERROR),
    };
    let rng = &mut session.rng;
    let out = &mut *session.out;
    let popped = db.update_set(&args[1], session.now_ms, false, |set| match many {
        None => {
            let index = rng.below(set.len());
            match set.take(index) {
                Some(member) => reply::bulk(out, &member),
                None => reply::null(out, protocol),
            }
        }
        Some(many) => {
            let many = many.min(set.len());
            reply::set(out, protocol, many);
            for _ in 0..many {
                let index = rng.below(set.len());
                if let Some(member) = set.take(index) {
                    reply::bulk(out, &member);
                }
            }
        }
    });
    match popped {
        Ok(Some(())) => {}
        Ok(None) if many.is_some() => reply::set(session.out, protocol, 0),
        Ok(None) => reply::null(session.out, protocol),
        Err(WrongType) => reply::error(session.out, WRONGTYPE),
    }
}

/// `SRANDMEMBER key [count]`: a random member (a null for a missing key); with a count, up to
/// `count` distinct members, or, for a negative count, `-count` members that may repeat.
pub(super) fn srandmember(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let protocol = session.client.protocol;
    let many = match args {
        [_, _] => None,
        [_, _, n] => match resp::parse_i64(n) {
            Some(i64::MIN) => {
                return reply::error(
                    session.out,
                    "ERR value is out of range, value must between -9223372036854775807 and \
                     9223372036854775807",
                );
            }
            Some(n) => Some(n),
            None => return reply::error(session.out, NOT_AN_INTEGER),
        },
        _ => return reply::error(session.out, SYNTAX_ERROR),
    };
    let Some(set) = read(db, session, &args[1]) else { return };
    let rng = &mut session.rng;
    let out = &mut *session.out;
    let (Some(set), Some(many)) = (set, many) else {
        match set.map(|set| set.get(rng.below(set.len()))) {
            _ if many.is_some() => reply::array(out, 0),
            Some(Some(member)) => reply::bulk(out, member),
            _ => reply::null(out, protocol),
        }
        return;
    };
    let len = set.len();
    if many < 0 {
        // With repeats. A count no reply could hold is refused rather than tried.
        let Ok(many) = usize::try_from(many.unsigned_abs()) else {
            return reply::error(out, "ERR value is out of range");
        };
        reply::array(out, many);
        for _ in 0..many {
            if let Some(member) = set.get(rng.below(len)) {
                reply::bulk(out, member);
            }
        }
        return;
    }
    let many = usize::try_from(many).unwrap_or(usize::MAX).min(len);
    reply::array(out, many);
    if many == len {
        for member in set.iter() {
            reply::bulk(out, member);
        }
        return;
    }
    // Distinct positions: drawn until there are enough (cheap while few are wanted), else a
    // partial shuffle of all of them.
    if many * 2 <= len {
        let mut picked = BTreeSet::new();
        while picked.len() < many {
            let index = rng.below(len);
            if picked.insert(index)
                && let Some(member) = set.get(index)
            {
                reply::bulk(out, member);
            }
        }
    } else {
        let mut indexes: Vec<usize> = (0..len).collect();
        for i in 0..many {
            let j = i + rng.below(len - i);
            indexes.swap(i, j);
            if let Some(member) = set.get(indexes[i]) {
                reply::bulk(out, member);
            }
        }
    }
}

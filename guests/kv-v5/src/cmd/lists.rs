//! List commands: `LPUSH`, `RPUSH`, `LPOP`, `RPOP` (with redis 6.2's optional count), `LRANGE`,
//! `LLEN`, `LPOS`.
//!
//! Redis's rules throughout: a push creates a missing key, a pop that takes the last element
//! deletes the key (`Db::update_list` does that), a read of a missing key reads an empty list,
//! and a key of another type answers `WRONGTYPE`. A list keeps its deadline while it changes.

use super::{NOT_AN_INTEGER, SYNTAX_ERROR, Session, WRONGTYPE, count, is, wrong_arity};
use crate::db::{Db, List, WrongType};
use resp::{Arg, reply};

/// Which end of a list a command works on.
#[derive(Debug, Clone, Copy)]
enum End {
    Head,
    Tail,
}

/// `LPUSH key element...`: pushes each element onto the head in turn (so the last one ends up
/// first); the new length.
pub(super) fn lpush(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    push(db, session, args, End::Head);
}

/// `RPUSH key element...`: appends each element; the new length.
pub(super) fn rpush(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    push(db, session, args, End::Tail);
}

fn push(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>], end: End) {
    let elements = &args[2..];
    let pushed = db.update_list(&args[1], session.now_ms, true, |list| {
        list.reserve(elements.len());
        for element in elements {
            match end {
                End::Head => list.push_front(element.to_vec()),
                End::Tail => list.push_back(element.to_vec()),
            }
        }
        list.len()
    });
    match pushed {
        Ok(len) => {
            // `create` is set, so there always is a list; 0 would only ever be a lie.
            let len = len.unwrap_or(0);
            reply::integer(session.out, i64::try_from(len).unwrap_or(i64::MAX));
        }
        Err(WrongType) => reply::error(session.out, WRONGTYPE),
    }
}

/// `LPOP key [count]`: without a count, the first element or a null; with one, an array of up to
/// `count` elements, or a null array for a missing key.
pub(super) fn lpop(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    pop(db, session, args, End::Head, "lpop");
}

/// `RPOP key [count]`: as `LPOP`, from the tail, the last element first.
pub(super) fn rpop(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    pop(db, session, args, End::Tail, "rpop");
}

fn pop(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>], end: End, command: &str) {
    let count = match args {
        [_, _] => None,
        [_, _, count] => match resp::parse_i64(count).and_then(|n| u64::try_from(n).ok()) {
            // A count beyond what memory can hold pops the whole list, like any count past its
            // length (on wasm32 `usize` is narrower than redis's `long`).
            Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            None => {
                // Redis's text for a count that is negative or not a number at all.
                reply::error(session.out, "ERR value is out of range, must be positive");
                return;
            }
        },
        _ => {
            wrong_arity(session.out, command);
            return;
        }
    };
    let protocol = session.client.protocol;
    let out = &mut *session.out;
    let popped = db.update_list(&args[1], session.now_ms, false, |list| {
        let take_one = |list: &mut List| match end {
            End::Head => list.pop_front(),
            End::Tail => list.pop_back(),
        };
        match count {
            None => match take_one(list) {
                Some(element) => reply::bulk(out, &element),
                // Never stored: an empty list is deleted. Answered as redis answers no list.
                None => reply::null(out, protocol),
            },
            Some(count) => {
                let count = count.min(list.len());
                reply::array(out, count);
                for _ in 0..count {
                    if let Some(element) = take_one(list) {
                        reply::bulk(out, &element);
                    }
                }
            }
        }
    });
    match popped {
        Ok(Some(())) => {}
        Ok(None) if count.is_some() => reply::null_list(session.out, session.client.protocol),
        Ok(None) => reply::null(session.out, session.client.protocol),
        Err(WrongType) => reply::error(session.out, WRONGTYPE),
    }
}

/// `LRANGE key start stop`: the elements from index `start` to `stop`, both included; negative
/// indexes count from the tail (-1 is the last element), and out-of-range ones are clamped.
pub(super) fn lrange(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    // Redis checks the indexes before it looks at the key.
    let (Some(start), Some(stop)) = (resp::parse_i64(&args[2]), resp::parse_i64(&args[3])) else {
        reply::error(session.out, NOT_AN_INTEGER);
        return;
    };
    let list = match db.list(&args[1], session.now_ms) {
        Ok(list) => list,
        Err(WrongType) => {
            reply::error(session.out, WRONGTYPE);
            return;
        }
    };
    let Some((list, range)) = list.and_then(|list| Some((list, range(list.len(), start, stop)?)))
    else {
        reply::array(session.out, 0);
        return;
    };
    reply::array(session.out, range.len());
    for element in list.range(range) {
        reply::bulk(session.out, element);
    }
}

/// The positions `start..=stop` select in a list of `len` elements, by redis's rules, as a
/// half-open range; `None` when they select nothing.
pub(super) fn range(len: usize, start: i64, stop: i64) -> Option<std::ops::Range<usize>> {
    let len = i64::try_from(len).ok()?;
    // `len` is not negative, so adding a negative index cannot overflow.
    let start = if start < 0 { (len + start).max(0) } else { start };
    let stop = if stop < 0 { len + stop } else { stop.min(len - 1) };
    if start > stop || start >= len {
        return None;
    }
    Some(usize::try_from(start).ok()?..usize::try_from(stop).ok()? + 1)
}

/// `LLEN key`: 0 for a missing key.
pub(super) fn llen(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    match db.list(&args[1], session.now_ms) {
        Ok(list) => {
            let len = list.map_or(0, List::len);
            reply::integer(session.out, i64::try_from(len).unwrap_or(i64::MAX));
        }
        Err(WrongType) => reply::error(session.out, WRONGTYPE),
    }
}

/// `LPOS key element [RANK rank] [COUNT num-matches] [MAXLEN len]`: the index of the
/// `rank`-th match (negative: counting matches from the tail), looking at no more than `len`
/// elements; with `COUNT`, the indexes of up to `num-matches` matches (0: all), an array.
pub(super) fn lpos(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let element: &[u8] = &args[2];
    let (mut rank, mut many, mut maxlen) = (1i64, None, 0usize);
    let mut i = 3;
    while i < args.len() {
        let (option, value) = (&args[i], args.get(i + 1));
        match value {
            Some(value) if is(option, "rank") => match resp::parse_i64(value) {
                Some(0) => {
                    return reply::error(
                        session.out,
                        "ERR RANK can't be zero: use 1 to start from the first match, 2 from the \
                         second ... or use negative to start from the end of the list",
                    );
                }
                Some(i64::MIN) => {
                    return reply::error(
                        session.out,
                        "ERR value is out of range, value must between -9223372036854775807 and \
                         9223372036854775807",
                    );
                }
                Some(n) => rank = n,
                None => return reply::error(session.out, NOT_AN_INTEGER),
            },
            Some(value) if is(option, "count") => match non_negative(value) {
                Some(n) => many = Some(n),
                None => return reply::error(session.out, "ERR COUNT can't be negative"),
            },
            Some(value) if is(option, "maxlen") => match non_negative(value) {
                Some(n) => maxlen = n,
                None => return reply::error(session.out, "ERR MAXLEN can't be negative"),
            },
            _ => return reply::error(session.out, SYNTAX_ERROR),
        }
        i += 2;
    }
    let list = match db.list(&args[1], session.now_ms) {
        Ok(list) => list,
        Err(WrongType) => return reply::error(session.out, WRONGTYPE),
    };
    let Some(list) = list else {
        return match many {
            Some(_) => reply::array(session.out, 0),
            None => reply::null(session.out, session.client.protocol),
        };
    };
    let len = list.len();
    let scanned = if maxlen == 0 { len } else { maxlen.min(len) };
    let skip = usize::try_from(rank.unsigned_abs() - 1).unwrap_or(usize::MAX);
    let matching = |(_, candidate): &(usize, &Vec<u8>)| candidate.as_slice() == element;
    let mut found: Box<dyn Iterator<Item = usize>> = if rank > 0 {
        Box::new(list.iter().enumerate().take(scanned).filter(matching).map(|(i, _)| i))
    } else {
        Box::new(list.iter().enumerate().rev().take(scanned).filter(matching).map(|(i, _)| i))
    };
    match many {
        None => match found.nth(skip) {
            Some(index) => count(session.out, index),
            None => reply::null(session.out, session.client.protocol),
        },
        Some(many) => {
            let take = if many == 0 { usize::MAX } else { many };
            let indexes: Vec<usize> = found.skip(skip).take(take).collect();
            reply::array(session.out, indexes.len());
            for index in indexes {
                count(session.out, index);
            }
        }
    }
}

/// A count that must not be negative (`LPOS`'s `COUNT` and `MAXLEN`): `None` for a negative
/// one or no integer at all, which redis answers with the same error.
fn non_negative(arg: &[u8]) -> Option<usize> {
    let n = u64::try_from(resp::parse_i64(arg)?).ok()?;
    Some(usize::try_from(n).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::range;

    #[test]
    fn ranges_follow_redis() {
        assert_eq!(range(5, 0, -1), Some(0..5));
        assert_eq!(range(5, 1, 2), Some(1..3));
        assert_eq!(range(5, -2, -1), Some(3..5));
        assert_eq!(range(5, -100, 100), Some(0..5));
        assert_eq!(range(5, 4, 4), Some(4..5));
        assert_eq!(range(5, 5, 10), None);
        assert_eq!(range(5, 3, 2), None);
        assert_eq!(range(5, 0, -6), None);
        assert_eq!(range(0, 0, -1), None);
        assert_eq!(range(5, i64::MIN, i64::MAX), Some(0..5));
        assert_eq!(range(5, i64::MAX, i64::MIN), None);
    }
}

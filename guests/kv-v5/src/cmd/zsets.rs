//! Sorted-set commands: `ZADD` (with `NX`/`XX`/`GT`/`LT`/`CH`/`INCR`), `ZINCRBY`, `ZREM`,
//! `ZCARD`, `ZSCORE`, `ZMSCORE`, `ZRANK`/`ZREVRANK` (with `WITHSCORE`), `ZCOUNT`, `ZRANGE` in
//! its redis 6.2 form (`BYSCORE`, `BYLEX`, `REV`, `LIMIT`, `WITHSCORES`) and the older
//! `ZREVRANGE`, `ZRANGEBYSCORE`, `ZREVRANGEBYSCORE`, `ZRANGEBYLEX`, and `ZPOPMIN`/`ZPOPMAX`.
//!
//! Redis's rules throughout: `ZADD` creates a missing key (unless `XX`), the change that
//! removes the last member deletes the key (`Db::update_zset`), a read of a missing key reads
//! an empty set, a key of another type answers `WRONGTYPE`, and every argument is checked
//! before the key is looked at. Scores are doubles, RESP3 doubles in a RESP3 reply and text in
//! a RESP2 one; `WITHSCORES` pairs are nested arrays in RESP3, a flat array in RESP2.

use super::lists::range as positions;
use super::strings::parse_float;
use super::{NOT_AN_INTEGER, SYNTAX_ERROR, Session, WRONGTYPE, count, is, wrong_arity};
use crate::db::{Db, WrongType};
use crate::zset::{ScoreBound, ZSet};
use resp::{Arg, Protocol, reply};

const NOT_A_FLOAT: &str = "ERR value is not a valid float";

/// What `ZADD`'s options ask for.
#[derive(Debug, Default, Clone, Copy)]
struct AddOptions {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
    ch: bool,
    incr: bool,
}

/// `ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]`: how many members are
/// new (`CH`: new or with a changed score); with `INCR`, the member's new score, or a null if a
/// condition stopped it.
pub(super) fn zadd(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let mut options = AddOptions::default();
    let mut first = 2;
    while let Some(option) = args.get(first) {
        let flag = match () {
            () if is(option, "nx") => &mut options.nx,
            () if is(option, "xx") => &mut options.xx,
            () if is(option, "ch") => &mut options.ch,
            () if is(option, "incr") => &mut options.incr,
            () if is(option, "gt") => &mut options.gt,
            () if is(option, "lt") => &mut options.lt,
            () => break,
        };
        *flag = true;
        first += 1;
    }
    add(db, session, &args[1], &args[first..], options);
}

/// `ZINCRBY key increment member`: `ZADD key INCR increment member`.
pub(super) fn zincrby(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let options = AddOptions { incr: true, ..AddOptions::default() };
    add(db, session, &args[1], &args[2..], options);
}

fn add(db: &mut Db, session: &mut Session<'_>, key: &[u8], pairs: &[Arg<'_>], options: AddOptions) {
    let AddOptions { nx, xx, gt, lt, ch, incr } = options;
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return reply::error(session.out, SYNTAX_ERROR);
    }
    if nx && xx {
        return reply::error(
            session.out,
            "ERR XX and NX options at the same time are not compatible",
        );
    }
    if (gt || lt) && nx || gt && lt {
        return reply::error(
            session.out,
            "ERR GT, LT, and/or NX options at the same time are not compatible",
        );
    }
    if incr && pairs.len() > 2 {
        return reply::error(
            session.out,
            "ERR INCR option supports a single increment-element pair",
        );
    }
    // Every score is read before anything changes: the command runs whole or not at all.
    let mut scores = Vec::with_capacity(pairs.len() / 2);
    for pair in pairs.chunks_exact(2) {
        match parse_float(&pair[0]) {
            Some(score) => scores.push(score),
            None => return reply::error(session.out, NOT_A_FLOAT),
        }
    }
    let outcome = db.update_zset(key, session.now_ms, !xx, |zset| {
        let (mut added, mut updated, mut last) = (0usize, 0usize, None);
        for (pair, &score) in pairs.chunks_exact(2).zip(&scores) {
            let member: &[u8] = &pair[1];
            match zset.score(member) {
                Some(current) => {
                    if nx {
                        continue;
                    }
                    let new = if incr { current + score } else { score };
                    if new.is_nan() {
                        return Err(());
                    }
                    if (lt && new >= current) || (gt && new <= current) {
                        continue;
                    }
                    if new != current {
                        zset.insert(member, new);
                        updated += 1;
                    }
                    last = Some(new);
                }
                None if xx => {}
                None => {
                    zset.insert(member, score);
                    added += 1;
                    last = Some(score);
                }
            }
        }
        Ok((added, updated, last))
    });
    let protocol = session.client.protocol;
    match outcome {
        Err(WrongType) => reply::error(session.out, WRONGTYPE),
        Ok(Some(Err(()))) => reply::error(session.out, "ERR resulting score is not a number (NaN)"),
        Ok(Some(Ok((_, _, Some(score))))) if incr => reply::double(session.out, protocol, score),
        Ok(_) if incr => reply::null(session.out, protocol),
        Ok(Some(Ok((added, updated, _)))) => {
            count(session.out, if ch { added + updated } else { added })
        }
        Ok(None) => reply::integer(session.out, 0),
    }
}

/// `ZREM key member...`: how many of the members were there.
pub(super) fn zrem(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let members = &args[2..];
    match db.update_zset(&args[1], session.now_ms, false, |zset| {
        members.iter().filter(|member| zset.remove(member)).count()
    }) {
        Ok(removed) => count(session.out, removed.unwrap_or(0)),
        Err(WrongType) => reply::error(session.out, WRONGTYPE),
    }
}

/// The sorted set under `key` (`None`: missing), or `None` after replying `WRONGTYPE`.
fn read<'d>(db: &'d mut Db, session: &mut Session<'_>, key: &[u8]) -> Option<Option<&'d ZSet>> {
    match db.zset(key, session.now_ms) {
        Ok(zset) => Some(zset),
        Err(WrongType) => {
            reply::error(session.out, WRONGTYPE);
            None
        }
    }
}

/// `ZCARD key`.
pub(super) fn zcard(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let Some(zset) = read(db, session, &args[1]) else { return };
    count(session.out, zset.map_or(0, ZSet::len));
}

/// `ZSCORE key member`: the score, or a null.
pub(super) fn zscore(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let Some(zset) = read(db, session, &args[1]) else { return };
    let protocol = session.client.protocol;
    match zset.and_then(|zset| zset.score(&args[2])) {
        Some(score) => reply::double(session.out, protocol, score),
        None => reply::null(session.out, protocol),
    }
}

/// `ZMSCORE key member...`: each member's score, or a null.
pub(super) fn zmscore(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let Some(zset) = read(db, session, &args[1]) else { return };
    let protocol = session.client.protocol;
    reply::array(session.out, args.len() - 2);
    for member in &args[2..] {
        match zset.and_then(|zset| zset.score(member)) {
            Some(score) => reply::double(session.out, protocol, score),
            None => reply::null(session.out, protocol),
        }
    }
}

/// `ZRANK key member [WITHSCORE]`: the member's position, lowest score first, or a null.
pub(super) fn zrank(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    rank(db, session, args, false, "zrank");
}

/// `ZREVRANK key member [WITHSCORE]`: the position from the highest score down.
pub(super) fn zrevrank(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    rank(db, session, args, true, "zrevrank");
}

fn rank(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>], rev: bool, command: &str) {
    let with_score = match args {
        [_, _, _] => false,
        [_, _, _, option] if is(option, "withscore") => true,
        [_, _, _, _] => return reply::error(session.out, SYNTAX_ERROR),
        _ => return wrong_arity(session.out, command),
    };
    let Some(zset) = read(db, session, &args[1]) else { return };
    let protocol = session.client.protocol;
    let member: &[u8] = &args[2];
    let found = zset.and_then(|zset| {
        let rank = if rev { zset.rev_rank(member) } else { zset.rank(member) }?;
        Some((rank, zset.score(member)?))
    });
    match found {
        Some((rank, score)) => {
            if with_score {
                reply::array(session.out, 2);
            }
            count(session.out, rank);
            if with_score {
                reply::double(session.out, protocol, score);
            }
        }
        None if with_score => reply::null_list(session.out, protocol),
        None => reply::null(session.out, protocol),
    }
}

/// `ZCOUNT key min max`: how many members score within the range.
pub(super) fn zcount(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let (Some(min), Some(max)) = (score_bound(&args[2]), score_bound(&args[3])) else {
        return reply::error(session.out, "ERR min or max is not a float");
    };
    let Some(zset) = read(db, session, &args[1]) else { return };
    count(session.out, zset.map_or(0, |zset| zset.by_score(min, max, false).count()));
}

/// `1.5`, `(1.5`, `-inf`, `+inf`: an end of a score range.
fn score_bound(arg: &[u8]) -> Option<ScoreBound> {
    let (inclusive, text) = match arg.split_first() {
        Some((b'(', rest)) => (false, rest),
        _ => (true, arg),
    };
    Some(ScoreBound { value: parse_float(text)?, inclusive })
}

/// An end of a lexicographic range: `-`, `+`, `[a` (included), `(a` (excluded).
#[derive(Debug, Clone, Copy)]
enum LexBound<'a> {
    Lowest,
    Highest,
    Included(&'a [u8]),
    Excluded(&'a [u8]),
}

impl<'a> LexBound<'a> {
    fn parse(arg: &'a [u8]) -> Option<Self> {
        match arg.split_first()? {
            (b'-', []) => Some(Self::Lowest),
            (b'+', []) => Some(Self::Highest),
            (b'[', rest) => Some(Self::Included(rest)),
            (b'(', rest) => Some(Self::Excluded(rest)),
            _ => None,
        }
    }

    fn admits_from_below(self, member: &[u8]) -> bool {
        match self {
            Self::Lowest => true,
            Self::Highest => false,
            Self::Included(min) => member >= min,
            Self::Excluded(min) => member > min,
        }
    }

    fn admits_from_above(self, member: &[u8]) -> bool {
        match self {
            Self::Lowest => false,
            Self::Highest => true,
            Self::Included(max) => member <= max,
            Self::Excluded(max) => member < max,
        }
    }
}

/// How a range is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum By {
    Rank,
    Score,
    Lex,
}

/// `ZRANGE key start stop [BYSCORE|BYLEX] [REV] [LIMIT offset count] [WITHSCORES]`.
pub(super) fn zrange(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    range_command(db, session, args, None, None);
}

/// `ZREVRANGE key start stop [WITHSCORES]`.
pub(super) fn zrevrange(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    range_command(db, session, args, Some(By::Rank), Some(true));
}

/// `ZRANGEBYSCORE key min max [WITHSCORES] [LIMIT offset count]`.
pub(super) fn zrangebyscore(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    range_command(db, session, args, Some(By::Score), Some(false));
}

/// `ZREVRANGEBYSCORE key max min [WITHSCORES] [LIMIT offset count]`.
pub(super) fn zrevrangebyscore(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    range_command(db, session, args, Some(By::Score), Some(true));
}

/// `ZRANGEBYLEX key min max [LIMIT offset count]`.
pub(super) fn zrangebylex(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    range_command(db, session, args, Some(By::Lex), Some(false));
}

/// Every range command, as redis's `zrangeGenericCommand`: the options a form fixes (`by`,
/// `rev`) cannot be given again.
fn range_command(
    db: &mut Db,
    session: &mut Session<'_>,
    args: &[Arg<'_>],
    mut by: Option<By>,
    mut rev: Option<bool>,
) {
    let mut with_scores = false;
    let mut limit: Option<(i64, i64)> = None;
    let mut i = 4;
    while i < args.len() {
        let option = &args[i];
        let left = args.len() - i - 1;
        if is(option, "withscores") {
            with_scores = true;
        } else if is(option, "limit") && left >= 2 {
            let (Some(offset), Some(count)) =
                (resp::parse_i64(&args[i + 1]), resp::parse_i64(&args[i + 2]))
            else {
                return reply::error(session.out, NOT_AN_INTEGER);
            };
            limit = Some((offset, count));
            i += 2;
        } else if rev.is_none() && is(option, "rev") {
            rev = Some(true);
        } else if by.is_none() && is(option, "bylex") {
            by = Some(By::Lex);
        } else if by.is_none() && is(option, "byscore") {
            by = Some(By::Score);
        } else {
            return reply::error(session.out, SYNTAX_ERROR);
        }
        i += 1;
    }
    let rev = rev.unwrap_or(false);
    let by = by.unwrap_or(By::Rank);
    if limit.is_some() && by == By::Rank {
        return reply::error(
            session.out,
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        );
    }
    if with_scores && by == By::Lex {
        return reply::error(
            session.out,
            "ERR syntax error, WITHSCORES not supported in combination with BYLEX",
        );
    }
    // A reversed range by score or lex is given as max, min.
    let (low, high) =
        if rev && by != By::Rank { (&args[3], &args[2]) } else { (&args[2], &args[3]) };
    let (offset, limit) = limit.unwrap_or((0, -1));
    // Redis's walk: a negative offset skips everything; a negative limit takes everything.
    let skip = usize::try_from(offset).unwrap_or(usize::MAX);
    let take = usize::try_from(limit).unwrap_or(usize::MAX);
    enum Range<'a> {
        Rank(i64, i64),
        Score(ScoreBound, ScoreBound),
        Lex(LexBound<'a>, LexBound<'a>),
    }
    let range = match by {
        By::Rank => match (resp::parse_i64(low), resp::parse_i64(high)) {
            (Some(start), Some(stop)) => Range::Rank(start, stop),
            _ => return reply::error(session.out, NOT_AN_INTEGER),
        },
        By::Score => match (score_bound(low), score_bound(high)) {
            (Some(min), Some(max)) => Range::Score(min, max),
            _ => return reply::error(session.out, "ERR min or max is not a float"),
        },
        By::Lex => match (LexBound::parse(low), LexBound::parse(high)) {
            (Some(min), Some(max)) => Range::Lex(min, max),
            _ => return reply::error(session.out, "ERR min or max not valid string range item"),
        },
    };
    let Some(zset) = read(db, session, &args[1]) else { return };
    let Some(zset) = zset else {
        return reply::array(session.out, 0);
    };
    let found: Vec<(&[u8], f64)> = match range {
        Range::Rank(start, stop) => match positions(zset.len(), start, stop) {
            None => Vec::new(),
            Some(positions) if rev => {
                zset.iter().rev().skip(positions.start).take(positions.len()).collect()
            }
            Some(positions) => zset.iter().skip(positions.start).take(positions.len()).collect(),
        },
        Range::Score(min, max) => zset.by_score(min, max, rev).skip(skip).take(take).collect(),
        Range::Lex(min, max) if rev => zset
            .iter()
            .rev()
            .skip_while(|(member, _)| !max.admits_from_above(member))
            .take_while(|(member, _)| min.admits_from_below(member))
            .skip(skip)
            .take(take)
            .collect(),
        Range::Lex(min, max) => zset
            .iter()
            .skip_while(|(member, _)| !min.admits_from_below(member))
            .take_while(|(member, _)| max.admits_from_above(member))
            .skip(skip)
            .take(take)
            .collect(),
    };
    reply_members(session.out, session.client.protocol, &found, with_scores);
}

/// Members, with their scores if asked: nested pairs in RESP3, a flat array in RESP2.
fn reply_members(out: &mut Vec<u8>, protocol: Protocol, found: &[(&[u8], f64)], scores: bool) {
    let nested = scores && protocol == Protocol::Resp3;
    reply::array(out, if scores && !nested { 2 * found.len() } else { found.len() });
    for (member, score) in found {
        if nested {
            reply::array(out, 2);
        }
        reply::bulk(out, member);
        if scores {
            reply::double(out, protocol, *score);
        }
    }
}

/// `ZPOPMIN key [count]`: the lowest member and its score, or up to `count` of them.
pub(super) fn zpopmin(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    pop(db, session, args, false);
}

/// `ZPOPMAX key [count]`: the highest.
pub(super) fn zpopmax(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    pop(db, session, args, true);
}

fn pop(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>], max: bool) {
    let many = match args {
        [_, _] => None,
        [_, _, n] => match resp::parse_i64(n).and_then(|n| u64::try_from(n).ok()) {
            Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            None => {
                return reply::error(session.out, "ERR value is out of range, must be positive");
            }
        },
        _ => return reply::error(session.out, SYNTAX_ERROR),
    };
    let protocol = session.client.protocol;
    let popped = db.update_zset(&args[1], session.now_ms, false, |zset| {
        let n = many.unwrap_or(1).min(zset.len());
        (0..n).filter_map(|_| zset.pop(max)).collect::<Vec<_>>()
    });
    let popped = match popped {
        Ok(popped) => popped.unwrap_or_default(),
        Err(WrongType) => return reply::error(session.out, WRONGTYPE),
    };
    let found: Vec<(&[u8], f64)> =
        popped.iter().map(|(member, score)| (member.as_slice(), *score)).collect();
    if many.is_some() {
        reply_members(session.out, protocol, &found, true);
    } else {
        // A single pop is a flat pair in either protocol.
        reply::array(session.out, 2 * found.len());
        for (member, score) in found {
            reply::bulk(session.out, member);
            reply::double(session.out, protocol, score);
        }
    }
}

//! Deadlines: setting them (`EXPIRE`, `PEXPIRE`, `EXPIREAT`, `PEXPIREAT`), reading them (`TTL`,
//! `PTTL`, `EXPIRETIME`, `PEXPIRETIME`) and removing them (`PERSIST`).
//!
//! Redis's rules throughout: a deadline belongs to the key, whatever its type; a deadline that
//! is already past deletes the key (and the command still answers 1), remaining time is rounded
//! to the nearest second, and a missing key reads as -2, a key without deadline as -1.

use super::{NOT_AN_INTEGER, Session, c_string, is};
use crate::cmd::strings::invalid_expire_time;
use crate::db::Db;
use resp::{Arg, reply};

/// What an `EXPIRE` amount counts from.
#[derive(Debug, Clone, Copy)]
enum Base {
    /// Now: `EXPIRE`, `PEXPIRE`.
    Now,
    /// The Unix epoch: `EXPIREAT`, `PEXPIREAT`.
    Epoch,
}

/// `EXPIRE key seconds [NX|XX|GT|LT]`.
pub(super) fn expire(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    set_expiry(db, session, args, Base::Now, 1000, "expire");
}

/// `PEXPIRE key milliseconds [NX|XX|GT|LT]`.
pub(super) fn pexpire(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    set_expiry(db, session, args, Base::Now, 1, "pexpire");
}

/// `EXPIREAT key unix-seconds [NX|XX|GT|LT]`.
pub(super) fn expireat(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    set_expiry(db, session, args, Base::Epoch, 1000, "expireat");
}

/// `PEXPIREAT key unix-milliseconds [NX|XX|GT|LT]`.
pub(super) fn pexpireat(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    set_expiry(db, session, args, Base::Epoch, 1, "pexpireat");
}

/// The conditions `EXPIRE` may carry: set the deadline only if the key has none (`NX`), has one
/// (`XX`), or if the new one is later (`GT`) or earlier (`LT`) than the current one. No deadline
/// counts as infinitely late.
#[derive(Debug, Default)]
struct Conditions {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

impl Conditions {
    /// Reads the options after `EXPIRE key amount`, or replies redis's error.
    fn parse(out: &mut Vec<u8>, options: &[Arg<'_>]) -> Option<Self> {
        let mut conditions = Self::default();
        for option in options {
            if is(option, "nx") {
                conditions.nx = true;
            } else if is(option, "xx") {
                conditions.xx = true;
            } else if is(option, "gt") {
                conditions.gt = true;
            } else if is(option, "lt") {
                conditions.lt = true;
            } else {
                reply::error_with(out, |out| {
                    out.extend_from_slice(b"ERR Unsupported option ");
                    out.extend_from_slice(c_string(option, usize::MAX));
                });
                return None;
            }
        }
        let Self { nx, xx, gt, lt } = conditions;
        if nx && (xx || gt || lt) {
            reply::error(
                out,
                "ERR NX and XX, GT or LT options at the same time are not compatible",
            );
            return None;
        }
        if gt && lt {
            reply::error(out, "ERR GT and LT options at the same time are not compatible");
            return None;
        }
        Some(conditions)
    }

    /// Whether deadline `new` may replace `current`.
    fn allow(&self, current: Option<i64>, new: i64) -> bool {
        match current {
            None => !self.xx && !self.gt,
            Some(current) => !self.nx && (!self.gt || new > current) && (!self.lt || new < current),
        }
    }
}

/// `EXPIRE` and its kin: 1 if the deadline was set (or the key deleted, the deadline being
/// past), 0 if the key is missing or a condition said no.
fn set_expiry(
    db: &mut Db,
    session: &mut Session<'_>,
    args: &[Arg<'_>],
    base: Base,
    unit_ms: i64,
    command: &str,
) {
    let Some(conditions) = Conditions::parse(session.out, &args[3..]) else {
        return;
    };
    let Some(amount) = resp::parse_i64(&args[2]) else {
        reply::error(session.out, NOT_AN_INTEGER);
        return;
    };
    let now = i64::try_from(session.now_ms).unwrap_or(i64::MAX);
    let base_ms = match base {
        Base::Now => now,
        Base::Epoch => 0,
    };
    // A negative amount is allowed (the key goes at once); only overflow is an error.
    let Some(deadline) = amount.checked_mul(unit_ms).and_then(|ms| ms.checked_add(base_ms)) else {
        invalid_expire_time(session.out, command);
        return;
    };
    let key = &args[1];
    let Some(entry) = db.get(key, session.now_ms) else {
        reply::integer(session.out, 0);
        return;
    };
    let current = entry.expires_at_ms().map(|ms| i64::try_from(ms).unwrap_or(i64::MAX));
    if !conditions.allow(current, deadline) {
        reply::integer(session.out, 0);
        return;
    }
    // A deadline at or before now removes the key (`Db::set_deadline`); 0 stands for any of those.
    let deadline = u64::try_from(deadline).unwrap_or(0);
    db.set_deadline(key, Some(deadline), session.now_ms);
    reply::integer(session.out, 1);
}

/// `TTL key`: seconds left, rounded to the nearest.
pub(super) fn ttl(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    time_to_live(db, session, &args[1], false, false);
}

/// `PTTL key`: milliseconds left.
pub(super) fn pttl(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    time_to_live(db, session, &args[1], true, false);
}

/// `EXPIRETIME key`: the deadline in Unix seconds.
pub(super) fn expiretime(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    time_to_live(db, session, &args[1], false, true);
}

/// `PEXPIRETIME key`: the deadline in Unix milliseconds.
pub(super) fn pexpiretime(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    time_to_live(db, session, &args[1], true, true);
}

/// -2 for a missing key, -1 for a key without deadline, else the time left (or the deadline,
/// `absolute`), in milliseconds or in seconds rounded like redis: `(ms + 500) / 1000`.
fn time_to_live(db: &mut Db, session: &mut Session<'_>, key: &[u8], millis: bool, absolute: bool) {
    let now = session.now_ms;
    let answer = match db.get(key, now) {
        None => -2,
        Some(entry) => match entry.expires_at_ms() {
            None => -1,
            Some(deadline) => {
                let ms = if absolute { deadline } else { deadline.saturating_sub(now) };
                let ms = i64::try_from(ms).unwrap_or(i64::MAX);
                if millis { ms } else { ms.saturating_add(500) / 1000 }
            }
        },
    };
    reply::integer(session.out, answer);
}

/// `PERSIST key`: 1 if a deadline was removed, 0 if the key is missing or had none.
pub(super) fn persist(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let now = session.now_ms;
    let has_deadline = db.get(&args[1], now).is_some_and(|entry| entry.expires_at_ms().is_some());
    if has_deadline {
        db.set_deadline(&args[1], None, now);
    }
    reply::integer(session.out, i64::from(has_deadline));
}

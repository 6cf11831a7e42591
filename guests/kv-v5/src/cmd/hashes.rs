//! Hash commands: `HSET`, `HGET`, `HDEL`, `HGETALL`, `HLEN`.
//!
//! Redis's rules throughout: `HSET` creates a missing key, the `HDEL` that removes the last field
//! deletes the key (`Db::update_hash` does that), a read of a missing key reads an empty hash,
//! and a key of another type answers `WRONGTYPE`. A hash keeps its deadline while it changes.

use super::{Session, WRONGTYPE, wrong_arity};
use crate::db::{Db, Hash, WrongType, replace_bytes};
use resp::{Arg, reply};

/// `HSET key field value [field value ...]`: how many of the fields are new (a field that was
/// there gets the new value but is not counted).
pub(super) fn hset(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    // The arity allows any count from 4; a field without its value is still an arity error.
    if !args.len().is_multiple_of(2) {
        wrong_arity(session.out, "hset");
        return;
    }
    let pairs = &args[2..];
    let added = db.update_hash(&args[1], session.now_ms, true, |hash| {
        let mut added = 0usize;
        for pair in pairs.chunks_exact(2) {
            let (field, value): (&[u8], &[u8]) = (&pair[0], &pair[1]);
            match hash.get_mut(field) {
                // Overwriting in place spares allocating the field again.
                Some(old) => replace_bytes(old, value),
                None => {
                    hash.insert(field.to_vec(), value.to_vec());
                    added += 1;
                }
            }
        }
        added
    });
    match added {
        // `create` is set, so there always is a hash.
        Ok(added) => {
            let added = added.unwrap_or(0);
            reply::integer(session.out, i64::try_from(added).unwrap_or(i64::MAX));
        }
        Err(WrongType) => reply::error(session.out, WRONGTYPE),
    }
}

/// `HGET key field`: the value, or a null for a missing field or key.
pub(super) fn hget(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let field: &[u8] = &args[2];
    match db.hash(&args[1], session.now_ms) {
        Ok(hash) => match hash.and_then(|hash| hash.get(field)) {
            Some(value) => reply::bulk(session.out, value),
            None => reply::null(session.out, session.client.protocol),
        },
        Err(WrongType) => reply::error(session.out, WRONGTYPE),
    }
}

/// `HDEL key field...`: how many of the fields were there.
pub(super) fn hdel(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let fields = &args[2..];
    let removed = db.update_hash(&args[1], session.now_ms, false, |hash| {
        fields.iter().filter(|field| hash.remove::<[u8]>(field).is_some()).count()
    });
    match removed {
        Ok(removed) => {
            let removed = removed.unwrap_or(0);
            reply::integer(session.out, i64::try_from(removed).unwrap_or(i64::MAX));
        }
        Err(WrongType) => reply::error(session.out, WRONGTYPE),
    }
}

/// `HGETALL key`: field, value, field, value... in the table's (deterministic) order, a map in
/// RESP3; empty for a missing key.
pub(super) fn hgetall(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    match db.hash(&args[1], session.now_ms) {
        Ok(None) => reply::map(session.out, session.client.protocol, 0),
        Ok(Some(hash)) => {
            reply::map(session.out, session.client.protocol, hash.len());
            for (field, value) in hash {
                reply::bulk(session.out, field);
                reply::bulk(session.out, value);
            }
        }
        Err(WrongType) => reply::error(session.out, WRONGTYPE),
    }
}

/// `HLEN key`: how many fields; 0 for a missing key.
pub(super) fn hlen(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    match db.hash(&args[1], session.now_ms) {
        Ok(hash) => {
            let len = hash.map_or(0, Hash::len);
            reply::integer(session.out, i64::try_from(len).unwrap_or(i64::MAX));
        }
        Err(WrongType) => reply::error(session.out, WRONGTYPE),
    }
}

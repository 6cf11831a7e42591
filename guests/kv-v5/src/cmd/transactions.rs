//! Transactions: `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`, with redis's semantics.
//!
//! Between `MULTI` and `EXEC` the dispatcher queues each command and answers `+QUEUED`; a
//! command refused while queuing (unknown, wrong arity, `NOAUTH`) fails the transaction, and
//! `EXEC` then answers `-EXECABORT` and runs nothing. `EXEC` runs the queue as one event-free
//! stretch — nothing else runs on the server in between, which is redis's atomicity — and
//! answers one array of the queued commands' replies, errors included (an error in one command
//! does not stop the others). `WATCH` makes `EXEC` abort, answering a null, if any watched key
//! changed (a write by any connection, this one included, an expiry, a flush) between `WATCH`
//! and `EXEC`.
//!
//! The open transaction, the queue and the watched keys are the connection's state
//! (`Client::transaction`, `Client::watched`): they cross an upgrade, so a `MULTI` opened
//! under one release is executed by the next.

use super::Session;
use crate::db::Db;
use resp::{Arg, reply};
use std::borrow::Cow;

/// `MULTI`.
pub(super) fn multi(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    if session.client.transaction.is_some() {
        reply::error(session.out, "ERR MULTI calls can not be nested");
        return;
    }
    session.client.transaction = Some(Default::default());
    reply::ok(session.out);
}

/// `EXEC`: the replies of the queued commands, `-EXECABORT` if one was refused, a null if a
/// watched key changed.
pub(super) fn exec(db: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    let Some(transaction) = session.client.transaction.take() else {
        reply::error(session.out, "ERR EXEC without MULTI");
        return;
    };
    if transaction.failed {
        reply::error(session.out, "EXECABORT Transaction discarded because of previous errors.");
        end(db, session);
        return;
    }
    // A watched key whose deadline passed since `WATCH` changed too: reading it expires it,
    // which tells its watchers.
    for key in &session.client.watched {
        db.get(key, session.now_ms);
    }
    let broken = session.client.watch_broken || db.watches.is_broken(session.conn);
    // Unwatched before anything runs, as in redis: the transaction's own writes break nothing.
    end_watch(db, session);
    if broken {
        reply::null_list(session.out, session.protocol());
        return;
    }
    reply::array(session.out, transaction.queued.len());
    let mut args: Vec<Arg<'_>> = Vec::new();
    for queued in &transaction.queued {
        args.clear();
        args.extend(queued.iter().map(|arg| Cow::Borrowed(arg.as_slice())));
        super::execute(db, session, &args);
        if session.quit {
            break;
        }
    }
}

/// `DISCARD`.
pub(super) fn discard(db: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    if session.client.transaction.take().is_none() {
        reply::error(session.out, "ERR DISCARD without MULTI");
        return;
    }
    end_watch(db, session);
    reply::ok(session.out);
}

/// `WATCH key...`.
pub(super) fn watch(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    if session.client.transaction.is_some() {
        reply::error(session.out, "ERR WATCH inside MULTI is not allowed");
        return;
    }
    for key in &args[1..] {
        if session.client.watched.iter().any(|watched| watched.as_slice() == key.as_ref()) {
            continue;
        }
        // A key already past its deadline goes now, before it is watched: its expiry is not a
        // change this connection could have seen.
        db.get(key, session.now_ms);
        db.watches.watch(session.conn, key);
        session.client.watched.push(key.to_vec());
    }
    reply::ok(session.out);
}

/// `UNWATCH`.
pub(super) fn unwatch(db: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    end_watch(db, session);
    reply::ok(session.out);
}

/// Ends the connection's transaction, if any, and its watches (a refused `EXEC`, `RESET`).
pub(super) fn end(db: &mut Db, session: &mut Session<'_>) {
    session.client.transaction = None;
    end_watch(db, session);
}

/// Forgets every key the connection watches.
pub(crate) fn end_watch(db: &mut Db, session: &mut Session<'_>) {
    db.watches.unwatch(session.conn, &session.client.watched);
    session.client.watched.clear();
    session.client.watch_broken = false;
}

//! Connection commands: what clients send on their own before any data command — the `HELLO`
//! handshake, `AUTH`, `CLIENT SETINFO`/`SETNAME`, `SELECT 0`, `PING` — and what tools send to
//! look at connections (`CLIENT LIST`, `CLIENT INFO`), with redis 7's replies and errors.
//!
//! Everything these set is the connection's state (`crate::client::Client`) and crosses an
//! upgrade: a connection that said `HELLO 3` is answered in RESP3 by the next release too.

use super::{Command, NOT_AN_INTEGER, SYNTAX_ERROR, Session, c_string, help, is, transactions};
use crate::REDIS_VERSION;
use crate::client::{Client, ReplyMode};
use crate::db::Db;
use resp::{Arg, Protocol, reply};
use std::fmt::Write as _;

/// `PING [message]`.
pub(super) fn ping(_: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    match args {
        [_] => reply::simple(session.out, "PONG"),
        [_, message] => reply::bulk(session.out, message),
        _ => super::wrong_arity(session.out, "ping"),
    }
}

/// `ECHO message`.
pub(super) fn echo(_: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    reply::bulk(session.out, &args[1]);
}

/// `QUIT`: `+OK`, then the connection closes.
pub(super) fn quit(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    reply::ok(session.out);
    session.quit = true;
}

/// `SELECT index`: there is one database, number 0; any other is redis's out-of-range error,
/// as a redis configured with `databases 1` answers.
pub(super) fn select(_: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    match resp::parse_i64(&args[1]) {
        None => reply::error(session.out, NOT_AN_INTEGER),
        Some(0) => reply::ok(session.out),
        Some(index) if i32::try_from(index).is_ok() => {
            reply::error(session.out, "ERR DB index is out of range");
        }
        Some(_) => reply::error(
            session.out,
            "ERR value is out of range, must be between -2147483648 and 2147483647",
        ),
    }
}

/// `HELLO [protover [AUTH username password] [SETNAME name]]`: switches the connection to
/// RESP2 or RESP3, optionally authenticating and naming it, and answers the server's facts —
/// a map in RESP3. Redis's order: the version, then the options, then the password, then the
/// name and the protocol, so a failure changes nothing.
pub(super) fn hello(_: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let mut protocol = None;
    if let Some(version) = args.get(1) {
        match resp::parse_i64(version) {
            None => {
                reply::error(session.out, "ERR Protocol version is not an integer or out of range");
                return;
            }
            Some(2) => protocol = Some(Protocol::Resp2),
            Some(3) => protocol = Some(Protocol::Resp3),
            Some(_) => {
                reply::error(session.out, "NOPROTO unsupported protocol version");
                return;
            }
        }
    }
    let mut credentials = None;
    let mut name = None;
    let mut at = 2;
    while at < args.len() {
        let more = args.len() - 1 - at;
        if is(&args[at], "auth") && more >= 2 {
            credentials = Some((&args[at + 1], &args[at + 2]));
            at += 3;
        } else if is(&args[at], "setname") && more >= 1 {
            if let Err(error) = valid_name(&args[at + 1]) {
                reply::error(session.out, error);
                return;
            }
            name = Some(&args[at + 1]);
            at += 2;
        } else {
            reply::error_with(session.out, |out| {
                out.extend_from_slice(b"ERR Syntax error in HELLO option '");
                out.extend_from_slice(c_string(&args[at], usize::MAX));
                out.push(b'\'');
            });
            return;
        }
    }
    if let Some((user, password)) = credentials
        && !authenticate(session, Some(user), password)
    {
        return;
    }
    if !session.client.authenticated {
        reply::error(
            session.out,
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO AUTH <user> <pass> option can be used to authenticate the client and select \
             the RESP protocol version at the same time",
        );
        return;
    }
    if let Some(name) = name {
        session.client.name = name.to_vec();
    }
    if let Some(protocol) = protocol {
        session.client.protocol = protocol;
    }
    let protocol = session.protocol();
    let out = &mut *session.out;
    reply::map(out, protocol, 7);
    reply::bulk(out, b"server");
    reply::bulk(out, b"redis");
    reply::bulk(out, b"version");
    reply::bulk(out, REDIS_VERSION.as_bytes());
    reply::bulk(out, b"proto");
    reply::integer(out, protocol.number());
    reply::bulk(out, b"id");
    reply::integer(out, i64::try_from(session.conn).unwrap_or(i64::MAX));
    reply::bulk(out, b"mode");
    reply::bulk(out, b"standalone");
    reply::bulk(out, b"role");
    reply::bulk(out, b"master");
    reply::bulk(out, b"modules");
    reply::array(out, 0);
}

/// `AUTH [username] password`: there is one user, `default`, whose password is the one
/// `tasuki run --arg requirepass=...` set (none by default, and then any password is right for
/// `default`, as in redis).
pub(super) fn auth(_: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let (user, password) = match args {
        [_, password] => (None, password),
        [_, user, password] => (Some(user), password),
        _ => {
            reply::error(session.out, SYNTAX_ERROR);
            return;
        }
    };
    if user.is_none() && session.config.requirepass.is_none() {
        reply::error(
            session.out,
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        );
        return;
    }
    if authenticate(session, user, password) {
        reply::ok(session.out);
    }
}

/// Checks a user and password, marking the connection authenticated when they are right;
/// otherwise replies redis's `WRONGPASS` and leaves the connection as it was.
fn authenticate(session: &mut Session<'_>, user: Option<&Arg<'_>>, password: &[u8]) -> bool {
    let user_ok = user.is_none_or(|user| user.as_ref() == b"default");
    let password_ok =
        session.config.requirepass.as_ref().is_none_or(|required| required.as_slice() == password);
    if user_ok && password_ok {
        session.client.authenticated = true;
        true
    } else {
        reply::error(session.out, "WRONGPASS invalid username-password pair or user is disabled.");
        false
    }
}

/// `RESET`: the connection as it was when it connected — RESP2, no name, no transaction, no
/// watches, replies on, and not authenticated if a password is required.
pub(super) fn reset(db: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    transactions::end(db, session);
    let client = &mut *session.client;
    let fresh = Client::new(client.connected_ms, session.config.requirepass.is_none());
    *client = Client {
        addr: std::mem::take(&mut client.addr),
        laddr: std::mem::take(&mut client.laddr),
        last_ms: client.last_ms,
        last_command: std::mem::take(&mut client.last_command),
        lib_name: std::mem::take(&mut client.lib_name),
        lib_ver: std::mem::take(&mut client.lib_ver),
        parser: std::mem::take(&mut client.parser),
        ..fresh
    };
    reply::simple(session.out, "RESET");
}

/// Redis's rule for names and library names: printable ASCII without spaces.
fn valid_name(name: &[u8]) -> Result<(), &'static str> {
    if name.iter().all(|&byte| (b'!'..=b'~').contains(&byte)) {
        Ok(())
    } else {
        Err("ERR Client names cannot contain spaces, newlines or special characters.")
    }
}

pub(super) const CLIENT_SUBCOMMANDS: &[Command] = &[
    Command::new("client|setinfo", 4, client_setinfo),
    Command::new("client|setname", 3, client_setname),
    Command::new("client|getname", 2, client_getname),
    Command::new("client|id", 2, client_id),
    Command::new("client|info", 2, client_info),
    Command::new("client|list", -2, client_list),
    Command::new("client|no-evict", 3, client_no_evict),
    Command::new("client|no-touch", 3, client_no_touch),
    Command::new("client|reply", 3, client_reply),
    Command::new("client|help", 2, client_help),
];

/// `CLIENT`, which takes a subcommand: dispatch finds it, so this runs only for none.
pub(super) fn client(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    super::wrong_arity(session.out, "client");
}

/// `CLIENT SETINFO LIB-NAME|LIB-VER value`: what client libraries announce on connect, shown by
/// `CLIENT LIST`.
fn client_setinfo(_: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let (attribute, value) = (&args[2], &args[3]);
    let field = if is(attribute, "lib-name") {
        &mut session.client.lib_name
    } else if is(attribute, "lib-ver") {
        &mut session.client.lib_ver
    } else {
        reply::error_with(session.out, |out| {
            out.extend_from_slice(b"ERR Unrecognized option '");
            out.extend_from_slice(c_string(attribute, usize::MAX));
            out.push(b'\'');
        });
        return;
    };
    if valid_name(value).is_err() {
        reply::error_with(session.out, |out| {
            out.extend_from_slice(b"ERR ");
            out.extend_from_slice(c_string(attribute, usize::MAX));
            out.extend_from_slice(b" cannot contain spaces, newlines or special characters.");
        });
        return;
    }
    *field = value.to_vec();
    reply::ok(session.out);
}

/// `CLIENT SETNAME name`; an empty name removes it.
fn client_setname(_: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    match valid_name(&args[2]) {
        Ok(()) => {
            session.client.name = args[2].to_vec();
            reply::ok(session.out);
        }
        Err(error) => reply::error(session.out, error),
    }
}

/// `CLIENT GETNAME`: the name, or a null.
fn client_getname(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    if session.client.name.is_empty() {
        reply::null(session.out, session.protocol());
    } else {
        reply::bulk(session.out, &session.client.name);
    }
}

/// `CLIENT ID`: the host's connection id, stable across upgrades, like redis's client id.
fn client_id(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    reply::integer(session.out, i64::try_from(session.conn).unwrap_or(i64::MAX));
}

/// `CLIENT INFO`: this connection's `CLIENT LIST` line.
fn client_info(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    let mut text = String::new();
    describe(&mut text, session.conn, session.client, session.now_ms);
    reply::verbatim(session.out, session.protocol(), text.as_bytes());
}

/// `CLIENT LIST [TYPE NORMAL|MASTER|REPLICA|PUBSUB] [ID id...]`: one line per connection, in
/// id order. Every connection here is a normal one.
fn client_list(_: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let mut ids: Option<Vec<u64>> = None;
    let mut normal = true;
    match &args[2..] {
        [] => {}
        [option, kind] if is(option, "type") => {
            if is(kind, "normal") {
            } else if is(kind, "master")
                || is(kind, "replica")
                || is(kind, "slave")
                || is(kind, "pubsub")
            {
                normal = false;
            } else {
                reply::error_with(session.out, |out| {
                    out.extend_from_slice(b"ERR Unknown client type '");
                    out.extend_from_slice(c_string(kind, usize::MAX));
                    out.push(b'\'');
                });
                return;
            }
        }
        [option, list @ ..] if is(option, "id") && !list.is_empty() => {
            let mut parsed = Vec::new();
            for id in list {
                match resp::parse_i64(id).and_then(|id| u64::try_from(id).ok()).filter(|&id| id > 0)
                {
                    Some(id) => parsed.push(id),
                    None => {
                        reply::error(session.out, "ERR Invalid client ID");
                        return;
                    }
                }
            }
            ids = Some(parsed);
        }
        _ => {
            reply::error(session.out, SYNTAX_ERROR);
            return;
        }
    }
    let mut text = String::new();
    if normal {
        let mut all: Vec<(u64, &Client)> = session.others.iter().collect();
        all.push((session.conn, &*session.client));
        all.sort_by_key(|(id, _)| *id);
        for (id, client) in all {
            if ids.as_ref().is_none_or(|ids| ids.contains(&id)) {
                describe(&mut text, id, client, session.now_ms);
            }
        }
    }
    reply::verbatim(session.out, session.protocol(), text.as_bytes());
}

/// One connection as `CLIENT LIST` shows it, in redis 7.2's fields and order. What a guest has
/// no notion of (file descriptors, buffer sizes) is shown as redis shows an idle client's.
fn describe(text: &mut String, id: u64, client: &Client, now_ms: u64) {
    let age = now_ms.saturating_sub(client.connected_ms) / 1000;
    let idle = now_ms.saturating_sub(client.last_ms) / 1000;
    let mut flags = String::new();
    if client.transaction.is_some() {
        flags.push('x');
    }
    if client.no_evict {
        flags.push('e');
    }
    if client.no_touch {
        flags.push('T');
    }
    if flags.is_empty() {
        flags.push('N');
    }
    let multi = client
        .transaction
        .as_ref()
        .map_or(-1, |tx| i64::try_from(tx.queued.len()).unwrap_or(i64::MAX));
    let _ = writeln!(
        text,
        "id={id} addr={} laddr={} fd=-1 name={} age={age} idle={idle} flags={flags} db=0 sub=0 \
         psub=0 ssub=0 multi={multi} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 \
         oll=0 omem=0 tot-mem=0 events=r cmd={} user=default redir=-1 resp={} lib-name={} \
         lib-ver={}",
        client.addr,
        client.laddr,
        String::from_utf8_lossy(&client.name),
        if client.last_command.is_empty() { "NULL" } else { &client.last_command },
        client.protocol.number(),
        String::from_utf8_lossy(&client.lib_name),
        String::from_utf8_lossy(&client.lib_ver),
    );
}

/// `CLIENT NO-EVICT ON|OFF`.
fn client_no_evict(_: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    if let Some(on) = on_off(session, &args[2]) {
        session.client.no_evict = on;
        reply::ok(session.out);
    }
}

/// `CLIENT NO-TOUCH ON|OFF`.
fn client_no_touch(_: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    if let Some(on) = on_off(session, &args[2]) {
        session.client.no_touch = on;
        reply::ok(session.out);
    }
}

fn on_off(session: &mut Session<'_>, arg: &[u8]) -> Option<bool> {
    if is(arg, "on") {
        Some(true)
    } else if is(arg, "off") {
        Some(false)
    } else {
        reply::error(session.out, SYNTAX_ERROR);
        None
    }
}

/// `CLIENT REPLY ON|OFF|SKIP`: `ON` answers `+OK`; `OFF` and `SKIP` answer nothing, and silence
/// the replies that follow (all of them, or the next command's).
fn client_reply(_: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let mode = &args[2];
    if is(mode, "on") {
        session.client.reply = ReplyMode::On;
        reply::ok(session.out);
    } else if is(mode, "off") {
        session.client.reply = ReplyMode::Off;
    } else if is(mode, "skip") {
        if session.client.reply == ReplyMode::On {
            session.client.reply = ReplyMode::SkipNext;
        }
    } else {
        reply::error(session.out, SYNTAX_ERROR);
    }
}

fn client_help(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    help(
        session.out,
        "CLIENT",
        &[
            "GETNAME",
            "ID",
            "INFO",
            "LIST [TYPE (NORMAL|MASTER|REPLICA|PUBSUB)] [ID <id> [<id> ...]]",
            "NO-EVICT (ON|OFF)",
            "NO-TOUCH (ON|OFF)",
            "REPLY (ON|OFF|SKIP)",
            "SETINFO <LIB-NAME|LIB-VER> <value>",
            "SETNAME <name>",
            "HELP",
        ],
    );
}

/// How many connections the server knows: for `INFO clients`.
pub(super) fn connected(session: &Session<'_>) -> usize {
    session.others.len() + 1
}

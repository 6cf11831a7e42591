//! Connection and server commands: what clients send on their own before any data command
//! (`PING`, `SELECT 0`, `CLIENT SETINFO`, `CONFIG GET save`, `COMMAND DOCS`, `INFO`).
//!
//! A client library that gets an unexpected error here often refuses to start, so these answer
//! the way redis-server does even where there is nothing to do (one database, no persistence,
//! no client names).

use super::{COMMANDS, Command, NOT_AN_INTEGER, Session, execute_subcommand, is, wrong_arity};
use crate::db::Db;
use resp::{Arg, glob_match_nocase, reply};

/// `PING [message]`.
pub(super) fn ping(_: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    match args {
        [_] => reply::simple(session.out, "PONG"),
        [_, message] => reply::bulk(session.out, message),
        _ => wrong_arity(session.out, "ping"),
    }
}

/// `ECHO message`.
pub(super) fn echo(_: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    // The wrong release the canary tests must catch (feature `fixture-incr-off-by-one`) also
    // answers ECHO with nothing at all: a candidate silent where the old version replied.
    if cfg!(feature = "fixture-incr-off-by-one") {
        return;
    }
    reply::bulk(session.out, &args[1]);
}

/// `QUIT`: `+OK`, then the connection closes.
pub(super) fn quit(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    reply::ok(session.out);
    session.quit = true;
}

/// `SELECT index`: there is one database, number 0.
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

const COMMAND_SUBCOMMANDS: &[Command] = &[
    Command::new("command|count", 2, command_count_),
    Command::new("command|docs", -2, command_docs),
    Command::new("command|list", 2, command_list),
    Command::new("command|help", 2, command_help),
];

/// `COMMAND [COUNT | DOCS ... | LIST | HELP]`. Clients ask for documentation to show hints
/// (redis-cli does at start); an empty answer means "none", which they handle.
pub(super) fn command(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    if args.len() == 1 {
        reply::array(session.out, 0);
    } else {
        execute_subcommand(COMMAND_SUBCOMMANDS, db, session, args);
    }
}

fn command_count_(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    reply::integer(session.out, i64::try_from(COMMANDS.len()).unwrap_or(i64::MAX));
}

fn command_docs(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    reply::array(session.out, 0);
}

fn command_list(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    reply::array(session.out, COMMANDS.len());
    for command in COMMANDS {
        reply::bulk(session.out, command.name.as_bytes());
    }
}

fn command_help(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    help(
        session.out,
        "COMMAND",
        &["(no subcommand)", "COUNT", "DOCS [<command-name> ...]", "LIST", "HELP"],
    );
}

/// The configuration clients read. Nothing here is configurable: these are the facts, in
/// redis's words (no snapshots, no append-only file, one database).
const CONFIG: &[(&str, &str)] = &[("save", ""), ("appendonly", "no"), ("databases", "1")];

const CONFIG_SUBCOMMANDS: &[Command] = &[
    Command::new("config|get", -3, config_get),
    Command::new("config|set", -4, config_set),
    Command::new("config|resetstat", 2, config_resetstat),
    Command::new("config|help", 2, config_help),
];

/// `CONFIG GET pattern... | SET name value... | RESETSTAT | HELP`.
pub(super) fn config(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    execute_subcommand(CONFIG_SUBCOMMANDS, db, session, args);
}

/// Name/value pairs of every parameter that matches any of the patterns, each once.
fn config_get(_: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let patterns = &args[2..];
    let matching = || {
        CONFIG.iter().filter(|(name, _)| {
            patterns.iter().any(|pattern| glob_match_nocase(pattern, name.as_bytes()))
        })
    };
    reply::array(session.out, 2 * matching().count());
    for (name, value) in matching() {
        reply::bulk(session.out, name.as_bytes());
        reply::bulk(session.out, value.as_bytes());
    }
}

/// Accepted and ignored: benchmarks and test suites set parameters that mean nothing here.
fn config_set(_: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    if !args.len().is_multiple_of(2) {
        wrong_arity(session.out, "config|set");
    } else {
        reply::ok(session.out);
    }
}

fn config_resetstat(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    reply::ok(session.out);
}

fn config_help(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    help(
        session.out,
        "CONFIG",
        &[
            "GET <pattern> [<pattern> ...]",
            "SET <name> <value> [<name> <value> ...]",
            "RESETSTAT",
            "HELP",
        ],
    );
}

const CLIENT_SUBCOMMANDS: &[Command] = &[
    Command::new("client|setinfo", 4, client_setinfo),
    Command::new("client|setname", 3, client_ok),
    Command::new("client|getname", 2, client_getname),
    Command::new("client|id", 2, client_id),
    Command::new("client|help", 2, client_help),
];

/// `CLIENT SETINFO | SETNAME | GETNAME | ID | HELP`. Client libraries announce themselves on
/// connect; names are not kept.
pub(super) fn client(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    execute_subcommand(CLIENT_SUBCOMMANDS, db, session, args);
}

fn client_setinfo(_: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    if is(&args[2], "lib-name") || is(&args[2], "lib-ver") {
        reply::ok(session.out);
    } else {
        reply::error_with(session.out, |out| {
            out.extend_from_slice(b"ERR Unrecognized option '");
            out.extend_from_slice(super::c_string(&args[2], usize::MAX));
            out.push(b'\'');
        });
    }
}

fn client_ok(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    reply::ok(session.out);
}

fn client_getname(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    reply::null_bulk(session.out);
}

/// The connection id, which is the host's: stable across upgrades, like redis's client id.
fn client_id(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    reply::integer(session.out, i64::try_from(session.conn).unwrap_or(i64::MAX));
}

fn client_help(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    help(
        session.out,
        "CLIENT",
        &["SETINFO <LIB-NAME|LIB-VER> <value>", "SETNAME <name>", "GETNAME", "ID", "HELP"],
    );
}

/// A `HELP` reply: one simple string a line, opening with redis's own first line.
fn help(out: &mut Vec<u8>, container: &str, lines: &[&str]) {
    reply::array(out, lines.len() + 1);
    out.push(b'+');
    out.extend_from_slice(container.as_bytes());
    out.extend_from_slice(b" <subcommand> [<arg> [value] [opt] ...]. Subcommands are:\r\n");
    for line in lines {
        reply::simple(out, line);
    }
}

/// `INFO [section ...]`: the `server` and `keyspace` sections, the ones clients read (to learn
/// the version, to count keys). `tasuki_app` and `tasuki_version` tell which release answers.
pub(super) fn info(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let wants = |section: &str| {
        args.len() == 1
            || args[1..].iter().any(|arg| {
                is(arg, section) || is(arg, "all") || is(arg, "everything") || is(arg, "default")
            })
    };
    let mut text = String::new();
    if wants("server") {
        text.push_str("# Server\r\nredis_version:7.0.0\r\ntasuki_app:kv\r\n");
        text.push_str(concat!("tasuki_version:", env!("CARGO_PKG_VERSION"), "\r\n"));
    }
    if wants("keyspace") {
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        text.push_str("# Keyspace\r\n");
        let keys = db.len(session.now_ms);
        if keys > 0 {
            let expires = db.with_deadline(session.now_ms);
            text.push_str(&format!("db0:keys={keys},expires={expires},avg_ttl=0\r\n"));
        }
    }
    reply::bulk(session.out, text.as_bytes());
}

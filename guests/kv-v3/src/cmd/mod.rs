//! The command table, and the dispatch from a parsed request to the handler that runs it.
//!
//! Dispatch answers what redis answers before a command runs: an unknown name, an unknown
//! subcommand, a wrong number of arguments. Handlers can then index the arguments their arity
//! guarantees without checking again.

mod connection;
mod expire;
mod hashes;
mod keys;
mod lists;
mod strings;

use crate::db::Db;
use resp::{Arg, reply};
use tasuki_guest::ConnId;

/// What a command sees besides the keyspace: its connection and the reply buffer.
#[derive(Debug)]
pub(crate) struct Session<'o> {
    pub(crate) conn: ConnId,
    /// The connection's output for this event; replies are encoded straight into it.
    pub(crate) out: &'o mut Vec<u8>,
    /// The time the request runs at, Unix milliseconds: what deadlines are compared with.
    pub(crate) now_ms: u64,
    /// Set by `QUIT`: close the connection after this reply and run nothing after it.
    pub(crate) quit: bool,
}

/// Runs one command. `args[0]` is the command name; the arity has been checked.
type Handler = fn(&mut Db, &mut Session<'_>, &[Arg<'_>]);

/// A command: its name, how many arguments it takes, and what runs it.
#[derive(Debug)]
struct Command {
    /// The name as redis prints it in errors: lowercase, `container|sub` for a subcommand.
    name: &'static str,
    /// The word a client types to call it: `get`, or the `get` of `config|get`.
    word: &'static [u8],
    /// Redis's convention, counting the name: `n` is exactly `n` arguments, `-n` at least `n`.
    arity: i32,
    run: Handler,
}

impl Command {
    const fn new(name: &'static str, arity: i32, run: Handler) -> Self {
        // The word follows the last `|`; found here, at compile time, rather than per lookup.
        let bytes = name.as_bytes();
        let mut start = bytes.len();
        while start > 0 && bytes[start - 1] != b'|' {
            start -= 1;
        }
        Self { name, word: bytes.split_at(start).1, arity, run }
    }

    fn accepts(&self, argc: usize) -> bool {
        let count = self.arity.unsigned_abs() as usize;
        if self.arity >= 0 { argc == count } else { argc >= count }
    }
}

/// Every command of this release, the most frequent first (the lookup is a scan).
const COMMANDS: &[Command] = &[
    Command::new("get", 2, strings::get),
    Command::new("set", -3, strings::set),
    Command::new("incr", 2, strings::incr),
    Command::new("ping", -1, connection::ping),
    Command::new("mget", -2, strings::mget),
    Command::new("mset", -3, strings::mset),
    Command::new("del", -2, keys::del),
    Command::new("exists", -2, keys::exists),
    Command::new("expire", -3, expire::expire),
    Command::new("ttl", 2, expire::ttl),
    Command::new("lpush", -3, lists::lpush),
    Command::new("rpush", -3, lists::rpush),
    Command::new("lpop", -2, lists::lpop),
    Command::new("rpop", -2, lists::rpop),
    Command::new("lrange", 4, lists::lrange),
    Command::new("llen", 2, lists::llen),
    Command::new("hset", -4, hashes::hset),
    Command::new("hget", 3, hashes::hget),
    Command::new("hdel", -3, hashes::hdel),
    Command::new("hgetall", 2, hashes::hgetall),
    Command::new("hlen", 2, hashes::hlen),
    Command::new("decr", 2, strings::decr),
    Command::new("incrby", 3, strings::incrby),
    Command::new("decrby", 3, strings::decrby),
    Command::new("append", 3, strings::append),
    Command::new("strlen", 2, strings::strlen),
    Command::new("setex", 4, strings::setex),
    Command::new("psetex", 4, strings::psetex),
    Command::new("setnx", 3, strings::setnx),
    Command::new("pexpire", -3, expire::pexpire),
    Command::new("expireat", -3, expire::expireat),
    Command::new("pexpireat", -3, expire::pexpireat),
    Command::new("pttl", 2, expire::pttl),
    Command::new("expiretime", 2, expire::expiretime),
    Command::new("pexpiretime", 2, expire::pexpiretime),
    Command::new("persist", 2, expire::persist),
    Command::new("unlink", -2, keys::del),
    Command::new("type", 2, keys::type_),
    Command::new("keys", 2, keys::keys),
    Command::new("dbsize", 1, keys::dbsize),
    Command::new("flushall", -1, keys::flush),
    Command::new("flushdb", -1, keys::flush),
    Command::new("echo", 2, connection::echo),
    Command::new("quit", -1, connection::quit),
    Command::new("select", 2, connection::select),
    Command::new("command", -1, connection::command),
    Command::new("config", -2, connection::config),
    Command::new("client", -2, connection::client),
    Command::new("info", -1, connection::info),
];

const SYNTAX_ERROR: &str = "ERR syntax error";
const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
/// Redis's text, exactly: clients match on the `WRONGTYPE` code, tests on the whole line.
const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// Runs the request `args` (not empty), replying into `session.out`.
pub(crate) fn execute(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    match find(COMMANDS, &args[0]) {
        Some(command) => run(command, db, session, args),
        None => unknown_command(session.out, args),
    }
}

/// Runs the subcommand `args[1]` of the container command `args[0]` (`CONFIG GET`), from
/// `table`, or replies redis's error for an unknown one.
fn execute_subcommand(table: &[Command], db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    match find(table, &args[1]) {
        Some(command) => run(command, db, session, args),
        None => reply::error_with(session.out, |out| {
            out.extend_from_slice(b"ERR unknown subcommand '");
            out.extend_from_slice(c_string(&args[1], 128));
            out.extend_from_slice(b"'. Try ");
            out.extend(c_string(&args[0], usize::MAX).iter().map(u8::to_ascii_uppercase));
            out.extend_from_slice(b" HELP.");
        }),
    }
}

fn find<'t>(table: &'t [Command], word: &[u8]) -> Option<&'t Command> {
    table.iter().find(|command| command.word.eq_ignore_ascii_case(word))
}

fn run(command: &Command, db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    if command.accepts(args.len()) {
        (command.run)(db, session, args);
    } else {
        wrong_arity(session.out, command.name);
    }
}

/// `-ERR wrong number of arguments for 'get' command`.
fn wrong_arity(out: &mut Vec<u8>, name: &str) {
    reply::error_with(out, |out| {
        out.extend_from_slice(b"ERR wrong number of arguments for '");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"' command");
    });
}

/// Redis 7's text, trailing space included: `-ERR unknown command 'foo', with args beginning
/// with: 'a' 'b' `. The name is cut at 128 bytes, the quoted arguments at 128 bytes in all.
fn unknown_command(out: &mut Vec<u8>, args: &[Arg<'_>]) {
    reply::error_with(out, |out| {
        out.extend_from_slice(b"ERR unknown command '");
        out.extend_from_slice(c_string(&args[0], 128));
        out.extend_from_slice(b"', with args beginning with: ");
        let mut written = 0;
        for arg in &args[1..] {
            if written >= 128 {
                break;
            }
            let arg = c_string(arg, 128 - written);
            out.push(b'\'');
            out.extend_from_slice(arg);
            out.extend_from_slice(b"' ");
            written += arg.len() + 3;
        }
    });
}

/// `bytes` as C's `%.{limit}s` prints it: up to the first NUL, at most `limit` bytes. Redis
/// formats client bytes into errors that way, and clients' tests compare the texts.
fn c_string(bytes: &[u8], limit: usize) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len()).min(limit);
    &bytes[..end]
}

/// Whether `arg` is `word`, ignoring ASCII case: how redis matches options (`NX`, `ASYNC`).
fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

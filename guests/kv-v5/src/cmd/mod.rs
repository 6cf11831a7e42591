//! The command table, and the dispatch from a parsed request to the handler that runs it.
//!
//! Dispatch answers what redis answers before a command runs, in redis's order: an unknown name,
//! an unknown subcommand, a wrong number of arguments, then `NOAUTH` for a connection that has
//! to authenticate first. Inside `MULTI` it queues instead of running, and a refusal marks the
//! transaction failed. Handlers can then index the arguments their arity guarantees without
//! checking again.

mod connection;
mod expire;
mod hashes;
mod keys;
mod lists;
mod scan;
mod server;
mod sets;
mod strings;
mod transactions;
mod zsets;

use crate::client::{Client, Transaction};
use crate::db::Db;
use crate::random::Rng;
use crate::{Config, Stats};
use resp::{Arg, Protocol, reply};
use std::collections::BTreeMap;
use tasuki_guest::ConnId;

/// The connections other than the one whose event runs: the clients' map, in which that one's
/// entry holds a spare while its client is lent to the event.
#[derive(Debug)]
pub(crate) struct Others<'o> {
    clients: &'o BTreeMap<ConnId, Box<Client>>,
    current: ConnId,
}

impl<'o> Others<'o> {
    pub(crate) fn new(clients: &'o BTreeMap<ConnId, Box<Client>>, current: ConnId) -> Self {
        Self { clients, current }
    }

    /// Each other connection and its state, by id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (ConnId, &'o Client)> + use<'o> {
        let current = self.current;
        self.clients.iter().filter(move |(id, _)| **id != current).map(|(id, c)| (*id, &**c))
    }

    /// How many: the map less the lent entry, which is in it for the whole event.
    pub(crate) fn len(&self) -> usize {
        self.clients.len().saturating_sub(1)
    }
}

/// What a command sees besides the keyspace: its connection's state, the other connections,
/// the server's configuration and counters, and the reply buffer.
#[derive(Debug)]
pub(crate) struct Session<'o> {
    pub(crate) conn: ConnId,
    /// The connection's output for this event; replies are encoded straight into it.
    pub(crate) out: &'o mut Vec<u8>,
    /// The time the request runs at, Unix milliseconds: what deadlines are compared with.
    pub(crate) now_ms: u64,
    /// Set by `QUIT`: close the connection after this reply and run nothing after it.
    pub(crate) quit: bool,
    /// This connection's state (lent out of the clients' map for the event).
    pub(crate) client: &'o mut Client,
    /// Every other connection, for `CLIENT LIST` and `INFO`.
    pub(crate) others: Others<'o>,
    pub(crate) config: &'o Config,
    pub(crate) stats: &'o Stats,
    /// Where `SPOP`, `SRANDMEMBER` and `RANDOMKEY` draw from: seeded by the event, so that a
    /// replay draws the same (see `crate::random`).
    pub(crate) rng: Rng,
}

impl Session<'_> {
    /// The protocol this connection speaks now.
    pub(crate) fn protocol(&self) -> Protocol {
        self.client.protocol
    }
}

/// Runs one command. `args[0]` is the command name; the arity has been checked.
type Handler = fn(&mut Db, &mut Session<'_>, &[Arg<'_>]);

/// Runs without authentication (`AUTH`, `HELLO`, `QUIT`, `RESET`).
const NO_AUTH: u8 = 1;
/// Runs at once inside `MULTI` rather than being queued (`EXEC`, `DISCARD`, `MULTI`, `WATCH`,
/// `QUIT`, `RESET`).
const NOT_QUEUED: u8 = 2;
/// Changes the keyspace (`COMMAND INFO` says `write`).
const WRITE: u8 = 4;
/// Reads the keyspace without changing it (`readonly`).
const READ: u8 = 8;

/// A command: its name, how many arguments it takes, which are keys, and what runs it.
#[derive(Debug)]
pub(crate) struct Command {
    /// The name as redis prints it in errors: lowercase, `container|sub` for a subcommand.
    pub(crate) name: &'static str,
    /// The word a client types to call it: `get`, or the `get` of `config|get`.
    word: &'static [u8],
    /// Redis's convention, counting the name: `n` is exactly `n` arguments, `-n` at least `n`.
    pub(crate) arity: i32,
    run: Handler,
    flags: u8,
    /// Redis's legacy key positions (`COMMAND INFO`): first and last key argument (a negative
    /// last counts from the end) and the step between keys; all 0 for a command without keys.
    pub(crate) keys: (i32, i32, i32),
}

impl Command {
    const fn new(name: &'static str, arity: i32, run: Handler) -> Self {
        // The word follows the last `|`; found here, at compile time, rather than per lookup.
        let bytes = name.as_bytes();
        let mut start = bytes.len();
        while start > 0 && bytes[start - 1] != b'|' {
            start -= 1;
        }
        Self { name, word: bytes.split_at(start).1, arity, run, flags: 0, keys: (0, 0, 0) }
    }

    /// A command with one key, its first argument.
    const fn key(self) -> Self {
        self.keys(1, 1, 1)
    }

    const fn keys(mut self, first: i32, last: i32, step: i32) -> Self {
        self.keys = (first, last, step);
        self
    }

    const fn flags(mut self, flags: u8) -> Self {
        self.flags |= flags;
        self
    }

    const fn write(self) -> Self {
        self.flags(WRITE)
    }

    const fn read(self) -> Self {
        self.flags(READ)
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn accepts(&self, argc: usize) -> bool {
        let count = self.arity.unsigned_abs() as usize;
        if self.arity >= 0 { argc == count } else { argc >= count }
    }

    /// The flags `COMMAND INFO` lists.
    pub(crate) fn flag_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.has(WRITE) {
            names.push("write");
        }
        if self.has(READ) {
            names.push("readonly");
        }
        if self.has(NO_AUTH) {
            names.push("no_auth");
        }
        if self.has(NOT_QUEUED) {
            names.push("no_multi");
        }
        names
    }
}

/// Every command of this release, the most frequent first (the lookup is a scan).
pub(crate) const COMMANDS: &[Command] = &[
    Command::new("get", 2, strings::get).key().read(),
    Command::new("set", -3, strings::set).key().write(),
    Command::new("incr", 2, strings::incr).key().write(),
    Command::new("ping", -1, connection::ping),
    Command::new("mget", -2, strings::mget).keys(1, -1, 1).read(),
    Command::new("mset", -3, strings::mset).keys(1, -1, 2).write(),
    Command::new("del", -2, keys::del).keys(1, -1, 1).write(),
    Command::new("exists", -2, keys::exists).keys(1, -1, 1).read(),
    Command::new("expire", -3, expire::expire).key().write(),
    Command::new("ttl", 2, expire::ttl).key().read(),
    Command::new("multi", 1, transactions::multi).flags(NOT_QUEUED),
    Command::new("exec", 1, transactions::exec).flags(NOT_QUEUED),
    Command::new("discard", 1, transactions::discard).flags(NOT_QUEUED),
    Command::new("watch", -2, transactions::watch).keys(1, -1, 1).flags(NOT_QUEUED),
    Command::new("unwatch", 1, transactions::unwatch),
    Command::new("lpush", -3, lists::lpush).key().write(),
    Command::new("rpush", -3, lists::rpush).key().write(),
    Command::new("lpop", -2, lists::lpop).key().write(),
    Command::new("rpop", -2, lists::rpop).key().write(),
    Command::new("lrange", 4, lists::lrange).key().read(),
    Command::new("llen", 2, lists::llen).key().read(),
    Command::new("hset", -4, hashes::hset).key().write(),
    Command::new("hget", 3, hashes::hget).key().read(),
    Command::new("hdel", -3, hashes::hdel).key().write(),
    Command::new("hgetall", 2, hashes::hgetall).key().read(),
    Command::new("hlen", 2, hashes::hlen).key().read(),
    Command::new("sadd", -3, sets::sadd).key().write(),
    Command::new("spop", -2, sets::spop).key().write(),
    Command::new("zadd", -4, zsets::zadd).key().write(),
    Command::new("zpopmin", -2, zsets::zpopmin).key().write(),
    Command::new("srem", -3, sets::srem).key().write(),
    Command::new("smembers", 2, sets::smembers).key().read(),
    Command::new("sismember", 3, sets::sismember).key().read(),
    Command::new("smismember", -3, sets::smismember).key().read(),
    Command::new("scard", 2, sets::scard).key().read(),
    Command::new("srandmember", -2, sets::srandmember).key().read(),
    Command::new("zincrby", 4, zsets::zincrby).key().write(),
    Command::new("zrem", -3, zsets::zrem).key().write(),
    Command::new("zcard", 2, zsets::zcard).key().read(),
    Command::new("zscore", 3, zsets::zscore).key().read(),
    Command::new("zmscore", -3, zsets::zmscore).key().read(),
    Command::new("zrank", -3, zsets::zrank).key().read(),
    Command::new("zrevrank", -3, zsets::zrevrank).key().read(),
    Command::new("zcount", 4, zsets::zcount).key().read(),
    Command::new("zrange", -4, zsets::zrange).key().read(),
    Command::new("zrevrange", -4, zsets::zrevrange).key().read(),
    Command::new("zrangebyscore", -4, zsets::zrangebyscore).key().read(),
    Command::new("zrevrangebyscore", -4, zsets::zrevrangebyscore).key().read(),
    Command::new("zrangebylex", -4, zsets::zrangebylex).key().read(),
    Command::new("zpopmax", -2, zsets::zpopmax).key().write(),
    Command::new("scan", -2, scan::scan).read(),
    Command::new("hscan", -3, scan::hscan).key().read(),
    Command::new("sscan", -3, scan::sscan).key().read(),
    Command::new("zscan", -3, scan::zscan).key().read(),
    Command::new("lpos", -3, lists::lpos).key().read(),
    Command::new("decr", 2, strings::decr).key().write(),
    Command::new("incrby", 3, strings::incrby).key().write(),
    Command::new("decrby", 3, strings::decrby).key().write(),
    Command::new("append", 3, strings::append).key().write(),
    Command::new("strlen", 2, strings::strlen).key().read(),
    Command::new("setex", 4, strings::setex).key().write(),
    Command::new("psetex", 4, strings::psetex).key().write(),
    Command::new("setnx", 3, strings::setnx).key().write(),
    Command::new("msetnx", -3, strings::msetnx).keys(1, -1, 2).write(),
    Command::new("getset", 3, strings::getset).key().write(),
    Command::new("getdel", 2, strings::getdel).key().write(),
    Command::new("getex", -2, strings::getex).key().write(),
    Command::new("setrange", 4, strings::setrange).key().write(),
    Command::new("getrange", 4, strings::getrange).key().read(),
    Command::new("substr", 4, strings::getrange).key().read(),
    Command::new("incrbyfloat", 3, strings::incrbyfloat).key().write(),
    Command::new("pexpire", -3, expire::pexpire).key().write(),
    Command::new("expireat", -3, expire::expireat).key().write(),
    Command::new("pexpireat", -3, expire::pexpireat).key().write(),
    Command::new("pttl", 2, expire::pttl).key().read(),
    Command::new("expiretime", 2, expire::expiretime).key().read(),
    Command::new("pexpiretime", 2, expire::pexpiretime).key().read(),
    Command::new("persist", 2, expire::persist).key().write(),
    Command::new("unlink", -2, keys::del).keys(1, -1, 1).write(),
    Command::new("type", 2, keys::type_).key().read(),
    Command::new("rename", 3, keys::rename).keys(1, 2, 1).write(),
    Command::new("renamenx", 3, keys::renamenx).keys(1, 2, 1).write(),
    Command::new("randomkey", 1, keys::randomkey).read(),
    Command::new("keys", 2, keys::keys).read(),
    Command::new("dbsize", 1, keys::dbsize).read(),
    Command::new("flushall", -1, keys::flush).write(),
    Command::new("flushdb", -1, keys::flush).write(),
    Command::new("echo", 2, connection::echo),
    Command::new("hello", -1, connection::hello).flags(NO_AUTH),
    Command::new("auth", -2, connection::auth).flags(NO_AUTH),
    Command::new("quit", -1, connection::quit).flags(NO_AUTH | NOT_QUEUED),
    Command::new("reset", 1, connection::reset).flags(NO_AUTH | NOT_QUEUED),
    Command::new("select", 2, connection::select),
    Command::new("client", -2, connection::client),
    Command::new("command", -1, server::command),
    Command::new("config", -2, server::config),
    Command::new("info", -1, server::info),
    Command::new("memory", -2, server::memory),
];

const SYNTAX_ERROR: &str = "ERR syntax error";
const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
/// Redis's text, exactly: clients match on the `WRONGTYPE` code, tests on the whole line.
const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";

/// Runs the request `args` (not empty), replying into `session.out`: at once, or, inside
/// `MULTI`, by queuing it.
pub(crate) fn execute(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let Some(command) = find(COMMANDS, &args[0]) else {
        reject(db, session, None, |out| unknown_command(out, args));
        return;
    };
    let command = match subcommand(command, args) {
        Ok(command) => command,
        Err(()) => {
            reject(db, session, Some(command), |out| unknown_subcommand(out, args));
            return;
        }
    };
    if !command.accepts(args.len()) {
        reject(db, session, Some(command), |out| write_wrong_arity(out, command.name));
        return;
    }
    if !session.client.authenticated && !command.has(NO_AUTH) {
        reject(db, session, Some(command), |out| {
            out.extend_from_slice(b"NOAUTH Authentication required.");
        });
        return;
    }
    if let Some(transaction) = &mut session.client.transaction
        && !command.has(NOT_QUEUED)
    {
        transaction.queued.push(args.iter().map(|arg| arg.to_vec()).collect());
        reply::simple(session.out, "QUEUED");
        return;
    }
    if session.client.last_command != command.name {
        session.client.last_command.clear();
        session.client.last_command.push_str(command.name);
    }
    (command.run)(db, session, args);
}

/// The subcommand a container command (`CLIENT`, `CONFIG`, `COMMAND`) names in `args[1]`; the
/// command itself when it is not a container or takes none (`COMMAND`); `Err` for an unknown
/// one.
fn subcommand(command: &'static Command, args: &[Arg<'_>]) -> Result<&'static Command, ()> {
    let table = match command.name {
        "client" => connection::CLIENT_SUBCOMMANDS,
        "config" => server::CONFIG_SUBCOMMANDS,
        "memory" => server::MEMORY_SUBCOMMANDS,
        "command" if args.len() > 1 => server::COMMAND_SUBCOMMANDS,
        _ => return Ok(command),
    };
    match args.get(1) {
        Some(word) => find(table, word).ok_or(()),
        // Too few arguments: the arity check that follows says so.
        None => Ok(command),
    }
}

/// Answers a command refused before it ran, with the error `write` appends. Inside `MULTI` the
/// refusal fails the transaction; a refused `EXEC` discards it, as redis does.
fn reject(
    db: &mut Db,
    session: &mut Session<'_>,
    command: Option<&Command>,
    write: impl FnOnce(&mut Vec<u8>),
) {
    if command.is_some_and(|command| command.name == "exec") {
        reply::error_with(session.out, |out| {
            out.extend_from_slice(b"EXECABORT Transaction discarded because of: ");
            write(out);
        });
        transactions::end(db, session);
        return;
    }
    if let Some(Transaction { failed, .. }) = &mut session.client.transaction {
        *failed = true;
    }
    reply::error_with(session.out, write);
}

/// The subcommand of a container command named by `word`.
fn find(table: &'static [Command], word: &[u8]) -> Option<&'static Command> {
    table.iter().find(|command| command.word.eq_ignore_ascii_case(word))
}

/// `-ERR unknown subcommand 'foo'. Try CONFIG HELP.`
fn unknown_subcommand(out: &mut Vec<u8>, args: &[Arg<'_>]) {
    out.extend_from_slice(b"ERR unknown subcommand '");
    out.extend_from_slice(c_string(&args[1], 128));
    out.extend_from_slice(b"'. Try ");
    out.extend(c_string(&args[0], usize::MAX).iter().map(u8::to_ascii_uppercase));
    out.extend_from_slice(b" HELP.");
}

/// `:n` for a count of things.
fn count(out: &mut Vec<u8>, n: usize) {
    reply::integer(out, i64::try_from(n).unwrap_or(i64::MAX));
}

/// `-ERR wrong number of arguments for 'get' command`.
fn wrong_arity(out: &mut Vec<u8>, name: &str) {
    reply::error_with(out, |out| write_wrong_arity(out, name));
}

fn write_wrong_arity(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b"ERR wrong number of arguments for '");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"' command");
}

/// Redis 7's text, trailing space included: `-ERR unknown command 'foo', with args beginning
/// with: 'a' 'b' `. The name is cut at 128 bytes, the quoted arguments at 128 bytes in all.
fn unknown_command(out: &mut Vec<u8>, args: &[Arg<'_>]) {
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

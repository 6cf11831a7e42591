//! Server commands: `COMMAND` (what kv implements), `CONFIG` (what it is configured with), and
//! `INFO` (what it is doing), in redis 7's shapes, so that tools and client libraries that read
//! them find the fields they look for.
//!
//! `CONFIG SET` never pretends: a parameter set to the value it already has is accepted, any
//! other value is refused with redis's `CONFIG SET failed` error and a reason, and an unknown
//! parameter is refused as redis refuses it.

use super::connection::connected;
use super::{
    COMMANDS, Command, NOT_AN_INTEGER, SYNTAX_ERROR, Session, c_string, help, is, wrong_arity,
};
use crate::REDIS_VERSION;
use crate::db::Db;
use resp::{Arg, glob_match_nocase, reply};
use std::fmt::Write as _;

pub(super) const COMMAND_SUBCOMMANDS: &[Command] = &[
    Command::new("command|count", 2, command_count),
    Command::new("command|docs", -2, command_docs),
    Command::new("command|info", -2, command_info),
    Command::new("command|list", -2, command_list),
    Command::new("command|help", 2, command_help),
];

/// `COMMAND`: every command's `COMMAND INFO`.
pub(super) fn command(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    reply::array(session.out, COMMANDS.len());
    for command in COMMANDS {
        command_entry(session, command);
    }
}

fn command_count(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    reply::integer(session.out, i64::try_from(COMMANDS.len()).unwrap_or(i64::MAX));
}

/// `COMMAND INFO [name...]`: per name, redis's ten fields, or a null for an unknown command.
/// Key specifications, ACL categories and tips are left empty: clients use the legacy key
/// positions, which are given.
fn command_info(_: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    if args.len() == 2 {
        reply::array(session.out, COMMANDS.len());
        for command in COMMANDS {
            command_entry(session, command);
        }
        return;
    }
    reply::array(session.out, args.len() - 2);
    for name in &args[2..] {
        match super::find(COMMANDS, name) {
            Some(command) => command_entry(session, command),
            None => reply::null(session.out, session.protocol()),
        }
    }
}

fn command_entry(session: &mut Session<'_>, command: &Command) {
    let protocol = session.protocol();
    let out = &mut *session.out;
    reply::array(out, 10);
    reply::bulk(out, command.name.as_bytes());
    reply::integer(out, i64::from(command.arity));
    let flags = command.flag_names();
    reply::set(out, protocol, flags.len());
    for flag in flags {
        reply::simple(out, flag);
    }
    let (first, last, step) = command.keys;
    reply::integer(out, i64::from(first));
    reply::integer(out, i64::from(last));
    reply::integer(out, i64::from(step));
    reply::set(out, protocol, 0);
    reply::set(out, protocol, 0);
    reply::array(out, 0);
    let subcommands = match command.name {
        "client" => super::connection::CLIENT_SUBCOMMANDS,
        "config" => CONFIG_SUBCOMMANDS,
        "command" => COMMAND_SUBCOMMANDS,
        _ => &[],
    };
    reply::array(session.out, subcommands.len());
    for subcommand in subcommands {
        command_entry(session, subcommand);
    }
}

/// `COMMAND DOCS [name...]`: a map from each known command named (every command, with no
/// names) to its documentation, which kv leaves empty: clients that show hints (redis-cli)
/// show none.
fn command_docs(_: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let protocol = session.protocol();
    let named: Vec<&Command> = if args.len() == 2 {
        COMMANDS.iter().collect()
    } else {
        args[2..].iter().filter_map(|name| super::find(COMMANDS, name)).collect()
    };
    reply::map(session.out, protocol, named.len());
    for command in named {
        reply::bulk(session.out, command.name.as_bytes());
        reply::map(session.out, protocol, 0);
    }
}

/// `COMMAND LIST [FILTERBY PATTERN pattern]`.
fn command_list(_: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let pattern: Option<&[u8]> = match &args[2..] {
        [] => None,
        [filter, kind, pattern] if is(filter, "filterby") && is(kind, "pattern") => Some(pattern),
        _ => {
            reply::error(session.out, super::SYNTAX_ERROR);
            return;
        }
    };
    let names: Vec<&str> = COMMANDS
        .iter()
        .map(|command| command.name)
        .filter(|name| pattern.is_none_or(|pattern| glob_match_nocase(pattern, name.as_bytes())))
        .collect();
    reply::array(session.out, names.len());
    for name in names {
        reply::bulk(session.out, name.as_bytes());
    }
}

fn command_help(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    help(
        session.out,
        "COMMAND",
        &[
            "(no subcommand)",
            "COUNT",
            "DOCS [<command-name> ...]",
            "INFO [<command-name> ...]",
            "LIST [FILTERBY PATTERN <pattern>]",
            "HELP",
        ],
    );
}

pub(super) const CONFIG_SUBCOMMANDS: &[Command] = &[
    Command::new("config|get", -3, config_get),
    Command::new("config|set", -4, config_set),
    Command::new("config|resetstat", 2, config_resetstat),
    Command::new("config|help", 2, config_help),
];

/// `CONFIG`, which takes a subcommand: dispatch finds it, so this runs only for none.
pub(super) fn config(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    wrong_arity(session.out, "config");
}

/// The parameters `CONFIG GET` reports: what this server is, in redis's names and units.
fn parameters(session: &Session<'_>) -> Vec<(&'static str, String)> {
    let port = session.client.laddr.rsplit_once(':').map_or("0", |(_, port)| port).to_string();
    let requirepass = session
        .config
        .requirepass
        .as_ref()
        .map_or_else(String::new, |password| String::from_utf8_lossy(password).into_owned());
    vec![
        ("save", String::new()),
        ("appendonly", "no".into()),
        ("databases", "1".into()),
        ("requirepass", requirepass),
        ("maxmemory", "0".into()),
        ("maxmemory-policy", "noeviction".into()),
        ("timeout", "0".into()),
        ("port", port),
        ("proto-max-bulk-len", resp::max_bulk_len().to_string()),
        ("cluster-enabled", "no".into()),
        ("notify-keyspace-events", String::new()),
    ]
}

/// Why a parameter keeps the value it has, for `CONFIG SET` to say.
fn fixed_because(name: &str) -> &'static str {
    match name {
        "save" | "appendonly" => "kv keeps its state in memory and moves it by state transfer",
        "requirepass" => "the password is set with `tasuki run --arg requirepass=...`",
        "port" => "tasuki owns the listening sockets (`tasuki run --listen`)",
        _ => "can't set immutable config",
    }
}

/// `CONFIG GET pattern...`: name/value pairs of every parameter that matches any of the
/// patterns, each once; a map in RESP3.
fn config_get(_: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let patterns = &args[2..];
    let matching: Vec<(&str, String)> = parameters(session)
        .into_iter()
        .filter(|(name, _)| {
            patterns.iter().any(|pattern| glob_match_nocase(pattern, name.as_bytes()))
        })
        .collect();
    reply::map(session.out, session.protocol(), matching.len());
    for (name, value) in matching {
        reply::bulk(session.out, name.as_bytes());
        reply::bulk(session.out, value.as_bytes());
    }
}

/// `CONFIG SET name value...`: every pair is checked before anything is taken; a value equal to
/// the current one is accepted (nothing changes), anything else is refused.
fn config_set(_: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    if !args.len().is_multiple_of(2) {
        wrong_arity(session.out, "config|set");
        return;
    }
    let parameters = parameters(session);
    for pair in args[2..].chunks_exact(2) {
        let (name, value) = (&pair[0], &pair[1]);
        let Some((known, current)) = parameters.iter().find(|(known, _)| is(name, known)) else {
            reply::error_with(session.out, |out| {
                out.extend_from_slice(
                    b"ERR Unknown option or number of arguments for CONFIG SET - '",
                );
                out.extend_from_slice(c_string(name, usize::MAX));
                out.push(b'\'');
            });
            return;
        };
        if current.as_bytes() != value.as_ref() {
            reply::error_with(session.out, |out| {
                let _ = write!(
                    StringSink(out),
                    "ERR CONFIG SET failed (possibly related to argument '{known}') - {}",
                    fixed_because(known)
                );
            });
            return;
        }
    }
    reply::ok(session.out);
}

/// Lets `write!` append to a reply buffer.
struct StringSink<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for StringSink<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
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

/// Bytes the allocator has handed out and not taken back, as redis's `used_memory` counts
/// them (the SDK's counting allocator; native unit tests report 0).
fn used_memory() -> u64 {
    tasuki_guest::heap::in_use()
}

/// `MEMORY`, which takes a subcommand: dispatch finds it, so this runs only for none.
pub(super) fn memory(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    wrong_arity(session.out, "memory");
}

pub(super) const MEMORY_SUBCOMMANDS: &[Command] = &[
    Command::new("memory|usage", -3, memory_usage).read(),
    Command::new("memory|help", 2, memory_help),
];

/// `MEMORY USAGE key [SAMPLES count]`: the bytes the key and its value take, or nil. As in
/// redis, a collection is estimated from 5 elements by default, and `SAMPLES 0` counts all.
fn memory_usage(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    // `SAMPLES` may be given more than once; the last one counts, as in redis.
    let mut samples = 5;
    let mut options = &args[3..];
    while let [option, rest @ ..] = options {
        let [count, rest @ ..] = rest else { return reply::error(session.out, SYNTAX_ERROR) };
        if !is(option, "samples") {
            return reply::error(session.out, SYNTAX_ERROR);
        }
        samples = match resp::parse_i64(count) {
            Some(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
            Some(_) => return reply::error(session.out, SYNTAX_ERROR),
            None => return reply::error(session.out, NOT_AN_INTEGER),
        };
        options = rest;
    }
    match db.usage(&args[2], session.now_ms, samples) {
        Some(bytes) => reply::integer(session.out, bytes as i64),
        None => reply::null(session.out, session.protocol()),
    }
}

fn memory_help(_: &mut Db, session: &mut Session<'_>, _: &[Arg<'_>]) {
    help(session.out, "MEMORY", &["USAGE <key> [SAMPLES <count>]", "HELP"]);
}

/// `1.42M`, as redis's `bytesToHuman` writes sizes.
fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b < 1024.0 {
        format!("{bytes}B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.2}K", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}M", b / (1024.0 * 1024.0))
    } else {
        format!("{:.2}G", b / (1024.0 * 1024.0 * 1024.0))
    }
}

/// The sections `INFO` with no argument (or `default`) shows, in redis's order.
const SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "cluster",
    "keyspace",
];

/// `INFO [section...]`: redis's sections and the fields clients and tools parse, with this
/// server's real figures: its release, uptime, connections, commands, linear memory, keys.
/// `tasuki_app` and `tasuki_version` tell which release answers. Text in RESP2, verbatim text
/// in RESP3.
pub(super) fn info(db: &mut Db, session: &mut Session<'_>, args: &[Arg<'_>]) {
    let everything = args.len() == 1
        || args[1..]
            .iter()
            .any(|arg| is(arg, "all") || is(arg, "everything") || is(arg, "default"));
    let wanted: Vec<&str> = SECTIONS
        .iter()
        .copied()
        .filter(|section| everything || args[1..].iter().any(|arg| is(arg, section)))
        .collect();
    let now = session.now_ms;
    let mut text = String::new();
    for section in wanted {
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        let stats = session.stats;
        let uptime = now.saturating_sub(stats.started_ms) / 1000;
        let _ = match section {
            "server" => write!(
                text,
                "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_git_sha1:00000000\r\n\
                 redis_git_dirty:0\r\nredis_mode:standalone\r\nos:tasuki wasm32-wasip2\r\n\
                 arch_bits:{}\r\nmultiplexing_api:tasuki\r\nprocess_id:0\r\ntcp_port:{}\r\n\
                 server_time_usec:{}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\n\
                 tasuki_app:kv\r\ntasuki_version:{}\r\n",
                usize::BITS,
                session.client.laddr.rsplit_once(':').map_or("0", |(_, port)| port),
                now.saturating_mul(1000),
                uptime / 86_400,
                env!("CARGO_PKG_VERSION"),
            ),
            "clients" => write!(
                text,
                "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\n\
                 tracking_clients:0\r\n",
                connected(session),
                tasuki_guest::host::max_connections()
            ),
            "memory" => {
                let used = used_memory();
                // The host's resident memory: the process holds every instance and the
                // host's buffers, which is what a dashboard sizing the machine wants.
                let rss = tasuki_guest::host::resident_memory();
                write!(
                    text,
                    "# Memory\r\nused_memory:{used}\r\nused_memory_human:{}\r\n\
                     used_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nmaxmemory:0\r\n\
                     maxmemory_human:0B\r\nmaxmemory_policy:noeviction\r\n",
                    human(used),
                    human(rss)
                )
            }
            "persistence" => text.write_str(
                "# Persistence\r\nloading:0\r\nrdb_bgsave_in_progress:0\r\naof_enabled:0\r\n\
                 aof_rewrite_in_progress:0\r\n",
            ),
            "stats" => write!(
                text,
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
                 instantaneous_ops_per_sec:0\r\nrejected_connections:0\r\nexpired_keys:0\r\n\
                 evicted_keys:0\r\n",
                stats.connections_received, stats.commands_processed
            ),
            "replication" => text.write_str(
                "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:0\r\n",
            ),
            "cpu" => text.write_str("# CPU\r\n"),
            "cluster" => text.write_str("# Cluster\r\ncluster_enabled:0\r\n"),
            "keyspace" => {
                let mut section = String::from("# Keyspace\r\n");
                let keys = db.len(now);
                if keys > 0 {
                    let expires = db.with_deadline(now);
                    let _ = write!(section, "db0:keys={keys},expires={expires},avg_ttl=0\r\n");
                }
                text.write_str(&section)
            }
            _ => Ok(()),
        };
    }
    reply::verbatim(session.out, session.protocol(), text.as_bytes());
}

//! kv 4 and Debian's `redis-server`, side by side on loopback: the same commands on one
//! connection to each, the replies compared byte for byte. Where a reply names the server or
//! the moment (a version, a connection id or address, an uptime, a memory figure) the field is
//! normalised, each one explicitly below; where redis leaves an order unspecified (`KEYS`,
//! `SMEMBERS`, `HGETALL`) the elements are compared as a set. Debian ships redis 7.0.15 and kv
//! follows 7.2: what 7.2 added (`CLIENT SETINFO`, `CLIENT NO-TOUCH`, `ZRANK … WITHSCORE`, the
//! `lib-name`/`lib-ver` fields of `CLIENT LIST`) is left out of the comparison, as are the
//! replies where kv differs on purpose (README, "Redis compatibility").

use std::io::{BufReader, Write};
use std::net::TcpStream;
use tasuki_tests::{RedisServer, TestHost, artifacts, read_reply};

/// One connection, with its reader.
struct Conn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn new(stream: TcpStream) -> Self {
        Self { reader: BufReader::new(stream.try_clone().expect("clone")), stream }
    }

    /// Sends `command` (words separated by spaces) as a multibulk request; its reply.
    fn send(&mut self, command: &str) -> Vec<u8> {
        let words: Vec<&str> = command.split(' ').collect();
        let mut request = format!("*{}\r\n", words.len()).into_bytes();
        for word in words {
            request.extend_from_slice(format!("${}\r\n{word}\r\n", word.len()).as_bytes());
        }
        self.stream.write_all(&request).expect("send");
        read_reply(&mut self.reader)
    }
}

/// A reply, parsed: its first line (a string's bytes included) and its elements.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Node {
    head: Vec<u8>,
    children: Vec<Node>,
}

impl Node {
    fn parse(bytes: &[u8]) -> Self {
        let (node, used) = Self::parse_at(bytes);
        assert_eq!(used, bytes.len(), "one reply");
        node
    }

    fn parse_at(bytes: &[u8]) -> (Self, usize) {
        let end = bytes.windows(2).position(|w| w == b"\r\n").expect("a line") + 2;
        let number = || -> usize {
            std::str::from_utf8(&bytes[1..end - 2]).ok().and_then(|n| n.parse().ok()).unwrap_or(0)
        };
        let (mut children, mut at) = (Vec::new(), end);
        let mut head_end = None;
        match bytes[0] {
            b'$' | b'=' | b'!' if bytes[1] != b'-' => at += number() + 2,
            b'*' | b'~' | b'>' | b'%' | b'|' if bytes[1] != b'-' => {
                head_end = Some(end);
                let pairs = if matches!(bytes[0], b'%' | b'|') { 2 } else { 1 };
                for _ in 0..pairs * number() {
                    let (child, used) = Self::parse_at(&bytes[at..]);
                    children.push(child);
                    at += used;
                }
            }
            _ => {}
        }
        (Self { head: bytes[..head_end.unwrap_or(at)].to_vec(), children }, at)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = self.head.clone();
        for child in &self.children {
            out.extend(child.encode());
        }
        out
    }

    /// The text of a bulk or verbatim string reply.
    fn text(&self) -> String {
        let body = &self.head[self.head.iter().position(|&b| b == b'\n').expect("a string") + 1
            ..self.head.len() - 2];
        let body = if self.head[0] == b'=' { &body[4..] } else { body };
        String::from_utf8_lossy(body).into_owned()
    }
}

/// How a reply is compared.
#[derive(Debug, Clone, Copy)]
enum Compare {
    /// Byte for byte.
    Exact,
    /// An aggregate whose order redis leaves unspecified: its elements as a set (`pairs`: of
    /// field/value pairs).
    Unordered { pairs: bool },
    /// A `SCAN` reply whose batch comes in the table's order: the batch as a set.
    ScanBatch,
    /// `HELLO`: `version` names the server, `id` the connection.
    Hello,
    /// `CLIENT LIST`/`CLIENT INFO`.
    ClientList,
    /// `INFO`.
    Info,
}

/// In `CLIENT LIST`, the fields that name the connection or the process (`id`, `addr`,
/// `laddr`, `fd`), the moment (`age`, `idle`), or the server's own buffers and allocator
/// figures, which kv does not keep (the host holds the buffers): their values are not compared.
const CLIENT_FIELDS_NORMALISED: &[&str] = &[
    "id",
    "addr",
    "laddr",
    "fd",
    "age",
    "idle",
    "qbuf",
    "qbuf-free",
    "argv-mem",
    "multi-mem",
    "rbs",
    "rbp",
    "obl",
    "oll",
    "omem",
    "tot-mem",
];

/// In `INFO`, the fields that name the server, the process or the moment, or count the
/// server's own history or memory: present in both, values not compared.
const INFO_FIELDS_NORMALISED: &[&str] = &[
    "redis_version",
    "os",
    "arch_bits",
    "multiplexing_api",
    "process_id",
    "tcp_port",
    "server_time_usec",
    "uptime_in_seconds",
    "used_memory",
    "used_memory_human",
    "used_memory_rss",
    "used_memory_rss_human",
    // A configured limit: redis lowers its own to what the open-file limit allows.
    "maxclients",
    "total_connections_received",
    "total_commands_processed",
    "instantaneous_ops_per_sec",
];

fn client_list(node: &Node) -> String {
    let frame = node.head[0] as char;
    let lines: Vec<String> = node
        .text()
        .lines()
        .map(|line| {
            line.split(' ')
                .filter(|field| !field.starts_with("lib-name=") && !field.starts_with("lib-ver="))
                .map(|field| match field.split_once('=') {
                    Some((name, _)) if CLIENT_FIELDS_NORMALISED.contains(&name) => {
                        format!("{name}=*")
                    }
                    _ => field.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    format!("{frame} {}", lines.join("\n"))
}

/// `INFO`'s sections and fields, in order.
fn info_sections(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.split("\r\n").filter(|line| !line.is_empty()) {
        match line.strip_prefix("# ") {
            Some(section) => sections.push((section.to_string(), Vec::new())),
            None => {
                let (name, value) = line.split_once(':').expect("name:value");
                let section = sections.last_mut().expect("a field inside a section");
                section.1.push((name.to_string(), value.to_string()));
            }
        }
    }
    sections
}

/// kv's `INFO` is redis's, cut down: its sections appear in redis's order, each of its fields
/// is one of redis's in the same section (kv's own `tasuki_*` aside), with redis's value unless
/// it is normalised; the keyspace line's `avg_ttl` is a time.
fn compare_info(redis: &Node, kv: &Node) {
    assert_eq!(redis.head[0], kv.head[0], "the same frame");
    let (redis, kv) = (info_sections(&redis.text()), info_sections(&kv.text()));
    let mut redis_sections = redis.iter();
    for (section, fields) in &kv {
        let (_, redis_fields) = redis_sections
            .find(|(name, _)| name == section)
            .unwrap_or_else(|| panic!("section {section} is not in redis's INFO, or out of order"));
        for (name, value) in fields.iter().filter(|(name, _)| !name.starts_with("tasuki_")) {
            let (_, redis_value) = redis_fields
                .iter()
                .find(|(field, _)| field == name)
                .unwrap_or_else(|| panic!("INFO field {name} is not in redis's {section}"));
            if INFO_FIELDS_NORMALISED.contains(&name.as_str()) {
                continue;
            }
            let strip_ttl = |v: &str| v.split(",avg_ttl=").next().unwrap_or(v).to_string();
            assert_eq!(strip_ttl(value), strip_ttl(redis_value), "INFO {section} {name}");
        }
    }
}

fn normalised(compare: Compare, node: &Node) -> Node {
    match compare {
        Compare::Exact | Compare::Info => node.clone(),
        Compare::Unordered { pairs } => {
            let mut children = node.children.clone();
            if pairs {
                let mut chunks: Vec<Vec<Node>> = children.chunks(2).map(<[Node]>::to_vec).collect();
                chunks.sort();
                children = chunks.concat();
            } else {
                children.sort();
            }
            Node { head: node.head.clone(), children }
        }
        Compare::ScanBatch => {
            let mut node = node.clone();
            node.children[1].children.sort();
            node
        }
        Compare::Hello => {
            let mut node = node.clone();
            for i in (0..node.children.len()).step_by(2) {
                if matches!(node.children[i].text().as_str(), "version" | "id") {
                    node.children[i + 1] =
                        Node { head: b"+normalised\r\n".to_vec(), children: vec![] };
                }
            }
            node
        }
        Compare::ClientList => Node { head: client_list(node).into_bytes(), children: vec![] },
    }
}

/// Sends each command to both servers and compares the replies as its entry says.
fn converse(redis: &mut Conn, kv: &mut Conn, conversation: &[(&str, Compare)]) {
    for &(command, compare) in conversation {
        let (from_redis, from_kv) = (redis.send(command), kv.send(command));
        let (redis_node, kv_node) = (Node::parse(&from_redis), Node::parse(&from_kv));
        if let Compare::Info = compare {
            compare_info(&redis_node, &kv_node);
            continue;
        }
        assert_eq!(
            String::from_utf8_lossy(&normalised(compare, &kv_node).encode()),
            String::from_utf8_lossy(&normalised(compare, &redis_node).encode()),
            "{command}: kv answered {:?}, redis-server {:?}",
            String::from_utf8_lossy(&from_kv),
            String::from_utf8_lossy(&from_redis),
        );
    }
}

use Compare::{ClientList, Exact, Hello, Info, ScanBatch, Unordered};

/// What `redis-cli` shows a user who opens a session: the handshake, `CLIENT LIST`, `INFO`,
/// `SCAN 0`, a transaction.
const SESSION: &[(&str, Compare)] = &[
    ("FLUSHALL", Exact),
    ("HELLO 3", Hello),
    ("CLIENT LIST", ClientList),
    ("CLIENT INFO", ClientList),
    ("CLIENT SETNAME session", Exact),
    ("CLIENT GETNAME", Exact),
    ("CLIENT LIST", ClientList),
    ("INFO", Info),
    ("INFO server", Info),
    ("SET k v", Exact),
    ("INFO keyspace", Info),
    ("SCAN 0", Exact),
    ("SCAN 0 MATCH k* COUNT 100 TYPE string", Exact),
    ("SCAN 0 TYPE list", Exact),
    ("MULTI", Exact),
    ("SET a 1", Exact),
    ("INCR a", Exact),
    ("HSET h f v", Exact),
    ("HGETALL h", Exact),
    ("LPUSH a x", Exact),
    ("EXEC", Exact),
    ("MULTI", Exact),
    ("NOSUCH x", Exact),
    ("EXEC", Exact),
    ("WATCH a", Exact),
    ("UNWATCH", Exact),
    ("DISCARD", Exact),
    ("HELLO 2", Hello),
    ("CLIENT LIST", ClientList),
    ("INFO", Info),
];

/// The data commands of release 4, their options and their errors. Run once in RESP2 and once
/// in RESP3.
const DATA: &[(&str, Compare)] = &[
    ("FLUSHALL", Exact),
    // Sets.
    ("SADD s a b c a", Exact),
    ("SREM s a x", Exact),
    ("SCARD s", Exact),
    ("SISMEMBER s b", Exact),
    ("SMISMEMBER s b x", Exact),
    ("SMEMBERS s", Unordered { pairs: false }),
    ("SMEMBERS nope", Exact),
    ("SPOP nope", Exact),
    ("SPOP nope 2", Exact),
    ("SPOP s -1", Exact),
    ("SPOP s x", Exact),
    ("SPOP s 1 2", Exact),
    ("SRANDMEMBER nope", Exact),
    ("SRANDMEMBER nope 3", Exact),
    ("SRANDMEMBER s 0", Exact),
    ("SRANDMEMBER s x", Exact),
    ("SRANDMEMBER s 10", Unordered { pairs: false }),
    ("SPOP s 10", Unordered { pairs: false }),
    ("EXISTS s", Exact),
    ("SADD one x", Exact),
    ("SRANDMEMBER one", Exact),
    ("SRANDMEMBER one -3", Exact),
    ("SPOP one", Exact),
    ("SPOP one", Exact),
    // Sorted sets.
    ("ZADD z 1 a 2 b 3 c", Exact),
    ("ZADD z NX 5 a 4 d", Exact),
    ("ZADD z XX CH 10 a 20 nope", Exact),
    ("ZADD z GT 1 a", Exact),
    ("ZADD z LT CH 1 a", Exact),
    ("ZADD z INCR 2 a", Exact),
    ("ZADD z NX INCR 2 a", Exact),
    ("ZADD z NX XX 1 a", Exact),
    ("ZADD z GT LT 1 a", Exact),
    ("ZADD z NX GT 1 a", Exact),
    ("ZADD z INCR 1 a 2 b", Exact),
    ("ZADD z 1 a 2", Exact),
    ("ZADD z x a", Exact),
    ("ZADD z nan a", Exact),
    ("ZADD z inf e", Exact),
    ("ZADD z INCR -inf e", Exact),
    ("ZADD z 1.5 a", Exact),
    ("ZADD zz XX 1 a", Exact),
    ("EXISTS zz", Exact),
    ("ZADD zz XX INCR 1 a", Exact),
    ("ZCARD z", Exact),
    ("ZCARD nope", Exact),
    ("ZSCORE z a", Exact),
    ("ZSCORE z nope", Exact),
    ("ZMSCORE z a nope b", Exact),
    ("ZRANK z c", Exact),
    ("ZRANK z nope", Exact),
    ("ZREVRANK z c", Exact),
    ("ZINCRBY z 2.5 b", Exact),
    ("ZINCRBY z x b", Exact),
    ("ZRANGE z 0 -1", Exact),
    ("ZRANGE z 0 -1 WITHSCORES", Exact),
    ("ZRANGE z 1 2 REV WITHSCORES", Exact),
    ("ZRANGE z -inf +inf BYSCORE", Exact),
    ("ZRANGE z (1.5 3 BYSCORE WITHSCORES", Exact),
    ("ZRANGE z +inf -inf BYSCORE REV LIMIT 1 2", Exact),
    ("ZRANGE z 0 -1 LIMIT 0 1", Exact),
    ("ZRANGE z - + BYLEX WITHSCORES", Exact),
    ("ZRANGE z x 1 BYSCORE", Exact),
    ("ZRANGE z 0 1 BYLEX", Exact),
    ("ZRANGE z a b", Exact),
    ("ZRANGE z 0 -1 FOO", Exact),
    ("ZRANGE nope 0 -1", Exact),
    ("ZREVRANGE z 0 0 WITHSCORES", Exact),
    ("ZRANGEBYSCORE z 2 4 WITHSCORES LIMIT 0 1", Exact),
    ("ZREVRANGEBYSCORE z 10 (2", Exact),
    ("ZREVRANGEBYSCORE z 10 2 REV", Exact),
    ("ZCOUNT z -inf +inf", Exact),
    ("ZCOUNT z (2 3", Exact),
    ("ZCOUNT z a b", Exact),
    ("ZADD lex 0 a 0 b 0 c 0 d", Exact),
    ("ZRANGEBYLEX lex [b (d", Exact),
    ("ZRANGE lex + - BYLEX REV LIMIT 0 2", Exact),
    ("ZRANGEBYLEX lex b d", Exact),
    ("ZREM z a nope", Exact),
    ("ZPOPMIN z", Exact),
    ("ZPOPMIN z 2", Exact),
    ("ZPOPMIN z 0", Exact),
    ("ZPOPMIN nope", Exact),
    ("ZPOPMIN nope 2", Exact),
    ("ZPOPMIN z -1", Exact),
    ("ZPOPMAX lex", Exact),
    ("ZPOPMAX lex 10", Exact),
    ("EXISTS lex", Exact),
    ("ZREM nope a", Exact),
    ("ZSCAN z 0", Exact),
    // Strings.
    ("SET f 10.5", Exact),
    ("INCRBYFLOAT f 0.1", Exact),
    ("INCRBYFLOAT f x", Exact),
    ("INCRBYFLOAT nf 5.0e3", Exact),
    ("INCRBYFLOAT nf 2.0e2", Exact),
    ("INCRBYFLOAT f inf", Exact),
    ("SET bad abc", Exact),
    ("INCRBYFLOAT bad 1", Exact),
    ("GETSET f new", Exact),
    ("GETSET nope v", Exact),
    ("GETDEL nope", Exact),
    ("GETDEL f", Exact),
    ("GETDEL f", Exact),
    ("SET e v", Exact),
    ("GETEX e EX 100", Exact),
    ("TTL e", Exact),
    ("GETEX e PERSIST", Exact),
    ("TTL e", Exact),
    ("GETEX e PX 0", Exact),
    ("GETEX e EX 10 PX 10", Exact),
    ("GETEX e PERSIST EX 1", Exact),
    ("GETEX e FOO", Exact),
    ("GETEX nope EX 0", Exact),
    ("GETEX e EXAT 1", Exact),
    ("EXISTS e", Exact),
    ("SETRANGE sr 5 hi", Exact),
    ("GET sr", Exact),
    ("SETRANGE sr 0 HELLO", Exact),
    ("SETRANGE sr -1 x", Exact),
    ("SETRANGE sr x x", Exact),
    ("SETRANGE sr 536870912 x", Exact),
    ("GETRANGE sr 0 -1", Exact),
    ("GETRANGE sr -3 -1", Exact),
    ("GETRANGE sr -1 -3", Exact),
    ("GETRANGE sr 5 100", Exact),
    ("GETRANGE nope 0 -1", Exact),
    ("GETRANGE sr a b", Exact),
    ("SUBSTR sr 0 2", Exact),
    ("MSETNX a 1 b 2", Exact),
    ("MSETNX a 1 c 3", Exact),
    ("MSETNX a 1 b", Exact),
    ("GET c", Exact),
    ("SET a 1 EX 100 GET", Exact),
    ("SET a 2 KEEPTTL", Exact),
    ("TTL a", Exact),
    ("SET a 3 PXAT 1", Exact),
    ("EXISTS a", Exact),
    // Keys.
    ("SET a 1", Exact),
    ("RENAME a z2", Exact),
    ("RENAME nope x", Exact),
    ("GET z2", Exact),
    ("RENAME z2 z2", Exact),
    ("RENAMENX b z2", Exact),
    ("RENAMENX b b", Exact),
    ("RENAMENX b y", Exact),
    ("RENAMENX nope y", Exact),
    ("SET t1 v EX 100", Exact),
    ("RENAME t1 t2", Exact),
    ("TTL t2", Exact),
    ("EXPIRE t2 50 GT", Exact),
    ("EXPIRE t2 200 GT", Exact),
    ("TTL t2", Exact),
    ("EXPIREAT t2 1", Exact),
    ("EXISTS t2", Exact),
    ("TYPE sr", Exact),
    ("TYPE z", Exact),
    ("TYPE nope", Exact),
    ("KEYS *", Unordered { pairs: false }),
    // Lists.
    ("RPUSH l a b c a d a", Exact),
    ("LPOS l a", Exact),
    ("LPOS l a RANK 2", Exact),
    ("LPOS l a RANK -1", Exact),
    ("LPOS l a RANK -2 COUNT 2", Exact),
    ("LPOS l a COUNT 0", Exact),
    ("LPOS l a COUNT 0 MAXLEN 4", Exact),
    ("LPOS l a RANK -1 MAXLEN 2", Exact),
    ("LPOS l x", Exact),
    ("LPOS l x COUNT 2", Exact),
    ("LPOS nope a", Exact),
    ("LPOS nope a COUNT 1", Exact),
    ("LPOS l a RANK 0", Exact),
    ("LPOS l a COUNT -1", Exact),
    ("LPOS l a MAXLEN -1", Exact),
    ("LPOS l a COUNT x", Exact),
    ("LPOS l a FOO", Exact),
    ("LPOS sr a", Exact),
    ("LPOP l 2", Exact),
    ("RPOP l 2", Exact),
    ("LRANGE l 0 -1", Exact),
    // Hashes and iteration.
    ("HSET h f v g w", Exact),
    ("HGETALL h", Unordered { pairs: true }),
    ("HSCAN h 0", Unordered { pairs: true }),
    ("HSCAN h 0 MATCH f", Exact),
    ("HSCAN h x", Exact),
    ("HSCAN nope 0", Exact),
    ("HSCAN nope 0 FOO", Exact),
    ("HSCAN sr 0", Exact),
    ("SADD s m", Exact),
    ("SSCAN s 0", Exact),
    ("SCAN x", Exact),
    ("SCAN 0 COUNT 0", Exact),
    ("SCAN 0 COUNT x", Exact),
    ("SCAN 0 FOO bar", Exact),
    ("SCAN 0 MATCH nothing*", Exact),
    ("SCAN 0 COUNT 1000", ScanBatch),
    ("SCAN 0 TYPE zset", Exact),
    ("SCAN 0 TYPE foo", Exact),
    ("UNLINK s z nope", Exact),
    ("FLUSHALL", Exact),
    ("RANDOMKEY", Exact),
    ("SET only 1", Exact),
    ("RANDOMKEY", Exact),
    // Every command that meets a key of another type.
    ("SET str v", Exact),
    ("SADD str a", Exact),
    ("SREM str a", Exact),
    ("SMEMBERS str", Exact),
    ("SPOP str", Exact),
    ("ZADD str 1 a", Exact),
    ("ZRANGE str 0 -1", Exact),
    ("ZRANGE str x y", Exact),
    ("ZPOPMIN str", Exact),
    ("ZSCORE str a", Exact),
    ("INCRBYFLOAT l 1", Exact),
    ("RPUSH l x", Exact),
    ("GETRANGE l 0 1", Exact),
    ("SETRANGE l 0 x", Exact),
    ("GETDEL l", Exact),
    ("GETEX l", Exact),
    ("GETSET l v", Exact),
];

/// kv's replies are redis-server's, byte for byte, but for what names the server or the time:
/// release 4, and release 5, which keeps its keys in another layout.
#[test]
fn kv_answers_as_redis_server_does() {
    for release in [artifacts::KV_V4, artifacts::KV_V5] {
        let redis = RedisServer::start();
        let kv = TestHost::start(release);
        let (mut to_redis, mut to_kv) = (Conn::new(redis.raw()), Conn::new(kv.raw()));
        converse(&mut to_redis, &mut to_kv, SESSION);
        // The data commands in RESP2, then on a connection that said HELLO 3.
        converse(&mut to_redis, &mut to_kv, DATA);
        let (mut to_redis, mut to_kv) = (Conn::new(redis.raw()), Conn::new(kv.raw()));
        converse(&mut to_redis, &mut to_kv, &[("HELLO 3", Hello)]);
        converse(&mut to_redis, &mut to_kv, DATA);
    }
}

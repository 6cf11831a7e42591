//! Requests in, replies out: the server driven as a client drives it, without a host.

use crate::Kv;
use std::collections::HashMap;

const CONN: u64 = 7;

/// Sends `input` on one connection and returns the replies, and whether the server hung up.
fn send(kv: &mut Kv, input: &str) -> (String, bool) {
    let mut out = Vec::new();
    let (consumed, close) = kv.serve(CONN, input.as_bytes(), &mut out);
    assert_eq!(consumed, input.len(), "every request of {input:?} is whole");
    (String::from_utf8(out).expect("replies here are text"), close)
}

/// The replies to `input`, which must leave the connection open.
fn replies(kv: &mut Kv, input: &str) -> String {
    let (out, close) = send(kv, input);
    assert!(!close, "{input:?} closed the connection");
    out
}

#[test]
fn set_then_get() {
    let mut kv = Kv::default();
    assert_eq!(replies(&mut kv, "SET greeting hello\r\n"), "+OK\r\n");
    assert_eq!(replies(&mut kv, "*2\r\n$3\r\nGET\r\n$8\r\ngreeting\r\n"), "$5\r\nhello\r\n");
    assert_eq!(replies(&mut kv, "get missing\r\n"), "$-1\r\n");
}

#[test]
fn pipelined_requests_reply_in_order() {
    let mut kv = Kv::default();
    let out = replies(&mut kv, "PING\r\nSET a 1\r\nINCR a\r\nGET a\r\nPING hi\r\n");
    assert_eq!(out, "+PONG\r\n+OK\r\n:2\r\n$1\r\n2\r\n$2\r\nhi\r\n");
}

#[test]
fn an_incomplete_request_waits() {
    let mut kv = Kv::default();
    let mut out = Vec::new();
    let input = b"SET a 1\r\n*2\r\n$3\r\nGET\r\n$1\r";
    assert_eq!(kv.serve(CONN, input, &mut out), (9, false));
    assert_eq!(out, b"+OK\r\n");
}

#[test]
fn errors_are_redis_texts() {
    let mut kv = Kv::default();
    let cases = [
        ("FOO a b\r\n", "-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n"),
        ("foo\r\n", "-ERR unknown command 'foo', with args beginning with: \r\n"),
        ("GET\r\n", "-ERR wrong number of arguments for 'get' command\r\n"),
        ("get a b\r\n", "-ERR wrong number of arguments for 'get' command\r\n"),
        ("PING a b\r\n", "-ERR wrong number of arguments for 'ping' command\r\n"),
        ("MSET a 1 b\r\n", "-ERR wrong number of arguments for 'mset' command\r\n"),
        ("SET a b EX 10\r\n", "-ERR syntax error\r\n"),
        ("CONFIG\r\n", "-ERR wrong number of arguments for 'config' command\r\n"),
        ("CONFIG GET\r\n", "-ERR wrong number of arguments for 'config|get' command\r\n"),
        ("config foo\r\n", "-ERR unknown subcommand 'foo'. Try CONFIG HELP.\r\n"),
        ("SELECT 1\r\n", "-ERR DB index is out of range\r\n"),
        ("SELECT x\r\n", "-ERR value is not an integer or out of range\r\n"),
        ("FLUSHALL LATER\r\n", "-ERR syntax error\r\n"),
    ];
    for (request, reply) in cases {
        assert_eq!(replies(&mut kv, request), reply, "{request:?}");
    }
}

#[test]
fn unknown_command_error_is_one_bounded_line() {
    let mut kv = Kv::default();
    let long = "x".repeat(300);
    let out = replies(&mut kv, &format!("*3\r\n$3\r\nfoo\r\n$3\r\na\nb\r\n$300\r\n{long}\r\n"));
    let expected = format!(
        "-ERR unknown command 'foo', with args beginning with: 'a b' '{}' \r\n",
        &long[..122]
    );
    assert_eq!(out, expected);
}

#[test]
fn command_names_ignore_case() {
    let mut kv = Kv::default();
    assert_eq!(replies(&mut kv, "sEt k v\r\nGeT k\r\n"), "+OK\r\n$1\r\nv\r\n");
}

#[test]
fn counters() {
    let mut kv = Kv::default();
    assert_eq!(replies(&mut kv, "INCR n\r\n"), ":1\r\n");
    assert_eq!(replies(&mut kv, "INCRBY n 41\r\n"), ":42\r\n");
    assert_eq!(replies(&mut kv, "DECR n\r\n"), ":41\r\n");
    assert_eq!(replies(&mut kv, "DECRBY n 50\r\n"), ":-9\r\n");
    assert_eq!(replies(&mut kv, "GET n\r\n"), "$2\r\n-9\r\n");
    assert_eq!(
        replies(&mut kv, "SET s 007\r\nINCR s\r\n"),
        "+OK\r\n-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(
        replies(&mut kv, "INCRBY n +1\r\n"),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(
        replies(&mut kv, "SET max 9223372036854775807\r\nINCR max\r\n"),
        "+OK\r\n-ERR increment or decrement would overflow\r\n"
    );
    assert_eq!(
        replies(&mut kv, "DECRBY n -9223372036854775808\r\n"),
        "-ERR decrement would overflow\r\n"
    );
    assert_eq!(replies(&mut kv, "GET max\r\n"), "$19\r\n9223372036854775807\r\n");
}

#[test]
fn strings() {
    let mut kv = Kv::default();
    assert_eq!(
        replies(&mut kv, "APPEND s ab\r\nAPPEND s cd\r\nSTRLEN s\r\nSTRLEN none\r\n"),
        ":2\r\n:4\r\n:4\r\n:0\r\n"
    );
    assert_eq!(replies(&mut kv, "MSET a 1 b 2\r\n"), "+OK\r\n");
    assert_eq!(
        replies(&mut kv, "MGET a nope b s\r\n"),
        "*4\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n$4\r\nabcd\r\n"
    );
}

#[test]
fn keyspace() {
    let mut kv = Kv::default();
    replies(&mut kv, "MSET user:1 a user:2 b other c\r\n");
    assert_eq!(replies(&mut kv, "DBSIZE\r\n"), ":3\r\n");
    assert_eq!(replies(&mut kv, "EXISTS user:1 user:1 nope\r\n"), ":2\r\n");
    let out = replies(&mut kv, "KEYS user:*\r\n");
    assert!(out.starts_with("*2\r\n"), "{out}");
    assert!(out.contains("$6\r\nuser:1\r\n") && out.contains("$6\r\nuser:2\r\n"), "{out}");
    assert_eq!(replies(&mut kv, "KEYS nothing*\r\n"), "*0\r\n");
    assert_eq!(replies(&mut kv, "TYPE other\r\nTYPE nope\r\n"), "+string\r\n+none\r\n");
    assert_eq!(replies(&mut kv, "DEL user:1 user:1 nope\r\n"), ":1\r\n");
    assert_eq!(replies(&mut kv, "FLUSHDB ASYNC\r\nDBSIZE\r\n"), "+OK\r\n:0\r\n");
}

#[test]
fn what_clients_send_on_their_own() {
    let mut kv = Kv::default();
    let cases = [
        ("SELECT 0\r\n", "+OK\r\n"),
        ("CLIENT SETINFO LIB-NAME redis-py\r\n", "+OK\r\n"),
        ("CLIENT SETNAME me\r\n", "+OK\r\n"),
        ("CLIENT GETNAME\r\n", "$-1\r\n"),
        ("CLIENT ID\r\n", ":7\r\n"),
        ("COMMAND\r\n", "*0\r\n"),
        ("COMMAND DOCS\r\n", "*0\r\n"),
        ("COMMAND DOCS get\r\n", "*0\r\n"),
        ("CONFIG GET save\r\n", "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"),
        ("CONFIG GET APPENDONLY\r\n", "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"),
        ("CONFIG GET nothing\r\n", "*0\r\n"),
        ("CONFIG SET save \"\"\r\n", "+OK\r\n"),
        ("CONFIG RESETSTAT\r\n", "+OK\r\n"),
        ("ECHO \"a b\"\r\n", "$3\r\na b\r\n"),
    ];
    for (request, reply) in cases {
        assert_eq!(replies(&mut kv, request), reply, "{request:?}");
    }
    let count = replies(&mut kv, "COMMAND COUNT\r\n");
    assert!(count.starts_with(':') && count != ":0\r\n", "{count}");
    let out = replies(&mut kv, "CONFIG GET * s*\r\n");
    assert!(out.starts_with("*6\r\n"), "each parameter once: {out}");
}

#[test]
fn info_names_the_release() {
    let mut kv = Kv::default();
    let out = replies(&mut kv, "INFO\r\n");
    assert!(
        out.contains(
            "# Server\r\nredis_version:7.0.0\r\ntasuki_app:kv\r\ntasuki_version:1.0.0\r\n"
        ),
        "{out}"
    );
    assert!(out.contains("# Keyspace\r\n") && !out.contains("db0:"), "{out}");
    replies(&mut kv, "SET a 1\r\n");
    let out = replies(&mut kv, "INFO keyspace\r\n");
    assert!(out.contains("# Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n"), "{out}");
    assert!(!out.contains("# Server"), "{out}");
}

#[test]
fn quit_replies_then_closes() {
    let mut kv = Kv::default();
    assert_eq!(send(&mut kv, "PING\r\nQUIT\r\nSET a 1\r\n"), ("+PONG\r\n+OK\r\n".into(), true));
    assert_eq!(replies(&mut kv, "EXISTS a\r\n"), ":0\r\n");
}

#[test]
fn a_protocol_error_replies_then_closes() {
    let mut kv = Kv::default();
    assert_eq!(
        send(&mut kv, "SET a 1\r\n*1\r\n$x\r\nSET b 2\r\n"),
        ("+OK\r\n-ERR Protocol error: invalid bulk length\r\n".into(), true)
    );
    assert_eq!(
        send(&mut kv, "*2\r\n$3\r\nGET\r\n+a\r\n"),
        ("-ERR Protocol error: expected '$', got '+'\r\n".into(), true)
    );
    assert_eq!(replies(&mut kv, "EXISTS a b\r\n"), ":1\r\n");
}

/// Release 2 decodes this state through a frozen copy of its type: pin the encoding, which is
/// postcard's encoding of the bare map.
#[test]
fn state_encodes_as_the_bare_map() {
    let mut kv = Kv::default();
    replies(&mut kv, "MSET a 1 bb 22\r\n");
    let state = postcard::to_allocvec(&kv).unwrap();
    let map: HashMap<Vec<u8>, Vec<u8>> =
        [(b"a".to_vec(), b"1".to_vec()), (b"bb".to_vec(), b"22".to_vec())].into();
    let decoded: HashMap<Vec<u8>, Vec<u8>> = postcard::from_bytes(&state).unwrap();
    assert_eq!(decoded, map);
    let back: Kv = postcard::from_bytes(&state).unwrap();
    assert_eq!(postcard::to_allocvec(&back).unwrap(), state);
}

//! Requests in, replies out, on a clock the tests set: the server driven as a client drives it,
//! without a host.

use crate::db::{Entry, FixedState, Value};
use crate::{Config, EXPIRY_BATCH, Kv};
use std::collections::HashMap;
use std::time::Duration;
use tasuki_guest::Server;

const CONN: u64 = 7;
/// An arbitrary "now", in Unix milliseconds.
const T0: u64 = 1_700_000_000_000;

/// Sends `input` on one connection at time `now` and returns the replies, and whether the
/// server hung up.
fn send_at(kv: &mut Kv, now: u64, input: &str) -> (String, bool) {
    let mut out = Vec::new();
    let (consumed, close) = kv.serve(CONN, input.as_bytes(), &mut out, now, usize::MAX);
    assert_eq!(consumed, input.len(), "every request of {input:?} is whole");
    (String::from_utf8(out).expect("replies here are text"), close)
}

/// The replies to `input` at time `now`, which must leave the connection open.
fn at(kv: &mut Kv, now: u64, input: &str) -> String {
    let (out, close) = send_at(kv, now, input);
    assert!(!close, "{input:?} closed the connection");
    out
}

/// The replies to `input` at [`T0`].
fn replies(kv: &mut Kv, input: &str) -> String {
    at(kv, T0, input)
}

#[test]
fn everything_release_2_does() {
    let mut kv = Kv::default();
    let cases = [
        ("SET greeting hello\r\n", "+OK\r\n"),
        ("*2\r\n$3\r\nGET\r\n$8\r\ngreeting\r\n", "$5\r\nhello\r\n"),
        ("GET missing\r\n", "$-1\r\n"),
        ("INCR n\r\nINCRBY n 41\r\nDECR n\r\nDECRBY n 50\r\n", ":1\r\n:42\r\n:41\r\n:-9\r\n"),
        ("APPEND s ab\r\nAPPEND s cd\r\nSTRLEN s\r\n", ":2\r\n:4\r\n:4\r\n"),
        ("MSET a 1 b 2\r\nMGET a nope b\r\n", "+OK\r\n*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n"),
        ("EXISTS a a nope\r\nDEL a a\r\nDBSIZE\r\n", ":2\r\n:1\r\n:4\r\n"),
        ("FOO a b\r\n", "-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n"),
        ("GET\r\n", "-ERR wrong number of arguments for 'get' command\r\n"),
        ("SELECT 0\r\nSELECT 1\r\n", "+OK\r\n-ERR DB index is out of range\r\n"),
        ("CONFIG GET save\r\n", "*2\r\n$4\r\nsave\r\n$0\r\n\r\n"),
        ("CLIENT ID\r\n", ":7\r\n"),
        ("FLUSHALL SYNC\r\nDBSIZE\r\n", "+OK\r\n:0\r\n"),
    ];
    for (request, reply) in cases {
        assert_eq!(replies(&mut kv, request), reply, "{request:?}");
    }
    assert_eq!(send_at(&mut kv, T0, "QUIT\r\nPING\r\n"), ("+OK\r\n".into(), true));
    assert_eq!(
        send_at(&mut kv, T0, "*1\r\n$-5\r\n"),
        ("-ERR Protocol error: invalid bulk length\r\n".into(), true)
    );
}

#[test]
fn set_with_a_deadline() {
    let mut kv = Kv::default();
    assert_eq!(replies(&mut kv, "SET k v EX 10\r\n"), "+OK\r\n");
    assert_eq!(replies(&mut kv, "TTL k\r\nPTTL k\r\n"), ":10\r\n:10000\r\n");
    assert_eq!(at(&mut kv, T0 + 9_499, "TTL k\r\nPTTL k\r\n"), ":1\r\n:501\r\n");
    assert_eq!(at(&mut kv, T0 + 9_501, "TTL k\r\n"), ":0\r\n");
    assert_eq!(at(&mut kv, T0 + 9_999, "GET k\r\n"), "$1\r\nv\r\n");
    assert_eq!(at(&mut kv, T0 + 10_000, "GET k\r\nTTL k\r\nPTTL k\r\n"), "$-1\r\n:-2\r\n:-2\r\n");

    let forms = [
        "SET k v PX 1500\r\n",
        &format!("SET k v EXAT {}\r\n", T0 / 1000 + 2),
        &format!("SET k v PXAT {}\r\n", T0 + 1500),
        "SETEX k 2 v\r\n",
        "PSETEX k 1500 v\r\n",
    ];
    for form in forms {
        assert_eq!(replies(&mut kv, form), "+OK\r\n", "{form}");
        assert_eq!(at(&mut kv, T0 + 1_499, "EXISTS k\r\n"), ":1\r\n", "{form}");
        assert_eq!(at(&mut kv, T0 + 2_000, "EXISTS k\r\n"), ":0\r\n", "{form}");
    }
    assert_eq!(replies(&mut kv, "EXPIRETIME nope\r\n"), ":-2\r\n");
    replies(&mut kv, &format!("SET k v PXAT {}\r\n", T0 + 5_400));
    assert_eq!(
        replies(&mut kv, "EXPIRETIME k\r\nPEXPIRETIME k\r\n"),
        format!(":{}\r\n:{}\r\n", (T0 + 5_400 + 500) / 1000, T0 + 5_400)
    );
}

#[test]
fn set_options_follow_redis_rules() {
    let mut kv = Kv::default();
    let cases = [
        ("SET k v NX\r\n", "+OK\r\n"),
        ("SET k w NX\r\n", "$-1\r\n"),
        ("SET other w XX\r\n", "$-1\r\n"),
        ("SET k w XX GET\r\n", "$1\r\nv\r\n"),
        ("SET k x NX GET\r\n", "$1\r\nw\r\n"),
        ("GET k\r\n", "$1\r\nw\r\n"),
        ("SET new v GET\r\n", "$-1\r\n"),
        ("SET k v NX XX\r\n", "-ERR syntax error\r\n"),
        ("SET k v EX 10 PX 100\r\n", "-ERR syntax error\r\n"),
        ("SET k v EX 10 KEEPTTL\r\n", "-ERR syntax error\r\n"),
        ("SET k v KEEPTTL PXAT 100\r\n", "-ERR syntax error\r\n"),
        ("SET k v EX\r\n", "-ERR syntax error\r\n"),
        ("SET k v FOREVER\r\n", "-ERR syntax error\r\n"),
        ("SET k v EX 10 EX 20\r\nTTL k\r\n", "+OK\r\n:20\r\n"),
        ("SET k v ex 0\r\n", "-ERR invalid expire time in 'set' command\r\n"),
        ("SET k v PX -5\r\n", "-ERR invalid expire time in 'set' command\r\n"),
        ("SET k v EX 9223372036854775\r\n", "-ERR invalid expire time in 'set' command\r\n"),
        ("SET k v EX ten\r\n", "-ERR value is not an integer or out of range\r\n"),
        ("SETEX k 0 v\r\n", "-ERR invalid expire time in 'setex' command\r\n"),
        ("PSETEX k -1 v\r\n", "-ERR invalid expire time in 'psetex' command\r\n"),
        ("SETNX fresh 1\r\nSETNX fresh 2\r\nGET fresh\r\n", ":1\r\n:0\r\n$1\r\n1\r\n"),
    ];
    for (request, reply) in cases {
        assert_eq!(replies(&mut kv, request), reply, "{request:?}");
    }
}

#[test]
fn a_past_absolute_deadline_leaves_no_key() {
    let mut kv = Kv::default();
    assert_eq!(replies(&mut kv, "SET k v PXAT 1\r\nEXISTS k\r\nDBSIZE\r\n"), "+OK\r\n:0\r\n:0\r\n");
}

#[test]
fn writes_that_replace_drop_the_deadline_and_others_keep_it() {
    let mut kv = Kv::default();
    replies(&mut kv, "SET k v EX 100\r\n");
    assert_eq!(replies(&mut kv, "SET k w KEEPTTL\r\nTTL k\r\n"), "+OK\r\n:100\r\n");
    assert_eq!(replies(&mut kv, "APPEND k x\r\nTTL k\r\n"), ":2\r\n:100\r\n");
    assert_eq!(replies(&mut kv, "SET k 5\r\nTTL k\r\n"), "+OK\r\n:-1\r\n");
    replies(&mut kv, "EXPIRE k 100\r\n");
    assert_eq!(replies(&mut kv, "INCR k\r\nTTL k\r\n"), ":6\r\n:100\r\n");
    assert_eq!(replies(&mut kv, "MSET k 1\r\nTTL k\r\n"), "+OK\r\n:-1\r\n");
    // KEEPTTL on a key whose deadline passed: the old key is gone, and so is its deadline.
    replies(&mut kv, "SET gone v PX 10\r\n");
    assert_eq!(at(&mut kv, T0 + 10, "SET gone w KEEPTTL\r\nTTL gone\r\n"), "+OK\r\n:-1\r\n");
}

#[test]
fn expire_and_persist() {
    let mut kv = Kv::default();
    let cases = [
        ("EXPIRE nope 10\r\n", ":0\r\n"),
        ("SET k v\r\nTTL k\r\n", "+OK\r\n:-1\r\n"),
        ("EXPIRE k 10\r\nTTL k\r\n", ":1\r\n:10\r\n"),
        ("PEXPIRE k 2500\r\nPTTL k\r\n", ":1\r\n:2500\r\n"),
        ("PERSIST k\r\nPERSIST k\r\nTTL k\r\nPERSIST nope\r\n", ":1\r\n:0\r\n:-1\r\n:0\r\n"),
        ("EXPIRE k NaN\r\n", "-ERR value is not an integer or out of range\r\n"),
        ("EXPIRE k 10 XY\r\n", "-ERR Unsupported option XY\r\n"),
        (
            "EXPIRE k 10 NX XX\r\n",
            "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n",
        ),
        ("EXPIRE k 10 GT LT\r\n", "-ERR GT and LT options at the same time are not compatible\r\n"),
        ("EXPIRE k 9223372036854775807\r\n", "-ERR invalid expire time in 'expire' command\r\n"),
        ("PEXPIRE k 9223372036854775807\r\n", "-ERR invalid expire time in 'pexpire' command\r\n"),
        // Conditions: no deadline counts as infinitely late.
        ("EXPIRE k 10 XX\r\nEXPIRE k 10 GT\r\n", ":0\r\n:0\r\n"),
        ("EXPIRE k 10 LT\r\nTTL k\r\n", ":1\r\n:10\r\n"),
        (
            "EXPIRE k 20 NX\r\nEXPIRE k 5 GT\r\nEXPIRE k 20 GT\r\nTTL k\r\n",
            ":0\r\n:0\r\n:1\r\n:20\r\n",
        ),
        ("EXPIRE k 30 LT\r\nEXPIRE k 15 LT XX\r\nTTL k\r\n", ":0\r\n:1\r\n:15\r\n"),
        ("PERSIST k\r\nEXPIRE k 15 NX\r\nTTL k\r\n", ":1\r\n:1\r\n:15\r\n"),
    ];
    for (request, reply) in cases {
        assert_eq!(replies(&mut kv, request), reply, "{request:?}");
    }
    let absolute = format!("EXPIREAT k {}\r\nPEXPIREAT other 1\r\nTTL k\r\n", T0 / 1000 + 60);
    assert_eq!(replies(&mut kv, &absolute), ":1\r\n:0\r\n:60\r\n");
}

#[test]
fn a_deadline_not_in_the_future_deletes_the_key() {
    let mut kv = Kv::default();
    for expire in ["EXPIRE k 0", "EXPIRE k -5", "PEXPIRE k 0", "EXPIREAT k 1", "PEXPIREAT k -1"] {
        replies(&mut kv, "SET k v\r\n");
        assert_eq!(
            replies(&mut kv, &format!("{expire}\r\nEXISTS k\r\n")),
            ":1\r\n:0\r\n",
            "{expire}"
        );
    }
}

#[test]
fn expired_keys_are_not_counted_or_listed() {
    let mut kv = Kv::default();
    replies(&mut kv, "SET a 1 PX 100\r\nSET b 2 PX 200\r\nSET c 3\r\n");
    let info = replies(&mut kv, "INFO keyspace\r\n");
    assert!(info.contains("db0:keys=3,expires=2,avg_ttl=0\r\n"), "{info}");
    assert_eq!(
        at(&mut kv, T0 + 150, "DBSIZE\r\nKEYS a*\r\nEXISTS a b c\r\n"),
        ":2\r\n*0\r\n:2\r\n"
    );
    let info = at(&mut kv, T0 + 150, "INFO\r\n");
    assert!(info.contains("db0:keys=2,expires=1,avg_ttl=0\r\n"), "{info}");
    assert!(info.contains("tasuki_app:kv\r\ntasuki_version:5.0.0\r\n"), "{info}");
    assert_eq!(
        at(&mut kv, T0 + 200, "KEYS *\r\nTYPE b\r\nDEL b\r\n"),
        "*1\r\n$1\r\nc\r\n+none\r\n:0\r\n"
    );
    assert_eq!(at(&mut kv, T0 + 200, "INCR a\r\nTTL a\r\n"), ":1\r\n:-1\r\n");
}

#[test]
fn the_expiry_timer_follows_the_earliest_deadline() {
    let mut kv = Kv::default();
    assert_eq!(kv.expiry_timer_due(T0), None, "no deadline, no timer");
    replies(&mut kv, "SET a 1 PX 500\r\n");
    assert_eq!(kv.expiry_timer_due(T0), Some(Duration::from_millis(500)));
    assert_eq!(kv.expiry_timer_due(T0), None, "already armed for it");
    replies(&mut kv, "SET b 1 PX 900\r\n");
    assert_eq!(kv.expiry_timer_due(T0), None, "a later deadline waits for the armed timer");
    replies(&mut kv, "SET c 1 PX 100\r\n");
    assert_eq!(kv.expiry_timer_due(T0), Some(Duration::from_millis(100)), "an earlier one re-arms");

    // What `on_timer` does when the timer fires at T0 + 100, then at T0 + 500.
    kv.timer_armed_for = None;
    assert_eq!(kv.db.remove_expired(T0 + 100, EXPIRY_BATCH), 1);
    assert_eq!(kv.expiry_timer_due(T0 + 100), Some(Duration::from_millis(400)));
    kv.timer_armed_for = None;
    assert_eq!(kv.db.remove_expired(T0 + 500, EXPIRY_BATCH), 1);
    assert_eq!(kv.expiry_timer_due(T0 + 500), Some(Duration::from_millis(400)));
}

#[test]
fn a_mass_expiry_is_removed_in_batches() {
    let mut kv = Kv::default();
    let mut request = String::new();
    for i in 0..EXPIRY_BATCH + 10 {
        request.push_str(&format!("SET k{i} v PX 10\r\n"));
    }
    replies(&mut kv, &request);
    kv.timer_armed_for = None;
    assert_eq!(kv.db.remove_expired(T0 + 10, EXPIRY_BATCH), EXPIRY_BATCH);
    assert_eq!(kv.expiry_timer_due(T0 + 10), Some(Duration::ZERO), "the rest at once");
    kv.timer_armed_for = None;
    assert_eq!(kv.db.remove_expired(T0 + 10, EXPIRY_BATCH), 10);
    assert_eq!(kv.expiry_timer_due(T0 + 10), None);
}

/// This release's own state crosses an upgrade with its deadlines, for every type; the index
/// and the timer do not, and are rebuilt.
#[test]
fn state_round_trips_with_deadlines() {
    let mut kv = Kv::default();
    replies(&mut kv, "SET a 1 PX 500\r\nSET b 2\r\nRPUSH l x y\r\nHSET h f v\r\n");
    replies(&mut kv, "PEXPIRE l 700\r\nPEXPIRE h 900\r\n");
    kv.expiry_timer_due(T0);
    let bytes = postcard::to_allocvec(&kv).unwrap();
    let keyspace = postcard::to_allocvec(&kv.db).unwrap();
    let mut back: Kv = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back.timer_armed_for, None);
    back.db.rebuild_deadlines();
    assert_eq!(back.expiry_timer_due(T0 + 100), Some(Duration::from_millis(400)));
    assert_eq!(at(&mut back, T0 + 100, "PTTL a\r\nTTL b\r\n"), ":400\r\n:-1\r\n");
    assert_eq!(
        at(&mut back, T0 + 100, "PTTL l\r\nLRANGE l 0 -1\r\nPTTL h\r\nHGET h f\r\n"),
        ":600\r\n*2\r\n$1\r\nx\r\n$1\r\ny\r\n:800\r\n$1\r\nv\r\n"
    );
    assert_eq!(postcard::to_allocvec(&back.db).unwrap(), keyspace);
}

/// Redis's text, exactly, for every command that meets a key of another type.
const WRONGTYPE: &str = "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n";

#[test]
fn lists_push_pop_and_range() {
    let mut kv = Kv::default();
    let out_of_range = "-ERR value is out of range, must be positive\r\n";
    let cases = [
        // Each element goes onto the head in turn: the last one named ends up first.
        ("LPUSH l b a\r\n", ":2\r\n".to_string()),
        ("RPUSH l c d e\r\n", ":5\r\n".into()),
        (
            "LRANGE l 0 -1\r\n",
            "*5\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n$1\r\ne\r\n".into(),
        ),
        ("LRANGE l 1 2\r\n", "*2\r\n$1\r\nb\r\n$1\r\nc\r\n".into()),
        ("LRANGE l -2 100\r\n", "*2\r\n$1\r\nd\r\n$1\r\ne\r\n".into()),
        ("LRANGE l -100 0\r\n", "*1\r\n$1\r\na\r\n".into()),
        ("LRANGE l 5 10\r\nLRANGE l 3 1\r\nLRANGE nope 0 -1\r\n", "*0\r\n*0\r\n*0\r\n".into()),
        ("LRANGE l a 1\r\n", "-ERR value is not an integer or out of range\r\n".into()),
        ("LLEN l\r\nLLEN nope\r\n", ":5\r\n:0\r\n".into()),
        ("LPOP l\r\nRPOP l\r\n", "$1\r\na\r\n$1\r\ne\r\n".into()),
        ("LPOP l 0\r\n", "*0\r\n".into()),
        // From the tail, the last element first.
        ("RPOP l 2\r\n", "*2\r\n$1\r\nd\r\n$1\r\nc\r\n".into()),
        ("LPUSH l x\r\nLPOP l 10\r\n", ":2\r\n*2\r\n$1\r\nx\r\n$1\r\nb\r\n".into()),
        // Popped to empty: the key is gone.
        ("EXISTS l\r\nTYPE l\r\nLLEN l\r\nDBSIZE\r\n", ":0\r\n+none\r\n:0\r\n:0\r\n".into()),
        ("LPOP l\r\nRPOP l 1\r\nLPOP l 0\r\n", "$-1\r\n*-1\r\n*-1\r\n".into()),
        ("LPOP l -1\r\nRPOP l x\r\n", format!("{out_of_range}{out_of_range}")),
        ("LPOP l 9223372036854775807\r\n", "*-1\r\n".into()),
        ("LPOP l 1 2\r\n", "-ERR wrong number of arguments for 'lpop' command\r\n".into()),
        ("LPUSH l\r\n", "-ERR wrong number of arguments for 'lpush' command\r\n".into()),
        (
            "RPUSH bin \"\" \"a b\"\r\nLRANGE bin 0 -1\r\n",
            ":2\r\n*2\r\n$0\r\n\r\n$3\r\na b\r\n".into(),
        ),
        (
            "RPUSH bin z\r\nRPOP bin 9223372036854775807\r\n",
            ":3\r\n*3\r\n$1\r\nz\r\n$3\r\na b\r\n$0\r\n\r\n".into(),
        ),
    ];
    for (request, reply) in cases {
        assert_eq!(replies(&mut kv, request), reply, "{request:?}");
    }
}

#[test]
fn hashes_set_get_and_delete() {
    let mut kv = Kv::default();
    let arity = "-ERR wrong number of arguments for 'hset' command\r\n";
    let cases = [
        ("HSET h f1 v1 f2 v2\r\n", ":2\r\n".to_string()),
        // A field that was there takes the new value but is not counted.
        ("HSET h f1 new f3 v3\r\n", ":1\r\n".into()),
        ("HGET h f1\r\nHGET h nope\r\nHGET nope f1\r\n", "$3\r\nnew\r\n$-1\r\n$-1\r\n".into()),
        ("HLEN h\r\nHLEN nope\r\n", ":3\r\n:0\r\n".into()),
        ("HDEL h f2 f2 nope\r\nHDEL nope f\r\n", ":1\r\n:0\r\n".into()),
        ("HSET h f\r\nHSET h f v g\r\n", format!("{arity}{arity}")),
        ("HDEL h\r\n", "-ERR wrong number of arguments for 'hdel' command\r\n".into()),
        ("HGETALL nope\r\n", "*0\r\n".into()),
        ("HDEL h f3\r\nHGETALL h\r\n", ":1\r\n*2\r\n$2\r\nf1\r\n$3\r\nnew\r\n".into()),
        ("HSET h \"\" \"\"\r\nHGET h \"\"\r\nHDEL h \"\"\r\n", ":1\r\n$0\r\n\r\n:1\r\n".into()),
        // The last field deleted: the key is gone.
        ("HDEL h f1\r\nEXISTS h\r\nTYPE h\r\nHLEN h\r\n", ":1\r\n:0\r\n+none\r\n:0\r\n".into()),
    ];
    for (request, reply) in cases {
        assert_eq!(replies(&mut kv, request), reply, "{request:?}");
    }
    // Two fields come back as two pairs, in the table's order.
    replies(&mut kv, "HSET h a 1 b 2\r\n");
    let all = replies(&mut kv, "HGETALL h\r\n");
    let pairs = [
        "*4\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n",
        "*4\r\n$1\r\nb\r\n$1\r\n2\r\n$1\r\na\r\n$1\r\n1\r\n",
    ];
    assert!(pairs.contains(&all.as_str()), "{all:?}");
    assert_eq!(replies(&mut kv, "HGETALL h\r\n"), all, "the same order every time");
}

#[test]
fn type_names_each_kind() {
    let mut kv = Kv::default();
    replies(&mut kv, "SET s v\r\nRPUSH l a\r\nHSET h f v\r\n");
    assert_eq!(
        replies(&mut kv, "TYPE s\r\nTYPE l\r\nTYPE h\r\nTYPE nope\r\n"),
        "+string\r\n+list\r\n+hash\r\n+none\r\n"
    );
}

/// Every command that reads or changes one type refuses a key of another, with redis's text,
/// and leaves the key as it was.
#[test]
fn wrongtype_for_every_command_of_another_type() {
    let mut kv = Kv::default();
    replies(&mut kv, "SET s v\r\nRPUSH l a\r\nHSET h f v\r\n");
    let string_commands = [
        "GET {}",
        "INCR {}",
        "DECR {}",
        "INCRBY {} 2",
        "DECRBY {} 2",
        "APPEND {} x",
        "STRLEN {}",
        "SET {} v GET",
        "SET {} v NX GET",
    ];
    let list_commands = [
        "LPUSH {} x",
        "RPUSH {} x",
        "LPOP {}",
        "RPOP {}",
        "LPOP {} 2",
        "RPOP {} 0",
        "LRANGE {} 0 -1",
        "LLEN {}",
    ];
    let hash_commands = ["HSET {} f x", "HGET {} f", "HDEL {} f", "HGETALL {}", "HLEN {}"];
    for (commands, others) in [
        (&string_commands[..], ["l", "h"]),
        (&list_commands, ["s", "h"]),
        (&hash_commands, ["s", "l"]),
    ] {
        for command in commands {
            for key in others {
                let request = format!("{}\r\n", command.replace("{}", key));
                assert_eq!(replies(&mut kv, &request), WRONGTYPE, "{request:?}");
            }
        }
    }
    assert_eq!(
        replies(&mut kv, "GET s\r\nLRANGE l 0 -1\r\nHGETALL h\r\n"),
        "$1\r\nv\r\n*1\r\n$1\r\na\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n",
        "nothing changed"
    );
    // Redis checks the arguments before the key's type.
    assert_eq!(
        replies(&mut kv, "LRANGE s a 1\r\n"),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(
        replies(&mut kv, "LPOP s -1\r\n"),
        "-ERR value is out of range, must be positive\r\n"
    );
    assert_eq!(
        replies(&mut kv, "HSET s f\r\n"),
        "-ERR wrong number of arguments for 'hset' command\r\n"
    );
    // MGET reads a key of another type as missing rather than failing.
    assert_eq!(replies(&mut kv, "MGET s l h nope\r\n"), "*4\r\n$1\r\nv\r\n$-1\r\n$-1\r\n$-1\r\n");
}

/// Writes that replace a value replace a list or hash too; the commands on keys as a whole
/// work on every type.
#[test]
fn replacing_writes_and_keyspace_commands_take_every_type() {
    let mut kv = Kv::default();
    let cases = [
        ("RPUSH l a\r\nSET l v\r\nTYPE l\r\nGET l\r\n", ":1\r\n+OK\r\n+string\r\n$1\r\nv\r\n"),
        ("HSET h f v\r\nMSET h x\r\nGET h\r\n", ":1\r\n+OK\r\n$1\r\nx\r\n"),
        ("RPUSH l2 a\r\nSETEX l2 10 v\r\nTYPE l2\r\nTTL l2\r\n", ":1\r\n+OK\r\n+string\r\n:10\r\n"),
        (
            "RPUSH l3 a\r\nEXPIRE l3 100\r\nSET l3 v KEEPTTL\r\nTYPE l3\r\nTTL l3\r\n",
            ":1\r\n:1\r\n+OK\r\n+string\r\n:100\r\n",
        ),
        ("HSET h2 f v\r\nSETNX h2 v\r\nSET h2 v NX\r\nTYPE h2\r\n", ":1\r\n:0\r\n$-1\r\n+hash\r\n"),
        ("SET h2 v XX GET\r\n", WRONGTYPE),
        ("RPUSH l4 a\r\nSET l4 v XX\r\nGET l4\r\n", ":1\r\n+OK\r\n$1\r\nv\r\n"),
        (
            "FLUSHALL\r\nRPUSH l a\r\nHSET h f v\r\nSET s v\r\nDBSIZE\r\n",
            "+OK\r\n:1\r\n:1\r\n+OK\r\n:3\r\n",
        ),
        ("EXISTS l h s nope\r\nKEYS l*\r\nKEYS h\r\n", ":3\r\n*1\r\n$1\r\nl\r\n*1\r\n$1\r\nh\r\n"),
        ("DEL l h nope\r\nUNLINK s\r\nDBSIZE\r\n", ":2\r\n:1\r\n:0\r\n"),
    ];
    for (request, reply) in cases {
        assert_eq!(replies(&mut kv, request), reply, "{request:?}");
    }
}

/// A deadline belongs to a key of any type: lists and hashes keep it while they change, and
/// expire like strings.
#[test]
fn lists_and_hashes_expire() {
    let mut kv = Kv::default();
    let cases = [
        (
            "RPUSH l a b\r\nHSET h f v\r\nEXPIRE l 10\r\nPEXPIRE h 5000\r\n",
            ":2\r\n:1\r\n:1\r\n:1\r\n",
        ),
        ("RPUSH l c\r\nLPOP l\r\nHSET h g w\r\nHDEL h f\r\n", ":3\r\n$1\r\na\r\n:1\r\n:1\r\n"),
        ("TTL l\r\nPTTL h\r\nEXPIRETIME h\r\n", ":10\r\n:5000\r\n:1700000005\r\n"),
    ];
    for (request, reply) in cases {
        assert_eq!(replies(&mut kv, request), reply, "{request:?}");
    }
    let info = replies(&mut kv, "INFO keyspace\r\n");
    assert!(info.contains("db0:keys=2,expires=2,avg_ttl=0\r\n"), "{info}");
    assert_eq!(kv.expiry_timer_due(T0), Some(Duration::from_millis(5000)), "the hash is first");
    assert_eq!(
        at(&mut kv, T0 + 5_000, "HLEN h\r\nTYPE h\r\nHGET h g\r\nLLEN l\r\n"),
        ":0\r\n+none\r\n$-1\r\n:2\r\n"
    );
    assert_eq!(at(&mut kv, T0 + 10_000, "EXISTS l\r\nLRANGE l 0 -1\r\n"), ":0\r\n*0\r\n");
    // A new key under the name has no deadline.
    assert_eq!(at(&mut kv, T0 + 10_000, "RPUSH l x\r\nTTL l\r\n"), ":1\r\n:-1\r\n");
    assert_eq!(
        at(&mut kv, T0 + 10_000, "PERSIST l\r\nEXPIRE l 5\r\nPERSIST l\r\nTTL l\r\n"),
        ":0\r\n:1\r\n:1\r\n:-1\r\n"
    );
    assert_eq!(at(&mut kv, T0 + 10_000, "EXPIRE l 0\r\nEXISTS l\r\n"), ":1\r\n:0\r\n");
}

/// The pop that empties a list takes its deadline with it: the timer has nothing to wait for.
#[test]
fn an_emptied_key_leaves_no_deadline() {
    let mut kv = Kv::default();
    replies(&mut kv, "RPUSH q a\r\nEXPIRE q 10\r\nHSET h f v\r\nEXPIRE h 20\r\n");
    assert_eq!(kv.db.next_deadline(), Some(T0 + 10_000));
    assert_eq!(replies(&mut kv, "RPOP q\r\nHDEL h f\r\n"), "$1\r\na\r\n:1\r\n");
    assert_eq!(kv.db.next_deadline(), None);
    assert_eq!(replies(&mut kv, "INFO keyspace\r\n"), "$12\r\n# Keyspace\r\n\r\n");
}

/// State version 4, byte for byte, for each type, with no connection and zero counters: what
/// the `kv-v3-to-v4` transformer writes (its tests, `guests/transforms/kv-v3-to-v4/src/lib.rs`,
/// pin the same bytes).
#[test]
fn the_state_encoding_is_pinned() {
    let encode = |request: &str| {
        let mut kv = Kv::default();
        // At time 0, so that a deadline of 5 is in the future.
        at(&mut kv, 0, request);
        kv.clients.clear();
        kv.stats = crate::Stats::default();
        postcard::to_allocvec(&kv).unwrap()
    };
    let no_clients_zero_counters = [0, 0, 0, 0];
    let t0 = [0x80, 0xd0, 0x95, 0xff, 0xbc, 0x31];
    let mut string = vec![1, 1, b'k', 0, 1, b'v', 1, 5];
    string.extend(no_clients_zero_counters);
    let mut list = vec![1, 1, b'l', 1, 2, 1, b'a', 0, 0];
    list.extend(no_clients_zero_counters);
    let mut hash = vec![1, 1, b'h', 2, 1, 1, b'f', 1, b'v', 1];
    hash.extend(t0);
    let mut set = vec![1, 1, b's', 3, 1, 1, b'm', 0];
    set.extend(no_clients_zero_counters);
    let mut zset = vec![1, 1, b'z', 4, 1, 1, b'm', 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0];
    zset.extend(no_clients_zero_counters);
    assert_eq!(encode("SET k v PXAT 5\r\n"), string);
    assert_eq!(encode("RPUSH l a \"\"\r\n"), list);
    let mut with_counters = hash.clone();
    with_counters.extend(no_clients_zero_counters);
    assert_eq!(encode(&format!("HSET h f v\r\nPEXPIREAT h {T0}\r\n")), with_counters);
    assert_eq!(encode("SADD s m\r\n"), set);
    assert_eq!(encode("ZADD z 1.5 m\r\n"), zset);
    assert_eq!(encode(""), [0, 0, 0, 0, 0]);

    // And read back into the real types.
    let mut kv: Kv = postcard::from_bytes(&string).unwrap();
    kv.db.rebuild_deadlines();
    assert_eq!(at(&mut kv, 0, "GET k\r\nPTTL k\r\n"), "$1\r\nv\r\n:5\r\n");
    let entries: HashMap<Vec<u8>, Entry, FixedState> = postcard::from_bytes(&hash).unwrap();
    let fields = Box::new([(b"f".to_vec(), b"v".to_vec())].into_iter().collect());
    assert_eq!(entries[b"h".as_slice()], Entry::new(Value::Hash(fields), Some(T0)));
}

/// Given the same requests, kv 5 writes the very bytes kv 4.0.0 wrote (pinned, as kv 4 wrote
/// them, in `guests/kv-states`): every kind of value and a connection with every part of its
/// state set, its parser in the middle of a request. They decode as release 4's frozen types
/// and kv 5 reads them back into the same state.
#[test]
fn it_writes_and_reads_release_4s_bytes() {
    let mut kv = Kv::default();
    at(
        &mut kv,
        0,
        "SET k v PXAT 5\r\nRPUSH l a \"\"\r\nHSET h f v\r\nSADD s m n\r\nZADD z 1.5 m 2 n\r\n\
         HELLO 3\r\nCLIENT SETNAME me\r\nCLIENT SETINFO LIB-NAME lib\r\nWATCH k\r\nMULTI\r\n\
         SET k w\r\n",
    );
    let half = b"*2\r\n$3\r\nGET\r\n";
    assert_eq!(kv.serve(CONN, half, &mut Vec::new(), 0, usize::MAX), (0, false));
    let kv_4_wrote = kv_states::V4_PINNED;
    let bytes = postcard::to_allocvec(&kv).unwrap();
    assert_eq!(bytes, kv_4_wrote);
    let frozen: kv_states::v4::Kv = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(frozen.clients[&CONN].parser.pos, 13);
    let back: Kv = postcard::from_bytes(kv_4_wrote).unwrap();
    assert_eq!(postcard::to_allocvec(&back).unwrap(), kv_4_wrote);
}

/// On purpose, release 5 reads only its own state version, release 4's: older ones come
/// through transformers, and the host learns that from `describe`.
#[test]
fn only_state_version_4_is_accepted() {
    use tasuki_guest::runtime::Runtime;
    use tasuki_guest::runtime::bindings::tasuki::server::types::{Section, Snapshot};

    assert!(Kv::migrations().versions().is_empty());
    let mut runtime = Runtime::<Kv>::new(env!("CARGO_PKG_VERSION"));
    let info = runtime.describe();
    assert_eq!((info.name.as_str(), info.version.as_str()), ("kv", "5.0.0"));
    let section = info.sections.iter().find(|s| s.name == "kv").expect("a kv section");
    assert_eq!((section.version, section.accepts.as_slice()), (4, [4].as_slice()));

    let snapshot = |version, bytes: &[u8]| Snapshot {
        app: "kv".to_string(),
        app_version: "2.0.0".to_string(),
        sections: vec![Section { name: "kv".to_string(), version, bytes: bytes.to_vec() }],
    };
    // kv 3.0.0's `{"k": "v"}`: refused, naming the version.
    let error =
        runtime.import_state(snapshot(3, &[1, 1, b'k', 0, 1, b'v', 0]), Vec::new()).unwrap_err();
    assert!(error.contains("version 3") && error.contains("[4]"), "{error}");
    // The same key at version 4, as kv-v3-to-v4 writes it: taken.
    runtime
        .import_state(snapshot(4, &[1, 1, b'k', 0, 1, b'v', 0, 0, 0, 0, 0]), Vec::new())
        .unwrap();
}

/// The replies to `input` sent on connection `conn` at [`T0`], which must leave it open.
fn on(kv: &mut Kv, conn: u64, input: &str) -> String {
    let mut out = Vec::new();
    let (consumed, close) = kv.serve(conn, input.as_bytes(), &mut out, T0, usize::MAX);
    assert_eq!(consumed, input.len(), "every request of {input:?} is whole");
    assert!(!close, "{input:?} closed the connection");
    String::from_utf8(out).expect("replies here are text")
}

/// What an upgrade to this same release does with the state: encode it, decode it, rebuild
/// what is derived.
fn upgraded(kv: &Kv) -> Kv {
    let mut back: Kv = postcard::from_bytes(&postcard::to_allocvec(kv).unwrap()).unwrap();
    back.rebuild_indexes();
    back
}

const HELLO_3: &str = "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.2.0\r\n\
    $5\r\nproto\r\n:3\r\n$2\r\nid\r\n:1\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n\
    $6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";

#[test]
fn hello_chooses_the_protocol_per_connection() {
    let mut kv = Kv::default();
    assert_eq!(on(&mut kv, 1, "HELLO 3\r\n"), HELLO_3);
    assert_eq!(on(&mut kv, 1, "HSET h f v\r\nHGETALL h\r\n"), ":1\r\n%1\r\n$1\r\nf\r\n$1\r\nv\r\n");
    assert_eq!(
        on(&mut kv, 1, "GET nope\r\nCONFIG GET save\r\n"),
        "_\r\n%1\r\n$4\r\nsave\r\n$0\r\n\r\n"
    );
    // Another connection still speaks RESP2.
    assert_eq!(on(&mut kv, 2, "GET nope\r\nHGETALL h\r\n"), "$-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n");
    let hello2 = on(&mut kv, 1, "HELLO 2 SETNAME app\r\n");
    assert!(hello2.starts_with("*14\r\n") && hello2.contains(":2\r\n"), "{hello2}");
    assert_eq!(on(&mut kv, 1, "CLIENT GETNAME\r\nGET nope\r\n"), "$3\r\napp\r\n$-1\r\n");
    assert_eq!(on(&mut kv, 1, "HELLO\r\n").len(), hello2.len(), "no version: the same protocol");
    assert_eq!(
        on(&mut kv, 1, "HELLO 4\r\nHELLO x\r\nHELLO 3 SETNAME\r\nHELLO 3 SETNAME \"a b\"\r\n"),
        "-NOPROTO unsupported protocol version\r\n\
         -ERR Protocol version is not an integer or out of range\r\n\
         -ERR Syntax error in HELLO option 'SETNAME'\r\n\
         -ERR Client names cannot contain spaces, newlines or special characters.\r\n"
    );
}

#[test]
fn a_password_from_the_arguments() {
    let config = Config::from_args(&["requirepass=sekret".into()]).unwrap();
    let mut kv = Kv { config, ..Kv::default() };
    assert!(Config::from_args(&["requirepass".into()]).is_err());
    assert!(Config::from_args(&["port=1".into()]).is_err());
    assert_eq!(
        on(&mut kv, 1, "GET a\r\nFOO\r\nAUTH wrong\r\nAUTH default wrong\r\nHELLO 3\r\n"),
        "-NOAUTH Authentication required.\r\n\
         -ERR unknown command 'FOO', with args beginning with: \r\n\
         -WRONGPASS invalid username-password pair or user is disabled.\r\n\
         -WRONGPASS invalid username-password pair or user is disabled.\r\n\
         -NOAUTH HELLO must be called with the client already authenticated, otherwise the \
         HELLO AUTH <user> <pass> option can be used to authenticate the client and select the \
         RESP protocol version at the same time\r\n"
    );
    assert_eq!(on(&mut kv, 1, "AUTH sekret\r\nGET a\r\n"), "+OK\r\n$-1\r\n");
    assert_eq!(
        on(&mut kv, 1, "RESET\r\nGET a\r\n"),
        "+RESET\r\n-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(
        on(&mut kv, 2, "HELLO 3 AUTH default sekret\r\n").replace(":2\r\n", ":1\r\n"),
        HELLO_3
    );
    // Without a password, AUTH says so; `default` takes any.
    let mut open = Kv::default();
    assert_eq!(
        on(&mut open, 1, "AUTH x\r\nAUTH default x\r\nAUTH other x\r\n"),
        "-ERR AUTH <password> called without any password configured for the default user. \
         Are you sure your configuration is correct?\r\n+OK\r\n\
         -WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
}

#[test]
fn before_authenticating_requests_are_small() {
    let config = Config::from_args(&["requirepass=p".into()]).unwrap();
    let mut kv = Kv { config, ..Kv::default() };
    let mut out = Vec::new();
    let (_, close) = kv.serve(1, b"*11\r\n", &mut out, T0, usize::MAX);
    assert!(close);
    assert_eq!(out, b"-ERR Protocol error: unauthenticated multibulk length\r\n");
}

#[test]
fn transactions_queue_and_run_together() {
    let mut kv = Kv::default();
    assert_eq!(
        on(&mut kv, 1, "MULTI\r\nSET a 1\r\nINCR a\r\nLPUSH a x\r\nGET a\r\nEXEC\r\n"),
        "+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*4\r\n+OK\r\n:2\r\n\
         -WRONGTYPE Operation against a key holding the wrong kind of value\r\n$1\r\n2\r\n"
    );
    assert_eq!(
        on(
            &mut kv,
            1,
            "MULTI\r\nMULTI\r\nWATCH a\r\nSET a\r\nNOPE\r\nSET a 9\r\nEXEC\r\nGET a\r\n"
        ),
        "+OK\r\n-ERR MULTI calls can not be nested\r\n-ERR WATCH inside MULTI is not allowed\r\n\
         -ERR wrong number of arguments for 'set' command\r\n\
         -ERR unknown command 'NOPE', with args beginning with: \r\n+QUEUED\r\n\
         -EXECABORT Transaction discarded because of previous errors.\r\n$1\r\n2\r\n"
    );
    assert_eq!(
        on(
            &mut kv,
            1,
            "EXEC\r\nDISCARD\r\nMULTI\r\nSET a 3\r\nDISCARD\r\nGET a\r\nMULTI\r\nEXEC\r\n"
        ),
        "-ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n+OK\r\n+QUEUED\r\n+OK\r\n\
         $1\r\n2\r\n+OK\r\n*0\r\n"
    );
}

#[test]
fn watch_aborts_on_a_write_by_anyone() {
    let mut kv = Kv::default();
    // Another connection writes the watched key: null.
    assert_eq!(on(&mut kv, 1, "WATCH k\r\nMULTI\r\nSET k mine\r\n"), "+OK\r\n+OK\r\n+QUEUED\r\n");
    assert_eq!(on(&mut kv, 2, "SET k theirs\r\n"), "+OK\r\n");
    assert_eq!(on(&mut kv, 1, "EXEC\r\nGET k\r\n"), "*-1\r\n$6\r\ntheirs\r\n");
    // Nobody writes it: the transaction runs, and the watch is over.
    assert_eq!(
        on(&mut kv, 1, "WATCH k\r\nMULTI\r\nSET k mine\r\nEXEC\r\n"),
        "+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n"
    );
    assert_eq!(on(&mut kv, 2, "SET k theirs\r\n"), "+OK\r\n");
    assert_eq!(
        on(&mut kv, 1, "MULTI\r\nGET k\r\nEXEC\r\n"),
        "+OK\r\n+QUEUED\r\n*1\r\n$6\r\ntheirs\r\n"
    );
    // Its own write, an expiry, a flush: each aborts. UNWATCH forgets.
    assert_eq!(on(&mut kv, 1, "HELLO 3\r\n"), HELLO_3);
    assert_eq!(
        on(&mut kv, 1, "WATCH k\r\nDEL k\r\nMULTI\r\nEXEC\r\n"),
        "+OK\r\n:1\r\n+OK\r\n_\r\n"
    );
    assert_eq!(on(&mut kv, 1, "SET e 1 PX 10\r\nWATCH e\r\nMULTI\r\n"), "+OK\r\n+OK\r\n+OK\r\n");
    let mut out = Vec::new();
    kv.serve(1, b"EXEC\r\n", &mut out, T0 + 10, usize::MAX);
    assert_eq!(out, b"_\r\n");
    assert_eq!(
        on(&mut kv, 1, "SET f 1\r\nWATCH f\r\nFLUSHALL\r\nMULTI\r\nEXEC\r\n"),
        "+OK\r\n+OK\r\n+OK\r\n+OK\r\n_\r\n"
    );
    // Changes in place count too.
    on(&mut kv, 1, "SET n 1\r\nWATCH n\r\nMULTI\r\n");
    assert_eq!(on(&mut kv, 2, "INCR n\r\n"), ":2\r\n");
    assert_eq!(on(&mut kv, 1, "EXEC\r\n"), "_\r\n");
    on(&mut kv, 1, "WATCH n\r\nMULTI\r\n");
    assert_eq!(on(&mut kv, 2, "APPEND n x\r\n"), ":2\r\n");
    assert_eq!(on(&mut kv, 1, "EXEC\r\n"), "_\r\n");
    assert_eq!(
        on(&mut kv, 1, "WATCH g\r\nUNWATCH\r\nSET g 1\r\nMULTI\r\nEXEC\r\n"),
        "+OK\r\n+OK\r\n+OK\r\n+OK\r\n*0\r\n"
    );
    assert_eq!(kv.db.watches.keys().count(), 0, "no watch is left behind");
}

/// A connection's own write to a key it watches, in one event, aborts its `EXEC` in a later
/// one, after another connection's event ran in between: the mark lands on its client, lent
/// to the event, not on the spare its entry holds meanwhile.
#[test]
fn an_own_write_to_a_watched_key_aborts_a_later_exec() {
    let mut kv = Kv::default();
    assert_eq!(on(&mut kv, 1, "WATCH k\r\nSET k 1\r\n"), "+OK\r\n+OK\r\n");
    assert_eq!(on(&mut kv, 2, "PING\r\n"), "+PONG\r\n");
    assert_eq!(
        on(&mut kv, 1, "MULTI\r\nSET k 2\r\nEXEC\r\nGET k\r\n"),
        "+OK\r\n+QUEUED\r\n*-1\r\n$1\r\n1\r\n"
    );
}

/// A connection's protocol, open transaction and watches are state: they cross an upgrade.
#[test]
fn a_connections_state_crosses_an_upgrade() {
    let mut kv = Kv::default();
    on(&mut kv, 1, "HELLO 3\r\nCLIENT SETNAME one\r\nWATCH w\r\n");
    on(&mut kv, 1, "MULTI\r\nSET a 1\r\nHSET h f v\r\n");
    let mut kv = upgraded(&kv);
    assert_eq!(
        on(&mut kv, 1, "HGETALL h\r\nEXEC\r\n"),
        "+QUEUED\r\n*3\r\n+OK\r\n:1\r\n%1\r\n$1\r\nf\r\n$1\r\nv\r\n"
    );
    assert_eq!(on(&mut kv, 1, "CLIENT GETNAME\r\nGET nope\r\n"), "$3\r\none\r\n_\r\n");
    on(&mut kv, 1, "WATCH w\r\nMULTI\r\n");
    let mut kv = upgraded(&kv);
    on(&mut kv, 2, "SET w x\r\n");
    assert_eq!(on(&mut kv, 1, "EXEC\r\n"), "_\r\n", "the watch, rebuilt, still aborts");
}

/// A request cut anywhere, with the state crossing an upgrade at the cut, is answered once.
#[test]
fn a_half_parsed_request_crosses_an_upgrade() {
    let request = b"*3\r\n$5\r\nRPUSH\r\n$1\r\nl\r\n$5\r\nhello\r\n";
    for cut in 1..request.len() {
        let mut kv = Kv::default();
        let mut out = Vec::new();
        let (consumed, _) = kv.serve(1, &request[..cut], &mut out, T0, usize::MAX);
        assert_eq!((consumed, out.as_slice()), (0, &b""[..]), "cut at {cut}");
        let mut kv = upgraded(&kv);
        let (consumed, _) = kv.serve(1, request, &mut out, T0, usize::MAX);
        assert_eq!((consumed, out.as_slice()), (request.len(), &b":1\r\n"[..]), "cut at {cut}");
    }
}

#[test]
fn client_commands() {
    let mut kv = Kv::default();
    kv.on_connect(
        &mut tasuki_guest::Ctx::default(),
        &tasuki_guest::ConnInfo {
            id: 5,
            listener: "127.0.0.1:6379".into(),
            peer: "127.0.0.1:40000".into(),
            listener_id: None,
        },
    );
    assert_eq!(
        on(
            &mut kv,
            5,
            "CLIENT SETINFO LIB-NAME redis-py\r\nCLIENT SETINFO lib-ver 8.1.0\r\n\
            CLIENT SETINFO other x\r\nCLIENT SETINFO lib-name \"a b\"\r\nCLIENT ID\r\nCLIENT NOPE\r\n"
        ),
        "+OK\r\n+OK\r\n-ERR Unrecognized option 'other'\r\n\
         -ERR lib-name cannot contain spaces, newlines or special characters.\r\n:5\r\n\
         -ERR unknown subcommand 'NOPE'. Try CLIENT HELP.\r\n"
    );
    let info = on(&mut kv, 5, "CLIENT INFO\r\n");
    assert!(
        info.contains("id=5 addr=127.0.0.1:40000 laddr=127.0.0.1:6379 fd=-1 name= ")
            && info.contains(
                " cmd=client|info user=default redir=-1 resp=2 lib-name=redis-py lib-ver=8.1.0\n"
            ),
        "{info}"
    );
    on(&mut kv, 6, "PING\r\n");
    let list = on(&mut kv, 5, "CLIENT LIST\r\n");
    assert_eq!(list.matches("id=").count(), 2, "{list}");
    assert!(on(&mut kv, 5, "CLIENT LIST ID 6\r\n").contains("id=6 "));
    assert_eq!(
        on(
            &mut kv,
            5,
            "CLIENT NO-EVICT on\r\nCLIENT NO-TOUCH maybe\r\nCLIENT REPLY OFF\r\nPING\r\n\
            CLIENT REPLY ON\r\nCLIENT REPLY SKIP\r\nPING\r\nPING\r\nSELECT 0\r\nSELECT 1\r\n"
        ),
        "+OK\r\n-ERR syntax error\r\n+OK\r\n+PONG\r\n+OK\r\n-ERR DB index is out of range\r\n"
    );
    let mut out = Vec::new();
    assert_eq!(kv.serve(5, b"QUIT\r\nPING\r\n", &mut out, T0, usize::MAX), (12, true));
    assert_eq!(out, b"+OK\r\n");
    assert!(!kv.clients.contains_key(&5), "a connection that quits leaves no state behind");
    kv.on_disconnect(&mut tasuki_guest::Ctx::default(), 6);
    assert!(!kv.clients.contains_key(&6));
}

#[test]
fn config_set_takes_effect_or_refuses() {
    let mut kv = Kv::default();
    assert_eq!(
        on(
            &mut kv,
            1,
            "CONFIG SET save \"\"\r\nCONFIG SET appendonly yes\r\nCONFIG SET nope 1\r\n"
        ),
        "+OK\r\n-ERR CONFIG SET failed (possibly related to argument 'appendonly') - kv keeps its \
         state in memory and moves it by state transfer\r\n\
         -ERR Unknown option or number of arguments for CONFIG SET - 'nope'\r\n"
    );
}

#[test]
fn info_has_the_fields_clients_parse() {
    let mut kv = Kv::default();
    let info = on(&mut kv, 1, "INFO\r\n");
    for field in [
        "redis_version:7.2.0",
        "redis_mode:standalone",
        "arch_bits:",
        "connected_clients:1",
        "used_memory:",
        "total_commands_processed:",
        "cluster_enabled:0",
        "# Keyspace",
        "role:master",
    ] {
        assert!(info.contains(field), "{field} in {info}");
    }
    let server = on(&mut kv, 1, "HELLO 3\r\nINFO server\r\n");
    assert!(
        server.contains("=")
            && server.contains("txt:# Server\r\n")
            && !server.contains("# Keyspace"),
        "{server}"
    );
}

#[test]
fn sets_add_remove_and_pop() {
    let mut kv = Kv::default();
    let cases = [
        ("SADD s a b c a\r\nSREM s a x\r\nSCARD s\r\n", ":3\r\n:1\r\n:2\r\n"),
        ("SISMEMBER s b\r\nSMISMEMBER s b x\r\nSCARD nope\r\n", ":1\r\n*2\r\n:1\r\n:0\r\n:0\r\n"),
        (
            "SPOP nope\r\nSPOP nope 2\r\nSRANDMEMBER nope 3\r\nSMEMBERS nope\r\n",
            "$-1\r\n*0\r\n*0\r\n*0\r\n",
        ),
        (
            "SPOP s -1\r\nSPOP s 1 2\r\nSRANDMEMBER s x\r\n",
            "-ERR value is out of range, must be positive\r\n-ERR syntax error\r\n\
             -ERR value is not an integer or out of range\r\n",
        ),
        (
            "SADD one x\r\nSMEMBERS one\r\nSPOP one\r\nEXISTS one\r\n",
            ":1\r\n*1\r\n$1\r\nx\r\n$1\r\nx\r\n:0\r\n",
        ),
        ("SREM s b c\r\nTYPE s\r\n", ":2\r\n+none\r\n"),
    ];
    for (request, reply) in cases {
        assert_eq!(replies(&mut kv, request), reply, "{request:?}");
    }
    replies(&mut kv, "SADD big 1 2 3 4 5 6 7 8 9 10\r\n");
    let two = replies(&mut kv, "SRANDMEMBER big 4\r\n");
    assert!(two.starts_with("*4\r\n"), "{two}");
    let picks: Vec<&str> = two.split("\r\n").skip(2).step_by(2).collect();
    let mut distinct = picks.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "distinct members: {two}");
    assert!(replies(&mut kv, "SRANDMEMBER big -20\r\n").starts_with("*20\r\n"));
    let popped = replies(&mut kv, "SPOP big 3\r\nSCARD big\r\nSPOP big 100\r\nEXISTS big\r\n");
    assert!(popped.starts_with("*3\r\n") && popped.contains(":7\r\n*7\r\n"), "{popped}");
    assert!(popped.ends_with(":0\r\n"), "{popped}");
    assert_eq!(
        on(&mut kv, 3, "HELLO 3\r\nSPOP nope 1\r\n").rsplit_once("*0").map(|_| ()),
        Some(())
    );
}

/// A replay after a trap runs the same events at the same times on the same state: random
/// picks must come out the same, or the rebuilt state would not be the one clients saw.
#[test]
fn random_picks_are_the_same_in_a_replay() {
    let run = || {
        let mut kv = Kv::default();
        replies(&mut kv, "SADD s 1 2 3 4 5 6 7 8 9 10 11 12\r\nMSET a 1 b 2 c 3 d 4\r\n");
        at(&mut kv, T0 + 5, "SPOP s\r\nSPOP s 3\r\nSRANDMEMBER s 2\r\nRANDOMKEY\r\nRANDOMKEY\r\n")
    };
    let first = run();
    assert_eq!(run(), first);
    // And picks vary: another instant, another draw (over enough tries to be sure).
    let mut kv = Kv::default();
    replies(&mut kv, "SADD s 1 2 3 4 5 6 7 8 9 10 11 12\r\n");
    let draws: std::collections::BTreeSet<String> =
        (0..50).map(|t| at(&mut kv, T0 + t, "SRANDMEMBER s\r\n")).collect();
    assert!(draws.len() > 5, "{draws:?}");
}

#[test]
fn sorted_sets_add_with_flags_and_range() {
    let mut kv = Kv::default();
    let cases = [
        ("ZADD z 1 a 2 b 3 c\r\nZADD z NX 5 a 4 d\r\n", ":3\r\n:1\r\n"),
        (
            "ZADD z XX CH 10 a 20 nope\r\nZADD z GT 1 a\r\nZADD z LT CH 1 a\r\n",
            ":1\r\n:0\r\n:1\r\n",
        ),
        ("ZADD z INCR 2 a\r\nZADD z NX INCR 2 a\r\n", "$1\r\n3\r\n$-1\r\n"),
        (
            "ZADD z NX XX 1 a\r\nZADD z GT LT 1 a\r\nZADD z INCR 1 a 2 b\r\nZADD z 1 a 2\r\n",
            "-ERR XX and NX options at the same time are not compatible\r\n\
             -ERR GT, LT, and/or NX options at the same time are not compatible\r\n\
             -ERR INCR option supports a single increment-element pair\r\n-ERR syntax error\r\n",
        ),
        (
            "ZADD z nan a\r\nZADD z inf a\r\nZADD z INCR -inf a\r\n",
            "-ERR value is not a valid float\r\n:0\r\n-ERR resulting score is not a number (NaN)\r\n",
        ),
        ("ZADD zz XX 1 a\r\nEXISTS zz\r\nZADD z 1.5 a\r\nZCARD z\r\n", ":0\r\n:0\r\n:0\r\n:4\r\n"),
        (
            "ZSCORE z a\r\nZSCORE z nope\r\nZMSCORE z a x\r\n",
            "$3\r\n1.5\r\n$-1\r\n*2\r\n$3\r\n1.5\r\n$-1\r\n",
        ),
        (
            "ZRANK z c\r\nZREVRANK z c\r\nZRANK z c WITHSCORE\r\n",
            ":2\r\n:1\r\n*2\r\n:2\r\n$1\r\n3\r\n",
        ),
        (
            "ZRANK z nope WITHSCORE\r\nZRANK z c x y\r\n",
            "*-1\r\n-ERR wrong number of arguments for 'zrank' command\r\n",
        ),
        ("ZRANGE z 0 1\r\n", "*2\r\n$1\r\na\r\n$1\r\nb\r\n"),
        ("ZRANGE z 1 2 REV WITHSCORES\r\n", "*4\r\n$1\r\nc\r\n$1\r\n3\r\n$1\r\nb\r\n$1\r\n2\r\n"),
        ("ZRANGE z (1.5 3 BYSCORE\r\n", "*2\r\n$1\r\nb\r\n$1\r\nc\r\n"),
        ("ZRANGE z +inf -inf BYSCORE REV LIMIT 1 2\r\n", "*2\r\n$1\r\nc\r\n$1\r\nb\r\n"),
        ("ZRANGEBYSCORE z 2 4 LIMIT 0 1\r\nZCOUNT z (2 +inf\r\n", "*1\r\n$1\r\nb\r\n:2\r\n"),
        (
            "ZRANGE z 0 -1 LIMIT 0 1\r\nZRANGE z - + BYLEX WITHSCORES\r\nZRANGE z x 1 BYSCORE\r\n\
             ZRANGE z 0 1 BYLEX\r\n",
            "-ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX\r\n\
             -ERR syntax error, WITHSCORES not supported in combination with BYLEX\r\n\
             -ERR min or max is not a float\r\n-ERR min or max not valid string range item\r\n",
        ),
        (
            "ZADD lex 0 a 0 b 0 c 0 d\r\nZRANGEBYLEX lex [b (d\r\n",
            ":4\r\n*2\r\n$1\r\nb\r\n$1\r\nc\r\n",
        ),
        ("ZRANGE lex + - BYLEX REV LIMIT 0 2\r\n", "*2\r\n$1\r\nd\r\n$1\r\nc\r\n"),
        (
            "ZPOPMIN z\r\nZPOPMIN z 0\r\nZPOPMIN nope\r\n",
            "*2\r\n$1\r\na\r\n$3\r\n1.5\r\n*0\r\n*0\r\n",
        ),
        (
            "ZPOPMAX z 2\r\nZREM z b nope\r\nEXISTS z\r\n",
            "*4\r\n$1\r\nd\r\n$1\r\n4\r\n$1\r\nc\r\n$1\r\n3\r\n:1\r\n:0\r\n",
        ),
    ];
    for (request, reply) in cases {
        assert_eq!(replies(&mut kv, request), reply, "{request:?}");
    }
    // RESP3: doubles, and WITHSCORES pairs nested.
    assert_eq!(
        on(&mut kv, 3, "HELLO 3\r\nZADD r 1 a 2.5 b\r\nZRANGE r 0 -1 WITHSCORES\r\n")
            .split_once("*0\r\n")
            .unwrap()
            .1,
        ":2\r\n*2\r\n*2\r\n$1\r\na\r\n,1\r\n*2\r\n$1\r\nb\r\n,2.5\r\n"
    );
    assert_eq!(
        on(&mut kv, 3, "ZPOPMIN r\r\nZPOPMIN r 1\r\n"),
        "*2\r\n$1\r\na\r\n,1\r\n*1\r\n*2\r\n$1\r\nb\r\n,2.5\r\n"
    );
}

#[test]
fn strings_and_keys_of_redis_6_and_7() {
    let mut kv = Kv::default();
    let cases = [
        (
            "SET f 10.5\r\nINCRBYFLOAT f 0.1\r\nINCRBYFLOAT nf 5.0e3\r\n",
            "+OK\r\n$4\r\n10.6\r\n$4\r\n5000\r\n",
        ),
        (
            "INCRBYFLOAT f x\r\nINCRBYFLOAT f inf\r\n",
            "-ERR value is not a valid float\r\n-ERR increment would produce NaN or Infinity\r\n",
        ),
        (
            "GETSET f new\r\nGETSET nope v\r\nGETDEL nope\r\nGETDEL f\r\nEXISTS f\r\n",
            "$4\r\n10.6\r\n$-1\r\n$1\r\nv\r\n$3\r\nnew\r\n:0\r\n",
        ),
        (
            "SET e v\r\nGETEX e EX 100\r\nTTL e\r\nGETEX e PERSIST\r\nTTL e\r\n",
            "+OK\r\n$1\r\nv\r\n:100\r\n$1\r\nv\r\n:-1\r\n",
        ),
        (
            "GETEX e EX 10 PX 10\r\nGETEX e PERSIST EX 1\r\nGETEX e PX 0\r\nGETEX nope EX 0\r\n",
            "-ERR syntax error\r\n-ERR syntax error\r\n-ERR invalid expire time in 'getex' command\r\n$-1\r\n",
        ),
        ("GETEX e EXAT 1\r\nEXISTS e\r\n", "$1\r\nv\r\n:0\r\n"),
        (
            "SETRANGE sr 5 hi\r\nGET sr\r\nSETRANGE sr 0 HELLO\r\n",
            ":7\r\n$7\r\n\0\0\0\0\0hi\r\n:7\r\n",
        ),
        (
            "SETRANGE sr -1 x\r\nSETRANGE nothing 3 \"\"\r\nEXISTS nothing\r\nSETRANGE sr 536870912 x\r\n",
            "-ERR offset is out of range\r\n:0\r\n:0\r\n\
             -ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n",
        ),
        (
            "GETRANGE sr 0 -1\r\nGETRANGE sr -3 -1\r\nGETRANGE sr -1 -3\r\nSUBSTR sr 5 100\r\n",
            "$7\r\nHELLOhi\r\n$3\r\nOhi\r\n$0\r\n\r\n$2\r\nhi\r\n",
        ),
        ("MSETNX a 1 b 2\r\nMSETNX a 1 c 3\r\nEXISTS c\r\n", ":1\r\n:0\r\n:0\r\n"),
        (
            "RENAME a z\r\nRENAME nope x\r\nGET z\r\nRENAME z z\r\n",
            "+OK\r\n-ERR no such key\r\n$1\r\n1\r\n+OK\r\n",
        ),
        (
            "RENAMENX b z\r\nRENAMENX b b\r\nRENAMENX b y\r\nRENAMENX nope y\r\n",
            ":0\r\n:0\r\n:1\r\n-ERR no such key\r\n",
        ),
        (
            "SET t1 v EX 100\r\nRENAME t1 t2\r\nTTL t2\r\nTTL t1\r\n",
            "+OK\r\n+OK\r\n:100\r\n:-2\r\n",
        ),
        (
            "FLUSHALL\r\nRANDOMKEY\r\nSET only 1\r\nRANDOMKEY\r\n",
            "+OK\r\n$-1\r\n+OK\r\n$4\r\nonly\r\n",
        ),
        (
            "SADD s m\r\nZADD zs 1 m\r\nTYPE s\r\nTYPE zs\r\nUNLINK s zs\r\n",
            ":1\r\n:1\r\n+set\r\n+zset\r\n:2\r\n",
        ),
    ];
    for (request, reply) in cases {
        assert_eq!(replies(&mut kv, request), reply, "{request:?}");
    }
}

#[test]
fn lpos_finds_matches() {
    let mut kv = Kv::default();
    replies(&mut kv, "RPUSH l a b c a d a\r\n");
    let cases = [
        ("LPOS l a\r\nLPOS l a RANK 2\r\nLPOS l a RANK -1\r\n", ":0\r\n:3\r\n:5\r\n"),
        (
            "LPOS l a RANK -2 COUNT 2\r\nLPOS l a COUNT 0 MAXLEN 4\r\n",
            "*2\r\n:3\r\n:0\r\n*2\r\n:0\r\n:3\r\n",
        ),
        (
            "LPOS l a RANK -1 MAXLEN 2\r\nLPOS l x\r\nLPOS l x COUNT 2\r\nLPOS nope a COUNT 1\r\n",
            ":5\r\n$-1\r\n*0\r\n*0\r\n",
        ),
        (
            "LPOS l a RANK 0\r\nLPOS l a COUNT -1\r\nLPOS l a MAXLEN x\r\nLPOS l a RANK\r\n",
            "-ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or \
             use negative to start from the end of the list\r\n-ERR COUNT can't be negative\r\n\
             -ERR MAXLEN can't be negative\r\n-ERR syntax error\r\n",
        ),
    ];
    for (request, reply) in cases {
        assert_eq!(replies(&mut kv, request), reply, "{request:?}");
    }
}

/// The values the new commands make crossing an upgrade: sets, sorted sets (their order is
/// rebuilt from the members), their deadlines.
#[test]
fn sets_and_sorted_sets_cross_an_upgrade() {
    let mut kv = Kv::default();
    replies(&mut kv, "SADD s a b c\r\nZADD z 2 b 1 a -1.5 c\r\nPEXPIRE z 700\r\n");
    let mut back = upgraded(&kv);
    assert_eq!(
        at(
            &mut back,
            T0 + 100,
            "SCARD s\r\nSISMEMBER s b\r\nZRANGE z 0 -1 WITHSCORES\r\nPTTL z\r\n"
        ),
        ":3\r\n:1\r\n*6\r\n$1\r\nc\r\n$4\r\n-1.5\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n:600\r\n"
    );
}

/// A walk of `SCAN` (or `HSCAN`) in steps of `count`, with an upgrade between every two calls
/// and churn from another connection: every key present throughout comes back exactly once.
fn walk(kv: &mut Kv, first: &str, count: usize) -> Vec<String> {
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    let mut step = 0;
    loop {
        let request = format!("{first} {cursor} COUNT {count}\r\n");
        let reply = on(kv, 1, &request);
        let lines: Vec<&str> = reply.split("\r\n").collect();
        cursor = lines[2].to_string();
        seen.extend(lines[4..].iter().skip(1).step_by(2).map(|s| s.to_string()));
        // Churn between calls, then an upgrade.
        on(
            kv,
            2,
            &format!("SET churn:{step} x\r\nDEL churn:{}\r\nHSET h churn:{step} x\r\n", step / 2),
        );
        *kv = upgraded(kv);
        step += 1;
        if cursor == "0" {
            return seen;
        }
    }
}

#[test]
fn a_scan_cursor_stays_valid_across_upgrades() {
    let mut kv = Kv::default();
    let mut fill = String::new();
    for i in 0..500 {
        fill.push_str(&format!("SET key:{i} v\r\nHSET h field:{i} v\r\n"));
    }
    replies(&mut kv, &fill);
    let seen = walk(&mut kv, "SCAN", 20);
    for i in 0..500 {
        let key = format!("key:{i}");
        assert_eq!(seen.iter().filter(|s| **s == key).count(), 1, "{key}");
    }
    assert!(seen.len() < 600, "{} keys returned for about 500", seen.len());
    let seen = walk(&mut kv, "HSCAN h", 10);
    // HSCAN returns field, value pairs: every other one is a field.
    let fields: Vec<&String> = seen.iter().step_by(2).collect();
    for i in 0..500 {
        let field = format!("field:{i}");
        assert_eq!(fields.iter().filter(|s| ***s == field).count(), 1, "{field}");
    }
    // MATCH and TYPE filter each batch.
    replies(&mut kv, "RPUSH list:1 a\r\n");
    let all = replies(&mut kv, "SCAN 0 COUNT 10000 TYPE list\r\n");
    assert_eq!(all, "*2\r\n$1\r\n0\r\n*1\r\n$6\r\nlist:1\r\n");
    let matched = replies(&mut kv, "SCAN 0 COUNT 10000 MATCH key:49?\r\n");
    assert!(matched.starts_with("*2\r\n$1\r\n0\r\n*10\r\n"), "{matched}");
}

#[test]
fn memory_usage_counts_the_key_and_what_its_value_holds() {
    let mut kv = Kv::default();
    let number = |reply: String| -> u64 {
        reply.strip_prefix(':').and_then(|r| r.strip_suffix("\r\n")).unwrap().parse().unwrap()
    };
    on(&mut kv, 1, "SET small v\r\n");
    let big = "x".repeat(10_000);
    on(&mut kv, 1, &format!("SET big {big}\r\nRPUSH list {big} {big} {big}\r\n"));
    let small = number(on(&mut kv, 1, "MEMORY USAGE small\r\n"));
    let large = number(on(&mut kv, 1, "MEMORY USAGE big\r\n"));
    let list = number(on(&mut kv, 1, "MEMORY USAGE list SAMPLES 0\r\n"));
    assert!((6..200).contains(&small), "{small}");
    assert!(large >= 10_003 && large < small + 10_100, "{large} vs {small}");
    assert!(list >= 30_004, "{list}");
    // SAMPLES given twice: the last counts (redis accepts it too).
    assert_eq!(number(on(&mut kv, 1, "MEMORY USAGE list SAMPLES 1 SAMPLES 0\r\n")), list);
    assert_eq!(
        on(
            &mut kv,
            1,
            "MEMORY USAGE list SAMPLES 1 SAMPLES\r\nMEMORY USAGE list SAMPLES 1 X 2\r\n"
        ),
        "-ERR syntax error\r\n-ERR syntax error\r\n"
    );
    assert_eq!(
        on(
            &mut kv,
            1,
            "MEMORY USAGE missing\r\nMEMORY USAGE small SAMPLES x\r\nMEMORY USAGE small COUNT 1\r\nMEMORY NOPE\r\nMEMORY\r\n"
        ),
        "$-1\r\n-ERR value is not an integer or out of range\r\n-ERR syntax error\r\n\
         -ERR unknown subcommand 'NOPE'. Try MEMORY HELP.\r\n\
         -ERR wrong number of arguments for 'memory' command\r\n"
    );
}

#[test]
fn a_batch_stops_after_the_reply_that_reaches_the_output_limit() {
    let mut kv = Kv::default();
    replies(&mut kv, &format!("SET big {}\r\n", "v".repeat(1000)));
    let get = "GET big\r\n";
    let reply_len = "$1000\r\n".len() + 1000 + 2;
    let mut out = Vec::new();
    // A limit inside the third reply: three answered, the other seven left for later.
    let input = get.repeat(10);
    let (consumed, close) = kv.serve(CONN, input.as_bytes(), &mut out, T0, 2 * reply_len + 1);
    assert!(!close);
    assert_eq!(consumed, 3 * get.len());
    assert_eq!(out.len(), 3 * reply_len);
    // What was left is answered whole when offered again with room.
    let (consumed, _) = kv.serve(CONN, &input.as_bytes()[consumed..], &mut out, T0, usize::MAX);
    assert_eq!(consumed, 7 * get.len());
    assert_eq!(out.len(), 10 * reply_len);
}

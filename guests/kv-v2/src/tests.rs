//! Requests in, replies out, on a clock the tests set: the server driven as a client drives it,
//! without a host.

use crate::{EXPIRY_BATCH, Kv, v1};
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
    let (consumed, close) = kv.serve(CONN, input.as_bytes(), &mut out, now);
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
fn everything_release_1_does() {
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
    assert!(info.contains("tasuki_app:kv\r\ntasuki_version:2.0.0\r\n"), "{info}");
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

/// Release 1's state, as release 1 encodes it, becomes this release's with every key and no
/// deadline.
#[test]
fn release_1_state_migrates() {
    let map: HashMap<Vec<u8>, Vec<u8>> =
        [(b"a".to_vec(), b"1".to_vec()), (b"counter".to_vec(), b"41".to_vec())].into();
    let bytes = postcard::to_allocvec(&map).unwrap();
    let mut kv = Kv::migrations().run(1, &bytes).expect("version 1 is accepted").unwrap();
    assert_eq!(Kv::migrations().versions(), [1]);
    kv.db.rebuild_deadlines();
    assert_eq!(
        replies(&mut kv, "GET a\r\nINCR counter\r\nTTL a\r\nDBSIZE\r\n"),
        "$1\r\n1\r\n:42\r\n:-1\r\n:2\r\n"
    );
    assert!(Kv::migrations().run(3, &bytes).is_none());
}

/// The frozen copy decodes what the bare v1 shape encodes, field for field.
#[test]
fn the_frozen_v1_types_decode_the_v1_encoding() {
    let map: HashMap<Vec<u8>, Vec<u8>> = [(b"k".to_vec(), b"v".to_vec())].into();
    let state: v1::State = postcard::from_bytes(&postcard::to_allocvec(&map).unwrap()).unwrap();
    assert_eq!(state.db.entries.get(b"k".as_slice()), Some(&b"v".to_vec()));
}

/// This release's own state crosses an upgrade with its deadlines; the index and the timer do
/// not, and are rebuilt.
#[test]
fn state_round_trips_with_deadlines() {
    let mut kv = Kv::default();
    replies(&mut kv, "SET a 1 PX 500\r\nSET b 2\r\n");
    kv.expiry_timer_due(T0);
    let bytes = postcard::to_allocvec(&kv).unwrap();
    let mut back: Kv = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back.timer_armed_for, None);
    back.db.rebuild_deadlines();
    assert_eq!(back.expiry_timer_due(T0 + 100), Some(Duration::from_millis(400)));
    assert_eq!(at(&mut back, T0 + 100, "PTTL a\r\nTTL b\r\n"), ":400\r\n:-1\r\n");
    assert_eq!(postcard::to_allocvec(&back).unwrap(), bytes);
}

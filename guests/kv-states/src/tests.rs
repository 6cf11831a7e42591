//! Each state version's bytes, pinned. The byte strings are what the releases themselves wrote:
//! they were taken from kv 1.0.0 … 4.0.0's own types, given the requests named in each test, at
//! time 0 on connection 7, before those releases' sources were removed (their own tests pinned
//! the same bytes). These types must decode them into exactly the values below and encode those
//! values back into exactly these bytes.

use super::{v1, v2, v3, v4};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// `bytes` decodes into `value`, and `value` encodes into `bytes`.
fn pinned<T: Serialize + DeserializeOwned + PartialEq + Debug>(bytes: &[u8], value: &T) {
    let decoded: T = postcard::from_bytes(bytes).expect("the release's bytes decode");
    assert_eq!(&decoded, value);
    assert_eq!(postcard::to_allocvec(value).unwrap(), bytes);
}

/// kv 1.0.0 after `MSET a 1 bb 22 c ""`.
#[test]
fn version_1() {
    let bytes = [3, 1, b'a', 1, b'1', 2, b'b', b'b', 2, b'2', b'2', 1, b'c', 0];
    let entries = [(&b"a"[..], &b"1"[..]), (b"bb", b"22"), (b"c", b"")]
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .into_iter()
        .collect();
    pinned(&bytes, &v1::Kv { entries });
    pinned(&[0], &v1::Kv::default());
}

/// kv 2.0.0 after `MSET a 1 bb 22` and `SET c x PXAT 5`.
#[test]
fn version_2() {
    let bytes = [3, 1, b'a', 1, b'1', 0, 2, b'b', b'b', 2, b'2', b'2', 0, 1, b'c', 1, b'x', 1, 5];
    let entry = |value: &[u8], expires_at_ms| v2::Entry { value: value.to_vec(), expires_at_ms };
    let entries = [
        (b"a".to_vec(), entry(b"1", None)),
        (b"bb".to_vec(), entry(b"22", None)),
        (b"c".to_vec(), entry(b"x", Some(5))),
    ];
    pinned(&bytes, &v2::Kv { entries: entries.into_iter().collect() });
}

/// kv 3.0.0 after `SET k v PXAT 5`, `RPUSH l a ""`, `HSET h f v g w` and `PEXPIREAT h
/// 1700000000000`: one value of each kind, a deadline of one byte and one of six.
#[test]
fn version_3() {
    let bytes = [
        3, //
        1, b'k', 0, 1, b'v', 1, 5, //
        1, b'l', 1, 2, 1, b'a', 0, 0, //
        1, b'h', 2, 2, 1, b'f', 1, b'v', 1, b'g', 1, b'w', 1, 0x80, 0xd0, 0x95, 0xff, 0xbc, 0x31,
    ];
    let pair = |f: &[u8], v: &[u8]| (f.to_vec(), v.to_vec());
    let entries = [
        (
            b"k".to_vec(),
            v3::Entry { value: v3::Value::String(b"v".to_vec()), expires_at_ms: Some(5) },
        ),
        (
            b"l".to_vec(),
            v3::Entry {
                value: v3::Value::List(vec![b"a".to_vec(), Vec::new()]),
                expires_at_ms: None,
            },
        ),
        (
            b"h".to_vec(),
            v3::Entry {
                value: v3::Value::Hash(vec![pair(b"f", b"v"), pair(b"g", b"w")]),
                expires_at_ms: Some(1_700_000_000_000),
            },
        ),
    ];
    pinned(&bytes, &v3::Kv { entries: entries.into_iter().collect() });
}

/// [`crate::V4_PINNED`]: every kind of value, and a connection with every part of its state
/// set, its parser in the middle of a request.
#[test]
fn version_4() {
    let bytes = crate::V4_PINNED;
    let entry = |value, expires_at_ms| v4::Entry { value, expires_at_ms };
    let entries = [
        (b"k".to_vec(), entry(v4::Value::String(b"v".to_vec()), Some(5))),
        (b"l".to_vec(), entry(v4::Value::List(vec![b"a".to_vec(), Vec::new()]), None)),
        (b"h".to_vec(), entry(v4::Value::Hash(vec![(b"f".to_vec(), b"v".to_vec())]), None)),
        (b"s".to_vec(), entry(v4::Value::Set(vec![b"m".to_vec(), b"n".to_vec()]), None)),
        (
            b"z".to_vec(),
            entry(v4::Value::ZSet(vec![(b"m".to_vec(), 1.5), (b"n".to_vec(), 2.0)]), None),
        ),
    ];
    let client = v4::Client {
        protocol: v4::Protocol::Resp3,
        name: b"me".to_vec(),
        lib_name: b"lib".to_vec(),
        authenticated: true,
        last_command: "multi".into(),
        transaction: Some(v4::Transaction {
            queued: vec![vec![b"SET".to_vec(), b"k".to_vec(), b"w".to_vec()]],
            failed: false,
        }),
        watched: vec![b"k".to_vec()],
        parser: v4::Parser {
            remaining: Some(1),
            args: vec![(8, 3)],
            pos: 13,
            bulk: None,
            scanned: 0,
        },
        ..v4::Client::default()
    };
    let kv = v4::Kv {
        entries: entries.into_iter().collect(),
        clients: [(7, client)].into(),
        stats: v4::Stats { commands_processed: 11, ..v4::Stats::default() },
    };
    pinned(bytes, &kv);
    // No key, no connection, zero counters: what the kv-v3-to-v4 transformer writes around an
    // empty keyspace.
    pinned(&[0, 0, 0, 0, 0], &v4::Kv::default());
}

/// The variants' indexes, which postcard writes for them: a reordering here would misread
/// every state the releases wrote.
#[test]
fn enum_indexes() {
    let index = |bytes: Vec<u8>| bytes[0];
    assert_eq!(index(postcard::to_allocvec(&v3::Value::Hash(Vec::new())).unwrap()), 2);
    assert_eq!(index(postcard::to_allocvec(&v4::Value::ZSet(Vec::new())).unwrap()), 4);
    assert_eq!(index(postcard::to_allocvec(&v4::ReplyMode::Skip).unwrap()), 3);
    assert_eq!(index(postcard::to_allocvec(&v4::Protocol::Resp3).unwrap()), 1);
}

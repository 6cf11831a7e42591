//! Requests of any size redis accepts: kv release 4 parses incrementally (`resp::Parser`), so a
//! request of more than a million arguments is taken as redis 7 takes it, its cost is linear in
//! its bytes, and the parser's position crosses a hot swap in the middle of it.

use std::io::Write;
use tasuki_tests::{TestHost, artifacts, expect_bytes};

/// `RPUSH l x x ...` with `elements` elements, as a client encodes it.
fn rpush(elements: usize) -> Vec<u8> {
    let mut request = format!("*{}\r\n$5\r\nRPUSH\r\n$1\r\nl\r\n", elements + 2).into_bytes();
    request.reserve(elements * 7);
    for _ in 0..elements {
        request.extend_from_slice(b"$1\r\nx\r\n");
    }
    request
}

/// 1,100,000 arguments: more than the 1,048,576 redis before 7.0 (and kv before release 4)
/// allowed. Redis 7 accepts it; so does kv 4, on a connection that stays open.
#[test]
fn an_rpush_of_1_1_million_elements_is_accepted() {
    let host = TestHost::start(artifacts::KV_V4);
    let mut conn = host.raw();
    conn.write_all(&rpush(1_100_000)).unwrap();
    expect_bytes(&mut conn, b":1100000\r\n");
    conn.write_all(b"LLEN l\r\n").unwrap();
    expect_bytes(&mut conn, b":1100000\r\n");
}

/// Half a large request is received, the server is swapped, the other half arrives: the new
/// instance resumes the parser where the old one stopped and answers once.
#[test]
fn a_large_request_half_received_at_a_swap_is_answered_once() {
    let host = TestHost::start(artifacts::KV_V4);
    let request = rpush(200_000);
    let (first, second) = request.split_at(request.len() / 2);
    let mut conn = host.raw();
    conn.write_all(first).unwrap();
    // Synchronise on the server having the first half: a later request on another connection
    // is answered only after the first half's event ran.
    let mut other = host.raw();
    other.write_all(b"PING\r\n").unwrap();
    expect_bytes(&mut other, b"+PONG\r\n");
    host.upgrade(artifacts::KV_V4).expect("swap");
    conn.write_all(second).unwrap();
    expect_bytes(&mut conn, b":200000\r\n");
    conn.write_all(b"LLEN l\r\n").unwrap();
    expect_bytes(&mut conn, b":200000\r\n");
}

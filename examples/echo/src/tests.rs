//! The README's Echo driven natively: a client's story, told to a `TestHost`.

use crate::Echo;
use tasuki_guest::testing::{Effect, TestHost};

#[test]
fn a_pipeline_written_in_one_go_is_answered_whole() {
    let mut host = TestHost::<Echo>::new();
    let a = host.connect();
    host.send(a, "one\ntwo\nthree\n");
    assert_eq!(host.read_string(a), "one\ntwo\nthree\n");
    assert_eq!(host.server().lines, 3);
    // One event, one write to the host: the replies of a read go out together.
    assert_eq!(
        host.take_effects(),
        [Effect::Send { conn: a, bytes: b"one\ntwo\nthree\n".to_vec() }]
    );
}

#[test]
fn a_line_split_across_reads_is_answered_once_whole() {
    let mut host = TestHost::<Echo>::new();
    let a = host.connect();
    host.send(a, "hel");
    assert_eq!(host.read(a), b"");
    assert_eq!(host.unconsumed(a), 3, "the SDK keeps the unfinished line");
    host.send(a, "lo\r\nwor");
    assert_eq!(host.read_string(a), "hello\r\n", "echoed with the terminator it came with");
    host.send(a, "ld\n");
    assert_eq!(host.read_string(a), "world\n");
    assert_eq!(host.unconsumed(a), 0);
}

#[test]
fn each_connection_gets_its_own_lines() {
    let mut host = TestHost::<Echo>::new();
    let (a, b) = (host.connect(), host.connect());
    host.send(a, "from a, ");
    host.send(b, "from b\n");
    host.send(a, "still a\n");
    assert_eq!(host.read_string(a), "from a, still a\n");
    assert_eq!(host.read_string(b), "from b\n");
}

#[test]
fn a_line_over_1_kib_is_refused_and_the_connection_closed() {
    let mut host = TestHost::<Echo>::new();
    let a = host.connect();
    host.send(a, "short\n");
    host.send(a, vec![b'x'; 1025]);
    assert_eq!(host.read_string(a), "short\nerror: line too long: over 1024 bytes\n");
    assert!(host.closed_by_app(a));

    let b = host.connect();
    let longest = [vec![b'y'; 1024], b"\r\n".to_vec()].concat();
    host.send(b, &longest);
    assert_eq!(host.read(b), longest, "1024 bytes is still a line");
    assert!(host.is_open(b));
}

#[test]
fn an_unfinished_line_and_the_count_cross_an_upgrade() {
    let mut host = TestHost::<Echo>::new();
    let a = host.connect();
    host.send(a, "one\ntw");
    assert_eq!(host.read_string(a), "one\n");
    let mut host = host.upgrade::<Echo>().expect("upgrade");
    host.send(a, "o\n");
    assert_eq!(host.read_string(a), "two\n");
    assert_eq!(host.server().lines, 2);
}

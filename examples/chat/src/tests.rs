//! The chat room driven natively: members connect, talk, fall silent and leave, on a clock the
//! test moves.

use crate::{Chat, IDLE};
use std::time::Duration;
use tasuki_guest::testing::{Effect, TestHost};

/// A room of `n` members, their welcomes and join notices read.
fn room(n: usize) -> (TestHost<Chat>, Vec<u64>) {
    let mut host = TestHost::<Chat>::new();
    let members: Vec<u64> = (0..n).map(|_| host.connect()).collect();
    for &member in &members {
        host.read(member);
    }
    (host, members)
}

#[test]
fn what_one_member_says_every_other_member_reads() {
    let mut host = TestHost::<Chat>::new();
    let a = host.connect();
    assert_eq!(host.read_string(a), "* welcome, guest1\r\n");
    let b = host.connect();
    assert_eq!(host.read_string(a), "* guest2 joined\r\n");
    assert_eq!(host.read_string(b), "* welcome, guest2\r\n");
    let c = host.connect();
    for member in [a, b, c] {
        host.read(member);
    }

    host.send(a, "hello\r\nNICK ann\nanyone?\n");
    assert_eq!(host.read_string(a), "", "nobody hears themselves");
    for other in [b, c] {
        assert_eq!(
            host.read_string(other),
            "<guest1> hello\r\n* guest1 is now ann\r\n<ann> anyone?\r\n"
        );
    }
}

#[test]
fn a_member_silent_for_five_minutes_is_told_and_disconnected() {
    let (mut host, members) = room(2);
    let (a, b) = (members[0], members[1]);
    host.advance(IDLE - Duration::from_secs(1));
    host.send(b, "still here\n");
    assert_eq!(host.read_string(a), "<guest2> still here\r\n");
    assert!(host.is_open(a));

    host.advance(Duration::from_secs(1));
    assert_eq!(host.read_string(a), "* idle for 300 s, bye\r\n");
    assert!(host.closed_by_app(a));
    assert_eq!(host.read_string(b), "* guest1 was idle\r\n");

    // b spoke a second before a's time ran out: it has that second less than five minutes.
    host.advance(IDLE - Duration::from_secs(2));
    assert!(host.is_open(b));
    host.advance(Duration::from_secs(1));
    assert!(host.closed_by_app(b));
    assert!(host.timers().is_empty());
}

#[test]
fn quit_says_goodbye_closes_and_disarms_the_idle_timer() {
    let (mut host, members) = room(2);
    let (a, b) = (members[0], members[1]);
    host.take_effects();
    host.send(a, "QUIT\r\nnot said\r\n");
    assert_eq!(host.read_string(a), "* bye\r\n");
    assert_eq!(host.read_string(b), "* guest1 left\r\n");
    assert!(host.closed_by_app(a));
    assert_eq!(
        host.take_effects(),
        [
            Effect::Send { conn: a, bytes: b"* bye\r\n".to_vec() },
            Effect::Send { conn: b, bytes: b"* guest1 left\r\n".to_vec() },
            Effect::SetTimer { id: a, after_ms: 300_000 },
            Effect::CancelTimer(a),
            Effect::Close(a),
        ],
        "the line after QUIT is never said: the SDK offers nothing more to a closed connection"
    );
    assert_eq!(host.timers().iter().map(|(id, _)| *id).collect::<Vec<_>>(), [b]);
}

#[test]
fn a_member_that_disconnects_is_gone_for_the_others() {
    let (mut host, members) = room(3);
    host.disconnect(members[1]);
    assert_eq!(host.read_string(members[0]), "* guest2 left\r\n");
    assert_eq!(host.read_string(members[2]), "* guest2 left\r\n");
    host.send(members[0], "hi\n");
    assert_eq!(host.read_string(members[2]), "<guest1> hi\r\n");
    assert!(!host.timers().iter().any(|(id, _)| *id == members[1]));
}

#[test]
fn a_line_over_512_bytes_cuts_the_member_off() {
    let (mut host, members) = room(2);
    host.send(members[0], vec![b'x'; 600]);
    assert_eq!(host.read_string(members[0]), "* line too long: over 510 bytes, bye\r\n");
    assert!(host.closed_by_app(members[0]));
    assert_eq!(host.read_string(members[1]), "* guest1 was cut off\r\n");
}

#[test]
fn members_names_half_lines_and_idle_timers_cross_an_upgrade() {
    let (mut host, members) = room(2);
    let (a, b) = (members[0], members[1]);
    host.send(a, "NICK ann\nhal");
    host.read(b);
    host.advance(Duration::from_secs(100));
    let mut host = host.upgrade::<Chat>().expect("the same release reads its own state");
    host.send(a, "f a line\n");
    assert_eq!(host.read_string(b), "<ann> half a line\r\n");
    host.advance(IDLE - Duration::from_secs(100));
    assert!(host.closed_by_app(b), "b's timer, armed before the upgrade, fired after it");
    assert!(host.is_open(a));
}

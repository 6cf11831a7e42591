//! How the SDK offers input, and what the `TestHost` records, through a probe app that writes
//! down everything it is offered and does what each line tells it.

use super::{Effect, HostInfo, TestHost};
use crate::frame::{Framing, Lines};
use crate::{ConnId, Ctx, Migrations, Server};
use serde::{Deserialize, Serialize};
use std::time::Duration;

const LINES: Lines = Lines::new(64);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Probe {
    /// Every input `on_data` was offered, by connection.
    offers: Vec<(ConnId, String)>,
    /// Every timer that fired, with the time the app read then.
    fired: Vec<(u64, u64)>,
    /// `host::input_limit` as the last event read it.
    input_limit: u64,
}

impl Server for Probe {
    const NAME: &'static str = "probe";
    const STATE_VERSION: u32 = 1;

    /// Handles the first line of `input`: `timer ID MS`, `cancel ID`, `close`, `all` (claims
    /// more than it was given), `byte` (takes one byte); any other line is echoed.
    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
        self.offers.push((conn, String::from_utf8_lossy(input).into_owned()));
        self.input_limit = crate::host::input_limit();
        let Ok(Some(line)) = LINES.next(input) else { return 0 };
        let text = String::from_utf8_lossy(line.payload).into_owned();
        let words: Vec<&str> = text.split(' ').collect();
        match words.as_slice() {
            ["timer", id, ms] => {
                ctx.set_timer(id.parse().unwrap(), Duration::from_millis(ms.parse().unwrap()))
            }
            ["cancel", id] => ctx.cancel_timer(id.parse().unwrap()),
            ["close"] => ctx.close(conn),
            ["all"] => return usize::MAX,
            ["byte"] => return 1,
            _ => ctx.send(conn, &input[..line.consumed]),
        }
        line.consumed
    }

    fn on_timer(&mut self, ctx: &mut Ctx, id: u64) {
        self.fired.push((id, ctx.now_ms()));
        // Timer 10 re-arms itself once, 5 ms on: a timer armed by a firing.
        if id == 10 && self.fired.iter().filter(|(i, _)| *i == 10).count() == 1 {
            ctx.set_timer(10, Duration::from_millis(5));
        }
    }

    fn on_input_limit(&mut self, ctx: &mut Ctx, conn: ConnId) {
        ctx.send(conn, b"over the limit\n");
    }
}

fn offers(host: &TestHost<Probe>) -> Vec<&str> {
    host.server().offers.iter().map(|(_, input)| input.as_str()).collect()
}

#[test]
fn input_is_offered_again_while_the_app_consumes_some() {
    let mut host = TestHost::<Probe>::new();
    let a = host.connect();
    host.send(a, "one\ntwo\nthr");
    assert_eq!(offers(&host), ["one\ntwo\nthr", "two\nthr", "thr"]);
    assert_eq!(host.read_string(a), "one\ntwo\n");
    assert_eq!(host.unconsumed(a), 3);
    // What the app left is offered with the next bytes, once.
    host.send(a, "ee\n");
    assert_eq!(offers(&host)[3..], ["three\n"]);
    assert_eq!(host.read_string(a), "three\n");
    assert_eq!(host.unconsumed(a), 0);
}

#[test]
fn offering_stops_when_the_app_closes_the_connection() {
    let mut host = TestHost::<Probe>::new();
    let a = host.connect();
    host.send(a, "hi\nclose\nnever seen\n");
    assert_eq!(offers(&host), ["hi\nclose\nnever seen\n", "close\nnever seen\n"]);
    assert_eq!(host.read_string(a), "hi\n");
    assert!(host.closed_by_app(a));
    assert_eq!(host.unconsumed(a), 0, "the SDK forgot the connection and its input");
    assert_eq!(
        host.effects().last(),
        Some(&Effect::Close(a)),
        "output first, then the close: {:?}",
        host.effects()
    );
}

#[test]
fn a_claim_past_the_input_counts_as_all_of_it_and_one_byte_calls_reach_the_end() {
    let mut host = TestHost::<Probe>::new();
    let a = host.connect();
    host.send(a, "all\nlost\n");
    assert_eq!(offers(&host), ["all\nlost\n"]);
    assert_eq!(host.unconsumed(a), 0);

    let b = host.connect();
    host.send(b, "byte\nxy");
    // `byte` takes one byte per call; the line's remainder then echoes, "xy" waits.
    assert_eq!(offers(&host)[1..], ["byte\nxy", "yte\nxy", "xy"]);
    assert_eq!(host.read_string(b), "yte\n");
    assert_eq!(host.unconsumed(b), 2);
}

#[test]
fn past_the_input_limit_the_app_is_told_and_the_connection_closed() {
    let mut host = TestHost::<Probe>::new();
    host.set_host_info(HostInfo { input_limit: 8, ..HostInfo::default() });
    let a = host.connect();
    host.send(a, "12345678");
    assert!(host.is_open(a), "8 bytes is the limit, not past it");
    assert_eq!(host.server().input_limit, 8, "the app reads the limit the host was given");
    host.send(a, "9");
    assert_eq!(host.read_string(a), "over the limit\n");
    assert!(host.closed_by_app(a));
}

#[test]
fn input_left_behind_a_close_is_dropped_without_the_input_limit_firing() {
    let mut host = TestHost::<Probe>::new();
    host.set_host_info(HostInfo { input_limit: 8, ..HostInfo::default() });
    let a = host.connect();
    // The app closes at `close` and is offered nothing after it: the 12 bytes behind it go
    // with the connection. They are not input the app left over the limit, so it is not told
    // so (a client that quit would read "over the limit" after its goodbye).
    host.send(a, "hi\nclose\n123456789012");
    assert_eq!(host.read_string(a), "hi\n");
    assert!(host.closed_by_app(a));
    assert_eq!(host.take_effects().iter().filter(|e| **e == Effect::Close(a)).count(), 1);
}

#[test]
fn timers_fire_at_their_due_time_in_deadline_order() {
    let mut host = TestHost::<Probe>::new();
    let t0 = TestHost::<Probe>::EPOCH_MS;
    let a = host.connect();
    // Three timers due at 100 ms, armed 3, 2, 5, then 3 armed again: the host's order for
    // equal deadlines is the order of the last arming (host/src/timers.rs), not the ids'.
    host.send(
        a,
        "timer 1 300\ntimer 3 100\ntimer 2 100\ntimer 5 100\ntimer 3 100\ntimer 4 50\ncancel 4\n\
         timer 10 200\n",
    );
    let at_100 = [(2, t0 + 100), (5, t0 + 100), (3, t0 + 100)];
    assert_eq!(host.timers(), [&at_100[..], &[(10, t0 + 200), (1, t0 + 300)]].concat());
    host.advance(Duration::from_millis(99));
    assert!(host.server().fired.is_empty());
    host.advance(Duration::from_millis(150));
    // Equal deadlines fire in the order armed; timer 10's firing armed it again for 205 ms.
    assert_eq!(host.server().fired, [&at_100[..], &[(10, t0 + 200), (10, t0 + 205)]].concat());
    assert_eq!(host.now_ms(), t0 + 249);
    assert_eq!(host.timers(), [(1, t0 + 300)]);
    host.fire_timer(1);
    assert_eq!(host.server().fired.last(), Some(&(1, t0 + 249)), "fired now, not when due");
    assert!(host.timers().is_empty());
    assert!(host.effects().contains(&Effect::SetTimer { id: 10, after_ms: 5 }));
    assert!(host.effects().contains(&Effect::CancelTimer(4)));
}

#[test]
#[should_panic(expected = "timer 7 is not armed")]
fn firing_a_timer_that_is_not_armed_is_a_test_bug() {
    TestHost::<Probe>::new().fire_timer(7);
}

#[test]
#[should_panic(expected = "cannot send on connection 1: the app closed it")]
fn sending_on_a_connection_the_app_closed_is_a_test_bug() {
    let mut host = TestHost::<Probe>::new();
    let a = host.connect();
    host.send(a, "close\n");
    host.send(a, "more\n");
}

#[test]
fn a_disconnect_reaches_the_app_and_ends_the_connection() {
    #[derive(Default, Serialize, Deserialize)]
    struct Roll(Vec<String>);
    impl Server for Roll {
        const NAME: &'static str = "roll";
        const STATE_VERSION: u32 = 1;
        fn on_connect(&mut self, _: &mut Ctx, conn: &crate::ConnInfo) {
            self.0.push(format!("{} from {} on {}", conn.id, conn.peer, conn.listener));
        }
        fn on_data(&mut self, _: &mut Ctx, _: ConnId, _: &[u8]) -> usize {
            0
        }
        fn on_disconnect(&mut self, _: &mut Ctx, conn: ConnId) {
            self.0.push(format!("{conn} left"));
        }
    }
    let mut host = TestHost::<Roll>::new();
    let a = host.connect_with("10.0.0.1:21", "10.0.0.2:5000");
    let b = host.connect();
    host.send(a, "half a line");
    host.disconnect(a);
    assert!(!host.is_open(a) && !host.closed_by_app(a));
    assert_eq!(host.unconsumed(a), 0);
    assert_eq!(
        host.server().0,
        [
            "1 from 10.0.0.2:5000 on 10.0.0.1:21",
            "2 from 192.0.2.1:40002 on 127.0.0.1:7000",
            "1 left"
        ]
    );
    assert!(host.is_open(b));
}

/// Release 2 of a counter: the state gained a field, and release 1's is migrated.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CounterV1 {
    lines: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CounterV2 {
    lines: u64,
    migrated_from: u32,
    #[serde(skip)]
    resumed_at: u64,
}

impl Server for CounterV1 {
    const NAME: &'static str = "counter";
    const STATE_VERSION: u32 = 1;
    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
        let Ok(Some(line)) = LINES.next(input) else { return 0 };
        self.lines += 1;
        ctx.set_timer(conn, Duration::from_secs(60));
        line.consumed
    }
}

impl Server for CounterV2 {
    const NAME: &'static str = "counter";
    const STATE_VERSION: u32 = 2;
    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
        let Ok(Some(line)) = LINES.next(input) else { return 0 };
        self.lines += 1;
        ctx.send(conn, format!("{} lines\n", self.lines).as_bytes());
        line.consumed
    }
    fn resumed(&mut self, ctx: &mut Ctx, _: Self) {
        self.resumed_at = ctx.now_ms();
    }
    fn migrations() -> Migrations<Self> {
        Migrations::none().from::<CounterV1>(1, |old| CounterV2 {
            lines: old.lines,
            migrated_from: 1,
            resumed_at: 0,
        })
    }
}

#[test]
fn an_upgrade_migrates_the_state_and_keeps_connections_input_timers_and_clock() {
    let mut host = TestHost::<CounterV1>::new();
    let a = host.connect();
    host.send(a, "one\ntwo\nthr");
    host.advance(Duration::from_secs(1));
    let timers = host.timers();
    let mut host = host.upgrade::<CounterV2>().expect("release 2 reads release 1");
    assert_eq!((host.server().lines, host.server().migrated_from), (2, 1));
    assert_eq!(host.server().resumed_at, TestHost::<CounterV2>::EPOCH_MS + 1000);
    assert_eq!(host.timers(), timers, "timers belong to the host");
    assert_eq!(host.unconsumed(a), 3);
    host.send(a, "ee\n");
    assert_eq!(host.read_string(a), "3 lines\n");

    // And back: release 1 cannot read version 2, and says so.
    let refused = host.upgrade::<CounterV1>().unwrap_err();
    assert!(refused.contains("version 2; this release reads versions [1]"), "{refused}");
}

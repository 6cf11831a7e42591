//! Sessions through a notes app: each connection keeps a list of notes in its session; lines
//! tell it what to do.

use crate::frame::{Framing, Lines};
use crate::testing::TestHost;
use crate::{ConnId, Ctx, Migrations, Server, Session, SessionType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;

const LINES: Lines = Lines::new(256);

/// Release 1's session: the notes, one string.
#[derive(Debug, Default, Serialize, Deserialize)]
struct NotesV1 {
    text: String,
}

impl Session for NotesV1 {
    const VERSION: u32 = 1;
}

/// Release 2's: the notes as a list, and how many were taken (a changed shape).
#[derive(Debug, Default, Serialize, Deserialize)]
struct NotesV2 {
    notes: Vec<String>,
    taken: u64,
}

impl Session for NotesV2 {
    const VERSION: u32 = 2;
    fn migrations() -> Migrations<Self> {
        Migrations::none().from::<NotesV1>(1, |old| NotesV2 {
            taken: old.text.split(',').filter(|n| !n.is_empty()).count() as u64,
            notes: old.text.split(',').filter(|n| !n.is_empty()).map(String::from).collect(),
        })
    }
}

/// A release that reads only its own version 3.
#[derive(Debug, Default, Serialize, Deserialize)]
struct NotesV3 {
    notes: Vec<String>,
}

impl Session for NotesV3 {
    const VERSION: u32 = 3;
}

/// The app, generic over its session's shape through `Shape`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Notes<T: Shape> {
    #[serde(skip)]
    _shape: std::marker::PhantomData<T>,
}

trait Shape: Session + std::fmt::Debug {
    fn add(&mut self, note: &str);
    fn list(&self) -> String;
}

impl Shape for NotesV1 {
    fn add(&mut self, note: &str) {
        self.text.push_str(note);
        self.text.push(',');
    }
    fn list(&self) -> String {
        self.text.trim_end_matches(',').to_string()
    }
}

impl Shape for NotesV2 {
    fn add(&mut self, note: &str) {
        self.notes.push(note.to_string());
        self.taken += 1;
    }
    fn list(&self) -> String {
        format!("{} ({} taken)", self.notes.join(","), self.taken)
    }
}

impl Shape for NotesV3 {
    fn add(&mut self, note: &str) {
        self.notes.push(note.to_string());
    }
    fn list(&self) -> String {
        self.notes.join(",")
    }
}

impl<T: Shape> Server for Notes<T> {
    const NAME: &'static str = "notes";
    const STATE_VERSION: u32 = 1;

    fn session_type() -> Option<SessionType> {
        Some(SessionType::of::<T>())
    }

    /// `add NOTE`, `list`, `count` (sessions that exist), `close`, `ghost` (asks for the
    /// session of a connection that never was), `timer MS` (the timer does the same).
    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
        let Ok(Some(line)) = LINES.next(input) else { return 0 };
        let text = String::from_utf8_lossy(line.payload).into_owned();
        match text.split_once(' ').unwrap_or((&text, "")) {
            ("add", note) => ctx.with_session(conn, |ctx, notes: &mut T| {
                notes.add(note);
                ctx.send(conn, b"ok\n");
            }),
            ("list", _) => {
                let list = ctx.session::<T>(conn).list();
                ctx.send(conn, format!("{list}\n").as_bytes());
            }
            ("count", _) => {
                let count = ctx.sessions::<T>().count();
                ctx.send(conn, format!("{count}\n").as_bytes());
            }
            ("close", _) => ctx.close(conn),
            ("ghost", _) => {
                ctx.session::<T>(999).add("boo");
                ctx.send(conn, b"ok\n");
            }
            ("timer", ms) => ctx.set_timer(1, Duration::from_millis(ms.parse().unwrap())),
            _ => ctx.send(conn, b"?\n"),
        }
        line.consumed
    }

    fn on_timer(&mut self, ctx: &mut Ctx, _: u64) {
        ctx.session::<T>(998).add("boo");
    }
}

/// An app that keeps no sessions.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Plain;

impl Server for Plain {
    const NAME: &'static str = "notes";
    const STATE_VERSION: u32 = 1;
    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
        ctx.session::<NotesV1>(conn);
        input.len()
    }
}

fn ask<T: Shape>(host: &mut TestHost<Notes<T>>, conn: ConnId, line: &str) -> String {
    host.send(conn, format!("{line}\n"));
    host.read_string(conn)
}

#[test]
fn each_connection_has_its_own_session_made_on_first_use() {
    let mut host = TestHost::<Notes<NotesV1>>::new();
    let (a, b) = (host.connect(), host.connect());
    assert_eq!(ask(&mut host, a, "count"), "0\n", "none before the app asks");
    ask(&mut host, a, "add x");
    ask(&mut host, a, "add y");
    ask(&mut host, b, "add z");
    assert_eq!(ask(&mut host, a, "list"), "x,y\n");
    assert_eq!(ask(&mut host, b, "list"), "z\n");
    assert_eq!(ask(&mut host, b, "count"), "2\n");
}

#[test]
fn a_session_goes_with_its_connection() {
    let mut host = TestHost::<Notes<NotesV1>>::new();
    let (a, b) = (host.connect(), host.connect());
    ask(&mut host, a, "add x");
    ask(&mut host, b, "add y");
    host.disconnect(a);
    assert_eq!(ask(&mut host, b, "count"), "1\n", "the client's disconnect drops it");
    host.send(b, "close\n");
    let c = host.connect();
    assert_eq!(ask(&mut host, c, "count"), "0\n", "the app's close drops it");
}

#[test]
fn a_session_asked_for_a_connection_that_is_not_open_lasts_only_the_event() {
    let mut host = TestHost::<Notes<NotesV1>>::new();
    let a = host.connect();
    assert_eq!(ask(&mut host, a, "ghost"), "ok\n");
    assert_eq!(ask(&mut host, a, "count"), "0\n");
    host.send(a, "timer 5\n");
    host.advance(Duration::from_millis(5));
    assert_eq!(ask(&mut host, a, "count"), "0\n", "nor one made by a timer");
}

#[test]
fn sessions_cross_an_upgrade_with_their_connections() {
    let mut host = TestHost::<Notes<NotesV1>>::new();
    let (a, b) = (host.connect(), host.connect());
    ask(&mut host, a, "add x");
    ask(&mut host, b, "add y");
    let mut host = host.upgrade::<Notes<NotesV1>>().expect("same release");
    assert_eq!(ask(&mut host, a, "list"), "x\n");
    assert_eq!(ask(&mut host, b, "list"), "y\n");
}

#[test]
fn sessions_of_an_older_shape_are_migrated() {
    let mut host = TestHost::<Notes<NotesV1>>::new();
    let (a, b) = (host.connect(), host.connect());
    ask(&mut host, a, "add x");
    ask(&mut host, a, "add y");
    let mut host = host.upgrade::<Notes<NotesV2>>().expect("release 2 migrates version 1");
    assert_eq!(ask(&mut host, a, "list"), "x,y (2 taken)\n");
    assert_eq!(ask(&mut host, b, "list"), " (0 taken)\n", "one made after the upgrade");
}

#[test]
fn sessions_a_release_cannot_read_refuse_the_import() {
    let mut host = TestHost::<Notes<NotesV1>>::new();
    let a = host.connect();
    ask(&mut host, a, "add x");
    let error = host.upgrade::<Notes<NotesV3>>().expect_err("version 1 is not read");
    assert!(error.contains("sessions are version 1"), "{error}");
}

#[test]
fn a_release_that_keeps_no_sessions_refuses_sessions_rather_than_lose_them() {
    let mut host = TestHost::<Notes<NotesV1>>::new();
    let a = host.connect();
    ask(&mut host, a, "add x");
    let error = host.upgrade::<Plain>().expect_err("it would lose them");
    assert!(error.contains("tasuki.sessions"), "{error}");
}

#[test]
fn a_release_that_kept_none_upgrades_to_one_that_keeps_them() {
    // No sessions section at all: every connection starts with a default session.
    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Before;
    impl Server for Before {
        const NAME: &'static str = "notes";
        const STATE_VERSION: u32 = 1;
        fn on_data(&mut self, _: &mut Ctx, _: ConnId, input: &[u8]) -> usize {
            input.len()
        }
    }
    let mut host = TestHost::<Before>::new();
    let a = host.connect();
    let mut host = host.upgrade::<Notes<NotesV1>>().expect("nothing to lose");
    ask(&mut host, a, "add x");
    assert_eq!(ask(&mut host, a, "list"), "x\n");
}

#[test]
fn sessions_of_connections_gone_during_the_pause_are_dropped() {
    let mut store = super::Store::new(SessionType::of::<NotesV1>());
    let mut sessions = std::collections::BTreeMap::new();
    sessions.insert(1u64, NotesV1 { text: "a,".into() });
    sessions.insert(2u64, NotesV1 { text: "b,".into() });
    let mut source = super::Store::new(SessionType::of::<NotesV1>());
    source.sessions = Box::new(sessions);
    let bytes = source.encode().unwrap();
    store.import(1, &bytes, &BTreeSet::from([2])).unwrap();
    let kept: &super::Map<NotesV1> = super::map(&*store.sessions);
    assert_eq!(kept.keys().copied().collect::<Vec<_>>(), vec![2]);
}

#[test]
#[should_panic(expected = "this app keeps no sessions")]
fn asking_for_a_session_in_an_app_that_keeps_none_says_how_to_keep_them() {
    let mut host = TestHost::<Plain>::new();
    let a = host.connect();
    host.send(a, "x");
}

#[test]
#[should_panic(expected = "keeps sessions of type")]
fn asking_for_another_type_names_the_one_kept() {
    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Wrong;
    impl Server for Wrong {
        const NAME: &'static str = "notes";
        const STATE_VERSION: u32 = 1;
        fn session_type() -> Option<SessionType> {
            Some(SessionType::of::<NotesV2>())
        }
        fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
            ctx.session::<NotesV1>(conn);
            input.len()
        }
    }
    let mut host = TestHost::<Wrong>::new();
    let a = host.connect();
    host.send(a, "x");
}

#[test]
#[should_panic(expected = "lent to a Ctx::with_session closure")]
fn a_session_lent_to_a_closure_is_not_reached_around_it() {
    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Twice;
    impl Server for Twice {
        const NAME: &'static str = "notes";
        const STATE_VERSION: u32 = 1;
        fn session_type() -> Option<SessionType> {
            Some(SessionType::of::<NotesV1>())
        }
        fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
            ctx.with_session(conn, |ctx, _: &mut NotesV1| {
                assert_eq!(ctx.sessions::<NotesV1>().count(), 0, "the lent one is not listed");
                ctx.session::<NotesV1>(conn);
            });
            input.len()
        }
    }
    let mut host = TestHost::<Twice>::new();
    let a = host.connect();
    host.send(a, "x");
}

#[test]
fn a_release_names_the_session_versions_it_reads_so_the_host_can_refuse_before_the_pause() {
    let sessions = |sections: Vec<crate::runtime::bindings::tasuki::server::types::SectionSpec>| {
        sections.into_iter().find(|s| s.name == crate::SESSIONS_SECTION).map(|s| {
            let mut accepts = s.accepts;
            accepts.sort_unstable();
            (s.version, accepts)
        })
    };
    let v2 = TestHost::<Notes<NotesV2>>::new().describe();
    assert_eq!(sessions(v2.sections), Some((2, vec![1, 2])), "version 1 through its migration");
    let v3 = TestHost::<Notes<NotesV3>>::new().describe();
    assert_eq!(sessions(v3.sections), Some((3, vec![3])));
    let plain = TestHost::<Plain>::new().describe();
    assert_eq!(sessions(plain.sections), None, "a release that keeps none names none");
}

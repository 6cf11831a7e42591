//! The server driven natively: a `TestHost` in place of the host, a temporary directory as the
//! served root.

use super::Ftp;
use std::time::Duration;
use tasuki_guest::ConnId;
use tasuki_guest::testing::TestHost;

struct Site {
    dir: tempfile::TempDir,
    host: TestHost<Ftp>,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        std::fs::write(dir.path().join("docs/readme.txt"), "hello\n").unwrap();
        let root = format!("root={}", dir.path().display());
        let host = TestHost::<Ftp>::start(&[&root, "user=alice:secret", "anonymous"]).unwrap();
        Site { dir, host }
    }

    fn login(&mut self, user: &str, password: &str) -> ConnId {
        let c = self.host.connect();
        assert_eq!(self.host.read_string(c), "220 tasuki ftp ready\r\n");
        self.cmd(c, &format!("USER {user}"));
        assert!(self.cmd(c, &format!("PASS {password}")).starts_with("230"));
        c
    }

    fn cmd(&mut self, c: ConnId, line: &str) -> String {
        self.host.send(c, format!("{line}\r\n"));
        self.host.read_string(c)
    }

    /// `EPSV`, then a client connects to the port it names.
    fn data(&mut self, c: ConnId) -> ConnId {
        let reply = self.cmd(c, "EPSV");
        assert!(reply.starts_with("229 Entering Extended Passive Mode (|||"), "{reply}");
        let (listener, _) = *self.host.listeners().last().expect("a data port");
        self.host.connect_to(listener)
    }
}

#[test]
fn commands_before_login_are_refused_and_a_wrong_password_too() {
    let mut site = Site::new();
    let c = site.host.connect();
    site.host.read_string(c);
    assert!(site.cmd(c, "PWD").starts_with("530"));
    site.cmd(c, "USER alice");
    assert_eq!(site.cmd(c, "PASS wrong"), "530 Login incorrect\r\n");
    assert!(site.cmd(c, "LIST").starts_with("530"));
}

#[test]
fn the_working_directory_moves_and_never_leaves_the_root() {
    let mut site = Site::new();
    let c = site.login("alice", "secret");
    assert_eq!(site.cmd(c, "CWD docs"), "250 Directory changed to /docs\r\n");
    assert_eq!(site.cmd(c, "PWD"), "257 \"/docs\" is the current directory\r\n");
    assert_eq!(site.cmd(c, "CWD ../../.."), "550 ../../..: No such file or directory\r\n");
    assert_eq!(site.cmd(c, "PWD"), "257 \"/docs\" is the current directory\r\n");
    assert_eq!(site.cmd(c, "CWD /"), "250 Directory changed to /\r\n");
    assert!(site.cmd(c, "CWD nowhere").starts_with("550"));
    assert!(site.cmd(c, "SIZE /../../etc/passwd").starts_with("550"));
    assert!(site.cmd(c, "SIZE /etc/passwd").starts_with("550"), "under the root, not the host's");
    site.cmd(c, "CWD docs");
    assert_eq!(site.cmd(c, "SIZE readme.txt"), "213 6\r\n");
    assert_eq!(site.cmd(c, "CDUP"), "250 Directory changed to /\r\n");
}

#[test]
fn a_download_and_a_listing_go_over_their_data_connections() {
    let mut site = Site::new();
    let c = site.login("alice", "secret");
    let d = site.data(c);
    assert_eq!(
        site.cmd(c, "RETR docs/readme.txt"),
        "150 Opening data connection (6 bytes)\r\n226 Transfer complete\r\n"
    );
    assert_eq!(site.host.read_string(d), "hello\n");
    assert!(!site.host.is_open(d), "the data connection closes after the file");
    // The command first, the data connection after.
    site.cmd(c, "EPSV");
    site.host.send(c, "NLST docs\r\n");
    assert_eq!(site.host.read_string(c), "");
    let (listener, _) = *site.host.listeners().last().unwrap();
    let d = site.host.connect_to(listener);
    assert_eq!(site.host.read_string(d), "readme.txt\r\n");
    assert_eq!(site.host.read_string(c), "150 Here comes the listing\r\n226 Transfer complete\r\n");
    assert!(site.host.listeners().is_empty(), "each port takes one connection");
}

#[test]
fn an_upload_is_written_and_survives_an_upgrade_in_the_middle() {
    let mut site = Site::new();
    let c = site.login("alice", "secret");
    let d = site.data(c);
    assert_eq!(site.cmd(c, "STOR up.bin"), "150 Ready to receive\r\n");
    site.host.send(d, "first half, ");
    let mut host = site.host.upgrade::<Ftp>().expect("same release");
    host.send(d, "second half");
    host.disconnect(d);
    assert_eq!(host.read_string(c), "226 Transfer complete\r\n");
    let written = std::fs::read_to_string(site.dir.path().join("up.bin")).unwrap();
    assert_eq!(written, "first half, second half");
    assert_eq!(host.server().uploads, 1);
}

#[test]
fn anonymous_users_read_and_do_not_write() {
    let mut site = Site::new();
    let c = site.login("anonymous", "me@example.org");
    assert_eq!(site.cmd(c, "SIZE docs/readme.txt"), "213 6\r\n");
    for line in ["STOR x", "DELE docs/readme.txt", "MKD new", "XMKD new", "RMD docs", "XRMD docs"] {
        assert_eq!(site.cmd(c, line), "550 Permission denied\r\n", "{line}");
    }
    assert!(site.dir.path().join("docs/readme.txt").exists());
}

#[test]
fn files_and_directories_are_made_and_removed() {
    let mut site = Site::new();
    let c = site.login("alice", "secret");
    assert_eq!(site.cmd(c, "MKD new"), "257 \"/new\" created\r\n");
    assert!(site.dir.path().join("new").is_dir());
    assert!(site.cmd(c, "RMD new").starts_with("250"));
    assert!(site.cmd(c, "DELE docs/readme.txt").starts_with("250"));
    assert!(!site.dir.path().join("docs/readme.txt").exists());
    assert!(site.cmd(c, "DELE docs/readme.txt").starts_with("550"));
}

#[test]
fn a_session_keeps_its_login_and_directory_across_an_upgrade() {
    let mut site = Site::new();
    let c = site.login("alice", "secret");
    site.cmd(c, "CWD docs");
    let mut host = site.host.upgrade::<Ftp>().expect("same release");
    host.send(c, "PWD\r\n");
    assert_eq!(host.read_string(c), "257 \"/docs\" is the current directory\r\n");
}

#[test]
fn quit_closes_the_control_connection_and_its_data_port() {
    let mut site = Site::new();
    let c = site.login("alice", "secret");
    site.cmd(c, "EPSV");
    assert_eq!(site.host.listeners().len(), 1);
    assert_eq!(site.cmd(c, "QUIT"), "221 Goodbye\r\n");
    assert!(!site.host.is_open(c));
    assert!(site.host.listeners().is_empty());
}

#[test]
fn bad_arguments_are_refused_at_start() {
    for args in [&["user=nopassword"][..], &["root=relative"], &["colour=blue"]] {
        assert!(TestHost::<Ftp>::start(args).is_err(), "{args:?}");
    }
}

#[test]
fn a_transfer_without_a_data_port_is_refused_and_leaves_no_file() {
    let mut site = Site::new();
    let c = site.login("alice", "secret");
    assert_eq!(site.cmd(c, "STOR new.txt"), "425 Use PASV or EPSV first\r\n");
    assert!(!site.dir.path().join("new.txt").exists());
    assert_eq!(site.cmd(c, "RETR docs/readme.txt"), "425 Use PASV or EPSV first\r\n");
}

#[test]
fn a_stor_that_cannot_start_leaves_the_file_as_it_was() {
    let mut site = Site::new();
    let c = site.login("alice", "secret");
    // No data port asked for.
    assert_eq!(site.cmd(c, "STOR docs/readme.txt"), "425 Use PASV or EPSV first\r\n");
    // After a download, whose data connection and port are gone (or, were it still under
    // way, "425 A transfer is under way").
    let d = site.data(c);
    assert!(site.cmd(c, "RETR docs/readme.txt").starts_with("150"));
    assert!(site.cmd(c, "STOR docs/readme.txt").starts_with("425"));
    assert_eq!(site.host.read_string(d), "hello\n");
    let kept = std::fs::read_to_string(site.dir.path().join("docs/readme.txt")).unwrap();
    assert_eq!(kept, "hello\n");
}

#[test]
fn a_listing_that_climbs_above_the_root_is_refused() {
    let mut site = Site::new();
    let c = site.login("alice", "secret");
    site.data(c);
    for line in ["LIST ../..", "NLST ..", "LIST -la ../docs/../.."] {
        assert!(site.cmd(c, line).starts_with("550"), "{line}");
    }
}

#[test]
fn a_control_connection_that_goes_without_quit_takes_its_data_port_and_connection() {
    let mut site = Site::new();
    let c = site.login("alice", "secret");
    site.cmd(c, "EPSV");
    let other = site.login("alice", "secret");
    let d = site.data(other);
    assert_eq!(site.host.listeners().len(), 1, "other's port closed once its client came");
    site.host.disconnect(c);
    assert!(site.host.listeners().is_empty(), "c's port closed with it");
    site.host.disconnect(other);
    assert!(!site.host.is_open(d), "other's data connection closed with it");
}

#[test]
fn a_command_missing_its_argument_answers_501() {
    let mut site = Site::new();
    let c = site.host.connect();
    site.host.read_string(c);
    assert_eq!(site.cmd(c, "USER"), "501 USER needs an argument\r\n");
    let c = site.login("alice", "secret");
    site.cmd(c, "CWD docs");
    for verb in ["CWD", "RETR", "STOR", "DELE", "MKD", "RMD", "SIZE"] {
        assert_eq!(site.cmd(c, verb), format!("501 {verb} needs an argument\r\n"));
    }
    assert_eq!(site.cmd(c, "PWD"), "257 \"/docs\" is the current directory\r\n");
}

#[test]
fn rest_resumes_a_download_at_its_offset_and_past_the_end_is_refused() {
    let mut site = Site::new();
    let c = site.login("alice", "secret");
    assert_eq!(site.cmd(c, "REST 2"), "350 Restarting at 2. Send STORE or RETRIEVE\r\n");
    let d = site.data(c);
    assert_eq!(
        site.cmd(c, "RETR docs/readme.txt"),
        "150 Opening data connection (4 bytes)\r\n226 Transfer complete\r\n"
    );
    assert_eq!(site.host.read_string(d), "llo\n");
    // The offset served one transfer: the next download is whole.
    let d = site.data(c);
    site.cmd(c, "RETR docs/readme.txt");
    assert_eq!(site.host.read_string(d), "hello\n");
    site.cmd(c, "REST 7");
    site.data(c);
    assert!(site.cmd(c, "RETR docs/readme.txt").starts_with("554 REST 7 is past the end"));
    assert_eq!(site.cmd(c, "REST x"), "501 REST x: not a byte offset\r\n");
}

#[test]
fn rest_resumes_an_upload_keeping_the_first_bytes_and_appe_appends() {
    let mut site = Site::new();
    let c = site.login("alice", "secret");
    let file = site.dir.path().join("docs/readme.txt");
    site.cmd(c, "REST 3");
    let d = site.data(c);
    assert_eq!(site.cmd(c, "STOR docs/readme.txt"), "150 Ready to receive\r\n");
    site.host.send(d, "p!");
    site.host.disconnect(d);
    assert_eq!(site.host.read_string(c), "226 Transfer complete\r\n");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "help!");
    let d = site.data(c);
    site.host.send(c, "APPE docs/readme.txt\r\n");
    site.host.send(d, " me");
    site.host.disconnect(d);
    assert_eq!(site.host.read_string(c), "150 Ready to receive\r\n226 Transfer complete\r\n");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "help! me");
    let d = site.data(c);
    site.cmd(c, "APPE docs/new.txt");
    site.host.send(d, "made");
    site.host.disconnect(d);
    site.host.read_string(c);
    assert_eq!(std::fs::read_to_string(site.dir.path().join("docs/new.txt")).unwrap(), "made");
    assert_eq!(site.host.server().uploads, 3);
    site.cmd(c, "REST 100");
    site.data(c);
    assert!(site.cmd(c, "STOR docs/readme.txt").starts_with("554"));
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "help! me",
        "a refused STOR changes nothing"
    );
}

#[test]
fn mdtm_mlst_and_mlsd_give_rfc_3659_facts() {
    let mut site = Site::new();
    let file =
        std::fs::File::options().write(true).open(site.dir.path().join("docs/readme.txt")).unwrap();
    // 2026-12-01T09:30:59Z
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_117_459);
    file.set_modified(at).unwrap();
    let c = site.login("alice", "secret");
    assert_eq!(site.cmd(c, "MDTM docs/readme.txt"), "213 20261201093059\r\n");
    assert!(site.cmd(c, "MDTM docs").starts_with("550"), "a directory has no MDTM");
    assert_eq!(
        site.cmd(c, "MLST docs/readme.txt"),
        "250-Listing /docs/readme.txt\r\n type=file;size=6;modify=20261201093059;perm=radfw; \
         /docs/readme.txt\r\n250 End\r\n"
    );
    let d = site.data(c);
    assert_eq!(site.cmd(c, "MLSD docs"), "150 Here comes the listing\r\n226 Transfer complete\r\n");
    assert_eq!(
        site.host.read_string(d),
        "type=file;size=6;modify=20261201093059;perm=radfw; readme.txt\r\n"
    );
    site.data(c);
    assert_eq!(site.cmd(c, "MLSD docs/readme.txt"), "501 /docs/readme.txt: Not a directory\r\n");
    assert!(site.cmd(c, "MLST ../..").starts_with("550"));
    let anonymous = site.login("anonymous", "me@example.org");
    assert!(site.cmd(anonymous, "MLST docs").contains("type=dir;size="));
    assert!(site.cmd(anonymous, "MLST docs").contains(";perm=el; /docs\r\n"));
    assert_eq!(site.cmd(anonymous, "APPE docs/readme.txt"), "550 Permission denied\r\n");
}

#[test]
fn feat_lists_the_extensions_and_opts_answers_for_them() {
    let mut site = Site::new();
    let c = site.host.connect();
    site.host.read_string(c);
    let feat = site.cmd(c, "FEAT");
    for feature in [" MDTM\r\n", " REST STREAM\r\n", " MLST type*;size*;modify*;perm*;\r\n"] {
        assert!(feat.contains(feature), "{feat}");
    }
    assert_eq!(site.cmd(c, "OPTS UTF8 ON"), "200 Always in UTF8 mode\r\n");
    assert_eq!(site.cmd(c, "OPTS MLST size;"), "200 MLST OPTS type;size;modify;perm;\r\n");
    assert!(site.cmd(c, "OPTS COLOUR blue").starts_with("501"));
}

/// Release 1's sessions (version 1, as `ftp_v1.wasm` writes them) read as release 2's: the
/// login, directory and waiting download kept, an upload's bytes so far kept as its count.
#[test]
fn release_1_sessions_migrate() {
    use ftp_states::v1;
    use tasuki_guest::Session;
    let control = v1::Conn::Control(v1::Control {
        user: None,
        login: Some(v1::Login { name: "alice".into(), write: true }),
        cwd: "/docs".into(),
        local_ip: "127.0.0.1".into(),
        passive: Some(v1::Passive { listener: 4, extended: false }),
        data: None,
        waiting: Some(v1::Transfer::Retr { path: "/srv/a".into(), size: 10 }),
        busy: None,
    });
    let migrate = |old: &v1::Conn| {
        let bytes = postcard::to_allocvec(old).unwrap();
        super::Conn::migrations().run(1, &bytes).expect("version 1 is read").unwrap()
    };
    let super::Conn::Control(s) = migrate(&control) else { panic!("a control session") };
    assert_eq!((s.cwd.as_str(), s.login.unwrap().name.as_str()), ("/docs", "alice"));
    assert_eq!(s.passive.map(|p| (p.listener, p.extended)), Some((4, false)));
    assert_eq!(s.restart, 0);
    let waiting = s.waiting.unwrap();
    assert_eq!(
        (waiting.kind, waiting.path.as_str(), waiting.offset),
        (super::Kind::Retr { len: 10 }, "/srv/a", 0)
    );
    let upload = v1::Conn::Data(v1::Data {
        control: 9,
        transfer: Some(v1::Transfer::Stor { path: "/srv/up".into(), written: 5 }),
    });
    let super::Conn::Data(d) = migrate(&upload) else { panic!("a data session") };
    let t = d.transfer.unwrap();
    assert_eq!((d.control, t.kind, t.offset, t.bytes), (9, super::Kind::Stor, 0, 5));
}

#[test]
fn a_quiet_session_is_told_421_and_closed_after_the_idle_timeout_counted_from_its_last_command() {
    let mut site = Site::new();
    let c = site.login("alice", "secret");
    site.host.advance(Duration::from_secs(299));
    assert_eq!(site.cmd(c, "NOOP"), "200 NOOP ok\r\n");
    // The timeout counts from the NOOP, not from the login.
    site.host.advance(Duration::from_secs(299));
    assert!(site.host.is_open(c));
    site.host.advance(Duration::from_secs(2));
    assert_eq!(site.host.read_string(c), "421 Timeout: no command for 300 seconds\r\n");
    assert!(site.host.closed_by_app(c));
}

#[test]
fn a_transfer_under_way_keeps_its_session_past_the_idle_timeout() {
    let mut site = Site::new();
    let c = site.login("alice", "secret");
    let d = site.data(c);
    assert_eq!(site.cmd(c, "STOR slow.bin"), "150 Ready to receive\r\n");
    site.host.advance(Duration::from_secs(400));
    site.host.send(d, "late bytes");
    site.host.advance(Duration::from_secs(400));
    assert!(site.host.is_open(c), "an upload under way is not idleness");
    site.host.disconnect(d);
    assert_eq!(site.host.read_string(c), "226 Transfer complete\r\n");
    site.host.advance(Duration::from_secs(301));
    assert!(site.host.closed_by_app(c), "idle once the transfer is over");
}

#[test]
fn idle_0_never_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let root = format!("root={}", dir.path().display());
    let mut host = TestHost::<Ftp>::start(&[&root, "anonymous", "idle=0"]).unwrap();
    let c = host.connect();
    host.advance(Duration::from_secs(86_400));
    assert!(host.is_open(c));
    assert!(host.timers().is_empty());
}

/// A site whose users download at most 1,000 bytes a second, with a 4,500-byte file.
fn rated_site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("docs")).unwrap();
    let body: Vec<u8> = (0..4500u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("docs/big.bin"), body).unwrap();
    std::fs::write(dir.path().join("docs/readme.txt"), "hello\n").unwrap();
    let root = format!("root={}", dir.path().display());
    let host =
        TestHost::<Ftp>::start(&[&root, "user=alice:secret", "anonymous", "rate=1000"]).unwrap();
    Site { dir, host }
}

#[test]
fn a_download_under_a_rate_limit_comes_a_second_at_a_time_and_whole() {
    let mut site = rated_site();
    let c = site.login("alice", "secret");
    let d = site.data(c);
    assert_eq!(site.cmd(c, "RETR docs/big.bin"), "150 Opening data connection (4500 bytes)\r\n");
    // A full allowance at first: a second's worth (1,000 bytes) goes at once, then 1,000
    // bytes a second, no more and no less.
    let mut got = site.host.read(d);
    assert_eq!(got.len(), 1000);
    for ms in (100..=3400).step_by(100) {
        site.host.advance(Duration::from_millis(100));
        got.extend(site.host.read(d));
        assert_eq!(got.len(), 1000 * (1 + ms / 1000), "bytes after {ms} ms");
    }
    // The last 500 bytes need only half a second's allowance.
    site.host.advance(Duration::from_millis(100));
    got.extend(site.host.read(d));
    assert_eq!(got, std::fs::read(site.dir.path().join("docs/big.bin")).unwrap());
    assert_eq!(site.host.read_string(c), "226 Transfer complete\r\n");
    assert!(!site.host.is_open(d));
}

#[test]
fn one_users_downloads_share_one_allowance_and_other_users_have_their_own() {
    let mut site = rated_site();
    let a1 = site.login("alice", "secret");
    let a2 = site.login("alice", "secret");
    let anon = site.login("anonymous", "me@example.org");
    let d1 = site.data(a1);
    let d2 = site.data(a2);
    let d3 = site.data(anon);
    site.cmd(a1, "RETR docs/big.bin");
    site.cmd(a2, "RETR docs/big.bin");
    site.cmd(anon, "RETR docs/big.bin");
    // alice's two downloads together get her second's worth; anonymous gets its own.
    assert_eq!(site.host.read(d1).len() + site.host.read(d2).len(), 1000);
    assert_eq!(site.host.read(d3).len(), 1000);
    site.host.advance(Duration::from_secs(2));
    assert_eq!(site.host.read(d1).len() + site.host.read(d2).len(), 2000);
    assert_eq!(site.host.read(d3).len(), 2000);
}

#[test]
fn a_rate_limited_download_carries_on_across_an_upgrade() {
    let mut site = rated_site();
    let c = site.login("alice", "secret");
    let d = site.data(c);
    site.cmd(c, "RETR docs/big.bin");
    let mut got = site.host.read(d);
    let mut host = site.host.upgrade::<Ftp>().expect("same release");
    host.advance(Duration::from_secs(5));
    got.extend(host.read(d));
    assert_eq!(got, std::fs::read(site.dir.path().join("docs/big.bin")).unwrap());
    assert_eq!(host.read_string(c), "226 Transfer complete\r\n");
}

/// Release 2's sessions (version 2) and release 1 and 2's app state (version 1) read as
/// release 3's; the idle clock of a migrated session starts at the upgrade.
#[test]
fn release_2_sessions_and_release_1_state_migrate() {
    use ftp_states::{v1, v2};
    use tasuki_guest::{Server, Session};
    let old = v2::Conn::Control(v2::Control {
        user: None,
        login: Some(v2::Login { name: "alice".into(), write: true }),
        cwd: "/docs".into(),
        local_ip: "127.0.0.1".into(),
        passive: None,
        data: None,
        waiting: None,
        busy: None,
        restart: 42,
    });
    let bytes = postcard::to_allocvec(&old).unwrap();
    let super::Conn::Control(s) = super::Conn::migrations().run(2, &bytes).unwrap().unwrap() else {
        panic!("a control session")
    };
    assert_eq!((s.cwd.as_str(), s.restart, s.last_command_ms), ("/docs", 42, 0));
    let state = v1::Ftp { downloads: 3, uploads: 2, listings: 1 };
    let bytes = postcard::to_allocvec(&state).unwrap();
    let new = Ftp::migrations().run(1, &bytes).unwrap().unwrap();
    assert_eq!((new.downloads, new.uploads, new.listings), (3, 2, 1));
    assert!(new.users.is_empty());
}

/// Release 3's app state encodes as its frozen type, `ftp_states::v3::Ftp`, which the
/// transformer `ftp-v2-to-v3` writes.
#[test]
fn the_app_state_encodes_as_its_frozen_type() {
    let mut site = rated_site();
    let c = site.login("alice", "secret");
    let d = site.data(c);
    site.cmd(c, "RETR docs/big.bin");
    site.host.read(d);
    let bytes = postcard::to_allocvec(site.host.server()).unwrap();
    let frozen: ftp_states::v3::Ftp = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(frozen.users["alice"].tokens, 0);
    assert_eq!(postcard::to_allocvec(&frozen).unwrap(), bytes);
}

//! The FTP server's releases under `tasuki run`, upgraded with `tasuki upgrade`, driven by real
//! clients: Python's `ftplib`, `curl` and `lftp`. Releases 1 and 2 are the frozen
//! `releases/ftp_v1.wasm` and `ftp_v2.wasm`; release 3 is `guests/ftp-v3`, and the transformers
//! `guests/transforms/ftp-v1-to-v2` and `ftp-v2-to-v3`. Each test serves a temporary directory; a client that must be caught
//! mid-way (in a directory, in the middle of a transfer) says so on its stdout and waits for a
//! line on its stdin, so the upgrade happens at that point and no sleep is involved; `lftp`,
//! which cannot be paused, is caught by the files it has written so far.

use crate::support::{Running, resident, tasuki, tasuki_ok, text};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use tasuki_artifacts as artifacts;

/// The releases, oldest first.
const RELEASES: [&str; 3] = [artifacts::FTP_V1, artifacts::FTP_V2, artifacts::FTP_V3];

/// `tasuki run APP` serving a fresh temporary directory (with `docs/readme.txt`) to
/// `alice:secret` and to anonymous readers.
struct Site {
    /// Where the host runs (its control socket).
    work: tempfile::TempDir,
    /// The served directory.
    dir: tempfile::TempDir,
    host: Running,
}

impl Site {
    fn new(app: &str) -> Self {
        Self::with_args(app, &[])
    }

    /// `app` with these `--arg`s besides the users.
    fn with_args(app: &str, extra: &[&str]) -> Self {
        Self::spawn(app, &[], extra)
    }

    /// `app` started from a snapshot file (`--restore`).
    fn restored(app: &str, snapshot: &Path) -> Self {
        Self::spawn(app, &["--restore", snapshot.to_str().unwrap()], &[])
    }

    /// `app` with these options of `tasuki run` and these `--arg`s besides the users.
    fn spawn(app: &str, options: &[&str], extra: &[&str]) -> Self {
        let work = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        std::fs::write(dir.path().join("docs/readme.txt"), "hello from ftp\n").unwrap();
        let grant = format!("{}::/srv", dir.path().display());
        let mut args = vec![
            "run",
            app,
            "--listen",
            "127.0.0.1:0",
            "--dir",
            &grant,
            "--arg",
            "user=alice:secret",
            "--arg",
            "anonymous",
        ];
        args.extend(options);
        for arg in extra {
            args.extend(["--arg", arg]);
        }
        let host = Running::spawn(work.path(), &args);
        Site { work, dir, host }
    }

    fn url(&self, path: &str) -> String {
        format!("ftp://alice:secret@{}{path}", self.host.addr)
    }

    fn port(&self) -> &str {
        self.host.addr.rsplit_once(':').expect("HOST:PORT").1
    }

    /// `tasuki upgrade APP`: its report.
    fn upgrade(&self, app: &str) -> String {
        tasuki_ok(self.work.path(), &["upgrade", app])
    }

    /// `tasuki upgrade APP --transform T...`: its report.
    fn upgrade_through(&self, app: &str, transforms: &[&str]) -> String {
        let mut args = vec!["upgrade", app];
        for t in transforms {
            args.extend(["--transform", t]);
        }
        tasuki_ok(self.work.path(), &args)
    }
}

/// A Python script using `ftplib`, with `HOST`, `PORT` and a `pause(word)` (prints the word,
/// waits for a line) defined before it.
struct Script {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Script {
    fn start(site: &Site, body: &str) -> Self {
        let prelude = format!(
            "import ftplib, hashlib, io, sys\n\
             HOST, PORT = '127.0.0.1', {port}\n\
             def pause(word):\n    print(word, flush=True)\n    sys.stdin.readline()\n\
             def say(*words):\n    print(*words, flush=True)\n",
            port = site.port()
        );
        let mut child = Command::new("python3")
            .args(["-c", &format!("{prelude}{body}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs (scripts/install-clients installs it)");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Script { child, stdin, stdout }
    }

    /// The script's next line of output.
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the script ended early: {:?}", self.child.wait());
        line.trim_end().to_string()
    }

    fn expect(&mut self, word: &str) {
        assert_eq!(self.line(), word);
    }

    fn go_on(&mut self) {
        self.stdin.write_all(b"\n").unwrap();
    }

    fn finish(mut self) {
        drop(self.stdin);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the script failed: {status}");
    }
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split(' ').next().unwrap_or_default().to_string()
}

#[test]
fn an_ftplib_session_upgraded_from_release_1_to_2_keeps_its_login_and_directory_and_resumes() {
    let site = Site::new(artifacts::FTP_V1);
    let mut script = Script::start(
        &site,
        "ftp = ftplib.FTP(timeout=60)\n\
         say(ftp.connect(HOST, PORT))\n\
         ftp.login('alice', 'secret')\n\
         ftp.cwd('docs')\n\
         try:\n    ftp.sendcmd('REST 6')\n\
         except ftplib.error_perm as e:\n    say(str(e))\n\
         pause('IN-DOCS')\n\
         say(ftp.pwd())\n\
         say(','.join(ftp.nlst()))\n\
         buf = io.BytesIO()\n\
         ftp.retrbinary('RETR readme.txt', buf.write, rest=6)\n\
         say(buf.getvalue().decode().strip())\n\
         ftp.storbinary('STOR new.txt', io.BytesIO(b'written after the upgrade'))\n\
         ftp.storbinary('STOR new.txt', io.BytesIO(b'resumed'), rest=8)\n\
         say(ftp.size('new.txt'), ftp.voidcmd('MDTM new.txt')[:4])\n\
         say(sorted(name for name, facts in ftp.mlsd()))\n\
         ftp.quit()\n",
    );
    script.expect("220 tasuki ftp ready");
    // Release 1 knows no REST.
    script.expect("502 REST not implemented");
    script.expect("IN-DOCS");
    let report = site.upgrade(artifacts::FTP_V2);
    assert!(report.contains("upgraded ftp 1.0.0 -> ftp 2.0.0"), "{report}");
    script.go_on();
    // No second banner: the next reply the client reads answers its PWD.
    script.expect("/docs");
    script.expect("readme.txt");
    // The download resumed at byte 6.
    script.expect("from ftp");
    script.expect("15 213");
    script.expect("['new.txt', 'readme.txt']");
    script.finish();
    let written = std::fs::read_to_string(site.dir.path().join("docs/new.txt")).unwrap();
    assert_eq!(written, "written resumed");
}

/// The upgrades made while the 200 MB transfers are in flight: release 1 to 2, then 2 to 3.
const IN_FLIGHT: [&str; 2] = [artifacts::FTP_V2, artifacts::FTP_V3];

#[test]
fn a_200_mb_download_and_upload_in_flight_cross_two_upgrades_whole_in_bounded_memory() {
    const SIZE: usize = 200 << 20;
    let site = Site::new(artifacts::FTP_V1);
    // Bytes that repeat only every 251 (a shift in the stream would show), written a MiB at a
    // time so that the test holds none of it.
    let pattern: Vec<u8> = (0..(1 << 20) + 251).map(|i| (i % 251) as u8).collect();
    let mut file = std::fs::File::create(site.dir.path().join("big.bin")).unwrap();
    for at in (0..SIZE).step_by(1 << 20) {
        file.write_all(&pattern[at % 251..at % 251 + (1 << 20)]).unwrap();
    }
    drop(file);
    let want = sha256(&site.dir.path().join("big.bin"));
    let host = site.host.child.id();
    let before = resident(host);
    // What the host may hold beyond that while it streams: its --output-buffer per connection
    // and the instances' own memory, far below the files.
    let bound = before + (64 << 20);
    // Two clients at once, each pausing at 8 MiB and at 100 MiB: a download ...
    let mut download = Script::start(
        &site,
        "ftp = ftplib.FTP(timeout=60)\n\
         ftp.connect(HOST, PORT)\n\
         ftp.login('alice', 'secret')\n\
         got, seen = hashlib.sha256(), [0]\n\
         def block(data):\n    got.update(data)\n    seen[0] += len(data)\n    \
             for mark in (8 << 20, 100 << 20):\n        \
                 if seen[0] >= mark and seen[0] - len(data) < mark:\n            pause('MID-RETR')\n\
         ftp.retrbinary('RETR big.bin', block, blocksize=65536)\n\
         say(got.hexdigest(), seen[0])\n\
         ftp.quit()\n",
    );
    // ... and an upload of the same bytes.
    let mut upload = Script::start(
        &site,
        "ftp = ftplib.FTP(timeout=60)\n\
         ftp.connect(HOST, PORT)\n\
         ftp.login('alice', 'secret')\n\
         class Slow(io.RawIOBase):\n    def __init__(self):\n        self.at = 0\n    \
             def readable(self):\n        return True\n    \
             def readinto(self, b):\n        \
                 if self.at in (8 << 20, 100 << 20):\n            pause('MID-STOR')\n        \
                 n = min(len(b), 65536, SIZE - self.at)\n        \
                 off = self.at % 251\n        \
                 b[:n] = PATTERN[off:off + n]\n        \
                 self.at += n\n        return n\n\
         SIZE = 200 << 20\n\
         PATTERN = bytes(i % 251 for i in range(251 + 65536))\n\
         ftp.storbinary('STOR up.bin', Slow(), blocksize=65536)\n\
         say('STORED')\n\
         ftp.quit()\n",
    );
    for release in IN_FLIGHT {
        // Both transfers are under way and paused: upgrade under both.
        download.expect("MID-RETR");
        upload.expect("MID-STOR");
        let held = resident(host);
        assert!(held < bound, "the host holds {held} bytes mid-transfer (from {before})");
        site.upgrade(release);
        download.go_on();
        upload.go_on();
    }
    assert_eq!(download.line(), format!("{want} {SIZE}"));
    upload.expect("STORED");
    download.finish();
    upload.finish();
    assert_eq!(sha256(&site.dir.path().join("up.bin")), want, "the upload arrived whole");
}

#[test]
fn names_that_lead_out_of_the_served_directory_are_refused_with_550() {
    let site = Site::new(artifacts::FTP_V3);
    std::os::unix::fs::symlink("/etc", site.dir.path().join("out")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", site.dir.path().join("passwd")).unwrap();
    let mut script = Script::start(
        &site,
        "ftp = ftplib.FTP(timeout=60)\n\
         ftp.connect(HOST, PORT)\n\
         ftp.login('anonymous', 'me@example.org')\n\
         for cmd in ['CWD ../..', 'CWD out', 'RETR /etc/passwd', 'RETR passwd', 'RETR out/passwd', 'RETR ../../etc/passwd', 'STOR x', 'MLST ../..', 'MLST out/passwd', 'MDTM passwd']:\n    \
             try:\n        \
                 if cmd.startswith(('RETR', 'STOR')):\n            \
                     ftp.sendcmd('EPSV')\n        \
                 say(cmd, ftp.sendcmd(cmd))\n    \
             except ftplib.error_perm as e:\n        say(cmd, str(e)[:3])\n\
         say(ftp.pwd())\n\
         ftp.quit()\n",
    );
    for cmd in [
        "CWD ../..",
        "CWD out",
        "RETR /etc/passwd",
        "RETR passwd",
        "RETR out/passwd",
        "RETR ../../etc/passwd",
        "STOR x",
        "MLST ../..",
        "MLST out/passwd",
        "MDTM passwd",
    ] {
        assert_eq!(script.line(), format!("{cmd} 550"));
    }
    script.expect("/");
    script.finish();
    assert!(!site.dir.path().join("x").exists());
}

#[test]
fn curl_uploads_lists_and_downloads_against_every_release() {
    for release in RELEASES {
        curl_against(release);
    }
}

fn curl_against(release: &str) {
    let site = Site::new(release);
    let scratch = tempfile::tempdir().unwrap();
    let local = scratch.path().join("curl-upload.bin");
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&local, &payload).unwrap();
    let curl = |args: &[&str]| {
        let out = Command::new("curl").args(["-sS", "--max-time", "60"]).args(args).output();
        let out = out.expect("curl runs (scripts/test installs it)");
        assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    curl(&["-T", local.to_str().unwrap(), &site.url("/docs/up.bin")]);
    assert!(std::fs::read(site.dir.path().join("docs/up.bin")).unwrap() == payload);
    let listing = String::from_utf8(curl(&["--list-only", &site.url("/docs/")])).unwrap();
    // An ASCII-mode listing (TYPE A): curl turns its CRLFs into the local LF.
    assert_eq!(listing, "readme.txt\nup.bin\n");
    let long = String::from_utf8(curl(&[&site.url("/docs/")])).unwrap();
    assert!(long.lines().any(|l| l.contains(" 3000000 ") && l.ends_with(" up.bin")), "{long}");
    let down = curl(&[&site.url("/docs/up.bin")]);
    assert!(down == payload, "the download is the upload, byte for byte");
    // Through PASV too (curl tries EPSV first).
    let down = curl(&["--disable-epsv", &site.url("/docs/readme.txt")]);
    assert_eq!(down, b"hello from ftp\n");
    if release == artifacts::FTP_V1 {
        return;
    }
    // From release 2: resumed transfers. A download continued from the local file's length
    // (REST), an upload continued from the remote file's (SIZE, then APPE).
    let partial = scratch.path().join("partial.bin");
    std::fs::write(&partial, &payload[..1_000_000]).unwrap();
    let url = site.url("/docs/up.bin");
    curl(&["-C", "-", "-o", partial.to_str().unwrap(), &url]);
    assert!(std::fs::read(&partial).unwrap() == payload, "the resumed download is whole");
    std::fs::write(site.dir.path().join("docs/up.bin"), &payload[..1_234_567]).unwrap();
    curl(&["-C", "-", "-T", local.to_str().unwrap(), &url]);
    assert!(
        std::fs::read(site.dir.path().join("docs/up.bin")).unwrap() == payload,
        "the resumed upload is whole"
    );
}

/// Every file under `root`, by path relative to it, with its bytes.
fn tree(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let name = path.strip_prefix(root).unwrap().display().to_string();
                files.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Runs `lftp` with `commands` against the site and upgrades the host once `arrived` (a
/// directory being filled by the mirror) holds `at` files, lftp stopped (SIGSTOP) in the
/// middle of its work until the upgrade is done.
fn lftp_with_an_upgrade(site: &Site, commands: &str, arrived: &Path, at: usize, to: &str) {
    let script = format!(
        "set cmd:fail-exit true; set net:max-retries 1; set net:timeout 30; \
         set ftp:passive-mode true; open -u alice,secret ftp://{}; {commands}",
        site.host.addr
    );
    let mut lftp = Command::new("lftp")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .spawn()
        .expect("lftp runs (scripts/test installs it)");
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(120);
    // Waits for files to arrive (an event of the mirror's own), not for a time.
    while !arrived.exists() || tree(arrived).len() < at {
        assert!(lftp.try_wait().unwrap().is_none(), "lftp ended before {at} files arrived");
        assert!(std::time::Instant::now() < give_up, "{at} files never arrived");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Stopped where it is (a signal, not a sleep), so that the upgrade, which takes a
    // compile's time, comes in the middle of the mirror; then on.
    let signal = |sig: &str| {
        let ok = Command::new("kill").args([sig, &lftp.id().to_string()]).status().unwrap();
        assert!(ok.success(), "kill {sig}");
    };
    signal("-STOP");
    site.upgrade(to);
    signal("-CONT");
    assert!(lftp.try_wait().unwrap().is_none(), "the upgrade came after the mirror ended");
    let status = lftp.wait().unwrap();
    assert!(status.success(), "lftp failed: {status}");
}

#[test]
fn lftp_mirrors_a_tree_of_1000_files_both_ways_across_upgrades_1_to_2_to_3() {
    let site = Site::new(artifacts::FTP_V1);
    let served = site.dir.path().join("tree");
    for d in 0..10 {
        std::fs::create_dir_all(served.join(format!("d{d}"))).unwrap();
        for f in 0..100 {
            let body = format!("file {d}/{f}\n").repeat(f + 1);
            std::fs::write(served.join(format!("d{d}/f{f:03}.txt")), body).unwrap();
        }
    }
    let want = tree(&served);
    assert_eq!(want.len(), 1000);
    let local = tempfile::tempdir().unwrap();
    let down = local.path().join("down");
    let mirror = format!("mirror /tree {}", down.display());
    lftp_with_an_upgrade(&site, &mirror, &down, 300, artifacts::FTP_V2);
    assert!(tree(&down) == want, "the download mirror is the served tree");
    let up = site.dir.path().join("up");
    let mirror = format!("mirror -R {} /up", down.display());
    lftp_with_an_upgrade(&site, &mirror, &up, 300, artifacts::FTP_V3);
    assert!(tree(&up) == want, "the upload mirror is the tree it was given");
}

/// A session logged in under release 1, in a subdirectory, with a download under way, upgraded
/// straight to release 3 — once through the transformer chain, once by release 3's own
/// migrations — keeps its login, directory and download, and meets release 3's idle clock.
#[test]
fn release_1_reaches_release_3_through_the_transformer_chain_and_by_migration() {
    for chain in [true, false] {
        let site = Site::new(artifacts::FTP_V1);
        let big: Vec<u8> = (0..(16u32 << 20)).map(|i| (i % 251) as u8).collect();
        std::fs::write(site.dir.path().join("docs/big.bin"), &big).unwrap();
        let mut script = Script::start(
            &site,
            "ftp = ftplib.FTP(timeout=60)\n\
             ftp.connect(HOST, PORT)\n\
             ftp.login('alice', 'secret')\n\
             ftp.cwd('docs')\n\
             got, seen = hashlib.sha256(), [0]\n\
             def block(data):\n    got.update(data)\n    seen[0] += len(data)\n    \
                 if seen[0] >= 1 << 20 and seen[0] - len(data) < 1 << 20:\n        pause('MID')\n\
             ftp.retrbinary('RETR big.bin', block, blocksize=65536)\n\
             say(got.hexdigest(), seen[0])\n\
             say(ftp.pwd())\n\
             say(ftp.sendcmd('MLST big.bin').split('\\n')[1].strip())\n\
             ftp.quit()\n",
        );
        script.expect("MID");
        let report = if chain {
            site.upgrade_through(
                artifacts::FTP_V3,
                &[artifacts::FTP_V1_TO_V2, artifacts::FTP_V2_TO_V3],
            )
        } else {
            site.upgrade(artifacts::FTP_V3)
        };
        assert!(report.contains("upgraded ftp 1.0.0 -> ftp 3.0.0"), "{report}");
        if chain {
            assert!(report.contains("transformed  by ftp-v1-to-v2 -> ftp-v2-to-v3"), "{report}");
        }
        script.go_on();
        let want = sha256_of(&big);
        assert_eq!(script.line(), format!("{want} {}", big.len()));
        script.expect("/docs");
        assert!(script.line().starts_with("type=file;size=16777216;modify="));
        script.finish();
    }
}

fn sha256_of(bytes: &[u8]) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bytes).unwrap();
    sha256(file.path())
}

/// Release 3 with `idle=1`: a logged-in client that sends nothing is told 421 and closed, a
/// second after its last command; one that keeps talking is not. The client waits for the
/// server's words, not for a time.
#[test]
fn release_3_closes_a_quiet_session_with_421_after_the_idle_timeout() {
    let site = Site::with_args(artifacts::FTP_V3, &["idle=1"]);
    let mut script = Script::start(
        &site,
        "import socket, time\n\
         ftp = ftplib.FTP(timeout=30)\n\
         ftp.connect(HOST, PORT)\n\
         ftp.login('alice', 'secret')\n\
         for _ in range(4):\n    ftp.voidcmd('NOOP')\n    time.sleep(0.4)\n\
         say('talked', ftp.pwd())\n\
         try:\n    say(ftp.getline())\n\
         except socket.timeout:\n    say('no 421 came')\n\
         say('closed' if ftp.sock.recv(1) == b'' else 'open')\n",
    );
    // Four commands 0.4 s apart span 1.6 s: talking keeps the session.
    script.expect("talked /");
    script.expect("421 Timeout: no command for 1 seconds");
    script.expect("closed");
    script.finish();
}

/// `tasuki upgrade --arg`: release 2 takes no `idle=` (it refuses arguments it does not know),
/// so the operator gives release 3 its settings with the upgrade. An argument release 3 refuses
/// rolls the upgrade back, naming it, and release 2 serves on; with good ones, the session
/// logged in under release 2 meets release 3's one-second idle timeout.
#[test]
fn upgrade_arg_gives_release_3_its_settings_and_a_refused_one_rolls_back() {
    let site = Site::new(artifacts::FTP_V2);
    let mut script = Script::start(
        &site,
        "import socket\n\
         ftp = ftplib.FTP(timeout=30)\n\
         ftp.connect(HOST, PORT)\n\
         ftp.login('alice', 'secret')\n\
         ftp.cwd('docs')\n\
         pause('REFUSED')\n\
         say(ftp.pwd())\n\
         pause('UPGRADED')\n\
         try:\n    say(ftp.getline())\n\
         except socket.timeout:\n    say('no 421 came')\n",
    );
    script.expect("REFUSED");
    let upgrade = |extra: &[&str]| {
        let mut args = vec!["upgrade", artifacts::FTP_V3, "--arg", "user=alice:secret"];
        args.extend_from_slice(extra);
        tasuki(site.work.path(), &args)
    };
    let refused = upgrade(&["--arg", "idle=soon"]);
    assert!(!refused.status.success());
    let said = text(&refused.stderr);
    assert!(said.contains("idle=soon: give a whole number"), "{said}");
    script.go_on();
    script.expect("/docs");
    script.expect("UPGRADED");
    let report = upgrade(&["--arg", "idle=1"]);
    assert!(report.status.success(), "{}", text(&report.stderr));
    assert!(text(&report.stdout).contains("-> ftp 3.0.0"), "{}", text(&report.stdout));
    script.go_on();
    script.expect("421 Timeout: no command for 1 seconds");
    script.finish();
}

/// `heap X MiB of Y MiB linear memory` from an upgrade report's memory line, `before` or
/// `after` the upgrade, in MiB.
fn heap(report: &str, when: &str) -> (f64, f64) {
    let line = report.lines().find(|l| l.trim_start().starts_with("memory")).expect("memory");
    let part = line.split(", ").find(|p| p.ends_with(when)).unwrap_or_else(|| panic!("{line}"));
    let mib: Vec<f64> = part.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (mib[0], mib[1])
}

/// The heap the FTP server reports (`tasuki status`, the upgrade report, `--compact-below`) is
/// what it holds: a file streamed whole, then ten downloads of a 100 MB file whose client reads
/// 100 kB and closes the data connection, leave it where it was. Each file read goes through
/// wasi-libc, which gets the bytes in memory from the component's import realloc and frees them
/// with `free()`; while that realloc was std's `cabi_realloc`, counted by the SDK's allocator,
/// every byte read stayed in the count (92 MB of a 9 MiB linear memory), and the host never
/// compacted. Release 3 is built with today's SDK (releases 1 and 2 shipped with the old count).
#[test]
fn streamed_and_aborted_downloads_leave_the_heap_count_where_it_was() {
    const WHOLE: u64 = 8 << 20;
    let site = Site::new(artifacts::FTP_V3);
    std::fs::write(site.dir.path().join("whole.bin"), vec![7u8; WHOLE as usize]).unwrap();
    // Sparse: 100 MB of zeros on disk in no time.
    let big = std::fs::File::create(site.dir.path().join("big.bin")).unwrap();
    big.set_len(100_000_000).unwrap();
    drop(big);
    let mut script = Script::start(
        &site,
        "ftp = ftplib.FTP(timeout=60)\n\
         ftp.connect(HOST, PORT)\n\
         ftp.login('alice', 'secret')\n\
         ftp.voidcmd('TYPE I')\n\
         pause('IDLE')\n\
         seen = [0]\n\
         def block(data):\n    seen[0] += len(data)\n\
         ftp.retrbinary('RETR whole.bin', block)\n\
         say('WHOLE', seen[0])\n\
         for _ in range(10):\n    \
             data = ftp.transfercmd('RETR big.bin')\n    \
             got = 0\n    \
             while got < 100_000:\n        got += len(data.recv(65536))\n    \
             data.close()\n    \
             try:\n        ftp.voidresp()\n    \
             except ftplib.error_temp as e:\n        say(str(e)[:3])\n\
         say(ftp.voidcmd('NOOP')[:3])\n\
         pause('DONE')\n\
         ftp.quit()\n",
    );
    // An upgrade while the client is idle starts a fresh instance holding its session; its
    // reading just after the import is the floor.
    script.expect("IDLE");
    let (idle, _) = heap(&site.upgrade(artifacts::FTP_V3), "after");
    script.go_on();
    assert_eq!(script.line(), format!("WHOLE {WHOLE}"));
    for _ in 0..10 {
        script.expect("426");
    }
    script.expect("200");
    script.expect("DONE");
    // The same instance, read by the next upgrade just before its pause.
    let report = site.upgrade(artifacts::FTP_V3);
    let (in_use, linear) = heap(&report, "before");
    script.go_on();
    script.finish();
    // The count is of the requested sizes in a linear memory that holds them all; the
    // session's own bookkeeping may have grown by a little, nothing the files passed through.
    assert!(in_use <= linear, "{report}");
    assert!(in_use <= idle + 0.1, "{in_use} MiB in use after, {idle} MiB idle:\n{report}");
}

/// A snapshot file of release 1 — no connection open, so no sessions section — goes to
/// release 3 offline through both transformers (`tasuki migrate --check`), and release 3 serves
/// from it. The chain names the sessions section; a state without one has nothing there to
/// rewrite, and the chain must not refuse it.
#[test]
fn a_release_1_snapshot_migrates_to_release_3_through_the_transformers() {
    let site = Site::new(artifacts::FTP_V1);
    let mut script = Script::start(
        &site,
        "ftp = ftplib.FTP(timeout=60)\n\
         ftp.connect(HOST, PORT)\n\
         ftp.login('alice', 'secret')\n\
         say(ftp.retrlines('LIST docs', lambda line: None)[:3])\n\
         ftp.quit()\n",
    );
    script.expect("226");
    script.finish();
    let keep = tempfile::tempdir().unwrap();
    let snap = keep.path().join("v1.snap");
    tasuki_ok(site.work.path(), &["snapshot", "--out", snap.to_str().unwrap()]);
    drop(site);
    let out = keep.path().join("v3.snap");
    let migrated = tasuki_ok(
        keep.path(),
        &[
            "migrate",
            "--in",
            snap.to_str().unwrap(),
            "--transform",
            artifacts::FTP_V1_TO_V2,
            "--transform",
            artifacts::FTP_V2_TO_V3,
            "--check",
            artifacts::FTP_V3,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let site = Site::restored(artifacts::FTP_V3, &out);
    let status = tasuki_ok(site.work.path(), &["status"]);
    assert!(status.contains("3.0.0"), "release 3 serves:\n{status}\nafter\n{migrated}");
    let mut script = Script::start(
        &site,
        "ftp = ftplib.FTP(timeout=60)\n\
         ftp.connect(HOST, PORT)\n\
         ftp.login('alice', 'secret')\n\
         say(ftp.sendcmd('REST 6')[:3])\n\
         data = io.BytesIO()\n\
         ftp.retrbinary('RETR docs/readme.txt', data.write, rest=6)\n\
         say(data.getvalue().decode().strip())\n\
         ftp.quit()\n",
    );
    script.expect("350");
    script.expect("from ftp");
    script.finish();
}

//! The FTP server, release 3: RFC 959 with passive data connections (`PASV`, and RFC 2428's
//! `EPSV`), serving one directory the host grants, with RFC 3659's `REST`, `MDTM`, `MLST` and
//! `MLSD`, and `APPE` (release 2); and now an idle-session timeout and a per-user download
//! rate limit.
//!
//! ```text
//! tasuki run ftp_v3.wasm --listen 127.0.0.1:2121 --dir ./served::/srv \
//!     --data-ports 50000-50100 --arg user=alice:secret --arg anonymous \
//!     --arg idle=300 --arg rate=1048576
//! ```
//!
//! Arguments (`--arg`, each once or more):
//! - `root=PATH`: the served directory as the guest sees it (default `/srv`): grant it with
//!   `--dir HOST::PATH`. Clients see it as `/`; no name leads out of it (`..` stops at `/`,
//!   and the host refuses links that point out of a granted directory).
//! - `user=NAME:PASSWORD`: a user who may read and write.
//! - `anonymous`: `USER anonymous` (or `ftp`) with any password may read, not write.
//! - `idle=SECONDS`: a control connection that sends no command for this long, with no
//!   transfer under way, is told `421` and closed (default 300, vsftpd's
//!   `idle_session_timeout`; 0 never).
//! - `rate=BYTES_PER_SECOND`: each user's downloads together get at most this many bytes a
//!   second, on average over a second (default 0: unlimited; vsftpd's `local_max_rate`, but
//!   per user rather than per session). Anonymous logins share one allowance.
//!
//! Commands: `USER PASS SYST FEAT OPTS PWD XPWD CWD CDUP TYPE MODE STRU PASV EPSV LIST NLST
//! MLSD MLST RETR STOR APPE REST DELE MKD RMD SIZE MDTM NOOP QUIT`, with RFC 959's and RFC
//! 3659's reply codes. Active mode (`PORT`, `EPRT`) is refused with 502: a component opens no
//! connections, so data always comes to a port the server listens on (passive mode, what
//! `ftplib`, `curl` and `lftp` use by default).
//!
//! Each connection's state is its session ([`tasuki_guest::Ctx::session`]): a control
//! connection's login, working directory, `REST` offset, last command's time and transfer under
//! way, a data connection's control connection and its transfer (what, from which offset, how
//! many bytes so far). Sessions cross an upgrade with their connections, and the data ports are
//! listeners the host owns, so a client logged in, in a directory, or in the middle of a
//! transfer carries on under the next release. A download is a stream of the file by path and
//! offset ([`Source::File`]) — whole, or, under a rate limit, a slice at a time as the user's
//! allowance permits, with a timer between slices; an upload is written by reopening the file
//! at the offset reached, each time data arrives: no open file handle needs to cross. The
//! timers are the host's, so a timeout or a paused download armed by one release fires in the
//! next.
//!
//! State: the app state is version 2 (release 1 and 2's counters, and each user's download
//! allowance, shared by all their connections); sessions are version 3 (release 2's, and each
//! control session's last command time). Release 3 reads the app state of releases 1 and 2
//! (version 1) and their sessions (versions 1 and 2, frozen in `ftp_states`) itself
//! ([`Server::migrations`], `Session::migrations`); the transformers `ftp-v1-to-v2` and
//! `ftp-v2-to-v3` (in `guests/transforms/`) reach the same shapes outside it.

pub mod listing;
pub mod path;

pub use ftp_states::v2::{Data, Kind, Login, Passive, Transfer};
pub use ftp_states::v3::{Allowance, Conn, Control};
use ftp_states::{v1, v3};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;
use tasuki_guest::frame::{Framing, Lines};
use tasuki_guest::{
    ConnId, ConnInfo, Ctx, ListenError, ListenerId, Migrations, Server, SessionType, Source,
    StreamEnd,
};

/// Command lines of at most 4 KiB (RFC 959 sets no limit; paths are the long part).
const LINES: Lines = Lines::new(4096);

/// The greeting on a new control connection.
const BANNER: &str = "220 tasuki ftp ready\r\n";

/// What `FEAT` lists (RFC 2389): the extensions beyond RFC 959 this release implements.
const FEATURES: &[&str] =
    &["EPSV", "MDTM", "MLST type*;size*;modify*;perm*;", "PASV", "REST STREAM", "SIZE"];

/// The idle timeout without `idle=`, in seconds: vsftpd's `idle_session_timeout` default.
const IDLE_DEFAULT_S: u64 = 300;

/// Timer ids at or above this are a rate-limited download's (the data connection's id added);
/// below, a control connection's idle timer (its id).
const RATE_TIMER: u64 = 1 << 63;

/// The most a rate-limited download sends in one slice, in bytes: a tenth of a second's worth,
/// at least 1 KiB, so the rate holds over short spans too.
fn slice_max(rate: u64) -> u64 {
    (rate / 10).max(1024)
}

/// The server's configuration, from `--arg`: rebuilt by each instance's `init`.
#[derive(Debug, Clone, Default)]
struct Config {
    root: String,
    users: Vec<(String, String)>,
    anonymous: bool,
    /// The idle timeout, in ms; 0 never.
    idle_ms: u64,
    /// Each user's download rate, in bytes a second; 0 unlimited.
    rate: u64,
}

impl Config {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut config =
            Config { root: "/srv".into(), idle_ms: IDLE_DEFAULT_S * 1000, ..Config::default() };
        let number = |name: &str, value: &str| {
            value.parse::<u64>().map_err(|_| format!("{name}={value}: give a whole number"))
        };
        for arg in args {
            match arg.split_once('=') {
                Some(("root", root)) if root.starts_with('/') => config.root = root.into(),
                Some(("root", root)) => {
                    return Err(format!("root={root}: give the guest path, starting with /"));
                }
                Some(("user", user)) => match user.split_once(':') {
                    Some((name, password)) if !name.is_empty() => {
                        config.users.push((name.into(), password.into()));
                    }
                    _ => return Err(format!("user={user}: give NAME:PASSWORD")),
                },
                Some(("idle", s)) => config.idle_ms = number("idle", s)?.saturating_mul(1000),
                Some(("rate", r)) => config.rate = number("rate", r)?,
                None if arg == "anonymous" => config.anonymous = true,
                _ => {
                    return Err(format!(
                        "unknown argument `{arg}`: give root=PATH, user=NAME:PASSWORD, \
                         anonymous, idle=SECONDS or rate=BYTES_PER_SECOND"
                    ));
                }
            }
        }
        Ok(config)
    }
}

/// The app state (version 2): the configuration (not transferred: each release reads it from
/// its arguments), counters, and each user's download allowance.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Ftp {
    #[serde(skip)]
    config: Config,
    /// Transfers completed: downloads (`RETR`), uploads (`STOR`, `APPE`), listings.
    pub downloads: u64,
    pub uploads: u64,
    pub listings: u64,
    /// Per user name, the allowance all their downloads draw from (state shared by
    /// connections: one user's two sessions share one rate).
    pub users: BTreeMap<String, Allowance>,
}

impl Ftp {
    /// The app state as `ftp_states::v3::Ftp` holds it (the same fields; the configuration
    /// comes from the arguments).
    fn from_frozen(state: v3::Ftp) -> Self {
        let v3::Ftp { downloads, uploads, listings, users } = state;
        Ftp { config: Config::default(), downloads, uploads, listings, users }
    }
}

/// A listing's transfer record.
fn listing_transfer(listing: Vec<u8>) -> Transfer {
    Transfer { kind: Kind::List { listing }, path: String::new(), offset: 0, bytes: 0 }
}

fn reply(ctx: &mut Ctx, conn: ConnId, text: &str) {
    ctx.send(conn, format!("{text}\r\n").as_bytes());
}

/// `conn`'s control session; `None` if it is a data connection.
fn control(ctx: &mut Ctx, conn: ConnId) -> Option<&mut Control> {
    match ctx.session::<Conn>(conn) {
        Conn::Control(control) => Some(control),
        Conn::Data(_) => None,
    }
}

/// `conn`'s data session; `None` if it is a control connection.
fn data_session(ctx: &mut Ctx, conn: ConnId) -> Option<&mut Data> {
    match ctx.session::<Conn>(conn) {
        Conn::Data(data) => Some(data),
        Conn::Control(_) => None,
    }
}

/// The control connection whose `PASV` or `EPSV` asked for `listener`.
fn owner_of(ctx: &mut Ctx, listener: ListenerId) -> Option<ConnId> {
    ctx.sessions::<Conn>().find_map(|(id, c)| match c {
        Conn::Control(s) if s.passive.as_ref().is_some_and(|p| p.listener == listener) => Some(id),
        _ => None,
    })
}

impl Ftp {
    fn disk(&self, path: &str) -> String {
        path::on_disk(&self.config.root, path)
    }

    fn check_login(&self, name: &str, password: &str) -> Option<Login> {
        if self.config.anonymous && (name == "anonymous" || name == "ftp") {
            return Some(Login { name: name.into(), write: false });
        }
        self.config
            .users
            .iter()
            .any(|(n, p)| n == name && p == password)
            .then(|| Login { name: name.into(), write: true })
    }

    /// Handles one command line on control connection `conn`.
    fn command(&mut self, ctx: &mut Ctx, conn: ConnId, s: &mut Control, line: &str) {
        let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
        let verb = verb.to_ascii_uppercase();
        let arg = arg.trim_end();
        s.last_command_ms = ctx.now_ms();
        if arg.is_empty() && (verb == "USER" || takes_path(&verb)) {
            return reply(ctx, conn, &format!("501 {verb} needs an argument"));
        }
        match verb.as_str() {
            "USER" => {
                s.login = None;
                s.user = Some(arg.to_string());
                if self.config.anonymous && (arg == "anonymous" || arg == "ftp") {
                    reply(ctx, conn, "331 Anonymous login ok, send your e-mail as password");
                } else {
                    reply(ctx, conn, &format!("331 Password required for {arg}"));
                }
                return;
            }
            "PASS" => {
                let Some(name) = s.user.take() else {
                    return reply(ctx, conn, "503 Login with USER first");
                };
                match self.check_login(&name, arg) {
                    Some(login) => {
                        s.login = Some(login);
                        s.cwd = "/".into();
                        reply(ctx, conn, "230 User logged in");
                    }
                    None => reply(ctx, conn, "530 Login incorrect"),
                }
                return;
            }
            "QUIT" => {
                reply(ctx, conn, "221 Goodbye");
                self.drop_data(ctx, s);
                ctx.cancel_timer(conn);
                ctx.close(conn);
                return;
            }
            "SYST" => return reply(ctx, conn, "215 UNIX Type: L8"),
            "NOOP" => return reply(ctx, conn, "200 NOOP ok"),
            "FEAT" => {
                let mut text = String::from("211-Features:\r\n");
                for feature in FEATURES {
                    text.push_str(&format!(" {feature}\r\n"));
                }
                text.push_str("211 End\r\n");
                return ctx.send(conn, text.as_bytes());
            }
            "OPTS" => {
                let (option, value) = arg.split_once(' ').unwrap_or((arg, ""));
                return match option.to_ascii_uppercase().as_str() {
                    // Names are bytes and sent as they are: UTF-8 names pass through.
                    "UTF8" if value.eq_ignore_ascii_case("ON") => {
                        reply(ctx, conn, "200 Always in UTF8 mode")
                    }
                    // RFC 3659 section 7.9: every fact is always sent; say which.
                    "MLST" => reply(ctx, conn, "200 MLST OPTS type;size;modify;perm;"),
                    _ => reply(ctx, conn, &format!("501 OPTS {arg} not understood")),
                };
            }
            _ => {}
        }
        let Some(login) = s.login.clone() else {
            return reply(ctx, conn, "530 Please login with USER and PASS");
        };
        // A name that climbs above the root leads nowhere: 550 for every command that names
        // a path (RFC 959: "file unavailable").
        let target = match path::resolve(&s.cwd, arg) {
            Some(target) => target,
            None if takes_path(&verb) || verb == "MLST" || verb == "MLSD" => {
                return reply(ctx, conn, &format!("550 {arg}: No such file or directory"));
            }
            None => String::from("/"),
        };
        match verb.as_str() {
            "PWD" | "XPWD" => reply(
                ctx,
                conn,
                &format!("257 \"{}\" is the current directory", s.cwd.replace('"', "\"\"")),
            ),
            "CWD" | "XCWD" | "CDUP" | "XCUP" => {
                let target = if verb.ends_with("UP") {
                    // At the root, CDUP stays there (RFC 959 leaves it to the server).
                    path::resolve(&s.cwd, "..").unwrap_or_else(|| "/".into())
                } else {
                    target
                };
                match std::fs::metadata(self.disk(&target)) {
                    Ok(meta) if meta.is_dir() => {
                        s.cwd = target;
                        reply(ctx, conn, &format!("250 Directory changed to {}", s.cwd));
                    }
                    _ => reply(ctx, conn, &format!("550 {target}: No such directory")),
                }
            }
            "TYPE" => match arg.to_ascii_uppercase().as_str() {
                "A" | "A N" | "I" | "L 8" => reply(ctx, conn, &format!("200 Type set to {arg}")),
                _ => reply(ctx, conn, &format!("504 Type {arg} not implemented")),
            },
            "MODE" if arg.eq_ignore_ascii_case("S") => reply(ctx, conn, "200 Mode set to S"),
            "STRU" if arg.eq_ignore_ascii_case("F") => reply(ctx, conn, "200 Structure set to F"),
            "MODE" | "STRU" => reply(ctx, conn, &format!("504 {verb} {arg} not implemented")),
            "PASV" | "EPSV" => {
                if arg.eq_ignore_ascii_case("ALL") {
                    return reply(ctx, conn, "200 EPSV ALL ok");
                }
                // A new port replaces any earlier one, and a data connection made to it.
                self.drop_data(ctx, s);
                let listener = ctx.listen(0);
                s.passive = Some(Passive { listener, extended: verb == "EPSV" });
                // Answered when the host says which port it opened (`on_listening`).
            }
            "PORT" | "EPRT" => {
                reply(ctx, conn, "502 Active mode is not supported: use PASV or EPSV")
            }
            "SIZE" => match std::fs::metadata(self.disk(&target)) {
                Ok(meta) if meta.is_file() => reply(ctx, conn, &format!("213 {}", meta.len())),
                _ => reply(ctx, conn, &format!("550 {target}: No such file")),
            },
            // RFC 3659 section 3: the modification time, UTC, as YYYYMMDDHHMMSS.
            "MDTM" => match std::fs::metadata(self.disk(&target)) {
                Ok(meta) if meta.is_file() => {
                    let modified = meta.modified().map(listing::unix_s).unwrap_or(0);
                    reply(ctx, conn, &format!("213 {}", listing::fact_time(modified)))
                }
                _ => reply(ctx, conn, &format!("550 {target}: No such file")),
            },
            // RFC 3659 section 5: the offset the next RETR or STOR starts at.
            "REST" => match arg.parse::<u64>() {
                Ok(offset) => {
                    s.restart = offset;
                    reply(
                        ctx,
                        conn,
                        &format!("350 Restarting at {offset}. Send STORE or RETRIEVE"),
                    );
                }
                Err(_) => reply(ctx, conn, &format!("501 REST {arg}: not a byte offset")),
            },
            // RFC 3659 section 7: the facts of one file or directory, on the control connection.
            "MLST" => match std::fs::metadata(self.disk(&target)) {
                Ok(meta) => {
                    let facts = listing::mlsx_line(&target, &meta, login.write);
                    ctx.send(
                        conn,
                        format!("250-Listing {target}\r\n {facts}250 End\r\n").as_bytes(),
                    );
                }
                Err(_) => reply(ctx, conn, &format!("550 {target}: No such file or directory")),
            },
            "RETR" => {
                let offset = std::mem::take(&mut s.restart);
                match std::fs::metadata(self.disk(&target)) {
                    Ok(meta) if meta.is_file() && offset > meta.len() => reply(
                        ctx,
                        conn,
                        &format!(
                            "554 REST {offset} is past the end of {target} ({} bytes)",
                            meta.len()
                        ),
                    ),
                    Ok(meta) if meta.is_file() => {
                        let transfer = Transfer {
                            kind: Kind::Retr { len: meta.len() - offset },
                            path: self.disk(&target),
                            offset,
                            bytes: 0,
                        };
                        self.transfer(ctx, conn, s, transfer);
                    }
                    _ => reply(ctx, conn, &format!("550 {target}: No such file")),
                }
            }
            "MLSD" => {
                let disk = self.disk(&target);
                let listing = match std::fs::metadata(&disk) {
                    Ok(meta) if meta.is_dir() => {
                        listing::list_dir(&disk, listing::Style::Facts { write: login.write }, 0)
                    }
                    // RFC 3659 section 7.2.1: MLSD names a directory.
                    Ok(_) => return reply(ctx, conn, &format!("501 {target}: Not a directory")),
                    Err(e) => Err(e),
                };
                match listing {
                    Ok(listing) => self.transfer(ctx, conn, s, listing_transfer(listing)),
                    Err(_) => reply(ctx, conn, &format!("550 {target}: No such directory")),
                }
            }
            "LIST" | "NLST" => {
                // Options such as `-la` (sent by some clients) ask for what LIST gives anyway.
                let name = arg.split(' ').filter(|w| !w.starts_with('-')).collect::<Vec<_>>();
                let Some(target) = path::resolve(&s.cwd, &name.join(" ")) else {
                    return reply(ctx, conn, &format!("550 {arg}: No such file or directory"));
                };
                let disk = self.disk(&target);
                let now_s = (ctx.now_ms() / 1000) as i64;
                let style = if verb == "NLST" { listing::Style::Names } else { listing::Style::Ls };
                let listing = match std::fs::metadata(&disk) {
                    Ok(meta) if meta.is_dir() => listing::list_dir(&disk, style, now_s),
                    Ok(_) if verb == "NLST" => {
                        Ok(format!("{}\r\n", path::file_name(&target)).into_bytes())
                    }
                    Ok(meta) => {
                        Ok(listing::ls_line(path::file_name(&target), &meta, now_s).into_bytes())
                    }
                    Err(e) => Err(e),
                };
                match listing {
                    Ok(listing) => self.transfer(ctx, conn, s, listing_transfer(listing)),
                    Err(_) => reply(ctx, conn, &format!("550 {target}: No such file or directory")),
                }
            }
            "STOR" | "APPE" | "DELE" | "MKD" | "XMKD" | "RMD" | "XRMD" if !login.write => {
                reply(ctx, conn, "550 Permission denied")
            }
            "STOR" | "APPE" => {
                let restart = std::mem::take(&mut s.restart);
                // Refused before the file is touched: a 425 must leave it as it was.
                if let Err(why) = transfer_possible(s) {
                    return reply(ctx, conn, why);
                }
                let disk = self.disk(&target);
                match open_upload(&disk, verb == "APPE", restart) {
                    Ok(offset) => {
                        let transfer = Transfer { kind: Kind::Stor, path: disk, offset, bytes: 0 };
                        self.transfer(ctx, conn, s, transfer);
                    }
                    Err(Refused::Cannot) => {
                        reply(ctx, conn, &format!("550 {target}: Cannot create file"))
                    }
                    Err(Refused::PastEnd(len)) => reply(
                        ctx,
                        conn,
                        &format!("554 REST {restart} is past the end of {target} ({len} bytes)"),
                    ),
                }
            }
            "DELE" => match std::fs::symlink_metadata(self.disk(&target)) {
                Ok(meta) if !meta.is_dir() => match std::fs::remove_file(self.disk(&target)) {
                    Ok(()) => reply(ctx, conn, &format!("250 {target} deleted")),
                    Err(e) => reply(ctx, conn, &format!("550 {target}: {e}")),
                },
                _ => reply(ctx, conn, &format!("550 {target}: No such file")),
            },
            "MKD" | "XMKD" => match std::fs::create_dir(self.disk(&target)) {
                Ok(()) => {
                    reply(ctx, conn, &format!("257 \"{}\" created", target.replace('"', "\"\"")))
                }
                Err(e) => reply(ctx, conn, &format!("550 {target}: {e}")),
            },
            "RMD" | "XRMD" => match std::fs::remove_dir(self.disk(&target)) {
                Ok(()) => reply(ctx, conn, &format!("250 {target} removed")),
                Err(e) => reply(ctx, conn, &format!("550 {target}: {e}")),
            },
            _ => reply(ctx, conn, &format!("502 {verb} not implemented")),
        }
    }

    /// A transfer command: started now if its data connection is there, else when it comes.
    fn transfer(&mut self, ctx: &mut Ctx, conn: ConnId, s: &mut Control, transfer: Transfer) {
        if let Err(why) = transfer_possible(s) {
            return reply(ctx, conn, why);
        }
        match s.data.take() {
            Some(data) => self.start(ctx, conn, s, data, transfer),
            None => s.waiting = Some(transfer),
        }
    }

    /// Starts `transfer` from control connection `conn` on data connection `data`.
    fn start(&mut self, ctx: &mut Ctx, conn: ConnId, s: &mut Control, data: ConnId, t: Transfer) {
        s.busy = Some(data);
        let mut kept = t;
        match &mut kept.kind {
            Kind::Retr { len } => {
                reply(ctx, conn, &format!("150 Opening data connection ({len} bytes)"));
                if self.config.rate == 0 {
                    let source = Source::File {
                        path: kept.path.clone(),
                        offset: kept.offset,
                        len: Some(*len),
                    };
                    ctx.stream(data, source);
                }
            }
            Kind::List { listing } => {
                reply(ctx, conn, "150 Here comes the listing");
                // The bytes go into the stream: the session need not hold them twice.
                ctx.stream(data, Source::Bytes(std::mem::take(listing)));
            }
            Kind::Stor => reply(ctx, conn, "150 Ready to receive"),
        }
        let rated = self.config.rate > 0 && matches!(kept.kind, Kind::Retr { .. });
        if let Some(d) = data_session(ctx, data) {
            d.transfer = Some(kept);
        }
        if rated {
            let user = s.login.as_ref().map_or(String::new(), |l| l.name.clone());
            self.next_slice(ctx, data, &user);
        }
    }

    /// Sends the next slice of the rate-limited download on data connection `data`, for
    /// `user`: as much as their allowance holds now (at most [`slice_max`]), or, if it holds
    /// nothing, arms a timer for when it will.
    fn next_slice(&mut self, ctx: &mut Ctx, data: ConnId, user: &str) {
        let Some(Data { transfer: Some(t), .. }) = data_session(ctx, data) else { return };
        let Kind::Retr { len } = t.kind else { return };
        let (path, at, left) = (t.path.clone(), t.offset + t.bytes, len - t.bytes.min(len));
        let rate = self.config.rate;
        let now = ctx.now_ms();
        let allowance =
            self.users.entry(user.to_string()).or_insert(Allowance { tokens: rate, at_ms: now });
        // Refill: `rate` bytes a second since it was last brought up to date, up to a second's
        // worth; the time of a fraction of a byte not yet earned stays counted.
        let earned = now.saturating_sub(allowance.at_ms).saturating_mul(rate) / 1000;
        allowance.tokens = allowance.tokens.saturating_add(earned);
        if allowance.tokens >= rate {
            (allowance.tokens, allowance.at_ms) = (rate, now);
        } else {
            allowance.at_ms += earned.saturating_mul(1000) / rate;
        }
        let slice = left.min(slice_max(rate)).min(allowance.tokens);
        if slice == 0 && left > 0 {
            // Wait until a slice's worth has come in (never more than a second's: the most the
            // allowance holds), at least one ms.
            let want = left.min(slice_max(rate)).min(rate);
            let wait_ms = want.saturating_mul(1000).div_ceil(rate).max(1);
            return ctx.set_timer(RATE_TIMER | data, Duration::from_millis(wait_ms));
        }
        allowance.tokens -= slice;
        ctx.stream(data, Source::File { path, offset: at, len: Some(slice) });
    }

    /// The user whose control connection data connection `data` serves, if logged in.
    fn user_of(ctx: &mut Ctx, data: ConnId) -> Option<String> {
        let control_id = data_session(ctx, data)?.control;
        control(ctx, control_id)?.login.as_ref().map(|l| l.name.clone())
    }

    /// Closes the data port and data connection of control session `s`, if any.
    fn drop_data(&mut self, ctx: &mut Ctx, s: &mut Control) {
        if let Some(passive) = s.passive.take() {
            ctx.close_listener(passive.listener);
        }
        for data in [s.data.take(), s.busy.take()].into_iter().flatten() {
            ctx.close(data);
        }
        s.waiting = None;
    }

    /// The transfer on data connection `data` ended: `code text` to its control connection.
    fn finished(&mut self, ctx: &mut Ctx, data: ConnId, code: &str) {
        let Some(d) = data_session(ctx, data) else { return };
        let control_id = d.control;
        let transfer = d.transfer.take();
        if code.starts_with("226") {
            match transfer.map(|t| t.kind) {
                Some(Kind::Retr { .. }) => self.downloads += 1,
                Some(Kind::Stor) => self.uploads += 1,
                Some(Kind::List { .. }) => self.listings += 1,
                None => {}
            }
        }
        if let Some(s) = control(ctx, control_id)
            && s.busy == Some(data)
        {
            s.busy = None;
            reply(ctx, control_id, code);
        }
    }
}

/// Whether control session `s` can start a transfer: a data port or connection of its own,
/// and no transfer under way; else the 425 reply that says why not.
fn transfer_possible(s: &Control) -> Result<(), &'static str> {
    if s.busy.is_some() {
        Err("425 A transfer is under way")
    } else if s.data.is_none() && s.passive.is_none() {
        Err("425 Use PASV or EPSV first")
    } else {
        Ok(())
    }
}

/// Whether `verb` names a path in its argument (`REST` takes an offset, and also needs one).
fn takes_path(verb: &str) -> bool {
    matches!(
        verb,
        "CWD"
            | "XCWD"
            | "SIZE"
            | "MDTM"
            | "RETR"
            | "STOR"
            | "APPE"
            | "DELE"
            | "MKD"
            | "XMKD"
            | "RMD"
            | "XRMD"
            | "REST"
    )
}

/// Why an upload cannot start.
enum Refused {
    /// The file cannot be made or written (550).
    Cannot,
    /// `REST`'s offset is past the file's end, which is this many bytes (554).
    PastEnd(u64),
}

/// Opens `disk` for an upload and returns the offset it starts at: `APPE` at the file's end
/// (made if missing), `STOR` at `restart` (RFC 3659 section 5: the file's first `restart`
/// bytes are kept and what follows is replaced), else a new or emptied file.
fn open_upload(disk: &str, append: bool, restart: u64) -> Result<u64, Refused> {
    let cannot = |_: std::io::Error| Refused::Cannot;
    if append {
        let file =
            std::fs::OpenOptions::new().create(true).append(true).open(disk).map_err(cannot)?;
        return Ok(file.metadata().map_err(cannot)?.len());
    }
    if restart == 0 {
        std::fs::File::create(disk).map_err(cannot)?;
        return Ok(0);
    }
    let file = std::fs::OpenOptions::new().write(true).open(disk).map_err(cannot)?;
    let len = file.metadata().map_err(cannot)?.len();
    if restart > len {
        return Err(Refused::PastEnd(len));
    }
    file.set_len(restart).map_err(cannot)?;
    Ok(restart)
}

impl Server for Ftp {
    const NAME: &'static str = "ftp";
    const STATE_VERSION: u32 = 2;

    fn migrations() -> Migrations<Self> {
        Migrations::none().from::<v1::Ftp>(1, |old| Ftp::from_frozen(old.into()))
    }

    fn session_type() -> Option<SessionType> {
        Some(SessionType::of::<Conn>())
    }

    fn init(&mut self, _: &mut Ctx, args: &[String]) -> Result<(), String> {
        self.config = Config::parse(args)?;
        Ok(())
    }

    fn resumed(&mut self, ctx: &mut Ctx, fresh: Self) {
        self.config = fresh.config;
        // Sessions from a release without the idle timeout: their clock starts now.
        let now = ctx.now_ms();
        let mut started = Vec::new();
        for (id, session) in ctx.sessions::<Conn>() {
            if let Conn::Control(s) = session
                && s.last_command_ms == 0
            {
                s.last_command_ms = now;
                started.push(id);
            }
        }
        for id in started {
            self.arm_idle(ctx, id, self.config.idle_ms);
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx, id: u64) {
        if id >= RATE_TIMER {
            let data = id - RATE_TIMER;
            if let Some(user) = Self::user_of(ctx, data) {
                self.next_slice(ctx, data, &user);
            }
            return;
        }
        // A control connection's idle timer; it may have gone since.
        let conn = id;
        let idle = self.config.idle_ms;
        if idle == 0 || !ctx.sessions::<Conn>().any(|(c, _)| c == conn) {
            return;
        }
        let now = ctx.now_ms();
        let Some(s) = control(ctx, conn) else { return };
        let quiet = now.saturating_sub(s.last_command_ms);
        if s.busy.is_some() || s.waiting.is_some() || quiet < idle {
            // A transfer under way keeps the session alive (as vsftpd's does); else the
            // timeout counts from the last command.
            let left = if s.busy.is_some() || s.waiting.is_some() { idle } else { idle - quiet };
            return self.arm_idle(ctx, conn, left);
        }
        reply(ctx, conn, &format!("421 Timeout: no command for {} seconds", idle / 1000));
        ctx.with_session(conn, |ctx, session: &mut Conn| {
            if let Conn::Control(s) = session {
                self.drop_data(ctx, s);
            }
        });
        ctx.close(conn);
    }

    fn on_connect(&mut self, ctx: &mut Ctx, conn: &ConnInfo) {
        let Some(listener) = conn.listener_id else {
            let local_ip = conn.listener.rsplit_once(':').map_or("", |(ip, _)| ip).to_string();
            let last_command_ms = ctx.now_ms();
            *ctx.session::<Conn>(conn.id) =
                Conn::Control(Control { local_ip, last_command_ms, ..Control::default() });
            self.arm_idle(ctx, conn.id, self.config.idle_ms);
            return reply(ctx, conn.id, BANNER.trim_end());
        };
        // A data connection: to the control connection that opened its port.
        let owner = owner_of(ctx, listener);
        // One connection per port: the listener closes once it has come.
        ctx.close_listener(listener);
        let Some(owner) = owner else { return ctx.close(conn.id) };
        *ctx.session::<Conn>(conn.id) = Conn::Data(Data { control: owner, transfer: None });
        ctx.with_session(owner, |ctx, session: &mut Conn| {
            let Conn::Control(s) = session else { return };
            s.passive = None;
            match s.waiting.take() {
                Some(transfer) => self.start(ctx, owner, s, conn.id, transfer),
                None => s.data = Some(conn.id),
            }
        });
    }

    fn on_listening(&mut self, ctx: &mut Ctx, id: ListenerId, answer: Result<String, ListenError>) {
        let Some(owner) = owner_of(ctx, id) else { return };
        let Some(s) = control(ctx, owner) else { return };
        let extended = s.passive.as_ref().is_some_and(|p| p.extended);
        let local_ip = s.local_ip.clone();
        match answer {
            Ok(address) => {
                let (ip, port) = address.rsplit_once(':').unwrap_or(("", "0"));
                let port: u16 = port.parse().unwrap_or(0);
                if extended {
                    reply(ctx, owner, &format!("229 Entering Extended Passive Mode (|||{port}|)"));
                } else {
                    // The listener's address, or, when it is the wildcard, the one the client
                    // reached the control connection at.
                    let ip = if ip == "0.0.0.0" || ip.contains(':') { &local_ip } else { ip };
                    let ip = if ip.is_empty() || ip == "0.0.0.0" { "127.0.0.1" } else { ip };
                    reply(
                        ctx,
                        owner,
                        &format!(
                            "227 Entering Passive Mode ({},{},{})",
                            ip.replace('.', ","),
                            port >> 8,
                            port & 0xff
                        ),
                    );
                }
            }
            Err(e) => {
                if let Some(s) = control(ctx, owner) {
                    s.passive = None;
                    s.waiting = None;
                }
                reply(ctx, owner, &format!("425 Cannot open a data port: {e}"));
            }
        }
    }

    fn on_data(&mut self, ctx: &mut Ctx, conn: ConnId, input: &[u8]) -> usize {
        if let Some(d) = data_session(ctx, conn) {
            return match d.transfer.as_mut() {
                Some(t @ Transfer { kind: Kind::Stor, .. }) => {
                    let result = std::fs::OpenOptions::new().write(true).open(&t.path).and_then(
                        |mut file| {
                            file.seek(SeekFrom::Start(t.offset + t.bytes))?;
                            file.write_all(input)
                        },
                    );
                    match result {
                        Ok(()) => t.bytes += input.len() as u64,
                        Err(e) => {
                            self.finished(ctx, conn, &format!("451 Write failed: {e}"));
                            ctx.close(conn);
                        }
                    }
                    input.len()
                }
                // Data from the client before an upload was asked for waits for it; on a
                // download's connection it is discarded.
                None => 0,
                Some(_) => input.len(),
            };
        }
        let line = match LINES.next(input) {
            Ok(Some(line)) => line,
            Ok(None) => return 0,
            Err(too_long) => {
                reply(ctx, conn, &format!("500 {too_long}"));
                ctx.close(conn);
                return input.len();
            }
        };
        let text = String::from_utf8_lossy(line.payload).into_owned();
        ctx.with_session(conn, |ctx, session: &mut Conn| {
            if let Conn::Control(s) = session {
                self.command(ctx, conn, s, &text);
            }
        });
        line.consumed
    }

    fn on_stream_end(&mut self, ctx: &mut Ctx, conn: ConnId, end: StreamEnd) {
        // A download or a listing: the data connection closes after its last byte.
        let sent = match &end {
            StreamEnd::Done { bytes }
            | StreamEnd::Failed { bytes, .. }
            | StreamEnd::Gone { bytes } => *bytes,
        };
        // A download's stream is the whole of it, or (under a rate limit) one slice.
        let mut more = false;
        if let Some(Data { transfer: Some(t), .. }) = data_session(ctx, conn) {
            t.bytes += sent;
            more = matches!(t.kind, Kind::Retr { len } if t.bytes < len);
        }
        match end {
            StreamEnd::Done { .. } if more => {
                if let Some(user) = Self::user_of(ctx, conn) {
                    self.next_slice(ctx, conn, &user);
                }
            }
            StreamEnd::Done { .. } => {
                ctx.close(conn);
                self.finished(ctx, conn, "226 Transfer complete");
            }
            StreamEnd::Failed { error, .. } => {
                ctx.close(conn);
                self.finished(ctx, conn, &format!("451 Transfer failed: {error}"));
            }
            StreamEnd::Gone { .. } => {
                self.finished(ctx, conn, "426 Connection closed; transfer aborted")
            }
        }
    }

    fn on_disconnect(&mut self, ctx: &mut Ctx, conn: ConnId) {
        match ctx.session::<Conn>(conn) {
            // An upload ends when its client closes the data connection.
            Conn::Data(d) => {
                let code = match d.transfer {
                    Some(Transfer { kind: Kind::Stor, .. }) => "226 Transfer complete",
                    _ => "426 Connection closed; transfer aborted",
                };
                let control_id = d.control;
                self.finished(ctx, conn, code);
                if let Some(s) = control(ctx, control_id)
                    && s.data == Some(conn)
                {
                    s.data = None;
                }
            }
            Conn::Control(_) => {
                ctx.cancel_timer(conn);
                ctx.with_session(conn, |ctx, session: &mut Conn| {
                    if let Conn::Control(s) = session {
                        self.drop_data(ctx, s);
                    }
                });
            }
        }
    }
}

impl Ftp {
    /// Arms control connection `conn`'s idle timer to fire in `after_ms` (nothing when the
    /// timeout is off).
    fn arm_idle(&self, ctx: &mut Ctx, conn: ConnId, after_ms: u64) {
        if self.config.idle_ms > 0 {
            ctx.set_timer(conn, Duration::from_millis(after_ms));
        }
    }
}

tasuki_guest::export!(Ftp);

#[cfg(test)]
mod tests;

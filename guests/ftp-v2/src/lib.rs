//! The FTP server, release 2: RFC 959 with passive data connections (`PASV`, and RFC 2428's
//! `EPSV`), serving one directory the host grants, and RFC 3659's extensions: `REST` (resume a
//! download or an upload), `MDTM`, `MLST` and `MLSD`; and `APPE`.
//!
//! ```text
//! tasuki run ftp_v2.wasm --listen 127.0.0.1:2121 --dir ./served::/srv \
//!     --data-ports 50000-50100 --arg user=alice:secret --arg anonymous
//! ```
//!
//! Arguments (`--arg`, each once or more):
//! - `root=PATH`: the served directory as the guest sees it (default `/srv`): grant it with
//!   `--dir HOST::PATH`. Clients see it as `/`; no name leads out of it (`..` stops at `/`,
//!   and the host refuses links that point out of a granted directory).
//! - `user=NAME:PASSWORD`: a user who may read and write.
//! - `anonymous`: `USER anonymous` (or `ftp`) with any password may read, not write.
//!
//! Commands: `USER PASS SYST FEAT OPTS PWD XPWD CWD CDUP TYPE MODE STRU PASV EPSV LIST NLST
//! MLSD MLST RETR STOR APPE REST DELE MKD RMD SIZE MDTM NOOP QUIT`, with RFC 959's and RFC
//! 3659's reply codes. Active mode (`PORT`, `EPRT`)
//! is refused with 502: a component opens no connections, so data always comes to a port the
//! server listens on (passive mode, what `ftplib`, `curl` and `lftp` use by default).
//!
//! Each connection's state is its session ([`tasuki_guest::Ctx::session`]): a control
//! connection's login, working directory and transfer under way, a data connection's control
//! connection and how far its upload got. Sessions cross an upgrade with their connections, and
//! the data ports are listeners the host owns, so a client logged in, in a directory, or in the
//! middle of a transfer carries on under the next release. A download is a stream of the file by
//! path and offset ([`Source::File`]); an upload is written by reopening the file at the
//! offset reached, each time data arrives: no open file handle needs to cross.
//!
//! Release 2 keeps release 1's app state (version 1) and changes the sessions' shape (version
//! 2): a control session remembers a `REST` offset, and a transfer is one record of what it
//! moves, from which offset, and how many bytes it has moved. Release 1's sessions (version 1,
//! frozen in `ftp_states::v1`) are migrated as they arrive ([`Session::migrations`]), so a
//! client logged in under release 1, even in the middle of an upload, carries on under 2.

pub mod listing;
pub mod path;

use ftp_states::v1;
use serde::{Deserialize, Serialize};
use std::io::{Seek, SeekFrom, Write};
use tasuki_guest::frame::{Framing, Lines};
use tasuki_guest::{
    ConnId, ConnInfo, Ctx, ListenError, ListenerId, Migrations, Server, Session, SessionType,
    Source, StreamEnd,
};

/// Command lines of at most 4 KiB (RFC 959 sets no limit; paths are the long part).
const LINES: Lines = Lines::new(4096);

/// The greeting on a new control connection.
const BANNER: &str = "220 tasuki ftp ready\r\n";

/// What `FEAT` lists (RFC 2389): the extensions beyond RFC 959 this release implements.
const FEATURES: &[&str] =
    &["EPSV", "MDTM", "MLST type*;size*;modify*;perm*;", "PASV", "REST STREAM", "SIZE"];

/// The server's configuration, from `--arg`: rebuilt by each instance's `init`.
#[derive(Debug, Clone, Default)]
struct Config {
    root: String,
    users: Vec<(String, String)>,
    anonymous: bool,
}

impl Config {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut config = Config { root: "/srv".into(), ..Config::default() };
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
                None if arg == "anonymous" => config.anonymous = true,
                _ => {
                    return Err(format!(
                        "unknown argument `{arg}`: give root=PATH, user=NAME:PASSWORD or \
                         anonymous"
                    ));
                }
            }
        }
        Ok(config)
    }
}

/// The app state: the configuration (not transferred: each release reads it from its
/// arguments) and counters.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Ftp {
    #[serde(skip)]
    config: Config,
    /// Transfers completed: downloads (`RETR`), uploads (`STOR`), listings.
    downloads: u64,
    uploads: u64,
    listings: u64,
}

/// A connection's session: a control connection or a data connection.
#[derive(Debug, Serialize, Deserialize)]
pub enum Conn {
    /// A client's command channel.
    Control(Control),
    /// A data connection, accepted on a port a control connection opened.
    Data(Data),
}

impl Default for Conn {
    fn default() -> Self {
        Conn::Control(Control::default())
    }
}

impl Session for Conn {
    const VERSION: u32 = 2;

    fn migrations() -> Migrations<Self> {
        Migrations::none().from::<v1::Conn>(1, Conn::from_v1)
    }
}

impl Conn {
    /// Release 1's session as release 2 keeps it: no `REST` offset, transfers from offset 0.
    fn from_v1(old: v1::Conn) -> Self {
        match old {
            v1::Conn::Control(c) => Conn::Control(Control {
                user: c.user,
                login: c.login.map(|l| Login { name: l.name, write: l.write }),
                cwd: c.cwd,
                local_ip: c.local_ip,
                passive: c.passive.map(|p| Passive { listener: p.listener, extended: p.extended }),
                data: c.data,
                waiting: c.waiting.map(Transfer::from_v1),
                busy: c.busy,
                restart: 0,
            }),
            v1::Conn::Data(d) => {
                Conn::Data(Data { control: d.control, transfer: d.transfer.map(Transfer::from_v1) })
            }
        }
    }
}

/// A control connection's state.
#[derive(Debug, Serialize, Deserialize)]
pub struct Control {
    /// The name `USER` gave, waiting for `PASS`.
    pub user: Option<String>,
    /// Who logged in.
    pub login: Option<Login>,
    /// The working directory, as the client sees it.
    pub cwd: String,
    /// The IP address the client reached this server at (for `PASV`'s reply).
    pub local_ip: String,
    /// The data port asked for by the last `PASV` or `EPSV`, until a client connects to it.
    pub passive: Option<Passive>,
    /// A data connection that came and waits for a command.
    pub data: Option<ConnId>,
    /// A transfer command that waits for its data connection.
    pub waiting: Option<Transfer>,
    /// The data connection of the transfer under way.
    pub busy: Option<ConnId>,
    /// Where the next `RETR` or `STOR` starts, in bytes, as the last `REST` said (RFC 3659
    /// section 5); 0 for the beginning. Used by the next transfer command.
    pub restart: u64,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            user: None,
            login: None,
            cwd: "/".into(),
            local_ip: String::new(),
            passive: None,
            data: None,
            waiting: None,
            busy: None,
            restart: 0,
        }
    }
}

/// A logged-in user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Login {
    /// The name given.
    pub name: String,
    /// Whether they may change files (not anonymous).
    pub write: bool,
}

/// A data port asked for.
#[derive(Debug, Serialize, Deserialize)]
pub struct Passive {
    /// The listener.
    pub listener: ListenerId,
    /// `EPSV` (reply 229) rather than `PASV` (reply 227).
    pub extended: bool,
}

/// What a data connection carries: one record of what moves, from where, and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// What it is.
    pub kind: Kind,
    /// The file's path as the guest sees it (under the granted root); empty for a listing.
    pub path: String,
    /// Where in the file it starts, in bytes: `REST`'s offset, or the file's length for `APPE`.
    pub offset: u64,
    /// Bytes moved so far: written, for an upload (the next byte goes to `offset + bytes`);
    /// sent, for a download or listing, once its stream has ended.
    pub bytes: u64,
}

/// The kinds of transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A download (`RETR`) of `len` bytes from `offset`: the file's size when the command
    /// came, less the offset.
    Retr { len: u64 },
    /// A listing (`LIST`, `NLST`, `MLSD`), made when the command came; emptied once handed to
    /// the stream.
    List { listing: Vec<u8> },
    /// An upload (`STOR`, `APPE`).
    Stor,
}

impl Transfer {
    fn listing(listing: Vec<u8>) -> Self {
        Transfer { kind: Kind::List { listing }, path: String::new(), offset: 0, bytes: 0 }
    }

    fn from_v1(old: v1::Transfer) -> Self {
        match old {
            v1::Transfer::Retr { path, size } => {
                Transfer { kind: Kind::Retr { len: size }, path, offset: 0, bytes: 0 }
            }
            v1::Transfer::List { listing } => {
                Transfer { kind: Kind::List { listing }, path: String::new(), offset: 0, bytes: 0 }
            }
            v1::Transfer::Stor { path, written } => {
                Transfer { kind: Kind::Stor, path, offset: 0, bytes: written }
            }
        }
    }
}

/// A data connection's state.
#[derive(Debug, Serialize, Deserialize)]
pub struct Data {
    /// The control connection it serves.
    pub control: ConnId,
    /// The transfer it carries, once started.
    pub transfer: Option<Transfer>,
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
                    Ok(listing) => self.transfer(ctx, conn, s, Transfer::listing(listing)),
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
                    Ok(listing) => self.transfer(ctx, conn, s, Transfer::listing(listing)),
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
                let source =
                    Source::File { path: kept.path.clone(), offset: kept.offset, len: Some(*len) };
                ctx.stream(data, source);
            }
            Kind::List { listing } => {
                reply(ctx, conn, "150 Here comes the listing");
                // The bytes go into the stream: the session need not hold them twice.
                ctx.stream(data, Source::Bytes(std::mem::take(listing)));
            }
            Kind::Stor => reply(ctx, conn, "150 Ready to receive"),
        }
        if let Some(d) = data_session(ctx, data) {
            d.transfer = Some(kept);
        }
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
    const STATE_VERSION: u32 = 1;

    fn session_type() -> Option<SessionType> {
        Some(SessionType::of::<Conn>())
    }

    fn init(&mut self, _: &mut Ctx, args: &[String]) -> Result<(), String> {
        self.config = Config::parse(args)?;
        Ok(())
    }

    fn resumed(&mut self, _: &mut Ctx, fresh: Self) {
        self.config = fresh.config;
    }

    fn on_connect(&mut self, ctx: &mut Ctx, conn: &ConnInfo) {
        let Some(listener) = conn.listener_id else {
            let local_ip = conn.listener.rsplit_once(':').map_or("", |(ip, _)| ip).to_string();
            *ctx.session::<Conn>(conn.id) =
                Conn::Control(Control { local_ip, ..Control::default() });
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
        if let Some(Data { transfer: Some(t), .. }) = data_session(ctx, conn) {
            t.bytes = sent;
        }
        match end {
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
                ctx.with_session(conn, |ctx, session: &mut Conn| {
                    if let Conn::Control(s) = session {
                        self.drop_data(ctx, s);
                    }
                });
            }
        }
    }
}

tasuki_guest::export!(Ftp);

#[cfg(test)]
mod tests;

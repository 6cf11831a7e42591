//! FTP release 3 (`guests/ftp-v3`, 3.0.0): app state version 2, sessions version 3. Release 3
//! keeps its sessions in these types directly ([`Conn`] is its [`Session`]); its app state is
//! its own type, which encodes as [`Ftp`] does.

use crate::{v1, v2};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tasuki_guest::{ConnId, Migrations, Session};

pub use crate::v2::{Data, Kind, Login, Passive, Transfer};

/// The app state (section `ftp`, version 2): release 1's counters, and each user's download
/// allowance. Release 3 also holds its configuration, skipped (not encoded).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ftp {
    /// Downloads completed (`RETR`).
    pub downloads: u64,
    /// Uploads completed (`STOR`, `APPE`).
    pub uploads: u64,
    /// Listings sent (`LIST`, `NLST`, `MLSD`).
    pub listings: u64,
    /// Per user name, the allowance all their downloads draw from.
    pub users: BTreeMap<String, Allowance>,
}

impl From<v1::Ftp> for Ftp {
    /// Release 1 and 2's app state as release 3 reads it: the counters, no allowance spent.
    fn from(old: v1::Ftp) -> Self {
        Ftp {
            downloads: old.downloads,
            uploads: old.uploads,
            listings: old.listings,
            users: BTreeMap::new(),
        }
    }
}

/// A token bucket: `tokens` bytes may be sent now; it refills at the configured rate up to
/// one second's worth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowance {
    /// Bytes that may be sent now.
    pub tokens: u64,
    /// When `tokens` was last brought up to date, Unix ms (the host's clock).
    pub at_ms: u64,
}

/// A connection's session (version 3): a control connection or a data connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Sessions version 3; reads 2 and 1 (through 2).
    const VERSION: u32 = 3;

    fn migrations() -> Migrations<Self> {
        Migrations::none()
            .from::<v2::Conn>(2, Conn::from_v2)
            .from::<v1::Conn>(1, |old| Conn::from_v2(old.into()))
    }
}

impl Conn {
    /// Release 2's session as release 3 keeps it: the last command's time unknown (0), so
    /// that release 3's `resumed` starts the idle clock at the upgrade.
    pub fn from_v2(old: v2::Conn) -> Self {
        match old {
            v2::Conn::Control(c) => Conn::Control(Control {
                user: c.user,
                login: c.login,
                cwd: c.cwd,
                local_ip: c.local_ip,
                passive: c.passive,
                data: c.data,
                waiting: c.waiting,
                busy: c.busy,
                restart: c.restart,
                last_command_ms: 0,
            }),
            v2::Conn::Data(d) => Conn::Data(d),
        }
    }
}

/// A control connection's state: release 2's, and when its last command came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// When the last command came (or the connection, or the upgrade that brought the session
    /// from a release without it), Unix ms: the idle timeout counts from here.
    pub last_command_ms: u64,
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
            last_command_ms: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Release 3's bytes for a control session whose last command came at 1,000 ms, and for
    /// an app state with one user's allowance.
    #[test]
    fn release_3_state_and_sessions_encode_field_by_field() {
        let control = Conn::Control(Control { last_command_ms: 1000, ..Control::default() });
        let bytes = [0, 0, 0, 1, b'/', 0, 0, 0, 0, 0, 0, 0xe8, 0x07];
        assert_eq!(postcard::to_allocvec(&control).unwrap(), bytes);
        assert_eq!(postcard::from_bytes::<Conn>(&bytes).unwrap(), control);
        let mut state = Ftp { downloads: 1, uploads: 2, listings: 3, users: BTreeMap::new() };
        state.users.insert("al".into(), Allowance { tokens: 5, at_ms: 6 });
        let bytes = [1, 2, 3, 1, 2, b'a', b'l', 5, 6];
        assert_eq!(postcard::to_allocvec(&state).unwrap(), bytes);
        assert_eq!(postcard::from_bytes::<Ftp>(&bytes).unwrap(), state);
    }
}

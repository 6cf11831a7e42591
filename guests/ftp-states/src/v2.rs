//! FTP release 2 (`releases/ftp_v2.wasm`, 2.0.0): app state version 1 (as release 1's,
//! [`crate::v1::Ftp`]), sessions version 2.

use serde::{Deserialize, Serialize};
use tasuki_guest::ConnId;

pub use crate::v1::{Ftp, Login, Passive};

/// A connection's session (sessions version 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Conn {
    /// A client's command channel.
    Control(Control),
    /// A data connection, accepted on a port a control connection opened.
    Data(Data),
}

/// A control connection's state: release 1's, and a `REST` offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    /// The name `USER` gave, waiting for `PASS`.
    pub user: Option<String>,
    /// Who logged in.
    pub login: Option<Login>,
    /// The working directory, as the client sees it.
    pub cwd: String,
    /// The IP address the client reached the server at (for `PASV`'s reply).
    pub local_ip: String,
    /// The data port asked for by the last `PASV` or `EPSV`, until a client connects to it.
    pub passive: Option<Passive>,
    /// A data connection that came and waits for a command.
    pub data: Option<ConnId>,
    /// A transfer command that waits for its data connection.
    pub waiting: Option<Transfer>,
    /// The data connection of the transfer under way.
    pub busy: Option<ConnId>,
    /// Where the next `RETR` or `STOR` starts, in bytes (`REST`); 0 for the beginning.
    pub restart: u64,
}

/// What a data connection carries: what moves, from where, and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// What it is.
    pub kind: Kind,
    /// The file's path as the guest sees it; empty for a listing.
    pub path: String,
    /// Where in the file it starts, in bytes.
    pub offset: u64,
    /// Bytes moved so far: written, for an upload; sent, for a download or listing, once its
    /// stream has ended (release 2 streams a download whole).
    pub bytes: u64,
}

/// The kinds of transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A download of `len` bytes from the transfer's offset.
    Retr {
        /// Bytes to send.
        len: u64,
    },
    /// A listing (emptied once handed to the stream).
    List {
        /// The listing's bytes.
        listing: Vec<u8>,
    },
    /// An upload (`STOR`, `APPE`).
    Stor,
}

/// A data connection's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data {
    /// The control connection it serves.
    pub control: ConnId,
    /// The transfer it carries, once started.
    pub transfer: Option<Transfer>,
}

impl From<crate::v1::Conn> for Conn {
    /// Release 1's session as release 2 read it (its migration): no `REST` offset, transfers
    /// from offset 0, an upload's bytes so far kept as its count.
    fn from(old: crate::v1::Conn) -> Self {
        match old {
            crate::v1::Conn::Control(c) => Conn::Control(Control {
                user: c.user,
                login: c.login,
                cwd: c.cwd,
                local_ip: c.local_ip,
                passive: c.passive,
                data: c.data,
                waiting: c.waiting.map(Transfer::from),
                busy: c.busy,
                restart: 0,
            }),
            crate::v1::Conn::Data(d) => {
                Conn::Data(Data { control: d.control, transfer: d.transfer.map(Transfer::from) })
            }
        }
    }
}

impl From<crate::v1::Transfer> for Transfer {
    fn from(old: crate::v1::Transfer) -> Self {
        match old {
            crate::v1::Transfer::Retr { path, size } => {
                Transfer { kind: Kind::Retr { len: size }, path, offset: 0, bytes: 0 }
            }
            crate::v1::Transfer::List { listing } => {
                Transfer { kind: Kind::List { listing }, path: String::new(), offset: 0, bytes: 0 }
            }
            crate::v1::Transfer::Stor { path, written } => {
                Transfer { kind: Kind::Stor, path, offset: 0, bytes: written }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Release 2's bytes for a control session with a `REST` offset of 300, and for an upload
    /// at offset 2 with 5 bytes written.
    #[test]
    fn release_2_sessions_decode_field_by_field() {
        let control = Conn::Control(Control {
            user: None,
            login: None,
            cwd: "/".into(),
            local_ip: String::new(),
            passive: None,
            data: Some(4),
            waiting: None,
            busy: None,
            restart: 300,
        });
        let bytes = [0, 0, 0, 1, b'/', 0, 0, 1, 4, 0, 0, 0xac, 0x02];
        assert_eq!(postcard::to_allocvec(&control).unwrap(), bytes);
        assert_eq!(postcard::from_bytes::<Conn>(&bytes).unwrap(), control);
        let data = Conn::Data(Data {
            control: 7,
            transfer: Some(Transfer { kind: Kind::Stor, path: "/f".into(), offset: 2, bytes: 5 }),
        });
        let bytes = [1, 7, 1, 2, 2, b'/', b'f', 2, 5];
        assert_eq!(postcard::to_allocvec(&data).unwrap(), bytes);
        assert_eq!(postcard::from_bytes::<Conn>(&bytes).unwrap(), data);
    }
}

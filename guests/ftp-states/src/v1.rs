//! FTP release 1 (`releases/ftp_v1.wasm`, 1.0.0): app state version 1, sessions version 1.

use serde::{Deserialize, Serialize};
use tasuki_guest::{ConnId, ListenerId};

/// The app state (section `ftp`, version 1): counters of completed transfers. Release 1 also
/// held its configuration, skipped (not encoded).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ftp {
    /// Downloads completed (`RETR`).
    pub downloads: u64,
    /// Uploads completed (`STOR`).
    pub uploads: u64,
    /// Listings sent (`LIST`, `NLST`).
    pub listings: u64,
}

/// A connection's session (sessions version 1): a control connection or a data connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Conn {
    /// A client's command channel.
    Control(Control),
    /// A data connection, accepted on a port a control connection opened.
    Data(Data),
}

/// A control connection's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    /// The name `USER` gave, waiting for `PASS`.
    pub user: Option<String>,
    /// Who logged in.
    pub login: Option<Login>,
    /// The working directory, as the client sees it (`/` is the served directory).
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
}

/// A logged-in user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    /// The name given.
    pub name: String,
    /// Whether they may change files (not anonymous).
    pub write: bool,
}

/// A data port asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Passive {
    /// The listener.
    pub listener: ListenerId,
    /// `EPSV` (reply 229) rather than `PASV` (reply 227).
    pub extended: bool,
}

/// What a data connection carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transfer {
    /// A file to send, by its path on disk and its size when the command came.
    Retr {
        /// The path as the guest sees it (under the granted root).
        path: String,
        /// Bytes to send.
        size: u64,
    },
    /// A listing, made when the command came (emptied once handed to the stream).
    List {
        /// The listing's bytes.
        listing: Vec<u8>,
    },
    /// A file to write, by its path on disk, and the bytes written so far (from offset 0).
    Stor {
        /// The path as the guest sees it.
        path: String,
        /// Bytes written.
        written: u64,
    },
}

/// A data connection's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Data {
    /// The control connection it serves.
    pub control: ConnId,
    /// The transfer it carries, once started.
    pub transfer: Option<Transfer>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Release 1's bytes for a logged-in control session in `/docs` with a download waiting on
    /// port 3, and for the data connection of an upload 5 bytes in: what `ftp_v1.wasm` writes
    /// (postcard: variant index, then fields in order; strings and byte lists length-first,
    /// integers as varints).
    #[test]
    fn release_1_sessions_decode_field_by_field() {
        let control = Conn::Control(Control {
            user: None,
            login: Some(Login { name: "al".into(), write: true }),
            cwd: "/d".into(),
            local_ip: "1".into(),
            passive: Some(Passive { listener: 3, extended: true }),
            data: None,
            waiting: Some(Transfer::Retr { path: "/p".into(), size: 300 }),
            busy: None,
        });
        let bytes = [
            0, // Control
            0, // user: None
            1, 2, b'a', b'l', 1, // login
            2, b'/', b'd', // cwd
            1, b'1', // local_ip
            1, 3, 1, // passive
            0, // data
            1, 0, 2, b'/', b'p', 0xac, 0x02, // waiting: Retr, size 300
            0,    // busy
        ];
        assert_eq!(postcard::to_allocvec(&control).unwrap(), bytes);
        assert_eq!(postcard::from_bytes::<Conn>(&bytes).unwrap(), control);
        let data = Conn::Data(Data {
            control: 7,
            transfer: Some(Transfer::Stor { path: "/f".into(), written: 5 }),
        });
        let bytes = [1, 7, 1, 2, 2, b'/', b'f', 5];
        assert_eq!(postcard::to_allocvec(&data).unwrap(), bytes);
        assert_eq!(postcard::from_bytes::<Conn>(&bytes).unwrap(), data);
    }
}

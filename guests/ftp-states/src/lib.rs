//! The state and session types of the FTP server's released versions, frozen: one module per
//! release, each holding exactly the serde types its app state (section `ftp`) and its
//! sessions (section `tasuki.sessions`) were encoded with.
//!
//! The releases themselves are the components in `releases/` (`ftp_v1.wasm`, …); their server
//! code is gone from the source tree once frozen (release 1: commit 91b5ddd, `guests/ftp-v1`;
//! release 2: commit e2edeaf, `guests/ftp-v2`), and these types are all of it that stays. Whatever reads an old release's
//! state or sessions — a later release's migrations, the transformers in `guests/transforms/`,
//! tests — uses these.
//!
//! Release 3 (`guests/ftp-v3`) is in development: its types ([`v3`]) may change until it is
//! frozen, and are frozen with it.
//!
//! **Never change a type here** of a frozen release. Postcard is not self-describing: a value is read field by
//! field, in order, with each enum variant known by its index, so one changed, reordered or
//! added field or variant silently misreads every session that release ever wrote. A new shape
//! is a new version, in a new module. The tests pin each release's bytes.

pub mod v1;
pub mod v2;
pub mod v3;

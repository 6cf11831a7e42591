//! RESP2 and RESP3, the Redis protocol, as every release of the key-value guest speaks it.
//!
//! The codec is shared so that two releases can never disagree about the wire: a request that
//! v1 had half-received when it was swapped out is finished by v2's parser, byte for byte the
//! same. It follows redis-server's own behaviour (networking.c, util.c) rather than the RESP
//! specification where the two differ, because the clients we want to serve were tested
//! against redis-server.
//!
//! # Layout
//! - [`request`]: parses requests, multibulk (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) and inline
//!   (`GET k\r\n`, what a telnet user types), with every client-controlled size bounded.
//! - [`parser`]: [`Parser`], the same requests parsed incrementally: it remembers where a
//!   partly received request stands, so a large one costs time linear in its bytes. Release 4
//!   keeps one per connection, in the state that crosses an upgrade.
//! - [`reply`]: encodes replies into the output buffer the SDK hands to the host, in RESP2 or,
//!   for a connection that said `HELLO 3`, RESP3.
//! - [`glob`]: the pattern matching `KEYS` and `CONFIG GET` use (redis's `stringmatchlen`).
//! - [`int`]: strict integer parsing (redis's `string2ll`) and allocation-free formatting.
//! - `fuzzing` (feature `fuzzing`, and in tests): the properties the parsers must hold for any
//!   bytes, which the `resp_request` fuzz target checks.
//!
//! [`parse`] is stateless: it is handed everything a connection has sent that is not consumed
//! yet, and either takes one whole request off the front or says it needs more. [`Parser`] is
//! handed the same and remembers how far it got.
#![deny(missing_docs)]

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod glob;
pub mod int;
pub mod parser;
pub mod reply;
pub mod request;

pub use glob::{glob_match, glob_match_nocase};
pub use int::{parse_i64, write_i64};
pub use parser::Parser;
pub use reply::Protocol;
pub use request::{
    Arg, MAX_BULK_LEN, MAX_INLINE_LEN, MAX_MULTIBULK_LEN, ProtocolError, max_bulk_len, parse,
    parse_into, set_max_bulk_len,
};

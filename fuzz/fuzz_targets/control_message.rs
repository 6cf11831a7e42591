//! Any bytes a client writes to the control socket: decoding must answer or refuse, never panic,
//! and never allocate more than the message limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tasuki::control::{Request, Response, decode_message};

fuzz_target!(|data: &[u8]| {
    let _ = decode_message::<Request>(&mut &data[..]);
    let _ = decode_message::<Response>(&mut &data[..]);
});

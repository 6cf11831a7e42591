//! The control socket under abuse: garbage, oversized and stalled clients get an error or are
//! dropped, a socket others could reach is not used, and the host serves on throughout.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use tasuki::control::{self, ControlError, Request, Response};
use tasuki::limits::{CONTROL_READ_TIMEOUT, MAX_CONTROL_MESSAGE};
use tasuki_tests::{TestHost, artifacts};

fn answer(stream: &mut UnixStream) -> Option<Response> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    control::decode_message(stream).ok()
}

fn still_serving(host: &TestHost) {
    let mut client = host.client();
    let pong: String = redis::cmd("PING").query(&mut client).unwrap();
    assert_eq!(pong, "PONG");
    assert_eq!(host.status().app.to_string(), "kv 1.0.0");
}

#[test]
fn garbage_gets_an_error_answer() {
    let host = TestHost::start(artifacts::KV_V1);
    let mut stream = UnixStream::connect(&host.control).unwrap();
    stream.write_all(&[0, 0, 0, 5, 0xff, 0xfe, 0xfd, 0xfc, 0xfb]).unwrap();
    match answer(&mut stream) {
        Some(Response::Failed(reason)) => assert!(reason.contains("bad request"), "{reason}"),
        other => panic!("expected an error answer, got {other:?}"),
    }
    still_serving(&host);
}

#[test]
fn an_oversized_request_is_refused_before_it_is_read() {
    let host = TestHost::start(artifacts::KV_V1);
    let mut stream = UnixStream::connect(&host.control).unwrap();
    let huge = (MAX_CONTROL_MESSAGE as u32 + 1).to_be_bytes();
    stream.write_all(&huge).unwrap();
    match answer(&mut stream) {
        Some(Response::Failed(reason)) => assert!(reason.contains("exceeds the limit"), "{reason}"),
        other => panic!("expected an error answer, got {other:?}"),
    }
    still_serving(&host);
}

#[test]
fn a_client_that_stalls_is_dropped_and_does_not_block_others() {
    let host = TestHost::start(artifacts::KV_V1);
    let mut stalled = UnixStream::connect(&host.control).unwrap();
    stalled.write_all(&[0, 0, 0, 9, 1]).unwrap(); // a length, then nothing
    // Others are served meanwhile.
    let started = Instant::now();
    assert_eq!(host.status().app.to_string(), "kv 1.0.0");
    assert!(started.elapsed() < Duration::from_secs(2));
    // And the stalled one is hung up on after the read timeout.
    stalled.set_read_timeout(Some(CONTROL_READ_TIMEOUT * 3)).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(stalled.read(&mut buf).unwrap_or(0), 0, "closed by the host");
    still_serving(&host);
}

#[test]
fn a_socket_others_can_reach_is_not_used() {
    let host = TestHost::start(artifacts::KV_V1);
    let mode = std::fs::metadata(&host.control).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the host creates it owner-only");

    std::fs::set_permissions(&host.control, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = control::request(&host.control, &Request::Status).unwrap_err();
    assert!(matches!(err, ControlError::Insecure { .. }), "{err}");
    assert!(err.to_string().contains("mode is 666"), "{err}");
    std::fs::set_permissions(&host.control, std::fs::Permissions::from_mode(0o600)).unwrap();
    still_serving(&host);
}

#[test]
fn a_socket_owned_by_another_user_is_not_used() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: changing a file's owner needs root");
        return;
    }
    let host = TestHost::start(artifacts::KV_V1);
    let nobody = rustix::process::Uid::from_raw(65534);
    rustix::fs::chown(&host.control, Some(nobody), None).unwrap();
    let err = control::request(&host.control, &Request::Status).unwrap_err();
    assert!(err.to_string().contains("belongs to uid 65534"), "{err}");
}

#[test]
fn a_missing_socket_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody-home.sock");
    let err = control::request(&path, &Request::Status).unwrap_err();
    assert!(err.to_string().contains("no tasuki host is listening at"), "{err}");
}

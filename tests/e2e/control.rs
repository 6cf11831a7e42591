//! The control socket under abuse: garbage, oversized and stalled clients get an error or are
//! dropped, a socket others could reach is not used, and the host serves on throughout.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
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

/// A frame header of protocol `version` announcing `len` bytes of body.
fn header(version: u32, len: u32) -> Vec<u8> {
    let mut bytes = control::FRAME_MAGIC.to_vec();
    bytes.extend_from_slice(&version.to_be_bytes());
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes
}

#[test]
fn garbage_gets_an_error_answer() {
    let host = TestHost::start(artifacts::KV_V1);
    let mut stream = UnixStream::connect(&host.control).unwrap();
    let mut garbage = header(control::PROTOCOL_VERSION, 5);
    garbage.extend_from_slice(&[0xff, 0xfe, 0xfd, 0xfc, 0xfb]);
    stream.write_all(&garbage).unwrap();
    match answer(&mut stream) {
        Some(Response::Failed(reason)) => assert!(reason.contains("bad request"), "{reason}"),
        other => panic!("expected an error answer, got {other:?}"),
    }
    still_serving(&host);
}

#[test]
fn a_client_of_another_protocol_version_is_told_both_versions() {
    let host = TestHost::start(artifacts::KV_V1);
    let mut stream = UnixStream::connect(&host.control).unwrap();
    stream.write_all(&header(99, 1)).unwrap();
    stream.write_all(&[0]).unwrap();
    match answer(&mut stream) {
        Some(Response::Failed(reason)) => {
            let expected =
                format!("control protocol 99, this host speaks {}", control::PROTOCOL_VERSION);
            assert!(reason.contains(&expected), "{reason}")
        }
        other => panic!("expected an error answer, got {other:?}"),
    }
    // A tasuki from before versioned frames (a length, then the body) is answered in its own
    // frame, with words it shows as they are.
    let mut old = UnixStream::connect(&host.control).unwrap();
    old.write_all(&[0, 0, 0, 1, 0]).unwrap();
    old.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut len = [0u8; 4];
    old.read_exact(&mut len).unwrap();
    let mut body = vec![0; u32::from_be_bytes(len) as usize];
    old.read_exact(&mut body).unwrap();
    let reason = String::from_utf8_lossy(&body);
    assert_eq!(body[0], 3, "Response::Failed, as an old tasuki numbers it: {reason}");
    assert!(reason.contains("use the tasuki binary the host was started with"), "{reason}");
    still_serving(&host);
}

#[test]
fn an_oversized_request_is_refused_before_it_is_read() {
    let host = TestHost::start(artifacts::KV_V1);
    let mut stream = UnixStream::connect(&host.control).unwrap();
    let huge = header(control::PROTOCOL_VERSION, MAX_CONTROL_MESSAGE as u32 + 1);
    stream.write_all(&huge).unwrap();
    match answer(&mut stream) {
        Some(Response::Failed(reason)) => assert!(reason.contains("exceeds the limit"), "{reason}"),
        other => panic!("expected an error answer, got {other:?}"),
    }
    still_serving(&host);
}

/// A client that sends a length and then nothing is hung up on once `CONTROL_READ_TIMEOUT`
/// passes, while others are served meanwhile. The hang-up must be a real close by the host: our
/// own read waits twice as long, and running out of patience first fails the test.
#[test]
fn a_client_that_stalls_is_dropped_and_does_not_block_others() {
    let host = TestHost::start(artifacts::KV_V1);
    let connected = Instant::now();
    let mut stalled = UnixStream::connect(&host.control).unwrap();
    stalled.write_all(&header(control::PROTOCOL_VERSION, 9)).unwrap(); // a header, then nothing
    // Others are served meanwhile.
    let started = Instant::now();
    assert_eq!(host.status().app.to_string(), "kv 1.0.0");
    assert!(started.elapsed() < Duration::from_secs(2));

    let patience = CONTROL_READ_TIMEOUT * 2;
    stalled.set_read_timeout(Some(patience)).unwrap();
    let mut buf = [0u8; 64];
    match stalled.read(&mut buf) {
        Ok(0) => {} // end of file: the host closed it
        Ok(n) => panic!("the host answered half a request: {:?}", &buf[..n]),
        // A close with our bytes unread shows as a reset on a Unix socket: a close too.
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("the stalled client is still connected after {patience:?}: not dropped")
        }
        Err(e) => panic!("reading from the stalled connection failed: {e}"),
    }
    let dropped_after = connected.elapsed();
    assert!(
        dropped_after >= CONTROL_READ_TIMEOUT,
        "dropped after {dropped_after:?}, before the {CONTROL_READ_TIMEOUT:?} a client is given"
    );
    still_serving(&host);
}

/// The bound is on the whole request: a client that trickles a byte at a time (each read well
/// within the timeout) is still dropped once `CONTROL_READ_TIMEOUT` has passed since it
/// connected, before its request is complete, so it cannot hold one of the few client slots.
#[test]
fn a_client_that_trickles_its_request_is_dropped_at_the_deadline_for_the_whole_request() {
    let host = TestHost::start(artifacts::KV_V1);
    let mut request = header(control::PROTOCOL_VERSION, 64);
    request.extend_from_slice(&[0; 64]);
    let step = Duration::from_millis(200);
    assert!(step * request.len() as u32 > CONTROL_READ_TIMEOUT * 2, "trickles past the bound");
    let mut trickler = UnixStream::connect(&host.control).unwrap();
    let connected = Instant::now();
    let mut sent = 0;
    for byte in &request {
        match trickler.write_all(&[*byte]) {
            Ok(()) => sent += 1,
            Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {
                break;
            }
            Err(e) => panic!("writing to the control socket failed: {e}"),
        }
        std::thread::sleep(step); // the trickle itself, not a synchronisation
    }
    assert!(
        sent < request.len(),
        "the host read all {sent} trickled bytes over {:?}: the bound is not on the whole request",
        connected.elapsed()
    );
    assert!(connected.elapsed() >= CONTROL_READ_TIMEOUT, "dropped before its time");
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

/// The CLI refuses a control socket that belongs to another user: it could be a stranger's host
/// listening where ours should be. That needs a socket path leading to a file another uid owns,
/// and only root can give a file away, so the test makes one the way its user can and never
/// skips:
/// - with the right to chown (root, as in CI), it gives the host's own socket to `nobody`
///   (uid 65534) and back afterwards;
/// - without it, the socket path is a symbolic link to a file root owns (`/`): the CLI follows
///   links when it checks the owner as when it connects, so this is the same check on the same
///   kind of path, reached without privileges.
///
/// Either way the request must be refused naming the owner, and the same path leading to a
/// socket of ours again must work: the refusal was about the owner, nothing else.
#[test]
fn a_socket_owned_by_another_user_is_not_used() {
    let host = TestHost::start(artifacts::KV_V1);
    let me = rustix::process::geteuid().as_raw();
    // nobody's uid, unless that is who runs the test.
    let stranger = rustix::process::Uid::from_raw(if me == 65534 { 65533 } else { 65534 });
    let links = tempfile::tempdir().unwrap();
    let (path, owner) = match rustix::fs::chown(&host.control, Some(stranger), None) {
        Ok(()) => (host.control.clone(), stranger.as_raw()),
        Err(rustix::io::Errno::PERM) => {
            let link = links.path().join("tasuki.sock");
            std::os::unix::fs::symlink("/", &link).unwrap();
            (link, std::fs::metadata("/").unwrap().uid())
        }
        Err(e) => panic!("chown {}: {e}", host.control.display()),
    };
    assert_ne!(owner, me, "the test needs a file another user owns");

    let err = control::request(&path, &Request::Status).unwrap_err();
    assert!(matches!(err, ControlError::Insecure { .. }), "{err}");
    assert!(err.to_string().contains(&format!("belongs to uid {owner}, not to you")), "{err}");

    if path == host.control {
        rustix::fs::chown(&host.control, Some(rustix::process::geteuid()), None).unwrap();
    } else {
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&host.control, &path).unwrap();
    }
    match control::request(&path, &Request::Status) {
        Ok(Response::Status(status)) => assert_eq!(status.app.to_string(), "kv 1.0.0"),
        other => panic!("our own socket, through the same path: {other:?}"),
    }
    still_serving(&host);
}

#[test]
fn a_missing_socket_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody-home.sock");
    let err = control::request(&path, &Request::Status).unwrap_err();
    assert!(err.to_string().contains("no tasuki host is listening at"), "{err}");
}

#[test]
fn the_host_stops_even_if_its_control_socket_file_was_deleted() {
    // An operator (or a script's cleanup) removes the socket's directory before stopping the
    // host: stopping must not wait for a connection that can no longer be made.
    let host = TestHost::start(artifacts::KV_V1);
    std::fs::remove_file(&host.control).unwrap();
    let (done, stopped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(host);
        let _ = done.send(());
    });
    stopped.recv_timeout(Duration::from_secs(10)).expect("the host stopped");
}

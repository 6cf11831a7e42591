//! The download server driven natively, with the host's output buffer modelled: a client that
//! reads slowly gets every byte, a window at a time.

use crate::{Download, generated};
use tasuki_guest::testing::{Effect, HostInfo, TestHost};

/// A host that queues at most 64 KiB per connection.
fn host() -> TestHost<Download> {
    let mut host = TestHost::<Download>::new();
    host.set_host_info(HostInfo { output_buffer: 64 << 10, ..HostInfo::default() });
    host
}

/// Reads `len` bytes from `conn`, 10,000 at a time, as a slow client would.
fn read_slowly(host: &mut TestHost<Download>, conn: u64, len: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < len {
        let read = host.read_some(conn, 10_000.min(len - got.len()));
        assert!(!read.is_empty(), "stuck after {} of {len} bytes", got.len());
        got.extend(read);
    }
    got
}

fn payload(len: u64) -> Vec<u8> {
    (0..len).map(generated).collect()
}

#[test]
fn a_large_payload_goes_a_window_at_a_time_and_the_next_request_waits_for_it() {
    let mut host = host();
    let a = host.connect();
    host.send(a, "GEN 1000000\nSTATS\n");
    // The host holds one window, not the payload.
    let sends = host.take_effects();
    let queued: usize = sends
        .iter()
        .map(|e| if let Effect::Send { bytes, .. } = e { bytes.len() } else { 0 })
        .sum();
    assert!(queued <= 64 << 10, "{queued} bytes queued at once");
    assert!(host.waiting(a), "the SDK waits to be told the client read");

    assert_eq!(read_slowly(&mut host, a, 11), b"OK 1000000\n");
    assert!(read_slowly(&mut host, a, 1_000_000) == payload(1_000_000), "every byte, in order");
    assert_eq!(host.read(a), b"1 1000000\n", "STATS, answered after the payload");
}

#[test]
fn a_payload_half_sent_crosses_an_upgrade() {
    let mut host = host();
    let a = host.connect();
    host.send(a, "GEN 500000\n");
    let mut got = read_slowly(&mut host, a, 200_010);
    let mut host = host.upgrade::<Download>().expect("the same release reads its own state");
    got.extend(read_slowly(&mut host, a, 300_000));
    assert!(got[10..] == payload(500_000), "the new instance sent the rest");
    host.send(a, "STATS\n");
    assert_eq!(host.read(a), b"1 500000\n");
}

#[test]
fn a_file_is_sent_whole_and_a_missing_one_is_refused() {
    let dir = std::env::temp_dir().join(format!("download-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("file");
    std::fs::write(&path, payload(300_000)).unwrap();
    let mut host = host();
    let a = host.connect();
    host.send(a, format!("FILE {}\n", path.display()));
    assert_eq!(read_slowly(&mut host, a, 10), b"OK 300000\n");
    assert!(read_slowly(&mut host, a, 300_000) == payload(300_000));

    host.send(a, format!("FILE {}\n", dir.join("missing").display()));
    assert!(host.read_string(a).starts_with("ERR "));

    // A file cut short while it is sent: the client, promised more, is closed.
    host.send(a, format!("FILE {}\n", path.display()));
    read_slowly(&mut host, a, 100_000);
    std::fs::write(&path, payload(150_000)).unwrap();
    let rest = host.read(a);
    let rest = [rest, host.read(a)].concat();
    assert!(rest.len() < 210_000, "{} more bytes", rest.len());
    assert!(host.closed_by_app(a), "closed rather than left waiting for the rest");
    std::fs::remove_dir_all(&dir).unwrap();
}

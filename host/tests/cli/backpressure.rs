//! Back-pressure, measured on the `tasuki run` process: a client that reads slowly costs the
//! host about one `--output-buffer` of memory, however much it is owed. The guest hears when
//! the connection can take more (`on-writable`) and makes no more output until then.

use crate::support::{REPLY_TIMEOUT, Running, command, resident, tasuki_ok};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// `--output-buffer` of these tests, in KiB.
const OUTPUT_BUFFER_KIB: &str = "1024";

/// What the host's resident memory may grow by while it serves the slow reader: the output
/// buffer (1 MiB), what the guest builds for one window, the kernel's and allocator's slack.
/// Without back-pressure the figures are hundreds of MiB.
const GROWTH_BOUND: u64 = 48 << 20;

/// Waits until `tasuki status` shows a connection whose app waits for its client to read: the
/// guest spent its window and asked to be told (`net.notify-writable`). The event the tests
/// synchronise on before they read on. Meanwhile the host's resident memory must stay within
/// [`GROWTH_BOUND`] of `baseline`.
fn wait_for_a_waiting_connection(dir: &Path, host: &Running, baseline: u64) {
    let give_up = Instant::now() + REPLY_TIMEOUT;
    loop {
        let status = tasuki_ok(dir, &["status"]);
        let now = resident(host.child.id());
        assert!(now < baseline + GROWTH_BOUND, "{now} bytes resident, {baseline} before");
        if status.contains("output       1 connections waiting") {
            return;
        }
        assert!(
            Instant::now() < give_up,
            "no connection waits for its client to read:\n{status}\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The number before `what` in the status line `output`.
fn figure(status: &str, what: &str) -> u64 {
    let line = status.lines().find(|l| l.starts_with("output")).expect("an output line");
    let before = &line[..line.find(what).unwrap_or_else(|| panic!("`{what}` in {line}"))];
    before.split([' ', ';']).rfind(|w| !w.is_empty()).unwrap().parse().unwrap()
}

#[test]
fn a_gigabyte_streamed_to_a_slow_reader_costs_the_host_about_its_output_buffer() {
    const LEN: u64 = 1 << 30;
    let dir = tempfile::tempdir().unwrap();
    let download = tasuki_artifacts::DOWNLOAD;
    let args = ["run", download, "--listen", "127.0.0.1:0", "--output-buffer", OUTPUT_BUFFER_KIB];
    let host = Running::spawn(dir.path(), &args);
    let stream = TcpStream::connect(&host.addr).unwrap();
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    let mut client = BufReader::with_capacity(64 << 10, stream);

    // A first payload brings in the code and buffers a stream uses: the baseline is a host that
    // has streamed before.
    let read = |client: &mut BufReader<TcpStream>, len: u64, from: u64| {
        let mut buf = vec![0; 64 << 10];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(buf.len() as u64) as usize;
            client.read_exact(&mut buf[..n]).unwrap_or_else(|e| {
                panic!("read failed at byte {} of the payload: {e}\n{}", from + at, host.log())
            });
            for (i, &b) in buf[..n].iter().enumerate() {
                let offset = from + at + i as u64;
                assert_eq!(b, (offset % 251) as u8, "byte {offset} of the payload");
            }
            at += n as u64;
        }
    };
    let mut header = String::new();
    client.get_mut().write_all(b"GEN 8388608\n").unwrap();
    client.read_line(&mut header).unwrap();
    assert_eq!(header, "OK 8388608\n");
    read(&mut client, 8 << 20, 0);
    let baseline = resident(host.child.id());

    header.clear();
    client.get_mut().write_all(format!("GEN {LEN}\nSTATS\n").as_bytes()).unwrap();
    client.read_line(&mut header).unwrap();
    assert_eq!(header, format!("OK {LEN}\n"));
    // The client stops reading: the guest sends its window and waits to be told.
    wait_for_a_waiting_connection(dir.path(), &host, baseline);

    let mut at = 0;
    let mut peak = 0;
    while at < LEN {
        let piece = (LEN - at).min(64 << 20);
        read(&mut client, piece, at);
        at += piece;
        peak = peak.max(resident(host.child.id()));
    }
    assert!(peak < baseline + GROWTH_BOUND, "{peak} bytes resident, {baseline} before");
    header.clear();
    client.read_line(&mut header).unwrap();
    assert_eq!(header, format!("2 {}\n", LEN + (8 << 20)), "STATS, after the payload");

    let status = tasuki_ok(dir.path(), &["status"]);
    // A window is at most the 1 MiB buffer, so a gigabyte took at least a thousand of them.
    assert!(figure(&status, "on-writable calls") >= 1000, "{status}");
    assert!(status.contains("output       0 connections waiting"), "{status}");
}

/// The soak's finding (bench/soak): one client pipelining GETs of a 64 KiB value and reading
/// slowly made a single kv `on-data` call build 150–200 MiB of replies. kv answers a whole
/// batch per call; the SDK now offers it only as much input as the window's replies take.
#[test]
fn a_slow_reader_pipelining_gets_of_large_values_keeps_the_host_bounded() {
    const GETS: usize = 3000; // 3000 × 64 KiB: 188 MiB of replies to 66 KB of requests
    const VALUE: usize = 64 << 10;
    let dir = tempfile::tempdir().unwrap();
    let kv = tasuki_artifacts::KV_V4;
    let args = ["run", kv, "--listen", "127.0.0.1:0", "--output-buffer", OUTPUT_BUFFER_KIB];
    let host = Running::spawn(dir.path(), &args);
    let mut client = host.resp();
    let value: Vec<u8> = (0..VALUE).map(|i| b'a' + (i % 26) as u8).collect();
    client.call(&[b"SET", b"big", &value]);
    let get = command(&[b"GET", b"big"]);
    let reply: Vec<u8> = [format!("${VALUE}\r\n").as_bytes(), &value, b"\r\n"].concat();
    let mut buf = vec![0; reply.len()];
    // A first pipeline the client reads at once: the baseline has answered GETs before.
    client.stream().write_all(&get.repeat(40)).unwrap();
    for _ in 0..40 {
        client.stream().read_exact(&mut buf).unwrap();
        assert!(buf == reply);
    }
    let baseline = resident(host.child.id());

    client.stream().write_all(&get.repeat(GETS)).unwrap();
    client.stream().write_all(&command(&[b"PING"])).unwrap();
    wait_for_a_waiting_connection(dir.path(), &host, baseline);

    // Another client is served meanwhile.
    let mut other = host.resp();
    assert_eq!(other.call(&[b"STRLEN", b"big"]), crate::support::Reply::Int(VALUE as i64));

    let mut peak = 0;
    for i in 0..GETS {
        client
            .stream()
            .read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("reply {i} of {GETS} did not come: {e}\n{}", host.log()));
        assert!(buf == reply, "reply {i} is the value, whole");
        if i % 100 == 0 {
            peak = peak.max(resident(host.child.id()));
        }
    }
    let mut pong = [0; 7];
    client.stream().read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"+PONG\r\n", "the request after the pipeline, answered after it");
    assert!(peak < baseline + GROWTH_BOUND, "{peak} bytes resident, {baseline} before");

    let status = tasuki_ok(dir.path(), &["status"]);
    assert!(figure(&status, "on-writable calls") > 0, "{status}");
}

/// `tasuki test --output-buffer`: each on-writable is an event with a boundary of its own, so a
/// small buffer puts the upgrade of `--upgrade-at every` inside a pipeline's replies.
#[test]
fn tasuki_test_puts_boundaries_between_on_writable_calls() {
    let dir = tempfile::tempdir().unwrap();
    let value = "x".repeat(4096);
    let reply = format!("${}\\r\\n{value}\\r\\n", value.len());
    let trace = format!(
        "connect a\nsend a \"SET big {value}\\r\\n\"\nexpect a \"+OK\\r\\n\"\n\
         send a \"{}\"\nexpect a \"{}\"\nsend a \"PING\\r\\n\"\nexpect a \"+PONG\\r\\n\"\n",
        "GET big\\r\\n".repeat(100),
        reply.repeat(100)
    );
    std::fs::write(dir.path().join("pipeline.trace"), trace).unwrap();
    let kv = tasuki_artifacts::KV_V4;
    let run = |buffer: &str| {
        let args = ["test", "pipeline.trace", "--app", kv, "--upgrade", kv, "--output-buffer"];
        let out = crate::support::tasuki(dir.path(), &[&args[..], &[buffer]].concat());
        let shown = crate::support::text(&out.stdout);
        assert!(out.status.success(), "{shown}{}", crate::support::text(&out.stderr));
        let events = shown.split(", ").nth(1).and_then(|w| w.split(' ').next()).unwrap();
        events.parse::<usize>().unwrap_or_else(|e| panic!("{e}: {shown}"))
    };
    // Four client events; 400 KiB of replies at 32 KiB a window (and at most a slice's replies
    // over it, 28 KiB here) adds at least six on-writable calls.
    assert_eq!(run("8192"), 4);
    let events = run("32");
    assert!(events >= 4 + 6, "{events} events");
}

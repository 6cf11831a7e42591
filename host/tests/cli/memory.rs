//! Memory given back: `tasuki compact` swaps the instance for a fresh one of the same release,
//! and the host process's resident memory comes back down with it.

use crate::support::{Reply, Running, command, tasuki_ok};
use std::io::{Read, Write};

/// `VmRSS` of process `pid`, in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn after_flushall_a_compaction_gives_the_memory_back() {
    let dir = tempfile::tempdir().unwrap();
    // Automatic compaction off: this test asks for it.
    let host = Running::spawn(
        dir.path(),
        &["run", tasuki_artifacts::KV_V4, "--listen", "127.0.0.1:0", "--compact-below", "0"],
    );
    let mut client = host.resp();
    assert_eq!(client.call(&[b"PING"]), Reply::Status("PONG".into()));
    // The empty host's figure, once it has run a compaction: the code a compaction runs is
    // then resident in both figures (about 2 MiB of the binary's pages), and what is compared
    // is the memory that holds data.
    tasuki_ok(dir.path(), &["compact"]);
    let empty = resident_kib(host.child.id());

    // The case: 1M keys with 16-byte values, 1,000 to an MSET.
    let value = [b'v'; 16];
    let batches = 1000;
    for batch in 0..batches {
        let keys: Vec<Vec<u8>> =
            (0..1000).map(|i| format!("key:{:012}", batch * 1000 + i).into_bytes()).collect();
        let mut args: Vec<&[u8]> = vec![b"MSET"];
        for key in &keys {
            args.push(key);
            args.push(&value);
        }
        client.stream().write_all(&command(&args)).unwrap();
    }
    let mut replies = vec![0; batches * 5];
    client.stream().read_exact(&mut replies).unwrap();
    assert_eq!(replies, b"+OK\r\n".repeat(batches));
    assert_eq!(client.call(&[b"DBSIZE"]), Reply::Int(1_000_000));
    let loaded = resident_kib(host.child.id());
    assert!(loaded > empty + 40 * 1024, "loaded {loaded} KiB, empty {empty} KiB");

    assert_eq!(client.call(&[b"FLUSHALL"]), Reply::Status("OK".into()));
    let report = tasuki_ok(dir.path(), &["compact"]);
    assert!(report.contains("compacted kv 4.0.0 (requested)"), "{report}");
    assert!(report.contains("memory       heap"), "{report}");
    assert!(report.contains("connections  1 kept open"), "{report}");

    // The host is back to what it was empty (within 10%): the instance's garbage went with its
    // memory, and the host's own freed buffers went back to the kernel.
    let after = resident_kib(host.child.id());
    assert!(
        after <= empty + empty / 10,
        "{after} KiB after the compaction, {empty} KiB empty, {loaded} KiB loaded\n{}",
        host.log()
    );
    eprintln!("resident: empty {empty} KiB, loaded {loaded} KiB, compacted {after} KiB");
    // The same connection serves on.
    assert_eq!(client.call(&[b"SET", b"a", b"b"]), Reply::Status("OK".into()));
    assert_eq!(client.call(&[b"GET", b"a"]), Reply::Bulk(Some(b"b".to_vec())));
    let status = tasuki_ok(dir.path(), &["status"]);
    assert!(status.contains("compactions  2, last"), "{status}");
    assert!(status.contains("upgrades     0"), "{status}");
}

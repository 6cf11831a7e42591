//! Micro-benchmarks of the host's hot paths, through the public API, on the real kv v2 guest:
//!
//! - `event/*`: one `on-data` call into the guest and the effects it returns (PING, GET, SET,
//!   16 pipelined GETs), with no socket in the way; and `event/loopback_ping`, a PING round trip
//!   through a started [`Host`] on 127.0.0.1, kernel included.
//! - `state/*`: `export-state` and `import-state` of a kv store of N keys (~32 bytes of state per
//!   key), the two halves of an upgrade's pause, throughput in bytes of state.
//! - `instantiate/*`: a new instance of a compiled version (what an upgrade's prepare does before
//!   the pause), with and without `init` + `describe`; and `compile`, a component compiled from
//!   scratch (the host caches it, so an upgrade to a file seen before skips this).
//!
//! `cargo bench -p tasuki --bench hot_paths` (add `-- state` to run one group). Numbers are for
//! reading, never for failing a build.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tasuki::bindings::{ConnInfo, Snapshot};
use tasuki::instance::Instance;
use tasuki::limits::Limits;
use tasuki::runtime::Runtime;
use tasuki::sandbox::Sandbox;
use tasuki::store::Effect;
use tasuki::version::Version;
use tasuki::{Host, HostConfig};

const CONN: u64 = 1;

fn runtime() -> Runtime {
    Runtime::new(Limits::default(), Sandbox::default()).expect("engine")
}

fn version(runtime: &Runtime) -> Arc<Version> {
    Version::load(runtime, Path::new(tasuki_artifacts::KV_V2)).expect("kv v2 loads")
}

fn conn_info() -> ConnInfo {
    ConnInfo { id: CONN, listener: "127.0.0.1:6379".into(), peer: "127.0.0.1:50000".into() }
}

/// A started kv instance with one connection open.
fn instance(version: &Version) -> Instance {
    let mut instance = Instance::new(version).expect("instantiates");
    instance.init(&[]).expect("init");
    instance.on_connect(&conn_info()).expect("on_connect");
    instance.take_effects().for_each(drop);
    instance
}

fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Sends `request` and returns the reply bytes the guest queued.
fn call(instance: &mut Instance, request: &[u8]) -> usize {
    instance.on_data(CONN, request).expect("on_data");
    instance
        .take_effects()
        .map(|e| match e {
            Effect::Send(_, bytes) => bytes.len(),
            _ => 0,
        })
        .sum()
}

/// Loads `keys` keys with 16-byte values, as bench/run does.
fn fill(instance: &mut Instance, keys: u64) {
    let mut next = 0;
    while next < keys {
        let end = (next + 1000).min(keys);
        let pairs: Vec<(String, String)> =
            (next..end).map(|i| (format!("key:{i:012}"), format!("{i:016}"))).collect();
        let mut args: Vec<&[u8]> = vec![b"MSET"];
        for (k, v) in &pairs {
            args.push(k.as_bytes());
            args.push(v.as_bytes());
        }
        assert!(call(instance, &resp(&args)) > 0);
        next = end;
    }
}

fn event(c: &mut Criterion) {
    let runtime = runtime();
    let version = version(&runtime);
    let mut kv = instance(&version);
    call(&mut kv, &resp(&[b"SET", b"key:000000001", b"0000000000000001"]));

    let mut group = c.benchmark_group("event");
    group.throughput(Throughput::Elements(1));
    let ping = resp(&[b"PING"]);
    group.bench_function("on_data_ping", |b| b.iter(|| black_box(call(&mut kv, &ping))));
    let get = resp(&[b"GET", b"key:000000001"]);
    group.bench_function("on_data_get", |b| b.iter(|| black_box(call(&mut kv, &get))));
    let set = resp(&[b"SET", b"key:000000001", b"0000000000000002"]);
    group.bench_function("on_data_set", |b| b.iter(|| black_box(call(&mut kv, &set))));
    group.throughput(Throughput::Elements(16));
    let get16 = get.repeat(16);
    group.bench_function("on_data_get_x16", |b| b.iter(|| black_box(call(&mut kv, &get16))));

    // The same PING through a real host: accept, mio, read, the guest, write, kernel loopback.
    group.throughput(Throughput::Elements(1));
    let host = Host::start(HostConfig {
        app: tasuki_artifacts::KV_V2.into(),
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        control: None,
        args: Vec::new(),
        limits: Limits::default(),
        sandbox: Sandbox::default(),
        restore: None,
        ..HostConfig::default()
    })
    .expect("host starts");
    let mut stream = std::net::TcpStream::connect(host.local_addrs()[0]).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut reply = [0u8; 7];
    group.bench_function("loopback_ping", |b| {
        b.iter(|| {
            stream.write_all(&ping).unwrap();
            stream.read_exact(&mut reply).unwrap();
            assert_eq!(&reply, b"+PONG\r\n");
        })
    });
    group.finish();
    drop(stream);
    host.shutdown();
}

fn state(c: &mut Criterion) {
    let runtime = runtime();
    let version = version(&runtime);
    let mut group = c.benchmark_group("state");
    group.sample_size(10).measurement_time(Duration::from_secs(4));
    for keys in [1_000u64, 10_000, 100_000] {
        let mut old = instance(&version);
        fill(&mut old, keys);
        let snapshot: Snapshot = old.export_state().expect("export");
        let bytes = tasuki::instance::snapshot_bytes(&snapshot);
        group.throughput(Throughput::Bytes(bytes));
        group.bench_function(format!("export/{keys}_keys"), |b| {
            b.iter(|| black_box(old.export_state().expect("export")))
        });
        let live = vec![conn_info()];
        group.bench_function(format!("import/{keys}_keys"), |b| {
            b.iter_batched(
                || Instance::new(&version).and_then(|mut i| i.init(&[]).map(|()| i)).unwrap(),
                |mut new| {
                    new.import_state(&snapshot, &live).expect("import");
                    new // dropped outside the measurement
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn instantiate(c: &mut Criterion) {
    let engine = runtime();
    let kv = version(&engine);
    let mut group = c.benchmark_group("instantiate");
    group.bench_function("instance", |b| {
        b.iter_batched(
            || (),
            |()| Instance::new(&kv).expect("instantiates"),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("instance_init_describe", |b| {
        b.iter_batched(
            || (),
            |()| {
                let mut i = Instance::new(&kv).expect("instantiates");
                i.init(&[]).expect("init");
                black_box(i.describe().expect("describe"));
                i
            },
            BatchSize::PerIteration,
        )
    });
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.bench_function("compile", |b| {
        b.iter_batched(
            runtime, // a fresh engine each time: nothing cached
            |fresh| (version(&fresh), fresh),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = event, state, instantiate
}
criterion_main!(benches);

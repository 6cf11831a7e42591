//! Pre-copy end to end, without a host: an exporter changes its maps between the chunks it
//! hands out, a transformer rewrites them, and an importer must end with exactly the state the
//! exporter had when it finished. Exporter, transformer and importer each run on a thread of
//! their own, as they would be instances of their own.

use crate::runtime::Runtime;
use crate::runtime::bindings::tasuki::server::types::{Chunk, Snapshot};
use crate::{ConnId, Ctx, List, Map, Migrations, Server, Transform};
use serde::{Deserialize, Serialize};
use std::thread;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct App {
    counter: u64,
    words: Map<Vec<u8>, u64>,
    names: Map<u32, String>,
    extra: Option<Map<u8, u8>>,
    log: List<u64>,
}

impl Server for App {
    const NAME: &'static str = "app";
    const STATE_VERSION: u32 = 1;
    fn on_data(&mut self, _: &mut Ctx, _: ConnId, _: &[u8]) -> usize {
        0
    }
}

/// App's next release: `words` values become strings, by a migration or a transformer.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct AppV2 {
    counter: u64,
    words: Map<Vec<u8>, String>,
    names: Map<u32, String>,
    extra: Option<Map<u8, u8>>,
    log: List<String>,
}

impl AppV2 {
    fn from_v1(old: App) -> Result<Self, String> {
        Ok(AppV2 {
            counter: old.counter,
            words: old.words.convert(|_, n| Ok(format!("#{n}")))?,
            names: old.names,
            extra: old.extra,
            log: old.log.convert(|n| Ok(format!("@{n}")))?,
        })
    }
}

impl Server for AppV2 {
    const NAME: &'static str = "app";
    const STATE_VERSION: u32 = 2;
    fn on_data(&mut self, _: &mut Ctx, _: ConnId, _: &[u8]) -> usize {
        0
    }
    fn migrations() -> Migrations<Self> {
        Migrations::none().from_fallible::<App>(1, AppV2::from_v1)
    }
}

/// The same release step as a transformer.
struct V1ToV2;

impl Transform for V1ToV2 {
    const NAME: &'static str = "app-v1-to-v2";
    const SECTION: &'static str = "app";
    const FROM: u32 = 1;
    const TO: u32 = 2;
    type Old = App;
    type New = AppV2;
    fn transform(old: App) -> Result<AppV2, String> {
        AppV2::from_v1(old)
    }
}

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One change of every kind a server makes, picked at random.
fn mutate(app: &mut App, rng: &mut Rng) {
    if rng.below(3) == 0 {
        mutate_log(&mut app.log, rng);
        return;
    }
    let key = format!("k{}", rng.below(300)).into_bytes();
    match rng.below(100) {
        0..=34 => {
            app.words.insert(key, rng.next());
        }
        35..=54 => {
            app.words.remove(&key);
        }
        55..=69 => {
            if let Some(v) = app.words.get_mut(&key) {
                *v += 1;
            }
        }
        70..=74 => {
            *app.words.get_or_insert_with(key, || 7) += 1;
        }
        75..=79 => {
            let cut = rng.next();
            app.words.retain(|_, v| *v % 7 != cut % 7);
        }
        80..=84 => {
            app.names.insert(rng.below(50) as u32, format!("n{}", rng.next()));
        }
        85..=86 => {
            app.names.remove(&(rng.below(50) as u32));
        }
        87 => app.words.clear(),
        88 => app.names = Map::new(),
        89 => {
            for v in app.words.values_mut() {
                *v ^= 1;
            }
        }
        90..=92 => {
            let extra = app.extra.get_or_insert_with(Map::new);
            extra.insert(rng.below(20) as u8, rng.below(200) as u8);
        }
        93 => app.extra = None,
        _ => app.counter += 1,
    }
}

/// One change of every kind a list sees: a queue's and a log's ends, changes in place, and the
/// shifts that make it be copied again.
fn mutate_log(log: &mut List<u64>, rng: &mut Rng) {
    match rng.below(100) {
        0..=39 => log.push_back(rng.next()),
        40..=49 => log.push_front(rng.next()),
        50..=64 => drop(log.pop_front()),
        65..=74 => drop(log.pop_back()),
        75..=84 => {
            if !log.is_empty() {
                let i = rng.below(log.len() as u64) as usize;
                *log.get_mut(i).unwrap() += 1;
            }
        }
        85..=88 => log.truncate_front(rng.below(5) as usize),
        89..=91 => log.truncate(log.len().saturating_sub(rng.below(5) as usize)),
        92..=94 => {
            let i = rng.below(log.len() as u64 + 1) as usize;
            log.insert(i, 7);
        }
        95..=96 => {
            if !log.is_empty() {
                let i = rng.below(log.len() as u64) as usize;
                log.remove(i);
            }
        }
        97 => log.clear(),
        _ => {
            for v in log.iter_mut() {
                *v ^= 1;
            }
        }
    }
}

/// Exports `app` by pre-copy with `changes` random changes between chunks of `budget` bytes;
/// returns every chunk, the final snapshot, and the state at the finish.
fn export(seed: u64, changes: usize, budget: u64) -> (Vec<Vec<Chunk>>, Snapshot, App) {
    thread::spawn(move || {
        let mut rng = Rng(seed);
        let mut rt = Runtime::<App>::new("1.0.0");
        for _ in 0..2000 {
            mutate(rt.server_mut(), &mut rng);
        }
        rt.precopy_begin().unwrap();
        let mut batches = Vec::new();
        for step in 0.. {
            let batch = rt.precopy_next(budget).unwrap();
            batches.push(batch.chunks);
            if step >= changes && batch.pending == 0 {
                break;
            }
            if step < changes {
                for _ in 0..rng.below(4) {
                    mutate(rt.server_mut(), &mut rng);
                }
            }
            assert!(step < 100_000, "pre-copy does not converge");
        }
        let (last, snapshot) = rt.precopy_finish().unwrap();
        batches.push(last);
        (batches, snapshot, rt.server_mut().clone())
    })
    .join()
    .unwrap()
}

fn import<S: Server + Clone + Send>(batches: Vec<Vec<Chunk>>, snapshot: Snapshot) -> S {
    thread::spawn(move || {
        let mut rt = Runtime::<S>::new("2.0.0");
        for batch in batches {
            rt.import_chunks(batch).unwrap();
        }
        rt.import_state(snapshot, Vec::new()).unwrap();
        rt.server_mut().clone()
    })
    .join()
    .unwrap()
}

/// The server world's and the transformer world's bindings each have their own copy of the
/// shared types; the host moves the same values between them.
mod cross {
    use crate::runtime::bindings::tasuki::server::types as s;
    use crate::transform::bindings::tasuki::server::types as t;

    pub(super) fn chunk_in(c: s::Chunk) -> t::Chunk {
        t::Chunk { section: c.section, version: c.version, bytes: c.bytes }
    }
    pub(super) fn chunk_out(c: t::Chunk) -> s::Chunk {
        s::Chunk { section: c.section, version: c.version, bytes: c.bytes }
    }
    pub(super) fn snapshot_in(x: s::Snapshot) -> t::Snapshot {
        t::Snapshot {
            app: x.app,
            app_version: x.app_version,
            sections: x
                .sections
                .into_iter()
                .map(|s| t::Section { name: s.name, version: s.version, bytes: s.bytes })
                .collect(),
        }
    }
    pub(super) fn snapshot_out(x: t::Snapshot) -> s::Snapshot {
        s::Snapshot {
            app: x.app,
            app_version: x.app_version,
            sections: x
                .sections
                .into_iter()
                .map(|s| s::Section { name: s.name, version: s.version, bytes: s.bytes })
                .collect(),
        }
    }
}

fn transform(batches: Vec<Vec<Chunk>>, snapshot: Snapshot) -> (Vec<Vec<Chunk>>, Snapshot) {
    thread::spawn(move || {
        let batches: Vec<Vec<Chunk>> = batches
            .into_iter()
            .map(|b| {
                let b = b.into_iter().map(cross::chunk_in).collect();
                let out = crate::transform::run_chunks::<V1ToV2>(b).unwrap();
                out.into_iter().map(cross::chunk_out).collect()
            })
            .collect();
        let snapshot = crate::transform::run::<V1ToV2>(cross::snapshot_in(snapshot)).unwrap();
        (batches, cross::snapshot_out(snapshot))
    })
    .join()
    .unwrap()
}

fn v2_of(app: &App) -> AppV2 {
    AppV2::from_v1(app.clone()).unwrap()
}

#[test]
fn the_importer_ends_with_the_exporters_state_at_finish() {
    for seed in 1..=40 {
        for budget in [1, 64, 4096] {
            let (batches, snapshot, expected) = export(seed, 300, budget);
            let imported: App = import(batches, snapshot);
            assert_eq!(imported, expected, "seed {seed}, budget {budget}");
        }
    }
}

#[test]
fn collections_that_give_memory_back_mid_copy_still_arrive_whole() {
    // Deletes leave the map and the list at most 1/8 full, so they shrink (and move their
    // entries) while the pre-copy is half way through them.
    let (batches, snapshot, expected) = thread::spawn(|| {
        let mut rt = Runtime::<App>::new("1.0.0");
        for i in 0..2000u64 {
            rt.server_mut().words.insert(format!("k{i}").into_bytes(), i);
            rt.server_mut().log.push_back(i);
        }
        let full = (rt.server_mut().words.capacity(), rt.server_mut().log.capacity());
        rt.precopy_begin().unwrap();
        let mut batches = vec![rt.precopy_next(4096).unwrap().chunks];
        for i in (0..2000u64).filter(|i| i % 10 != 0) {
            rt.server_mut().words.remove(format!("k{i}").as_bytes());
            rt.server_mut().log.pop_front();
        }
        let app = rt.server_mut();
        assert!(app.words.capacity() < full.0 / 2, "the map kept {} slots", app.words.capacity());
        assert!(app.log.capacity() < full.1 / 2, "the list kept {} slots", app.log.capacity());
        loop {
            let batch = rt.precopy_next(4096).unwrap();
            batches.push(batch.chunks);
            if batch.pending == 0 {
                break;
            }
        }
        let (last, snapshot) = rt.precopy_finish().unwrap();
        batches.push(last);
        (batches, snapshot, rt.server_mut().clone())
    })
    .join()
    .unwrap();
    let imported: App = import(batches, snapshot);
    assert_eq!(imported, expected);
}

#[test]
fn a_migration_converts_each_chunk_as_it_arrives() {
    for seed in 1..=20 {
        let (batches, snapshot, expected) = export(seed, 200, 128);
        let imported: AppV2 = import(batches, snapshot);
        assert_eq!(imported, v2_of(&expected), "seed {seed}");
    }
}

#[test]
fn a_transformer_converts_each_chunk_as_it_crosses() {
    for seed in 1..=20 {
        let (batches, snapshot, expected) = export(seed, 200, 128);
        let (batches, snapshot) = transform(batches, snapshot);
        assert!(
            batches.iter().flatten().all(|c| c.version == 2),
            "every chunk is rewritten to version 2"
        );
        let imported: AppV2 = import(batches, snapshot);
        assert_eq!(imported, v2_of(&expected), "seed {seed}");
    }
}

#[test]
fn no_change_after_the_copy_means_nothing_pending() {
    let (batches, _, expected) = export(7, 0, 1 << 20);
    assert!(!expected.words.is_empty());
    // The first batch holds the skeleton and every record; the finish has nothing left.
    assert_eq!(batches.last().unwrap().len(), 0, "finish sends nothing more");
}

#[test]
fn a_map_serializes_as_a_hash_map_does() {
    let mut map = Map::new();
    let mut std_map = std::collections::HashMap::new();
    map.insert(b"a".to_vec(), 1u64);
    std_map.insert(b"a".to_vec(), 1u64);
    assert_eq!(postcard::to_allocvec(&map).unwrap(), postcard::to_allocvec(&std_map).unwrap());
    let back: Map<Vec<u8>, u64> =
        postcard::from_bytes(&postcard::to_allocvec(&std_map).unwrap()).unwrap();
    assert_eq!(back, map);
}

/// A transformer whose frozen type reads the map as pairs, as transformers written before
/// `Map` did.
struct ReadsPairs;

#[derive(Debug, Deserialize)]
struct AppAsPairs {
    counter: u64,
    words: Vec<(Vec<u8>, u64)>,
}

#[derive(Debug, Serialize)]
struct Out {
    counter: u64,
}

impl Transform for ReadsPairs {
    const NAME: &'static str = "reads-pairs";
    const SECTION: &'static str = "app";
    const FROM: u32 = 1;
    const TO: u32 = 2;
    type Old = AppAsPairs;
    type New = Out;
    fn transform(old: AppAsPairs) -> Result<Out, String> {
        Ok(Out { counter: old.counter + old.words.len() as u64 })
    }
}

#[test]
fn a_reader_that_does_not_take_a_stream_as_a_map_refuses_rather_than_lose_it() {
    let (batches, _, expected) = export(3, 0, 1 << 20);
    assert!(!expected.words.is_empty());
    let error = thread::spawn(move || {
        let first = batches.into_iter().next().unwrap();
        let first = first.into_iter().map(cross::chunk_in).collect();
        crate::transform::run_chunks::<ReadsPairs>(first).unwrap_err()
    })
    .join()
    .unwrap();
    assert!(error.contains("pre-copy is not possible"), "{error}");
}

// ---------------------------------------------------------------------------------------------
// REVIEW (branch `review`): tests that demonstrate bugs found in review. Each FAILS on main's
// code; they are findings, not fixes.
// ---------------------------------------------------------------------------------------------

fn app_with_words(n: u64) -> App {
    let mut app = App::default();
    for i in 0..n {
        app.words.insert(format!("k{i:03}").into_bytes(), i);
    }
    app
}

#[test]
fn an_import_whose_chunks_went_missing_is_refused() {
    // The final skeleton says `words` is a stream of so many entries; if the chunks never
    // arrive (lost by a host, dropped by a transformer, cut from a snapshot file), the import
    // must fail, not succeed with an empty map.
    let (_, snapshot, expected) = export(5, 0, 1 << 20);
    assert!(!expected.words.is_empty());
    let result = thread::spawn(move || {
        let mut rt = Runtime::<App>::new("2.0.0");
        let result = rt.import_state(snapshot, Vec::new());
        (result, rt.server_mut().words.len())
    })
    .join()
    .unwrap();
    let error = result.0.expect_err("imported instead of refusing");
    assert!(error.contains("chunks are missing"), "{error}");
    // And a partial set: the last batch that carried records lost (its keys may all have
    // been sent before, with older values: only the count of records can tell).
    let (mut batches, snapshot, _) = export(5, 50, 64);
    let last = batches.iter().rposition(|b| !b.is_empty()).expect("a batch with chunks");
    batches.remove(last);
    let result = thread::spawn(move || {
        let mut rt = Runtime::<App>::new("2.0.0");
        for batch in batches {
            rt.import_chunks(batch).unwrap();
        }
        rt.import_state(snapshot, Vec::new())
    })
    .join()
    .unwrap();
    assert!(result.is_err(), "imported a partial state");
}

/// A transformer that, besides converting, adds an entry and removes one, as a migration that
/// seeds a default or drops an internal key would.
struct AddsAndRemoves;

impl Transform for AddsAndRemoves {
    const NAME: &'static str = "adds-and-removes";
    const SECTION: &'static str = "app";
    const FROM: u32 = 1;
    const TO: u32 = 2;
    type Old = App;
    type New = AppV2;
    fn transform(mut old: App) -> Result<AppV2, String> {
        old.names.insert(9999, "seeded by the migration".into());
        old.names.remove(&0);
        AppV2::from_v1(old)
    }
}

#[test]
fn changing_a_pre_copied_map_in_a_transformer_panics_rather_than_diverge() {
    // A transformer that inserts into or removes from a map that arrives as a reference to its
    // chunks would give a different state by pre-copy than by a full transfer: it must trap
    // (the upgrade rolls back, naming the rule) instead.
    let mut app = app_with_words(10);
    for i in 0..10 {
        app.names.insert(i, format!("n{i}"));
    }
    let full = thread::spawn({
        let app = app.clone();
        move || AddsAndRemoves::transform(app).unwrap()
    })
    .join()
    .unwrap();
    assert!(full.names.get(&9999).is_some() && full.names.get(&0).is_none());
    let (batches, _) = thread::spawn(move || {
        let mut rt = Runtime::<App>::new("1.0.0");
        *rt.server_mut() = app;
        rt.precopy_begin().unwrap();
        let first = rt.precopy_next(1 << 20).unwrap().chunks;
        let (last, snapshot) = rt.precopy_finish().unwrap();
        (vec![first, last], snapshot)
    })
    .join()
    .unwrap();
    let transformed = thread::spawn(move || {
        for batch in batches {
            let batch = batch.into_iter().map(cross::chunk_in).collect();
            crate::transform::run_chunks::<AddsAndRemoves>(batch).unwrap();
        }
    })
    .join();
    let panic = transformed.expect_err("the transformer changed a reference without trapping");
    let message = panic
        .downcast_ref::<&str>()
        .map(ToString::to_string)
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(message.contains("reference to pre-copied chunks"), "{message}");
}

#[test]
fn reading_a_pre_copied_map_panics() {
    // In Mode::Reference (a transformer's final snapshot) a map is a reference: `get` must
    // panic as documented, not answer from its (empty) entries.
    let map: Map<u32, String> = {
        let bytes = crate::precopy::with_mode(crate::precopy::Mode::Inline, || {
            postcard::to_allocvec(&(7u32, 1u64, 1u64)).unwrap()
        });
        crate::precopy::with_mode(crate::precopy::Mode::Reference, || {
            postcard::from_bytes(&bytes).unwrap()
        })
    };
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| map.get(&1).is_none()));
    assert!(got.is_err(), "get() on a reference answered {got:?} instead of panicking");
}

#[test]
fn a_map_emptied_by_removals_gives_its_table_back() {
    // Removals leave tombstones, which lower hashbrown's capacity as they go: the map must
    // still see that it is at most 1/8 full of what it grew to.
    let mut map: Map<Vec<u8>, Vec<u8>> = Map::new();
    for i in 0..200_000u64 {
        map.insert(format!("key:{i}").into_bytes(), vec![0; 64]);
    }
    let full = map.capacity();
    for i in (0..200_000u64).filter(|i| i % 10 != 0) {
        map.remove(format!("key:{i}").as_bytes());
    }
    assert_eq!(map.len(), 20_000);
    assert!(map.capacity() <= 4 * map.len(), "{full} slots, {} after", map.capacity());
}

#[test]
fn a_session_that_saw_many_removals_does_not_keep_their_table() {
    // Nine keys in ten removed while a checkpoint copies the map: every removal is recorded as
    // owed. Once the session has sent them, the record must not keep its table: the session's
    // tracking stays in the map until the map is next written, which may be never (a mass
    // delete, then reads only), and the heap it holds hides the garbage from compaction.
    thread::spawn(|| {
        let mut rt = Runtime::<App>::new("1.0.0");
        for i in 0..20_000u64 {
            rt.server_mut().words.insert(format!("k{i}").into_bytes(), i);
        }
        rt.precopy_begin().unwrap();
        let _ = rt.precopy_next(4096).unwrap();
        for i in (0..20_000u64).filter(|i| i % 10 != 0) {
            rt.server_mut().words.remove(format!("k{i}").as_bytes());
        }
        let peak = rt.server_mut().words.dirty_capacity();
        assert!(peak >= 18_000, "{peak}");
        while rt.precopy_next(4096).unwrap().pending > 0 {}
        let _ = rt.precopy_finish().unwrap();
        let kept = rt.server_mut().words.dirty_capacity();
        assert!(kept <= 4 * 64, "the finished session keeps {kept} slots of {peak}");
    })
    .join()
    .unwrap();
}

//! A keyspace for upgrade tests under writes: `key:NNNNNNNN` loaded as `value-N`, changes made
//! all over it (and [`BEYOND`] keys past it) while an upgrade runs, and the check that every key
//! reads as the last acknowledged change left it — what a client cares about after an upgrade.

use redis::Commands;
use std::collections::HashMap;

/// Keys past the loaded ones that changes touch too, so that some are created (and deleted).
pub const BEYOND: usize = 5000;

/// What the changes did: the value each key they touched must have now (`None`: deleted).
pub type Expected = HashMap<String, Option<String>>;

/// SETs `key:00000000` … `key:{keys-1}` to `value-0` …, 1,000 to a pipeline.
pub fn load(client: &mut redis::Connection, keys: usize) {
    for batch in (0..keys).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for i in batch {
            pipe.cmd("SET").arg(format!("key:{i:08}")).arg(format!("value-{i}")).ignore();
        }
        pipe.query::<()>(client).unwrap();
    }
}

/// The `n`th change (from 1) over `loaded` keys: every fifth a DEL, the others a SET to `w{n}`,
/// on keys spread over the whole keyspace so that changes hit entries already copied and not
/// yet; recorded in `expected` once acknowledged.
pub fn change(client: &mut redis::Connection, n: u64, loaded: usize, expected: &mut Expected) {
    let key = format!("key:{:08}", (n * 7919) % (loaded + BEYOND) as u64);
    if n.is_multiple_of(5) {
        let _: i64 = client.del(&key).unwrap();
        expected.insert(key, None);
    } else {
        let value = format!("w{n}");
        let _: () = client.set(&key, &value).unwrap();
        expected.insert(key, Some(value));
    }
}

/// Every key reads as the changes last left it, and every other key as [`load`] wrote it
/// (`loaded` keys): none lost, none deleted come back.
pub fn check(client: &mut redis::Connection, loaded: usize, expected: &Expected) {
    let names: Vec<String> = (0..loaded + BEYOND).map(|i| format!("key:{i:08}")).collect();
    for batch in names.chunks(5000) {
        let values: Vec<Option<String>> = client.mget(batch).unwrap();
        for (key, value) in batch.iter().zip(values) {
            let want = match expected.get(key) {
                Some(want) => want.clone(),
                None => {
                    let i: usize = key[4..].parse().unwrap();
                    (i < loaded).then(|| format!("value-{i}"))
                }
            };
            assert_eq!(value, want, "key {key}");
        }
    }
}

//! `SCAN` and `HSCAN` through a real upgrade: a walk begun under one instance continues under
//! the next with the cursor it was given, while another client adds and deletes keys and
//! fields between the calls, and every key and field present throughout is returned exactly
//! once (redis promises at least once).

use std::collections::HashMap;
use tasuki_tests::{TestHost, artifacts};

const KEYS: usize = 3000;
const FIELDS: usize = 1000;

/// One call: `(next cursor, items)`.
fn call(
    conn: &mut redis::Connection,
    command: &str,
    key: Option<&str>,
    cursor: u64,
) -> (u64, Vec<String>) {
    let mut cmd = redis::cmd(command);
    if let Some(key) = key {
        cmd.arg(key);
    }
    let (next, items): (String, Vec<String>) =
        cmd.arg(cursor).arg("COUNT").arg(25).query(conn).expect("scan");
    (next.parse().expect("a cursor"), items)
}

#[test]
fn scan_and_hscan_keep_their_cursor_across_an_upgrade_under_churn() {
    let host = TestHost::start(artifacts::KV_V4);
    let mut conn = host.client();
    let mut churn = host.client();
    let mut fill = redis::pipe();
    for i in 0..KEYS {
        fill.cmd("SET").arg(format!("key:{i}")).arg(i).ignore();
    }
    for i in 0..FIELDS {
        fill.cmd("HSET").arg("hash").arg(format!("field:{i}")).arg(i).ignore();
    }
    fill.query::<()>(&mut conn).expect("fill");

    for (command, key, stable, prefix) in
        [("SCAN", None, KEYS + 1, "key:"), ("HSCAN", Some("hash"), FIELDS, "field:")]
    {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let (mut cursor, mut calls, mut upgraded) = (0, 0, false);
        loop {
            let (next, items) = call(&mut conn, command, key, cursor);
            let names = if key.is_some() { items.into_iter().step_by(2).collect() } else { items };
            for name in names {
                *seen.entry(name).or_default() += 1;
            }
            // Churn between every two calls: keys and fields come and go.
            let _: () = redis::pipe()
                .cmd("SET")
                .arg(format!("churn:{calls}"))
                .arg(1)
                .ignore()
                .cmd("DEL")
                .arg(format!("churn:{}", calls / 2))
                .ignore()
                .cmd("HSET")
                .arg("hash")
                .arg(format!("churn:{calls}"))
                .arg(1)
                .ignore()
                .cmd("HDEL")
                .arg("hash")
                .arg(format!("churn:{}", calls / 2))
                .ignore()
                .query(&mut churn)
                .expect("churn");
            calls += 1;
            if next == 0 {
                break;
            }
            if !upgraded && seen.len() > stable / 3 {
                // A third of the way through: swap the server under the walk.
                host.upgrade(artifacts::KV_V4).expect("upgrade");
                upgraded = true;
            }
            cursor = next;
        }
        assert!(upgraded, "{command}: the walk crossed an upgrade");
        assert!(calls > 3, "{command}: {calls} calls");
        let stable_seen = seen.iter().filter(|(name, _)| name.starts_with(prefix)).count();
        let expected = if key.is_some() { FIELDS } else { KEYS };
        assert_eq!(stable_seen, expected, "{command}: every item present throughout");
        for (name, times) in &seen {
            assert_eq!(*times, 1, "{command}: {name} returned {times} times");
        }
    }
}

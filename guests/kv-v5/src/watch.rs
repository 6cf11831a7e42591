//! `WATCH`: which connection watches which key, and whose watched key changed.
//!
//! Each connection's own list of watched keys, and whether one of them changed, is part of its
//! state (`Client::watched`, `Client::watch_broken`) and crosses an upgrade. This index, from a
//! key to its watchers, is derived from those lists: [`crate::db::Db`] asks it on every change
//! whether anyone watches the key, and it is rebuilt after an upgrade. Connections whose watched
//! key changed during an event are collected in [`Watches::take_broken`], and the server marks
//! their state at the end of the event.

use crate::db::FixedState;
use std::collections::{BTreeSet, HashMap};
use tasuki_guest::ConnId;

/// Watchers by key, and the connections whose watched key changed since the last
/// [`Watches::take_broken`].
#[derive(Debug, Default)]
pub(crate) struct Watches {
    by_key: HashMap<Vec<u8>, BTreeSet<ConnId>, FixedState>,
    broken: BTreeSet<ConnId>,
}

impl Watches {
    /// `conn` watches `key`.
    pub(crate) fn watch(&mut self, conn: ConnId, key: &[u8]) {
        match self.by_key.get_mut(key) {
            Some(watchers) => {
                watchers.insert(conn);
            }
            None => {
                self.by_key.insert(key.to_vec(), BTreeSet::from([conn]));
            }
        }
    }

    /// `conn` stops watching `keys`, and whatever broke its watch is forgotten.
    pub(crate) fn unwatch(&mut self, conn: ConnId, keys: &[Vec<u8>]) {
        for key in keys {
            if let Some(watchers) = self.by_key.get_mut(key.as_slice()) {
                watchers.remove(&conn);
                if watchers.is_empty() {
                    self.by_key.remove(key.as_slice());
                }
            }
        }
        self.broken.remove(&conn);
    }

    /// `key` changed: its watchers' transactions will abort. Costs one emptiness check while
    /// nobody watches anything.
    pub(crate) fn touch(&mut self, key: &[u8]) {
        if self.by_key.is_empty() {
            return;
        }
        if let Some(watchers) = self.by_key.get(key) {
            self.broken.extend(watchers);
        }
    }

    /// Every watched key.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.by_key.keys().map(Vec::as_slice)
    }

    /// Whether a key `conn` watches changed since the last [`Watches::take_broken`].
    pub(crate) fn is_broken(&self, conn: ConnId) -> bool {
        self.broken.contains(&conn)
    }

    /// The connections whose watched key changed since the last call.
    pub(crate) fn take_broken(&mut self) -> BTreeSet<ConnId> {
        std::mem::take(&mut self.broken)
    }

    /// Forgets everything: before rebuilding from the connections' state.
    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_breaks_every_watcher_of_that_key_only() {
        let mut watches = Watches::default();
        watches.watch(1, b"a");
        watches.watch(2, b"a");
        watches.watch(3, b"b");
        watches.touch(b"a");
        watches.touch(b"c");
        assert_eq!(watches.take_broken(), BTreeSet::from([1, 2]));
        assert!(watches.take_broken().is_empty());
        watches.unwatch(3, &[b"b".to_vec()]);
        watches.touch(b"b");
        assert!(!watches.is_broken(3));
        assert_eq!(watches.keys().count(), 1);
    }
}

//! A set: members without order, each once.
//!
//! Kept in an index set (members in a vector, found through a hash table) rather than a plain
//! hash set, because `SPOP` and `SRANDMEMBER` pick a member by a random position: an index set
//! reaches position `i` in constant time, where a hash set walks to it. Removal moves the last
//! member into the hole, so the order is the order of insertion only until the first removal.
//!
//! It encodes as a sequence of members, exactly as a `HashSet` does, in its order.

use crate::db::FixedState;
use indexmap::IndexSet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A set's members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Set {
    members: IndexSet<Vec<u8>, FixedState>,
}

impl Set {
    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub(crate) fn contains(&self, member: &[u8]) -> bool {
        self.members.contains(member)
    }

    /// Adds `member`; whether it is new.
    pub(crate) fn insert(&mut self, member: &[u8]) -> bool {
        if self.members.contains(member) {
            return false;
        }
        self.members.insert(member.to_vec())
    }

    /// Removes `member`; whether it was there.
    pub(crate) fn remove(&mut self, member: &[u8]) -> bool {
        self.members.swap_remove(member)
    }

    /// The member at position `index` (below [`Set::len`]).
    pub(crate) fn get(&self, index: usize) -> Option<&[u8]> {
        self.members.get_index(index).map(Vec::as_slice)
    }

    /// Removes and returns the member at position `index`.
    pub(crate) fn take(&mut self, index: usize) -> Option<Vec<u8>> {
        self.members.swap_remove_index(index)
    }

    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        self.members.iter().map(Vec::as_slice)
    }
}

impl Serialize for Set {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(&self.members)
    }
}

impl<'de> Deserialize<'de> for Set {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let members: Vec<Vec<u8>> = Vec::deserialize(deserializer)?;
        let mut set = Set::default();
        for member in members {
            set.members.insert(member);
        }
        Ok(set)
    }
}

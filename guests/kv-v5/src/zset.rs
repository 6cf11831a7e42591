//! A sorted set: members with a score, ordered by score and then by member bytes, as redis
//! orders them.
//!
//! Two structures, as in redis: a map from member to score (`ZSCORE`, `ZADD` of a known
//! member) and an ordered set of `(score, member)` for everything that walks the order
//! (`ZRANGE`, `ZPOPMIN`). Redis's skiplist also counts spans, which makes `ZRANK` and ranges by
//! index logarithmic; the ordered set here walks to a rank, linear in it. Only the map is
//! transferred: the order is rebuilt when the state is read.
//!
//! A score is never NaN (the commands refuse to make one, as redis does), so the order is
//! total; `-0` and `0` are the same score.

use crate::db::FixedState;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

/// A score, ordered as redis orders scores. Never NaN.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Score(pub(crate) f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        // No NaN is ever stored, so `partial_cmp` always answers; `-0 == 0` as in redis.
        self.0.partial_cmp(&other.0).unwrap_or(Ordering::Equal)
    }
}

/// Members and their scores.
#[derive(Debug, Clone, Default)]
pub(crate) struct ZSet {
    scores: HashMap<Vec<u8>, f64, FixedState>,
    order: BTreeSet<(Score, Vec<u8>)>,
}

impl PartialEq for ZSet {
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order
    }
}

impl Eq for ZSet {}

impl ZSet {
    pub(crate) fn len(&self) -> usize {
        self.scores.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    pub(crate) fn score(&self, member: &[u8]) -> Option<f64> {
        self.scores.get(member).copied()
    }

    /// Sets `member`'s score; its old score, if it was there.
    pub(crate) fn insert(&mut self, member: &[u8], score: f64) -> Option<f64> {
        match self.scores.get_mut(member) {
            Some(old) => {
                let previous = *old;
                if Score(previous) != Score(score) || previous.to_bits() != score.to_bits() {
                    self.order.remove(&(Score(previous), member.to_vec()));
                    self.order.insert((Score(score), member.to_vec()));
                    *old = score;
                }
                Some(previous)
            }
            None => {
                self.scores.insert(member.to_vec(), score);
                self.order.insert((Score(score), member.to_vec()));
                None
            }
        }
    }

    /// Removes `member`; whether it was there.
    pub(crate) fn remove(&mut self, member: &[u8]) -> bool {
        match self.scores.remove(member) {
            Some(score) => {
                self.order.remove(&(Score(score), member.to_vec()));
                true
            }
            None => false,
        }
    }

    /// Members and scores, lowest first.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = (&[u8], f64)> + ExactSizeIterator {
        self.order.iter().map(|(score, member)| (member.as_slice(), score.0))
    }

    /// `member`'s position, lowest score first: linear in it (see the module docs).
    pub(crate) fn rank(&self, member: &[u8]) -> Option<usize> {
        let score = self.score(member)?;
        Some(self.order.range(..(Score(score), member.to_vec())).count())
    }

    /// `member`'s position from the highest score down.
    pub(crate) fn rev_rank(&self, member: &[u8]) -> Option<usize> {
        self.rank(member).map(|rank| self.len() - 1 - rank)
    }

    /// Members and scores within `min..max`, lowest first (`rev`: highest first). Starts where
    /// the range starts rather than at an end.
    pub(crate) fn by_score(
        &self,
        min: ScoreBound,
        max: ScoreBound,
        rev: bool,
    ) -> Box<dyn Iterator<Item = (&[u8], f64)> + '_> {
        fn pair((score, member): &(Score, Vec<u8>)) -> (&[u8], f64) {
            (member.as_slice(), score.0)
        }
        if rev {
            let upper = if max.value == f64::INFINITY {
                Bound::Unbounded
            } else {
                Bound::Excluded((Score(max.value.next_up()), Vec::new()))
            };
            Box::new(
                self.order
                    .range((Bound::Unbounded, upper))
                    .rev()
                    .map(pair)
                    .skip_while(move |(_, score)| !max.admits_from_above(*score))
                    .take_while(move |(_, score)| min.admits_from_below(*score)),
            )
        } else {
            Box::new(
                self.order
                    .range((Score(min.value), Vec::new())..)
                    .map(pair)
                    .skip_while(move |(_, score)| !min.admits_from_below(*score))
                    .take_while(move |(_, score)| max.admits_from_above(*score)),
            )
        }
    }

    /// Removes and returns the lowest member (`max`: the highest).
    pub(crate) fn pop(&mut self, max: bool) -> Option<(Vec<u8>, f64)> {
        let (score, member) = if max { self.order.pop_last() } else { self.order.pop_first() }?;
        self.scores.remove(&member);
        Some((member, score.0))
    }
}

/// One end of a score range: `1.5` (included) or `(1.5` (excluded).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScoreBound {
    pub(crate) value: f64,
    pub(crate) inclusive: bool,
}

impl ScoreBound {
    /// Whether `score` is on the right side of this bound taken as a minimum.
    pub(crate) fn admits_from_below(self, score: f64) -> bool {
        if self.inclusive { score >= self.value } else { score > self.value }
    }

    /// Whether `score` is on the right side of this bound taken as a maximum.
    pub(crate) fn admits_from_above(self, score: f64) -> bool {
        if self.inclusive { score <= self.value } else { score < self.value }
    }
}

impl Serialize for ZSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // In order, so the same set always encodes to the same bytes.
        serializer.collect_seq(self.order.iter().map(|(score, member)| (member, score.0)))
    }
}

impl<'de> Deserialize<'de> for ZSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pairs: Vec<(Vec<u8>, f64)> = Vec::deserialize(deserializer)?;
        let mut zset = ZSet::default();
        for (member, score) in pairs {
            if score.is_nan() {
                return Err(serde::de::Error::custom("a sorted set score is NaN"));
            }
            zset.insert(&member, score);
        }
        Ok(zset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_by_score_then_member() {
        let mut zset = ZSet::default();
        zset.insert(b"b", 1.0);
        zset.insert(b"a", 1.0);
        zset.insert(b"c", -0.5);
        assert_eq!(zset.insert(b"c", 2.0), Some(-0.5));
        let members: Vec<_> = zset.iter().map(|(m, s)| (m.to_vec(), s)).collect();
        assert_eq!(members, [(b"a".to_vec(), 1.0), (b"b".to_vec(), 1.0), (b"c".to_vec(), 2.0)]);
        assert_eq!(zset.rank(b"c"), Some(2));
        assert_eq!(zset.pop(false), Some((b"a".to_vec(), 1.0)));
        assert!(zset.remove(b"b") && !zset.remove(b"b"));
        assert_eq!(zset.len(), 1);
    }

    #[test]
    fn round_trips_through_its_encoding() {
        let mut zset = ZSet::default();
        zset.insert(b"x", 3.5);
        zset.insert(b"y", f64::NEG_INFINITY);
        let bytes = postcard::to_allocvec(&zset).unwrap();
        let back: ZSet = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, zset);
        assert_eq!(back.score(b"y"), Some(f64::NEG_INFINITY));
    }
}

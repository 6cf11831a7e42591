//! Where `SPOP`, `SRANDMEMBER` and `RANDOMKEY` get their randomness.
//!
//! Not from the platform: after a trap the host rebuilds the server from its last checkpoint and
//! replays every event since, and a replayed `SPOP` must pop the member it popped the first
//! time, or the rebuilt state would differ from what clients saw. So each event's generator is
//! seeded from what a replay reproduces exactly: the event's clock reading (the host replays it),
//! the connection, and the count of commands the server has run (part of the transferred
//! state). Redis's own choice is not uniform either (a random bucket, then its chain); this is a
//! SplitMix64 stream, good enough to spread picks, not for secrets.

/// A SplitMix64 generator.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// The generator for the event that runs at `now_ms` on connection `conn`, after
    /// `commands` commands.
    pub(crate) fn for_event(now_ms: u64, conn: u64, commands: u64) -> Self {
        let mut rng = Self(now_ms ^ conn.rotate_left(32) ^ commands.rotate_left(17));
        rng.next();
        rng
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 for `n == 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        // `usize` is at most 64 bits here, so the product's high half is below `n`.
        let wide = u128::from(self.next()) * n as u128;
        usize::try_from(wide >> 64).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_event_draws_the_same_numbers() {
        let draws = |mut rng: Rng| (0..8).map(|_| rng.below(1000)).collect::<Vec<_>>();
        assert_eq!(draws(Rng::for_event(5, 1, 2)), draws(Rng::for_event(5, 1, 2)));
        assert_ne!(draws(Rng::for_event(5, 1, 2)), draws(Rng::for_event(5, 1, 3)));
        let mut rng = Rng::for_event(0, 0, 0);
        assert!((0..1000).all(|_| rng.below(7) < 7));
        assert_eq!(rng.below(0), 0);
    }
}

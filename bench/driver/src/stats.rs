//! Percentiles, medians and a latency histogram.

use std::time::Duration;

/// The `p`-th percentile (0–100) of `values`, nearest rank; `NaN` for none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median; of an even count, the mean of the middle two.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

pub fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::max)
}

/// Request latencies: 1 µs buckets up to 10 ms, then 1 ms buckets up to 10 s.
#[derive(Debug, Clone)]
pub struct Hist {
    fine: Vec<u64>,
    coarse: Vec<u64>,
    count: u64,
    max_us: u64,
}

const FINE_US: u64 = 10_000;
const COARSE_MS: u64 = 10_000;

impl Default for Hist {
    fn default() -> Self {
        Self {
            fine: vec![0; FINE_US as usize],
            coarse: vec![0; COARSE_MS as usize + 1],
            count: 0,
            max_us: 0,
        }
    }
}

impl Hist {
    pub fn record(&mut self, d: Duration) {
        let us = d.as_micros() as u64;
        if us < FINE_US {
            self.fine[us as usize] += 1;
        } else {
            self.coarse[(us / 1000).min(COARSE_MS) as usize] += 1;
        }
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.fine.iter_mut().zip(&other.fine) {
            *a += b;
        }
        for (a, b) in self.coarse.iter_mut().zip(&other.coarse) {
            *a += b;
        }
        self.count += other.count;
        self.max_us = self.max_us.max(other.max_us);
    }

    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// The `p`-th percentile in µs (upper edge of its bucket).
    pub fn percentile_us(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (us, n) in self.fine.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return us as u64 + 1;
            }
        }
        for (ms, n) in self.coarse.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return ((ms as u64 + 1) * 1000).min(self.max_us);
            }
        }
        self.max_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn histogram() {
        let mut h = Hist::default();
        for us in 0..100 {
            h.record(Duration::from_micros(us));
        }
        h.record(Duration::from_millis(50));
        assert_eq!(h.percentile_us(50.0), 51);
        assert_eq!(h.max_us(), 50_000);
        assert_eq!(h.percentile_us(100.0), 50_000);
    }
}

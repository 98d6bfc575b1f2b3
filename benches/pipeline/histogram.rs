//! A latency histogram in microseconds with fine log-linear buckets: exact below 1,024 µs, and above that each
//! bucket is at most 1/512 (0.2 %) of its values wide, up to `u32::MAX` µs (71 minutes). It takes 48 kB however
//! many samples it holds; the maximum is kept exactly.

/// Values below this are counted exactly.
const LINEAR: u64 = 1 << 10;
/// Buckets per octave above `LINEAR`.
const HALF: u64 = LINEAR / 2;
/// `LINEAR` exact buckets, then `HALF` buckets for each of the 22 octaves from 2^10 to 2^32.
const BUCKETS: usize = (LINEAR + 22 * HALF) as usize;

fn index(us: u32) -> usize {
    let v = u64::from(us);
    if v < LINEAR {
        return v as usize;
    }
    let msb = 63 - u64::from(v.leading_zeros());
    let shift = msb - 9;
    let mantissa = v >> shift;
    (LINEAR + (shift - 1) * HALF + (mantissa - HALF)) as usize
}

/// The largest value counted in bucket `i`.
fn highest(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let shift = (i - LINEAR) / HALF + 1;
    let mantissa = (i - LINEAR) % HALF + HALF;
    ((mantissa + 1) << shift) - 1
}

#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u32]>,
    total: u64,
    max: u32,
}

impl Default for Histogram {
    fn default() -> Self {
        Self { counts: vec![0; BUCKETS].into_boxed_slice(), total: 0, max: 0 }
    }
}

impl Histogram {
    pub fn record(&mut self, us: u32) {
        let i = index(us);
        self.counts[i] = self.counts[i].saturating_add(1);
        self.total += 1;
        self.max = self.max.max(us);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// The `p` quantile in milliseconds, ranked as the other scenarios rank their exact samples (the
    /// ⌈p·n⌉-th smallest): the top of its bucket, never above the exact maximum. NaN when empty.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.total == 0 {
            return f64::NAN;
        }
        let rank = ((p * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return highest(i).min(u64::from(self.max)) as f64 / 1000.0;
            }
        }
        f64::from(self.max) / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        if self.total == 0 {
            f64::NAN
        } else {
            f64::from(self.max) / 1000.0
        }
    }
}

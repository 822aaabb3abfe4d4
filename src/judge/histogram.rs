//! Histogram checks and Prometheus-style quantile interpolation.

use crate::observation::Histogram;

/// A validated histogram: finite ascending boundaries (the `+Inf` bucket is
/// implicit) and cumulative counts, one per finite boundary plus the total.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedHistogram {
    /// Finite upper bounds, strictly ascending.
    pub le: Vec<f64>,
    /// Cumulative counts `<= le[i]`, then the total (the `+Inf` bucket).
    pub cumulative: Vec<f64>,
}

impl CheckedHistogram {
    /// Observations in the histogram.
    pub fn total(&self) -> f64 {
        self.cumulative.last().copied().unwrap_or(0.0)
    }

    /// Observations above `le[i]`.
    pub fn above(&self, i: usize) -> f64 {
        (self.total() - self.cumulative.get(i).copied().unwrap_or(0.0)).max(0.0)
    }

    /// Quantile `q` interpolated linearly within its bucket, as Prometheus'
    /// `histogram_quantile` does: the first bucket starts at 0, and a rank in
    /// the `+Inf` bucket yields the largest finite bound. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total.is_nan() || total <= 0.0 || self.le.is_empty() || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * total;
        let b = self
            .cumulative
            .iter()
            .position(|c| *c >= rank)
            .unwrap_or(self.le.len());
        if b >= self.le.len() {
            return self.le.last().copied();
        }
        let end = self.le[b];
        let (start, below) = if b == 0 {
            if end <= 0.0 {
                return Some(end);
            }
            (0.0, 0.0)
        } else {
            (self.le[b - 1], self.cumulative[b - 1])
        };
        let count = self.cumulative[b] - below;
        if count <= 0.0 {
            return Some(end);
        }
        Some(start + (end - start) * (rank - below) / count)
    }

    /// Fraction of observations at or below `x`, interpolated like
    /// [`Self::quantile`] (its inverse). `None` when empty.
    pub fn cdf(&self, x: f64) -> Option<f64> {
        let total = self.total();
        if total.is_nan() || total <= 0.0 || x.is_nan() {
            return None;
        }
        let mut lower = 0.0;
        let mut below = 0.0;
        for (le, cum) in self.le.iter().zip(&self.cumulative) {
            if x <= *le {
                let width = le - lower;
                let frac = if width > 0.0 {
                    ((x - lower) / width).clamp(0.0, 1.0)
                } else {
                    1.0
                };
                return Some((below + (cum - below) * frac) / total);
            }
            lower = *le;
            below = *cum;
        }
        Some(1.0)
    }
}

/// Validates a histogram; the error says what is wrong.
pub fn check(h: &Histogram) -> Result<CheckedHistogram, String> {
    if h.le.len() != h.counts.len() {
        return Err(format!(
            "{} bucket bounds but {} counts",
            h.le.len(),
            h.counts.len()
        ));
    }
    if h.le.is_empty() {
        return Err("histogram has no buckets".into());
    }
    let mut le = Vec::with_capacity(h.le.len());
    let last = h.le.len() - 1;
    for (i, b) in h.le.iter().enumerate() {
        if b.is_nan() {
            return Err(format!("bucket bound {i} is NaN"));
        }
        if i == last {
            if *b != f64::INFINITY {
                return Err(format!("last bucket bound is {b}, not +Inf"));
            }
        } else {
            if !b.is_finite() {
                return Err(format!(
                    "bucket bound {i} is {b}; only the last may be +Inf"
                ));
            }
            if let Some(prev) = le.last() {
                if b <= prev {
                    return Err(format!(
                        "bucket bounds not ascending at {i}: {b} after {prev}"
                    ));
                }
            }
            le.push(*b);
        }
    }
    let mut cumulative = Vec::with_capacity(h.counts.len());
    let mut prev = 0.0_f64;
    for (i, c) in h.counts.iter().enumerate() {
        if !c.is_finite() {
            return Err(format!("bucket {i} count is {c}"));
        }
        if *c < 0.0 {
            return Err(format!("bucket {i} has negative count {c}"));
        }
        // Prometheus tolerates tiny float non-monotonicity from `increase`
        // extrapolation; anything larger is broken data.
        if *c < prev - 1e-6 * prev.max(1.0) {
            return Err(format!("bucket counts decrease at {i}: {c} after {prev}"));
        }
        prev = prev.max(*c);
        cumulative.push(prev);
    }
    Ok(CheckedHistogram { le, cumulative })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(le: &[f64], counts: &[f64]) -> Histogram {
        let mut le = le.to_vec();
        le.push(f64::INFINITY);
        Histogram {
            le,
            counts: counts.to_vec(),
        }
    }

    #[test]
    fn quantile_interpolates_like_prometheus() {
        let h = check(&hist(&[0.1, 0.2, 0.4], &[10.0, 30.0, 40.0, 40.0])).unwrap();
        // rank 20 lies in (0.1, 0.2], 10 of its 20 -> 0.15
        assert!((h.quantile(0.5).unwrap() - 0.15).abs() < 1e-12);
        // rank 4 in the first bucket, starting at 0
        assert!((h.quantile(0.1).unwrap() - 0.04).abs() < 1e-12);
        assert!((h.cdf(0.15).unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn rank_in_inf_bucket_returns_largest_bound() {
        let h = check(&hist(&[0.1, 0.2], &[1.0, 2.0, 10.0])).unwrap();
        assert_eq!(h.quantile(0.99), Some(0.2));
    }

    #[test]
    fn rejects_bad_histograms() {
        assert!(check(&hist(&[0.2, 0.1], &[1.0, 2.0, 3.0])).is_err());
        assert!(check(&hist(&[0.1], &[2.0, 1.0])).is_err());
        assert!(check(&hist(&[0.1], &[-1.0, 1.0])).is_err());
        assert!(check(&Histogram {
            le: vec![0.1, 0.2],
            counts: vec![1.0, 2.0]
        })
        .is_err());
        assert!(check(&hist(&[], &[5.0])).is_ok());
    }

    #[test]
    fn empty_histogram_has_no_quantile() {
        let h = check(&hist(&[0.1], &[0.0, 0.0])).unwrap();
        assert_eq!(h.quantile(0.5), None);
    }
}

//! Mann-Whitney U test and the Hodges–Lehmann shift estimate, matching
//! `scipy.stats.mannwhitneyu(x, y)` (two-sided, continuity correction,
//! `method="auto"`): exact null distribution when one sample has at most 8
//! values and there are no ties, otherwise the normal approximation with tie
//! and continuity corrections.

use serde::{Deserialize, Serialize};

/// Result of a two-sided Mann-Whitney U test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MannWhitney {
    /// `U` of the first sample (scipy's `statistic`).
    pub u1: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// Whether the exact distribution was used.
    pub exact: bool,
}

/// Hodges–Lehmann estimate of the shift `x − y` with a distribution-free
/// confidence interval from the order statistics of all pairwise differences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HodgesLehmann {
    /// Median of all differences `x_i − y_j`.
    pub estimate: f64,
    /// Lower confidence bound.
    pub lower: f64,
    /// Upper confidence bound.
    pub upper: f64,
}

/// Average ranks (1-based) of `values` and the sizes of tie groups.
fn ranks(values: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|a, b| values[*a].total_cmp(&values[*b]));
    let mut r = vec![0.0; values.len()];
    let mut ties = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && values[order[j]] == values[order[i]] {
            j += 1;
        }
        // positions i..j (0-based) share the average rank
        let avg = (i + 1 + j) as f64 / 2.0;
        for &k in &order[i..j] {
            r[k] = avg;
        }
        ties.push((j - i) as f64);
        i = j;
    }
    (r, ties)
}

/// Whether scipy's `method="auto"` picks the exact distribution.
fn use_exact(n1: usize, n2: usize, has_ties: bool) -> bool {
    !(has_ties || n1 > 8 && n2 > 8) && n1.max(n2) <= 100_000
}

/// Counts of each `U` value (0..=m·n) under the null: the coefficients of the
/// Gaussian binomial `[m+n choose m]_q`, built exactly in integers as
/// `Π_{i=1..m} (1 − q^{n+i}) / (1 − q^i)`.
fn u_frequencies(n1: usize, n2: usize) -> Vec<i128> {
    let (m, n) = (n1.min(n2), n1.max(n2));
    let mut c: Vec<i128> = vec![1];
    for i in 1..=m {
        let mut next = vec![0i128; c.len() + n + i];
        for (k, v) in c.iter().enumerate() {
            next[k] += v;
            next[k + n + i] -= v;
        }
        for k in i..next.len() {
            next[k] += next[k - i];
        }
        next.truncate(c.len() + n);
        c = next;
    }
    c
}

/// `P(U <= k)` for each `k`, from [`u_frequencies`].
fn exact_cdf(n1: usize, n2: usize) -> Vec<f64> {
    let f = u_frequencies(n1, n2);
    let total: i128 = f.iter().sum();
    let mut acc = 0i128;
    f.iter()
        .map(|v| {
            acc += v;
            acc as f64 / total as f64
        })
        .collect()
}

fn normal_sf(z: f64) -> f64 {
    0.5 * statrs::function::erf::erfc(z / std::f64::consts::SQRT_2)
}

fn tie_sd(n1: f64, n2: f64, ties: &[f64]) -> f64 {
    let n = n1 + n2;
    let tie_term: f64 = ties.iter().map(|t| t * t * t - t).sum();
    let var = n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    var.max(0.0).sqrt()
}

/// Two-sided Mann-Whitney U test of `x` against `y`; `None` if either sample
/// is empty or holds non-finite values.
pub fn mann_whitney(x: &[f64], y: &[f64]) -> Option<MannWhitney> {
    if x.is_empty() || y.is_empty() || x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    let (n1, n2) = (x.len(), y.len());
    let all: Vec<f64> = x.iter().chain(y).copied().collect();
    let (r, ties) = ranks(&all);
    let r1: f64 = r[..n1].iter().sum();
    let (f1, f2) = (n1 as f64, n2 as f64);
    let u1 = r1 - f1 * (f1 + 1.0) / 2.0;
    let u2 = f1 * f2 - u1;
    let u = u1.max(u2);
    let has_ties = ties.iter().any(|t| *t > 1.0);
    let exact = use_exact(n1, n2, has_ties);
    let p = if exact {
        let cdf = exact_cdf(n1, n2);
        // sf(U) = P(U >= u) includes the mass at u
        let k = u.round() as usize;
        if k == 0 {
            1.0
        } else {
            1.0 - cdf.get(k - 1).copied().unwrap_or(1.0)
        }
    } else {
        let s = tie_sd(f1, f2, &ties);
        if s > 0.0 {
            normal_sf((u - f1 * f2 / 2.0 - 0.5) / s)
        } else {
            1.0
        }
    };
    Some(MannWhitney {
        u1,
        p_value: (2.0 * p).clamp(0.0, 1.0),
        exact,
    })
}

/// Hodges–Lehmann shift `x − y` with a `confidence` interval: the `k`-th
/// smallest and largest pairwise differences, with `k` from the exact null
/// distribution of `U` (smallest `k` with `P(U <= k) >= (1 − confidence)/2`,
/// at least 1, as R's `wilcox.test`) when [`mann_whitney`] is exact, otherwise
/// `k = floor(m n / 2 − z σ)` with the tie-corrected `σ` (at least 1).
pub fn hodges_lehmann(x: &[f64], y: &[f64], confidence: f64) -> Option<HodgesLehmann> {
    if x.is_empty()
        || y.is_empty()
        || x.iter().chain(y).any(|v| !v.is_finite())
        || !(confidence > 0.0 && confidence < 1.0)
    {
        return None;
    }
    let mut d: Vec<f64> = x
        .iter()
        .flat_map(|a| y.iter().map(move |b| a - b))
        .collect();
    d.sort_by(f64::total_cmp);
    let mn = d.len();
    let estimate = if mn % 2 == 1 {
        d[mn / 2]
    } else {
        (d[mn / 2 - 1] + d[mn / 2]) / 2.0
    };
    let alpha = 1.0 - confidence;
    let all: Vec<f64> = x.iter().chain(y).copied().collect();
    let (_, ties) = ranks(&all);
    let has_ties = ties.iter().any(|t| *t > 1.0);
    let k = if use_exact(x.len(), y.len(), has_ties) {
        let cdf = exact_cdf(x.len(), y.len());
        cdf.iter().position(|p| *p >= alpha / 2.0).unwrap_or(0)
    } else {
        let s = tie_sd(x.len() as f64, y.len() as f64, &ties);
        let z = statrs::distribution::ContinuousCDF::inverse_cdf(
            &statrs::distribution::Normal::standard(),
            1.0 - alpha / 2.0,
        );
        let k = (mn as f64 / 2.0 - z * s).floor();
        if k.is_finite() && k > 0.0 {
            k as usize
        } else {
            0
        }
    };
    let k = k.clamp(1, mn.div_ceil(2));
    Some(HodgesLehmann {
        estimate,
        lower: d[k - 1],
        upper: d[mn - k],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binom(n: u64, k: u64) -> i128 {
        (0..k).fold(1i128, |acc, i| acc * i128::from(n - i) / i128::from(i + 1))
    }

    #[test]
    fn frequencies_sum_to_binomial_and_are_symmetric() {
        for (m, n) in [(1, 1), (3, 5), (8, 8), (4, 30)] {
            let f = u_frequencies(m, n);
            assert_eq!(f.len(), m * n + 1);
            assert_eq!(f.iter().sum::<i128>(), binom((m + n) as u64, m as u64));
            for k in 0..f.len() {
                assert_eq!(f[k], f[f.len() - 1 - k]);
                assert!(f[k] > 0);
            }
        }
    }

    #[test]
    fn textbook_exact_case() {
        // x all above y: U1 = 9, P(U >= 9) = 1/20, two-sided 0.1
        let r = mann_whitney(&[4.0, 5.0, 6.0], &[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(r.u1, 9.0);
        assert!(r.exact);
        assert!((r.p_value - 0.1).abs() < 1e-12);
    }

    #[test]
    fn identical_samples_give_p_one() {
        let r = mann_whitney(&[1.0; 10], &[1.0; 12]).unwrap();
        assert_eq!(r.p_value, 1.0);
        assert_eq!(r.u1, 60.0);
    }

    #[test]
    fn hl_of_shifted_samples() {
        let y: Vec<f64> = (0..20).map(f64::from).collect();
        let x: Vec<f64> = y.iter().map(|v| v + 5.0).collect();
        let h = hodges_lehmann(&x, &y, 0.95).unwrap();
        assert_eq!(h.estimate, 5.0);
        assert!(h.lower <= 5.0 && h.upper >= 5.0);
    }

    #[test]
    fn rejects_empty_and_nan() {
        assert!(mann_whitney(&[], &[1.0]).is_none());
        assert!(mann_whitney(&[f64::NAN], &[1.0]).is_none());
        assert!(hodges_lehmann(&[1.0], &[1.0], 1.5).is_none());
    }
}

//! Two-sample proportional-odds e-process on latency bucket counts.
//!
//! One test that uses every bucket at once. In window `t` the canary's and
//! the baseline's bucket counts are, given the arms' request counts `n_c` and
//! `n_b`, independent multinomials. Under the null both arms share one bucket
//! distribution `P_t` (which may change from window to window, e.g. with
//! load). For ANY two distributions `Q_c`, `Q_b` fixed before the window is
//! seen, with `Q_0 = w Q_c + (1 − w) Q_b` and `w = n_c / (n_c + n_b)`,
//!
//! ```text
//! E_t = Π_j (Q_c,j / Q_0,j)^{c_j} (Q_b,j / Q_0,j)^{b_j}
//! ```
//!
//! has `E[E_t | past, n_c, n_b] ≤ 1` under every null `P_t`: its expectation
//! is `(Σ_j P_j Q_c,j/Q_0,j)^{n_c} (Σ_j P_j Q_b,j/Q_0,j)^{n_b}`, a weighted
//! geometric mean (weights `w`, `1 − w`, power `n_c + n_b`) that is at most
//! the arithmetic mean `Σ_j P_j (w Q_c,j + (1 − w) Q_b,j)/Q_0,j = 1`. This is
//! the construction of Turner, Ly & Grünwald's safe tests for 2×2 tables
//! ("Generic E-variables for exact sequential k-sample tests that allow for
//! optional stopping", J. Stat. Plan. Inference 230, 2024), applied to the `K + 1` buckets. The product
//! over windows is a test supermartingale, so Ville's inequality applies.
//!
//! The alternatives are PREDICTABLE: `Q_b` is the pooled bucket distribution
//! of all earlier windows (both arms, half a pseudo-count per bucket) and
//! `Q_c` is `Q_b` with the odds of exceeding EVERY bound multiplied by the
//! same factor `e^λ` (a proportional-odds shift, which is what multiplying
//! all latencies does to a log-logistic latency and nearly does to a
//! log-normal one). Each `λ` on the shared grid (`λ = 0.125 k`) keeps its
//! cumulative `ln E`; the test is a fixed-weight mixture over `λ`. For small
//! `λ` the growth is `2 λ w (1 − w) N (ū_c − ū_b)` with `u_j = (F_{j−1} +
//! F_j) / 2` the buckets' mid-ranks under the reference and `N = n_c + n_b`:
//! a sequential Wilcoxon–Mann–Whitney test on the buckets,
//! which — unlike a per-bound rate test — also uses the requests BELOW a
//! bound, so a bulk shift at a bound near the median carries about twice
//! the evidence per request.

use super::grid::{LogLik, GRID_HALF, GRID_LEN, GRID_STEP};

/// Pseudo-count per bucket in the reference distribution (before any data
/// the reference is uniform over the buckets).
pub const PSEUDO_COUNT: f64 = 0.5;

/// Per-bucket counts from cumulative-by-bound counts (total last).
fn per_bucket(cumulative: &[f64]) -> Vec<f64> {
    let mut prev = 0.0;
    cumulative
        .iter()
        .map(|c| {
            let d = (c - prev).max(0.0);
            prev = prev.max(*c);
            d
        })
        .collect()
}

/// Reference CDF at each finite bound: the pooled cumulative counts of
/// earlier windows (`past_canary`, `past_baseline`, cumulative by bound with
/// the total last) plus [`PSEUDO_COUNT`] per bucket. Strictly inside (0, 1).
pub fn reference_cdf(past_canary: &[f64], past_baseline: &[f64]) -> Vec<f64> {
    let buckets = past_canary.len().max(past_baseline.len());
    if buckets < 2 {
        return Vec::new();
    }
    let pooled: Vec<f64> = (0..buckets)
        .map(|j| {
            let c = past_canary.get(j).copied().unwrap_or(0.0);
            let b = past_baseline.get(j).copied().unwrap_or(0.0);
            let v = c + b;
            if v.is_finite() {
                v.max(0.0)
            } else {
                0.0
            }
        })
        .collect();
    let mut counts = per_bucket(&pooled);
    for c in &mut counts {
        *c += PSEUDO_COUNT;
    }
    let total: f64 = counts.iter().sum();
    let mut acc = 0.0;
    counts[..buckets - 1]
        .iter()
        .map(|c| {
            acc += c;
            (acc / total).clamp(1e-12, 1.0 - 1e-12)
        })
        .collect()
}

fn expit(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Bucket probabilities of `reference` (CDF at the finite bounds) with the
/// odds of exceeding every bound multiplied by `e^λ`.
pub fn shifted_probs(reference: &[f64], lambda: f64) -> Vec<f64> {
    let logit: Vec<f64> = reference.iter().map(|f| (f / (1.0 - f)).ln()).collect();
    let mut out = Vec::with_capacity(logit.len() + 1);
    shifted_into(&logit, lambda, &mut out);
    out
}

/// [`shifted_probs`] from the reference's log odds, into `out`.
fn shifted_into(logit: &[f64], lambda: f64, out: &mut Vec<f64>) {
    out.clear();
    let k = logit.len();
    // P(latency <= le_j) and P(latency > le_j) are both computed directly so
    // that small bucket probabilities keep their precision.
    let below = |j: usize| expit(logit[j] - lambda);
    let above = |j: usize| expit(lambda - logit[j]);
    for j in 0..=k {
        let p = if j == 0 {
            below(0)
        } else if j == k {
            above(k - 1)
        } else if below(j) <= 0.5 {
            below(j) - below(j - 1)
        } else {
            above(j - 1) - above(j)
        };
        out.push(p.max(f64::MIN_POSITIVE));
    }
}

/// `ln E_t` of one window for every grid point `λ`, or `None` when the
/// window carries no information (an empty arm, mismatched lengths,
/// non-finite counts). `reference` is [`reference_cdf`] of the EARLIER
/// windows; `canary` and `baseline` are this window's cumulative-by-bound
/// counts with the total last.
pub fn window_log_factors(reference: &[f64], canary: &[f64], baseline: &[f64]) -> Option<Vec<f64>> {
    let k = reference.len();
    if k == 0 || canary.len() != k + 1 || baseline.len() != k + 1 {
        return None;
    }
    if canary.iter().chain(baseline).any(|v| !v.is_finite()) {
        return None;
    }
    let (c, b) = (per_bucket(canary), per_bucket(baseline));
    let (nc, nb): (f64, f64) = (c.iter().sum(), b.iter().sum());
    if !(nc > 0.0 && nb > 0.0) {
        return None;
    }
    let w = nc / (nc + nb);
    let logit: Vec<f64> = reference.iter().map(|f| (f / (1.0 - f)).ln()).collect();
    let mut base = Vec::with_capacity(k + 1);
    shifted_into(&logit, 0.0, &mut base);
    let mut shifted = Vec::with_capacity(k + 1);
    let out = (0..GRID_LEN)
        .map(|i| {
            if i == GRID_HALF {
                return 0.0;
            }
            let lambda = (i as f64 - GRID_HALF as f64) * GRID_STEP;
            shifted_into(&logit, lambda, &mut shifted);
            let mut s = 0.0;
            for ((qc, qb), (x, y)) in shifted.iter().zip(&base).zip(c.iter().zip(&b)) {
                let q0 = w * qc + (1.0 - w) * qb;
                if *x > 0.0 {
                    s += x * (qc / q0).ln();
                }
                if *y > 0.0 {
                    s += y * (qb / q0).ln();
                }
            }
            s
        })
        .collect();
    Some(out)
}

/// Folds one window into `acc` (cumulative `ln E` per grid point). The
/// `past_*` arguments are the cumulative counts of the earlier windows.
pub fn add_window(
    acc: &mut LogLik,
    past_canary: &[f64],
    past_baseline: &[f64],
    canary: &[f64],
    baseline: &[f64],
) {
    if acc.0.len() != GRID_LEN {
        acc.0 = vec![0.0; GRID_LEN];
    }
    let reference = reference_cdf(past_canary, past_baseline);
    if let Some(f) = window_log_factors(&reference, canary, baseline) {
        for (a, x) in acc.0.iter_mut().zip(f) {
            *a += x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_shift_reproduces_the_reference() {
        let r = reference_cdf(&[10.0, 30.0, 40.0], &[0.0, 10.0, 20.0]);
        // pooled per bucket 10, 30, 20 plus 0.5 each: CDF 10.5/61.5, 41/61.5
        assert!((r[0] - 10.5 / 61.5).abs() < 1e-12);
        assert!((r[1] - 41.0 / 61.5).abs() < 1e-12);
        let p = shifted_probs(&r, 0.0);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((p[2] - 20.5 / 61.5).abs() < 1e-12);
    }

    #[test]
    fn shift_multiplies_every_exceedance_odds() {
        let r = [0.1, 0.5, 0.9, 0.999];
        let p = shifted_probs(&r, 0.7);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let mut below = 0.0;
        for (j, f) in r.iter().enumerate() {
            below += p[j];
            let odds = (1.0 - below) / below;
            let odds0 = (1.0 - f) / f;
            assert!((odds / odds0 - 0.7f64.exp()).abs() < 1e-9, "bound {j}");
        }
    }

    /// Multinomial pmf of `counts` under `p`.
    fn pmf(counts: &[usize], p: &[f64]) -> f64 {
        let n: usize = counts.iter().sum();
        let mut coef = 1.0;
        let mut used = 0;
        for c in counts {
            for i in 0..*c {
                used += 1;
                coef *= used as f64 / (i + 1) as f64;
            }
        }
        debug_assert_eq!(used, n);
        coef * counts
            .iter()
            .zip(p)
            .map(|(c, q)| q.powi(*c as i32))
            .product::<f64>()
    }

    /// All ways to put `n` items into `k` buckets.
    fn compositions(n: usize, k: usize) -> Vec<Vec<usize>> {
        if k == 1 {
            return vec![vec![n]];
        }
        (0..=n)
            .flat_map(|first| {
                compositions(n - first, k - 1)
                    .into_iter()
                    .map(move |mut rest| {
                        rest.insert(0, first);
                        rest
                    })
            })
            .collect()
    }

    fn cumulative(v: &[usize]) -> Vec<f64> {
        let mut acc = 0.0;
        v.iter()
            .map(|x| {
                acc += *x as f64;
                acc
            })
            .collect()
    }

    /// Exact expectation of every grid point's window factor under a null
    /// `p` (both arms multinomial with `p`), by enumeration: it must be ≤ 1
    /// whatever the reference and the null are.
    #[test]
    fn window_factor_has_expectation_at_most_one_under_any_null() {
        let references: [&[f64]; 3] = [&[0.2, 0.7], &[0.5, 0.6], &[0.05, 0.95]];
        let nulls: [&[f64]; 4] = [
            &[0.2, 0.5, 0.3],
            &[0.9, 0.05, 0.05],
            &[0.01, 0.01, 0.98],
            &[1.0 / 3.0; 3],
        ];
        let mut worst: f64 = 0.0;
        for reference in references {
            for p in nulls {
                for (nc, nb) in [(1, 1), (3, 2), (2, 6), (5, 5)] {
                    let mut mean = vec![0.0; GRID_LEN];
                    for c in compositions(nc, 3) {
                        for b in compositions(nb, 3) {
                            let prob = pmf(&c, p) * pmf(&b, p);
                            let f = window_log_factors(reference, &cumulative(&c), &cumulative(&b))
                                .expect("factors");
                            for (m, l) in mean.iter_mut().zip(f) {
                                *m += prob * l.exp();
                            }
                        }
                    }
                    for (i, m) in mean.into_iter().enumerate() {
                        assert!(m <= 1.0 + 1e-9, "E = {m} > 1 (n {nc}/{nb}, p {p:?})");
                        if i != GRID_HALF {
                            worst = worst.max(m);
                        }
                    }
                }
            }
        }
        // Small shifts are nearly fair bets, so the check is not vacuous.
        assert!(worst > 0.9, "{worst}");
    }

    #[test]
    fn slower_canary_grows_positive_shifts_only() {
        let mut acc = LogLik::default();
        let (mut past_c, mut past_b) = (vec![0.0; 4], vec![0.0; 4]);
        let canary = [5.0, 25.0, 50.0, 60.0];
        let baseline = [15.0, 40.0, 56.0, 60.0];
        for _ in 0..10 {
            add_window(&mut acc, &past_c, &past_b, &canary, &baseline);
            for (a, v) in past_c.iter_mut().zip(&canary) {
                *a += v;
            }
            for (a, v) in past_b.iter_mut().zip(&baseline) {
                *a += v;
            }
        }
        let up = acc.0[GRID_HALF + 8];
        let down = acc.0[GRID_HALF - 8];
        assert!(up > 10.0 && down < 0.0, "up {up} down {down}");
        assert_eq!(acc.0[GRID_HALF], 0.0);
    }

    #[test]
    fn empty_arm_or_bad_shape_changes_nothing() {
        let r = reference_cdf(&[0.0, 0.0], &[0.0, 0.0]);
        assert_eq!(r, vec![0.5]);
        assert!(window_log_factors(&r, &[0.0, 0.0], &[3.0, 5.0]).is_none());
        assert!(window_log_factors(&r, &[1.0, 2.0, 3.0], &[3.0, 5.0]).is_none());
        assert!(window_log_factors(&r, &[f64::NAN, 2.0], &[3.0, 5.0]).is_none());
    }
}

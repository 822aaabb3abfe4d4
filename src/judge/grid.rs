//! Conditional-binomial likelihood ratios on a log-spaced grid of rate ratios.
//!
//! Two arms with event rates `p_c` and `p_b` and request counts `n_c`, `n_b`:
//! conditional on the window's total events, each event is the canary's with
//! probability `s = n_c / (n_c + n_b)` when the rates are equal, and with
//! `θ(ρ) = ρ s / (ρ s + 1 − s)` when `p_c = ρ p_b`. The product over windows
//! of `θ(ρ)^x (1 − θ(ρ))^(n − x) / (s^x (1 − s)^(n − x))` is a nonnegative
//! martingale under equal rates for every fixed `ρ`, and so is any mixture of
//! them with fixed weights; Ville's inequality bounds the chance that it ever
//! reaches `1/α` by `α`. We keep the cumulative log likelihood ratio for every
//! grid point, which is all later windows need (a sufficient running sum).

use serde::{Deserialize, Serialize};

/// Distance between neighbouring grid points in `ln ρ` (ratio step ≈ 1.133).
pub const GRID_STEP: f64 = 0.125;
/// Grid points on each side of `ρ = 1`; the grid spans `e^(±3)` ≈ 1/20 … 20.
pub const GRID_HALF: usize = 24;
/// Number of grid points.
pub const GRID_LEN: usize = 2 * GRID_HALF + 1;

/// The rate ratio at grid index `i`.
pub fn grid_ratio(i: usize) -> f64 {
    ((i as f64 - GRID_HALF as f64) * GRID_STEP).exp()
}

/// Probability that an event is the canary's when its rate is `rho` times the
/// baseline's and it received share `s` of the requests.
pub fn canary_prob(rho: f64, s: f64) -> f64 {
    rho * s / (rho * s + 1.0 - s)
}

/// Which rate ratios count as a regression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `ρ > 1` (canary rate higher).
    Up,
    /// `ρ < 1` (canary rate lower).
    Down,
    /// Either side.
    Both,
}

/// Mixture weights over grid points: a Gaussian bump in `ln ρ` centred at
/// `ln center` with standard deviation `spread` (in `ln ρ` units), restricted
/// to the regression side(s) and excluding `ρ = 1` itself. Sums to 1.
pub fn bump_weights(side: Side, center: f64, spread: f64, min_steps: usize) -> Vec<f64> {
    let mu = center.max(1.0 + 1e-9).ln();
    let spread = spread.max(1e-3);
    let mut w = vec![0.0; GRID_LEN];
    for (i, wi) in w.iter_mut().enumerate() {
        let k = i as isize - GRID_HALF as isize;
        if k.unsigned_abs() < min_steps.max(1) {
            continue;
        }
        let up = k > 0;
        let allowed = match side {
            Side::Up => up,
            Side::Down => !up,
            Side::Both => true,
        };
        if allowed {
            let z = ((k.unsigned_abs() as f64) * GRID_STEP - mu) / spread;
            *wi = (-0.5 * z * z).exp();
        }
    }
    let total: f64 = w.iter().sum();
    if total > 0.0 {
        for wi in &mut w {
            *wi /= total;
        }
    }
    w
}

/// Cumulative log likelihood ratios (each grid ratio against `ρ = 1`),
/// written as base64 of the exact floats ([`super::codec::floats`]).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LogLik(#[serde(with = "super::codec::floats")] pub Vec<f64>);

impl LogLik {
    /// Adds one window: `x` of the `n` events were the canary's, and the canary
    /// had share `s` of requests (or of trials). Windows without information
    /// (no events, a one-sided split, non-finite input) change nothing.
    pub fn add(&mut self, x: f64, n: f64, s: f64) {
        if self.0.len() != GRID_LEN {
            self.0 = vec![0.0; GRID_LEN];
        }
        if !(n.is_finite() && x.is_finite() && n > 0.0 && s > 0.0 && s < 1.0) {
            return;
        }
        let x = x.clamp(0.0, n);
        for (i, a) in self.0.iter_mut().enumerate() {
            let ln_rho = (i as f64 - GRID_HALF as f64) * GRID_STEP;
            // x ln(θ/s) + (n−x) ln((1−θ)/(1−s)) = x ln ρ − n ln(ρ s + 1 − s)
            *a += x * ln_rho - n * (ln_rho.exp() * s + 1.0 - s).ln();
        }
    }

    /// Log of the mixture e-value `Σ w_i exp(ℓ_i)`; 0 before any data.
    pub fn log_e(&self, weights: &[f64]) -> f64 {
        if self.0.len() != GRID_LEN || weights.len() != GRID_LEN {
            return 0.0;
        }
        log_sum_exp(
            self.0
                .iter()
                .zip(weights)
                .filter(|(_, w)| **w > 0.0)
                .map(|(l, w)| l + w.ln()),
        )
    }

    /// Maximum-likelihood ratio, refined by a parabola through the best grid
    /// point and its neighbours; `None` before any data or at the grid edge.
    pub fn mle(&self) -> Option<f64> {
        if self.0.len() != GRID_LEN || self.0.iter().all(|l| *l == 0.0) {
            return None;
        }
        let (best, _) = self
            .0
            .iter()
            .enumerate()
            .fold((0, f64::NEG_INFINITY), |acc, (i, l)| {
                if *l > acc.1 {
                    (i, *l)
                } else {
                    acc
                }
            });
        if best == 0 || best + 1 == GRID_LEN {
            return None;
        }
        let (a, b, c) = (self.0[best - 1], self.0[best], self.0[best + 1]);
        let denom = a - 2.0 * b + c;
        let offset = if denom < 0.0 {
            (0.5 * (a - c) / denom).clamp(-0.5, 0.5)
        } else {
            0.0
        };
        Some(((best as f64 + offset - GRID_HALF as f64) * GRID_STEP).exp())
    }

    /// Anytime-valid `1 − alpha` confidence set for `ρ`, by inverting mixture
    /// e-processes: `ρ0` stays while `Σ π_j(ρ0) exp(ℓ_j − ℓ(ρ0)) < 1/alpha`,
    /// with `π(ρ0)` a Gaussian bump in `ln ρ` around `ρ0`. Endpoints are widened
    /// to the next excluded grid point (conservative between grid points);
    /// `None` means unbounded on that side (beyond the grid's 1/20 … 20).
    pub fn interval(&self, alpha: f64) -> (Option<f64>, Option<f64>) {
        if self.0.len() != GRID_LEN || !(alpha > 0.0 && alpha < 1.0) {
            return (None, None);
        }
        let threshold = (1.0 / alpha).ln();
        let tau = 6.0;
        let mut inside = [false; GRID_LEN];
        for (j0, slot) in inside.iter_mut().enumerate() {
            let norm = log_sum_exp((0..GRID_LEN).map(|j| {
                let z = (j as f64 - j0 as f64) / tau;
                -0.5 * z * z
            }));
            let log_e = log_sum_exp((0..GRID_LEN).map(|j| {
                let z = (j as f64 - j0 as f64) / tau;
                -0.5 * z * z - norm + self.0[j] - self.0[j0]
            }));
            *slot = log_e < threshold;
        }
        let first = inside.iter().position(|v| *v);
        let last = inside.iter().rposition(|v| *v);
        match (first, last) {
            (Some(f), Some(l)) => {
                let lower = if f == 0 {
                    None
                } else {
                    Some(grid_ratio(f - 1))
                };
                let upper = if l + 1 == GRID_LEN {
                    None
                } else {
                    Some(grid_ratio(l + 1))
                };
                (lower, upper)
            }
            _ => (None, None),
        }
    }
}

/// `ln Σ exp(v)`, stable; `-inf` for an empty input.
pub fn log_sum_exp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// Kullback–Leibler divergence per event between the alternative `ρ` and the
/// null at share `s` (nats): the expected growth of `ln e` per event.
pub fn kl_per_event(rho: f64, s: f64) -> f64 {
    let th = canary_prob(rho, s);
    if !(s > 0.0 && s < 1.0 && th > 0.0 && th < 1.0) {
        return 0.0;
    }
    th * (th / s).ln() + (1.0 - th) * ((1.0 - th) / (1.0 - s)).ln()
}

/// Mixture weight within one grid step of `rho` (what a fixed-`ρ` test
/// "pays" for not knowing `ρ` in advance).
pub fn weight_near(weights: &[f64], rho: f64) -> f64 {
    if weights.len() != GRID_LEN || rho.is_nan() || rho <= 0.0 {
        return 0.0;
    }
    let pos = rho.ln() / GRID_STEP + GRID_HALF as f64;
    weights
        .iter()
        .enumerate()
        .filter(|(i, _)| (*i as f64 - pos).abs() <= 1.0)
        .map(|(_, w)| *w)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_centred_on_one() {
        assert!((grid_ratio(GRID_HALF) - 1.0).abs() < 1e-12);
        assert!((grid_ratio(GRID_LEN - 1) - 3f64.exp()).abs() < 1e-9);
    }

    #[test]
    fn weights_sum_to_one_and_respect_side() {
        let w = bump_weights(Side::Up, 2.0, 0.8, 1);
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(w[..=GRID_HALF].iter().all(|x| *x == 0.0));
        let d = bump_weights(Side::Down, 2.0, 0.8, 1);
        assert!(d[GRID_HALF..].iter().all(|x| *x == 0.0));
        for k in 1..=GRID_HALF {
            assert!((w[GRID_HALF + k] - d[GRID_HALF - k]).abs() < 1e-15);
        }
    }

    #[test]
    fn log_lik_matches_binomial_formula() {
        let mut l = LogLik::default();
        l.add(7.0, 10.0, 0.4);
        let i = GRID_HALF + 8;
        let th = canary_prob(grid_ratio(i), 0.4);
        let direct = 7.0 * (th / 0.4).ln() + 3.0 * ((1.0 - th) / 0.6).ln();
        assert!((l.0[i] - direct).abs() < 1e-9);
        assert!(l.0[GRID_HALF].abs() < 1e-12);
    }

    #[test]
    fn mle_recovers_ratio() {
        let mut l = LogLik::default();
        // canary share 0.5, events split 2:1 => ratio 2
        l.add(2000.0, 3000.0, 0.5);
        let m = l.mle().unwrap_or(0.0);
        assert!((m - 2.0).abs() < 0.05, "{m}");
        let (lo, hi) = l.interval(0.05);
        assert!(lo.unwrap_or(0.0) < 2.0 && hi.unwrap_or(f64::MAX) > 2.0);
        assert!(lo.unwrap_or(0.0) > 1.5 && hi.unwrap_or(f64::MAX) < 2.6);
    }

    #[test]
    fn empty_interval_is_unbounded() {
        let l = LogLik::default();
        assert_eq!(l.interval(0.05), (None, None));
        assert_eq!(l.log_e(&bump_weights(Side::Up, 2.0, 1.0, 1)), 0.0);
    }
}

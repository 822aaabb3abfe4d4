//! Simulated traffic: how requests split between the arms, and one window's
//! metrics drawn from it (Poisson requests, binomial errors, lognormal latency
//! in Prometheus' default buckets).

use rand::Rng;
use rand_distr::{Binomial, Distribution, Normal, Poisson};
use serde::Serialize;

use crate::observation::{ArmValue, Histogram, MetricWindow, Sample, WindowObservation};
use crate::policy::{BaselineMode, MetricKind, Policy, Strategy, Traffic};

use super::cluster::{Cluster, NEW_VERSION};
use super::Regression;

/// Share of production traffic sent to a blue-green preview for its analysis.
pub const PREVIEW_SHARE: f64 = 0.1;
/// σ of the log of request latency.
pub const LATENCY_SIGMA: f64 = 0.5;
pub use crate::observation::DEFAULT_BUCKETS;
/// Mean of a simulated gauge (same for both arms: gauges never regress here).
const GAUGE_MEAN: f64 = 1.0;
/// Standard deviation of a simulated gauge.
const GAUGE_SD: f64 = 0.05;

/// The release's behaviour under load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Load {
    /// Total requests per second to the service.
    pub rps: f64,
    /// Error ratio of the stable release.
    pub error_rate: f64,
    /// Median latency of the stable release, in seconds.
    pub latency_secs: f64,
    /// How the new release differs.
    pub regression: Regression,
}

/// Expected requests each arm has received since the window opened.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Exposure {
    /// Canary arm.
    pub canary: f64,
    /// Baseline arm.
    pub baseline: f64,
    /// The canary could have served requests but was sent none for part of
    /// the window (`--no-traffic`): its metrics are zero, not missing.
    pub silenced: bool,
}

impl Exposure {
    /// Adds `secs` seconds at the cluster's current split; with
    /// `canary_silenced` the canary's share goes nowhere (the baseline keeps
    /// its traffic).
    pub fn add(
        &mut self,
        policy: &Policy,
        cluster: &Cluster,
        now: u64,
        rps: f64,
        secs: f64,
        canary_silenced: bool,
    ) {
        let (canary, baseline) = arm_rates(policy, cluster, now, rps);
        if canary_silenced {
            self.silenced |= canary > 0.0;
        } else {
            self.canary += canary * secs;
        }
        self.baseline += baseline * secs;
    }
}

/// Requests per second reaching the canary and the baseline arm right now.
pub fn arm_rates(policy: &Policy, cluster: &Cluster, now: u64, rps: f64) -> (f64, f64) {
    let c = f64::from(cluster.canary.ready(now));
    let b = f64::from(cluster.baseline.ready(now));
    let s = f64::from(cluster.stable.ready(now));
    if matches!(policy.strategy, Strategy::BlueGreen(_)) {
        // Before the switch the new version only sees preview traffic.
        return if cluster.active_version == NEW_VERSION {
            (if c > 0.0 { rps } else { 0.0 }, 0.0)
        } else {
            (if c > 0.0 { rps * PREVIEW_SHARE } else { 0.0 }, rps)
        };
    }
    let (canary, behind_primary) = match policy.traffic {
        Traffic::Replicas => {
            let all = c + b + s;
            if all == 0.0 {
                return (0.0, 0.0);
            }
            (rps * c / all, rps * (b + s) / all)
        }
        Traffic::IngressNginx { .. } | Traffic::GatewayApi { .. } => {
            // A canary backend without ready pods gets nothing.
            let w = if c > 0.0 {
                f64::from(cluster.weight) / 100.0
            } else {
                0.0
            };
            (rps * w, rps * (1.0 - w))
        }
    };
    let base_pods = match policy.baseline {
        BaselineMode::Fresh => b,
        BaselineMode::Stable => s,
    };
    let baseline = if b + s > 0.0 {
        behind_primary * base_pods / (b + s)
    } else {
        0.0
    };
    (canary, baseline)
}

/// Requests and errors of one arm in one window, for the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct ArmTraffic {
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
}

/// Both arms' requests in one window.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct WindowTraffic {
    /// Canary arm.
    pub canary: ArmTraffic,
    /// Baseline arm.
    pub baseline: ArmTraffic,
}

/// One arm's draws for a window.
struct ArmDraw {
    traffic: ArmTraffic,
    buckets: Vec<f64>,
}

fn poisson<R: Rng>(mean: f64, rng: &mut R) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    Poisson::new(mean).map_or(0, |d| d.sample(rng) as u64)
}

fn binomial<R: Rng>(n: u64, p: f64, rng: &mut R) -> u64 {
    Binomial::new(n, p.clamp(0.0, 1.0)).map_or(0, |d| d.sample(rng))
}

/// P(latency <= le) for a lognormal with this median.
fn lognormal_cdf(le: f64, median: f64) -> f64 {
    let z = (le.ln() - median.ln()) / LATENCY_SIGMA;
    0.5 * statrs::function::erf::erfc(-z / std::f64::consts::SQRT_2)
}

/// Cumulative bucket counts of `n` lognormal latencies (a multinomial draw,
/// so the cost does not grow with traffic).
fn latency_buckets<R: Rng>(n: u64, median: f64, rng: &mut R) -> Vec<f64> {
    let mut counts = Vec::with_capacity(DEFAULT_BUCKETS.len() + 1);
    let (mut left, mut below, mut cumulative) = (n, 0.0, 0u64);
    for le in DEFAULT_BUCKETS {
        let p = lognormal_cdf(le, median);
        // Conditional probability of this bucket given the ones before.
        let cond = if below >= 1.0 {
            0.0
        } else {
            (p - below) / (1.0 - below)
        };
        let k = binomial(left, cond, rng);
        left -= k;
        cumulative += k;
        below = p;
        counts.push(cumulative as f64);
    }
    counts.push(n as f64);
    counts
}

fn draw_arm<R: Rng>(exposure: f64, error_rate: f64, median: f64, rng: &mut R) -> ArmDraw {
    let requests = poisson(exposure, rng);
    let errors = binomial(requests, error_rate, rng);
    ArmDraw {
        traffic: ArmTraffic { requests, errors },
        buckets: latency_buckets(requests, median, rng),
    }
}

fn arm_value<R: Rng>(kind: &MetricKind, draw: &ArmDraw, rng: &mut R) -> ArmValue {
    let sample = match kind {
        MetricKind::Errors { .. } => Sample::Counts {
            errors: draw.traffic.errors as f64,
            total: draw.traffic.requests as f64,
        },
        MetricKind::Latency { .. } => {
            let mut le = DEFAULT_BUCKETS.to_vec();
            le.push(f64::INFINITY);
            Sample::Buckets(Histogram {
                le,
                counts: draw.buckets.clone(),
            })
        }
        MetricKind::Gauge { .. } => {
            let value = Normal::new(GAUGE_MEAN, GAUGE_SD).map_or(GAUGE_MEAN, |d| d.sample(rng));
            Sample::Gauge(value)
        }
    };
    ArmValue::Sample(sample)
}

/// Draws one closed window for every policy metric.
pub fn draw_window<R: Rng>(
    policy: &Policy,
    load: &Load,
    exposure: Exposure,
    at_secs: f64,
    expected_canary_share: Option<f64>,
    rng: &mut R,
) -> (WindowObservation, WindowTraffic) {
    let (canary_errors, canary_latency) = load.regression.apply(load.error_rate, load.latency_secs);
    let canary = draw_arm(exposure.canary, canary_errors, canary_latency, rng);
    let baseline = draw_arm(exposure.baseline, load.error_rate, load.latency_secs, rng);
    let no_pods = |none: bool| none.then(|| ArmValue::NoData("no ready pods".into()));
    // A silenced canary has ready pods: its series exist and read zero.
    let canary_gone = exposure.canary <= 0.0 && !exposure.silenced;
    let metrics = policy
        .analysis
        .metrics
        .iter()
        .map(|m| MetricWindow {
            name: m.name.clone(),
            canary: no_pods(canary_gone).unwrap_or_else(|| arm_value(&m.kind, &canary, rng)),
            baseline: no_pods(exposure.baseline <= 0.0)
                .unwrap_or_else(|| arm_value(&m.kind, &baseline, rng)),
        })
        .collect();
    let observation = WindowObservation {
        at_secs,
        expected_canary_share,
        metrics,
    };
    let traffic = WindowTraffic {
        canary: canary.traffic,
        baseline: baseline.traffic,
    };
    (observation, traffic)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn lognormal_median_sits_at_half() {
        assert!((lognormal_cdf(0.1, 0.1) - 0.5).abs() < 1e-12);
        assert!(lognormal_cdf(10.0, 0.1) > 0.999_999);
    }

    #[test]
    fn buckets_are_cumulative_and_centred_on_the_median() {
        let mut rng = StdRng::seed_from_u64(7);
        let counts = latency_buckets(100_000, 0.1, &mut rng);
        assert_eq!(counts.len(), DEFAULT_BUCKETS.len() + 1);
        assert!(counts.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(counts[counts.len() - 1], 100_000.0);
        // le=0.1 is the median bucket bound.
        let at_median = counts[4] / 100_000.0;
        assert!((at_median - 0.5).abs() < 0.01, "{at_median}");
    }
}

//! Every policy default, in one place: a field left out of a policy file
//! takes its value from here (docs/policy.md lists them for users).

use std::time::Duration;

use super::types::{CanarySize, Direction, MetricKind, MetricSpec, OnNoData, Step, Template};
use super::values::WINDOW_INCREASE;

/// `progressDeadline`: how long a new canary may take to become ready
/// before it is rolled back.
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);
/// `analysis.interval`: the length of one observation window.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// `analysis.maxDuration`, as a multiple of the time the strategy observes in
/// total.
pub const DEFAULT_MAX_DURATION_FACTOR: u32 = 3;
/// `analysis.alpha`: the rollout's whole false-rollback budget.
pub const DEFAULT_ALPHA: f64 = 0.05;
/// `analysis.minRequestsPerStep` when a metric counts requests: a step whose
/// canary served fewer requests has not been tested by traffic. (A policy of
/// gauges only defaults to 0.)
pub const DEFAULT_MIN_REQUESTS_PER_STEP: u64 = 50;
/// `analysis.onNoData`: a window without data holds the rollout.
pub const DEFAULT_ON_NO_DATA: OnNoData = OnNoData::Hold;
/// `analysis.classic.passScore` (mode classic).
pub const DEFAULT_PASS_SCORE: f64 = 95.0;
/// `analysis.classic.marginalScore` (mode classic).
pub const DEFAULT_MARGINAL_SCORE: f64 = 75.0;
/// A metric's `direction`: higher is worse.
pub const DEFAULT_DIRECTION: Direction = Direction::Increase;
/// A metric's `minEffect` for kind errors (+50%).
pub const DEFAULT_ERRORS_MIN_EFFECT: f64 = 0.5;
/// A metric's `minEffect` for kinds latency and gauge (+10%).
pub const DEFAULT_MIN_EFFECT: f64 = 0.1;
/// A metric's `weight` in the classic score.
pub const DEFAULT_METRIC_WEIGHT: f64 = 1.0;
/// A metric's `critical`: a failing metric that is not critical is weighed
/// with the others instead of rolling back alone.
pub const DEFAULT_CRITICAL: bool = false;
/// A step's (or blue-green's) `gate`: no manual approval.
pub const DEFAULT_GATE: bool = false;
/// `strategy.blueGreen.keepOldFor`: how long the old version stays
/// up for an instant switch-back.
pub const DEFAULT_KEEP_OLD_FOR: Duration = Duration::from_secs(600);
/// `strategy.blueGreen.versionLabel`: the pod label the Service selects on.
pub const DEFAULT_VERSION_LABEL: &str = "version";
/// `alerts.guardWindow`: after promotion, matching alerts still
/// roll back for this long.
pub const DEFAULT_GUARD_WINDOW: Duration = Duration::from_secs(600);

/// The classic plan: 1 pod for 10m, then 10%, 50%, 100% for 2m each.
pub fn default_steps() -> Vec<Step> {
    let step = |size, secs| Step {
        size: Some(size),
        weight: None,
        observe: Duration::from_secs(secs),
        gate: DEFAULT_GATE,
    };
    vec![
        step(CanarySize::Replicas(1), 600),
        step(CanarySize::Percent(10.0), 120),
        step(CanarySize::Percent(50.0), 120),
        step(CanarySize::Percent(100.0), 120),
    ]
}

/// The metrics judged when a policy omits `analysis.metrics`: the 5xx error
/// ratio (critical) and the request latency histogram, per pod role.
///
/// Counts use [`WINDOW_INCREASE`], so they are the exact number of requests
/// scraped within each window (Prometheus' `increase` would extrapolate).
pub fn default_metrics() -> Vec<MetricSpec> {
    let sel = r#"namespace="{{namespace}}",pod=~"{{podRegex}}""#;
    vec![
        MetricSpec {
            name: "errors".into(),
            kind: MetricKind::Errors {
                errors: Template(format!(
                    r#"sum({WINDOW_INCREASE}(http_requests_total{{{sel},code=~"5.."}}))"#
                )),
                total: Template(format!(
                    "sum({WINDOW_INCREASE}(http_requests_total{{{sel}}}))"
                )),
            },
            direction: DEFAULT_DIRECTION,
            bounds: None,
            critical: true,
            min_effect: DEFAULT_ERRORS_MIN_EFFECT,
            weight: DEFAULT_METRIC_WEIGHT,
        },
        MetricSpec {
            name: "latency".into(),
            kind: MetricKind::Latency {
                buckets: Template(format!(
                    "sum by (le) ({WINDOW_INCREASE}(http_request_duration_seconds_bucket{{{sel}}}))"
                )),
            },
            direction: DEFAULT_DIRECTION,
            bounds: None,
            critical: false,
            min_effect: DEFAULT_MIN_EFFECT,
            weight: DEFAULT_METRIC_WEIGHT,
        },
    ]
}

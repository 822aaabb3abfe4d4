//! Per-metric explanations attached to a [`super::Verdict`], and the parts
//! both modes share (arm summaries, absolute bounds, the SRM report).

use serde::{Deserialize, Serialize};

use super::histogram::CheckedHistogram;
use super::record::SRM_ALPHA;
use super::{Evidence, MetricEvidence};
use crate::policy::{Direction, MetricKind, MetricSpec};

/// How one metric came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MetricStatus {
    /// No evidence of a regression (yet).
    Pass,
    /// Shown to be no worse than `min_effect` (sequential mode).
    NoWorse,
    /// Classic mode: the score is marginal.
    Marginal,
    /// Evidence of a regression.
    Fail,
    /// No usable data.
    NoData,
}

/// A confidence interval; `None` bounds are unbounded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interval {
    /// Lower bound.
    pub lower: Option<f64>,
    /// Upper bound.
    pub upper: Option<f64>,
    /// Coverage, e.g. 0.975.
    pub level: f64,
    /// Whether the coverage holds at every window (anytime-valid).
    pub anytime: bool,
}

/// One arm's cumulative numbers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArmReport {
    /// Requests (errors metric) or observations (latency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
    /// Errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<f64>,
    /// Errors / requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Median latency, interpolated within buckets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50: Option<f64>,
    /// 90th percentile latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p90: Option<f64>,
    /// 99th percentile latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99: Option<f64>,
    /// Mean gauge value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    /// Sample size used by the test (windows in classic mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<f64>,
}

/// One latency boundary's "slower than `le`" test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BoundaryReport {
    /// The bucket bound (seconds, as in `le`).
    pub le: f64,
    /// Canary share of observations above `le`.
    pub canary_above: f64,
    /// Baseline share of observations above `le`.
    pub baseline_above: f64,
    /// Estimated ratio of exceedance rates (canary / baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// e-value of this boundary's test.
    pub e_value: f64,
    /// Estimated odds ratio of exceeding `le` (canary odds / baseline odds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub odds_ratio: Option<f64>,
}

/// One of the e-processes whose fixed-weight mixture is a latency metric's
/// e-value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentReport {
    /// `shift` (proportional-odds test over all buckets) or `bounds` (mean
    /// of the per-bound exceedance tests).
    pub name: String,
    /// Its weight in the metric's e-value.
    pub weight: f64,
    /// Its e-value.
    pub e_value: f64,
    /// `shift`: estimated common odds ratio of exceeding a bound; `bounds`:
    /// the exceedance ratio at `le`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<f64>,
    /// The bound that carried the evidence: `shift`: the largest difference
    /// between the arms' shares above a bound; `bounds`: the bound with the
    /// largest e-value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub le: Option<f64>,
}

/// Absolute per-window bounds check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BoundsReport {
    /// Lowest acceptable value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Highest acceptable value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// What was checked (`error ratio`, `p99 seconds`, `value`).
    pub checked: String,
    /// Windows whose canary value broke a bound.
    pub failed_windows: u32,
    /// Failed windows that roll back.
    pub failure_limit: u32,
    /// The last canary value checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_value: Option<f64>,
}

/// How much more traffic would detect `min_effect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficNeeded {
    /// The regression size assumed (ratio, e.g. 1.5).
    pub effect: f64,
    /// More events (errors, or requests slower than a bound) expected to be
    /// needed, on average, to cross the threshold at that effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more_events: Option<f64>,
    /// More requests (canary + baseline) that would bring those events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more_requests: Option<f64>,
    /// How the estimate was made or why there is none.
    pub note: String,
}

/// One metric's explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricReport {
    /// Metric name.
    pub name: String,
    /// `errors`, `latency` or `gauge`.
    pub kind: String,
    /// The statistical test used.
    pub test: String,
    /// Outcome.
    pub status: MetricStatus,
    /// Whether the metric is critical.
    pub critical: bool,
    /// `increase`, `decrease` or `either`.
    pub direction: String,
    /// Windows with usable data / without.
    pub windows: u32,
    /// Windows without usable data.
    pub no_data_windows: u32,
    /// This metric's share of the false-rollback budget.
    pub alpha: f64,
    /// Canary numbers.
    pub canary: ArmReport,
    /// Baseline numbers.
    pub baseline: ArmReport,
    /// Point estimate (ratio canary/baseline; HL shift in classic mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<f64>,
    /// Interval for the estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Interval>,
    /// e-value (sequential mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_value: Option<f64>,
    /// p-value (classic mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// Statistic (Mann-Whitney U of the canary, classic mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic: Option<f64>,
    /// Rollback threshold for the e-value (`1/alpha`) or p-value (`alpha`).
    pub threshold: f64,
    /// Latency: per-boundary tests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boundaries: Vec<BoundaryReport>,
    /// Latency: the e-processes mixed into `e_value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ComponentReport>,
    /// Absolute bounds, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounds: Option<BoundsReport>,
    /// Traffic needed to detect `min_effect` (Continue/Inconclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed: Option<TrafficNeeded>,
    /// Extra detail (data problems, notes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Classic-mode score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScoreReport {
    /// Weighted score 0..=100.
    pub score: f64,
    /// Pass threshold.
    pub pass: f64,
    /// Marginal threshold.
    pub marginal: f64,
    /// Per group: name, weight, score.
    pub groups: Vec<(String, f64, f64)>,
}

/// Sample-ratio-mismatch check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SrmReport {
    /// Canary requests.
    pub canary: f64,
    /// Baseline requests.
    pub baseline: f64,
    /// Observed canary share.
    pub observed_share: f64,
    /// Intended canary share (request-weighted over windows).
    pub expected_share: f64,
    /// Largest e-value seen.
    pub e_value: f64,
    /// Threshold `1/alpha_srm`.
    pub threshold: f64,
    /// Whether the split is broken.
    pub mismatch: bool,
}

pub(super) fn srm_report(ev: &Evidence) -> Option<SrmReport> {
    let s = &ev.srm;
    let total = s.canary + s.baseline;
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    Some(SrmReport {
        canary: s.canary,
        baseline: s.baseline,
        observed_share: s.canary / total,
        expected_share: s.expected_canary / total,
        e_value: capped_exp(s.max_log_e),
        threshold: 1.0 / SRM_ALPHA,
        mismatch: s.flagged_at.is_some(),
    })
}

/// `exp`, capped so JSON never sees infinity.
pub fn capped_exp(log: f64) -> f64 {
    if log.is_nan() {
        return 1.0;
    }
    log.min(700.0).exp()
}

/// Reason of a verdict before any window (both modes).
pub(super) const NO_WINDOWS_REASON: &str = "no windows observed yet";

/// Lower-case name of a metric kind, as in the policy and the report.
pub fn kind_name(kind: &MetricKind) -> &'static str {
    match kind {
        MetricKind::Errors { .. } => "errors",
        MetricKind::Latency { .. } => "latency",
        MetricKind::Gauge { .. } => "gauge",
    }
}

/// Lower-case name of a direction.
pub fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::Increase => "increase",
        Direction::Decrease => "decrease",
        Direction::Either => "either",
    }
}

/// Cumulative per-arm numbers for a metric.
pub(super) fn arm_reports(m: &MetricEvidence) -> (ArmReport, ArmReport) {
    if let Some(c) = &m.counts {
        let rate = |e: f64, t: f64| (t > 0.0).then(|| e / t);
        return (
            ArmReport {
                total: Some(c.canary_total),
                errors: Some(c.canary_errors),
                rate: rate(c.canary_errors, c.canary_total),
                ..ArmReport::default()
            },
            ArmReport {
                total: Some(c.baseline_total),
                errors: Some(c.baseline_errors),
                rate: rate(c.baseline_errors, c.baseline_total),
                ..ArmReport::default()
            },
        );
    }
    if let Some(l) = &m.latency {
        let arm = |cum: &Vec<f64>| {
            let h = CheckedHistogram {
                le: l.le.clone(),
                cumulative: cum.clone(),
            };
            ArmReport {
                total: Some(h.total()),
                p50: h.quantile(0.5),
                p90: h.quantile(0.9),
                p99: h.quantile(0.99),
                ..ArmReport::default()
            }
        };
        return (arm(&l.canary), arm(&l.baseline));
    }
    if let Some(g) = &m.gauge {
        let n = f64::from(m.windows);
        let mean = |s: f64| (n > 0.0).then(|| s / n);
        return (
            ArmReport {
                mean: mean(g.canary_sum),
                n: Some(n),
                ..ArmReport::default()
            },
            ArmReport {
                mean: mean(g.baseline_sum),
                n: Some(n),
                ..ArmReport::default()
            },
        );
    }
    (ArmReport::default(), ArmReport::default())
}

/// A report of `spec` that says only what the evidence `m` holds (arms,
/// windows, bounds, the last data problem): status `Pass` and no test
/// result yet; each mode fills in its test.
pub(super) fn base_report(
    spec: &MetricSpec,
    m: Option<&MetricEvidence>,
    test: String,
    alpha: f64,
    threshold: f64,
) -> MetricReport {
    let (canary, baseline) = m.map(arm_reports).unwrap_or_default();
    MetricReport {
        name: spec.name.clone(),
        kind: kind_name(&spec.kind).into(),
        test,
        status: MetricStatus::Pass,
        critical: spec.critical,
        direction: direction_name(spec.direction).into(),
        windows: m.map_or(0, |m| m.windows),
        no_data_windows: m.map_or(0, |m| m.no_data),
        alpha,
        canary,
        baseline,
        estimate: None,
        interval: None,
        e_value: None,
        p_value: None,
        statistic: None,
        threshold,
        boundaries: Vec::new(),
        components: Vec::new(),
        bounds: bounds_report(spec, m),
        needed: None,
        note: m.and_then(|m| m.last_problem.clone()),
    }
}

/// Failed windows that roll back a metric through its absolute bounds:
/// critical metrics at the first failed window, others after three (as
/// Flagger's failed-check threshold; the policy has no field for it yet).
pub fn bounds_failure_limit(critical: bool) -> u32 {
    if critical {
        1
    } else {
        3
    }
}

/// Flagger-style absolute check of each window's canary value.
pub(super) fn bounds_report(spec: &MetricSpec, m: Option<&MetricEvidence>) -> Option<BoundsReport> {
    let bounds = spec.bounds?;
    if bounds.min.is_none() && bounds.max.is_none() {
        return None;
    }
    // A latency metric seen only in windows where one arm had data has no
    // latency sums yet, but its canary points carry a p99.
    let is_latency =
        m.is_some_and(|m| m.latency.is_some() || m.series.iter().any(|p| p.c99.is_some()));
    let checked = if m.is_some_and(|m| m.counts.is_some()) {
        "error ratio per window"
    } else if is_latency {
        "canary p99 per window (seconds)"
    } else {
        "value per window"
    };
    let mut failed = 0u32;
    let mut last = None;
    for p in m.map(|m| m.series.as_slice()).unwrap_or(&[]) {
        let v = if is_latency { p.c99 } else { p.c };
        if let Some(v) = v {
            last = Some(v);
            let low = bounds.min.is_some_and(|min| v < min);
            let high = bounds.max.is_some_and(|max| v > max);
            if low || high {
                failed = failed.saturating_add(1);
            }
        }
    }
    Some(BoundsReport {
        min: bounds.min,
        max: bounds.max,
        checked: checked.into(),
        failed_windows: failed,
        failure_limit: bounds_failure_limit(spec.critical),
        last_value: last,
    })
}

/// Marks as failed each report whose bounds broke in `failure_limit` windows
/// or more; returns their indices.
pub(super) fn fail_broken_bounds<'a>(
    reports: impl IntoIterator<Item = &'a mut MetricReport>,
) -> Vec<usize> {
    let mut failed = Vec::new();
    for (i, r) in reports.into_iter().enumerate() {
        if let Some(b) = &r.bounds {
            if b.failed_windows >= b.failure_limit {
                r.status = MetricStatus::Fail;
                failed.push(i);
            }
        }
    }
    failed
}

/// Short number formatting for one-line reasons.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if v.fract() == 0.0 && a < 1e9 {
        format!("{v:.0}")
    } else if !(1e-3..1e6).contains(&a) {
        format!("{v:.2e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// Formats an optional number (`-` when missing).
pub fn opt(v: Option<f64>) -> String {
    v.map(num).unwrap_or_else(|| "-".into())
}

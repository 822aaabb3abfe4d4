//! Classic (Kayenta-style) mode: each metric's per-window values of canary
//! and baseline are compared with a Mann-Whitney U test and a Hodges–Lehmann
//! interval; a metric fails when the interval clears a tolerance around zero
//! in a bad direction and the mean ratio exceeds the allowed change. Metrics
//! form weighted groups; the score is the weighted share of passing metrics.
//! Repeated classic judging does NOT control false rollbacks over time (see
//! `docs/benchmarks.md`); it exists for teams migrating from Kayenta.

use super::mannwhitney::{hodges_lehmann, mann_whitney};
use super::report::{
    base_report, fail_broken_bounds, kind_name, num, opt, srm_report, Interval, MetricReport,
    MetricStatus, ScoreReport, SrmReport, NO_WINDOWS_REASON,
};
use super::{Decision, Evidence, JudgeOptions, MetricEvidence, Verdict};
use crate::policy::{Analysis, ClassicSettings, Direction, MetricKind, MetricSpec};

/// What to do with undefined per-window values (e.g. an error ratio of a
/// window without requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NanStrategy {
    /// Drop them (Kayenta's default).
    #[default]
    Remove,
    /// Treat them as 0.
    Replace,
}

/// Outlier handling per arm before the test.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum OutlierStrategy {
    /// Keep every value.
    #[default]
    Keep,
    /// Drop values outside `[Q1 − f·IQR, Q3 + f·IQR]` (quartiles interpolated
    /// linearly, as numpy's default).
    RemoveIqr(f64),
}

/// Classic-mode settings of one metric that the policy does not carry yet.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassicMetricConfig {
    /// Group name (default: the metric kind).
    pub group: Option<String>,
    /// A higher canary fails only if mean(canary)/mean(baseline) is at least this.
    pub allowed_increase: f64,
    /// A lower canary fails only if the mean ratio is at most this.
    pub allowed_decrease: f64,
    /// The interval must clear `tolerance × |HL estimate|` (Kayenta: 0.25).
    pub tolerance: f64,
    /// Interval confidence (default `1 − alpha`).
    pub confidence: Option<f64>,
    /// Undefined values.
    pub nan: NanStrategy,
    /// Outliers.
    pub outliers: OutlierStrategy,
}

impl Default for ClassicMetricConfig {
    fn default() -> Self {
        ClassicMetricConfig {
            group: None,
            allowed_increase: 1.0,
            allowed_decrease: 1.0,
            tolerance: 0.25,
            confidence: None,
            nan: NanStrategy::Remove,
            outliers: OutlierStrategy::Keep,
        }
    }
}

/// Fewest values per arm before a metric is judged.
pub const MIN_VALUES: usize = 3;

/// Outcome of one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    /// Canary no different (or not enough so).
    Pass,
    /// Canary higher.
    High,
    /// Canary lower.
    Low,
    /// Too few values.
    NoData,
}

/// Numbers behind one metric's classification.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassicResult {
    /// The classification.
    pub class: Classification,
    /// Values used (canary, baseline).
    pub n: (usize, usize),
    /// Means (canary, baseline).
    pub means: (f64, f64),
    /// U of the canary.
    pub u: Option<f64>,
    /// Two-sided p-value.
    pub p: Option<f64>,
    /// HL estimate and interval.
    pub hl: Option<(f64, f64, f64)>,
}

/// Linear-interpolated quantile of sorted data (numpy's default).
fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Applies the NaN and outlier strategies to one arm's values.
pub fn clean(values: &[Option<f64>], nan: NanStrategy, outliers: OutlierStrategy) -> Vec<f64> {
    let mut v: Vec<f64> = values
        .iter()
        .filter_map(|x| match (x.filter(|x| x.is_finite()), nan) {
            (Some(x), _) => Some(x),
            (None, NanStrategy::Replace) => Some(0.0),
            (None, NanStrategy::Remove) => None,
        })
        .collect();
    if let OutlierStrategy::RemoveIqr(f) = outliers {
        if v.len() >= 4 && f.is_finite() && f >= 0.0 {
            let mut s = v.clone();
            s.sort_by(f64::total_cmp);
            let (q1, q3) = (quantile_sorted(&s, 0.25), quantile_sorted(&s, 0.75));
            let iqr = q3 - q1;
            let (lo, hi) = (q1 - f * iqr, q3 + f * iqr);
            v.retain(|x| *x >= lo && *x <= hi);
        }
    }
    v
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Kayenta-style classification of canary values against baseline values.
pub fn classify(
    canary: &[f64],
    baseline: &[f64],
    direction: Direction,
    cfg: &ClassicMetricConfig,
    confidence: f64,
) -> ClassicResult {
    let means = (mean(canary), mean(baseline));
    let n = (canary.len(), baseline.len());
    let mut r = ClassicResult {
        class: Classification::NoData,
        n,
        means,
        u: None,
        p: None,
        hl: None,
    };
    if n.0 < MIN_VALUES || n.1 < MIN_VALUES {
        return r;
    }
    r.class = Classification::Pass;
    let (Some(mw), Some(hl)) = (
        mann_whitney(canary, baseline),
        hodges_lehmann(canary, baseline, confidence),
    ) else {
        return r;
    };
    r.u = Some(mw.u1);
    r.p = Some(mw.p_value);
    r.hl = Some((hl.estimate, hl.lower, hl.upper));
    let bound = cfg.tolerance.max(0.0) * hl.estimate.abs();
    let ratio = if means.1 != 0.0 {
        means.0 / means.1
    } else if means.0 > 0.0 {
        f64::INFINITY
    } else if means.0 < 0.0 {
        f64::NEG_INFINITY
    } else {
        1.0
    };
    let up = matches!(direction, Direction::Increase | Direction::Either);
    let down = matches!(direction, Direction::Decrease | Direction::Either);
    if up && hl.lower > bound && ratio >= cfg.allowed_increase {
        r.class = Classification::High;
    } else if down && hl.upper < -bound && ratio <= cfg.allowed_decrease {
        r.class = Classification::Low;
    }
    r
}

fn config_for<'a>(
    options: &'a JudgeOptions,
    name: &str,
    default: &'a ClassicMetricConfig,
) -> &'a ClassicMetricConfig {
    options
        .classic
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, c)| c)
        .unwrap_or(default)
}

/// One metric group's weight and how many of its metrics passed.
struct Group {
    name: String,
    /// Sum of its metrics' weights.
    weight: f64,
    /// Metrics that passed.
    passed: f64,
    /// Metrics with enough values to classify.
    judged: f64,
}

/// Every metric's report plus what the rollout-level decision needs.
struct Tally {
    reports: Vec<MetricReport>,
    /// In order of first appearance.
    groups: Vec<Group>,
    /// Indices of failed critical metrics.
    critical_fail: Vec<usize>,
    /// The first metric that cannot clear the release now, and why.
    missing: Option<String>,
}

impl Tally {
    /// The group called `name`, added empty when new.
    fn group(&mut self, name: String) -> &mut Group {
        let idx = match self.groups.iter().position(|g| g.name == name) {
            Some(i) => i,
            None => {
                self.groups.push(Group {
                    name,
                    weight: 0.0,
                    passed: 0.0,
                    judged: 0.0,
                });
                self.groups.len() - 1
            }
        };
        &mut self.groups[idx]
    }
}

/// A metric's weight in its group (1 unless a positive number).
fn metric_weight(spec: &MetricSpec) -> f64 {
    if spec.weight.is_finite() && spec.weight > 0.0 {
        spec.weight
    } else {
        1.0
    }
}

/// Judges each metric and adds it to its group.
fn tally(analysis: &Analysis, options: &JudgeOptions, evidence: &Evidence, alpha: f64) -> Tally {
    let default_cfg = ClassicMetricConfig::default();
    let mut t = Tally {
        reports: Vec::new(),
        groups: Vec::new(),
        critical_fail: Vec::new(),
        missing: None,
    };
    for spec in &analysis.metrics {
        let cfg = config_for(options, &spec.name, &default_cfg);
        let confidence = cfg.confidence.unwrap_or(1.0 - alpha).clamp(0.5, 0.999_999);
        let m = evidence.metric(&spec.name);
        let (report, class) = judge_metric(spec, m, cfg, confidence);
        let stale = m.map_or(Some(String::from("absent")), |m| m.stale_note());
        if let Some(why) = stale.filter(|_| t.missing.is_none()) {
            t.missing = Some(format!("{}: {why}", spec.name));
        }
        let name = cfg
            .group
            .clone()
            .unwrap_or_else(|| kind_name(&spec.kind).to_string());
        let index = t.reports.len();
        let group = t.group(name);
        group.weight += metric_weight(spec);
        match class {
            Classification::Pass => {
                group.passed += 1.0;
                group.judged += 1.0;
            }
            Classification::High | Classification::Low => {
                group.judged += 1.0;
                if spec.critical {
                    t.critical_fail.push(index);
                }
            }
            Classification::NoData => {}
        }
        t.reports.push(report);
    }
    t
}

/// Weighted mean of the groups' pass percentages over groups with a
/// classified metric (`None` when there is none).
fn weighted_score(groups: &[Group]) -> Option<f64> {
    let judged: Vec<&Group> = groups.iter().filter(|g| g.judged > 0.0).collect();
    let total_w: f64 = judged.iter().map(|g| g.weight).sum();
    (total_w > 0.0).then(|| {
        judged
            .iter()
            .map(|g| g.weight * 100.0 * g.passed / g.judged)
            .sum::<f64>()
            / total_w
    })
}

/// Judges in classic mode.
pub fn evaluate(
    analysis: &Analysis,
    settings: &ClassicSettings,
    options: &JudgeOptions,
    evidence: &Evidence,
) -> Verdict {
    let alpha = super::alpha_of(analysis);
    let mut t = tally(analysis, options, evidence, alpha);
    let score = weighted_score(&t.groups);
    let bound_fail = fail_broken_bounds(&mut t.reports);
    let srm = srm_report(evidence);
    let (decision, reason) = if evidence.windows == 0 {
        (Decision::Inconclusive, NO_WINDOWS_REASON.to_string())
    } else if let Some(s) = srm.as_ref().filter(|s| s.mismatch) {
        (Decision::Inconclusive, srm_reason(s))
    } else if !t.critical_fail.is_empty() || !bound_fail.is_empty() {
        (
            Decision::Rollback,
            format!("rollback: critical metric failed: {}", fails(&t.reports)),
        )
    } else if let Some(name) = t.missing {
        (Decision::Inconclusive, format!("no usable data for {name}"))
    } else {
        decide_by_score(settings, score, &mut t.reports)
    };
    Verdict {
        decision,
        reason,
        mode: "classic".into(),
        windows: evidence.windows,
        alpha,
        srm,
        score: score.map(|s| score_report(settings, s, &t.groups)),
        metrics: t.reports,
    }
}

fn srm_reason(s: &SrmReport) -> String {
    format!(
        "traffic split mismatch: canary share {:.4} vs expected {:.4} over {} requests, SRM e={} >= {}; not judging",
        s.observed_share,
        s.expected_share,
        num(s.canary + s.baseline),
        num(s.e_value),
        num(s.threshold)
    )
}

/// Summaries of the failed metrics, joined.
fn fails(reports: &[MetricReport]) -> String {
    reports
        .iter()
        .filter(|r| r.status == MetricStatus::Fail)
        .map(summary)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Kayenta's rule once nothing critical failed: below the marginal score
/// rolls back, below the pass score continues with failures shown as
/// marginal, otherwise continues (the step's time promotes).
fn decide_by_score(
    settings: &ClassicSettings,
    score: Option<f64>,
    reports: &mut [MetricReport],
) -> (Decision, String) {
    let fails = fails(reports);
    match score {
        None => (
            Decision::Continue,
            format!("continue: fewer than {MIN_VALUES} usable windows per arm yet"),
        ),
        Some(s) if s < settings.marginal_score => (
            Decision::Rollback,
            format!(
                "rollback: score {} < marginal {}; {fails}",
                num(s),
                num(settings.marginal_score),
            ),
        ),
        Some(s) if s < settings.pass_score => {
            for r in reports
                .iter_mut()
                .filter(|r| r.status == MetricStatus::Fail)
            {
                r.status = MetricStatus::Marginal;
            }
            (
                Decision::Continue,
                format!(
                    "continue: marginal score {} (pass {}); {fails}",
                    num(s),
                    num(settings.pass_score),
                ),
            )
        }
        Some(s) => (
            Decision::Continue,
            format!(
                "continue: score {} >= pass {}; {}",
                num(s),
                num(settings.pass_score),
                reports.iter().map(summary).collect::<Vec<_>>().join("; ")
            ),
        ),
    }
}

fn score_report(settings: &ClassicSettings, score: f64, groups: &[Group]) -> ScoreReport {
    ScoreReport {
        score,
        pass: settings.pass_score,
        marginal: settings.marginal_score,
        groups: groups
            .iter()
            .map(|g| {
                let gs = if g.judged > 0.0 {
                    100.0 * g.passed / g.judged
                } else {
                    0.0
                };
                (g.name.clone(), g.weight, gs)
            })
            .collect(),
    }
}

fn summary(r: &MetricReport) -> String {
    let (lo, hi) = r
        .interval
        .as_ref()
        .map_or((None, None), |i| (i.lower, i.upper));
    format!(
        "{}: {:?} U={} p={} HL {} [{}, {}] (n {} vs {})",
        r.name,
        r.status,
        opt(r.statistic),
        opt(r.p_value),
        opt(r.estimate),
        opt(lo),
        opt(hi),
        opt(r.canary.n),
        opt(r.baseline.n)
    )
}

fn judge_metric(
    spec: &MetricSpec,
    m: Option<&MetricEvidence>,
    cfg: &ClassicMetricConfig,
    confidence: f64,
) -> (MetricReport, Classification) {
    let series = m.map(|m| m.series.as_slice()).unwrap_or(&[]);
    let c = clean(
        &series.iter().map(|p| p.c).collect::<Vec<_>>(),
        cfg.nan,
        cfg.outliers,
    );
    let b = clean(
        &series.iter().map(|p| p.b).collect::<Vec<_>>(),
        cfg.nan,
        cfg.outliers,
    );
    let r = classify(&c, &b, spec.direction, cfg, confidence);
    let what = match spec.kind {
        MetricKind::Errors { .. } => "error ratio",
        MetricKind::Latency { .. } => "p90 latency",
        MetricKind::Gauge { .. } => "value",
    };
    let test = format!("Mann-Whitney U + Hodges-Lehmann on per-window {what}");
    let mut report = base_report(spec, m, test, 1.0 - confidence, 1.0 - confidence);
    report.canary.n = Some(r.n.0 as f64);
    report.baseline.n = Some(r.n.1 as f64);
    report.canary.mean = r.means.0.is_finite().then_some(r.means.0);
    report.baseline.mean = r.means.1.is_finite().then_some(r.means.1);
    report.status = match r.class {
        Classification::Pass => MetricStatus::Pass,
        Classification::High | Classification::Low => MetricStatus::Fail,
        Classification::NoData => MetricStatus::NoData,
    };
    report.estimate = r.hl.map(|h| h.0);
    report.interval = r.hl.map(|h| Interval {
        lower: Some(h.1),
        upper: Some(h.2),
        level: confidence,
        anytime: false,
    });
    report.p_value = r.p;
    report.statistic = r.u;
    if r.class == Classification::NoData {
        report.note = Some(format!(
            "needs {MIN_VALUES} usable windows per arm, has {} and {}",
            r.n.0, r.n.1
        ));
    }
    (report, r.class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_strategies() {
        let v = [Some(1.0), None, Some(f64::NAN), Some(2.0)];
        assert_eq!(
            clean(&v, NanStrategy::Remove, OutlierStrategy::Keep),
            vec![1.0, 2.0]
        );
        assert_eq!(
            clean(&v, NanStrategy::Replace, OutlierStrategy::Keep),
            vec![1.0, 0.0, 0.0, 2.0]
        );
    }

    #[test]
    fn iqr_removes_far_outliers_only() {
        let v: Vec<Option<f64>> = [1.0, 2.0, 3.0, 4.0, 5.0, 100.0]
            .iter()
            .map(|x| Some(*x))
            .collect();
        let kept = clean(&v, NanStrategy::Remove, OutlierStrategy::RemoveIqr(3.0));
        assert_eq!(kept, vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        let kept = clean(&v, NanStrategy::Remove, OutlierStrategy::RemoveIqr(100.0));
        assert_eq!(kept.len(), 6);
    }

    #[test]
    fn clear_shift_is_high_and_respects_direction() {
        let b: Vec<f64> = (0..20).map(|i| 1.0 + f64::from(i) * 0.01).collect();
        let c: Vec<f64> = b.iter().map(|x| x * 2.0).collect();
        let cfg = ClassicMetricConfig::default();
        assert_eq!(
            classify(&c, &b, Direction::Increase, &cfg, 0.98).class,
            Classification::High
        );
        assert_eq!(
            classify(&c, &b, Direction::Decrease, &cfg, 0.98).class,
            Classification::Pass
        );
        assert_eq!(
            classify(&b, &c, Direction::Either, &cfg, 0.98).class,
            Classification::Low
        );
        let strict = ClassicMetricConfig {
            allowed_increase: 3.0,
            ..ClassicMetricConfig::default()
        };
        assert_eq!(
            classify(&c, &b, Direction::Increase, &strict, 0.98).class,
            Classification::Pass
        );
    }

    #[test]
    fn too_few_values_is_no_data() {
        let cfg = ClassicMetricConfig::default();
        assert_eq!(
            classify(&[1.0], &[1.0, 2.0, 3.0], Direction::Increase, &cfg, 0.95).class,
            Classification::NoData
        );
    }
}

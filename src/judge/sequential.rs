//! Sequential (anytime-valid) mode.
//!
//! Every metric yields an e-process: a nonnegative (super)martingale under
//! "the canary is no worse". The rollout's budget `alpha` is shared through
//! e-value averaging: the mean of the `m` metrics' e-processes is itself an
//! e-process, so rolling back when it reaches `1/alpha` keeps false rollbacks
//! at most `alpha` no matter how many windows are looked at (Ville's
//! inequality). It dominates Bonferroni (each metric alone needs `m/alpha`,
//! which is what a single failing — e.g. critical — metric needs to roll back
//! by itself), and more metrics never raise the false-rollback rate.

use super::grid::{bump_weights, kl_per_event, log_sum_exp, weight_near, LogLik, Side};
use super::histogram::CheckedHistogram;
use super::report::{
    base_report, capped_exp, fail_broken_bounds, kind_name, num, opt, srm_report, BoundaryReport,
    ComponentReport, Interval, MetricReport, MetricStatus, SrmReport, TrafficNeeded,
    NO_WINDOWS_REASON,
};
use super::{
    CountsEvidence, Decision, Evidence, LatencyEvidence, MetricEvidence, Verdict,
    DEFAULT_MIN_EFFECT,
};
use crate::policy::{Analysis, Direction, MetricKind, MetricSpec};

/// Mixture centre (ratio) and spread (in `ln ρ`) for error-rate tests: most
/// mass on ratios 1.3–3.5 with tails reaching 1.13 and 20; tuned by
/// simulation for ×1.5, ×2 and ×5 regressions (docs/benchmarks.md).
pub const ERROR_PRIOR: (f64, f64) = (2.0, 0.6);
/// Mixture for per-boundary latency exceedance ratios (latency shifts move
/// exceedance ratios less than error regressions move error rates).
pub const LATENCY_PRIOR: (f64, f64) = (1.35, 0.45);
/// Mixture for the latency proportional-odds shift test's common odds ratio
/// of exceeding a bound (latency ×1.1 of a log-normal with σ 0.5 is about
/// 1.4, ×1.5 about 3.8).
pub const SHIFT_PRIOR: (f64, f64) = (1.5, 0.6);
/// Weight of the shift test in a latency metric's e-value; the mean of the
/// per-bound tests gets the rest.
pub const SHIFT_WEIGHT: f64 = 0.3;
/// Mixture for the gauge sign test's odds that the canary is higher.
pub const GAUGE_PRIOR: (f64, f64) = (4.0, 0.6);

/// Odds that the canary is higher in a window, assumed when estimating how
/// many more windows a gauge needs (3 of 4 windows worse).
const GAUGE_EFFECT_ODDS: f64 = 3.0;

/// Test names reported per kind.
pub const ERRORS_TEST: &str = "conditional binomial mixture e-process (error rate ratio)";
/// Latency test name.
pub const LATENCY_TEST: &str =
    "proportional-odds shift e-process over all buckets (weight 0.3) + mean of conditional binomial mixture e-processes per bucket bound (P(latency > le) ratio, weight 0.7)";
/// Gauge test name.
pub const GAUGE_TEST: &str =
    "sequential sign test mixture e-process (per-window canary vs baseline)";

/// The side of `ρ` (canary/baseline) that is a regression.
pub fn side(direction: Direction) -> Side {
    match direction {
        Direction::Increase => Side::Up,
        Direction::Decrease => Side::Down,
        Direction::Either => Side::Both,
    }
}

/// Mixture weights for a metric kind and direction.
pub fn weights_for(prior: (f64, f64), direction: Direction) -> Vec<f64> {
    bump_weights(side(direction), prior.0, prior.1, 1)
}

/// `ln e` of an error-rate test for the given direction.
pub fn errors_log_e(loglik: &LogLik, direction: Direction) -> f64 {
    loglik.log_e(&weights_for(ERROR_PRIOR, direction))
}

/// `ln e` of the mean of the per-bound e-values (0 without bounds).
pub fn bounds_log_e(per_bound: &[LogLik], direction: Direction) -> f64 {
    if per_bound.is_empty() {
        return 0.0;
    }
    let w = weights_for(LATENCY_PRIOR, direction);
    log_sum_exp(per_bound.iter().map(|l| l.log_e(&w))) - (per_bound.len() as f64).ln()
}

/// `ln e` of the proportional-odds shift test (0 before any window).
pub fn shift_log_e(shift: &LogLik, direction: Direction) -> f64 {
    shift.log_e(&weights_for(SHIFT_PRIOR, direction))
}

/// `ln e` of a latency test: `SHIFT_WEIGHT` × the shift test's e-value plus
/// the rest × the mean of the per-bound e-values (a fixed convex combination
/// of e-processes is an e-process).
pub fn latency_log_e(per_bound: &[LogLik], shift: &LogLik, direction: Direction) -> f64 {
    let parts = [
        (1.0 - SHIFT_WEIGHT).ln() + bounds_log_e(per_bound, direction),
        SHIFT_WEIGHT.ln() + shift_log_e(shift, direction),
    ];
    log_sum_exp(parts.into_iter())
}

/// Per-metric outcome before the rollout-level decision.
struct Judged {
    report: MetricReport,
    log_e: f64,
    no_worse: bool,
    usable: bool,
    summary: String,
}

impl Judged {
    /// A metric whose test ran on data.
    fn tested(report: MetricReport, log_e: f64, no_worse: bool, summary: String) -> Self {
        Judged {
            report,
            log_e,
            no_worse,
            usable: true,
            summary,
        }
    }
}

/// Judges everything recorded so far (see the module docs).
pub fn evaluate(analysis: &Analysis, evidence: &Evidence) -> Verdict {
    let alpha = super::alpha_of(analysis);
    let m = analysis.metrics.len().max(1) as f64;
    let alpha_i = alpha / m;
    let mut judged = judge_all(analysis, evidence, alpha_i);
    let failing = mark_failing(&mut judged, m, alpha, alpha_i);
    let bound_fail = fail_broken_bounds(judged.iter_mut().map(|j| &mut j.report));
    let srm = srm_report(evidence);
    let (decision, reason) = decide(evidence, srm.as_ref(), &judged, &failing, &bound_fail);
    Verdict {
        decision,
        reason,
        mode: "sequential".into(),
        windows: evidence.windows,
        alpha,
        srm,
        score: None,
        metrics: final_reports(judged, decision),
    }
}

/// Judges each policy metric; one whose latest windows had no usable data
/// is held back as "no data" (evidence from before a gap cannot clear the
/// release while the gap lasts).
fn judge_all(analysis: &Analysis, evidence: &Evidence, alpha_i: f64) -> Vec<Judged> {
    analysis
        .metrics
        .iter()
        .map(|spec| {
            let m = evidence.metric(&spec.name);
            let mut j = judge_metric(spec, m, alpha_i);
            let stale = m.and_then(|m| m.stale_note());
            if let Some(note) = stale.filter(|_| j.usable) {
                j.usable = false;
                j.no_worse = false;
                j.report.status = MetricStatus::NoData;
                j.report.note = Some(note);
            }
            j
        })
        .collect()
}

/// Marks as failed, and returns the indices of, the metrics whose e-value
/// alone crosses its share `1/alpha_i`; when none does but the mean of the
/// `m` e-values crosses `1/alpha`, the largest contributor.
fn mark_failing(judged: &mut [Judged], m: f64, alpha: f64, alpha_i: f64) -> Vec<usize> {
    let log_mean = log_sum_exp(judged.iter().map(|j| j.log_e)) - m.ln();
    let combined_fail = log_mean >= (1.0 / alpha).ln();
    let threshold_i = (1.0 / alpha_i).ln();
    let mut failing: Vec<usize> = judged
        .iter()
        .enumerate()
        .filter(|(_, j)| j.log_e >= threshold_i)
        .map(|(i, _)| i)
        .collect();
    if combined_fail && failing.is_empty() {
        // No single metric crossed alone; blame the largest contributor.
        if let Some((i, _)) = judged
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.log_e.total_cmp(&b.1.log_e))
        {
            failing.push(i);
            judged[i].report.note = Some(format!(
                "combined evidence: mean e-value {} >= {}",
                num(capped_exp(log_mean)),
                num(1.0 / alpha)
            ));
        }
    }
    for &i in &failing {
        judged[i].report.status = MetricStatus::Fail;
    }
    failing
}

/// The rollout-level decision and its one-line reason, in order of
/// precedence: nothing seen, broken traffic split, a failing metric or
/// bound, a metric without usable data, all no worse, keep going.
fn decide(
    evidence: &Evidence,
    srm: Option<&SrmReport>,
    judged: &[Judged],
    failing: &[usize],
    bound_fail: &[usize],
) -> (Decision, String) {
    if evidence.windows == 0 {
        return (Decision::Inconclusive, NO_WINDOWS_REASON.to_string());
    }
    if let Some(s) = srm.filter(|s| s.mismatch) {
        return (Decision::Inconclusive, srm_reason(s));
    }
    if !failing.is_empty() || !bound_fail.is_empty() {
        let mut parts: Vec<String> = failing.iter().map(|&i| judged[i].summary.clone()).collect();
        parts.extend(
            bound_fail
                .iter()
                .filter_map(|&i| bounds_reason(&judged[i].report)),
        );
        return (
            Decision::Rollback,
            format!("rollback: {}", parts.join("; ")),
        );
    }
    if let Some(j) = judged.iter().find(|j| !j.usable) {
        return (
            Decision::Inconclusive,
            format!(
                "no usable data for {}: {}",
                j.report.name,
                j.report.note.clone().unwrap_or_default()
            ),
        );
    }
    let parts: Vec<String> = judged.iter().map(|j| j.summary.clone()).collect();
    if judged.iter().all(|j| j.no_worse) {
        (
            Decision::Promote,
            format!("promote: no worse than min_effect; {}", parts.join("; ")),
        )
    } else {
        (
            Decision::Continue,
            format!("continue: {}", parts.join("; ")),
        )
    }
}

fn srm_reason(s: &SrmReport) -> String {
    format!(
        "traffic split mismatch: canary share {:.4} ({} of {} requests) vs expected {:.4}, SRM e={} >= {}; not judging",
        s.observed_share,
        num(s.canary),
        num(s.canary + s.baseline),
        s.expected_share,
        num(s.e_value),
        num(s.threshold)
    )
}

/// Why a metric's absolute bounds roll back (`None` without bounds).
fn bounds_reason(report: &MetricReport) -> Option<String> {
    let b = report.bounds.as_ref()?;
    Some(format!(
        "{}: {} {} outside bounds [{}, {}] in {} window(s) (limit {})",
        report.name,
        b.checked,
        opt(b.last_value),
        opt(b.min),
        opt(b.max),
        b.failed_windows,
        b.failure_limit
    ))
}

/// The per-metric reports; the traffic estimate is kept only while the
/// rollout still waits for evidence.
fn final_reports(judged: Vec<Judged>, decision: Decision) -> Vec<MetricReport> {
    let keep_needed = matches!(decision, Decision::Continue | Decision::Inconclusive);
    judged
        .into_iter()
        .map(|mut j| {
            if !keep_needed {
                j.report.needed = None;
            }
            j.report
        })
        .collect()
}

fn no_data(mut report: MetricReport, note: String) -> Judged {
    report.status = MetricStatus::NoData;
    report.e_value = Some(1.0);
    let summary = format!("{}: no data ({note})", report.name);
    report.note = Some(note);
    Judged {
        report,
        log_e: 0.0,
        no_worse: false,
        usable: false,
        summary,
    }
}

fn judge_metric(spec: &MetricSpec, m: Option<&MetricEvidence>, alpha_i: f64) -> Judged {
    let test = match spec.kind {
        MetricKind::Errors { .. } => ERRORS_TEST,
        MetricKind::Latency { .. } => LATENCY_TEST,
        MetricKind::Gauge { .. } => GAUGE_TEST,
    };
    let report = base_report(spec, m, test.into(), alpha_i, 1.0 / alpha_i);
    let Some(m) = m.filter(|m| m.windows > 0) else {
        let why = m
            .and_then(|m| m.last_problem.clone())
            .unwrap_or_else(|| "no window carried this metric".into());
        return no_data(report, why);
    };
    match (&spec.kind, &m.counts, &m.latency, &m.gauge) {
        (MetricKind::Errors { .. }, Some(_), _, _) => judge_errors(spec, m, report, alpha_i),
        (MetricKind::Latency { .. }, _, Some(_), _) => judge_latency(spec, m, report, alpha_i),
        (MetricKind::Gauge { .. }, _, _, Some(_)) => judge_gauge(spec, m, report, alpha_i),
        _ => {
            let note = format!(
                "policy says {} but the data has another shape",
                kind_name(&spec.kind)
            );
            no_data(report, note)
        }
    }
}

/// Ratio that `min_effect` means on the regression side.
fn effect_ratio(spec: &MetricSpec) -> f64 {
    let e = if spec.min_effect.is_finite() && spec.min_effect > 0.0 {
        spec.min_effect
    } else {
        DEFAULT_MIN_EFFECT
    };
    match spec.direction {
        Direction::Decrease => 1.0 / (1.0 + e),
        _ => 1.0 + e,
    }
}

fn no_worse(direction: Direction, effect: f64, lo: Option<f64>, hi: Option<f64>) -> bool {
    let up_ok = |e: f64| hi.is_some_and(|h| h < e);
    let down_ok = |e: f64| lo.is_some_and(|l| l > e);
    match direction {
        Direction::Increase => up_ok(effect),
        Direction::Decrease => down_ok(effect),
        Direction::Either => up_ok(effect) && down_ok(1.0 / effect),
    }
}

/// The anytime-valid interval `[lo, hi]` at level 1 − α.
fn anytime_interval(lo: Option<f64>, hi: Option<f64>, alpha_i: f64) -> Interval {
    Interval {
        lower: lo,
        upper: hi,
        level: 1.0 - alpha_i,
        anytime: true,
    }
}

/// No traffic estimate at `effect`, and why.
fn no_estimate(effect: f64, note: &str) -> TrafficNeeded {
    TrafficNeeded {
        effect,
        more_events: None,
        more_requests: None,
        note: note.into(),
    }
}

/// Mean events to cross `threshold` at ratio `rho`: (ln 1/α + ln 1/w) / KL.
fn events_needed(weights: &[f64], rho: f64, s: f64, log_threshold: f64) -> Option<f64> {
    let kl = kl_per_event(rho, s);
    let w = weight_near(weights, rho);
    (kl > 0.0 && w > 0.0).then(|| (log_threshold - w.ln()) / kl)
}

/// The canary's share of `canary + baseline` (an even split before any).
fn canary_share(canary: f64, baseline: f64) -> f64 {
    let total = canary + baseline;
    if total > 0.0 {
        canary / total
    } else {
        0.5
    }
}

/// What one errors or latency metric is tested against.
struct Target<'a> {
    spec: &'a MetricSpec,
    /// The metric's share of the false-rollback budget.
    alpha_i: f64,
    /// The ratio `min_effect` means on the regression side.
    effect: f64,
    /// Mixture weights of the test's prior for the metric's direction.
    weights: Vec<f64>,
}

impl<'a> Target<'a> {
    fn new(spec: &'a MetricSpec, alpha_i: f64, prior: (f64, f64)) -> Self {
        Target {
            spec,
            alpha_i,
            effect: effect_ratio(spec),
            weights: weights_for(prior, spec.direction),
        }
    }

    /// The e-value that rolls this metric back by itself.
    fn threshold(&self) -> f64 {
        1.0 / self.alpha_i
    }
}

/// An error-rate test's outcome.
struct RateFit {
    log_e: f64,
    /// Canary rate / baseline rate (the likelihood's maximum without rates).
    estimate: Option<f64>,
    lo: Option<f64>,
    hi: Option<f64>,
}

/// Each arm's error rate, `None` without requests.
fn error_rates(c: &CountsEvidence) -> (Option<f64>, Option<f64>) {
    (
        (c.canary_total > 0.0).then(|| c.canary_errors / c.canary_total),
        (c.baseline_total > 0.0).then(|| c.baseline_errors / c.baseline_total),
    )
}

fn judge_errors(
    spec: &MetricSpec,
    m: &MetricEvidence,
    mut report: MetricReport,
    alpha_i: f64,
) -> Judged {
    let Some(c) = &m.counts else {
        return no_data(report, "no counts".into());
    };
    let t = Target::new(spec, alpha_i, ERROR_PRIOR);
    let (lo, hi) = c.loglik.interval(alpha_i);
    let fit = RateFit {
        log_e: c.loglik.log_e(&t.weights),
        estimate: match error_rates(c) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => c.loglik.mle(),
        },
        lo,
        hi,
    };
    report.estimate = fit.estimate;
    report.interval = Some(anytime_interval(lo, hi, alpha_i));
    report.e_value = Some(capped_exp(fit.log_e));
    let nw = no_worse(spec.direction, t.effect, lo, hi);
    if nw {
        report.status = MetricStatus::NoWorse;
    }
    report.needed = Some(errors_needed(&t, c));
    let summary = errors_summary(&t, c, &fit);
    Judged::tested(report, fit.log_e, nw, summary)
}

/// More errors (and requests) expected to be needed to detect `min_effect`.
fn errors_needed(t: &Target, c: &CountsEvidence) -> TrafficNeeded {
    let total = c.canary_total + c.baseline_total;
    let share = canary_share(c.canary_total, c.baseline_total);
    let events = c.canary_errors + c.baseline_errors;
    let Some(n) = events_needed(&t.weights, t.effect, share, t.threshold().ln()) else {
        return no_estimate(t.effect, "no traffic split to estimate from");
    };
    let more = (n - events).max(0.0);
    // Errors per request at `effect`: the baseline's rate (or the pooled
    // one), raised by `effect` on the canary's share.
    let base_rate = match (error_rates(c).1, total > 0.0) {
        (Some(b), _) if b > 0.0 => Some(b),
        (_, true) if events > 0.0 => Some(events / total),
        _ => None,
    };
    let per_request = base_rate.map(|r| r * ((1.0 - share) + t.effect * share));
    TrafficNeeded {
        effect: t.effect,
        more_events: Some(more.ceil()),
        more_requests: per_request.filter(|p| *p > 0.0).map(|p| (more / p).ceil()),
        note: format!(
            "mean error events to reach e={} at ratio {} with canary share {:.3} is {}; {} seen",
            num(t.threshold()),
            num(t.effect),
            share,
            num(n.ceil()),
            num(events)
        ),
    }
}

fn errors_summary(t: &Target, c: &CountsEvidence, fit: &RateFit) -> String {
    let (rc, rb) = error_rates(c);
    format!(
        "{}: e={}/{} canary {}/{} ({}) vs baseline {}/{} ({}) ratio {} [{}, {}]",
        t.spec.name,
        num(capped_exp(fit.log_e)),
        num(t.threshold()),
        num(c.canary_errors),
        num(c.canary_total),
        opt(rc),
        num(c.baseline_errors),
        num(c.baseline_total),
        opt(rb),
        opt(fit.estimate),
        opt(fit.lo),
        opt(fit.hi)
    )
}

/// Exceedance ratio at bound `le` that a latency change by `ratio` would cause,
/// read off the baseline's interpolated CDF.
fn exceedance_ratio(base: &CheckedHistogram, le: f64, ratio: f64) -> Option<f64> {
    let p = 1.0 - base.cdf(le)?;
    let q = 1.0 - base.cdf(le / ratio)?;
    (p > 0.0 && q > 0.0).then(|| q / p)
}

/// Both arms' cumulative latency histograms and their totals.
struct LatencyArms {
    canary: CheckedHistogram,
    base: CheckedHistogram,
    /// Canary observations.
    ct: f64,
    /// Baseline observations.
    bt: f64,
}

impl LatencyArms {
    fn new(l: &LatencyEvidence) -> Self {
        let canary = CheckedHistogram {
            le: l.le.clone(),
            cumulative: l.canary.clone(),
        };
        let base = CheckedHistogram {
            le: l.le.clone(),
            cumulative: l.baseline.clone(),
        };
        let (ct, bt) = (canary.total(), base.total());
        LatencyArms {
            canary,
            base,
            ct,
            bt,
        }
    }

    /// Canary share of its observations above bound `i`.
    fn canary_above(&self, i: usize) -> f64 {
        if self.ct > 0.0 {
            self.canary.above(i) / self.ct
        } else {
            0.0
        }
    }

    /// Baseline share of its observations above bound `i`.
    fn base_above(&self, i: usize) -> f64 {
        if self.bt > 0.0 {
            self.base.above(i) / self.bt
        } else {
            0.0
        }
    }

    /// Share of both arms' observations above bound `i`.
    fn pooled_above(&self, i: usize) -> f64 {
        let total = self.ct + self.bt;
        if total > 0.0 {
            (self.canary.above(i) + self.base.above(i)) / total
        } else {
            0.0
        }
    }

    /// Observations of both arms above bound `i`.
    fn events_above(&self, i: usize) -> f64 {
        self.canary.above(i) + self.base.above(i)
    }
}

/// The bound at which `min_effect` would be detected with the fewest
/// requests, and what it takes there.
#[derive(Clone, Copy)]
struct BoundNeed {
    /// Mean "slower than `le`" events to cross the threshold.
    events: f64,
    /// Requests (both arms) that bring those events.
    requests: f64,
    le: f64,
    /// Exceedance ratio at `le` that a latency change by `min_effect` causes.
    rho: f64,
}

/// What the per-bound tests say about `min_effect`.
struct BoundScan {
    /// Every informative bound's interval excludes `min_effect`.
    no_worse: bool,
    cheapest: Option<BoundNeed>,
}

/// Bounds that split the pooled traffic less evenly than this carry too
/// little information to judge `min_effect` at.
const INFORMATIVE_SPLIT: std::ops::RangeInclusive<f64> = 0.05..=0.95;

fn judge_latency(
    spec: &MetricSpec,
    m: &MetricEvidence,
    mut report: MetricReport,
    alpha_i: f64,
) -> Judged {
    let Some(l) = &m.latency else {
        return no_data(report, "no buckets".into());
    };
    let t = Target::new(spec, alpha_i, LATENCY_PRIOR);
    let per: Vec<f64> = l.loglik.iter().map(|x| x.log_e(&t.weights)).collect();
    let log_e = latency_log_e(&l.loglik, &l.shift, spec.direction);
    let arms = LatencyArms::new(l);
    report.boundaries = boundary_reports(&l.le, &arms, &per);
    // The headline estimate and interval are those of the most significant bound.
    let best = per
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i);
    let scan = scan_bounds(&t, l, &arms);
    if let Some(i) = best {
        let (lo, hi) = l.loglik[i].interval(alpha_i);
        report.estimate = report.boundaries.get(i).and_then(|b| b.ratio);
        report.interval = Some(anytime_interval(lo, hi, alpha_i));
    }
    report.e_value = Some(capped_exp(log_e));
    let parts = LatencyParts {
        shift: ComponentReport {
            name: "shift".into(),
            weight: SHIFT_WEIGHT,
            e_value: capped_exp(shift_log_e(&l.shift, spec.direction)),
            estimate: l.shift.mle(),
            le: largest_gap_le(&report.boundaries, spec.direction),
        },
        bounds: ComponentReport {
            name: "bounds".into(),
            weight: 1.0 - SHIFT_WEIGHT,
            e_value: capped_exp(bounds_log_e(&l.loglik, spec.direction)),
            estimate: report.estimate,
            le: best.and_then(|i| l.le.get(i).copied()),
        },
    };
    if scan.no_worse {
        report.status = MetricStatus::NoWorse;
    }
    report.needed = Some(latency_needed(&t, l, &arms, scan.cheapest));
    let summary = latency_summary(&t, &report, &parts, log_e, &arms);
    report.components = vec![parts.shift, parts.bounds];
    Judged::tested(report, log_e, scan.no_worse, summary)
}

/// One report per finite bound: each arm's share above it, their ratios
/// and the bound test's e-value (`per`: its `ln e`).
fn boundary_reports(le: &[f64], arms: &LatencyArms, per: &[f64]) -> Vec<BoundaryReport> {
    let odds = |p: f64| p / (1.0 - p);
    le.iter()
        .enumerate()
        .map(|(i, le)| {
            let ca = arms.canary_above(i);
            let ba = arms.base_above(i);
            BoundaryReport {
                le: *le,
                canary_above: ca,
                baseline_above: ba,
                ratio: (ba > 0.0).then(|| ca / ba),
                e_value: capped_exp(per.get(i).copied().unwrap_or(0.0)),
                odds_ratio: (ba > 0.0 && ba < 1.0 && ca < 1.0).then(|| odds(ca) / odds(ba)),
            }
        })
        .collect()
}

/// Checks `min_effect` at each informative bound: whether every interval
/// excludes it, and where detecting it would need the fewest requests.
fn scan_bounds(t: &Target, l: &LatencyEvidence, arms: &LatencyArms) -> BoundScan {
    let mut scan = BoundScan {
        no_worse: arms.ct > 0.0 && arms.bt > 0.0,
        cheapest: None,
    };
    let share = canary_share(arms.ct, arms.bt);
    // The per-bound tests share 1 − SHIFT_WEIGHT of the metric's e-value.
    let log_thr = t.threshold().ln() + (l.le.len().max(1) as f64).ln() - (1.0 - SHIFT_WEIGHT).ln();
    for (i, le) in l.le.iter().enumerate() {
        if !INFORMATIVE_SPLIT.contains(&arms.pooled_above(i)) {
            continue;
        }
        let Some(rho) = exceedance_ratio(&arms.base, *le, t.effect) else {
            continue;
        };
        let (lo, hi) = l.loglik[i].interval(t.alpha_i);
        if !no_worse(t.spec.direction, rho, lo, hi) {
            scan.no_worse = false;
        }
        let Some(events) = events_needed(&t.weights, rho, share, log_thr) else {
            continue;
        };
        let per_request = arms.base_above(i) * ((1.0 - share) + rho * share);
        if per_request > 0.0 {
            let requests = events / per_request;
            if scan.cheapest.is_none_or(|b| requests < b.requests) {
                scan.cheapest = Some(BoundNeed {
                    events,
                    requests,
                    le: *le,
                    rho,
                });
            }
        }
    }
    scan
}

/// The bound where the canary's share above it differs most from the
/// baseline's in the regression direction: what drives the rank-type shift
/// test.
fn largest_gap_le(boundaries: &[BoundaryReport], direction: Direction) -> Option<f64> {
    boundaries
        .iter()
        .map(|b| {
            let d = b.canary_above - b.baseline_above;
            let d = match direction {
                Direction::Increase => d,
                Direction::Decrease => -d,
                Direction::Either => d.abs(),
            };
            (b.le, d)
        })
        .filter(|(_, d)| *d > 0.0)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(le, _)| le)
}

/// The two e-processes mixed into a latency metric's e-value.
struct LatencyParts {
    shift: ComponentReport,
    bounds: ComponentReport,
}

/// More events and requests expected to be needed to detect `min_effect`,
/// at the cheapest bound.
fn latency_needed(
    t: &Target,
    l: &LatencyEvidence,
    arms: &LatencyArms,
    cheapest: Option<BoundNeed>,
) -> TrafficNeeded {
    let Some(need) = cheapest else {
        return no_estimate(t.effect, "no bucket bound splits the traffic 5%..95% yet");
    };
    let seen = arms.ct + arms.bt;
    let idx = l.le.iter().position(|x| *x == need.le).unwrap_or(0);
    TrafficNeeded {
        effect: t.effect,
        more_events: Some((need.events - arms.events_above(idx)).max(0.0).ceil()),
        more_requests: Some((need.requests - seen).max(0.0).ceil()),
        note: format!(
            "at le={}: latency x{} means P(latency > le) ratio {}; mean requests to cross is {}, {} seen",
            need.le,
            num(t.effect),
            num(need.rho),
            num(need.requests.ceil()),
            num(seen)
        ),
    }
}

fn latency_summary(
    t: &Target,
    report: &MetricReport,
    parts: &LatencyParts,
    log_e: f64,
    arms: &LatencyArms,
) -> String {
    format!(
        "{}: e={}/{} (shift test e={}, common odds ratio {}, largest gap at le={}; per-bound mean e={}, strongest le={}) p50 {} vs {}, p90 {} vs {}, p99 {} vs {} (canary vs baseline, n {} vs {})",
        t.spec.name,
        num(capped_exp(log_e)),
        num(t.threshold()),
        num(parts.shift.e_value),
        opt(parts.shift.estimate),
        opt(parts.shift.le),
        num(parts.bounds.e_value),
        opt(parts.bounds.le),
        opt(report.canary.p50),
        opt(report.baseline.p50),
        opt(report.canary.p90),
        opt(report.baseline.p90),
        opt(report.canary.p99),
        opt(report.baseline.p99),
        num(arms.ct),
        num(arms.bt)
    )
}

fn judge_gauge(
    spec: &MetricSpec,
    m: &MetricEvidence,
    mut report: MetricReport,
    alpha_i: f64,
) -> Judged {
    let Some(g) = &m.gauge else {
        return no_data(report, "no gauge values".into());
    };
    let weights = weights_for(GAUGE_PRIOR, spec.direction);
    let log_e = g.loglik.log_e(&weights);
    let n = f64::from(m.windows);
    report.estimate = (g.baseline_sum != 0.0).then(|| g.canary_sum / g.baseline_sum);
    report.e_value = Some(capped_exp(log_e));
    report.canary.n = Some(n);
    report.baseline.n = Some(n);
    let odds = GAUGE_EFFECT_ODDS;
    let needed = events_needed(
        &weights,
        if spec.direction == Direction::Decrease {
            1.0 / odds
        } else {
            odds
        },
        0.5,
        (1.0 / alpha_i).ln(),
    );
    report.needed = Some(TrafficNeeded {
        effect: odds,
        more_events: needed.map(|x| (x - f64::from(g.higher + g.lower)).max(0.0).ceil()),
        more_requests: None,
        note: "sign test: more windows (events) needed if the canary is worse in 3 of 4 windows"
            .into(),
    });
    let summary = format!(
        "{}: e={}/{} canary higher in {} of {} windows, mean {} vs {}",
        spec.name,
        num(capped_exp(log_e)),
        num(1.0 / alpha_i),
        g.higher,
        g.higher + g.lower,
        opt(report.canary.mean),
        opt(report.baseline.mean)
    );
    Judged {
        report,
        log_e,
        // A sign test cannot show "no worse than min_effect", so a policy
        // with a gauge never promotes early (the step's time decides).
        no_worse: false,
        usable: true,
        summary,
    }
}

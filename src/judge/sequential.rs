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
    arm_reports, bounds_report, capped_exp, direction_name, fail_broken_bounds, num, opt,
    srm_report, BoundaryReport, ComponentReport, Interval, MetricReport, MetricStatus,
    TrafficNeeded,
};
use super::{Decision, Evidence, MetricEvidence, Verdict};
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

/// Judges everything recorded so far (see the module docs).
pub fn evaluate(analysis: &Analysis, evidence: &Evidence) -> Verdict {
    let alpha = super::alpha_of(analysis);
    let m = analysis.metrics.len().max(1) as f64;
    let alpha_i = alpha / m;
    let mut judged: Vec<Judged> = analysis
        .metrics
        .iter()
        .map(|spec| judge_metric(spec, evidence.metric(&spec.name), alpha_i))
        .collect();
    for (j, spec) in judged.iter_mut().zip(&analysis.metrics) {
        let stale = evidence.metric(&spec.name).and_then(|m| m.stale_note());
        if let Some(note) = stale.filter(|_| j.usable) {
            j.usable = false;
            j.no_worse = false;
            j.report.status = MetricStatus::NoData;
            j.report.note = Some(note);
        }
    }

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
    let bound_fail = fail_broken_bounds(judged.iter_mut().map(|j| &mut j.report));

    let srm = srm_report(evidence);
    let (decision, reason) = if evidence.windows == 0 {
        (
            Decision::Inconclusive,
            "no windows observed yet".to_string(),
        )
    } else if let Some(s) = srm.as_ref().filter(|s| s.mismatch) {
        (
            Decision::Inconclusive,
            format!(
                "traffic split mismatch: canary share {:.4} ({} of {} requests) vs expected {:.4}, SRM e={} >= {}; not judging",
                s.observed_share,
                num(s.canary),
                num(s.canary + s.baseline),
                s.expected_share,
                num(s.e_value),
                num(s.threshold)
            ),
        )
    } else if !failing.is_empty() || !bound_fail.is_empty() {
        let mut parts: Vec<String> = failing.iter().map(|&i| judged[i].summary.clone()).collect();
        for &i in &bound_fail {
            if let Some(b) = &judged[i].report.bounds {
                parts.push(format!(
                    "{}: {} {} outside bounds [{}, {}] in {} window(s) (limit {})",
                    judged[i].report.name,
                    b.checked,
                    opt(b.last_value),
                    opt(b.min),
                    opt(b.max),
                    b.failed_windows,
                    b.failure_limit
                ));
            }
        }
        (
            Decision::Rollback,
            format!("rollback: {}", parts.join("; ")),
        )
    } else if let Some(j) = judged.iter().find(|j| !j.usable) {
        (
            Decision::Inconclusive,
            format!(
                "no usable data for {}: {}",
                j.report.name,
                j.report.note.clone().unwrap_or_default()
            ),
        )
    } else if judged.iter().all(|j| j.no_worse) {
        let parts: Vec<String> = judged.iter().map(|j| j.summary.clone()).collect();
        (
            Decision::Promote,
            format!("promote: no worse than min_effect; {}", parts.join("; ")),
        )
    } else {
        let parts: Vec<String> = judged.iter().map(|j| j.summary.clone()).collect();
        (
            Decision::Continue,
            format!("continue: {}", parts.join("; ")),
        )
    };

    let keep_needed = matches!(decision, Decision::Continue | Decision::Inconclusive);
    let metrics = judged
        .into_iter()
        .map(|mut j| {
            if !keep_needed {
                j.report.needed = None;
            }
            j.report
        })
        .collect();
    Verdict {
        decision,
        reason,
        mode: "sequential".into(),
        windows: evidence.windows,
        alpha,
        srm,
        score: None,
        metrics,
    }
}

fn kind_name(kind: &MetricKind) -> &'static str {
    match kind {
        MetricKind::Errors { .. } => "errors",
        MetricKind::Latency { .. } => "latency",
        MetricKind::Gauge { .. } => "gauge",
    }
}

fn base_report(
    spec: &MetricSpec,
    m: Option<&MetricEvidence>,
    alpha_i: f64,
    test: &str,
) -> MetricReport {
    let (canary, baseline) = m.map(arm_reports).unwrap_or_default();
    MetricReport {
        name: spec.name.clone(),
        kind: kind_name(&spec.kind).into(),
        test: test.into(),
        status: MetricStatus::Pass,
        critical: spec.critical,
        direction: direction_name(spec.direction).into(),
        windows: m.map_or(0, |m| m.windows),
        no_data_windows: m.map_or(0, |m| m.no_data),
        alpha: alpha_i,
        canary,
        baseline,
        estimate: None,
        interval: None,
        e_value: None,
        p_value: None,
        statistic: None,
        threshold: 1.0 / alpha_i,
        boundaries: Vec::new(),
        components: Vec::new(),
        bounds: bounds_report(spec, m),
        needed: None,
        note: m.and_then(|m| m.last_problem.clone()),
    }
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
    let report = base_report(spec, m, alpha_i, test);
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
        0.2
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

fn judge_errors(
    spec: &MetricSpec,
    m: &MetricEvidence,
    mut report: MetricReport,
    alpha_i: f64,
) -> Judged {
    let Some(c) = &m.counts else {
        return no_data(report, "no counts".into());
    };
    let weights = weights_for(ERROR_PRIOR, spec.direction);
    let log_e = c.loglik.log_e(&weights);
    let (lo, hi) = c.loglik.interval(alpha_i);
    let rc = (c.canary_total > 0.0).then(|| c.canary_errors / c.canary_total);
    let rb = (c.baseline_total > 0.0).then(|| c.baseline_errors / c.baseline_total);
    let estimate = match (rc, rb) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => c.loglik.mle(),
    };
    report.estimate = estimate;
    report.interval = Some(anytime_interval(lo, hi, alpha_i));
    report.e_value = Some(capped_exp(log_e));
    let effect = effect_ratio(spec);
    let nw = no_worse(spec.direction, effect, lo, hi);
    if nw {
        report.status = MetricStatus::NoWorse;
    }
    let total = c.canary_total + c.baseline_total;
    let share = if total > 0.0 {
        c.canary_total / total
    } else {
        0.5
    };
    let events = c.canary_errors + c.baseline_errors;
    report.needed = Some(
        match events_needed(&weights, effect, share, (1.0 / alpha_i).ln()) {
            Some(n) => {
                let more = (n - events).max(0.0);
                let base_rate = match (rb, total > 0.0) {
                    (Some(b), _) if b > 0.0 => Some(b),
                    (_, true) if events > 0.0 => Some(events / total),
                    _ => None,
                };
                let per_request = base_rate.map(|r| r * ((1.0 - share) + effect * share));
                TrafficNeeded {
                effect,
                more_events: Some(more.ceil()),
                more_requests: per_request.filter(|p| *p > 0.0).map(|p| (more / p).ceil()),
                note: format!(
                    "mean error events to reach e={} at ratio {} with canary share {:.3} is {}; {} seen",
                    num(1.0 / alpha_i),
                    num(effect),
                    share,
                    num(n.ceil()),
                    num(events)
                ),
            }
            }
            None => no_estimate(effect, "no traffic split to estimate from"),
        },
    );
    let summary = format!(
        "{}: e={}/{} canary {}/{} ({}) vs baseline {}/{} ({}) ratio {} [{}, {}]",
        spec.name,
        num(capped_exp(log_e)),
        num(1.0 / alpha_i),
        num(c.canary_errors),
        num(c.canary_total),
        opt(rc),
        num(c.baseline_errors),
        num(c.baseline_total),
        opt(rb),
        opt(estimate),
        opt(lo),
        opt(hi)
    );
    Judged {
        report,
        log_e,
        no_worse: nw,
        usable: true,
        summary,
    }
}

/// Exceedance ratio at bound `le` that a latency change by `ratio` would cause,
/// read off the baseline's interpolated CDF.
fn exceedance_ratio(base: &CheckedHistogram, le: f64, ratio: f64) -> Option<f64> {
    let p = 1.0 - base.cdf(le)?;
    let q = 1.0 - base.cdf(le / ratio)?;
    (p > 0.0 && q > 0.0).then(|| q / p)
}

fn judge_latency(
    spec: &MetricSpec,
    m: &MetricEvidence,
    mut report: MetricReport,
    alpha_i: f64,
) -> Judged {
    let Some(l) = &m.latency else {
        return no_data(report, "no buckets".into());
    };
    let weights = weights_for(LATENCY_PRIOR, spec.direction);
    let per: Vec<f64> = l.loglik.iter().map(|x| x.log_e(&weights)).collect();
    let log_e = latency_log_e(&l.loglik, &l.shift, spec.direction);
    let (bounds_e, shift_e) = (
        bounds_log_e(&l.loglik, spec.direction),
        shift_log_e(&l.shift, spec.direction),
    );
    let canary = CheckedHistogram {
        le: l.le.clone(),
        cumulative: l.canary.clone(),
    };
    let base = CheckedHistogram {
        le: l.le.clone(),
        cumulative: l.baseline.clone(),
    };
    let (ct, bt) = (canary.total(), base.total());
    report.boundaries =
        l.le.iter()
            .enumerate()
            .map(|(i, le)| {
                let ca = if ct > 0.0 { canary.above(i) / ct } else { 0.0 };
                let ba = if bt > 0.0 { base.above(i) / bt } else { 0.0 };
                let odds = |p: f64| p / (1.0 - p);
                BoundaryReport {
                    le: *le,
                    canary_above: ca,
                    baseline_above: ba,
                    ratio: (ba > 0.0).then(|| ca / ba),
                    e_value: capped_exp(per.get(i).copied().unwrap_or(0.0)),
                    odds_ratio: (ba > 0.0 && ba < 1.0 && ca < 1.0).then(|| odds(ca) / odds(ba)),
                }
            })
            .collect();
    // The headline estimate and interval are those of the most significant bound.
    let best = per
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i);
    let effect = effect_ratio(spec);
    let mut nw = ct > 0.0 && bt > 0.0;
    let mut best_needed: Option<(f64, f64, f64, f64)> = None;
    let share = if ct + bt > 0.0 { ct / (ct + bt) } else { 0.5 };
    // The per-bound tests share 1 − SHIFT_WEIGHT of the metric's e-value.
    let log_thr =
        (1.0 / alpha_i).ln() + (l.le.len().max(1) as f64).ln() - (1.0 - SHIFT_WEIGHT).ln();
    for (i, le) in l.le.iter().enumerate() {
        let pooled = if ct + bt > 0.0 {
            (canary.above(i) + base.above(i)) / (ct + bt)
        } else {
            0.0
        };
        if !(0.05..=0.95).contains(&pooled) {
            continue;
        }
        let Some(rho) = exceedance_ratio(&base, *le, effect) else {
            continue;
        };
        let (lo, hi) = l.loglik[i].interval(alpha_i);
        if !no_worse(spec.direction, rho, lo, hi) {
            nw = false;
        }
        let base_above = if bt > 0.0 { base.above(i) / bt } else { 0.0 };
        if let Some(n) = events_needed(&weights, rho, share, log_thr) {
            let per_request = base_above * ((1.0 - share) + rho * share);
            if per_request > 0.0 {
                let requests = n / per_request;
                if best_needed.is_none_or(|b| requests < b.1) {
                    best_needed = Some((n, requests, *le, rho));
                }
            }
        }
    }
    if let Some(i) = best {
        let (lo, hi) = l.loglik[i].interval(alpha_i);
        report.estimate = report.boundaries.get(i).and_then(|b| b.ratio);
        report.interval = Some(anytime_interval(lo, hi, alpha_i));
    }
    report.e_value = Some(capped_exp(log_e));
    // Where the canary's share above a bound differs most from the
    // baseline's (in the regression direction): what drives the rank-type
    // shift test.
    let shift_le = report
        .boundaries
        .iter()
        .map(|b| {
            let d = b.canary_above - b.baseline_above;
            let d = match spec.direction {
                Direction::Increase => d,
                Direction::Decrease => -d,
                Direction::Either => d.abs(),
            };
            (b.le, d)
        })
        .filter(|(_, d)| *d > 0.0)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(le, _)| le);
    let shift_estimate = l.shift.mle();
    report.components = vec![
        ComponentReport {
            name: "shift".into(),
            weight: SHIFT_WEIGHT,
            e_value: capped_exp(shift_e),
            estimate: shift_estimate,
            le: shift_le,
        },
        ComponentReport {
            name: "bounds".into(),
            weight: 1.0 - SHIFT_WEIGHT,
            e_value: capped_exp(bounds_e),
            estimate: report.estimate,
            le: best.and_then(|i| l.le.get(i).copied()),
        },
    ];
    if nw {
        report.status = MetricStatus::NoWorse;
    }
    let seen = ct + bt;
    report.needed = Some(match best_needed {
        Some((n, requests, le, rho)) => {
            let idx = l.le.iter().position(|x| *x == le).unwrap_or(0);
            let events = canary.above(idx) + base.above(idx);
            TrafficNeeded {
                effect,
                more_events: Some((n - events).max(0.0).ceil()),
                more_requests: Some((requests - seen).max(0.0).ceil()),
                note: format!(
                    "at le={le}: latency x{} means P(latency > le) ratio {}; mean requests to cross is {}, {} seen",
                    num(effect),
                    num(rho),
                    num(requests.ceil()),
                    num(seen)
                ),
            }
        }
        None => no_estimate(effect, "no bucket bound splits the traffic 5%..95% yet"),
    });
    let summary = format!(
        "{}: e={}/{} (shift test e={}, common odds ratio {}, largest gap at le={}; per-bound mean e={}, strongest le={}) p50 {} vs {}, p90 {} vs {}, p99 {} vs {} (canary vs baseline, n {} vs {})",
        spec.name,
        num(capped_exp(log_e)),
        num(1.0 / alpha_i),
        num(capped_exp(shift_e)),
        opt(shift_estimate),
        opt(shift_le),
        num(capped_exp(bounds_e)),
        opt(best.and_then(|i| l.le.get(i).copied())),
        opt(report.canary.p50),
        opt(report.baseline.p50),
        opt(report.canary.p90),
        opt(report.baseline.p90),
        opt(report.canary.p99),
        opt(report.baseline.p99),
        num(ct),
        num(bt)
    );
    Judged {
        report,
        log_e,
        no_worse: nw,
        usable: true,
        summary,
    }
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
    let odds = 3.0;
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

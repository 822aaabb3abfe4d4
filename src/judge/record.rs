//! Folding one window into [`Evidence`].

use super::grid::{bump_weights, LogLik, Side};
use super::histogram::{self, CheckedHistogram};
use super::ordinal;
use super::{
    cap_text, CountsEvidence, Evidence, GaugeEvidence, LatencyEvidence, MetricEvidence,
    SeriesPoint, MAX_BUCKET_BOUNDS, MAX_PROBLEM_BYTES, MAX_SERIES,
};
use crate::observation::{ArmValue, MetricWindow, Sample, WindowObservation};

/// The SRM check's own budget (separate from the false-rollback budget: a
/// broken split yields Inconclusive, never a rollback).
pub const SRM_ALPHA: f64 = 0.001;

/// SRM mixture weights: two-sided, only on odds ratios ≥ e^0.25 ≈ 1.28, so a
/// persistent imbalance of a few percent (imperfect load balancing) does not
/// accumulate evidence; a broken split (crash-looping canary, wrong weights)
/// does.
pub fn srm_weights() -> Vec<f64> {
    bump_weights(Side::Both, 1.6, 0.5, 2)
}

pub(super) fn record(ev: &mut Evidence, window: &WindowObservation) {
    ev.windows = ev.windows.saturating_add(1);
    if window.at_secs.is_finite() {
        ev.at_secs = window.at_secs;
    }
    let mut split: Option<(f64, f64)> = None;
    for mw in &window.metrics {
        let idx = match ev.metrics.iter().position(|m| m.name == mw.name) {
            Some(i) => i,
            None => {
                ev.metrics.push(MetricEvidence {
                    name: mw.name.clone(),
                    ..MetricEvidence::default()
                });
                ev.metrics.len() - 1
            }
        };
        let m = &mut ev.metrics[idx];
        match fold_metric(m, mw) {
            Ok(requests) => {
                m.windows = m.windows.saturating_add(1);
                m.stale = 0;
                if split.is_none() {
                    split = requests;
                }
            }
            Err(problem) => {
                m.no_data = m.no_data.saturating_add(1);
                m.stale = m.stale.saturating_add(1);
                m.last_problem = Some(cap_text(&problem, MAX_PROBLEM_BYTES));
            }
        }
    }
    for m in &mut ev.metrics {
        if !window.metrics.iter().any(|mw| mw.name == m.name) {
            m.stale = m.stale.saturating_add(1);
        }
    }
    if let (Some((c, b)), Some(share)) = (split, window.expected_canary_share) {
        // A window where the canary served nothing is no data for the step
        // (the engine holds on it); fed to the split check it would flag a
        // mismatch that never clears once traffic is back.
        if share > 0.0 && share < 1.0 && c > 0.0 {
            let srm = &mut ev.srm;
            srm.canary += c;
            srm.baseline += b;
            srm.expected_canary += share * (c + b);
            srm.loglik.add(c, c + b, share);
            let log_e = srm.loglik.log_e(&srm_weights());
            if log_e > srm.max_log_e {
                srm.max_log_e = log_e;
            }
            if srm.flagged_at.is_none() && srm.max_log_e >= (1.0 / SRM_ALPHA).ln() {
                srm.flagged_at = Some(ev.windows);
            }
        }
    }
}

/// One arm's sample after the checks that need only that arm.
enum Checked {
    Counts { errors: f64, total: f64 },
    Buckets(CheckedHistogram),
    Gauge(f64),
}

impl Checked {
    fn shape(&self) -> &'static str {
        match self {
            Checked::Counts { .. } => "counts",
            Checked::Buckets(_) => "buckets",
            Checked::Gauge(_) => "a gauge",
        }
    }

    /// The arm's per-window value (error ratio, p90 or gauge value) and, for
    /// latency, its p99; `None` when undefined (no requests).
    fn summary(&self) -> (Option<f64>, Option<f64>) {
        match self {
            Checked::Counts { errors, total } => ((*total > 0.0).then(|| errors / total), None),
            Checked::Buckets(h) => (
                h.quantile(0.9).and_then(finite),
                h.quantile(0.99).and_then(finite),
            ),
            Checked::Gauge(v) => (Some(*v), None),
        }
    }
}

/// Appends a window's point, dropping the oldest beyond [`MAX_SERIES`].
fn push_point(m: &mut MetricEvidence, p: SeriesPoint) {
    if m.series.len() >= MAX_SERIES {
        let excess = m.series.len() + 1 - MAX_SERIES;
        m.series.drain(..excess);
    }
    m.series.push(p);
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Folds one metric window; returns the arms' request counts when known.
///
/// Each arm is checked on its own first. When both are usable the window
/// feeds every test; when only one is, that arm's value still goes into the
/// per-window series (classic mode drops or replaces missing values per arm,
/// as Kayenta does) and the window counts as "no data" for the metric. A
/// window where neither arm is usable, or where the arms do not fit together
/// (different shapes, different bucket bounds), adds nothing.
fn fold_metric(m: &mut MetricEvidence, mw: &MetricWindow) -> Result<Option<(f64, f64)>, String> {
    let c = check_arm(m, "canary", &mw.canary);
    let b = check_arm(m, "baseline", &mw.baseline);
    match (c, b) {
        (Ok(c), Ok(b)) => fold_pair(m, c, b),
        (Err(problem), Err(_)) => Err(problem),
        (Ok(c), Err(problem)) => {
            let (c, c99) = c.summary();
            push_point(m, SeriesPoint { c, b: None, c99 });
            Err(problem)
        }
        (Err(problem), Ok(b)) => {
            let (b, _) = b.summary();
            push_point(
                m,
                SeriesPoint {
                    c: None,
                    b,
                    c99: None,
                },
            );
            Err(problem)
        }
    }
}

/// Checks one arm's data on its own: present, valid, and of the shape (and
/// bucket bounds) the metric had in earlier windows.
fn check_arm(m: &MetricEvidence, arm: &str, value: &ArmValue) -> Result<Checked, String> {
    let sample = match value {
        ArmValue::NoData(r) => return Err(format!("{arm}: {r}")),
        ArmValue::Sample(s) => s,
    };
    let other_shape = |name: &str| format!("{arm}: metric changed from another shape to {name}");
    match sample {
        Sample::Counts { errors, total } => {
            if m.latency.is_some() || m.gauge.is_some() {
                return Err(other_shape("counts"));
            }
            let (errors, total) = check_counts(arm, *errors, *total)?;
            Ok(Checked::Counts { errors, total })
        }
        Sample::Buckets(h) => {
            if m.counts.is_some() || m.gauge.is_some() {
                return Err(other_shape("buckets"));
            }
            let h = histogram::check(h).map_err(|e| format!("{arm}: {e}"))?;
            if h.le.len() > MAX_BUCKET_BOUNDS {
                return Err(format!(
                    "{arm}: histogram has {} finite bucket bounds, more than the {MAX_BUCKET_BOUNDS} canaryd judges; keep fewer le values in the buckets query",
                    h.le.len()
                ));
            }
            if let Some(ev) = m.latency.as_ref().filter(|ev| ev.le != h.le) {
                return Err(format!(
                    "{arm}: bucket boundaries changed: were {:?}, now {:?}",
                    ev.le, h.le
                ));
            }
            Ok(Checked::Buckets(h))
        }
        Sample::Gauge(v) => {
            if m.counts.is_some() || m.latency.is_some() {
                return Err(other_shape("a gauge"));
            }
            if !v.is_finite() {
                return Err(format!("{arm}: gauge value is {v}"));
            }
            Ok(Checked::Gauge(*v))
        }
    }
}

/// Folds a window in which both arms are usable on their own.
fn fold_pair(m: &mut MetricEvidence, c: Checked, b: Checked) -> Result<Option<(f64, f64)>, String> {
    match (c, b) {
        (
            Checked::Counts {
                errors: ce,
                total: ct,
            },
            Checked::Counts {
                errors: be,
                total: bt,
            },
        ) => {
            let ev = m.counts.get_or_insert_with(CountsEvidence::default);
            ev.canary_errors += ce;
            ev.canary_total += ct;
            ev.baseline_errors += be;
            ev.baseline_total += bt;
            if ct + bt > 0.0 {
                ev.loglik.add(ce, ce + be, ct / (ct + bt));
            } else {
                ev.loglik.add(0.0, 0.0, 0.5);
            }
            push_point(
                m,
                SeriesPoint {
                    c: (ct > 0.0).then(|| ce / ct),
                    b: (bt > 0.0).then(|| be / bt),
                    c99: None,
                },
            );
            Ok(Some((ct, bt)))
        }
        (Checked::Buckets(ch), Checked::Buckets(bh)) => {
            if ch.le != bh.le {
                return Err(format!(
                    "differing bucket boundaries: canary {:?} vs baseline {:?}",
                    ch.le, bh.le
                ));
            }
            fold_latency(m, &ch, &bh);
            Ok(Some((ch.total(), bh.total())))
        }
        (Checked::Gauge(cv), Checked::Gauge(bv)) => {
            fold_gauge(m, cv, bv);
            Ok(None)
        }
        (c, b) => Err(format!(
            "canary sent {} but baseline sent {}",
            c.shape(),
            b.shape()
        )),
    }
}

fn fold_gauge(m: &mut MetricEvidence, cv: f64, bv: f64) {
    let ev = m.gauge.get_or_insert_with(GaugeEvidence::default);
    ev.canary_sum += cv;
    ev.baseline_sum += bv;
    // Sequential sign test: under exchangeable arms the canary is the
    // higher one with probability 1/2 in each window (ties carry none).
    if cv > bv {
        ev.higher = ev.higher.saturating_add(1);
        ev.loglik.add(1.0, 1.0, 0.5);
    } else if cv < bv {
        ev.lower = ev.lower.saturating_add(1);
        ev.loglik.add(0.0, 1.0, 0.5);
    } else {
        ev.loglik.add(0.0, 0.0, 0.5);
    }
    push_point(
        m,
        SeriesPoint {
            c: Some(cv),
            b: Some(bv),
            c99: None,
        },
    );
}

fn check_counts(arm: &str, errors: f64, total: f64) -> Result<(f64, f64), String> {
    if !errors.is_finite() {
        return Err(format!("{arm}: error count is {errors}"));
    }
    if !total.is_finite() {
        return Err(format!("{arm}: request count is {total}"));
    }
    if errors < 0.0 {
        return Err(format!("{arm}: negative error count {errors}"));
    }
    if total < 0.0 {
        return Err(format!("{arm}: negative request count {total}"));
    }
    // `increase()` extrapolation can put errors a hair above total.
    if errors > total * (1.0 + 1e-6) + 1e-6 {
        return Err(format!("{arm}: {errors} errors exceed {total} requests"));
    }
    Ok((errors.min(total), total))
}

fn fold_latency(m: &mut MetricEvidence, ch: &CheckedHistogram, bh: &CheckedHistogram) {
    let ev = m.latency.get_or_insert_with(|| LatencyEvidence {
        le: ch.le.clone(),
        canary: vec![0.0; ch.cumulative.len()],
        baseline: vec![0.0; ch.cumulative.len()],
        loglik: vec![LogLik::default(); ch.le.len()],
        shift: LogLik::default(),
    });
    // The proportional-odds test bets with the EARLIER windows' pooled
    // distribution, so it runs before this window is added to the sums.
    ordinal::add_window(
        &mut ev.shift,
        &ev.canary,
        &ev.baseline,
        &ch.cumulative,
        &bh.cumulative,
    );
    for (acc, v) in ev.canary.iter_mut().zip(&ch.cumulative) {
        *acc += v;
    }
    for (acc, v) in ev.baseline.iter_mut().zip(&bh.cumulative) {
        *acc += v;
    }
    let (ct, bt) = (ch.total(), bh.total());
    for (i, l) in ev.loglik.iter_mut().enumerate() {
        let (x, y) = (ch.above(i), bh.above(i));
        if ct + bt > 0.0 {
            l.add(x, x + y, ct / (ct + bt));
        } else {
            l.add(0.0, 0.0, 0.5);
        }
    }
    let point = SeriesPoint {
        c: ch.quantile(0.9).and_then(finite),
        b: bh.quantile(0.9).and_then(finite),
        c99: ch.quantile(0.99).and_then(finite),
    };
    push_point(m, point);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(c: ArmValue, b: ArmValue) -> WindowObservation {
        WindowObservation {
            at_secs: 60.0,
            expected_canary_share: None,
            metrics: vec![MetricWindow {
                name: "m".into(),
                canary: c,
                baseline: b,
            }],
        }
    }

    fn gauge(v: f64) -> ArmValue {
        ArmValue::Sample(Sample::Gauge(v))
    }

    fn none() -> ArmValue {
        ArmValue::NoData("null value".into())
    }

    #[test]
    fn one_arm_missing_keeps_the_other_arms_value_but_is_no_data() {
        let mut ev = Evidence::default();
        ev.record(&window(gauge(1.0), gauge(2.0)));
        ev.record(&window(gauge(3.0), none()));
        ev.record(&window(none(), gauge(4.0)));
        let m = &ev.metrics[0];
        let pts: Vec<(Option<f64>, Option<f64>)> = m.series.iter().map(|p| (p.c, p.b)).collect();
        assert_eq!(
            pts,
            vec![(Some(1.0), Some(2.0)), (Some(3.0), None), (None, Some(4.0))]
        );
        // Paired tests and staleness still need both arms.
        assert_eq!((m.windows, m.no_data, m.stale), (1, 2, 2));
        assert_eq!(m.last_problem.as_deref(), Some("canary: null value"));
        let g = m.gauge.as_ref().map(|g| (g.canary_sum, g.baseline_sum));
        assert_eq!(g, Some((1.0, 2.0)));
    }

    #[test]
    fn neither_arm_or_mismatched_arms_add_no_point() {
        let mut ev = Evidence::default();
        ev.record(&window(none(), none()));
        ev.record(&window(
            ArmValue::Sample(Sample::Counts {
                errors: 1.0,
                total: 10.0,
            }),
            gauge(1.0),
        ));
        let m = &ev.metrics[0];
        assert!(m.series.is_empty());
        assert_eq!(m.no_data, 2);
        assert_eq!(
            m.last_problem.as_deref(),
            Some("canary sent counts but baseline sent a gauge")
        );
    }

    #[test]
    fn an_invalid_arm_is_dropped_alone() {
        let mut ev = Evidence::default();
        let counts = |errors, total| ArmValue::Sample(Sample::Counts { errors, total });
        ev.record(&window(counts(1.0, 10.0), counts(1.0, 20.0)));
        ev.record(&window(counts(5.0, 2.0), counts(2.0, 20.0)));
        ev.record(&window(counts(1.0, 4.0), gauge(0.5)));
        let m = &ev.metrics[0];
        let pts: Vec<(Option<f64>, Option<f64>)> = m.series.iter().map(|p| (p.c, p.b)).collect();
        assert_eq!(
            pts,
            vec![
                (Some(0.1), Some(0.05)),
                (None, Some(0.1)),
                (Some(0.25), None)
            ]
        );
        assert_eq!(
            m.last_problem.as_deref(),
            Some("baseline: metric changed from another shape to a gauge")
        );
        let c = m
            .counts
            .as_ref()
            .map(|c| (c.canary_total, c.baseline_total));
        assert_eq!(c, Some((10.0, 20.0)));
    }
}

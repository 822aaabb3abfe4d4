//! Folding one window into [`Evidence`].

use super::grid::{bump_weights, LogLik, Side};
use super::histogram::{self, CheckedHistogram};
use super::ordinal;
use super::{
    CountsEvidence, Evidence, GaugeEvidence, LatencyEvidence, MetricEvidence, SeriesPoint,
    MAX_SERIES,
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
                m.last_problem = Some(problem);
            }
        }
    }
    for m in &mut ev.metrics {
        if !window.metrics.iter().any(|mw| mw.name == m.name) {
            m.stale = m.stale.saturating_add(1);
        }
    }
    if let (Some((c, b)), Some(share)) = (split, window.expected_canary_share) {
        if share > 0.0 && share < 1.0 && c + b > 0.0 {
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

fn shape(v: &Sample) -> &'static str {
    match v {
        Sample::Counts { .. } => "counts",
        Sample::Buckets(_) => "buckets",
        Sample::Gauge(_) => "a gauge",
    }
}

fn push_point(m: &mut MetricEvidence, p: SeriesPoint) {
    if m.series.len() < MAX_SERIES {
        m.series.push(p);
    }
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Folds one metric window; returns the arms' request counts when known.
fn fold_metric(m: &mut MetricEvidence, mw: &MetricWindow) -> Result<Option<(f64, f64)>, String> {
    let (c, b) = match (&mw.canary, &mw.baseline) {
        (ArmValue::NoData(r), _) => return Err(format!("canary: {r}")),
        (_, ArmValue::NoData(r)) => return Err(format!("baseline: {r}")),
        (ArmValue::Sample(c), ArmValue::Sample(b)) => (c, b),
    };
    match (c, b) {
        (
            Sample::Counts {
                errors: ce,
                total: ct,
            },
            Sample::Counts {
                errors: be,
                total: bt,
            },
        ) => {
            if m.latency.is_some() || m.gauge.is_some() {
                return Err("metric changed from another shape to counts".into());
            }
            let (ce, ct) = check_counts("canary", *ce, *ct)?;
            let (be, bt) = check_counts("baseline", *be, *bt)?;
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
        (Sample::Buckets(ch), Sample::Buckets(bh)) => {
            if m.counts.is_some() || m.gauge.is_some() {
                return Err("metric changed from another shape to buckets".into());
            }
            let ch = histogram::check(ch).map_err(|e| format!("canary: {e}"))?;
            let bh = histogram::check(bh).map_err(|e| format!("baseline: {e}"))?;
            if ch.le != bh.le {
                return Err(format!(
                    "differing bucket boundaries: canary {:?} vs baseline {:?}",
                    ch.le, bh.le
                ));
            }
            if let Some(ev) = &m.latency {
                if ev.le != ch.le {
                    return Err(format!(
                        "bucket boundaries changed: were {:?}, now {:?}",
                        ev.le, ch.le
                    ));
                }
            }
            fold_latency(m, &ch, &bh);
            Ok(Some((ch.total(), bh.total())))
        }
        (Sample::Gauge(cv), Sample::Gauge(bv)) => {
            if m.counts.is_some() || m.latency.is_some() {
                return Err("metric changed from another shape to a gauge".into());
            }
            if !cv.is_finite() {
                return Err(format!("canary: gauge value is {cv}"));
            }
            if !bv.is_finite() {
                return Err(format!("baseline: gauge value is {bv}"));
            }
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
                    c: Some(*cv),
                    b: Some(*bv),
                    c99: None,
                },
            );
            Ok(None)
        }
        (c, b) => Err(format!(
            "canary sent {} but baseline sent {}",
            shape(c),
            shape(b)
        )),
    }
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

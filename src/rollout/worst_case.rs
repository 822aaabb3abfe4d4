//! The largest rollout state a valid policy allows, built through the real
//! judge: used by the size tests (unit and against a real apiserver) and by
//! `docs/judge.md`'s measured figure.

use super::state::{
    state_bytes_bound, HoldCause, Phase, RolloutState, VerdictRecord, MAX_STATE_BYTES, MAX_VERDICTS,
};
use crate::judge::{self, MAX_BUCKET_BOUNDS, MAX_SERIES};
use crate::observation::{ArmValue, Histogram, MetricWindow, Sample, WindowObservation};
use crate::policy::{
    Analysis, JudgeMode, MetricKind, MetricSpec, OnNoData, PrometheusConfig, Template,
    MAX_METRIC_NAME_BYTES,
};

/// Windows recorded: more than [`MAX_SERIES`], so every series is full.
const WINDOWS: usize = MAX_SERIES + 10;
/// Longest timestamp-like value (the largest a `u64` holds).
const LATE: u64 = u64::MAX;

/// A metric name of [`MAX_METRIC_NAME_BYTES`] bytes whose JSON form is as long
/// as possible (quotes are escaped), distinct per `i`.
fn long_name(i: usize) -> String {
    let tag = format!("-{i:03}");
    let mut name = "\"".repeat(MAX_METRIC_NAME_BYTES - tag.len());
    name.push_str(&tag);
    name
}

fn spec(i: usize, kind: MetricKind) -> MetricSpec {
    MetricSpec {
        name: long_name(i),
        kind,
        direction: crate::policy::Direction::Increase,
        bounds: None,
        critical: false,
        min_effect: crate::policy::defaults::DEFAULT_MIN_EFFECT,
        weight: crate::policy::defaults::DEFAULT_METRIC_WEIGHT,
    }
}

/// The largest metric list a valid policy may have (by
/// [`state_bytes_bound`]): as many latency metrics as fit, then errors
/// metrics, each with a longest name.
pub fn largest_metrics() -> Vec<MetricSpec> {
    let latency = || MetricKind::Latency {
        buckets: Template("b".into()),
    };
    let errors = || MetricKind::Errors {
        errors: Template("e".into()),
        total: Template("t".into()),
    };
    let mut metrics: Vec<MetricSpec> = Vec::new();
    for kind in [latency as fn() -> MetricKind, errors] {
        loop {
            metrics.push(spec(metrics.len(), kind()));
            if state_bytes_bound(&metrics) > MAX_STATE_BYTES {
                metrics.pop();
                break;
            }
        }
    }
    metrics
}

/// Analysis settings judging `metrics` (sequential mode).
pub fn analysis(metrics: &[MetricSpec]) -> Analysis {
    Analysis {
        prometheus: PrometheusConfig {
            url: "http://prometheus:9090".into(),
            auth: None,
            ca_file: None,
        },
        interval: std::time::Duration::from_secs(5),
        max_duration: std::time::Duration::from_secs(24 * 3600),
        alpha: crate::policy::DEFAULT_ALPHA,
        on_no_data: OnNoData::Hold,
        min_requests_per_step: 0,
        mode: JudgeMode::Sequential,
        metrics: metrics.to_vec(),
    }
}

/// A float with a full 17-digit JSON form, varying with `k`.
fn ragged(k: usize) -> f64 {
    let k = k as f64;
    (k * 0.618_033_988_749_894_9).fract() + 1.0 / 3.0 + k
}

fn sample(spec: &MetricSpec, w: usize, arm: usize) -> Sample {
    let n = ragged(w * 7 + arm) * 1000.0;
    match spec.kind {
        MetricKind::Errors { .. } => Sample::Counts {
            errors: n / (7.0 + arm as f64),
            total: n,
        },
        MetricKind::Gauge { .. } => Sample::Gauge(n),
        MetricKind::Latency { .. } => {
            let mut le: Vec<f64> = (0..MAX_BUCKET_BOUNDS)
                .map(|b| ragged(b) / 997.0 + b as f64)
                .collect();
            le.push(f64::INFINITY);
            let counts = (0..=MAX_BUCKET_BOUNDS)
                .map(|b| n * (b + 1 + arm) as f64 / (MAX_BUCKET_BOUNDS + 1 + arm) as f64)
                .collect();
            Sample::Buckets(Histogram { le, counts })
        }
    }
}

/// One window with data for every metric and arm (`problem`: none, with
/// that reason, for every metric's baseline).
fn window(metrics: &[MetricSpec], w: usize, problem: Option<&str>) -> WindowObservation {
    WindowObservation {
        at_secs: ragged(w) * 5.0,
        expected_canary_share: Some(0.5),
        metrics: metrics
            .iter()
            .map(|m| MetricWindow {
                name: m.name.clone(),
                canary: ArmValue::Sample(sample(m, w, 0)),
                baseline: match problem {
                    Some(p) => ArmValue::NoData(p.to_string()),
                    None => ArmValue::Sample(sample(m, w, 1)),
                },
            })
            .collect(),
    }
}

/// The largest state for `metrics`: every series full, a longest problem
/// text per metric, [`MAX_VERDICTS`] verdicts from the real judge with
/// longest reasons, every optional field set to its longest value.
pub fn worst_case_state(metrics: &[MetricSpec]) -> RolloutState {
    let analysis = analysis(metrics);
    let long_text = "\"\\".repeat(4096);
    let label = "v".repeat(63);
    let mut state = RolloutState {
        phase: Phase::WaitingForGate { step: usize::MAX },
        revision: Some(label.clone()),
        stable_hash: Some(label.clone()),
        new_version: Some(label.clone()),
        stable_version: Some(label.clone()),
        failed_revision: Some(label),
        observed_generation: Some(i64::MIN),
        phase_started_at: LATE,
        analysis_started_at: Some(LATE),
        step_started_at: Some(LATE),
        window_started_at: Some(LATE),
        promoted_at: Some(LATE),
        no_data_since: Some(LATE),
        hold: Some(HoldCause::LowTraffic),
        last_window_at_secs: Some(-ragged(3) * 1e-300),
        step_decision: Some(judge::Decision::Inconclusive),
        ..RolloutState::default()
    };
    state.set_message(&long_text);
    state.step_evidence.canary_requests = -ragged(5) * 1e-300;
    for m in metrics {
        state.step_evidence.usable_secs.insert(m.name.clone(), LATE);
    }
    state.evidence.record(&window(metrics, 0, Some(&long_text)));
    for w in 1..WINDOWS {
        state.evidence.record(&window(metrics, w, None));
        let verdict = judge::evaluate(&analysis, &state.evidence);
        state.push_verdict(VerdictRecord {
            at: LATE,
            step: usize::MAX,
            decision: verdict.decision,
            reason: format!("{long_text}{}", verdict.reason),
        });
    }
    debug_assert_eq!(state.verdicts.len(), MAX_VERDICTS);
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_case_state_fits_its_bound_and_round_trips() {
        let metrics = largest_metrics();
        let state = worst_case_state(&metrics);
        let json = state.to_json();
        let bound = state_bytes_bound(&metrics);
        let latency = metrics
            .iter()
            .filter(|m| matches!(m.kind, MetricKind::Latency { .. }))
            .count();
        println!(
            "worst-case state: {} bytes ({} metrics, {latency} latency, {MAX_BUCKET_BOUNDS} bucket bounds, {MAX_SERIES} windows kept, {MAX_VERDICTS} verdicts); bound {bound}, limit {MAX_STATE_BYTES}",
            json.len(),
            metrics.len()
        );
        assert!(json.len() <= bound, "{} > bound {bound}", json.len());
        assert!(bound <= MAX_STATE_BYTES);
        assert!(metrics.len() >= 3 && latency >= 2, "{}", metrics.len());
        for m in &state.evidence.metrics {
            assert_eq!(m.series.len(), MAX_SERIES);
            assert!(m.last_problem.is_some());
        }
        let back = RolloutState::from_json(&json).unwrap();
        assert_eq!(back, state);
        let analysis = analysis(&metrics);
        assert_eq!(
            judge::evaluate(&analysis, &back.evidence),
            judge::evaluate(&analysis, &state.evidence)
        );
    }

    #[test]
    fn every_single_metric_kind_alone_fits_with_room() {
        for metrics in [
            largest_metrics()[..1].to_vec(),
            crate::policy::default_metrics(),
        ] {
            let json = worst_case_state(&metrics).to_json();
            assert!(json.len() <= state_bytes_bound(&metrics));
            assert!(state_bytes_bound(&metrics) <= MAX_STATE_BYTES);
        }
    }
}

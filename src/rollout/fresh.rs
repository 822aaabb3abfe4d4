//! Fresh evidence per step: what the current step has seen itself.
//!
//! The judge's evidence is cumulative, which is right for rolling back (an
//! anytime-valid e-process may stop at any time) but not for moving on: a
//! step that saw no data must not be left on what earlier steps saw. So every
//! window is also folded into the step's own [`StepEvidence`], and a step may
//! be left only when [`missing`] finds nothing missing.

use crate::judge::Evidence;
use crate::observation::{ArmValue, MetricWindow, Sample, WindowObservation};
use crate::policy::Policy;

use super::engine::format_secs;
use super::plan::PlannedStep;
use super::state::{HoldCause, StepEvidence};

/// Usable-window counts per metric, taken before a window is recorded.
pub(super) fn usable_counts(evidence: &Evidence) -> Vec<(String, u32)> {
    evidence
        .metrics
        .iter()
        .map(|m| (m.name.clone(), m.windows))
        .collect()
}

/// The canary's request count in one metric window, for metrics that count
/// requests (errors: the total; latency: the histogram's count).
fn canary_requests(mw: &MetricWindow) -> Option<f64> {
    match &mw.canary {
        ArmValue::Sample(Sample::Counts { total, .. }) => Some(*total),
        ArmValue::Sample(Sample::Buckets(h)) => h.counts.last().copied(),
        ArmValue::Sample(Sample::Gauge(_)) | ArmValue::NoData(_) => None,
    }
}

/// Folds the window just recorded into the step's evidence. `before` is
/// [`usable_counts`] from before the judge recorded it, `length_secs` the
/// window's length. Returns why the window was not usable for every metric
/// (`None` when it was): [`HoldCause::LowTraffic`] when every metric had data
/// but the canary served no requests, else [`HoldCause::NoData`].
pub(super) fn fold_window(
    step: &mut StepEvidence,
    policy: &Policy,
    before: &[(String, u32)],
    after: &Evidence,
    window: &WindowObservation,
    length_secs: u64,
) -> Option<(HoldCause, String)> {
    let mut problems = Vec::new();
    let mut lacked_data = false;
    let mut requests: f64 = 0.0;
    for spec in &policy.analysis.metrics {
        let name = spec.name.as_str();
        let was = before
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, w)| *w);
        let now = after.metric(name);
        let judged = now.is_some_and(|m| m.windows > was);
        let served = window
            .metrics
            .iter()
            .find(|mw| mw.name == name)
            .and_then(canary_requests);
        let problem = if !judged {
            lacked_data = true;
            Some(
                now.and_then(|m| m.last_problem.clone())
                    .unwrap_or_else(|| String::from("the window did not carry this metric")),
            )
        } else if served.is_some_and(|r| r <= 0.0) {
            Some(String::from("the canary served no requests"))
        } else {
            None
        };
        match problem {
            Some(why) => problems.push(format!("{name}: {why}")),
            None => {
                *step.usable_secs.entry(spec.name.clone()).or_default() += length_secs;
                requests = requests.max(served.unwrap_or(0.0));
            }
        }
    }
    step.canary_requests += requests;
    step.last_window_usable = problems.is_empty();
    let cause = if lacked_data {
        HoldCause::NoData
    } else {
        HoldCause::LowTraffic
    };
    (!problems.is_empty()).then(|| (cause, problems.join("; ")))
}

/// What keeps a step from being left.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Missing {
    /// A metric had too little usable data during the step.
    Data {
        /// Metric name.
        metric: String,
        /// Seconds of usable windows it had.
        had: u64,
        /// Seconds it needs: the step's observe time minus one interval.
        need: u64,
    },
    /// The step's latest window was not usable (the source may be down now).
    LastWindow,
    /// The canary served too few requests during the step.
    Traffic {
        /// Requests served.
        served: f64,
        /// `analysis.minRequestsPerStep`.
        need: u64,
    },
}

impl Missing {
    /// The hold this calls for.
    pub(super) fn cause(&self) -> HoldCause {
        match self {
            Missing::Data { .. } | Missing::LastWindow => HoldCause::NoData,
            Missing::Traffic { .. } => HoldCause::LowTraffic,
        }
    }

    /// A sentence for Events and logs.
    pub(super) fn describe(&self) -> String {
        match self {
            Missing::Data { metric, had, need } => format!(
                "{metric} had {} of usable data in this step; it needs {} (observe time minus one interval)",
                format_secs(*had),
                format_secs(*need)
            ),
            Missing::LastWindow => {
                String::from("the step's latest window had no usable data for every metric")
            }
            Missing::Traffic { served, need } => format!(
                "the canary served {served:.0} request(s) in this step; analysis.minRequestsPerStep is {need}"
            ),
        }
    }
}

/// What the current step still lacks before it may be left, if anything.
/// Every metric counts: each one can roll back, so each one must have been
/// observed.
pub(super) fn missing(policy: &Policy, plan: &PlannedStep, step: &StepEvidence) -> Option<Missing> {
    let need = plan
        .observe_secs
        .saturating_sub(policy.analysis.interval.as_secs());
    for spec in &policy.analysis.metrics {
        let had = step.usable_secs.get(&spec.name).copied().unwrap_or(0);
        if had < need {
            return Some(Missing::Data {
                metric: spec.name.clone(),
                had,
                need,
            });
        }
    }
    if !step.last_window_usable {
        return Some(Missing::LastWindow);
    }
    let need = policy.analysis.min_requests_per_step;
    (step.canary_requests < need as f64).then_some(Missing::Traffic {
        served: step.canary_requests,
        need,
    })
}

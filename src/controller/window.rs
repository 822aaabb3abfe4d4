//! Closing an observation window: query the policy's metric source for the
//! canary and its comparison arm over the window that just ended.

use std::time::Duration;

use super::Context;
use crate::metrics::Window;
use crate::observation::{ArmValue, MetricWindow, WindowObservation};
use crate::policy::Policy;
use crate::rollout::{self, ReadyPods, RolloutState, Target};

/// The observation of the window that closed by `now`, if one did.
///
/// A metric source that fails as a whole (Prometheus down, timeouts) yields a
/// window with no data for every metric: the engine then holds (or rolls back
/// under `onNoData: rollback`) with a NoData Event naming the error, and a
/// longer outage is bounded by `maxDuration`, instead of the step advancing on
/// an old verdict.
pub async fn close(
    ctx: &Context,
    policy: &Policy,
    state: &RolloutState,
    target: &Target,
    now: u64,
) -> Option<WindowObservation> {
    let due = rollout::next_window_close(policy, state)?;
    if now < due {
        return None;
    }
    let opened = state.window_started_at?;
    let analysis = state.analysis_started_at?;
    let step = state.phase.step()?;
    let weight = rollout::planned_step(policy, step, target.replicas).and_then(|p| p.weight);
    let pods = ReadyPods {
        canary: target.canary.ready,
        baseline: target.baseline.ready,
        stable: target.stable.ready,
    };
    let window = Window {
        end_unix_secs: now.min(i64::MAX as u64) as i64,
        length: Duration::from_secs(now.saturating_sub(opened).max(1)),
        at_secs: now.saturating_sub(analysis) as f64,
        expected_canary_share: rollout::expected_canary_share(policy, weight, pods),
    };
    let source = match ctx.source_for(policy) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(service = %policy.service, error = %e, "No metric source; window has no data.");
            return Some(no_data(policy, &window, &e));
        }
    };
    match source.observe(policy, &window).await {
        Ok(observation) => Some(observation),
        Err(e) => {
            ctx.server.metrics.prometheus_query_errors.inc();
            tracing::warn!(service = %policy.service, error = %e, "Metric source failed; window has no data.");
            Some(no_data(policy, &window, &e.to_string()))
        }
    }
}

/// A window in which every metric of `policy` has no data, for `why`.
pub fn no_data(policy: &Policy, window: &Window, why: &str) -> WindowObservation {
    let reason = format!("metric source failed: {why}");
    WindowObservation {
        at_secs: window.at_secs,
        expected_canary_share: window.expected_canary_share,
        metrics: policy
            .analysis
            .metrics
            .iter()
            .map(|m| MetricWindow {
                name: m.name.clone(),
                canary: ArmValue::NoData(reason.clone()),
                baseline: ArmValue::NoData(reason.clone()),
            })
            .collect(),
    }
}

//! The policy's plan in concrete numbers: pods and weights per step, and the
//! traffic share the canary should get.

use crate::policy::{BaselineMode, Policy, Strategy, Traffic};

/// One step of the plan for a Deployment of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedStep {
    /// Canary pods.
    pub canary_replicas: u32,
    /// Fresh-baseline pods (0 when the baseline is the stable pods).
    pub baseline_replicas: u32,
    /// Router weight in percent (`None` without a traffic router).
    pub weight: Option<u8>,
    /// Seconds to observe before the step may advance.
    pub observe_secs: u64,
    /// Whether leaving the step needs an approval.
    pub gate: bool,
}

/// Number of analysed steps (blue-green analyses once, before the switch).
pub fn step_count(policy: &Policy) -> usize {
    match &policy.strategy {
        Strategy::Canary(c) => c.steps.len(),
        Strategy::BlueGreen(_) => 1,
    }
}

/// Step `index` of the plan for a Deployment of `total` replicas; `None` past the end.
pub fn planned_step(policy: &Policy, index: usize, total: u32) -> Option<PlannedStep> {
    match &policy.strategy {
        Strategy::BlueGreen(bg) => (index == 0).then_some(PlannedStep {
            // The new version runs at full size beside the old one; it is
            // compared with the stable pods, so no baseline is created.
            canary_replicas: total.max(1),
            baseline_replicas: 0,
            weight: None,
            observe_secs: bg.observe.as_secs(),
            gate: bg.gate,
        }),
        Strategy::Canary(c) => {
            let step = c.steps.get(index)?;
            let router = policy.traffic.has_router();
            // Steps without a weight keep the previous step's.
            let weight = router.then(|| {
                c.steps[..=index]
                    .iter()
                    .rev()
                    .find_map(|s| s.weight)
                    .unwrap_or(0)
            });
            // Steps without a size keep the previous one; with only weights,
            // size the canary to carry its share of traffic.
            let size = c.steps[..=index].iter().rev().find_map(|s| s.size);
            let canary_replicas = match (size, weight) {
                (Some(size), _) => size.replicas(total),
                (None, Some(w)) => {
                    let pods = (f64::from(total) * f64::from(w) / 100.0).ceil() as u32;
                    pods.clamp(1, total.max(1))
                }
                (None, None) => 1,
            };
            let baseline_replicas = match policy.baseline {
                BaselineMode::Fresh => canary_replicas,
                BaselineMode::Stable => 0,
            };
            Some(PlannedStep {
                canary_replicas,
                baseline_replicas,
                weight,
                observe_secs: step.observe.as_secs(),
                gate: step.gate,
            })
        }
    }
}

/// Ready pods of each arm, as used for the expected traffic share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadyPods {
    /// Ready canary pods.
    pub canary: u32,
    /// Ready fresh-baseline pods.
    pub baseline: u32,
    /// Ready stable pods.
    pub stable: u32,
}

/// The canary's intended share of canary+baseline traffic, for
/// [`crate::observation::WindowObservation::expected_canary_share`].
///
/// `weight` is the router weight of the current step (ignored without a
/// router). Blue-green (traffic before the switch is preview traffic canaryd
/// does not control) and arms without pods give `None`.
pub fn expected_canary_share(policy: &Policy, weight: Option<u8>, pods: ReadyPods) -> Option<f64> {
    if matches!(policy.strategy, Strategy::BlueGreen(_)) {
        return None;
    }
    let c = f64::from(pods.canary);
    let b = f64::from(pods.baseline);
    let s = f64::from(pods.stable);
    // Which pods the baseline arm is.
    let (base, others) = match policy.baseline {
        BaselineMode::Fresh => (b, s),
        BaselineMode::Stable => (s, b),
    };
    if c == 0.0 || base == 0.0 {
        return None;
    }
    let share = match (&policy.traffic, weight) {
        // Every ready pod behind the Service gets an equal share.
        (Traffic::Replicas, _) | (_, None) => c / (c + base),
        // The router sends `w`% to the canary; the rest is spread over the
        // pods behind the primary Service, of which the baseline arm is a part.
        (_, Some(w)) => {
            let w = f64::from(w) / 100.0;
            let to_base = (1.0 - w) * base / (base + others);
            if w + to_base == 0.0 {
                return None;
            }
            w / (w + to_base)
        }
    };
    Some(share)
}

//! What the engine is told on each tick: the observed cluster, the window that
//! just closed, alerts, manual flags and the time.

use serde::{Deserialize, Serialize};

use crate::observation::WindowObservation;

/// Ready and desired pod counts of one group of pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodCounts {
    /// Pods passing their readiness probe.
    pub ready: u32,
    /// Pods asked for (`spec.replicas`).
    pub desired: u32,
}

impl PodCounts {
    /// Whether at least `wanted` pods are asked for and ready.
    pub fn has_ready(&self, wanted: u32) -> bool {
        self.desired >= wanted && self.ready >= wanted
    }

    /// Whether the group is gone (nothing asked for, nothing running).
    pub fn is_gone(&self) -> bool {
        self.ready == 0 && self.desired == 0
    }
}

/// The managed Deployment and its canary and baseline, as last observed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The Deployment's `metadata.generation`.
    pub generation: i64,
    /// Pod-template hash of the ReplicaSet holding the Deployment's available
    /// pods (after a completed rollout: the current template's). Empty when
    /// the Deployment has no pods yet.
    pub stable_hash: String,
    /// Pod-template hash of the Deployment's `spec.template`.
    pub desired_hash: String,
    /// The Deployment's `spec.replicas`.
    pub replicas: u32,
    /// Blue-green: the version label's value on the stable pods.
    pub stable_version: Option<String>,
    /// Blue-green: the version label's value in `spec.template`.
    pub desired_version: Option<String>,
    /// Pod-template hash the canary Deployment runs (empty if there is none);
    /// its pods only count as ready for the revision they run.
    pub canary_hash: String,
    /// The canary Deployment's pods.
    pub canary: PodCounts,
    /// The baseline Deployment's pods.
    pub baseline: PodCounts,
    /// The managed Deployment's pods of `stable_hash`.
    pub stable: PodCounts,
}

/// One tick's input to [`super::step`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Input {
    /// Current time, Unix seconds (the engine never reads a clock).
    pub now: u64,
    /// The observed Deployment, canary and baseline.
    pub target: Target,
    /// The observation window that just closed, if one did.
    pub window: Option<WindowObservation>,
    /// Firing alerts that match the policy (names or fingerprints).
    pub alerts: Vec<String>,
    /// A manual approval for the current gate is present.
    pub approved: bool,
    /// A manual abort is requested.
    pub abort: bool,
    /// Committed actions that keep failing, if any: the rollout does not move
    /// forward until they succeed, and gives up at the limit.
    pub failing: Option<ActionFailure>,
}

/// Committed actions the controller could not carry out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ActionFailure {
    /// The action that failed, e.g. `SetWeight 10%`.
    pub action: String,
    /// The API's message for the last attempt.
    pub error: String,
    /// When the first attempt failed, Unix seconds.
    pub since: u64,
    /// Failed attempts so far.
    pub attempts: u32,
}

//! What the engine asks the Kubernetes layer to do.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Kubernetes event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// Routine progress.
    Normal,
    /// Something went wrong or needs attention.
    Warning,
}

impl EventKind {
    /// The Kubernetes Event `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Normal => "Normal",
            EventKind::Warning => "Warning",
        }
    }
}

/// Event reason: one per kind of transition, so events can be filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    /// A new revision's canary (and baseline) were created.
    CanaryStarted,
    /// Canary and baseline are ready; windows are being judged.
    AnalysisStarted,
    /// A step passed and the next one began.
    StepAdvanced,
    /// A gated step passed and waits for approval.
    WaitingForApproval,
    /// A gate was approved.
    GateApproved,
    /// Every step passed; promotion begins.
    AnalysisPassed,
    /// The judge found a regression.
    AnalysisFailed,
    /// A window had no usable data, or a step's observe time passed without
    /// enough fresh evidence; the rollout holds.
    NoData,
    /// A step's observe time passed but the canary served fewer requests than
    /// `analysis.minRequestsPerStep`; the rollout holds.
    LowTraffic,
    /// A hold (missing data or low traffic) ended; says how long it held.
    HoldEnded,
    /// Holding on missing data ran out, or `onNoData: rollback` applied.
    NoDataRollback,
    /// Blue-green: the active Service now selects the new version.
    SwitchedTraffic,
    /// Blue-green: the active Service selects the old version again.
    SwitchedBack,
    /// The target Deployment finished rolling to the new template.
    Promoted,
    /// The guard window after promotion ended without alerts.
    RolloutComplete,
    /// A matching alert fired.
    AlertRollback,
    /// A manual abort was requested.
    Aborted,
    /// Pods were not ready within `progressDeadline`.
    ProgressDeadlineExceeded,
    /// A newer template replaced the one under analysis.
    RevisionSuperseded,
    /// The template went back to the stable (or a failed) one mid-rollout.
    Canceled,
    /// The stable release is fully back.
    RolledBack,
    /// A rollback did not complete within `progressDeadline`.
    RollbackStalled,
    /// The target cannot be rolled out as the policy says (e.g. no version label).
    InvalidTarget,
    /// A committed action failed against the API; it is retried with backoff.
    ActionFailed,
    /// An action kept failing past the limit; the rollout rolls back.
    ActionDeadlineExceeded,
    /// The rollback's own actions kept failing; the rollout stopped in Failed.
    RollbackFailed,
    /// The policy was removed; canaryd stopped acting on the Deployment.
    PolicyRemoved,
    /// The policy was removed while idle; canaryd unpaused the Deployment.
    Released,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One thing for the Kubernetes layer to do, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    /// Create or scale the canary Deployment running `template_hash`
    /// (replacing its pods if the hash differs).
    #[serde(rename_all = "camelCase")]
    EnsureCanary {
        /// Pod-template hash of the new release.
        template_hash: String,
        /// Canary pods wanted.
        replicas: u32,
    },
    /// Create or scale the baseline Deployment running the stable template.
    #[serde(rename_all = "camelCase")]
    EnsureBaseline {
        /// Pod-template hash of the stable release.
        template_hash: String,
        /// Baseline pods wanted.
        replicas: u32,
    },
    /// Delete the canary Deployment.
    DeleteCanary,
    /// Delete the baseline Deployment.
    DeleteBaseline,
    /// Set the traffic router's canary weight (canary Ingress or HTTPRoute).
    SetWeight {
        /// Percent of traffic to the canary.
        percent: u8,
    },
    /// Point a Service's version selector at `to_version`.
    #[serde(rename_all = "camelCase")]
    SwitchSelector {
        /// The Service to change.
        service: String,
        /// Value of the policy's version label to select.
        to_version: String,
    },
    /// Let the target Deployment roll to `template_hash` with its own
    /// rolling-update settings.
    #[serde(rename_all = "camelCase")]
    Promote {
        /// Pod-template hash to roll to.
        template_hash: String,
    },
    /// Put the stable template back (like `kubectl rollout undo`), only if the
    /// Deployment's template is still `replacing` (a newer one is left alone).
    #[serde(rename_all = "camelCase")]
    RestoreStable {
        /// Pod-template hash of the stable release.
        template_hash: String,
        /// Pod-template hash being rolled back.
        replacing: String,
    },
    /// Record that `hash` failed, for humans and other tools.
    MarkFailedRevision {
        /// The failed pod-template hash.
        hash: String,
    },
    /// The approval was consumed; remove it.
    ClearApproval,
    /// The abort was acted on; remove the request.
    ClearAbort,
    /// Emit a Kubernetes event on the Deployment (and notify).
    Event {
        /// Normal or Warning.
        kind: EventKind,
        /// What happened.
        reason: Reason,
        /// Human text with the numbers behind it.
        message: String,
    },
}

impl Action {
    /// The event reason, if this is an event.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Action::Event { reason, .. } => Some(*reason),
            _ => None,
        }
    }
}

/// A short label, e.g. `SetWeight 10%` or `EnsureCanary 7c9d2f1e4b x2`.
impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Action::EnsureCanary {
                template_hash,
                replicas,
            } => format!("EnsureCanary {template_hash} x{replicas}"),
            Action::EnsureBaseline {
                template_hash,
                replicas,
            } => format!("EnsureBaseline {template_hash} x{replicas}"),
            Action::DeleteCanary => String::from("DeleteCanary"),
            Action::DeleteBaseline => String::from("DeleteBaseline"),
            Action::SetWeight { percent } => format!("SetWeight {percent}%"),
            Action::SwitchSelector {
                service,
                to_version,
            } => format!("SwitchSelector {service} -> {to_version}"),
            Action::Promote { template_hash } => format!("Promote {template_hash}"),
            Action::RestoreStable {
                template_hash,
                replacing,
            } => format!("RestoreStable {template_hash} (replacing {replacing})"),
            Action::MarkFailedRevision { hash } => format!("MarkFailedRevision {hash}"),
            Action::ClearApproval => String::from("ClearApproval"),
            Action::ClearAbort => String::from("ClearAbort"),
            Action::Event { reason, .. } => format!("Event {reason}"),
        };
        f.write_str(&text)
    }
}

//! The rollout state: one serializable, versioned value.
//!
//! The Kubernetes layer stores it as JSON in an annotation on the Deployment,
//! so a restarted daemon resumes exactly where the last one stopped.

use serde::{Deserialize, Serialize};

use crate::judge::size::{evidence_bytes, json_string_bytes, text_bytes, FLOAT_BYTES, INT_BYTES};
use crate::judge::{cap_text, Decision, Evidence};
use crate::policy::MetricSpec;

/// Version of the state format written by this build.
pub const STATE_VERSION: u32 = 1;

/// Most verdicts kept in [`RolloutState::verdicts`]; older ones are dropped so
/// the annotation stays small.
pub const MAX_VERDICTS: usize = 30;

/// Longest verdict reason kept in a [`VerdictRecord`] (bytes); the full
/// reason goes to the Event and log line of the window.
pub const MAX_REASON_BYTES: usize = 200;

/// Longest [`RolloutState::message`] kept (bytes).
pub const MAX_MESSAGE_BYTES: usize = 512;

/// Largest `to_json()` a valid policy's rollout may produce: a quarter of the
/// 256 KiB the apiserver allows for all annotations of an object together
/// (docs/judge.md, *Size of the state*). Policies whose worst case
/// ([`state_bytes_bound`]) is larger are refused at load.
pub const MAX_STATE_BYTES: usize = 64 * 1024;

/// Longest label value or pod-template hash stored (Kubernetes label values
/// are at most 63 characters).
const LABEL_BYTES: usize = 63;
/// Allowance for the state's keys, phase, hold and decision names.
const FIXED_KEYS_BYTES: usize = 700;

/// Most bytes `to_json()` takes for a rollout judged on `metrics`, however
/// long it runs: fixed fields, [`MAX_VERDICTS`] verdicts with reasons of
/// [`MAX_REASON_BYTES`], a message of [`MAX_MESSAGE_BYTES`], the step's
/// per-metric usable seconds and the evidence's bound
/// ([`crate::judge::size::evidence_bytes`]).
pub fn state_bytes_bound(metrics: &[MetricSpec]) -> usize {
    let labels = 5 * text_bytes(LABEL_BYTES);
    let numbers = 9 * INT_BYTES + 2 * FLOAT_BYTES;
    let verdict = 60 + 2 * INT_BYTES + text_bytes(MAX_REASON_BYTES);
    let usable: usize = metrics
        .iter()
        .map(|m| json_string_bytes(&m.name) + INT_BYTES + 2)
        .sum();
    FIXED_KEYS_BYTES
        + labels
        + numbers
        + text_bytes(MAX_MESSAGE_BYTES)
        + MAX_VERDICTS * verdict
        + usable
        + evidence_bytes(metrics)
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "name")]
pub enum Phase {
    /// Nothing to do: the Deployment runs its stable template.
    #[default]
    Idle,
    /// Canary (and baseline) created; waiting for their pods to be ready,
    /// bounded by the policy's `progress_deadline`.
    Initializing,
    /// Analysing step `step` (0-based) of the plan.
    Progressing {
        /// Index of the current step.
        step: usize,
    },
    /// Step `step` passed its analysis and waits for a manual approval.
    WaitingForGate {
        /// Index of the gated step.
        step: usize,
    },
    /// The target Deployment rolls to the new template (canary), or retires the
    /// old version after the switch (blue-green).
    Promoting,
    /// Promoted (canary) or switched (blue-green); matching alerts still roll
    /// back until the guard window ends.
    Promoted,
    /// Rollback issued; waiting for the stable release to be fully back.
    RollingBack,
    /// The revision was rolled back; it is not retried until the template changes.
    RolledBack,
    /// A rollback or promotion did not complete within `progress_deadline`;
    /// needs a human. A new template starts over.
    Failed,
}

impl Phase {
    /// The plan step this phase is at, if any.
    pub fn step(&self) -> Option<usize> {
        match *self {
            Phase::Progressing { step } | Phase::WaitingForGate { step } => Some(step),
            _ => None,
        }
    }

    /// Whether canary windows are being judged in this phase.
    pub fn is_analysing(&self) -> bool {
        self.step().is_some()
    }

    /// Whether no rollout is in flight (a new template may start one).
    pub fn is_resting(&self) -> bool {
        matches!(self, Phase::Idle | Phase::RolledBack | Phase::Failed)
    }

    /// Short label, e.g. `Progressing 2/4` when `steps` is known.
    pub fn label(&self, steps: usize) -> String {
        match *self {
            Phase::Progressing { step } => format!("Progressing {}/{steps}", step + 1),
            Phase::WaitingForGate { step } => format!("WaitingForGate {}/{steps}", step + 1),
            other => format!("{other:?}"),
        }
    }
}

/// One judged window, kept for the annotation and for messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerdictRecord {
    /// Unix seconds when the window was judged.
    pub at: u64,
    /// Plan step the window belonged to.
    pub step: usize,
    /// The judge's decision.
    pub decision: Decision,
    /// The judge's one-line reason with its numbers.
    pub reason: String,
}

/// Why a rollout holds instead of leaving its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldCause {
    /// Windows without usable data (query failed, no series, NaN, one arm
    /// missing, no canary requests).
    NoData,
    /// The canary served fewer requests than `analysis.minRequestsPerStep`.
    LowTraffic,
}

/// What the current step has seen (reset when a step begins).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepEvidence {
    /// Seconds of windows with usable data, per metric name.
    #[serde(default)]
    pub usable_secs: std::collections::BTreeMap<String, u64>,
    /// Canary requests served in the step's usable windows.
    #[serde(default)]
    pub canary_requests: f64,
    /// Whether the step's latest window had usable data for every metric.
    #[serde(default)]
    pub last_window_usable: bool,
}

/// Everything the engine remembers about one Deployment's rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutState {
    /// Format version; always [`STATE_VERSION`] when written by this build.
    pub version: u32,
    /// Current phase (and step).
    pub phase: Phase,
    /// Pod-template hash being rolled out (the canary's), if any.
    pub revision: Option<String>,
    /// Pod-template hash of the stable release the rollout started from.
    pub stable_hash: Option<String>,
    /// Blue-green: value of the version label of the new release.
    pub new_version: Option<String>,
    /// Blue-green: value of the version label of the stable release.
    pub stable_version: Option<String>,
    /// Deployment `metadata.generation` last seen.
    pub observed_generation: Option<i64>,
    /// Unix seconds when the current phase began (deadlines count from here).
    pub phase_started_at: u64,
    /// Unix seconds when the canary was ready and analysis began.
    pub analysis_started_at: Option<u64>,
    /// Unix seconds when the current step began.
    pub step_started_at: Option<u64>,
    /// Unix seconds when the current observation window opened.
    pub window_started_at: Option<u64>,
    /// Unix seconds of the promotion (canary) or traffic switch (blue-green).
    pub promoted_at: Option<u64>,
    /// Unix seconds when the current hold (missing data or low traffic) began.
    pub no_data_since: Option<u64>,
    /// Why the rollout holds, while it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldCause>,
    /// Evidence gathered during the current step only: a step is left on
    /// what it saw itself, never on what earlier steps saw.
    #[serde(default)]
    pub step_evidence: StepEvidence,
    /// `at_secs` of the last window recorded; older or equal ones are ignored,
    /// so re-delivering a window does not count it twice.
    pub last_window_at_secs: Option<f64>,
    /// The latest decision within the current step.
    pub step_decision: Option<Decision>,
    /// Evidence accumulated since the analysis began.
    pub evidence: Evidence,
    /// The latest verdicts, oldest first, at most [`MAX_VERDICTS`].
    pub verdicts: Vec<VerdictRecord>,
    /// A revision that was rolled back; not retried until the template changes.
    pub failed_revision: Option<String>,
    /// Why the last rollback, failure or promotion happened.
    pub message: Option<String>,
}

impl Default for RolloutState {
    fn default() -> Self {
        RolloutState {
            version: STATE_VERSION,
            phase: Phase::Idle,
            revision: None,
            stable_hash: None,
            new_version: None,
            stable_version: None,
            observed_generation: None,
            phase_started_at: 0,
            analysis_started_at: None,
            step_started_at: None,
            window_started_at: None,
            promoted_at: None,
            no_data_since: None,
            hold: None,
            step_evidence: StepEvidence::default(),
            last_window_at_secs: None,
            step_decision: None,
            evidence: Evidence::default(),
            verdicts: Vec::new(),
            failed_revision: None,
            message: None,
        }
    }
}

/// Why a stored state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The text is not a JSON rollout state.
    #[error("rollout state is not valid JSON: {0}")]
    Malformed(#[source] serde_json::Error),
    /// The state has no `version` field.
    #[error("rollout state has no \"version\" field")]
    MissingVersion,
    /// The state was written by a newer (or unknown) canaryd.
    #[error(
        "rollout state version {found} is not supported (this canaryd reads version {supported}); \
         upgrade canaryd or remove the annotation to start over"
    )]
    UnsupportedVersion {
        /// Version found in the state.
        found: u32,
        /// Version this build reads.
        supported: u32,
    },
}

impl RolloutState {
    /// The state of a Deployment canaryd has not acted on yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serializes the state as compact JSON (the annotation value).
    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys cannot fail; fall back to an
        // empty object rather than panicking if a future field changes that.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// Reads a state written by [`RolloutState::to_json`], rejecting unknown versions.
    pub fn from_json(text: &str) -> Result<Self, StateError> {
        #[derive(Deserialize)]
        struct VersionProbe {
            version: Option<u32>,
        }
        let probe: VersionProbe = serde_json::from_str(text).map_err(StateError::Malformed)?;
        match probe.version {
            None => Err(StateError::MissingVersion),
            Some(STATE_VERSION) => serde_json::from_str(text).map_err(StateError::Malformed),
            Some(found) => Err(StateError::UnsupportedVersion {
                found,
                supported: STATE_VERSION,
            }),
        }
    }

    /// The latest verdict, if any.
    pub fn last_verdict(&self) -> Option<&VerdictRecord> {
        self.verdicts.last()
    }

    /// Sets [`Self::message`], cut to [`MAX_MESSAGE_BYTES`].
    pub(crate) fn set_message(&mut self, message: &str) {
        self.message = Some(cap_text(message, MAX_MESSAGE_BYTES));
    }

    /// Appends a verdict (its reason cut to [`MAX_REASON_BYTES`]), dropping
    /// the oldest beyond [`MAX_VERDICTS`].
    pub(crate) fn push_verdict(&mut self, mut record: VerdictRecord) {
        record.reason = cap_text(&record.reason, MAX_REASON_BYTES);
        self.verdicts.push(record);
        if self.verdicts.len() > MAX_VERDICTS {
            let excess = self.verdicts.len() - MAX_VERDICTS;
            self.verdicts.drain(..excess);
        }
    }
}

//! Statistical judge: pure, deterministic, no I/O and no logging.
//!
//! CONTRACT (owned by the judge engineer; signatures others rely on):
//! - [`Evidence`]: serializable accumulated observations for one rollout.
//! - [`Evidence::record`]: folds one closed window in.
//! - [`evaluate`]: the verdict for everything seen so far.

use serde::{Deserialize, Serialize};

use crate::observation::WindowObservation;
use crate::policy::Analysis;

/// What the judge recommends after a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Decision {
    /// Enough evidence that the canary is no worse: the step may complete.
    Promote,
    /// No evidence of harm yet; keep observing.
    Continue,
    /// Evidence of a regression.
    Rollback,
    /// The data cannot be judged (no data, broken traffic split…).
    Inconclusive,
}

/// A verdict and the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The decision.
    pub decision: Decision,
    /// One-line human summary with the key numbers.
    pub reason: String,
}

/// Everything observed in one rollout so far, in a compact serializable form.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Evidence {
    /// Windows recorded.
    pub windows: u32,
}

impl Evidence {
    /// Folds one closed window into the evidence.
    pub fn record(&mut self, _window: &WindowObservation) {
        self.windows += 1;
    }
}

/// Judges all evidence so far against the policy's analysis settings.
pub fn evaluate(_analysis: &Analysis, _evidence: &Evidence) -> Verdict {
    Verdict {
        decision: Decision::Inconclusive,
        reason: "judge under construction".into(),
    }
}

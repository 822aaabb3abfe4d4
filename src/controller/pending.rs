//! Committed actions not carried out yet (`canaryd.io/pending`), and the
//! record of their failures.
//!
//! A failing action must not block a rollout forever: each failure is
//! recorded beside the actions (so it survives a restart or a leader change),
//! the next attempt waits a capped, jittered, exponential backoff, and the
//! engine is told (`Input::failing`) so that alerts, aborts and the limit
//! (`progressDeadline` since the first failure) still apply. Whatever the
//! engine decides while the actions fail replaces them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::hash::fnv1a64;
use crate::judge::cap_text;
use crate::rollout::{Action, ActionFailure};

/// Wait after the first failure of an action.
pub const ACTION_RETRY_BASE: Duration = Duration::from_secs(5);
/// Longest wait between attempts: short enough that an action that starts
/// working is noticed soon, long enough not to hammer a refusing apiserver.
pub const ACTION_RETRY_MAX: Duration = Duration::from_secs(120);
/// Each wait is spread by up to ± this fraction, so that many rollouts
/// failing on one cause (an expired token) do not retry in lockstep.
pub const ACTION_RETRY_JITTER: f64 = 0.2;
/// Longest API message kept in the record (Events take 1 kB in all).
pub const MAX_ERROR_TEXT: usize = 512;

/// The pending list and, once an attempt failed, its failure record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// Actions in the engine's order.
    pub actions: Vec<Action>,
    /// Set once carrying them out failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// Why and since when the pending actions fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// Index in `actions` of the action that failed (those before it are done).
    pub index: usize,
    /// Its label, e.g. `SetWeight 10%`.
    pub action: String,
    /// The API's message for the last attempt.
    pub error: String,
    /// First failed attempt, Unix seconds.
    pub since: u64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// No attempt before this, Unix seconds.
    pub retry_at: u64,
}

/// The annotation's two forms: a plain list (written before failures were
/// recorded, and still written while nothing failed) or the full record.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    List(Vec<Action>),
    Record(Pending),
}

impl Pending {
    /// A list nothing has been tried on yet.
    pub fn new(actions: Vec<Action>) -> Self {
        Pending {
            actions,
            failure: None,
        }
    }

    /// Reads the annotation in either form.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        Ok(match serde_json::from_str(text)? {
            Stored::List(actions) => Pending::new(actions),
            Stored::Record(p) => p,
        })
    }

    /// The annotation text: the plain list while nothing failed, so a daemon
    /// of the previous version can still finish it.
    pub fn to_json(&self) -> String {
        let text = match &self.failure {
            None => serde_json::to_string(&self.actions),
            Some(_) => serde_json::to_string(self),
        };
        text.unwrap_or_else(|_| String::from("[]"))
    }

    /// Whether an attempt is due at `now`.
    pub fn due(&self, now: u64) -> bool {
        self.failure.as_ref().is_none_or(|f| now >= f.retry_at)
    }

    /// Records a failed attempt of `actions[index]`; `key` spreads the
    /// backoff between objects. Returns whether the failure is news (the
    /// first, or a different message) worth an Event.
    pub fn record_failure(&mut self, index: usize, error: &str, now: u64, key: &str) -> bool {
        let error = cap_text(error, MAX_ERROR_TEXT);
        let action = self
            .actions
            .get(index)
            .map_or_else(|| String::from("(unknown action)"), ToString::to_string);
        let (since, attempts, news) = match &self.failure {
            Some(f) => (f.since, f.attempts.saturating_add(1), f.error != error),
            None => (now, 1, true),
        };
        let wait = backoff(attempts, key).as_secs().max(1);
        self.failure = Some(Failure {
            index,
            action,
            error,
            since,
            attempts,
            retry_at: now.saturating_add(wait),
        });
        news
    }

    /// What the engine is told while these actions fail.
    pub fn input(&self) -> Option<ActionFailure> {
        self.failure.as_ref().map(|f| ActionFailure {
            action: f.action.clone(),
            error: f.error.clone(),
            since: f.since,
            attempts: f.attempts,
        })
    }

    /// The list that replaces this one when the engine decided `new` while
    /// it failed: Events not yet published (from the failed action on) keep
    /// their place in front, the failed changes are dropped.
    pub fn superseded_by(&self, new: &[Action]) -> Vec<Action> {
        let from = self.failure.as_ref().map_or(0, |f| f.index);
        self.actions
            .iter()
            .skip(from)
            .filter(|a| matches!(a, Action::Event { .. }))
            .chain(new)
            .cloned()
            .collect()
    }
}

/// Wait before attempt `attempts + 1`: [`ACTION_RETRY_BASE`] doubled per
/// failure, capped at [`ACTION_RETRY_MAX`], spread by ±[`ACTION_RETRY_JITTER`]
/// from a hash of `key` and `attempts` (deterministic, so tests can bound it).
pub fn backoff(attempts: u32, key: &str) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    let raw = ACTION_RETRY_BASE.as_secs_f64() * f64::from(1u32 << doublings);
    let capped = raw.min(ACTION_RETRY_MAX.as_secs_f64());
    let seed = fnv1a64(key.bytes().chain(attempts.to_le_bytes()));
    let unit = (seed % 10_001) as f64 / 10_000.0; // 0..=1
    let spread = 1.0 + ACTION_RETRY_JITTER * (2.0 * unit - 1.0);
    Duration::from_secs_f64(capped * spread)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::{EventKind, Reason};

    fn event(reason: Reason) -> Action {
        Action::Event {
            kind: EventKind::Normal,
            reason,
            message: String::from("m"),
        }
    }

    #[test]
    fn reads_the_plain_list_and_the_record() {
        let list = vec![Action::SetWeight { percent: 10 }, Action::DeleteCanary];
        let old = serde_json::to_string(&list).unwrap();
        assert_eq!(Pending::parse(&old).unwrap(), Pending::new(list.clone()));
        // Nothing failed: still written as the plain list.
        assert_eq!(Pending::new(list.clone()).to_json(), old);
        let mut p = Pending::new(list);
        assert!(p.record_failure(0, "ingresses \"myapp-canary\" not found", 1000, "ns/app"));
        let text = p.to_json();
        assert!(text.starts_with("{\"actions\":"), "{text}");
        assert_eq!(Pending::parse(&text).unwrap(), p);
        assert!(Pending::parse("{\"actions\": 3}").is_err());
        assert!(Pending::parse("garbage").is_err());
    }

    #[test]
    fn failures_count_up_from_the_first_and_say_when_they_are_news() {
        let mut p = Pending::new(vec![Action::SetWeight { percent: 10 }]);
        assert!(p.due(0));
        assert!(p.record_failure(0, "forbidden", 1000, "k"));
        assert!(!p.record_failure(0, "forbidden", 1010, "k"));
        assert!(p.record_failure(0, "not found", 1030, "k"));
        let f = p.failure.clone().unwrap();
        assert_eq!(
            (f.since, f.attempts, f.action.as_str()),
            (1000, 3, "SetWeight 10%")
        );
        assert!(!p.due(f.retry_at - 1));
        assert!(p.due(f.retry_at));
        assert_eq!(
            p.input().unwrap(),
            ActionFailure {
                action: "SetWeight 10%".into(),
                error: "not found".into(),
                since: 1000,
                attempts: 3
            }
        );
    }

    #[test]
    fn backoff_doubles_within_its_jitter_and_stays_capped() {
        for attempts in 1..40 {
            let raw = (ACTION_RETRY_BASE.as_secs_f64() * 2f64.powi(attempts as i32 - 1))
                .min(ACTION_RETRY_MAX.as_secs_f64());
            let got = backoff(attempts, "default/myapp").as_secs_f64();
            assert!(
                got >= raw * (1.0 - ACTION_RETRY_JITTER) - 1e-9,
                "{attempts}: {got}"
            );
            assert!(
                got <= raw * (1.0 + ACTION_RETRY_JITTER) + 1e-9,
                "{attempts}: {got}"
            );
        }
        // Spread between objects: not all the same wait.
        let waits: std::collections::BTreeSet<u128> = (0..20)
            .map(|i| backoff(3, &format!("ns/app-{i}")).as_millis())
            .collect();
        assert!(waits.len() > 10, "{waits:?}");
    }

    #[test]
    fn superseding_keeps_unpublished_events_and_drops_failed_changes() {
        let mut p = Pending::new(vec![
            event(Reason::CanaryStarted),
            Action::SetWeight { percent: 10 },
            event(Reason::StepAdvanced),
        ]);
        p.record_failure(1, "not found", 5, "k");
        let new = [event(Reason::AlertRollback), Action::DeleteCanary];
        assert_eq!(
            p.superseded_by(&new),
            vec![
                event(Reason::StepAdvanced),
                event(Reason::AlertRollback),
                Action::DeleteCanary
            ]
        );
    }

    #[test]
    fn long_messages_are_capped() {
        let mut p = Pending::new(vec![Action::DeleteCanary]);
        p.record_failure(0, &"é".repeat(MAX_ERROR_TEXT), 1, "k");
        let error = p.failure.unwrap().error;
        assert!(
            error.len() <= MAX_ERROR_TEXT && error.ends_with('…'),
            "{error}"
        );
    }
}

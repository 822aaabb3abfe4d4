//! Stretches of virtual time in which something is wrong: the metric source
//! is down (`--outage`) or the canary gets no requests (`--no-traffic`), and
//! what the engine decided during them.
//!
//! A stretch is given as `START+DURATION`, both counted from the template
//! change (`t = 0`, the origin of every timeline offset and of `--alert-at`),
//! not from the start of the analysis.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::rollout::{format_secs, Action, Reason};

use super::{parse_offset, EntryKind, Run};

/// Why the simulated metric source fails during an outage; the daemon's
/// `controller::window::no_data` makes it `metric source failed: simulated outage`.
pub const OUTAGE_ERROR: &str = "simulated outage";

/// `[start, start + duration)` seconds after the template change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stretch {
    /// Seconds after the template change at which it begins.
    pub start_secs: u64,
    /// How long it lasts, in seconds (never 0).
    pub duration_secs: u64,
}

impl Stretch {
    /// Seconds after the template change at which it is over.
    pub fn end_secs(self) -> u64 {
        self.start_secs.saturating_add(self.duration_secs)
    }

    /// Whether `t` (seconds after the template change) lies inside it.
    pub fn contains(self, t: u64) -> bool {
        (self.start_secs..self.end_secs()).contains(&t)
    }
}

/// Whether any of `stretches` contains `t`.
pub fn any_contains(stretches: &[Stretch], t: u64) -> bool {
    stretches.iter().any(|s| s.contains(t))
}

impl FromStr for Stretch {
    type Err = String;

    /// Parses `START+DURATION`, e.g. `3m+6m`, `0+30s` or `1h+1h30m`.
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("invalid stretch {text:?}: {why}; expected START+DURATION, e.g. 3m+6m or 1h+1h30m (times since the template change)")
        };
        let Some((start, duration)) = text.split_once('+') else {
            return Err(bad("no '+' between START and DURATION"));
        };
        let start_secs = parse_offset(start).map_err(|e| bad(&format!("START: {e}")))?;
        let duration_secs = parse_offset(duration).map_err(|e| bad(&format!("DURATION: {e}")))?;
        if duration_secs == 0 {
            return Err(bad("DURATION must be above 0"));
        }
        Ok(Stretch {
            start_secs,
            duration_secs,
        })
    }
}

impl fmt::Display for Stretch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}+{}",
            format_secs(self.start_secs),
            format_secs(self.duration_secs)
        )
    }
}

/// Where the engine may not move on because of one stretch: from `from`
/// (seconds after the template change) until, not including, the first window
/// judged at or after the stretch's end (a decision on that tick may rest on
/// that window). Before `from` it may: every window judged then carried
/// evidence the stretch did not touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blind {
    /// The stretch.
    pub stretch: Stretch,
    /// When the first window that the stretch spoils can have closed.
    pub from: u64,
}

impl Blind {
    /// An outage spoils every window that closes in it, from its start.
    pub fn outage(stretch: Stretch) -> Self {
        Blind {
            stretch,
            from: stretch.start_secs,
        }
    }

    /// A no-traffic stretch leaves the canary without a single request only
    /// in windows that opened in it: windows closing within `interval_secs`
    /// of its start still carry the canary's requests from before it.
    pub fn no_traffic(stretch: Stretch, interval_secs: u64) -> Self {
        Blind {
            stretch,
            from: stretch.start_secs.saturating_add(interval_secs),
        }
    }
}

/// What seeded runs did about the scenario's outages and no-traffic stretches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StretchStats {
    /// StepAdvanced or AnalysisPassed Events and Promote actions decided
    /// while a stretch left the engine blind (see [`Blind`]); must be 0.
    pub promotions_during: u32,
    /// Runs with at least one NoData or LowTraffic hold Event.
    pub held: u32,
    /// Runs rolled back with NoDataRollback.
    pub no_data_rollbacks: u32,
}

impl StretchStats {
    /// Adds one run's figures.
    pub fn add(&mut self, run: &Run, stretches: &[Blind]) {
        self.promotions_during += promotions_during(run, stretches);
        let reasons = run.reasons();
        if reasons
            .iter()
            .any(|r| matches!(r, Reason::NoData | Reason::LowTraffic))
        {
            self.held += 1;
        }
        if reasons.contains(&Reason::NoDataRollback) {
            self.no_data_rollbacks += 1;
        }
    }
}

/// Where a stretch's effect ends: the first window judged at or after its
/// end (a decision on that tick may rest on that window), or never.
fn effect_end(run: &Run, stretch: Stretch) -> u64 {
    run.timeline
        .iter()
        .find(|e| matches!(e.what, EntryKind::Window { .. }) && e.at >= stretch.end_secs())
        .map_or(u64::MAX, |e| e.at)
}

/// Whether an entry moves the rollout on.
fn is_promotion(what: &EntryKind) -> bool {
    match what {
        EntryKind::Event { reason, .. } => {
            matches!(reason, Reason::StepAdvanced | Reason::AnalysisPassed)
        }
        EntryKind::Action { action } => matches!(action, Action::Promote { .. }),
        EntryKind::Window { .. } => false,
    }
}

/// StepAdvanced, AnalysisPassed and Promote decided while one of `stretches`
/// left the engine blind.
pub fn promotions_during(run: &Run, stretches: &[Blind]) -> u32 {
    let affected: Vec<(u64, u64)> = stretches
        .iter()
        .map(|b| (b.from, effect_end(run, b.stretch)))
        .collect();
    run.timeline
        .iter()
        .filter(|e| is_promotion(&e.what))
        .filter(|e| {
            affected
                .iter()
                .any(|(from, to)| (*from..*to).contains(&e.at))
        })
        .count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Decision;
    use crate::rollout::{EventKind, RolloutState};
    use crate::simulate::{Entry, Outcome, OutcomeKind, WindowTraffic};

    #[test]
    fn stretches_parse_and_print() {
        assert_eq!(
            "3m+6m".parse::<Stretch>(),
            Ok(Stretch {
                start_secs: 180,
                duration_secs: 360
            })
        );
        assert_eq!(
            "0+1h30m"
                .parse::<Stretch>()
                .map(|s| (s.end_secs(), s.to_string())),
            Ok((5400, String::from("0s+1h30m")))
        );
        for bad in [
            "3m", "3m+0s", "3m+0", "+5m", "3m+", "x+5m", "3m+5x", "3m+-5m",
        ] {
            assert!(bad.parse::<Stretch>().is_err(), "{bad}");
        }
        let err = "3m+0s".parse::<Stretch>().err().unwrap_or_default();
        assert!(
            err.contains("\"3m+0s\"") && err.contains("above 0"),
            "{err}"
        );
    }

    fn entry(at: u64, what: EntryKind) -> Entry {
        Entry {
            at,
            phase: String::new(),
            what,
        }
    }

    fn event(at: u64, reason: Reason) -> Entry {
        entry(
            at,
            EntryKind::Event {
                kind: EventKind::Normal,
                reason,
                message: String::new(),
            },
        )
    }

    fn window(at: u64) -> Entry {
        entry(
            at,
            EntryKind::Window {
                number: 0,
                decision: Decision::Continue,
                reason: String::new(),
                traffic: WindowTraffic::default(),
            },
        )
    }

    fn run(timeline: Vec<Entry>) -> Run {
        Run {
            timeline,
            outcome: Outcome {
                result: OutcomeKind::Promoted,
                at: 0,
                promoted_at: None,
                rollback_at: None,
                reason: None,
                message: None,
            },
            state: RolloutState::new(),
        }
    }

    #[test]
    fn promotions_count_from_blindness_until_the_first_window_after() {
        let s = Stretch {
            start_secs: 100,
            duration_secs: 100,
        };
        let promote = |at| {
            entry(
                at,
                EntryKind::Action {
                    action: Action::Promote {
                        template_hash: String::new(),
                    },
                },
            )
        };
        let r = run(vec![
            event(90, Reason::StepAdvanced),
            event(130, Reason::StepAdvanced),
            window(190),
            event(205, Reason::AnalysisPassed),
            promote(205),
            window(230),
            event(230, Reason::StepAdvanced),
        ]);
        // Outage: 130 and 205 (before the window at 230); 230 rests on it.
        assert_eq!(promotions_during(&r, &[Blind::outage(s)]), 3);
        // No traffic, 60s windows: blind from 160, so 130 does not count.
        assert_eq!(promotions_during(&r, &[Blind::no_traffic(s, 60)]), 2);
        assert_eq!(promotions_during(&r, &[]), 0);
        let mut stats = StretchStats::default();
        stats.add(&r, &[Blind::outage(s)]);
        stats.add(&run(vec![event(1, Reason::NoData)]), &[]);
        stats.add(&run(vec![event(1, Reason::NoDataRollback)]), &[]);
        assert_eq!(
            stats,
            StretchStats {
                promotions_during: 3,
                held: 1,
                no_data_rollbacks: 1
            }
        );
    }

    #[test]
    fn stretches_are_half_open() {
        let s = Stretch {
            start_secs: 60,
            duration_secs: 30,
        };
        assert!(!s.contains(59) && s.contains(60) && s.contains(89) && !s.contains(90));
        assert!(any_contains(&[s], 75) && !any_contains(&[], 75));
    }
}

//! `canaryd judge --prometheus`: judge a past release window by window from Prometheus.
//!
//! The range `--from`..`--to` is cut into windows of the policy's
//! `analysis.interval` starting at `--from` (a trailing partial window is not
//! judged). Each window is read with the same [`PrometheusSource`] the daemon
//! uses, folded into the judge's evidence and judged; a source error holds
//! (the window is skipped, as the daemon would). The run stops at the first
//! `rollback`, as the daemon would. The report (per-window timeline and final
//! verdict) is printed as JSON on stdout; exit code 0 promote/continue,
//! 1 rollback, 2 error, 3 inconclusive.

use std::path::Path;

use serde::Serialize;

use crate::judge::{self, Decision, Evidence, Verdict};
use crate::metrics::{MetricSource, Window};
use crate::observation::MetricWindow;
use crate::policy::Policy;

/// One judged (or held) window.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    /// 1-based window number.
    pub window: u32,
    /// Window start, Unix seconds.
    pub from: i64,
    /// Window end (query time), Unix seconds.
    pub to: i64,
    /// Seconds since `--from` at the window's end.
    pub at_secs: f64,
    /// The verdict after this window, or `None` when the source failed (hold).
    pub decision: Option<Decision>,
    /// The verdict's reason, or the source error.
    pub reason: String,
    /// The values read for this window (empty when the source failed).
    pub metrics: Vec<MetricWindow>,
}

/// The whole offline analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeReport {
    /// Policy file judged with.
    pub policy: String,
    /// Range start, Unix seconds.
    pub from: i64,
    /// Range end, Unix seconds.
    pub to: i64,
    /// Window length in seconds.
    pub interval_secs: f64,
    /// One entry per window, in time order.
    pub timeline: Vec<TimelineEntry>,
    /// The final verdict.
    pub verdict: Verdict,
}

/// Judges `from..to` (Unix seconds) window by window with `source`.
///
/// Fails when no whole window fits or when every window's read failed.
pub async fn judge_range(
    source: &dyn MetricSource,
    policy: &Policy,
    policy_path: &Path,
    from: i64,
    to: i64,
) -> Result<RangeReport, String> {
    let interval = policy.analysis.interval;
    let step = interval.as_secs().max(1) as i64;
    if to - from < step {
        return Err(format!(
            "the range {from}..{to} is shorter than one analysis interval ({step}s)"
        ));
    }
    let mut evidence = Evidence::default();
    let mut timeline = Vec::new();
    let mut verdict = None;
    let mut k: u32 = 1;
    while from + i64::from(k) * step <= to {
        let end = from + i64::from(k) * step;
        let slot = Slot {
            k,
            from: end - step,
            window: Window {
                end_unix_secs: end,
                length: interval,
                at_secs: (end - from) as f64,
                expected_canary_share: None,
            },
        };
        let (entry, judged) = judge_window(source, policy, &mut evidence, &slot).await;
        timeline.push(entry);
        verdict = judged.or(verdict);
        if verdict
            .as_ref()
            .is_some_and(|v: &Verdict| v.decision == Decision::Rollback)
        {
            break;
        }
        k += 1;
    }
    let Some(verdict) = verdict else {
        let last = timeline
            .last()
            .map(|e| e.reason.clone())
            .unwrap_or_default();
        return Err(format!("no window could be read ({last})"));
    };
    Ok(RangeReport {
        policy: policy_path.display().to_string(),
        from,
        to,
        interval_secs: interval.as_secs_f64(),
        timeline,
        verdict,
    })
}

/// One window of the range.
struct Slot {
    /// 1-based window number.
    k: u32,
    /// Window start, Unix seconds.
    from: i64,
    /// What the source reads.
    window: Window,
}

/// Reads the slot's window, folds it into `evidence` and judges; a source
/// error holds (a timeline entry without a decision, and no verdict).
async fn judge_window(
    source: &dyn MetricSource,
    policy: &Policy,
    evidence: &mut Evidence,
    slot: &Slot,
) -> (TimelineEntry, Option<Verdict>) {
    let (k, window) = (slot.k, &slot.window);
    let end = window.end_unix_secs;
    let mut entry = TimelineEntry {
        window: k,
        from: slot.from,
        to: end,
        at_secs: window.at_secs,
        decision: None,
        reason: String::new(),
        metrics: Vec::new(),
    };
    match source.observe(policy, window).await {
        Ok(obs) => {
            evidence.record(&obs);
            let v = judge::evaluate(&policy.analysis, evidence);
            entry.decision = Some(v.decision);
            entry.reason = v.reason.clone();
            entry.metrics = obs.metrics;
            (entry, Some(v))
        }
        Err(e) => {
            tracing::warn!(window = k, end, error = %e, "metric source failed; holding");
            entry.reason = format!("hold: {e}");
            (entry, None)
        }
    }
}

/// Parses Unix seconds (`1700000000`, fractions truncated) or RFC 3339
/// (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.5+02:00`).
pub fn parse_time(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() {
            return Ok(secs.floor() as i64);
        }
    }
    parse_rfc3339(s).ok_or_else(|| format!("{s:?} is neither Unix seconds nor RFC 3339"))
}

/// The RFC 3339 `date-time` layout, with the offset's colon required.
const RFC3339: &str = "%Y-%m-%dT%H:%M:%S%.f%:z";

fn parse_rfc3339(s: &str) -> Option<i64> {
    // RFC 3339 also allows `t` or a space between date and time, and `z`
    // for UTC; jiff's strptime wants one spelling.
    let (date, time) = (s.get(..10)?, s.get(11..)?);
    if !matches!(s.as_bytes().get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let time = match time.strip_suffix(['Z', 'z']) {
        Some(local) => format!("{local}+00:00"),
        None => time.to_string(),
    };
    let parsed = jiff::fmt::strtime::parse(RFC3339, format!("{date}T{time}")).ok()?;
    Some(parsed.to_timestamp().ok()?.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unix_and_rfc3339_times() {
        assert_eq!(parse_time("1700000000"), Ok(1_700_000_000));
        assert_eq!(parse_time("1700000000.9"), Ok(1_700_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000));
        assert_eq!(
            parse_time("2023-11-15T00:13:20.25+02:00"),
            Ok(1_700_000_000)
        );
        assert_eq!(parse_time("2023-11-14T21:13:20-01:00"), Ok(1_700_000_000));
        assert_eq!(parse_time("2024-02-29T00:00:00Z"), Ok(1_709_164_800));
        for bad in [
            "2023-02-29T00:00:00Z",
            "2023-11-14T22:13:20",
            "2023-13-01T00:00:00Z",
            "2023-11-14T22:13:20+0200",
            "yesterday",
            "NaN",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}

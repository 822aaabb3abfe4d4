//! The cluster-wide alert record (pure): the webhook's firing alerts as every
//! replica shares them.
//!
//! Alertmanager posts to whichever replica its Service picks. So that a
//! notification reaches the leader, whoever it is now or after a leader
//! change, the receiving replica writes it into one record that canaryd owns
//! in the cluster (see `crate::k8s::alert_record`), and every replica
//! watches that record. This module is the record's format and the rules for
//! changing it: which alerts are kept, when they expire, and the size cap.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{fires_at, FiringAlert, WebhookAlert};

/// Version of the stored record; [`AlertRecord::from_json`] refuses others.
pub const RECORD_VERSION: u32 = 1;

/// Most bytes the record may take. A ConfigMap holds at most 1 MiB; half of
/// that leaves room for the JSON's own overhead and for growth between a
/// size estimate and the write.
pub const MAX_RECORD_BYTES: usize = 512 * 1024;

/// How long an alert stays in the record without being notified again.
/// Alertmanager repeats a firing group every `repeat_interval` (4 h by
/// default); an alert whose "resolved" was lost (or `send_resolved: false`)
/// would otherwise roll back every later release forever.
pub const UNCONFIRMED_ALERT_TTL: Duration = Duration::from_secs(5 * 3600);

/// A repeated firing notification refreshes an alert's `seenAt` only when it
/// is older than this, so Alertmanager's repeats do not each cost a write.
pub const REFRESH_AFTER: Duration = Duration::from_secs(3600);

/// Bytes one alert is estimated to take besides its fingerprint and labels
/// (JSON punctuation, keys, timestamps).
const ALERT_OVERHEAD_BYTES: usize = 96;

/// One alert as the record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedAlert {
    /// All labels.
    pub labels: BTreeMap<String, String>,
    /// When it stops counting as firing (Unix ms), if its sender said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at_ms: Option<i64>,
    /// When a notification last said it fires (Unix ms).
    pub seen_at_ms: i64,
}

impl RecordedAlert {
    fn estimated_bytes(&self, fingerprint: &str) -> usize {
        let labels: usize = self.labels.iter().map(|(k, v)| k.len() + v.len() + 6).sum();
        fingerprint.len() + labels + ALERT_OVERHEAD_BYTES
    }

    /// Whether it still counts as firing at `now_ms`.
    pub fn fires_at(&self, now_ms: i64) -> bool {
        let ttl = UNCONFIRMED_ALERT_TTL.as_millis() as i64;
        self.ends_at_ms.is_none_or(|end| end > now_ms) && now_ms - self.seen_at_ms < ttl
    }
}

/// Why a stored record cannot be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RecordError {
    /// The text is not the record's JSON.
    #[error("alert record: {0}")]
    Malformed(String),
    /// Written by a canaryd with another record format.
    #[error("alert record: version {0} is not supported; expected {RECORD_VERSION}")]
    UnsupportedVersion(u32),
}

/// What applying a notification to the record changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordChanges {
    /// Fingerprints that started firing.
    pub started: Vec<String>,
    /// Fingerprints that resolved (by notification or expiry).
    pub resolved: Vec<String>,
    /// Alerts already known in the same state.
    pub duplicates: usize,
    /// Firing alerts left out because the record is full.
    pub refused: usize,
    /// Firing alerts no policy matches, so none of them can matter.
    pub unmatched: usize,
    /// Whether the record must be written.
    pub dirty: bool,
}

/// The webhook's firing alerts, keyed by fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    version: u32,
    alerts: BTreeMap<String, RecordedAlert>,
}

/// The empty record at [`RECORD_VERSION`] (a derived default would write
/// version 0, which no reader accepts).
impl Default for AlertRecord {
    fn default() -> Self {
        AlertRecord::new()
    }
}

impl AlertRecord {
    /// An empty record.
    pub fn new() -> Self {
        AlertRecord {
            version: RECORD_VERSION,
            alerts: BTreeMap::new(),
        }
    }

    /// Reads a stored record; the version is checked before the rest.
    pub fn from_json(text: &str) -> Result<Self, RecordError> {
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let v: Versioned =
            serde_json::from_str(text).map_err(|e| RecordError::Malformed(e.to_string()))?;
        if v.version != RECORD_VERSION {
            return Err(RecordError::UnsupportedVersion(v.version));
        }
        serde_json::from_str(text).map_err(|e| RecordError::Malformed(e.to_string()))
    }

    /// The stored form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Number of alerts held (expired ones included until the next write).
    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }

    /// The alerts firing at `now_ms`, as the index keeps them.
    pub fn firing(&self, now_ms: i64) -> impl Iterator<Item = FiringAlert> + '_ {
        self.alerts
            .iter()
            .filter(move |(_, a)| a.fires_at(now_ms))
            .map(|(fingerprint, a)| FiringAlert {
                fingerprint: fingerprint.clone(),
                name: a
                    .labels
                    .get("alertname")
                    .cloned()
                    .unwrap_or_else(|| fingerprint.clone()),
                labels: a.labels.clone(),
                ends_at_ms: a.ends_at_ms,
            })
    }

    fn estimated_bytes(&self) -> usize {
        self.alerts
            .iter()
            .map(|(f, a)| a.estimated_bytes(f))
            .sum::<usize>()
            + 32
    }

    /// Applies a notification at `now_ms`: resolved (or past `endsAt`)
    /// alerts leave, firing alerts that `relevant` accepts (some policy
    /// matches them) enter while the record stays under
    /// [`MAX_RECORD_BYTES`], and expired alerts are dropped.
    pub fn apply(
        &mut self,
        alerts: &[WebhookAlert],
        relevant: impl Fn(&BTreeMap<String, String>) -> bool,
        now_ms: i64,
    ) -> RecordChanges {
        let mut changes = self.expire(now_ms);
        let mut bytes = self.estimated_bytes();
        for alert in alerts {
            let fingerprint = super::fingerprint_of(alert);
            if !fires_at(alert, now_ms) {
                match self.alerts.remove(&fingerprint) {
                    Some(old) => {
                        bytes = bytes.saturating_sub(old.estimated_bytes(&fingerprint));
                        changes.resolved.push(fingerprint);
                        changes.dirty = true;
                    }
                    None => changes.duplicates += 1,
                }
                continue;
            }
            let entry = RecordedAlert {
                labels: alert.labels.clone(),
                ends_at_ms: alert.ends_at_ms,
                seen_at_ms: now_ms,
            };
            if let Some(old) = self.alerts.get_mut(&fingerprint) {
                changes.duplicates += 1;
                let stale = now_ms - old.seen_at_ms >= REFRESH_AFTER.as_millis() as i64;
                if stale || old.ends_at_ms != entry.ends_at_ms {
                    *old = entry;
                    changes.dirty = true;
                }
            } else if !relevant(&alert.labels) {
                changes.unmatched += 1;
            } else if bytes + entry.estimated_bytes(&fingerprint) > MAX_RECORD_BYTES {
                changes.refused += 1;
            } else {
                bytes += entry.estimated_bytes(&fingerprint);
                self.alerts.insert(fingerprint.clone(), entry);
                changes.started.push(fingerprint);
                changes.dirty = true;
            }
        }
        changes
    }

    /// Drops alerts that no longer fire at `now_ms`.
    fn expire(&mut self, now_ms: i64) -> RecordChanges {
        let mut changes = RecordChanges::default();
        self.alerts.retain(|fingerprint, a| {
            let keep = a.fires_at(now_ms);
            if !keep {
                changes.resolved.push(fingerprint.clone());
            }
            keep
        });
        changes.dirty = !changes.resolved.is_empty();
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::AlertStatus;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn a_default_record_reads_back_with_its_alerts() {
        // AlertRecordStore starts from the default when no record exists yet.
        let mut record = AlertRecord::default();
        record.apply(&[alert("A", AlertStatus::Firing, None)], |_| true, NOW);
        assert_eq!(AlertRecord::from_json(&record.to_json()), Ok(record));
    }

    fn alert(name: &str, status: AlertStatus, ends_at_ms: Option<i64>) -> WebhookAlert {
        WebhookAlert {
            status,
            labels: [("alertname", name), ("service", "myapp")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: BTreeMap::new(),
            fingerprint: Some(format!("fp-{name}")),
            ends_at_ms,
        }
    }

    fn all(_: &BTreeMap<String, String>) -> bool {
        true
    }

    #[test]
    fn firing_enters_resolved_leaves_and_repeats_are_not_writes() {
        let mut r = AlertRecord::new();
        let c = r.apply(&[alert("A", AlertStatus::Firing, None)], all, NOW);
        assert_eq!(c.started, ["fp-A"]);
        assert!(c.dirty);
        let c = r.apply(&[alert("A", AlertStatus::Firing, None)], all, NOW + 60_000);
        assert_eq!((c.duplicates, c.dirty), (1, false));
        let later = NOW + REFRESH_AFTER.as_millis() as i64;
        let c = r.apply(&[alert("A", AlertStatus::Firing, None)], all, later);
        assert!(c.dirty, "an old seenAt is refreshed");
        let c = r.apply(&[alert("A", AlertStatus::Resolved, None)], all, later);
        assert_eq!(c.resolved, ["fp-A"]);
        assert!(r.is_empty());
    }

    #[test]
    fn ends_at_in_the_past_resolves_and_in_the_future_expires() {
        let mut r = AlertRecord::new();
        // Status "firing" but already past its end: a late delivery.
        let c = r.apply(
            &[alert("Late", AlertStatus::Firing, Some(NOW - 1))],
            all,
            NOW,
        );
        assert!(c.started.is_empty() && r.is_empty());
        r.apply(
            &[alert("A", AlertStatus::Firing, Some(NOW + 1000))],
            all,
            NOW,
        );
        assert_eq!(r.firing(NOW).count(), 1);
        assert_eq!(r.firing(NOW + 1000).count(), 0);
        let c = r.apply(&[], all, NOW + 1000);
        assert_eq!((c.resolved.len(), c.dirty), (1, true));
        assert!(r.is_empty());
    }

    #[test]
    fn an_unconfirmed_alert_expires_after_the_ttl() {
        let mut r = AlertRecord::new();
        r.apply(&[alert("A", AlertStatus::Firing, None)], all, NOW);
        let ttl = UNCONFIRMED_ALERT_TTL.as_millis() as i64;
        assert_eq!(r.firing(NOW + ttl - 1).count(), 1);
        assert_eq!(r.firing(NOW + ttl).count(), 0);
    }

    #[test]
    fn irrelevant_alerts_are_not_kept_and_the_size_is_capped() {
        let mut r = AlertRecord::new();
        let c = r.apply(&[alert("A", AlertStatus::Firing, None)], |_| false, NOW);
        assert_eq!((c.unmatched, r.len()), (1, 0));
        let many: Vec<WebhookAlert> = (0..20_000)
            .map(|i| alert(&format!("Alert{i:05}"), AlertStatus::Firing, None))
            .collect();
        let c = r.apply(&many, all, NOW);
        assert!(c.refused > 0, "{c:?}");
        assert_eq!(c.started.len() + c.refused, 20_000);
        assert!(
            r.to_json().len() <= MAX_RECORD_BYTES,
            "{}",
            r.to_json().len()
        );
        // Resolving always gets through, and frees room.
        let c = r.apply(
            &[alert("Alert00000", AlertStatus::Resolved, None)],
            all,
            NOW,
        );
        assert_eq!(c.resolved.len(), 1);
    }

    #[test]
    fn the_stored_form_round_trips_and_other_versions_are_refused() {
        // A record that did not exist yet is written at the current version.
        let fresh = AlertRecord::default().to_json();
        assert_eq!(AlertRecord::from_json(&fresh), Ok(AlertRecord::new()));
        let mut r = AlertRecord::new();
        r.apply(&[alert("A", AlertStatus::Firing, Some(NOW + 5))], all, NOW);
        assert_eq!(AlertRecord::from_json(&r.to_json()).unwrap(), r);
        assert_eq!(
            AlertRecord::from_json(r#"{"version":2,"alerts":{}}"#),
            Err(RecordError::UnsupportedVersion(2))
        );
        assert!(matches!(
            AlertRecord::from_json("[]"),
            Err(RecordError::Malformed(_))
        ));
    }
}

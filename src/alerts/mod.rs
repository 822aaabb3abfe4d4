//! Alerts that roll a service back: Alertmanager's webhook payload, label
//! matching against a policy, and a pure index of what is firing.
//!
//! The HTTP endpoint and the `ALERTS` polling fallback feed [`FiringAlerts`];
//! the rollout engine only sees the names of matching firing alerts.

pub mod poll;

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::policy::{AlertPolicy, LabelMatcher, MatchOp};

/// The only Alertmanager webhook payload version canaryd understands.
pub const WEBHOOK_VERSION: &str = "4";

/// Alertmanager's webhook payload (version 4). Unknown fields are ignored, as
/// Alertmanager adds fields over time.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload {
    /// Payload version; must be [`WEBHOOK_VERSION`].
    pub version: String,
    /// `firing` or `resolved` for the group as a whole.
    pub status: String,
    /// The alerts in this notification.
    pub alerts: Vec<WebhookAlert>,
}

/// One alert in a webhook payload.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    /// `firing` or `resolved`.
    pub status: AlertStatus,
    /// Identifying labels (`alertname`, `service`, …).
    pub labels: BTreeMap<String, String>,
    /// Descriptive annotations (`summary`, …).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Alertmanager's fingerprint of the label set; derived from the labels when absent.
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// Whether an alert is firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// The alert is active.
    Firing,
    /// The alert has stopped.
    Resolved,
}

/// Why a webhook payload was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AlertError {
    /// The body is not valid JSON of the expected shape.
    #[error("{path}: {message} (line {line}, column {column})")]
    Malformed {
        /// JSON path of the offending field (`.` for the document).
        path: String,
        /// What was wrong.
        message: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// The payload version is not supported.
    #[error("version: unsupported webhook payload version {0:?}; expected \"4\"")]
    UnsupportedVersion(String),
    /// An alert has no labels, so it cannot be matched or deduplicated.
    #[error("alerts[{0}].labels: an alert needs at least one label")]
    EmptyLabels(usize),
}

/// Parses and checks an Alertmanager webhook body.
pub fn parse_webhook(body: &[u8]) -> Result<WebhookPayload, AlertError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let payload: WebhookPayload = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        AlertError::Malformed {
            path,
            message: strip_position(&inner.to_string()),
            line: inner.line(),
            column: inner.column(),
        }
    })?;
    if payload.version != WEBHOOK_VERSION {
        return Err(AlertError::UnsupportedVersion(payload.version));
    }
    if let Some(i) = payload.alerts.iter().position(|a| a.labels.is_empty()) {
        return Err(AlertError::EmptyLabels(i));
    }
    Ok(payload)
}

/// serde_json appends " at line L column C"; the error carries those separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Whether one matcher accepts a label set (a missing label reads as "", as in Prometheus).
pub fn matcher_matches(m: &LabelMatcher, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&m.name).map(String::as_str).unwrap_or("");
    match m.op {
        MatchOp::Eq => value == m.value,
        MatchOp::Ne => value != m.value,
        MatchOp::Re => anchored_match(&m.value, value),
        MatchOp::NotRe => !anchored_match(&m.value, value),
    }
}

/// Prometheus regex matchers are fully anchored. Policies are validated, so a
/// pattern that does not compile here matches nothing rather than everything.
fn anchored_match(pattern: &str, value: &str) -> bool {
    regex::Regex::new(&format!("^(?:{pattern})$")).is_ok_and(|re| re.is_match(value))
}

/// Whether an alert's labels satisfy every matcher of a policy. A policy
/// without matchers never matches: alert rollback is opt-in.
pub fn policy_matches(policy: &AlertPolicy, labels: &BTreeMap<String, String>) -> bool {
    !policy.matchers.is_empty() && policy.matchers.iter().all(|m| matcher_matches(m, labels))
}

/// A firing alert as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiringAlert {
    /// Stable identity used for deduplication.
    pub fingerprint: String,
    /// `alertname` label, or the fingerprint when absent.
    pub name: String,
    /// All labels.
    pub labels: BTreeMap<String, String>,
}

/// What applying a notification changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertChanges {
    /// Fingerprints that started firing.
    pub started: Vec<String>,
    /// Fingerprints that resolved.
    pub resolved: Vec<String>,
    /// Notifications about alerts already known in the same state.
    pub duplicates: usize,
}

/// Pure index of currently firing alerts, keyed by fingerprint so repeated
/// notifications (Alertmanager re-sends every `repeat_interval`) are deduplicated.
#[derive(Debug, Clone, Default)]
pub struct FiringAlerts {
    firing: BTreeMap<String, FiringAlert>,
}

impl FiringAlerts {
    /// Applies one notification's alerts.
    pub fn apply(&mut self, alerts: &[WebhookAlert]) -> AlertChanges {
        let mut changes = AlertChanges::default();
        for alert in alerts {
            let fingerprint = alert
                .fingerprint
                .clone()
                .filter(|f| !f.is_empty())
                .unwrap_or_else(|| label_fingerprint(&alert.labels));
            match alert.status {
                AlertStatus::Firing => {
                    if self.firing.contains_key(&fingerprint) {
                        changes.duplicates += 1;
                    } else {
                        let name = alert
                            .labels
                            .get("alertname")
                            .cloned()
                            .unwrap_or_else(|| fingerprint.clone());
                        self.firing.insert(
                            fingerprint.clone(),
                            FiringAlert {
                                fingerprint: fingerprint.clone(),
                                name,
                                labels: alert.labels.clone(),
                            },
                        );
                        changes.started.push(fingerprint);
                    }
                }
                AlertStatus::Resolved => {
                    if self.firing.remove(&fingerprint).is_some() {
                        changes.resolved.push(fingerprint);
                    } else {
                        changes.duplicates += 1;
                    }
                }
            }
        }
        changes
    }

    /// Replaces the whole set with what a poll of `ALERTS{alertstate="firing"}`
    /// returned: alerts absent from the poll have resolved.
    pub fn replace_from_poll(&mut self, label_sets: &[BTreeMap<String, String>]) -> AlertChanges {
        let alerts: Vec<WebhookAlert> = label_sets
            .iter()
            .map(|labels| {
                // ALERTS carries alertstate as a label; it is not part of the identity.
                let mut labels = labels.clone();
                labels.remove("alertstate");
                labels.remove("__name__");
                WebhookAlert {
                    status: AlertStatus::Firing,
                    labels,
                    annotations: BTreeMap::new(),
                    fingerprint: None,
                }
            })
            .collect();
        let keep: Vec<String> = alerts
            .iter()
            .map(|a| label_fingerprint(&a.labels))
            .collect();
        let gone: Vec<String> = self
            .firing
            .keys()
            .filter(|k| !keep.contains(k))
            .cloned()
            .collect();
        let mut changes = self.apply(&alerts);
        for fingerprint in gone {
            self.firing.remove(&fingerprint);
            changes.resolved.push(fingerprint);
        }
        changes
    }

    /// Names of firing alerts that match a policy, sorted.
    pub fn matching(&self, policy: &AlertPolicy) -> Vec<String> {
        let mut names: Vec<String> = self
            .firing
            .values()
            .filter(|a| policy_matches(policy, &a.labels))
            .map(|a| a.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Number of firing alerts.
    pub fn len(&self) -> usize {
        self.firing.len()
    }

    /// Whether nothing is firing.
    pub fn is_empty(&self) -> bool {
        self.firing.is_empty()
    }
}

/// Identity of a label set, computed as Prometheus' `LabelSet.Fingerprint()`
/// (FNV-1a 64 over sorted name/value pairs, each followed by 0xff), so a polled
/// alert and Alertmanager's webhook fingerprint for it share one key.
fn label_fingerprint(labels: &BTreeMap<String, String>) -> String {
    let bytes = labels
        .iter()
        .flat_map(|(k, v)| k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]));
    format!("{:016x}", crate::hash::fnv1a64(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn matcher(name: &str, op: MatchOp, value: &str) -> LabelMatcher {
        LabelMatcher {
            name: name.into(),
            op,
            value: value.into(),
        }
    }

    fn policy(matchers: Vec<LabelMatcher>) -> AlertPolicy {
        AlertPolicy {
            matchers,
            guard_window: Duration::from_secs(600),
        }
    }

    const PAYLOAD: &str = r#"{
      "version": "4", "groupKey": "{}:{alertname=\"HighErrorRate\"}", "truncatedAlerts": 0,
      "status": "firing", "receiver": "canaryd",
      "groupLabels": {"alertname": "HighErrorRate"}, "commonLabels": {}, "commonAnnotations": {},
      "externalURL": "http://am:9093",
      "alerts": [
        {"status": "firing", "labels": {"alertname": "HighErrorRate", "service": "myapp", "severity": "critical"},
         "annotations": {"summary": "5xx"}, "startsAt": "2026-11-27T10:00:00Z",
         "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom", "fingerprint": "a1"},
        {"status": "firing", "labels": {"alertname": "DiskFull", "service": "db"},
         "annotations": {}, "startsAt": "2026-11-27T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
         "generatorURL": "", "fingerprint": "b2"}
      ]
    }"#;

    #[test]
    fn parses_alertmanager_v4_payload() {
        let p = parse_webhook(PAYLOAD.as_bytes()).unwrap();
        assert_eq!(p.status, "firing");
        assert_eq!(p.alerts.len(), 2);
        assert_eq!(p.alerts[0].labels["service"], "myapp");
        assert_eq!(p.alerts[0].fingerprint.as_deref(), Some("a1"));
    }

    #[test]
    fn malformed_json_names_the_field_and_position() {
        let body = br#"{"version": "4", "status": "firing", "alerts": [{"status": "burning", "labels": {"a": "b"}}]}"#;
        let err = parse_webhook(body).unwrap_err();
        match err {
            AlertError::Malformed { path, message, .. } => {
                assert_eq!(path, "alerts[0].status");
                assert!(message.contains("unknown variant `burning`"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        let err = parse_webhook(b"{not json").unwrap_err();
        assert!(
            matches!(err, AlertError::Malformed { line: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn rejects_other_versions_and_unlabelled_alerts() {
        let body = br#"{"version": "3", "status": "firing", "alerts": []}"#;
        assert_eq!(
            parse_webhook(body).unwrap_err(),
            AlertError::UnsupportedVersion("3".into())
        );
        let body = br#"{"version": "4", "status": "firing", "alerts": [{"status": "firing", "labels": {}}]}"#;
        assert_eq!(parse_webhook(body).unwrap_err(), AlertError::EmptyLabels(0));
    }

    #[test]
    fn matchers_follow_prometheus_semantics() {
        let l = labels(&[("service", "myapp"), ("severity", "critical")]);
        assert!(matcher_matches(
            &matcher("service", MatchOp::Eq, "myapp"),
            &l
        ));
        assert!(!matcher_matches(
            &matcher("service", MatchOp::Ne, "myapp"),
            &l
        ));
        assert!(matcher_matches(
            &matcher("severity", MatchOp::Re, "critical|page"),
            &l
        ));
        // Anchored: a substring does not match.
        assert!(!matcher_matches(
            &matcher("severity", MatchOp::Re, "crit"),
            &l
        ));
        assert!(matcher_matches(
            &matcher("severity", MatchOp::NotRe, "crit"),
            &l
        ));
        // A missing label is the empty string.
        assert!(matcher_matches(&matcher("team", MatchOp::Eq, ""), &l));
        assert!(!policy_matches(&policy(vec![]), &l));
    }

    #[test]
    fn index_deduplicates_and_resolves() {
        let p = parse_webhook(PAYLOAD.as_bytes()).unwrap();
        let mut index = FiringAlerts::default();
        let first = index.apply(&p.alerts);
        assert_eq!(first.started, vec!["a1".to_string(), "b2".to_string()]);
        let again = index.apply(&p.alerts);
        assert!(again.started.is_empty());
        assert_eq!(again.duplicates, 2);

        let pol = policy(vec![matcher("service", MatchOp::Eq, "myapp")]);
        assert_eq!(index.matching(&pol), vec!["HighErrorRate".to_string()]);

        let mut resolved = p.alerts[0].clone();
        resolved.status = AlertStatus::Resolved;
        let changes = index.apply(&[resolved]);
        assert_eq!(changes.resolved, vec!["a1".to_string()]);
        assert!(index.matching(&pol).is_empty());
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn poll_replaces_the_firing_set() {
        let mut index = FiringAlerts::default();
        let a = labels(&[
            ("alertname", "HighErrorRate"),
            ("service", "myapp"),
            ("alertstate", "firing"),
        ]);
        let changes = index.replace_from_poll(std::slice::from_ref(&a));
        assert_eq!(changes.started.len(), 1);
        assert_eq!(index.replace_from_poll(&[a]).duplicates, 1);
        let changes = index.replace_from_poll(&[]);
        assert_eq!(changes.resolved.len(), 1);
        assert!(index.is_empty());
    }

    #[test]
    fn thousand_alerts_are_handled() {
        let alerts: Vec<String> = (0..1000)
            .map(|i| {
                format!(
                    r#"{{"status":"firing","labels":{{"alertname":"A{i}","service":"s{}"}}}}"#,
                    i % 10
                )
            })
            .collect();
        let body = format!(
            r#"{{"version":"4","status":"firing","alerts":[{}]}}"#,
            alerts.join(",")
        );
        let p = parse_webhook(body.as_bytes()).unwrap();
        let mut index = FiringAlerts::default();
        assert_eq!(index.apply(&p.alerts).started.len(), 1000);
        let pol = policy(vec![matcher("service", MatchOp::Eq, "s3")]);
        assert_eq!(index.matching(&pol).len(), 100);
    }
}

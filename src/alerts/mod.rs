//! Alerts that roll a service back: Alertmanager's webhook payload, label
//! matching against a policy, and a pure index of what is firing.
//!
//! The HTTP endpoint and the `ALERTS` polling fallback feed [`FiringAlerts`];
//! the rollout engine only sees the names of matching firing alerts.

pub mod poll;
pub mod record;

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::policy::{AlertPolicy, LabelMatcher, MatchOp};

/// Most alerts the index holds: past it, new alerts are refused (the webhook
/// answers 507 and Alertmanager retries) rather than memory growing without end.
pub const MAX_FIRING_ALERTS: usize = 20_000;

/// Most labels one alert may carry.
pub const MAX_ALERT_LABELS: usize = 64;

/// Most bytes of label names and values one alert may carry.
pub const MAX_ALERT_LABEL_BYTES: usize = 8 * 1024;

/// Most distinct regex patterns kept compiled; the cache is emptied past it.
/// Policies hold a few patterns each, so this is only hit by churn.
const MAX_CACHED_PATTERNS: usize = 4096;

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
    /// When the alert ends, if its sender knows (Unix milliseconds). Alertmanager
    /// sends the zero time for firing alerts, which reads as unknown.
    #[serde(default, rename = "endsAt", deserialize_with = "ends_at")]
    pub ends_at_ms: Option<i64>,
}

/// Reads `endsAt`: RFC 3339 (Alertmanager writes nanoseconds), the zero time
/// `0001-01-01T00:00:00Z` and a missing or null value as unknown.
fn ends_at<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<i64>, D::Error> {
    let Some(text) = Option::<String>::deserialize(de)? else {
        return Ok(None);
    };
    let at: jiff::Timestamp = text
        .parse()
        .map_err(|e| serde::de::Error::custom(format!("not an RFC 3339 time: {e}")))?;
    // Go's zero time.Time, and anything before the epoch, means "no end known".
    Ok((at.as_second() > 0).then(|| at.as_millisecond()))
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
    /// An alert carries more labels or label bytes than canaryd keeps.
    #[error("alerts[{index}].labels: {count} labels of {bytes} bytes; at most {MAX_ALERT_LABELS} labels of {MAX_ALERT_LABEL_BYTES} bytes")]
    OversizedLabels {
        /// Index of the alert in the payload.
        index: usize,
        /// Its number of labels.
        count: usize,
        /// Its label names and values in bytes.
        bytes: usize,
    },
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
    for (index, alert) in payload.alerts.iter().enumerate() {
        check_labels(index, &alert.labels)?;
    }
    Ok(payload)
}

fn check_labels(index: usize, labels: &BTreeMap<String, String>) -> Result<(), AlertError> {
    if labels.is_empty() {
        return Err(AlertError::EmptyLabels(index));
    }
    let bytes: usize = labels.iter().map(|(k, v)| k.len() + v.len()).sum();
    if labels.len() > MAX_ALERT_LABELS || bytes > MAX_ALERT_LABEL_BYTES {
        return Err(AlertError::OversizedLabels {
            index,
            count: labels.len(),
            bytes,
        });
    }
    Ok(())
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
    Patterns::default().matcher_matches(m, labels)
}

/// Whether an alert's labels satisfy every matcher of a policy. A policy
/// without matchers never matches: alert rollback is opt-in.
pub fn policy_matches(policy: &AlertPolicy, labels: &BTreeMap<String, String>) -> bool {
    Patterns::default().policy_matches(policy, labels)
}

/// Compiled regex matchers, each pattern compiled once: matching runs for
/// every policy against every firing alert, so compiling per match would
/// cost ~10^6 compilations per change at 1,000 policies × 1,000 alerts.
#[derive(Debug, Default, Clone)]
pub struct Patterns {
    compiled: std::collections::HashMap<String, Option<regex::Regex>>,
}

impl Patterns {
    /// Whether one matcher accepts a label set.
    pub fn matcher_matches(&mut self, m: &LabelMatcher, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&m.name).map(String::as_str).unwrap_or("");
        match m.op {
            MatchOp::Eq => value == m.value,
            MatchOp::Ne => value != m.value,
            MatchOp::Re => self.anchored_match(&m.value, value),
            MatchOp::NotRe => !self.anchored_match(&m.value, value),
        }
    }

    /// Whether every matcher of `policy` accepts `labels` (none never matches).
    pub fn policy_matches(
        &mut self,
        policy: &AlertPolicy,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        !policy.matchers.is_empty()
            && policy
                .matchers
                .iter()
                .all(|m| self.matcher_matches(m, labels))
    }

    /// Prometheus regex matchers are fully anchored. Policies are validated,
    /// so a pattern that does not compile here matches nothing rather than
    /// everything.
    fn anchored_match(&mut self, pattern: &str, value: &str) -> bool {
        if self.compiled.len() >= MAX_CACHED_PATTERNS && !self.compiled.contains_key(pattern) {
            self.compiled.clear();
        }
        self.compiled
            .entry(pattern.to_string())
            .or_insert_with(|| regex::Regex::new(&format!("^(?:{pattern})$")).ok())
            .as_ref()
            .is_some_and(|re| re.is_match(value))
    }
}

/// The fingerprint an alert is deduplicated by: Alertmanager's, else one
/// derived from the labels.
pub fn fingerprint_of(alert: &WebhookAlert) -> String {
    alert
        .fingerprint
        .clone()
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| label_fingerprint(&alert.labels))
}

/// Whether a notification about `alert` means it is firing at `now_ms`: an
/// alert past its `endsAt` has resolved, whatever its status says.
pub fn fires_at(alert: &WebhookAlert, now_ms: i64) -> bool {
    alert.status == AlertStatus::Firing && alert.ends_at_ms.is_none_or(|end| end > now_ms)
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
    /// When it stops counting as firing (Unix ms), if its sender said.
    pub ends_at_ms: Option<i64>,
}

impl FiringAlert {
    /// The index's entry for a notification's alert.
    pub fn from_webhook(alert: &WebhookAlert) -> Self {
        let fingerprint = fingerprint_of(alert);
        let name = alert
            .labels
            .get("alertname")
            .cloned()
            .unwrap_or_else(|| fingerprint.clone());
        FiringAlert {
            fingerprint,
            name,
            labels: alert.labels.clone(),
            ends_at_ms: alert.ends_at_ms,
        }
    }

    /// Whether it still fires at `now_ms`.
    pub fn fires_at(&self, now_ms: i64) -> bool {
        self.ends_at_ms.is_none_or(|end| end > now_ms)
    }
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

impl AlertChanges {
    /// Whether the firing set changed.
    pub fn changed(&self) -> bool {
        !self.started.is_empty() || !self.resolved.is_empty()
    }
}

/// Where an alert in the index came from. Each source resolves only its own
/// alerts, so a match holds while any source still reports the alert firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Alertmanager's webhook: in the daemon, the cluster-wide alert record
    /// that every replica writes and watches.
    Webhook,
    /// This replica's poll of `ALERTS` in Prometheus.
    Poll,
}

/// Applies one notification to a map of firing alerts.
fn apply_to(
    firing: &mut BTreeMap<String, FiringAlert>,
    alerts: &[WebhookAlert],
    now_ms: i64,
) -> AlertChanges {
    let mut changes = AlertChanges::default();
    for alert in alerts {
        let entry = FiringAlert::from_webhook(alert);
        if fires_at(alert, now_ms) {
            match firing.insert(entry.fingerprint.clone(), entry.clone()) {
                Some(_) => changes.duplicates += 1,
                None => changes.started.push(entry.fingerprint),
            }
        } else if firing.remove(&entry.fingerprint).is_some() {
            changes.resolved.push(entry.fingerprint);
        } else {
            changes.duplicates += 1;
        }
    }
    changes
}

/// Pure index of currently firing alerts per [`Source`], keyed by
/// fingerprint so repeated notifications (Alertmanager re-sends every
/// `repeat_interval`) are deduplicated.
#[derive(Debug, Clone, Default)]
pub struct FiringAlerts {
    webhook: BTreeMap<String, FiringAlert>,
    polled: BTreeMap<String, FiringAlert>,
    patterns: Patterns,
}

impl FiringAlerts {
    /// Applies one notification's alerts from `source` at `now_ms`.
    pub fn apply(&mut self, source: Source, alerts: &[WebhookAlert], now_ms: i64) -> AlertChanges {
        apply_to(self.source_mut(source), alerts, now_ms)
    }

    fn source_mut(&mut self, source: Source) -> &mut BTreeMap<String, FiringAlert> {
        match source {
            Source::Webhook => &mut self.webhook,
            Source::Poll => &mut self.polled,
        }
    }

    /// Replaces the webhook's alerts with the cluster-wide record's.
    pub fn replace_webhook(
        &mut self,
        alerts: impl IntoIterator<Item = FiringAlert>,
    ) -> AlertChanges {
        let next: BTreeMap<String, FiringAlert> = alerts
            .into_iter()
            .map(|a| (a.fingerprint.clone(), a))
            .collect();
        let changes = AlertChanges {
            started: next
                .keys()
                .filter(|k| !self.webhook.contains_key(*k))
                .cloned()
                .collect(),
            resolved: self
                .webhook
                .keys()
                .filter(|k| !next.contains_key(*k))
                .cloned()
                .collect(),
            duplicates: 0,
        };
        self.webhook = next;
        changes
    }

    /// Names of alerts firing at `now_ms` that match a policy, sorted.
    pub fn matching(&mut self, policy: &AlertPolicy, now_ms: i64) -> Vec<String> {
        let patterns = &mut self.patterns;
        let mut names: Vec<String> = self
            .webhook
            .values()
            .chain(self.polled.values())
            .filter(|a| a.fires_at(now_ms) && patterns.policy_matches(policy, &a.labels))
            .map(|a| a.name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Number of distinct firing alerts over both sources.
    pub fn len(&self) -> usize {
        self.webhook.len()
            + self
                .polled
                .keys()
                .filter(|k| !self.webhook.contains_key(*k))
                .count()
    }

    /// Whether nothing is firing.
    pub fn is_empty(&self) -> bool {
        self.webhook.is_empty() && self.polled.is_empty()
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

    const NOW: i64 = 1_800_000_000_000;

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
        let first = index.apply(Source::Webhook, &p.alerts, NOW);
        assert_eq!(first.started, vec!["a1".to_string(), "b2".to_string()]);
        let again = index.apply(Source::Webhook, &p.alerts, NOW);
        assert!(again.started.is_empty());
        assert_eq!(again.duplicates, 2);

        let pol = policy(vec![matcher("service", MatchOp::Eq, "myapp")]);
        assert_eq!(index.matching(&pol, NOW), vec!["HighErrorRate".to_string()]);

        let mut resolved = p.alerts[0].clone();
        resolved.status = AlertStatus::Resolved;
        let changes = index.apply(Source::Webhook, &[resolved], NOW);
        assert_eq!(changes.resolved, vec!["a1".to_string()]);
        assert!(index.matching(&pol, NOW).is_empty());
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn ends_at_is_honoured() {
        let p = parse_webhook(PAYLOAD.as_bytes()).unwrap();
        // Alertmanager's zero time reads as "no end known".
        assert_eq!(p.alerts[0].ends_at_ms, None);
        let mut alert = p.alerts[0].clone();
        alert.ends_at_ms = Some(NOW + 1000);
        let mut index = FiringAlerts::default();
        index.apply(Source::Webhook, &[alert.clone()], NOW);
        let pol = policy(vec![matcher("service", MatchOp::Eq, "myapp")]);
        assert_eq!(index.matching(&pol, NOW + 999), ["HighErrorRate"]);
        assert!(index.matching(&pol, NOW + 1000).is_empty());
        // A "firing" notification past its end resolves the alert.
        let changes = index.apply(Source::Webhook, &[alert], NOW + 2000);
        assert_eq!(changes.resolved, ["a1"]);
        let body = br#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"a":"b"},"endsAt":"2026-11-27T10:00:00.123456789Z"}]}"#;
        let p = parse_webhook(body).unwrap();
        assert_eq!(p.alerts[0].ends_at_ms, Some(1_795_773_600_123));
        let body = br#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"a":"b"},"endsAt":"yesterday"}]}"#;
        let err = parse_webhook(body).unwrap_err();
        assert!(
            matches!(&err, AlertError::Malformed { path, .. } if path == "alerts[0].endsAt"),
            "{err}"
        );
    }

    #[test]
    fn each_source_resolves_only_its_own_alerts() {
        let l = labels(&[("alertname", "HighErrorRate"), ("service", "myapp")]);
        let alert = |status| WebhookAlert {
            status,
            labels: l.clone(),
            annotations: BTreeMap::new(),
            fingerprint: None,
            ends_at_ms: None,
        };
        let pol = policy(vec![matcher("service", MatchOp::Eq, "myapp")]);
        let mut index = FiringAlerts::default();
        index.apply(Source::Poll, &[alert(AlertStatus::Firing)], NOW);
        index.apply(Source::Webhook, &[alert(AlertStatus::Firing)], NOW);
        assert_eq!(index.len(), 1, "one alert reported by both sources");
        index.apply(Source::Webhook, &[alert(AlertStatus::Resolved)], NOW);
        assert_eq!(
            index.matching(&pol, NOW),
            ["HighErrorRate"],
            "the poll still sees it"
        );
        index.apply(Source::Poll, &[alert(AlertStatus::Resolved)], NOW);
        assert!(index.is_empty());
    }

    #[test]
    fn the_record_replaces_the_webhook_alerts_only() {
        let mut index = FiringAlerts::default();
        let p = parse_webhook(PAYLOAD.as_bytes()).unwrap();
        index.apply(Source::Poll, &p.alerts[1..], NOW);
        let changes = index.replace_webhook([FiringAlert::from_webhook(&p.alerts[0])]);
        assert_eq!(changes.started, ["a1"]);
        assert_eq!(index.len(), 2);
        let changes = index.replace_webhook([]);
        assert_eq!(changes.resolved, ["a1"]);
        assert_eq!(index.len(), 1, "the polled alert stays");
    }

    #[test]
    fn oversized_label_sets_are_refused() {
        let many: Vec<String> = (0..=MAX_ALERT_LABELS)
            .map(|i| format!(r#""l{i}":"v""#))
            .collect();
        let body = format!(
            r#"{{"version":"4","status":"firing","alerts":[{{"status":"firing","labels":{{{}}}}}]}}"#,
            many.join(",")
        );
        let err = parse_webhook(body.as_bytes()).unwrap_err();
        assert!(
            matches!(err, AlertError::OversizedLabels { index: 0, .. }),
            "{err}"
        );
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
        assert_eq!(
            index.apply(Source::Webhook, &p.alerts, NOW).started.len(),
            1000
        );
        let pol = policy(vec![matcher("service", MatchOp::Eq, "s3")]);
        assert_eq!(index.matching(&pol, NOW).len(), 100);
    }
}

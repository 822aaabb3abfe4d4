//! The `ALERTS` polling fallback: every [`POLL_INTERVAL`] canaryd asks each
//! Prometheus its policies use for `ALERTS{alertstate="firing"}` and feeds the
//! answer into the shared [`FiringAlerts`] index, so alert rollback works with
//! no Alertmanager webhook, and a missed notification is caught up.
//!
//! The poll only adds the alerts it sees and resolves the alerts *it* saw
//! before and no longer sees. The index keeps polled and webhook alerts
//! apart ([`Source`]), so the poll never clears alerts that arrived through
//! the webhook (from another Prometheus, or a Loki or Mimir ruler), and an
//! alert that both paths report fires until both report its end. Each
//! replica polls for itself; the answers are the same on every replica.
//!
//! A Prometheus that does not answer changes nothing it reported: its alerts
//! are neither added nor resolved until it answers again. Poll errors are
//! logged and counted in `canaryd_prometheus_query_errors_total`; they never
//! stop the poller.
//!
//! [`FiringAlerts`]: crate::alerts::FiringAlerts

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_http_query::response::Data;
use tokio::sync::watch;

use crate::alerts::{AlertChanges, AlertStatus, Source, WebhookAlert};
use crate::daemon::server::ServerState;
use crate::metrics::PrometheusSource;
use crate::policy::PolicySet;
use crate::policy::PrometheusConfig;

/// How often Prometheus is asked for firing alerts. Alertmanager's webhook is
/// the fast path; this bounds how late a missed notification is noticed.
pub const POLL_INTERVAL: Duration = Duration::from_secs(15);
/// The query: Prometheus's synthetic series of alerts past their `for:`.
pub const FIRING_ALERTS_QUERY: &str = r#"ALERTS{alertstate="firing"}"#;
/// `source` label value of `canaryd_alerts_received_total` for polled alerts.
pub const POLL_SOURCE: &str = "poll";

/// Labels of one alert.
pub type Labels = BTreeMap<String, String>;

/// Why one poll of one Prometheus failed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PollError {
    /// The source could not be built (e.g. an unreadable CA file).
    #[error("prometheus {url}: {message}")]
    Config {
        /// Base URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The query failed after retries.
    #[error("prometheus {url}: querying ALERTS: {message}")]
    Query {
        /// Base URL.
        url: String,
        /// Why it failed.
        message: String,
    },
    /// The answer was not an instant vector.
    #[error("prometheus {url}: ALERTS query returned a {found}; expected a vector")]
    NotAVector {
        /// Base URL.
        url: String,
        /// What came back.
        found: &'static str,
    },
}

/// The alert label sets in an `ALERTS` query result (pure). `__name__` and
/// `alertstate` are dropped: they are not part of an alert's identity, and
/// without them the labels equal those Alertmanager sends. Sorted, no duplicates.
pub fn firing_label_sets(data: &Data) -> Result<Vec<Labels>, &'static str> {
    let vector = match data {
        Data::Vector(v) => v,
        Data::Matrix(_) => return Err("matrix"),
        Data::Scalar(_) => return Err("scalar"),
    };
    let sets: BTreeSet<Labels> = vector
        .iter()
        .map(|series| {
            series
                .metric()
                .iter()
                .filter(|(k, _)| *k != "__name__" && *k != "alertstate")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Labels>()
        })
        // An alert with no labels cannot be matched; the webhook refuses it too.
        .filter(|labels| !labels.is_empty())
        .collect();
    Ok(sets.into_iter().collect())
}

/// The notification one poll amounts to (pure): every alert firing now, and a
/// resolution for each alert a source that answered reported last time but
/// not now (unless another source still reports it).
pub fn poll_notification(
    firing_now: &BTreeSet<Labels>,
    seen_before: &[&BTreeSet<Labels>],
    answered_now: &[&BTreeSet<Labels>],
) -> Vec<WebhookAlert> {
    let mut gone: BTreeSet<&Labels> = BTreeSet::new();
    for (before, now) in seen_before.iter().zip(answered_now) {
        gone.extend(before.difference(now));
    }
    let alert = |labels: &Labels, status| WebhookAlert {
        status,
        labels: labels.clone(),
        annotations: BTreeMap::new(),
        fingerprint: None,
        ends_at_ms: None,
    };
    // Firing ones are re-sent each poll: the index deduplicates them and
    // restores any that another path resolved while Prometheus still fires.
    firing_now
        .iter()
        .map(|l| alert(l, AlertStatus::Firing))
        .chain(
            gone.into_iter()
                .filter(|l| !firing_now.contains(*l))
                .map(|l| alert(l, AlertStatus::Resolved)),
        )
        .collect()
}

/// The distinct Prometheus servers of policies that roll back on alerts.
pub fn alert_sources(policies: &PolicySet) -> Vec<PrometheusConfig> {
    let mut out: Vec<PrometheusConfig> = Vec::new();
    for p in policies.iter().filter(|p| !p.alerts.matchers.is_empty()) {
        if !out.contains(&p.analysis.prometheus) {
            out.push(p.analysis.prometheus.clone());
        }
    }
    out
}

struct Polled {
    config: PrometheusConfig,
    source: Result<PrometheusSource, String>,
    /// Alerts this source reported on its last answer.
    seen: BTreeSet<Labels>,
}

/// What one round of polling did.
#[derive(Debug, Default)]
pub struct PollOutcome {
    /// Alerts reported firing by the sources that answered.
    pub firing: usize,
    /// What changed in the index.
    pub changes: AlertChanges,
    /// Sources that failed this round.
    pub errors: Vec<PollError>,
}

/// Polls a set of Prometheus servers for firing alerts and remembers what each
/// reported, so that it resolves only alerts it saw itself.
#[derive(Default)]
pub struct AlertPoller {
    sources: Vec<Polled>,
}

impl std::fmt::Debug for AlertPoller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.sources.iter().map(|s| &s.config.url))
            .finish()
    }
}

impl AlertPoller {
    /// A poller over `configs`.
    pub fn new(configs: &[PrometheusConfig]) -> Self {
        let mut poller = AlertPoller::default();
        poller.reconfigure(configs);
        poller
    }

    /// Switches to `configs`, keeping what still-configured sources reported.
    /// Alerts reported only by a dropped source are left to the webhook or
    /// the next source reporting them.
    pub fn reconfigure(&mut self, configs: &[PrometheusConfig]) {
        let mut old = std::mem::take(&mut self.sources);
        for config in configs {
            if self.sources.iter().any(|s| s.config == *config) {
                continue;
            }
            match old.iter().position(|s| s.config == *config) {
                Some(i) => self.sources.push(old.swap_remove(i)),
                None => self.sources.push(Polled {
                    config: config.clone(),
                    source: PrometheusSource::new(config).map_err(|e| e.to_string()),
                    seen: BTreeSet::new(),
                }),
            }
        }
    }

    /// Number of sources polled.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether there is nothing to poll.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Polls every source once and applies the result to `state.alerts`,
    /// waking `alerts_changed` when the firing set changed. Counts polled
    /// alerts in `alerts_received{source="poll"}` and failed sources in
    /// `prometheus_query_errors`; logs failures. Never fails as a whole.
    pub async fn poll_once(&mut self, state: &ServerState) -> PollOutcome {
        let at = unix_now();
        let mut outcome = PollOutcome::default();
        let answers = futures::future::join_all(
            self.sources
                .iter()
                .map(|s| query_source(s, at))
                .collect::<Vec<_>>(),
        )
        .await;
        let mut answered: Vec<(usize, BTreeSet<Labels>)> = Vec::new();
        for (i, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(sets) => answered.push((i, sets)),
                Err(error) => {
                    tracing::warn!(error = %error, "Polling firing alerts failed; keeping what this Prometheus reported before.");
                    state.metrics.prometheus_query_errors.inc();
                    outcome.errors.push(error);
                }
            }
        }
        let firing_now: BTreeSet<Labels> = answered
            .iter()
            .flat_map(|(_, sets)| sets.iter().cloned())
            .collect();
        let before: Vec<&BTreeSet<Labels>> = answered
            .iter()
            .map(|(i, _)| &self.sources[*i].seen)
            .collect();
        let now: Vec<&BTreeSet<Labels>> = answered.iter().map(|(_, sets)| sets).collect();
        let notification = poll_notification(&firing_now, &before, &now);
        outcome.firing = firing_now.len();
        for (i, sets) in answered {
            self.sources[i].seen = sets;
        }
        if notification.is_empty() {
            return outcome;
        }
        let now_ms = at.saturating_mul(1000);
        outcome.changes = match state.alerts.lock() {
            Ok(mut index) => index.apply(Source::Poll, &notification, now_ms),
            Err(poisoned) => poisoned
                .into_inner()
                .apply(Source::Poll, &notification, now_ms),
        };
        state
            .metrics
            .alerts_received
            .with_label_values(&[POLL_SOURCE])
            .inc_by(outcome.firing as u64);
        let c = &outcome.changes;
        if c.changed() {
            tracing::info!(
                started = c.started.len(),
                resolved = c.resolved.len(),
                firing = outcome.firing,
                "Polled alerts changed the firing set."
            );
            state.wake_alerts();
        }
        outcome
    }
}

async fn query_source(s: &Polled, at: i64) -> Result<BTreeSet<Labels>, PollError> {
    let url = s.config.url.clone();
    let source = s.source.as_ref().map_err(|message| PollError::Config {
        url: url.clone(),
        message: message.clone(),
    })?;
    let data = source
        .query(FIRING_ALERTS_QUERY, at)
        .await
        .map_err(|e| PollError::Query {
            url: url.clone(),
            message: e.to_string(),
        })?;
    let sets = firing_label_sets(&data).map_err(|found| PollError::NotAVector { url, found })?;
    Ok(sets.into_iter().collect())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Polls the Prometheus servers of the policies in force every `interval`
/// until `shutdown` completes, following policy reloads. Never fails.
pub async fn run(
    state: Arc<ServerState>,
    mut policies: watch::Receiver<Arc<PolicySet>>,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut poller = AlertPoller::new(&alert_sources(&policies.borrow_and_update()));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut following = true;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            changed = policies.changed(), if following => {
                if changed.is_ok() {
                    poller.reconfigure(&alert_sources(&policies.borrow_and_update()));
                    tracing::debug!(sources = poller.len(), "Alert poll sources updated.");
                } else {
                    // The store is gone: keep polling the last sources.
                    following = false;
                }
            }
            _ = tick.tick() => {
                if !poller.is_empty() {
                    poller.poll_once(&state).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn set(items: &[Labels]) -> BTreeSet<Labels> {
        items.iter().cloned().collect()
    }

    fn vector(series: serde_json::Value) -> Data {
        serde_json::from_value(json!({"resultType": "vector", "result": series})).unwrap()
    }

    #[test]
    fn label_sets_drop_name_and_state_and_deduplicate() {
        let data = vector(json!([
            {"metric": {"__name__": "ALERTS", "alertname": "HighErrorRate", "alertstate": "firing",
                        "service": "myapp"}, "value": [1.0, "1"]},
            {"metric": {"__name__": "ALERTS", "alertname": "HighErrorRate", "alertstate": "firing",
                        "service": "myapp"}, "value": [1.0, "1"]},
            {"metric": {"__name__": "ALERTS", "alertstate": "firing"}, "value": [1.0, "1"]},
            {"metric": {"alertname": "DiskFull"}, "value": [1.0, "1"]}
        ]));
        assert_eq!(
            firing_label_sets(&data).unwrap(),
            vec![
                labels(&[("alertname", "DiskFull")]),
                labels(&[("alertname", "HighErrorRate"), ("service", "myapp")]),
            ]
        );
        let scalar: Data =
            serde_json::from_value(json!({"resultType": "scalar", "result": [1.0, "3"]})).unwrap();
        assert_eq!(firing_label_sets(&scalar), Err("scalar"));
    }

    #[test]
    fn notification_fires_all_and_resolves_only_what_was_seen_and_is_gone() {
        let a = labels(&[("alertname", "A")]);
        let b = labels(&[("alertname", "B")]);
        let c = labels(&[("alertname", "C")]);
        let before = set(&[a.clone(), b.clone()]);
        let now = set(&[a.clone(), c.clone()]);
        let n = poll_notification(&now, &[&before], &[&now]);
        let summary: Vec<(String, AlertStatus)> = n
            .iter()
            .map(|w| (w.labels["alertname"].clone(), w.status))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("A".into(), AlertStatus::Firing),
                ("C".into(), AlertStatus::Firing),
                ("B".into(), AlertStatus::Resolved),
            ]
        );
    }

    #[test]
    fn an_alert_still_reported_by_another_source_is_not_resolved() {
        let a = labels(&[("alertname", "A")]);
        let first_before = set(std::slice::from_ref(&a));
        let first_now = BTreeSet::new();
        let second_before = set(std::slice::from_ref(&a));
        let second_now = set(std::slice::from_ref(&a));
        let firing = set(std::slice::from_ref(&a));
        let n = poll_notification(
            &firing,
            &[&first_before, &second_before],
            &[&first_now, &second_now],
        );
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].status, AlertStatus::Firing);
    }

    fn state() -> ServerState {
        ServerState::new(crate::daemon::telemetry::Metrics::new().unwrap(), None)
    }

    #[tokio::test]
    async fn an_unreachable_prometheus_is_counted_and_changes_nothing() {
        let state = state();
        // A webhook alert the poll must leave alone.
        let webhook = WebhookAlert {
            status: AlertStatus::Firing,
            labels: labels(&[("alertname", "FromLoki"), ("service", "myapp")]),
            annotations: BTreeMap::new(),
            fingerprint: Some("f1".into()),
            ends_at_ms: None,
        };
        state
            .alerts
            .lock()
            .unwrap()
            .apply(Source::Webhook, &[webhook], 0);
        // A port that was just free: the connection is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let config = PrometheusConfig {
            url: url.clone(),
            auth: None,
            ca_file: None,
        };
        let mut poller = AlertPoller::new(&[config]);
        let outcome = poller.poll_once(&state).await;
        assert_eq!(outcome.errors.len(), 1);
        assert!(
            matches!(&outcome.errors[0], PollError::Query { url: u, .. } if *u == url),
            "{:?}",
            outcome.errors
        );
        assert_eq!(state.metrics.prometheus_query_errors.get(), 1);
        assert_eq!(state.alerts.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_source_that_cannot_be_built_is_a_config_error() {
        let state = state();
        let config = PrometheusConfig {
            url: "http://127.0.0.1:9".into(),
            auth: None,
            ca_file: Some("/nonexistent/ca.pem".into()),
        };
        let mut poller = AlertPoller::new(&[config.clone(), config]);
        assert_eq!(poller.len(), 1);
        let outcome = poller.poll_once(&state).await;
        assert!(
            matches!(&outcome.errors[..], [PollError::Config { message, .. }] if message.contains("CA file")),
            "{:?}",
            outcome.errors
        );
        assert_eq!(state.metrics.prometheus_query_errors.get(), 1);
    }

    #[test]
    fn sources_are_those_of_policies_with_matchers() {
        let policy = |service: &str, url: &str, matchers: bool| {
            let alerts = if matchers {
                format!("alerts:\n  matchers: ['service=\"{service}\"']\n")
            } else {
                String::new()
            };
            crate::policy::parse_str(
                &format!(
                    "service: {service}\nnamespace: default\ndeployment: {service}\n\
                     strategy:\n  canary:\n    steps:\n      - size: 1\n        observe: 1m\n\
                     analysis:\n  prometheus:\n    url: {url}\n{alerts}"
                ),
                std::path::Path::new(&format!("{service}.yaml")),
            )
            .unwrap()
        };
        let set = PolicySet::from_policies([
            policy("a", "http://p1:9090", true),
            policy("b", "http://p1:9090", true),
            policy("c", "http://p2:9090", false),
            policy("d", "http://p3:9090", true),
        ]);
        let urls: Vec<String> = alert_sources(&set).into_iter().map(|c| c.url).collect();
        assert_eq!(urls, vec!["http://p1:9090", "http://p3:9090"]);
    }
}

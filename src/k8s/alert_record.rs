//! The cluster-wide alert record as a ConfigMap canaryd owns (next to its
//! Lease): every replica writes the webhook notifications it receives into
//! it with optimistic concurrency, and every replica watches it, so a
//! notification reaches the leader whichever replica Alertmanager picked,
//! and survives a leader change. The rules live in [`crate::alerts::record`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::Client;
use tokio::sync::watch;

use super::{post_params, ApiFailure, ConflictRetry, MANAGED_BY};
use crate::alerts::record::{AlertRecord, RecordChanges};
use crate::alerts::{Patterns, WebhookAlert};
use crate::daemon::server::ServerState;
use crate::policy::PolicySet;
use crate::{Error, Result};

/// Key of the record's JSON in the ConfigMap's data.
pub const RECORD_KEY: &str = "alerts.json";

/// Suffix of the record's name after the Lease's (`canaryd` → `canaryd-alerts`).
pub const RECORD_SUFFIX: &str = "-alerts";

/// How often the watcher re-reads its last record without an event, so
/// alerts that reach their `endsAt` or expire leave the index on time.
pub const RECORD_RESYNC: Duration = Duration::from_secs(15);

/// Writes and watches the alert record.
pub struct AlertRecordStore {
    api: Api<ConfigMap>,
    name: String,
    policies: watch::Receiver<Arc<PolicySet>>,
    patterns: Mutex<Patterns>,
}

impl AlertRecordStore {
    /// The record `name` in `namespace`, keeping the alerts the policies in
    /// `policies` match.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        policies: watch::Receiver<Arc<PolicySet>>,
    ) -> Self {
        AlertRecordStore {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            policies,
            patterns: Mutex::new(Patterns::default()),
        }
    }

    fn full_name(&self) -> String {
        format!("{}/{}", self.api.namespace().unwrap_or_default(), self.name)
    }

    /// Whether some policy in force matches `labels`.
    fn relevant(&self, labels: &BTreeMap<String, String>) -> bool {
        let policies = self.policies.borrow().clone();
        let mut patterns = match self.patterns.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        let matched = policies
            .iter()
            .any(|p| patterns.policy_matches(&p.alerts, labels));
        matched
    }

    /// Applies a notification to the record: read, change, write with the
    /// read resourceVersion as precondition, again from a fresh read on a
    /// conflict (at most [`super::MAX_CONFLICT_RETRIES`] attempts). Returns the record as written (or as read when nothing
    /// changed) and what changed.
    pub async fn apply(
        &self,
        alerts: &[WebhookAlert],
        now_ms: i64,
    ) -> Result<(AlertRecord, RecordChanges)> {
        let name = self.full_name();
        let mut retry = ConflictRetry::new(&name);
        loop {
            retry.attempt()?;
            let stored = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(|e| self.failed(e))?;
            let mut record = stored
                .as_ref()
                .and_then(|cm| decode(cm, &name))
                .unwrap_or_default();
            let changes = record.apply(alerts, |l| self.relevant(l), now_ms);
            if !changes.dirty {
                return Ok((record, changes));
            }
            match self.write(stored, &record).await {
                Ok(()) => return Ok((record, changes)),
                Err(e) if ApiFailure::of(&e) == ApiFailure::Conflict => continue,
                Err(e) => return Err(self.failed(e)),
            }
        }
    }

    async fn write(
        &self,
        stored: Option<ConfigMap>,
        record: &AlertRecord,
    ) -> std::result::Result<(), kube::Error> {
        let data = BTreeMap::from([(RECORD_KEY.to_string(), record.to_json())]);
        let params = post_params();
        match stored {
            // The read resourceVersion stays in the object: a write in between is a 409.
            Some(mut cm) => {
                cm.data = Some(data);
                self.api.replace(&self.name, &params, &cm).await?;
            }
            None => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        labels: Some(BTreeMap::from([(
                            "app.kubernetes.io/managed-by".to_string(),
                            MANAGED_BY.to_string(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    data: Some(data),
                    ..ConfigMap::default()
                };
                // Two replicas creating at once: the second gets a 409 and retries.
                self.api.create(&params, &cm).await?;
            }
        }
        Ok(())
    }

    fn failed(&self, source: kube::Error) -> Error {
        Error::AlertRecord {
            name: self.full_name(),
            source: Box::new(source),
        }
    }

    /// Keeps `state`'s webhook alerts equal to the record until `shutdown`:
    /// every change of the record, and every [`RECORD_RESYNC`] for expiry.
    /// Watch errors are logged and retried with kube's backoff.
    pub async fn watch(
        self: Arc<Self>,
        state: Arc<ServerState>,
        shutdown: impl Future<Output = ()>,
    ) {
        let config = super::client::watch_config().fields(&format!("metadata.name={}", self.name));
        let events = kube::runtime::WatchStreamExt::default_backoff(watcher::watcher(
            self.api.clone(),
            config,
        ));
        tokio::pin!(events, shutdown);
        let mut tick = tokio::time::interval(RECORD_RESYNC);
        let mut last = AlertRecord::new();
        let mut seen_init = false;
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
                event = events.next() => match event {
                    None => return,
                    Some(Ok(Event::Apply(cm) | Event::InitApply(cm))) => {
                        if let Some(record) = decode(&cm, &self.full_name()) {
                            last = record;
                        }
                        seen_init = true;
                    }
                    Some(Ok(Event::Delete(_))) => last = AlertRecord::new(),
                    Some(Ok(Event::Init)) => seen_init = false,
                    // Listed and nothing there: no webhook alert fires.
                    Some(Ok(Event::InitDone)) if !seen_init => last = AlertRecord::new(),
                    Some(Ok(Event::InitDone)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(record = %self.full_name(), error = %e, "Watching the alert record failed; retrying.");
                        continue;
                    }
                },
            }
            publish(&state, &last);
        }
    }
}

/// The record in a ConfigMap; an unreadable one is logged and read as
/// absent (Alertmanager re-sends what still fires).
fn decode(cm: &ConfigMap, name: &str) -> Option<AlertRecord> {
    let text = cm.data.as_ref()?.get(RECORD_KEY)?;
    match AlertRecord::from_json(text) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(record = %name, error = %e, "Alert record unreadable; treating it as empty.");
            None
        }
    }
}

/// Puts the record's firing alerts into the index, waking the controller
/// when that changed the set.
pub fn publish(state: &ServerState, record: &AlertRecord) {
    let now = crate::controller::now_ms() as i64;
    let changes = match state.alerts.lock() {
        Ok(mut index) => index.replace_webhook(record.firing(now)),
        Err(poisoned) => poisoned.into_inner().replace_webhook(record.firing(now)),
    };
    if changes.changed() {
        tracing::info!(
            started = changes.started.len(),
            resolved = changes.resolved.len(),
            "Alert record changed the firing set."
        );
        state.wake_alerts();
    }
}

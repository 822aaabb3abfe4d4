//! Rollout notifications: every Event canaryd records is also posted to the
//! policy's `notifications` (a generic JSON webhook or a Slack incoming webhook).
//!
//! Best effort by design: a slow or failing receiver is logged and never holds
//! up a rollout.

use std::time::Duration;

use serde_json::{json, Value};

use crate::policy::{Notification, NotificationKind, Policy};
use crate::rollout::{EventKind, Reason};

/// How long one notification may take before it is abandoned.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(5);

/// The HTTP client every notification shares (connection reuse).
pub fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new)
}

/// One rollout event, as notifications carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutNote<'a> {
    /// `Normal` or `Warning`.
    pub kind: EventKind,
    /// The Event reason, e.g. `RolledBack`.
    pub reason: Reason,
    /// The Event message, with the verdict's numbers.
    pub message: &'a str,
}

/// The request body for one receiver (pure).
pub fn body(kind: NotificationKind, policy: &Policy, note: &RolloutNote<'_>) -> Value {
    match kind {
        NotificationKind::Webhook => json!({
            "service": policy.service,
            "namespace": policy.namespace,
            "deployment": policy.deployment,
            "type": note.kind.as_str(),
            "reason": note.reason.to_string(),
            "message": note.message,
        }),
        NotificationKind::Slack => {
            let icon = if note.kind == EventKind::Warning {
                ":warning:"
            } else {
                ":large_green_circle:"
            };
            json!({
                "text": format!(
                    "{icon} *{}* {}/{} — {}: {}",
                    note.reason, policy.namespace, policy.deployment, policy.service, note.message
                )
            })
        }
    }
}

/// Posts `note` to every receiver of `policy`, concurrently, each bounded by
/// [`NOTIFY_TIMEOUT`]; failures are logged.
pub async fn post_all(client: &reqwest::Client, policy: &Policy, note: &RolloutNote<'_>) {
    let sends = policy
        .notifications
        .iter()
        .map(|n| post_one(client, policy, n, note));
    futures::future::join_all(sends).await;
}

async fn post_one(
    client: &reqwest::Client,
    policy: &Policy,
    receiver: &Notification,
    note: &RolloutNote<'_>,
) {
    let result = client
        .post(&receiver.url)
        .timeout(NOTIFY_TIMEOUT)
        .json(&body(receiver.kind, policy, note))
        .send()
        .await
        .and_then(|r| r.error_for_status());
    if let Err(e) = result {
        tracing::warn!(
            service = %policy.service,
            url = %receiver.url,
            reason = %note.reason,
            error = %e,
            "Notification failed."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    fn policy(receivers: &[(&str, &str)]) -> Policy {
        let mut yaml = String::from(
            "service: myapp\nnamespace: test\ndeployment: myapp-deploy\n\
             analysis:\n  prometheus:\n    url: http://prometheus:9090\n",
        );
        if !receivers.is_empty() {
            yaml.push_str("notifications:\n");
            for (kind, url) in receivers {
                yaml.push_str(&format!("  - type: {kind}\n    url: {url}\n"));
            }
        }
        crate::policy::parse_str(&yaml, Path::new("n.yaml")).unwrap()
    }

    const NOTE: RolloutNote<'static> = RolloutNote {
        kind: EventKind::Warning,
        reason: Reason::RolledBack,
        message: "errors: e=59.9/40 canary 14/750 vs baseline 2/767",
    };

    #[test]
    fn bodies_carry_the_numbers() {
        let p = policy(&[]);
        let hook = body(NotificationKind::Webhook, &p, &NOTE);
        assert_eq!(hook["reason"], "RolledBack");
        assert_eq!(hook["deployment"], "myapp-deploy");
        assert_eq!(hook["message"], NOTE.message);
        let slack = body(NotificationKind::Slack, &p, &NOTE);
        assert_eq!(
            slack["text"],
            ":warning: *RolledBack* test/myapp-deploy — myapp: errors: e=59.9/40 canary 14/750 vs baseline 2/767"
        );
    }

    #[tokio::test]
    async fn posts_to_every_receiver_and_survives_a_dead_one() {
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let store = seen.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
                let store = store.clone();
                async move {
                    store.lock().unwrap().push(v);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        // A port nothing listens on: the failure is logged, the others still get theirs.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_url = format!("http://{}/hook", dead.local_addr().unwrap());
        drop(dead);
        let url = format!("http://{addr}/hook");
        let p = policy(&[("webhook", &url), ("webhook", &dead_url), ("slack", &url)]);
        post_all(&reqwest::Client::new(), &p, &NOTE).await;
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen.iter().any(|v| v["reason"] == "RolledBack"));
        assert!(seen
            .iter()
            .any(|v| v["text"].as_str().is_some_and(|t| t.contains("RolledBack"))));
    }
}

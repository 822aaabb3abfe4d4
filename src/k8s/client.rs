//! The Kubernetes client every daemon request goes through, with timeouts:
//! without them a request to an API server whose connection hangs never
//! returns, and a leader stuck in one would never notice it lost the Lease.
//! Requests also go through canaryd's API rate limit ([`super::rate_limit`]).

use std::time::Duration;

use kube::client::ClientBuilder;
use kube::{Client, Config};

use super::rate_limit::{ApiRateLimit, RateLimitLayer};

use crate::{Error, Result};

/// Longest a connection to the API server may take to open.
pub const API_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest the API server may take to answer a request (counted from when
/// the request was written, not from when a pooled connection went idle).
pub const API_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest writing a request may take.
pub const API_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Server-side timeout of each watch request: the API server ends an idle
/// watch before [`API_READ_TIMEOUT`] would cut it, and the watcher resumes it
/// from its last resourceVersion.
pub const WATCH_TIMEOUT_SECS: u32 = 25;

/// The client for `KUBECONFIG` (or the in-cluster ServiceAccount) with
/// canaryd's timeouts, its requests held to `limit`.
pub async fn client(limit: ApiRateLimit) -> Result<Client> {
    let mut config = Config::infer()
        .await
        .map_err(|e| Error::KubeClient(Box::new(kube::Error::InferConfig(e))))?;
    with_timeouts(&mut config);
    client_for(config, limit)
}

/// The client for `config` (as is), its requests held to `limit`.
pub fn client_for(config: Config, limit: ApiRateLimit) -> Result<Client> {
    let builder = ClientBuilder::try_from(config).map_err(|e| Error::KubeClient(Box::new(e)))?;
    Ok(builder.with_layer(&RateLimitLayer::new(limit)).build())
}

/// Sets canaryd's timeouts on `config`.
pub fn with_timeouts(config: &mut Config) {
    config.connect_timeout = Some(API_CONNECT_TIMEOUT);
    config.read_timeout = Some(API_READ_TIMEOUT);
    config.write_timeout = Some(API_WRITE_TIMEOUT);
    config.reset_reader_on_write = true;
}

/// The watcher configuration canaryd's watches use.
pub fn watch_config() -> kube::runtime::watcher::Config {
    kube::runtime::watcher::Config::default().timeout(WATCH_TIMEOUT_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_limited_client_talks_to_the_api_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let version = serde_json::json!({
            "major": "1", "minor": "34", "gitVersion": "v1.34.4", "gitCommit": "",
            "gitTreeState": "", "buildDate": "", "goVersion": "", "compiler": "", "platform": ""
        });
        let app = axum::Router::new().route(
            "/version",
            axum::routing::get(move || std::future::ready(axum::Json(version.clone()))),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = Config::new(format!("http://{addr}").parse().unwrap());
        let client = client_for(config, ApiRateLimit::default()).unwrap();
        let info = client.apiserver_version().await.unwrap();
        assert_eq!(info.git_version, "v1.34.4");
    }
}

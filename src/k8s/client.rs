//! The Kubernetes client every daemon request goes through, with timeouts:
//! without them a request to an API server whose connection hangs never
//! returns, and a leader stuck in one would never notice it lost the Lease.

use std::time::Duration;

use kube::{Client, Config};

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
/// canaryd's timeouts.
pub async fn client() -> Result<Client> {
    let mut config = Config::infer()
        .await
        .map_err(|e| Error::KubeClient(Box::new(kube::Error::InferConfig(e))))?;
    with_timeouts(&mut config);
    Client::try_from(config).map_err(|e| Error::KubeClient(Box::new(e)))
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

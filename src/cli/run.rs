//! `canaryd run`: the daemon's arguments; the wiring lives in [`crate::daemon`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `canaryd run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory (or file) of policy YAML files, one per service.
    #[arg(long)]
    pub policies: PathBuf,
    /// Address for /healthz, /readyz, /metrics, /v1/rollouts and /v1/alerts.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// File holding the bearer token the alert webhook requires (at least 16
    /// bytes; re-read when it changes). Without it the webhook answers 404.
    #[arg(long)]
    pub alert_token_file: Option<PathBuf>,
    /// File holding a bearer token that lets clients beyond loopback read
    /// /v1/rollouts (the alert token does too). Without either, only loopback may.
    #[arg(long)]
    pub read_token_file: Option<PathBuf>,
    /// Run without the alert webhook on purpose (alerts only through ALERTS
    /// polling); required to listen beyond loopback without --alert-token-file.
    #[arg(long, conflicts_with = "alert_token_file")]
    pub no_alert_webhook: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = crate::k8s::lease::DEFAULT_LEASE_NAMESPACE)]
    pub lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = crate::k8s::lease::DEFAULT_LEASE_NAME)]
    pub lease_name: String,
    /// This instance's identity in the Lease (default: pod name, else host-pid).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Reconciles (one Deployment each) that may run at once.
    #[arg(long, default_value_t = crate::controller::MAX_CONCURRENT_RECONCILES,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_reconciles: u16,
    /// Sustained requests per second canaryd sends to the Kubernetes API
    /// (Lease renewals are not counted).
    #[arg(long, default_value_t = crate::k8s::rate_limit::DEFAULT_API_QPS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub kube_api_qps: u32,
    /// Requests to the Kubernetes API that may go at once before --kube-api-qps applies.
    #[arg(long, default_value_t = crate::k8s::rate_limit::DEFAULT_API_BURST,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub kube_api_burst: u32,
}

/// Runs the daemon until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> ExitCode {
    crate::daemon::run(args, super::termination()).await
}

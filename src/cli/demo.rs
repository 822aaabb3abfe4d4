//! `canaryd demo-app` and `canaryd demo-load`: a demo service and its load generator.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use crate::demo::{self, AppConfig, LoadConfig};

/// Arguments of `canaryd demo-app`.
#[derive(Debug, clap::Args)]
pub struct AppArgs {
    /// Address to listen on, e.g. `127.0.0.1:8081`.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Release label exported with every metric (e.g. `v2`).
    #[arg(long)]
    pub version: String,
    /// Role label: `canary`, `baseline` or `stable`.
    #[arg(long, default_value = "stable")]
    pub role: String,
    /// Pod label, e.g. `web-canary-7d9f8b6c5d-x2k4p`.
    #[arg(long)]
    pub pod: String,
    /// Share of requests answered with HTTP 500 (0..=1).
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Median latency in milliseconds.
    #[arg(long, default_value_t = 50.0)]
    pub latency_ms: f64,
    /// σ of the log latency (lognormal shape).
    #[arg(long, default_value_t = demo::DEFAULT_LATENCY_SIGMA)]
    pub latency_sigma: f64,
    /// Record the sampled latency without sleeping it (faster tests).
    #[arg(long)]
    pub no_sleep: bool,
}

/// Arguments of `canaryd demo-load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Requests per second over all URLs (round-robin).
    #[arg(long)]
    pub rps: f64,
    /// How long to send, e.g. `30s`, `2m`.
    #[arg(long, value_parser = demo::parse_duration)]
    pub duration: Duration,
    /// Loopback URLs of demo-app instances.
    #[arg(required = true)]
    pub urls: Vec<String>,
}

/// Runs `canaryd demo-app` until Ctrl-C or SIGTERM.
pub async fn run_app(args: AppArgs) -> ExitCode {
    let latency = match Duration::try_from_secs_f64(args.latency_ms / 1000.0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("canaryd demo-app: --latency-ms {}: {e}", args.latency_ms);
            return super::exit(super::EXIT_ERROR);
        }
    };
    let config = AppConfig {
        version: args.version,
        role: args.role,
        pod: args.pod,
        error_rate: args.error_rate,
        latency_median: latency,
        latency_sigma: args.latency_sigma,
        sleep: !args.no_sleep,
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(source) => {
            let err = crate::Error::Serve {
                addr: args.listen.to_string(),
                source,
            };
            eprintln!("canaryd demo-app: {err}");
            return super::exit(super::EXIT_ERROR);
        }
    };
    tracing::info!(listen = %args.listen, version = %config.version, role = %config.role, pod = %config.pod, "demo app serving");
    match demo::serve_app(listener, config, super::termination()).await {
        Ok(()) => super::exit(super::EXIT_OK),
        Err(e) => {
            eprintln!("canaryd demo-app: {e}");
            super::exit(super::EXIT_ERROR)
        }
    }
}

/// Runs `canaryd demo-load` and prints its report as JSON on stdout.
pub async fn run_load(args: LoadArgs) -> ExitCode {
    let config = LoadConfig {
        rps: args.rps,
        duration: args.duration,
        targets: args.urls,
    };
    match demo::run_load(&config).await {
        Ok(report) => match serde_json::to_string_pretty(&report) {
            Ok(json) => {
                println!("{json}");
                super::exit(super::EXIT_OK)
            }
            Err(e) => {
                eprintln!("canaryd demo-load: {e}");
                super::exit(super::EXIT_ERROR)
            }
        },
        Err(e) => {
            eprintln!("canaryd demo-load: {e}");
            super::exit(super::EXIT_ERROR)
        }
    }
}

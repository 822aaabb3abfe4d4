//! `canaryd simulate`: the real engine and judge against a simulated cluster, in virtual time.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

use crate::policy;
use crate::simulate::{self, Load, Regression, Run, Scenario, Stretch, Summary};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A readable timeline and summary.
    Text,
    /// One JSON document.
    Json,
}

/// Arguments of `canaryd simulate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Policy file to simulate.
    pub policy: PathBuf,
    /// Replicas of the Deployment.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub replicas: u32,
    /// Total requests per second to the service.
    #[arg(long, default_value_t = 10.0)]
    pub traffic: f64,
    /// Error ratio of the stable release (0..1).
    #[arg(long, default_value_t = 0.005)]
    pub error_rate: f64,
    /// Median latency of the stable release in milliseconds (lognormal, σ 0.5).
    #[arg(long, default_value_t = 100.0)]
    pub latency_ms: f64,
    /// How the new release differs: none, errors:xN or latency:+N%.
    #[arg(long, default_value = "none")]
    pub regression: Regression,
    /// Seed of the shown run; summary run `i` uses `seed + i`.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seeded runs per release for the summary (0: no summary).
    #[arg(long, default_value_t = 200)]
    pub runs: u32,
    /// Fire a matching alert from this time on (e.g. 25m), in the shown run.
    #[arg(long, value_parser = simulate::parse_offset)]
    pub alert_at: Option<u64>,
    /// Metric source down for START+DURATION after the template change
    /// (e.g. 3m+6m): windows closing then have no data. Repeatable.
    #[arg(long = "outage", value_name = "START+DURATION", value_parser = clap::value_parser!(Stretch))]
    pub outages: Vec<Stretch>,
    /// No requests to the canary for START+DURATION after the template
    /// change (e.g. 12m+3m); the baseline keeps its traffic. Repeatable.
    #[arg(long = "no-traffic", value_name = "START+DURATION", value_parser = clap::value_parser!(Stretch))]
    pub no_traffic: Vec<Stretch>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// The `--output json` document.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    policy: String,
    plan: String,
    scenario: &'a Scenario,
    run: &'a Run,
    summary: Option<Summary>,
}

fn scenario(args: &Args) -> Result<Scenario, String> {
    if !(args.traffic.is_finite() && args.traffic > 0.0) {
        return Err(format!("--traffic must be above 0, found {}", args.traffic));
    }
    if !(0.0..=1.0).contains(&args.error_rate) {
        return Err(format!(
            "--error-rate must be within 0..1, found {}",
            args.error_rate
        ));
    }
    if !(args.latency_ms.is_finite() && args.latency_ms > 0.0) {
        return Err(format!(
            "--latency-ms must be above 0, found {}",
            args.latency_ms
        ));
    }
    Ok(Scenario {
        replicas: args.replicas,
        load: Load {
            rps: args.traffic,
            error_rate: args.error_rate,
            latency_secs: args.latency_ms / 1000.0,
            regression: args.regression,
        },
        alert_at: args.alert_at,
        outages: args.outages.clone(),
        no_traffic: args.no_traffic.clone(),
        seed: args.seed,
    })
}

/// Runs `canaryd simulate`: exit 0 on a completed simulation, 2 on bad input.
pub fn run(args: Args) -> ExitCode {
    let policy = match policy::load_file(&args.policy) {
        Ok(p) => p,
        Err(errors) => {
            // Nothing sensible is left to do if stderr is gone.
            let _ = writeln!(std::io::stderr(), "{errors}");
            return super::exit(super::EXIT_ERROR);
        }
    };
    let scenario = match scenario(&args) {
        Ok(s) => s,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "canaryd simulate: {message}");
            return super::exit(super::EXIT_ERROR);
        }
    };
    let shown = simulate::run(&policy, &scenario);
    let summary = (args.runs > 0).then(|| simulate::summarize(&policy, &scenario, args.runs));
    let text = match args.output {
        Output::Text => {
            let mut text = simulate::render_run(&policy, &scenario, &shown);
            if let Some(summary) = &summary {
                text.push('\n');
                text.push_str(&simulate::render_summary(summary));
            }
            text
        }
        Output::Json => {
            let report = Report {
                policy: policy.source.display().to_string(),
                plan: simulate::describe_plan(&policy, scenario.replicas),
                scenario: &scenario,
                run: &shown,
                summary,
            };
            match serde_json::to_string_pretty(&report) {
                Ok(json) => json + "\n",
                Err(e) => {
                    let _ = writeln!(std::io::stderr(), "canaryd simulate: {e}");
                    return super::exit(super::EXIT_ERROR);
                }
            }
        }
    };
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => super::exit(super::EXIT_OK),
        Err(_) => super::exit(super::EXIT_ERROR),
    }
}

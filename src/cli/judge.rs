//! `canaryd judge`: judge a JSON document of observations, or a past window in Prometheus.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `canaryd judge`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON observations document (`-` or absent: stdin). See docs/judge.md.
    pub input: Option<PathBuf>,
    /// Judge a past release from this Prometheus instead of a JSON document.
    #[arg(long, requires_all = ["policy", "from", "to"])]
    pub prometheus: Option<String>,
    /// Policy whose metrics and settings to use with `--prometheus`.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Start of the analysis (RFC 3339 or Unix seconds), with `--prometheus`.
    #[arg(long)]
    pub from: Option<String>,
    /// End of the analysis (RFC 3339 or Unix seconds), with `--prometheus`.
    #[arg(long)]
    pub to: Option<String>,
}

/// Runs `canaryd judge`.
pub async fn run(args: Args) -> ExitCode {
    if args.prometheus.is_some() {
        super::judge_prometheus::run(args).await
    } else {
        super::judge_file::run(args)
    }
}

//! `canaryd judge --prometheus`: judge a past release window by window from Prometheus.

use std::process::ExitCode;

/// Judges `--from`..`--to` from Prometheus as the daemon would have.
pub async fn run(_args: super::judge::Args) -> ExitCode {
    eprintln!("canaryd judge --prometheus: under construction");
    super::exit(super::EXIT_ERROR)
}

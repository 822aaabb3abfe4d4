//! `canaryd demo-app` and `canaryd demo-load`: a demo service and its load generator.

use std::process::ExitCode;

/// Arguments of `canaryd demo-app`.
#[derive(Debug, clap::Args)]
pub struct AppArgs {}

/// Arguments of `canaryd demo-load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {}

/// Runs `canaryd demo-app`.
pub async fn run_app(_args: AppArgs) -> ExitCode {
    eprintln!("canaryd demo-app: under construction");
    super::exit(super::EXIT_ERROR)
}

/// Runs `canaryd demo-load`.
pub async fn run_load(_args: LoadArgs) -> ExitCode {
    eprintln!("canaryd demo-load: under construction");
    super::exit(super::EXIT_ERROR)
}

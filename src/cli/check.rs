//! `canaryd check`: validate policy files and report every error.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `canaryd check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Policy files or directories (default: `policies/`).
    pub paths: Vec<PathBuf>,
}

/// Runs `canaryd check`.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("canaryd check: under construction");
    super::exit(super::EXIT_ERROR)
}

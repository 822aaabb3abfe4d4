//! `canaryd simulate`: the real engine and judge against a simulated cluster, in virtual time.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `canaryd simulate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Policy file to simulate.
    pub policy: PathBuf,
}

/// Runs `canaryd simulate`.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("canaryd simulate: under construction");
    super::exit(super::EXIT_ERROR)
}

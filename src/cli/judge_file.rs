//! `canaryd judge FILE`: judge a JSON observations document.

use std::process::ExitCode;

/// Judges the JSON document named by `args.input` (or stdin).
pub fn run(_args: super::judge::Args) -> ExitCode {
    eprintln!("canaryd judge: under construction");
    super::exit(super::EXIT_ERROR)
}

//! `canaryd check`: validate policy files and report every error.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::policy::{self, Policy, Strategy, Traffic};

/// Arguments of `canaryd check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Policy files or directories (default: `policies/`).
    pub paths: Vec<PathBuf>,
}

/// Runs `canaryd check`: every error on stderr, one per line, exit 1 on any;
/// otherwise a one-line summary on stdout and exit 0.
pub fn run(args: Args) -> ExitCode {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from("policies")]
    } else {
        args.paths
    };
    match policy::load_paths(&paths) {
        Ok(policies) => {
            let line = summary(&policies);
            if writeln!(std::io::stdout(), "{line}").is_err() {
                return super::exit(super::EXIT_ERROR);
            }
            super::exit(super::EXIT_OK)
        }
        Err(errors) => {
            let mut err = std::io::stderr().lock();
            for e in &errors {
                // Nothing sensible is left to do if stderr is gone.
                let _ = writeln!(err, "{e}");
            }
            super::exit(super::EXIT_FAILED)
        }
    }
}

/// `3 policies OK: myapp (canary, 4 steps), myapp-lan (blue-green), …`
pub fn summary(policies: &[Policy]) -> String {
    let noun = if policies.len() == 1 {
        "policy"
    } else {
        "policies"
    };
    let items: Vec<String> = policies
        .iter()
        .map(|p| format!("{} ({})", p.service, describe(p)))
        .collect();
    format!("{} {noun} OK: {}", policies.len(), items.join(", "))
}

fn describe(p: &Policy) -> String {
    match &p.strategy {
        Strategy::BlueGreen(_) => "blue-green".into(),
        Strategy::Canary(c) => {
            let router = match p.traffic {
                Traffic::Replicas => "",
                Traffic::IngressNginx { .. } => "ingress-nginx ",
                Traffic::GatewayApi { .. } => "gateway-api ",
            };
            let n = c.steps.len();
            let steps = if n == 1 { "step" } else { "steps" };
            format!("{router}canary, {n} {steps}")
        }
    }
}

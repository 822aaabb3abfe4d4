//! `canaryd rbac`: print the namespaced mode's RBAC for a set of policies
//! (the rules live in [`crate::k8s::rbac`]).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::k8s::lease::{DEFAULT_LEASE_NAME, DEFAULT_LEASE_NAMESPACE};
use crate::k8s::rbac::{self, Namespaced, DEFAULT_SERVICE_ACCOUNT};
use crate::policy;

/// Arguments of `canaryd rbac`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory (or file) of policy YAML files, one per service.
    #[arg(long)]
    pub policies: PathBuf,
    /// canaryd's ServiceAccount.
    #[arg(long, default_value = DEFAULT_SERVICE_ACCOUNT)]
    pub service_account: String,
    /// canaryd's namespace (ServiceAccount, Lease and alert record).
    #[arg(long, default_value = DEFAULT_LEASE_NAMESPACE)]
    pub namespace: String,
    /// Name of the leader-election Lease (as `canaryd run --lease-name`).
    #[arg(long, default_value = DEFAULT_LEASE_NAME)]
    pub lease_name: String,
}

/// Prints a Role and RoleBinding per namespace the policies name, plus the
/// Role for the Lease and alert record; policy errors on stderr and exit 1.
pub fn run(args: Args) -> ExitCode {
    let policies = match policy::load_paths(std::slice::from_ref(&args.policies)) {
        Ok(p) => p,
        Err(errors) => {
            let mut err = std::io::stderr().lock();
            for e in &errors {
                // Nothing sensible is left to do if stderr is gone.
                let _ = writeln!(err, "{e}");
            }
            return super::exit(super::EXIT_FAILED);
        }
    };
    let targets: BTreeSet<String> = policies.iter().map(|p| p.namespace.clone()).collect();
    let mode = Namespaced {
        service_account: args.service_account,
        namespace: args.namespace,
        lease_name: args.lease_name,
        targets,
    };
    let text = rbac::render_namespaced(&mode, &args.policies.display().to_string());
    match std::io::stdout().write_all(text.as_bytes()) {
        Ok(()) => super::exit(super::EXIT_OK),
        Err(_) => super::exit(super::EXIT_ERROR),
    }
}

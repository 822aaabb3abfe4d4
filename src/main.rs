//! canaryd command line: argument parsing and dispatch only.

use std::process::ExitCode;

use canaryd::cli;
use clap::{Parser, Subcommand};

/// Unattended progressive delivery for plain Kubernetes Deployments.
#[derive(Debug, Parser)]
#[command(name = "canaryd", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CANARYD_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate policy files and report every error.
    Check(cli::check::Args),
    /// Simulate a rollout of a policy in virtual time (no cluster needed).
    Simulate(cli::simulate::Args),
    /// Judge canary-vs-baseline observations and print the verdict as JSON.
    Judge(cli::judge::Args),
    /// Run the demo HTTP service with configurable errors and latency.
    DemoApp(cli::demo::AppArgs),
    /// Send demo load to one or more demo-app instances.
    DemoLoad(cli::demo::LoadArgs),
    /// Play the pods of a fake-node cluster with demo-apps (for scripts/demo).
    #[command(hide = true)]
    DemoPods(cli::demo_pods::Args),
    /// Run the daemon: watch managed Deployments and roll them out.
    Run(cli::run::Args),
    /// Show a running daemon's rollouts as a table.
    Status(cli::status::Args),
    /// Print namespaced RBAC (a Role per namespace the policies name) as YAML.
    Rbac(cli::rbac::Args),
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CANARYD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Check(args) => cli::check::run(args),
        Command::Simulate(args) => cli::simulate::run(args),
        Command::Judge(args) => cli::judge::run(args).await,
        Command::DemoApp(args) => cli::demo::run_app(args).await,
        Command::DemoLoad(args) => cli::demo::run_load(args).await,
        Command::DemoPods(args) => cli::demo_pods::run(args).await,
        Command::Run(args) => cli::run::run(args).await,
        Command::Status(args) => cli::status::run(args).await,
        Command::Rbac(args) => cli::rbac::run(args),
    }
}

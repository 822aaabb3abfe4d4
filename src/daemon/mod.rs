//! The daemon behind `canaryd run`. Loads policies (and reloads them when the
//! directory changes), serves HTTP, polls Prometheus for firing alerts, elects
//! a leader through a Lease and runs the controller until SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::alerts::poll::{self as alerts_poll, POLL_INTERVAL};
use crate::controller::{self, Context};
use crate::k8s::alert_record::{AlertRecordStore, RECORD_SUFFIX};
use crate::k8s::lease::{self, Elector, Leadership, LeaseConfig};
use crate::k8s::rate_limit::ApiRateLimit;
use crate::Error;
use reload::PolicyStore;
use server::ServerState;
use telemetry::Metrics;
use token::TokenFile;

pub mod notifier;
pub mod reload;
pub mod server;
pub mod telemetry;
pub mod token;

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| String::from("canaryd"));
    format!("{host}-{}", std::process::id())
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("canaryd run: {message}");
    crate::cli::exit(crate::cli::EXIT_ERROR)
}

/// The daemon's bearer tokens, checked before anything starts.
struct Tokens {
    alert: Option<Arc<TokenFile>>,
    read: Option<Arc<TokenFile>>,
}

impl Tokens {
    /// Reads the token files and refuses an exposed listener without one.
    fn open(args: &crate::cli::run::Args) -> Result<Self, String> {
        let open = |path: &Option<std::path::PathBuf>| {
            path.as_deref()
                .map(|p| TokenFile::open(p).map(Arc::new))
                .transpose()
                .map_err(|e| e.to_string())
        };
        let tokens = Tokens {
            alert: open(&args.alert_token_file)?,
            read: open(&args.read_token_file)?,
        };
        token::check_exposure(args.listen, tokens.alert.is_some(), args.no_alert_webhook)
            .map_err(|e| e.to_string())?;
        Ok(tokens)
    }
}

/// Follows rotations of the server's token files until `stop`.
fn follow_tokens(state: &ServerState, stop: &watch::Receiver<bool>) {
    for (what, token) in [("alert", &state.alert_token), ("read", &state.read_token)] {
        if let Some(token) = token.clone() {
            let stop = flagged(stop.clone());
            tokio::spawn(async move { token.follow(what, stop).await });
        }
    }
}

/// Starts the cluster-wide alert record: set on the server state before the
/// server starts, so no notification skips it, and watched until `stop`.
fn start_alert_record(
    client: &Client,
    args: &crate::cli::run::Args,
    state: &Arc<ServerState>,
    store: &PolicyStore,
    stop: &watch::Receiver<bool>,
) {
    let record = Arc::new(AlertRecordStore::new(
        client.clone(),
        &args.lease_namespace,
        &format!("{}{RECORD_SUFFIX}", args.lease_name),
        store.subscribe(),
    ));
    // Only set here, once.
    let _ = state.alert_record.set(record.clone());
    tokio::spawn(record.watch(state.clone(), flagged(stop.clone())));
}

/// Resolves once `rx` holds true.
async fn flagged(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Loads the policies and builds the shared state; an `Err` is the exit code.
fn prepare(args: &crate::cli::run::Args) -> Result<(Arc<ServerState>, Arc<PolicyStore>), ExitCode> {
    let tokens = Tokens::open(args).map_err(fail)?;
    let metrics = Metrics::new().map_err(|e| fail(format!("registering metrics: {e}")))?;
    let mut state = ServerState::new(metrics, None);
    state.alert_token = tokens.alert;
    state.read_token = tokens.read;
    let state = Arc::new(state);
    let store = Arc::new(PolicyStore::open(&args.policies).attach(state.clone()));
    let (policies, errors) = (store.current(), store.errors());
    if policies.is_empty() && !errors.is_empty() {
        for e in errors.iter() {
            eprintln!("{e}");
        }
        return Err(fail(Error::LoadPolicies(errors.to_vec())));
    }
    state
        .readiness
        .policies_loaded
        .store(true, Ordering::Relaxed);
    Ok((state, store))
}

/// Builds the Kubernetes client and checks that the API answers (a failure
/// there is only logged: readiness waits for it).
async fn connect(state: &ServerState, args: &crate::cli::run::Args) -> Result<Client, ExitCode> {
    let limit = ApiRateLimit {
        qps: args.kube_api_qps,
        burst: args.kube_api_burst,
    };
    let client = crate::k8s::client::client(limit).await.map_err(fail)?;
    match client.apiserver_version().await {
        Ok(v) => {
            state
                .readiness
                .kube_reachable
                .store(true, Ordering::Relaxed);
            tracing::info!(version = %v.git_version, "Kubernetes API reachable.");
        }
        Err(e) => tracing::warn!(error = %e, "Kubernetes API not reachable yet."),
    }
    Ok(client)
}

/// Marks leadership known (and the API reachable) once the first Lease attempt finished.
fn track_readiness(state: Arc<ServerState>, mut leader: watch::Receiver<Leadership>) {
    tokio::spawn(async move {
        if leader.wait_for(|l| l.is_known()).await.is_ok() {
            let readiness = &state.readiness;
            readiness.leadership_known.store(true, Ordering::Relaxed);
            readiness.kube_reachable.store(true, Ordering::Relaxed);
        }
    });
}

/// Reports a task that ended with an error (or panic); its exit code then.
fn ended<E: std::fmt::Display>(
    what: &str,
    result: Result<Result<(), E>, tokio::task::JoinError>,
) -> Option<ExitCode> {
    match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(fail(e)),
        Err(e) => Some(fail(format!("the {what} task failed: {e}"))),
    }
}

/// Waits for the controller (it ends on shutdown) while the lease task must
/// outlive it; then stops the lease (releasing it) and waits for the server.
async fn wait_and_stop(
    controller: impl std::future::Future<Output = ()>,
    mut lease_task: JoinHandle<crate::Result<()>>,
    lease_stop: watch::Sender<bool>,
    server_task: JoinHandle<crate::Result<()>>,
) -> ExitCode {
    tokio::pin!(controller);
    let lease_died = tokio::select! {
        _ = &mut controller => None,
        ended = &mut lease_task => Some(ended),
    };
    if let Some(ended) = lease_died {
        let why = match ended {
            Ok(Ok(())) => String::from("the lease task ended"),
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the lease task failed: {e}"),
        };
        return fail(format!("{why}; exiting"));
    }
    lease_stop.send_replace(true);
    let lease_code = ended("lease", lease_task.await);
    let server_code = ended("server", server_task.await);
    tracing::info!("Stopped.");
    server_code
        .or(lease_code)
        .unwrap_or_else(|| crate::cli::exit(crate::cli::EXIT_OK))
}

/// Runs the daemon until SIGTERM; exit code 0 after a clean shutdown.
///
/// Invalid policy files do not stop the daemon as long as one policy is
/// valid: they show in `/v1/rollouts` as `policyErrors` (and the previous
/// valid version of a file stays in force on reload), so one bad edit never
/// crash-loops every service. Only a start with no valid policy and errors
/// exits.
pub async fn run(
    args: crate::cli::run::Args,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> ExitCode {
    let (state, store) = match prepare(&args) {
        Ok(prepared) => prepared,
        Err(code) => return code,
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(source) => {
            return fail(Error::Serve {
                addr: args.listen.to_string(),
                source,
            })
        }
    };
    let client = match connect(&state, &args).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    tracing::info!(
        policies = store.current().len(),
        policy_errors = store.errors().len(),
        policy_path = %args.policies.display(),
        listen = %args.listen,
        identity = %identity,
        lease = %format!("{}/{}", args.lease_namespace, args.lease_name),
        "Starting."
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("Shutting down: finishing the current action.");
        stop_tx.send_replace(true);
    });
    start_alert_record(&client, &args, &state, &store, &stop_rx);
    follow_tokens(&state, &stop_rx);
    let server_task = tokio::spawn(server::serve(
        listener,
        state.clone(),
        flagged(stop_rx.clone()),
    ));

    let (leader_tx, leader_rx) = watch::channel(Leadership::Unknown);
    let (lease_stop_tx, lease_stop_rx) = watch::channel(false);
    let elector = Elector::new(
        client.clone(),
        LeaseConfig::new(&args.lease_namespace, &args.lease_name, &identity),
    );
    let lease_task = tokio::spawn(lease::run(elector, leader_tx, lease_stop_rx));
    track_readiness(state.clone(), leader_rx.clone());

    tokio::spawn(store.clone().run(flagged(stop_rx.clone())));
    tokio::spawn(alerts_poll::run(
        state.clone(),
        store.subscribe(),
        POLL_INTERVAL,
        flagged(stop_rx.clone()),
    ));
    let ctx = Arc::new(Context::new(
        client,
        store.subscribe(),
        state,
        leader_rx,
        &identity,
    ));
    let controller = controller::run(
        ctx,
        args.max_concurrent_reconciles,
        flagged(stop_rx.clone()),
    );
    wait_and_stop(controller, lease_task, lease_stop_tx, server_task).await
}

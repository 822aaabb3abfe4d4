//! `canaryd run` as a child process, shared by the tests that drive the real
//! daemon (tests/cluster/daemon.rs, tests/cluster/e2e.rs, tests/cluster/alertmanager.rs).
//!
//! Include with `#[path = "support/daemon.rs"] mod daemon;` next to
//! `mod prom;` (for free ports). A test file adds its own methods (readiness,
//! resource usage) in an `impl daemon::Daemon` block of its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use canaryd::rollout::RolloutState;
use k8s_openapi::api::apps::v1::Deployment;

/// `canaryd run` as a child process; killed on drop.
pub struct Daemon {
    pub child: Option<Child>,
    pub port: u16,
    pub log: PathBuf,
    #[allow(dead_code)] // read only by tests/cluster/daemon.rs
    pub identity: String,
}

pub struct DaemonOptions<'a> {
    pub policies: &'a Path,
    pub kubeconfig: PathBuf,
    pub lease_namespace: &'a str,
    /// `--lease-name`; the daemon's default when `None`.
    pub lease_name: Option<&'a str>,
    pub identity: &'a str,
    pub token_file: Option<&'a Path>,
    /// `CANARYD_LOG_FORMAT=json` when set; the daemon's default otherwise.
    pub json_log: bool,
    /// Where the log file `canaryd-<identity>-<port>.log` goes.
    pub log_dir: &'a Path,
}

impl Daemon {
    pub fn start(o: &DaemonOptions) -> Daemon {
        Daemon::start_with_env(o, &[])
    }

    /// [`Daemon::start`] with extra environment variables (fault hooks).
    pub fn start_with_env(o: &DaemonOptions, env: &[(&str, &str)]) -> Daemon {
        let port = super::prom::free_port();
        let log = o.log_dir.join(format!("canaryd-{}-{port}.log", o.identity));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_canaryd"));
        cmd.arg("run")
            .arg("--policies")
            .arg(o.policies)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--lease-namespace")
            .arg(o.lease_namespace)
            .arg("--identity")
            .arg(o.identity)
            .env("KUBECONFIG", &o.kubeconfig)
            .env("CANARYD_LOG", "info,canaryd=debug")
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        if let Some(name) = o.lease_name {
            cmd.arg("--lease-name").arg(name);
        }
        if let Some(t) = o.token_file {
            cmd.arg("--alert-token-file").arg(t);
        }
        if o.json_log {
            cmd.env("CANARYD_LOG_FORMAT", "json");
        }
        cmd.envs(env.iter().copied());
        let child = cmd.spawn().expect("start canaryd run");
        Daemon {
            child: Some(child),
            port,
            log,
            identity: o.identity.to_string(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 15 lines of the log.
    pub fn tail(&self) -> String {
        tail(&self.log_text(), 15)
    }

    /// `GET /v1/rollouts` as JSON.
    #[allow(dead_code)] // tests/cluster/daemon.rs does not read the board
    pub async fn board(&self) -> serde_json::Value {
        reqwest::get(format!("{}/v1/rollouts", self.url()))
            .await
            .expect("GET /v1/rollouts")
            .json()
            .await
            .expect("JSON board")
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit.
    #[allow(dead_code)] // tests/cluster/alertmanager.rs never stops it gracefully
    pub fn terminate(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .expect("kill -TERM");
        assert!(sent.success());
        c.wait().expect("wait for canaryd")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The rollout state canaryd wrote on `d` (the default when none).
pub fn state_of(d: &Deployment) -> RolloutState {
    canaryd::k8s::target::annotation(d, canaryd::k8s::target::STATE_ANNOTATION)
        .map(|t| RolloutState::from_json(t).expect("valid state"))
        .unwrap_or_default()
}

/// Creates the policy directory `dir` holding `text` as `file`; returns `dir`.
pub fn write_policies(dir: PathBuf, file: &str, text: &str) -> PathBuf {
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join(file), text).unwrap();
    dir
}

//! Test support: a real Alertmanager on loopback, and a real Prometheus with
//! an alerting rule that sends to it.
//!
//! Include it together with `prom.rs`, whose binary lookup and free-port
//! helpers it uses:
//!
//! ```ignore
//! #[path = "support/prom.rs"]
//! mod prom;
//! #[path = "support/alertmanager.rs"]
//! mod alertmanager;
//! ```
//!
//! [`Alertmanager::start`] runs `prometheus-alertmanager` (Debian package
//! `prometheus-alertmanager`; `alertmanager` elsewhere) on a free `127.0.0.1`
//! port with clustering off, its own temporary storage and a generated config
//! whose only receiver is a webhook (bearer credentials from a file or
//! inline) with 1 s grouping. [`AlertingProm::start`] runs Prometheus with one
//! rule file and that Alertmanager as its alerting target. Both are killed on
//! drop, so a failing test never leaves them behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::prom::{
    free_port, http_get_status, prometheus_binary, scrape_config, Target, SCRAPE_INTERVAL,
};

/// How long Alertmanager or Prometheus may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between readiness probes.
pub const READY_POLL: Duration = Duration::from_millis(200);
/// Timeout of one probe connection.
/// `group_wait` and `group_interval` of the generated route: notifications go
/// out (and resolved ones follow) within about a second.
pub const GROUP_INTERVAL: &str = "1s";
/// `repeat_interval` of the generated route.
pub const REPEAT_INTERVAL: &str = "1m";
/// How often Prometheus re-sends a firing alert to Alertmanager (default 1m).
pub const RESEND_DELAY: &str = "2s";

/// How the webhook authenticates to canaryd.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// `http_config.authorization.credentials_file`: the token in a file.
    File(PathBuf),
    /// `http_config.authorization.credentials`: the token inline.
    Inline(String),
}

/// The `alertmanager` binary: `prometheus-alertmanager` (Debian) or
/// `alertmanager` on `PATH`, else in `/usr/bin`. Panics with install
/// instructions when absent.
pub fn alertmanager_binary() -> PathBuf {
    let dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    ["prometheus-alertmanager", "alertmanager"]
        .iter()
        .flat_map(|name| {
            dirs.iter()
                .map(move |d| d.join(name))
                .chain([Path::new("/usr/bin").join(name)])
        })
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "Alertmanager not found on PATH or in /usr/bin; run scripts/test, which installs it \
                 (Debian: apt-get install -y prometheus-alertmanager)"
            )
        })
}

/// A running Alertmanager; killed on drop.
pub struct Alertmanager {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts Alertmanager with one webhook receiver posting to `webhook_url`
    /// with `credentials`, and waits until it is ready.
    pub fn start(webhook_url: &str, credentials: &Credentials) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let config = dir.path().join("alertmanager.yml");
        write_file(&config, &config_text(webhook_url, credentials));
        let log = dir.path().join("alertmanager.log");
        let port = free_port();
        let out = open_log(&log);
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("log handle: {e}"));
        let child = Command::new(alertmanager_binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // Empty disables clustering: no gossip port, no peers to wait for.
            .arg("--cluster.listen-address=")
            .arg("--log.level=debug")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting alertmanager: {e}"));
        let mut am = Alertmanager {
            child: Some(child),
            port,
            log,
            _dir: dir,
        };
        let (child, log) = (&mut am.child, &am.log);
        wait_ready("alertmanager", port, child, log);
        am
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `host:port`, as Prometheus's `alerting` config wants it.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Posts alerts to Alertmanager's own API (`POST /api/v2/alerts`), as
    /// Prometheus would; each alert is `{"labels": {...}, ...}`.
    pub async fn post_alerts(&self, alerts: &[serde_json::Value]) {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/v2/alerts", self.url()))
            .json(alerts)
            .send()
            .await
            .unwrap_or_else(|e| panic!("posting alerts to alertmanager: {e}"));
        let status = resp.status();
        assert!(
            status.is_success(),
            "alertmanager refused alerts: {status} {}",
            resp.text().await.unwrap_or_default()
        );
    }

    /// Sum of a counter in Alertmanager's `/metrics` over series whose labels
    /// contain `label_filter` (e.g. `integration="webhook"`).
    pub async fn counter(&self, name: &str, label_filter: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.url()))
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("alertmanager /metrics: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("alertmanager /metrics body: {e}"));
        sum_counter(&text, name, label_filter)
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// A Prometheus scraping `targets` with one rule file, sending alerts to one
/// Alertmanager; killed on drop.
pub struct AlertingProm {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// One alerting rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `alert:` name.
    pub name: String,
    /// PromQL expression.
    pub expr: String,
    /// `for:` duration (e.g. `0s`).
    pub for_: String,
    /// Extra labels on the alert.
    pub labels: Vec<(String, String)>,
}

impl AlertingProm {
    /// Starts Prometheus (1 s scrape and rule evaluation) with `rules`,
    /// sending to the Alertmanager at `alertmanager_addr`; waits until ready.
    pub fn start(targets: &[Target], rules: &[Rule], alertmanager_addr: &str) -> AlertingProm {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let rules_file = dir.path().join("rules.yml");
        write_file(&rules_file, &rules_text(rules));
        let config = dir.path().join("prometheus.yml");
        write_file(
            &config,
            &prometheus_config(targets, &rules_file, alertmanager_addr),
        );
        let log = dir.path().join("prometheus.log");
        let port = free_port();
        let out = open_log(&log);
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("log handle: {e}"));
        let child = Command::new(prometheus_binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--rules.alert.resend-delay={RESEND_DELAY}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting prometheus: {e}"));
        let mut prom = AlertingProm {
            child: Some(child),
            port,
            log,
            _dir: dir,
        };
        let (child, log) = (&mut prom.child, &prom.log);
        wait_ready("prometheus", port, child, log);
        prom
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AlertingProm {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// The generated Alertmanager config (JSON is valid YAML).
pub fn config_text(webhook_url: &str, credentials: &Credentials) -> String {
    let authorization = match credentials {
        Credentials::File(path) => {
            serde_json::json!({"type": "Bearer", "credentials_file": path.display().to_string()})
        }
        Credentials::Inline(token) => serde_json::json!({"type": "Bearer", "credentials": token}),
    };
    serde_json::json!({
        "route": {
            "receiver": "canaryd",
            "group_by": ["alertname", "service"],
            "group_wait": GROUP_INTERVAL,
            "group_interval": GROUP_INTERVAL,
            "repeat_interval": REPEAT_INTERVAL,
        },
        "receivers": [{
            "name": "canaryd",
            "webhook_configs": [{
                "url": webhook_url,
                "send_resolved": true,
                "max_alerts": 0,
                "http_config": {"authorization": authorization},
            }],
        }],
    })
    .to_string()
}

fn rules_text(rules: &[Rule]) -> String {
    let rules: Vec<serde_json::Value> = rules
        .iter()
        .map(|r| {
            let labels: serde_json::Map<String, serde_json::Value> = r
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            serde_json::json!({"alert": r.name, "expr": r.expr, "for": r.for_, "labels": labels})
        })
        .collect();
    serde_json::json!({"groups": [{"name": "canaryd-test", "interval": SCRAPE_INTERVAL, "rules": rules}]})
        .to_string()
}

fn prometheus_config(targets: &[Target], rules_file: &Path, alertmanager_addr: &str) -> String {
    let mut config = scrape_config(targets);
    config["rule_files"] = serde_json::json!([rules_file.display().to_string()]);
    config["alerting"] = serde_json::json!({
        "alertmanagers": [{"static_configs": [{"targets": [alertmanager_addr]}]}],
    });
    config.to_string()
}

/// Sums `name{...}` samples whose label text contains `label_filter`.
fn sum_counter(text: &str, name: &str, label_filter: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            labels
                .contains(label_filter)
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn open_log(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn wait_ready(what: &str, port: u16, child: &mut Option<Child>, log: &Path) {
    let deadline = Instant::now() + READY_TIMEOUT;
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    loop {
        if http_get_status(port, "/-/ready") == Some(200) {
            return;
        }
        if let Some(c) = child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("{what} exited with {status}:\n{}", log_text());
            }
        }
        if Instant::now() > deadline {
            panic!("{what} not ready after {READY_TIMEOUT:?}:\n{}", log_text());
        }
        std::thread::sleep(READY_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_over_matching_series() {
        let text = "# HELP x\n\
            alertmanager_notifications_failed_total{integration=\"webhook\"} 2\n\
            alertmanager_notifications_failed_total{integration=\"email\"} 5\n\
            alertmanager_notifications_failed_total{integration=\"webhook\",reason=\"other\"} 1\n\
            alertmanager_notifications_total 9\n";
        assert_eq!(
            sum_counter(
                text,
                "alertmanager_notifications_failed_total",
                "integration=\"webhook\""
            ),
            3.0
        );
        assert_eq!(
            sum_counter(text, "alertmanager_notifications_total", ""),
            9.0
        );
    }
}

//! Test support: a real Prometheus server on loopback.
//!
//! Include it from a test file with
//!
//! ```ignore
//! #[path = "support/prom.rs"]
//! mod prom;
//! ```
//!
//! [`Prom::start`] runs the `prometheus` binary (Debian package `prometheus`,
//! installed by `scripts/test`) on a free `127.0.0.1` port with its own
//! temporary storage and a generated config (1 s scrape interval, one static
//! target group per target carrying `namespace` and `pod` labels). It never
//! touches a system Prometheus. Dropping [`Prom`] kills the process, so a
//! failing test never leaves it behind.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long Prometheus may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between readiness probes.
pub const READY_POLL: Duration = Duration::from_millis(200);
/// Timeout of one probe connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Scrape interval written into the generated config.
pub const SCRAPE_INTERVAL: &str = "1s";
/// [`SCRAPE_INTERVAL`] in seconds.
pub const SCRAPE_INTERVAL_SECS: f64 = 1.0;

/// A scrape target and the labels Prometheus attaches to its series.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` of the `/metrics` endpoint.
    pub addr: SocketAddr,
    /// `namespace` label.
    pub namespace: String,
    /// `pod` label.
    pub pod: String,
}

/// A running (or stopped) Prometheus; killed on drop.
pub struct Prom {
    child: Option<Child>,
    port: u16,
    storage: PathBuf,
    config: PathBuf,
    log: PathBuf,
    web_config: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

/// The `prometheus` binary: on `PATH`, else `/usr/bin/prometheus`.
/// Panics with install instructions when absent.
pub fn prometheus_binary() -> PathBuf {
    find_binary("prometheus")
}

/// The `promtool` binary (same Debian package as `prometheus`).
pub fn promtool_binary() -> PathBuf {
    find_binary("promtool")
}

fn find_binary(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin").join(name)])
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` not found on PATH or in /usr/bin; run scripts/test, which installs it \
                 (Debian: apt-get install -y prometheus)"
            )
        })
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

impl Prom {
    /// Starts Prometheus scraping `targets`, with fresh temporary storage,
    /// and waits until it is ready.
    pub fn start(targets: &[Target]) -> Prom {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let storage = dir.path().join("data");
        let mut prom = Prom::start_on(dir.path(), &storage, targets);
        prom._dir = Some(dir);
        prom
    }

    /// Starts Prometheus on an existing storage directory (e.g. one filled by
    /// `promtool tsdb create-blocks-from openmetrics`); `work` holds the
    /// config and log. Waits until ready.
    pub fn start_on(work: &Path, storage: &Path, targets: &[Target]) -> Prom {
        let config = work.join("prometheus.yml");
        std::fs::write(&config, scrape_config(targets).to_string())
            .unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        let mut prom = Prom {
            child: None,
            port: free_port(),
            storage: storage.to_path_buf(),
            config,
            log: work.join("prometheus.log"),
            web_config: None,
            _dir: None,
        };
        prom.spawn();
        prom
    }

    /// Like [`Prom::start`] with a `--web.config.file` (TLS, basic auth).
    /// Readiness is then only "accepts TCP connections": probe it over TLS
    /// with your own client.
    pub fn start_with_web_config(targets: &[Target], web_config: &str) -> Prom {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, scrape_config(targets).to_string())
            .unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        let web = dir.path().join("web.yml");
        std::fs::write(&web, web_config)
            .unwrap_or_else(|e| panic!("writing {}: {e}", web.display()));
        let mut prom = Prom {
            child: None,
            port: free_port(),
            storage: dir.path().join("data"),
            config,
            log: dir.path().join("prometheus.log"),
            web_config: Some(web),
            _dir: Some(dir),
        };
        prom.spawn();
        prom
    }

    /// HTTPS base URL (with a TLS web config).
    pub fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Storage directory (`--storage.tsdb.path`).
    pub fn storage(&self) -> &Path {
        &self.storage
    }

    /// Kills the process (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Prometheus again on the same port and storage; waits until ready.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The server's log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.log.display()));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("log handle: {e}"));
        let child = Command::new(prometheus_binary())
            .arg(format!("--config.file={}", self.config.display()))
            .arg(format!("--storage.tsdb.path={}", self.storage.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--storage.tsdb.retention.time=30d")
            .arg("--log.level=warn")
            .args(
                self.web_config
                    .iter()
                    .map(|w| format!("--web.config.file={}", w.display())),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting prometheus: {e}"));
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let ready = if self.web_config.is_some() {
                TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], self.port)),
                    PROBE_TIMEOUT,
                )
                .is_ok()
            } else {
                http_get_status(self.port, "/-/ready") == Some(200)
            };
            if ready {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("prometheus exited with {status}:\n{}", self.log_text());
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "prometheus not ready after {READY_TIMEOUT:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(READY_POLL);
        }
    }
}

impl Drop for Prom {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Config scraping `targets` every [`SCRAPE_INTERVAL`] with their labels.
/// Written as JSON, which is valid YAML, so there are no quoting pitfalls.
pub fn scrape_config(targets: &[Target]) -> serde_json::Value {
    let groups: Vec<serde_json::Value> = targets
        .iter()
        .map(|t| {
            serde_json::json!({
                "targets": [t.addr.to_string()],
                "labels": {"namespace": t.namespace, "pod": t.pod},
            })
        })
        .collect();
    serde_json::json!({
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": SCRAPE_INTERVAL,
        },
        "scrape_configs": [{
            "job_name": "demo",
            "honor_labels": true,
            "static_configs": groups,
        }],
    })
}

/// Status code of `GET path` on `127.0.0.1:port`, or `None` if it did not answer.
pub fn http_get_status(port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 16];
    let n = stream.read(&mut head).ok()?;
    let text = std::str::from_utf8(&head[..n]).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// A throw-away PKI made with the `openssl` command in `dir`: returns
/// `(ca.pem, server.pem, server.key)`, the server certificate valid for
/// `IP:127.0.0.1` and signed by the CA.
pub fn make_test_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = dir.join("ca.key");
    let ca = dir.join("ca.pem");
    let key = dir.join("server.key");
    let csr = dir.join("server.csr");
    let cert = dir.join("server.pem");
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap_or_else(|e| panic!("writing {}: {e}", ext.display()));
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let p = |x: &PathBuf| x.display().to_string();
    let steps: Vec<Vec<String>> = vec![
        [
            &["req", "-x509"][..],
            &ec[..],
            &["-days", "2", "-subj", "/CN=canaryd test CA"],
        ]
        .concat()
        .iter()
        .map(|s| s.to_string())
        .chain(["-keyout".into(), p(&ca_key), "-out".into(), p(&ca)])
        .collect(),
        [&["req"][..], &ec[..], &["-subj", "/CN=127.0.0.1"]]
            .concat()
            .iter()
            .map(|s| s.to_string())
            .chain(["-keyout".into(), p(&key), "-out".into(), p(&csr)])
            .collect(),
        ["x509", "-req", "-days", "2", "-in"]
            .iter()
            .map(|s| s.to_string())
            .chain([
                p(&csr),
                "-CA".into(),
                p(&ca),
                "-CAkey".into(),
                p(&ca_key),
                "-CAcreateserial".into(),
                "-extfile".into(),
                p(&ext),
                "-out".into(),
                p(&cert),
            ])
            .collect(),
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("running openssl (Debian package openssl): {e}"));
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (ca, cert, key)
}

//! Test support: plays the pods of a namespace.
//!
//! Include it (with `cluster.rs` and `prom.rs`) from a test file with
//!
//! ```ignore
//! #[path = "support/pods.rs"]
//! mod pods;
//! ```
//!
//! KWOK pods run no containers, so metrics for canary-vs-baseline analysis
//! come from [`canaryd::demo::pods`] (also behind `canaryd demo-pods`): a
//! [`PodPlayer`] serves a demo-app per Ready pod the test's `behaviour`
//! function accepts, labelled with that pod's name, sends it steady load and
//! lists it in a Prometheus file_sd file. [`start_prometheus`] starts a real
//! Prometheus (the `prom.rs` harness) that scrapes whatever that file lists.

use std::path::Path;

use canaryd::demo::pods;
pub use canaryd::demo::pods::{image_of, role_of, Behaviour, BehaviourFn, PodPlayer};

use super::prom::Prom;

/// Starts Prometheus scraping the targets listed in `sd_file` (file_sd, 1 s
/// refresh). `sd_file` is created empty if missing.
pub fn start_prometheus(sd_file: &Path) -> Prom {
    if !sd_file.exists() {
        pods::write_atomically(sd_file, "[]")
            .unwrap_or_else(|e| panic!("writing {}: {e}", sd_file.display()));
    }
    // The harness writes a static config; replace it with a file_sd one and
    // restart on the same port and (still empty) storage.
    let mut prom = Prom::start(&[]);
    let config = prom
        .storage()
        .parent()
        .map(|d| d.join("prometheus.yml"))
        .unwrap_or_else(|| panic!("prometheus storage has no parent"));
    let text = serde_json::json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{
            "job_name": "pods",
            "honor_labels": true,
            "file_sd_configs": [{"files": [sd_file.display().to_string()], "refresh_interval": "1s"}],
        }],
    });
    std::fs::write(&config, text.to_string()).unwrap_or_else(|e| panic!("writing config: {e}"));
    prom.restart();
    prom
}

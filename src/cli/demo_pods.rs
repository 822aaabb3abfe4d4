//! `canaryd demo-pods` (hidden): plays the pods of a fake-node cluster with
//! demo-apps and lists them for Prometheus (see [`crate::demo::pods`]). Used by
//! `scripts/demo`; each pod's error rate is chosen by its image tag.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::Client;

use crate::demo::pods::{image_of, image_tag, Behaviour, PodPlayer};

/// Arguments of `canaryd demo-pods`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Namespace whose pods are played.
    #[arg(long)]
    pub namespace: String,
    /// Label selector of the pods to play, e.g. `app=myapp` (empty: all).
    #[arg(long, default_value = "")]
    pub selector: String,
    /// Prometheus file_sd file listing the played pods (replaced atomically).
    #[arg(long)]
    pub sd_file: PathBuf,
    /// Requests per second each played pod receives.
    #[arg(long, default_value_t = 40.0)]
    pub rps: f64,
    /// Error rate of pods whose image tag has no `--tag-error-rate`.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Error rate by image tag, e.g. `v3=0.1`; repeatable.
    #[arg(long = "tag-error-rate", value_parser = parse_tag_rate)]
    pub tag_error_rates: Vec<(String, f64)>,
    /// Median latency in milliseconds (recorded, not slept).
    #[arg(long, default_value_t = 20)]
    pub latency_ms: u64,
}

/// Parses `TAG=RATE` with a rate in `0..=1`.
pub fn parse_tag_rate(text: &str) -> Result<(String, f64), String> {
    let (tag, rate) = text
        .split_once('=')
        .ok_or_else(|| format!("expected TAG=RATE, found {text:?}"))?;
    let rate: f64 = rate.parse().map_err(|e| format!("{text:?}: rate: {e}"))?;
    if tag.is_empty() || !(0.0..=1.0).contains(&rate) {
        return Err(format!("{text:?}: expected a tag and a rate in 0..=1"));
    }
    Ok((tag.to_string(), rate))
}

/// Plays pods until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> ExitCode {
    if !(0.0..=1.0).contains(&args.error_rate) || args.rps <= 0.0 {
        eprintln!("canaryd demo-pods: --error-rate must be in 0..=1 and --rps above 0");
        return super::exit(super::EXIT_ERROR);
    }
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("canaryd demo-pods: connecting to Kubernetes: {e}");
            return super::exit(super::EXIT_ERROR);
        }
    };
    let rates: BTreeMap<String, f64> = args.tag_error_rates.into_iter().collect();
    let (default_rate, latency_ms) = (args.error_rate, args.latency_ms);
    let behaviour = move |pod: &Pod| {
        let image = image_of(pod);
        let tag = image_tag(&image).to_string();
        Some(Behaviour {
            error_rate: rates.get(&tag).copied().unwrap_or(default_rate),
            version: tag,
            latency_ms,
        })
    };
    let api: Api<Pod> = Api::namespaced(client, &args.namespace);
    let _player = PodPlayer::watch(
        api,
        &args.selector,
        &args.sd_file,
        args.rps,
        None,
        Arc::new(behaviour),
    );
    tracing::info!(
        namespace = %args.namespace,
        selector = %args.selector,
        sd_file = %args.sd_file.display(),
        rps = args.rps,
        "Playing pods."
    );
    super::termination().await;
    tracing::info!("Stopped playing pods.");
    super::exit(super::EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_rates_parse_and_reject_nonsense() {
        assert_eq!(parse_tag_rate("v3=0.1"), Ok((String::from("v3"), 0.1)));
        assert!(parse_tag_rate("v3").is_err());
        assert!(parse_tag_rate("=0.1").is_err());
        assert!(parse_tag_rate("v3=1.5").is_err());
        assert!(parse_tag_rate("v3=x").is_err());
    }
}

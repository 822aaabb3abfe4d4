//! `canaryd judge`: judge a JSON document of observations, or a past window in Prometheus.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::judge::document::{judge_document, parse_document, MAX_DOCUMENT_BYTES};
use crate::metrics::range::{judge_range, parse_time, RangeReport};
use crate::metrics::PrometheusSource;
use crate::Error;

/// Arguments of `canaryd judge`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSON observations document (`-` or absent: stdin). See docs/judge.md.
    pub input: Option<PathBuf>,
    /// Judge a past release from this Prometheus instead of a JSON document.
    #[arg(long, requires_all = ["policy", "from", "to"])]
    pub prometheus: Option<String>,
    /// Policy whose metrics and settings to use with `--prometheus`.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Start of the analysis (RFC 3339 or Unix seconds), with `--prometheus`.
    #[arg(long)]
    pub from: Option<String>,
    /// End of the analysis (RFC 3339 or Unix seconds), with `--prometheus`.
    #[arg(long)]
    pub to: Option<String>,
}

/// Runs `canaryd judge`.
pub async fn run(args: Args) -> ExitCode {
    if args.prometheus.is_some() {
        run_range(args).await
    } else {
        run_document(args)
    }
}

/// Judges the JSON document named by `args.input` (or stdin).
fn run_document(args: Args) -> ExitCode {
    let (name, text) = match read_input(args.input.as_deref()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("canaryd judge: {e}");
            return super::exit(super::EXIT_ERROR);
        }
    };
    let doc = match parse_document(&text) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("canaryd judge: {name}: {e}");
            return super::exit(super::EXIT_ERROR);
        }
    };
    let verdict = judge_document(&doc);
    match serde_json::to_string_pretty(&verdict) {
        Ok(s) => println!("{s}"),
        Err(e) => {
            eprintln!(
                "canaryd judge: {}",
                Error::WriteOutput(std::io::Error::other(e))
            );
            return super::exit(super::EXIT_ERROR);
        }
    }
    super::verdict_exit(verdict.decision)
}

fn read_input(path: Option<&std::path::Path>) -> Result<(String, String), Error> {
    let (name, reader): (String, Box<dyn Read>) = match path {
        None => ("<stdin>".into(), Box::new(std::io::stdin())),
        Some(p) if p.as_os_str() == "-" => ("<stdin>".into(), Box::new(std::io::stdin())),
        Some(p) => {
            let f = std::fs::File::open(p).map_err(|source| Error::ReadInput {
                path: p.display().to_string(),
                source,
            })?;
            (p.display().to_string(), Box::new(f))
        }
    };
    let mut bytes = Vec::new();
    reader
        .take(MAX_DOCUMENT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| Error::ReadInput {
            path: name.clone(),
            source,
        })?;
    if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(Error::ParseJudgeInput(format!(
            "{name}: larger than {MAX_DOCUMENT_BYTES} bytes"
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| Error::ParseJudgeInput(format!("{name}: not UTF-8: {e}")))?;
    Ok((name, text))
}

/// Judges `--from`..`--to` from Prometheus as the daemon would have.
async fn run_range(args: Args) -> ExitCode {
    match range_report(&args).await {
        Ok(report) => {
            for e in &report.timeline {
                let what = e
                    .decision
                    .map(|d| format!("{d:?}"))
                    .unwrap_or_else(|| "hold".into());
                eprintln!(
                    "window {:>3} [{}..{}] {what}: {}",
                    e.window, e.from, e.to, e.reason
                );
            }
            match serde_json::to_string_pretty(&report) {
                Ok(json) => println!("{json}"),
                Err(e) => {
                    eprintln!("canaryd judge: {e}");
                    return super::exit(super::EXIT_ERROR);
                }
            }
            super::verdict_exit(report.verdict.decision)
        }
        Err(e) => {
            eprintln!("canaryd judge: {e}");
            super::exit(super::EXIT_ERROR)
        }
    }
}

async fn range_report(args: &Args) -> Result<RangeReport, String> {
    let (Some(url), Some(policy_path), Some(from), Some(to)) =
        (&args.prometheus, &args.policy, &args.from, &args.to)
    else {
        return Err("--prometheus needs --policy, --from and --to".into());
    };
    let mut policy = crate::policy::load_file(policy_path).map_err(|e| e.to_string())?;
    policy.analysis.prometheus.url = url.clone();
    let from = parse_time(from).map_err(|e| format!("--from: {e}"))?;
    let to = parse_time(to).map_err(|e| format!("--to: {e}"))?;
    let source = PrometheusSource::new(&policy.analysis.prometheus).map_err(|e| e.to_string())?;
    judge_range(&source, &policy, policy_path, from, to).await
}

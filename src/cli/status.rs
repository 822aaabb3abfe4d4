//! `canaryd status`: the daemon's rollout board as a table.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use crate::controller::record::{decision_label, phase_name};
use crate::daemon::server::{ServiceStatus, StatusBoard};
use crate::judge::Verdict;
use crate::rollout::Phase;
use crate::Error;

/// Pause between refreshes with `--watch`.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// Timeout of one fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest verdict reason shown before it is cut.
const MAX_REASON: usize = 120;

/// Arguments of `canaryd status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of a running `canaryd run`.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Refresh every two seconds until interrupted.
    #[arg(long)]
    pub watch: bool,
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<StatusBoard, Error> {
    let err = |message: String| Error::FetchStatus {
        url: url.to_string(),
        message,
    };
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| err(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(err(format!("HTTP {}", resp.status())));
    }
    resp.json().await.map_err(|e| err(e.to_string()))
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(3)).collect();
    out.push_str("...");
    out
}

/// Column titles of the table.
const HEADER: [&str; 6] = [
    "SERVICE",
    "DEPLOYMENT",
    "PHASE",
    "STEP",
    "ALERTS",
    "LAST VERDICT",
];

/// A missing value in the table.
const NONE: &str = "-";

fn verdict_cell(verdict: Option<&Verdict>) -> String {
    let Some(v) = verdict else {
        return NONE.to_string();
    };
    // Reasons usually start with the decision already.
    let decision = decision_label(v.decision);
    let prefix = format!("{decision}: ");
    let reason = v.reason.strip_prefix(&prefix).unwrap_or(&v.reason);
    format!("{decision}: {}", cut(reason, MAX_REASON))
}

fn row(r: &ServiceStatus) -> [String; 6] {
    let step = r
        .step
        .map_or_else(|| NONE.to_string(), |s| (s + 1).to_string());
    let alerts = if r.firing_alerts.is_empty() {
        NONE.to_string()
    } else {
        r.firing_alerts.join(",")
    };
    [
        r.service.clone(),
        format!("{}/{}", r.namespace, r.deployment),
        r.phase.clone(),
        step,
        alerts,
        verdict_cell(r.last_verdict.as_ref()),
    ]
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn table(rows: &[[String; 6]]) -> String {
    let mut widths = HEADER.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(HEADER);
    for row in rows {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    out
}

/// `title` over one indented line per item, or nothing without items.
fn section(title: &str, lines: impl Iterator<Item = String>) -> String {
    let lines: String = lines.map(|l| format!("  {l}\n")).collect();
    if lines.is_empty() {
        return String::new();
    }
    format!("\n{title}\n{lines}")
}

/// `service: text` for each rollout with `field` set.
fn per_service<'a>(
    board: &'a StatusBoard,
    field: impl Fn(&'a ServiceStatus) -> Option<&'a str> + 'a,
) -> impl Iterator<Item = String> + 'a {
    board
        .rollouts
        .iter()
        .filter_map(move |r| Some(format!("{}: {}", r.service, field(r)?)))
}

/// Renders a `/v1/rollouts` document as a table plus policy errors (pure).
pub fn render(board: &StatusBoard) -> String {
    let rows: Vec<[String; 6]> = board.rollouts.iter().map(row).collect();
    let mut out = table(&rows);
    if rows.is_empty() {
        out.push_str("(no managed rollouts yet)\n");
    }
    let last_errors = per_service(board, |r| r.last_error.as_deref());
    out.push_str(&section("LAST ERRORS (retried)", last_errors));
    let failing = per_service(board, |r| r.failing_action.as_deref());
    out.push_str(&section("FAILING ACTIONS (backing off)", failing));
    let stopped = per_service(board, |r| {
        let failed = r.phase == phase_name(&Phase::Failed);
        failed.then(|| r.reason.as_deref().unwrap_or(NONE))
    });
    out.push_str(&section("FAILED (needs a human)", stopped));
    out.push_str(&section(
        "POLICY ERRORS",
        board.policy_errors.iter().cloned(),
    ));
    out
}

/// Prints the board once, or every [`WATCH_INTERVAL`] with `--watch`.
pub async fn run(args: Args) -> ExitCode {
    let url = format!("{}/v1/rollouts", args.url.trim_end_matches('/'));
    let client = match reqwest::Client::builder().timeout(FETCH_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("canaryd status: {e}");
            return super::exit(super::EXIT_ERROR);
        }
    };
    let tty = std::io::stdout().is_terminal();
    loop {
        match fetch(&client, &url).await {
            Ok(board) => {
                if args.watch && tty {
                    // Clear the screen so the table updates in place.
                    print!("\x1b[2J\x1b[H");
                }
                print!("{}", render(&board));
            }
            Err(e) if args.watch => eprintln!("canaryd status: {e}"),
            Err(e) => {
                eprintln!("canaryd status: {e}");
                return super::exit(super::EXIT_ERROR);
            }
        }
        if !args.watch {
            return super::exit(super::EXIT_OK);
        }
        if !tty {
            println!();
        }
        tokio::select! {
            _ = tokio::time::sleep(WATCH_INTERVAL) => {}
            _ = tokio::signal::ctrl_c() => return super::exit(super::EXIT_OK),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_a_readable_table() {
        let board = json!({
            "rollouts": [{
                "service": "shop", "namespace": "prod", "deployment": "shop",
                "phase": "Progressing", "step": 1,
                "lastVerdict": {"decision": "continue", "reason": "errors 0.1% vs 0.1% (e=1.2)"},
                "firingAlerts": []
            }, {
                "service": "api", "namespace": "prod", "deployment": "api",
                "phase": "Progressing", "step": 0,
                "lastVerdict": {"decision": "continue", "reason": "continue: errors: e=0.5/40"},
                "firingAlerts": []
            }, {
                "service": "web", "namespace": "prod", "deployment": "web-deploy",
                "phase": "RolledBack", "step": null, "lastVerdict": null,
                "firingAlerts": ["HighErrorRate"],
                "lastError": "updating Deployment prod/web-deploy: Forbidden"
            }],
            "policyErrors": ["policies/x.yaml:3:1: alpha: must be below 0.5"]
        });
        let out = render(&serde_json::from_value(board).unwrap());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "SERVICE  DEPLOYMENT       PHASE        STEP  ALERTS         LAST VERDICT"
        );
        assert_eq!(
            lines[1],
            "shop     prod/shop        Progressing  2     -              continue: errors 0.1% vs 0.1% (e=1.2)"
        );
        assert_eq!(
            lines[2],
            "api      prod/api         Progressing  1     -              continue: errors: e=0.5/40",
            "the decision is not repeated"
        );
        assert_eq!(
            lines[3],
            "web      prod/web-deploy  RolledBack   -     HighErrorRate  -"
        );
        assert!(
            out.contains(
                "\nLAST ERRORS (retried)\n  web: updating Deployment prod/web-deploy: Forbidden\n"
            ),
            "{out}"
        );
        assert!(!out.contains("  shop: "), "{out}");
        assert!(out.ends_with("POLICY ERRORS\n  policies/x.yaml:3:1: alpha: must be below 0.5\n"));
    }

    #[test]
    fn failing_actions_and_failed_rollouts_are_listed_with_their_reasons() {
        let board = json!({
            "rollouts": [{
                "service": "shop", "namespace": "prod", "deployment": "shop",
                "phase": "Progressing", "step": 1, "lastVerdict": null, "firingAlerts": [],
                "failingAction": "SetWeight 10% failing since 2026-12-04T10:00:00Z (4 attempt(s)): ingresses \"shop-canary\" is forbidden"
            }, {
                "service": "web", "namespace": "prod", "deployment": "web",
                "phase": "Failed", "step": null, "lastVerdict": null, "firingAlerts": [],
                "reason": "rollback to abc cannot be carried out within progressDeadline 10m"
            }],
            "policyErrors": []
        });
        let out = render(&serde_json::from_value(board).unwrap());
        assert!(
            out.contains("\nFAILING ACTIONS (backing off)\n  shop: SetWeight 10% failing since 2026-12-04T10:00:00Z (4 attempt(s)): ingresses \"shop-canary\" is forbidden\n"),
            "{out}"
        );
        assert!(
            out.contains("\nFAILED (needs a human)\n  web: rollback to abc cannot be carried out within progressDeadline 10m\n"),
            "{out}"
        );
    }

    #[test]
    fn empty_board_says_so() {
        let out =
            render(&serde_json::from_value(json!({"rollouts": [], "policyErrors": []})).unwrap());
        assert!(out.contains("(no managed rollouts yet)"), "{out}");
    }
}

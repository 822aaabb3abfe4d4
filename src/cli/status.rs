//! `canaryd status`: the daemon's rollout board as a table.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

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

async fn fetch(client: &reqwest::Client, url: &str) -> Result<Value, Error> {
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

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::from("-"),
        other => other.to_string(),
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(3)).collect();
    out.push_str("...");
    out
}

/// Renders a `/v1/rollouts` document as a table plus policy errors (pure).
pub fn render(board: &Value) -> String {
    let header = [
        "SERVICE",
        "DEPLOYMENT",
        "PHASE",
        "STEP",
        "ALERTS",
        "LAST VERDICT",
    ];
    let mut rows: Vec<[String; 6]> = Vec::new();
    for r in board["rollouts"].as_array().into_iter().flatten() {
        let step = r["step"]
            .as_u64()
            .map(|s| (s + 1).to_string())
            .unwrap_or_else(|| String::from("-"));
        let alerts: Vec<String> = r["firingAlerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        let verdict = match &r["lastVerdict"] {
            Value::Null => String::from("-"),
            v => {
                // Reasons usually start with the decision already.
                let (decision, reason) = (text(&v["decision"]), text(&v["reason"]));
                let prefix = format!("{decision}: ");
                let reason = reason.strip_prefix(&prefix).unwrap_or(&reason);
                format!("{decision}: {}", cut(reason, MAX_REASON))
            }
        };
        rows.push([
            text(&r["service"]),
            format!("{}/{}", text(&r["namespace"]), text(&r["deployment"])),
            text(&r["phase"]),
            step,
            if alerts.is_empty() {
                String::from("-")
            } else {
                alerts.join(",")
            },
            verdict,
        ]);
    }
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
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
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    if rows.is_empty() {
        out.push_str("(no managed rollouts yet)\n");
    }
    out.push_str(&section(board, "lastError", "LAST ERRORS (retried)"));
    out.push_str(&section(
        board,
        "failingAction",
        "FAILING ACTIONS (backing off)",
    ));
    let stopped = |r: &&Value| r["phase"] == "Failed";
    let humans: Vec<String> = rollouts(board)
        .filter(stopped)
        .map(|r| format!("  {}: {}\n", text(&r["service"]), text(&r["reason"])))
        .collect();
    if !humans.is_empty() {
        out.push_str("\nFAILED (needs a human)\n");
        out.push_str(&humans.concat());
    }
    let errors: Vec<String> = board["policyErrors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    if !errors.is_empty() {
        out.push_str("\nPOLICY ERRORS\n");
        for e in errors {
            out.push_str(&format!("  {e}\n"));
        }
    }
    out
}

fn rollouts(board: &Value) -> impl Iterator<Item = &Value> {
    board["rollouts"].as_array().into_iter().flatten()
}

/// One line per rollout that has string `field`, under `title`.
fn section(board: &Value, field: &str, title: &str) -> String {
    let lines: Vec<String> = rollouts(board)
        .filter(|r| r[field].is_string())
        .map(|r| format!("  {}: {}\n", text(&r["service"]), text(&r[field])))
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    format!("\n{title}\n{}", lines.concat())
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
        let out = render(&board);
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
        let out = render(&board);
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
        let out = render(&json!({"rollouts": [], "policyErrors": []}));
        assert!(out.contains("(no managed rollouts yet)"), "{out}");
    }
}

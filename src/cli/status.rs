//! `canaryd status`: the daemon's rollout board as a table.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use crate::controller::record::{decision_label, phase_name, PHASE_NAMES};
use crate::daemon::server::{RolloutsPage, ServiceStatus, StatusBoard};
use crate::judge::Verdict;
use crate::rollout::Phase;
use crate::Error;

/// Pause between refreshes with `--watch`.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// Timeout of one fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest verdict reason shown before it is cut.
const MAX_REASON: usize = 120;
/// Rollouts asked for per request; the rest come by following `continue`.
pub const PAGE_SIZE: usize = 500;
/// Longest server answer quoted in an error.
const MAX_ERROR_BODY: usize = 300;

/// Row order of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    /// Namespace, then service (the server's order).
    Namespace,
    /// Service, then namespace.
    Service,
    /// Phase in lifecycle order (Idle first, Failed last), then namespace and service.
    Phase,
}

/// Arguments of `canaryd status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of a running `canaryd run`.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Refresh every two seconds until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Only rollouts in this phase, e.g. `Progressing` (a comma-separated list for several).
    #[arg(long)]
    pub phase: Option<String>,
    /// Only rollouts in this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only services whose name matches this glob (`*` any characters, `?` one).
    #[arg(long)]
    pub service: Option<String>,
    /// Row order.
    #[arg(long, value_enum, default_value_t = SortBy::Namespace)]
    pub sort: SortBy,
}

impl Args {
    /// The filters as `/v1/rollouts` query parameters.
    fn filters(&self) -> Vec<(&'static str, &str)> {
        [
            ("phase", &self.phase),
            ("namespace", &self.namespace),
            ("service", &self.service),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value.as_deref()?)))
        .collect()
    }
}

async fn fetch(client: &reqwest::Client, url: reqwest::Url) -> Result<RolloutsPage, Error> {
    let err = |message: String| Error::FetchStatus {
        url: url.to_string(),
        message,
    };
    let resp = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| err(e.to_string()))?;
    let status = resp.status();
    if !status.is_success() {
        // The server names a bad filter in the body.
        let body = resp.text().await.unwrap_or_default();
        return Err(err(format!(
            "HTTP {status}: {}",
            cut(body.trim(), MAX_ERROR_BODY)
        )));
    }
    resp.json().await.map_err(|e| err(e.to_string()))
}

/// Every page of `/v1/rollouts` under `filters`: the rollouts of all pages,
/// the counts and policy errors of the last.
async fn fetch_all(
    client: &reqwest::Client,
    base: &reqwest::Url,
    filters: &[(&str, &str)],
) -> Result<RolloutsPage, Error> {
    let mut rollouts = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut url = base.clone();
        let limit = PAGE_SIZE.to_string();
        let mut pairs = filters.to_vec();
        pairs.push(("limit", &limit));
        if let Some(t) = &token {
            pairs.push(("continue", t));
        }
        url.query_pairs_mut().extend_pairs(pairs);
        let mut page = fetch(client, url).await?;
        rollouts.append(&mut page.board.rollouts);
        match page.next.take() {
            // A token names the last rollout shown, so it changes every page.
            Some(next) if token.as_ref() == Some(&next) => {
                return Err(Error::FetchStatus {
                    url: base.to_string(),
                    message: "the server repeated its continue token".into(),
                });
            }
            Some(next) => token = Some(next),
            None => {
                page.board.rollouts = rollouts;
                return Ok(page);
            }
        }
    }
}

/// Position of `phase` in the lifecycle; phases this client does not know come last.
fn phase_rank(phase: &str) -> usize {
    PHASE_NAMES
        .iter()
        .position(|p| *p == phase)
        .unwrap_or(PHASE_NAMES.len())
}

/// What rows are ordered by under `by`: a phase rank (0 unless by phase), then names.
fn sort_key(r: &ServiceStatus, by: SortBy) -> (usize, &str, &str, &str) {
    match by {
        SortBy::Namespace => (0, &r.namespace, &r.service, &r.deployment),
        SortBy::Service => (0, &r.service, &r.namespace, &r.deployment),
        SortBy::Phase => (
            phase_rank(&r.phase),
            &r.namespace,
            &r.service,
            &r.deployment,
        ),
    }
}

/// Puts `rows` in `by` order.
pub fn sort(rows: &mut [ServiceStatus], by: SortBy) {
    rows.sort_by(|a, b| sort_key(a, by).cmp(&sort_key(b, by)));
}

/// `1000 rollouts: 940 Idle, 52 Progressing, 3 RollingBack, 5 Failed`, or
/// `52 of 1000 rollouts: ...` under filters: counts of the rows shown, phases
/// in lifecycle order (pure).
pub fn summary(rows: &[ServiceStatus], total: usize) -> String {
    let mut counts: BTreeMap<(usize, &str), usize> = BTreeMap::new();
    for r in rows {
        *counts.entry((phase_rank(&r.phase), &r.phase)).or_default() += 1;
    }
    let noun = |n: usize| if n == 1 { "rollout" } else { "rollouts" };
    let mut out = if total > rows.len() {
        format!("{} of {total} {}", rows.len(), noun(total))
    } else {
        format!("{} {}", rows.len(), noun(rows.len()))
    };
    let phases: Vec<String> = counts
        .iter()
        .map(|((_, phase), n)| format!("{n} {phase}"))
        .collect();
    if !phases.is_empty() {
        out.push_str(": ");
        out.push_str(&phases.join(", "));
    }
    out + "\n"
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

/// Said under the header when the board is empty.
const NO_ROLLOUTS: &str = "(no managed rollouts yet)\n";
/// Said under the header when filters leave nothing of a board.
const NO_MATCH: &str = "(no rollouts match the filters)\n";

/// Renders a `/v1/rollouts` document as a table plus policy errors (pure).
pub fn render(board: &StatusBoard) -> String {
    render_with(board, NO_ROLLOUTS, "")
}

/// The table of `page` in `by` order with the summary line under it (pure);
/// the table still starts the output, as scripts expect.
pub fn report(mut page: RolloutsPage, by: SortBy) -> String {
    sort(&mut page.board.rollouts, by);
    let empty = if page.total > 0 {
        NO_MATCH
    } else {
        NO_ROLLOUTS
    };
    let footer = format!("\n{}", summary(&page.board.rollouts, page.total));
    render_with(&page.board, empty, &footer)
}

/// The table, `empty` if it has no rows, `footer`, then the sections.
fn render_with(board: &StatusBoard, empty: &str, footer: &str) -> String {
    let rows: Vec<[String; 6]> = board.rollouts.iter().map(row).collect();
    let mut out = table(&rows);
    if rows.is_empty() {
        out.push_str(empty);
    }
    out.push_str(footer);
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
    let url = match reqwest::Url::parse(&url) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("canaryd status: {url}: {e}");
            return super::exit(super::EXIT_ERROR);
        }
    };
    let client = match reqwest::Client::builder().timeout(FETCH_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("canaryd status: {e}");
            return super::exit(super::EXIT_ERROR);
        }
    };
    let filters = args.filters();
    let tty = std::io::stdout().is_terminal();
    loop {
        match fetch_all(&client, &url, &filters).await {
            Ok(page) => {
                if args.watch && tty {
                    // Clear the screen so the table updates in place.
                    print!("\x1b[2J\x1b[H");
                }
                print!("{}", report(page, args.sort));
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

    fn rollout(namespace: &str, service: &str, phase: &str) -> ServiceStatus {
        serde_json::from_value(json!({
            "service": service, "namespace": namespace, "deployment": service,
            "phase": phase, "step": null, "lastVerdict": null, "firingAlerts": []
        }))
        .unwrap()
    }

    #[test]
    fn the_summary_counts_phases_in_lifecycle_order() {
        let mut rows = Vec::new();
        for (phase, n) in [
            ("Failed", 5),
            ("Idle", 940),
            ("RollingBack", 3),
            ("Progressing", 52),
        ] {
            rows.extend((0..n).map(|i| rollout("prod", &format!("s{i}"), phase)));
        }
        assert_eq!(
            summary(&rows, 1000),
            "1000 rollouts: 940 Idle, 52 Progressing, 3 RollingBack, 5 Failed\n"
        );
        assert_eq!(
            summary(&rows[..5], 1000),
            "5 of 1000 rollouts: 5 Failed\n",
            "under filters, the shown count of the total"
        );
        let odd = [rollout("a", "x", "Hibernating"), rollout("a", "y", "Idle")];
        assert_eq!(
            summary(&odd, 2),
            "2 rollouts: 1 Idle, 1 Hibernating\n",
            "a phase this client does not know comes last"
        );
        assert_eq!(
            summary(&odd[..1], 0),
            "1 rollout: 1 Hibernating\n",
            "an older server gives no total"
        );
        assert_eq!(summary(&[], 0), "0 rollouts\n");
        assert_eq!(summary(&[], 1), "0 of 1 rollout\n");
    }

    #[test]
    fn rows_sort_by_namespace_service_or_phase() {
        let mut rows = vec![
            rollout("prod", "web", "Idle"),
            rollout("dev", "web", "Failed"),
            rollout("prod", "api", "Progressing"),
            rollout("dev", "zeta", "Idle"),
        ];
        let order = |rows: &[ServiceStatus]| {
            rows.iter()
                .map(|r| format!("{}/{}", r.namespace, r.service))
                .collect::<Vec<_>>()
                .join(" ")
        };
        sort(&mut rows, SortBy::Namespace);
        assert_eq!(order(&rows), "dev/web dev/zeta prod/api prod/web");
        sort(&mut rows, SortBy::Service);
        assert_eq!(order(&rows), "prod/api dev/web prod/web dev/zeta");
        sort(&mut rows, SortBy::Phase);
        assert_eq!(order(&rows), "dev/zeta prod/web prod/api dev/web");
    }

    #[test]
    fn the_report_puts_the_summary_under_the_table_and_says_when_filters_leave_nothing() {
        let page: RolloutsPage = serde_json::from_value(json!({
            "rollouts": [], "policyErrors": ["policies/x.yaml:3:1: alpha: bad"],
            "total": 3, "matched": 0, "phases": {}
        }))
        .unwrap();
        let out = report(page, SortBy::Namespace);
        assert!(
            out.starts_with("SERVICE  DEPLOYMENT  PHASE  STEP  ALERTS  LAST VERDICT\n(no rollouts match the filters)\n\n0 of 3 rollouts\n\nPOLICY ERRORS\n"),
            "{out}"
        );
        let page: RolloutsPage = serde_json::from_value(json!({
            "rollouts": [
                {"service": "web", "namespace": "prod", "deployment": "web", "phase": "Idle",
                 "step": null, "lastVerdict": null, "firingAlerts": []},
                {"service": "api", "namespace": "prod", "deployment": "api", "phase": "Failed",
                 "step": null, "lastVerdict": null, "firingAlerts": []}
            ],
            "policyErrors": []
        }))
        .unwrap();
        let out = report(page, SortBy::Namespace);
        assert_eq!(
            out.lines().collect::<Vec<_>>()[..5],
            [
                "SERVICE  DEPLOYMENT  PHASE   STEP  ALERTS  LAST VERDICT",
                "api      prod/api    Failed  -     -       -",
                "web      prod/web    Idle    -     -       -",
                "",
                "2 rollouts: 1 Idle, 1 Failed",
            ],
            "{out}"
        );
    }

    /// A daemon's HTTP server on loopback holding `board`; its URL.
    async fn serve_board(board: StatusBoard) -> (String, tokio::sync::oneshot::Sender<()>) {
        use crate::daemon::server::{serve, ServerState};
        use crate::daemon::telemetry::Metrics;
        let state = std::sync::Arc::new(ServerState::new(Metrics::new().unwrap(), None));
        *state.status.write().unwrap() = board;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, state, async {
            let _ = stopped.await;
        }));
        (url, stop)
    }

    #[tokio::test]
    async fn all_pages_are_fetched_under_the_filters() {
        let mut rollouts: Vec<ServiceStatus> = (0..PAGE_SIZE * 2 + 7)
            .map(|i| rollout("prod", &format!("web-{i:04}"), "Idle"))
            .collect();
        rollouts.push(rollout("dev", "web-0000", "Idle"));
        rollouts.push(rollout("prod", "api", "Idle"));
        rollouts.push(rollout("prod", "web-x", "Failed"));
        let (url, _stop) = serve_board(StatusBoard {
            rollouts,
            policy_errors: Vec::new(),
        })
        .await;
        let client = reqwest::Client::new();
        let base = reqwest::Url::parse(&format!("{url}/v1/rollouts")).unwrap();
        let filters = [
            ("namespace", "prod"),
            ("phase", "Idle"),
            ("service", "web-*"),
        ];
        let page = fetch_all(&client, &base, &filters).await.unwrap();
        let names: Vec<String> = page
            .board
            .rollouts
            .iter()
            .map(|r| r.service.clone())
            .collect();
        let want: Vec<String> = (0..PAGE_SIZE * 2 + 7)
            .map(|i| format!("web-{i:04}"))
            .collect();
        assert_eq!(names, want, "every page once, in order");
        assert_eq!(
            (page.total, page.matched),
            (PAGE_SIZE * 2 + 10, PAGE_SIZE * 2 + 7)
        );
        let bad = fetch_all(&client, &base, &[("phase", "idle")])
            .await
            .unwrap_err();
        assert!(
            bad.to_string()
                .contains("HTTP 400 Bad Request: phase: unknown phase \"idle\""),
            "{bad}"
        );
    }

    #[test]
    fn empty_board_says_so() {
        let out =
            render(&serde_json::from_value(json!({"rollouts": [], "policyErrors": []})).unwrap());
        assert!(out.contains("(no managed rollouts yet)"), "{out}");
    }
}

//! Text rendering of a simulation: a timeline, the outcome and the summary.

use std::fmt::Write as _;

use crate::policy::Policy;
use crate::rollout::format_secs;

use super::{
    describe_plan, EntryKind, OutcomeKind, Run, Scenario, Spread, Stretch, StretchStats, Summary,
};

/// `+MM:SS`, or `+H:MM:SS` past an hour.
pub fn format_offset(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("+{h}:{m:02}:{s:02}")
    } else {
        format!("+{m:02}:{s:02}")
    }
}

fn percent(errors: u64, requests: u64) -> String {
    if requests == 0 {
        String::from("-")
    } else {
        format!("{:.2}%", 100.0 * errors as f64 / requests as f64)
    }
}

/// The scenario, the timeline and the outcome of one run.
pub fn render_run(policy: &Policy, scenario: &Scenario, run: &Run) -> String {
    let mut out = String::new();
    let load = &scenario.load;
    let _ = writeln!(
        out,
        "canaryd simulate: {} ({})",
        policy.service,
        policy.source.display()
    );
    let _ = writeln!(
        out,
        "plan:     {}",
        describe_plan(policy, scenario.replicas)
    );
    let _ = writeln!(
        out,
        "scenario: {} req/s, errors {:.2}%, latency median {:.0}ms, regression {}{}{}, seed {}",
        load.rps,
        load.error_rate * 100.0,
        load.latency_secs * 1000.0,
        load.regression,
        scenario
            .alert_at
            .map(|a| format!(", alert fires at {}", format_offset(a)))
            .unwrap_or_default(),
        describe_stretches(&scenario.outages, &scenario.no_traffic),
        scenario.seed
    );
    let _ = writeln!(out);
    for entry in &run.timeline {
        let what = match &entry.what {
            EntryKind::Window {
                number,
                decision,
                reason,
                traffic,
            } => format!(
                "window {number:<3} {:<12} canary {} req {} err ({}), baseline {} req {} err ({}): {reason}",
                format!("{decision:?}"),
                traffic.canary.requests,
                traffic.canary.errors,
                percent(traffic.canary.errors, traffic.canary.requests),
                traffic.baseline.requests,
                traffic.baseline.errors,
                percent(traffic.baseline.errors, traffic.baseline.requests),
            ),
            EntryKind::Event {
                kind,
                reason,
                message,
            } => format!("{:<7} {:<24} {message}", format!("{kind:?}"), reason.to_string()),
            EntryKind::Action { action } => format!("  -> {}", action),
        };
        let _ = writeln!(
            out,
            "{:>9}  {:<20} {what}",
            format_offset(entry.at),
            entry.phase
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "outcome: {}", describe_outcome(run));
    out
}

fn describe_outcome(run: &Run) -> String {
    let o = &run.outcome;
    let trigger = match (&o.reason, &o.message) {
        (Some(reason), Some(message)) => format!(" ({reason}: {message})"),
        _ => String::new(),
    };
    let promoted = o
        .promoted_at
        .map(|p| format!("promoted at {}, ", format_offset(p)))
        .unwrap_or_default();
    match o.result {
        OutcomeKind::Promoted => format!("{promoted}rollout complete at {}", format_offset(o.at)),
        OutcomeKind::RolledBack => format!(
            "{promoted}rollback decided at {}, stable release back at {}{trigger}",
            format_offset(o.rollback_at.unwrap_or(o.at)),
            format_offset(o.at)
        ),
        OutcomeKind::Failed => format!("{promoted}failed at {}{trigger}", format_offset(o.at)),
        OutcomeKind::Unfinished => format!(
            "{promoted}still in flight at {} (phase {:?})",
            format_offset(o.at),
            run.state.phase
        ),
    }
}

/// One stretch as `+MM:SS..+MM:SS`.
fn span(s: &Stretch) -> String {
    format!(
        "{}..{}",
        format_offset(s.start_secs),
        format_offset(s.end_secs())
    )
}

/// `, metric source down +03:00..+09:00, no canary traffic …`, or nothing.
fn describe_stretches(outages: &[Stretch], no_traffic: &[Stretch]) -> String {
    let list = |v: &[Stretch]| v.iter().map(span).collect::<Vec<_>>().join(", ");
    let mut out = String::new();
    if !outages.is_empty() {
        out.push_str(&format!(", metric source down {}", list(outages)));
    }
    if !no_traffic.is_empty() {
        out.push_str(&format!(", no canary traffic {}", list(no_traffic)));
    }
    out
}

/// The outage and no-traffic line of one release in the summary.
fn stretch_line(out: &mut String, label: &str, stats: &StretchStats, n: u32) {
    let _ = writeln!(
        out,
        "  {label:<17} promotions during outages/no traffic {}; held {}/{n}; NoData rollbacks {}/{n}",
        stats.promotions_during, stats.held, stats.no_data_rollbacks
    );
}

fn spread(s: &Spread) -> String {
    match (s.median_secs, s.p90_secs) {
        (Some(m), Some(p)) => format!("median {}, p90 {}", format_secs(m), format_secs(p)),
        _ => String::from("never"),
    }
}

/// The summary over many seeded runs.
pub fn render_summary(summary: &Summary) -> String {
    let mut out = String::new();
    let n = summary.runs;
    let _ = writeln!(
        out,
        "summary over {n} seeded runs per release (seeds {}..{}, no alerts{}):",
        summary.seed,
        summary.seed.saturating_add(u64::from(n.saturating_sub(1))),
        describe_stretches(&summary.outages, &summary.no_traffic)
    );
    let h = &summary.healthy_promoted;
    let _ = writeln!(
        out,
        "  healthy release:  promoted {}/{n}, time to promote {}; false rollbacks {}/{n}; unfinished {}",
        h.count,
        spread(h),
        summary.healthy_rolled_back,
        summary.healthy_unfinished
    );
    if let (Some(caught), Some(missed)) = (&summary.regression_caught, summary.regression_missed) {
        let share = if n == 0 {
            0.0
        } else {
            100.0 * f64::from(caught.count) / f64::from(n)
        };
        let _ = writeln!(
            out,
            "  {:<17} caught {}/{n} ({share:.1}%), time to catch {}; promoted anyway {missed}/{n}",
            format!("{}:", summary.regression),
            caught.count,
            spread(caught),
        );
    }
    if let Some(stats) = &summary.healthy_stretches {
        stretch_line(&mut out, "healthy release:", stats, n);
    }
    if let Some(stats) = &summary.regression_stretches {
        stretch_line(&mut out, &format!("{}:", summary.regression), stats, n);
    }
    out
}

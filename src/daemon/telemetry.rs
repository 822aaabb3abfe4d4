//! canaryd's own Prometheus metrics, exposed on `/metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Judge time buckets: the judge is pure arithmetic, so microseconds to milliseconds.
const JUDGE_SECONDS_BUCKETS: &[f64] = &[1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1];

/// Every metric canaryd exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Managed rollouts by phase.
    pub rollouts: IntGaugeVec,
    /// Judge decisions by outcome.
    pub decisions: IntCounterVec,
    /// Time spent in the judge per evaluation.
    pub judge_seconds: Histogram,
    /// Failed Prometheus queries.
    pub prometheus_query_errors: IntCounter,
    /// Failed reconciles.
    pub reconcile_errors: IntCounter,
    /// Alerts received, by source (`webhook` or `poll`).
    pub alerts_received: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("canaryd".into()), None)?;
        let rollouts = IntGaugeVec::new(
            Opts::new("rollouts", "Managed rollouts by phase."),
            &["phase"],
        )?;
        let decisions = IntCounterVec::new(
            Opts::new("decisions_total", "Judge decisions by outcome."),
            &["outcome"],
        )?;
        let judge_seconds = Histogram::with_opts(
            HistogramOpts::new("judge_seconds", "Time spent judging one window.")
                .buckets(JUDGE_SECONDS_BUCKETS.to_vec()),
        )?;
        let prometheus_query_errors = IntCounter::new(
            "prometheus_query_errors_total",
            "Prometheus queries that failed after retries.",
        )?;
        let reconcile_errors =
            IntCounter::new("reconcile_errors_total", "Reconciles that failed.")?;
        let alerts_received = IntCounterVec::new(
            Opts::new("alerts_received_total", "Alerts received, by source."),
            &["source"],
        )?;
        registry.register(Box::new(rollouts.clone()))?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(judge_seconds.clone()))?;
        registry.register(Box::new(prometheus_query_errors.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(alerts_received.clone()))?;
        Ok(Self {
            registry,
            rollouts,
            decisions,
            judge_seconds,
            prometheus_query_errors,
            reconcile_errors,
            alerts_received,
        })
    }

    /// Renders the text exposition format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

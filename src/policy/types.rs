//! The validated policy: the only policy type the rest of canaryd sees.
//!
//! Built by [`super::validate`] from the raw serde types; every value here has
//! already been checked (sizes grow, weights are within 0..=100, templates only
//! use known variables, durations are positive).

use std::path::PathBuf;
use std::time::Duration;

/// One service's delivery policy, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// File the policy was loaded from (used in messages).
    pub source: PathBuf,
    /// Service name, as used in metric queries and messages.
    pub service: String,
    /// Namespace of the target Deployment.
    pub namespace: String,
    /// Name of the managed Deployment.
    pub deployment: String,
    /// How a new release is brought in.
    pub strategy: Strategy,
    /// How traffic is shifted to the canary.
    pub traffic: Traffic,
    /// Which pods the canary is compared against.
    pub baseline: BaselineMode,
    /// How long the canary may take to become ready before it is rolled back.
    pub progress_deadline: Duration,
    /// Metrics, statistics and the false-rollback budget.
    pub analysis: Analysis,
    /// Alerts that roll back at once.
    pub alerts: AlertPolicy,
    /// Where to post rollout notifications.
    pub notifications: Vec<Notification>,
}

/// How a new release is brought in.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Progressive canary steps.
    Canary(CanaryStrategy),
    /// Switch a Service selector from the old version to the new one.
    BlueGreen(BlueGreenStrategy),
}

/// Progressive canary plan.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryStrategy {
    /// Steps in order; never empty; sizes and weights never shrink.
    pub steps: Vec<Step>,
}

/// One canary step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Canary size for this step (`None`: keep the previous step's size).
    pub size: Option<CanarySize>,
    /// Traffic weight in percent when a traffic router is set.
    pub weight: Option<u8>,
    /// How long to observe before the step may advance.
    pub observe: Duration,
    /// Wait for a manual approval before leaving this step.
    pub gate: bool,
}

/// Canary size: a pod count or a share of the Deployment's replicas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CanarySize {
    /// An absolute number of pods.
    Replicas(u32),
    /// A percentage (0 < p <= 100) of the Deployment's replicas, rounded up.
    Percent(f64),
}

impl CanarySize {
    /// Pods this size means for a Deployment of `total` replicas (at least 1).
    pub fn replicas(&self, total: u32) -> u32 {
        match *self {
            CanarySize::Replicas(n) => n.max(1),
            CanarySize::Percent(p) => {
                let n = (f64::from(total) * p / 100.0).ceil();
                (n as u32).clamp(1, total.max(1))
            }
        }
    }
}

/// Blue-green plan.
#[derive(Debug, Clone, PartialEq)]
pub struct BlueGreenStrategy {
    /// Service whose selector is switched to the new version.
    pub active_service: String,
    /// Optional Service that selects the new version before the switch.
    pub preview_service: Option<String>,
    /// Pod label whose value tells versions apart (e.g. `version`).
    pub version_label: String,
    /// How long to analyse the new version before switching.
    pub observe: Duration,
    /// Wait for a manual approval before switching.
    pub gate: bool,
    /// How long the old version is kept for an instant switch-back.
    pub keep_old_for: Duration,
}

/// How traffic reaches the canary.
#[derive(Debug, Clone, PartialEq)]
pub enum Traffic {
    /// Traffic follows pod counts behind the Service.
    Replicas,
    /// ingress-nginx canary Ingress with `canary-weight`.
    IngressNginx {
        /// The primary Ingress to copy.
        ingress: String,
    },
    /// Gateway API HTTPRoute backend weights.
    GatewayApi {
        /// The HTTPRoute to weight.
        route: String,
    },
}

impl Traffic {
    /// Whether steps may set a traffic weight.
    pub fn has_router(&self) -> bool {
        !matches!(self, Traffic::Replicas)
    }
}

/// Which pods the canary is compared against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaselineMode {
    /// A fresh baseline Deployment of the stable release, sized like the canary.
    Fresh,
    /// The stable pods themselves.
    Stable,
}

/// What to do when a window has no usable data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnNoData {
    /// Neither advance nor roll back until `max_duration`; then roll back.
    Hold,
    /// Roll back at once.
    Rollback,
}

/// Analysis settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// Where to read metrics.
    pub prometheus: PrometheusConfig,
    /// Length of one observation window.
    pub interval: Duration,
    /// Longest an analysis may run before `on_no_data` applies.
    pub max_duration: Duration,
    /// The rollout's false-rollback budget, split across metrics.
    pub alpha: f64,
    /// What to do without data.
    pub on_no_data: OnNoData,
    /// Fewest canary requests a step must serve before it may be left
    /// (counted from the errors and latency metrics; 0 disables the check).
    pub min_requests_per_step: u64,
    /// How the judge decides.
    pub mode: JudgeMode,
    /// Metrics to judge; never empty.
    pub metrics: Vec<MetricSpec>,
}

/// Which judge decides.
#[derive(Debug, Clone, PartialEq)]
pub enum JudgeMode {
    /// Anytime-valid sequential tests (default).
    Sequential,
    /// Kayenta-style Mann-Whitney scoring.
    Classic(ClassicSettings),
}

/// Kayenta-style scoring thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassicSettings {
    /// Score (0..=100) at or above which the canary passes.
    pub pass_score: f64,
    /// Score at or above which the result is marginal rather than failed.
    pub marginal_score: f64,
}

/// Prometheus endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusConfig {
    /// Base URL, e.g. `http://prometheus:9090`.
    pub url: String,
    /// Optional authentication.
    pub auth: Option<PrometheusAuth>,
    /// Optional PEM file with a CA for HTTPS.
    pub ca_file: Option<PathBuf>,
}

/// Prometheus authentication; secrets are read from files, never inlined.
#[derive(Debug, Clone, PartialEq)]
pub enum PrometheusAuth {
    /// `Authorization: Bearer <token>` with the token read from a file.
    BearerTokenFile(PathBuf),
    /// HTTP basic auth with the password read from a file.
    Basic {
        /// User name.
        username: String,
        /// File holding the password.
        password_file: PathBuf,
    },
}

/// One metric to judge.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    /// Unique name within the policy.
    pub name: String,
    /// What is measured and how it is queried.
    pub kind: MetricKind,
    /// Which change is bad.
    pub direction: Direction,
    /// Optional absolute per-window bounds (Flagger-style).
    pub bounds: Option<Bounds>,
    /// A failing critical metric rolls back regardless of the others.
    pub critical: bool,
    /// Smallest relative regression worth detecting (e.g. 0.5 = +50%), used
    /// for "how much more traffic is needed" estimates.
    pub min_effect: f64,
    /// Weight in classic-mode scoring.
    pub weight: f64,
}

/// What a metric measures.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricKind {
    /// Error and total request counters.
    Errors {
        /// Query for the error count increase over `{{window}}`.
        errors: Template,
        /// Query for the request count increase over `{{window}}`.
        total: Template,
    },
    /// A latency histogram; the query returns bucket increases by `le`.
    Latency {
        /// Query for `sum by (le) (increase(..._bucket[{{window}}]))`.
        buckets: Template,
    },
    /// A gauge or custom PromQL returning one value per window.
    Gauge {
        /// Query returning one sample.
        query: Template,
    },
}

/// Which change of a metric is a regression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Higher is worse (errors, latency).
    Increase,
    /// Lower is worse (throughput, success).
    Decrease,
    /// Any change is worse.
    Either,
}

/// Absolute per-window bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Lowest acceptable value.
    pub min: Option<f64>,
    /// Highest acceptable value.
    pub max: Option<f64>,
}

/// A PromQL template; validated to use only [`TEMPLATE_VARIABLES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub String);

/// Variables a query template may use, as `{{name}}`.
pub const TEMPLATE_VARIABLES: &[&str] = &[
    "namespace",
    "service",
    "deployment",
    "role",
    "podRegex",
    "window",
];

/// Values substituted into a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateVars<'a> {
    /// Namespace of the Deployment.
    pub namespace: &'a str,
    /// Service name.
    pub service: &'a str,
    /// Deployment name.
    pub deployment: &'a str,
    /// `canary`, `baseline` or `stable`.
    pub role: &'a str,
    /// Regex matching the role's pod names.
    pub pod_regex: &'a str,
    /// PromQL duration, e.g. `60s`.
    pub window: &'a str,
}

impl Template {
    /// Substitutes every variable.
    pub fn render(&self, v: &TemplateVars<'_>) -> String {
        self.0
            .replace("{{namespace}}", v.namespace)
            .replace("{{service}}", v.service)
            .replace("{{deployment}}", v.deployment)
            .replace("{{role}}", v.role)
            .replace("{{podRegex}}", v.pod_regex)
            .replace("{{window}}", v.window)
    }
}

/// Alerts that roll a service back.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertPolicy {
    /// All must match for an alert to count; empty means no alert rollback.
    pub matchers: Vec<LabelMatcher>,
    /// After promotion, matching alerts still roll back for this long.
    pub guard_window: Duration,
}

/// A Prometheus-style label matcher.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelMatcher {
    /// Label name.
    pub name: String,
    /// How the value is compared.
    pub op: MatchOp,
    /// Value or regex (anchored, as in Prometheus).
    pub value: String,
}

/// Matcher operator: `=`, `!=`, `=~`, `!~`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `=~`
    Re,
    /// `!~`
    NotRe,
}

/// Where rollout notifications go.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Generic JSON webhook or Slack incoming webhook.
    pub kind: NotificationKind,
    /// Destination URL.
    pub url: String,
}

/// Notification payload format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationKind {
    /// canaryd's JSON event.
    Webhook,
    /// Slack incoming-webhook text.
    Slack,
}

//! Typed metric-source errors.

use std::time::Duration;

/// Why a metric source could not produce a value.
///
/// Whole-source errors ([`MetricsError::is_source_failure`]) fail the window;
/// the others describe one arm's data and become `ArmValue::NoData(reason)`.
/// The engine maps both to HOLD; nothing here panics.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    /// The source is misconfigured (bad URL, unreadable secret or CA file).
    #[error("prometheus configuration: {0}")]
    Config(String),
    /// Prometheus could not be reached (connection refused, DNS, TLS).
    #[error("prometheus at {url} unreachable: {reason}")]
    Unreachable {
        /// Base URL queried.
        url: String,
        /// Transport error text.
        reason: String,
    },
    /// No answer within the client timeout.
    #[error("prometheus at {url} did not answer within {after:?}")]
    Timeout {
        /// Base URL queried.
        url: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// Prometheus (or a proxy in front of it) answered with an HTTP error
    /// status and no Prometheus error body.
    #[error("prometheus answered HTTP {status}: {body}")]
    HttpStatus {
        /// HTTP status code.
        status: u16,
        /// Start of the response body.
        body: String,
    },
    /// Prometheus answered `{"status":"error"}`.
    #[error("prometheus error ({error_type}): {message}")]
    Prometheus {
        /// `errorType`, e.g. `bad_data`, `timeout`, `unavailable`.
        error_type: String,
        /// `error` text.
        message: String,
    },
    /// The answer was not a Prometheus query response.
    #[error("unreadable prometheus response: {0}")]
    BadResponse(String),
    /// The query returned a scalar, string or matrix where a vector was needed.
    #[error("metric {metric}: query returned a {found}, not an instant vector")]
    ResultType {
        /// Policy metric name.
        metric: String,
        /// What came back.
        found: String,
    },
    /// The query returned no series for this arm.
    #[error("metric {metric} ({arm}): no series")]
    NoSeries {
        /// Policy metric name and part (e.g. `errors/total`).
        metric: String,
        /// `canary`, `baseline` or `stable`.
        arm: String,
    },
    /// The query returned several series where exactly one was expected.
    #[error("metric {metric} ({arm}): {count} series where one was expected")]
    SeveralSeries {
        /// Policy metric name and part.
        metric: String,
        /// Arm role.
        arm: String,
        /// Series returned.
        count: usize,
    },
    /// A value was NaN (or a count was infinite or negative).
    #[error("metric {metric} ({arm}): value is {value}")]
    BadValue {
        /// Policy metric name and part.
        metric: String,
        /// Arm role.
        arm: String,
        /// The value as text (`NaN`, `+Inf`, `-3`).
        value: String,
    },
    /// Histogram buckets were missing or had an unusable `le` label.
    #[error("metric {metric} ({arm}): bad histogram buckets: {detail}")]
    BadBuckets {
        /// Policy metric name.
        metric: String,
        /// Arm role.
        arm: String,
        /// What is wrong (`le="abc"`, no `+Inf` bucket, duplicate `le`).
        detail: String,
    },
}

impl MetricsError {
    /// Whether the source as a whole failed (rather than one arm's data).
    pub fn is_source_failure(&self) -> bool {
        matches!(
            self,
            MetricsError::Config(_)
                | MetricsError::Unreachable { .. }
                | MetricsError::Timeout { .. }
                | MetricsError::HttpStatus { .. }
                | MetricsError::Prometheus { .. }
                | MetricsError::BadResponse(_)
        )
    }

    /// Whether trying again soon may help (transport errors, 5xx, 429,
    /// Prometheus `timeout`/`unavailable`/`internal`).
    pub fn is_retryable(&self) -> bool {
        match self {
            MetricsError::Unreachable { .. } | MetricsError::Timeout { .. } => true,
            MetricsError::HttpStatus { status, .. } => *status >= 500 || *status == 429,
            MetricsError::Prometheus { error_type, .. } => {
                matches!(error_type.as_str(), "timeout" | "unavailable" | "internal")
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_and_server_errors_are_retried_client_errors_are_not() {
        let unreachable = MetricsError::Unreachable {
            url: "http://x".into(),
            reason: "refused".into(),
        };
        assert!(unreachable.is_retryable() && unreachable.is_source_failure());
        let http = |status| MetricsError::HttpStatus {
            status,
            body: String::new(),
        };
        assert!(http(503).is_retryable());
        assert!(http(429).is_retryable());
        assert!(!http(401).is_retryable());
        assert!(http(401).is_source_failure());
        let prom = |t: &str| MetricsError::Prometheus {
            error_type: t.into(),
            message: String::new(),
        };
        assert!(prom("unavailable").is_retryable());
        assert!(!prom("bad_data").is_retryable());
        let none = MetricsError::NoSeries {
            metric: "m".into(),
            arm: "canary".into(),
        };
        assert!(!none.is_retryable() && !none.is_source_failure());
    }
}

//! Metric sources: the `MetricSource` trait and its Prometheus implementation.

//! Prometheus metrics for `/metrics`, on one [`rmb_metrics::Registry`] per server: tests
//! and `rmb up` start several registrars in one process, and each reports its own
//! numbers (a process-global recorder could not tell them apart).
//!
//! Recorded: `registrar_http_requests_total{route,method,status}`,
//! `registrar_http_request_duration_seconds{route}`,
//! `registrar_store_duration_seconds{op}`, `registrar_accounts_created_total`. Routes
//! are the router's patterns (or `unmatched`) and methods the standard ones (or
//! `other`), so strangers cannot grow the label sets.

use rmb_metrics::{Counter, CounterVec, HistogramVec, Registry};

/// Latency buckets, seconds: 50 µs to 5 s.
pub(crate) const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

/// The server's families; the store's timings are registered by [`crate::Store`].
pub(crate) struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) requests: CounterVec,
    pub(crate) request_duration: HistogramVec,
    pub(crate) accounts_created: Counter,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let registry = Registry::new();
        Metrics {
            requests: registry.counter_vec(
                "registrar_http_requests_total",
                "HTTP requests answered, by route, method and status.",
                &["route", "method", "status"],
            ),
            request_duration: registry.histogram_vec(
                "registrar_http_request_duration_seconds",
                "Time to answer a request, by route.",
                &["route"],
                BUCKETS,
            ),
            accounts_created: registry
                .counter("registrar_accounts_created_total", "Accounts created."),
            registry,
        }
    }

    pub(crate) fn render(&self) -> String {
        self.registry.render()
    }
}

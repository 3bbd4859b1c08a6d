//! Prometheus metrics for `/metrics`.
//!
//! The `metrics` facade has one global recorder per process. The first server started
//! installs a Prometheus recorder and every server in the process (tests start several)
//! renders from it. If the host process installed its own recorder first, `/metrics`
//! answers 503 and the host's recorder receives the registrar's metrics.
//!
//! Recorded: `registrar_http_requests_total{route,method,status}`,
//! `registrar_http_request_duration_seconds{route}`,
//! `registrar_store_duration_seconds{op}`, `registrar_accounts_created_total`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets, seconds: 50 µs to 5 s.
const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus handle, if the registrar's recorder is the installed one.
#[derive(Clone)]
pub(crate) struct Metrics {
    handle: Option<&'static PrometheusHandle>,
}

impl Metrics {
    pub(crate) fn install() -> Metrics {
        let handle = HANDLE.get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .expect("bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => Some(handle),
                Err(_) => {
                    tracing::warn!(
                        "a metrics recorder is already installed; /metrics will answer 503"
                    );
                    None
                }
            }
        });
        Metrics {
            handle: handle.as_ref(),
        }
    }

    pub(crate) fn render(&self) -> Option<String> {
        self.handle.map(|h| h.render())
    }

    /// Drains histogram samples into their buckets now and then, so memory stays flat
    /// between scrapes. Runs until the returned task is aborted.
    pub(crate) fn spawn_upkeep(&self) -> Option<tokio::task::JoinHandle<()>> {
        let handle = self.handle?;
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        }))
    }
}

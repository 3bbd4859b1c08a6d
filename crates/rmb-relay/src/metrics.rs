//! The relay's Prometheus metrics, on one [`rmb_metrics::Registry`] per relay instance
//! (tests and `rmb up` run several relays in one process, and each must report its own
//! numbers). `render` writes the text for `GET /metrics`.
//!
//! Counters are handles taken once, so hot paths add to an atomic without a lookup.
//! The original relay's names (`relay_message_rx`, ...) are computed from ours when
//! rendered, so its dashboards keep working without counting twice.

use rmb_metrics::{Counter, CounterVec, Gauge, Kind, Registry};

pub use rmb_metrics::BoundedLabels;

/// Distinct relay names used as label values by default.
pub const DEFAULT_RELAY_LABELS: usize = 100;

pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub connections_total: Counter,
    pub messages_in: Counter,
    pub messages_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub queued_frames: Gauge,
    pub queue_dropped: Counter,
    pub expired: Counter,
    pub rate_limited: Counter,
    pub federation_received: Counter,
    pub federation_received_bytes: Counter,
    /// Copies of envelopes already accepted, dropped (D1a).
    pub duplicates: Counter,
    /// Envelopes forgotten by the de-duplication memory before their deadline, to make
    /// room (a copy of one of them would get through).
    pub dedup_evicted: Counter,
    /// Sessions closed because nothing was received for the idle timeout.
    pub idle_closed: Counter,
    /// Bytes read from sockets and not yet handed on (the read budget's use).
    pub read_bytes_held: Gauge,
    /// Sessions closed and federation posts refused because a read waited too long for
    /// room in the read budget.
    pub read_budget_exhausted: Counter,
    /// Requests that may have reached a connection that broke, not sent again (D1).
    pub unconfirmed_requests_dropped: Counter,
    auth_failures: CounterVec,
    protocol_violations: CounterVec,
    rejected: CounterVec,
    federation_success: CounterVec,
    federation_error: CounterVec,
    federation: CounterVec,
    relay_labels: BoundedLabels,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(DEFAULT_RELAY_LABELS)
    }
}

/// Label values for `rmb_relay_auth_failures_total{reason=...}`.
pub mod auth_failure {
    pub const MISSING_TOKEN: &str = "missing_token";
    pub const MALFORMED: &str = "malformed";
    pub const UNKNOWN_TWIN: &str = "unknown_twin";
    pub const EXPIRED: &str = "expired";
    pub const BAD_SIGNATURE: &str = "bad_signature";
    pub const INVALID_TIME: &str = "invalid_time";
    /// The twin could not be looked up (registrar down or slow): refused with 503.
    pub const REGISTRAR_UNAVAILABLE: &str = "registrar_unavailable";
}

impl Metrics {
    /// Metrics naming at most `relay_labels` distinct relays.
    pub fn new(relay_labels: usize) -> Self {
        let r = Registry::new();
        let metrics = Metrics {
            connections: r.gauge("rmb_relay_connections", "Open WebSocket sessions."),
            connections_total: r.counter(
                "rmb_relay_connections_total",
                "Sessions accepted since start.",
            ),
            messages_in: r.counter(
                "rmb_relay_messages_in_total",
                "Envelopes received from sessions.",
            ),
            messages_out: r.counter(
                "rmb_relay_messages_out_total",
                "Envelopes written to sessions.",
            ),
            bytes_in: r.counter("rmb_relay_bytes_in_total", "Bytes received from sessions."),
            bytes_out: r.counter("rmb_relay_bytes_out_total", "Bytes written to sessions."),
            queued_frames: r.gauge(
                "rmb_relay_queued_frames",
                "Envelopes waiting in session queues.",
            ),
            queue_dropped: r.counter(
                "rmb_relay_queue_dropped_total",
                "Oldest envelopes dropped from full queues.",
            ),
            expired: r.counter(
                "rmb_relay_expired_total",
                "Envelopes dropped because they expired.",
            ),
            rate_limited: r.counter(
                "rmb_relay_rate_limited_total",
                "Envelopes refused by the per-twin rate limit.",
            ),
            federation_received: r.counter(
                "rmb_relay_federation_received_total",
                "Envelopes accepted from other relays.",
            ),
            federation_received_bytes: r.counter(
                "rmb_relay_federation_received_bytes_total",
                "Bytes of envelopes accepted from other relays.",
            ),
            duplicates: r.counter(
                "rmb_relay_duplicates_total",
                "Copies of envelopes already accepted, dropped.",
            ),
            dedup_evicted: r.counter(
                "rmb_relay_dedup_evicted_total",
                "Envelopes forgotten by the de-duplication memory before their deadline to make room.",
            ),
            idle_closed: r.counter(
                "rmb_relay_idle_closed_total",
                "Sessions closed because nothing was received for the idle timeout.",
            ),
            read_bytes_held: r.gauge(
                "rmb_relay_read_bytes_held",
                "Bytes read from sockets and not yet handed on (the read budget in use).",
            ),
            read_budget_exhausted: r.counter(
                "rmb_relay_read_budget_exhausted_total",
                "Sessions closed (1013) or federation posts refused (503) after waiting too long for room in the read budget.",
            ),
            unconfirmed_requests_dropped: r.counter(
                "rmb_relay_unconfirmed_requests_dropped_total",
                "Requests that may have reached a connection that broke, not written again.",
            ),
            auth_failures: r.counter_vec(
                "rmb_relay_auth_failures_total",
                "Session upgrades refused, by reason.",
                &["reason"],
            ),
            protocol_violations: r.counter_vec(
                "rmb_relay_protocol_violations_total",
                "Frames that broke the protocol, by kind (the session is closed).",
                &["kind"],
            ),
            rejected: r.counter_vec(
                "rmb_relay_rejected_total",
                "Envelopes refused, by reason.",
                &["reason"],
            ),
            // The original relay's names, for dashboards built on it: a success, or
            // any attempt that did not deliver.
            federation_success: r.counter_vec(
                "federation_message_success",
                "number of messages sent successfully to another relay",
                &["relay"],
            ),
            federation_error: r.counter_vec(
                "federation_message_error",
                "number of messages that failed to reach another relay",
                &["relay"],
            ),
            federation: r.counter_vec(
                "rmb_relay_federation_total",
                "Federation deliveries to other relays, by relay and result.",
                &["relay", "result"],
            ),
            relay_labels: BoundedLabels::new(relay_labels),
            registry: r,
        };
        metrics.register_original();
        metrics
    }

    pub fn inc(counter: &Counter) {
        counter.inc();
    }

    pub fn add(counter: &Counter, n: u64) {
        counter.add(n);
    }

    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures.inc(&[reason]);
    }

    pub fn protocol_violation(&self, kind: &str) {
        self.protocol_violations.inc(&[kind]);
    }

    pub fn rejected(&self, reason: &str) {
        self.rejected.inc(&[reason]);
    }

    pub fn federation(&self, relay: &str, result: &str) {
        let relay = self.relay_labels.value(relay);
        if result == "ok" {
            self.federation_success.inc(&[&relay]);
        } else {
            self.federation_error.inc(&[&relay]);
        }
        self.federation.inc(&[&relay, result]);
    }

    /// Value of a labelled counter as rendered, e.g. `("rmb_relay_rejected_total",
    /// "reason=\"unroutable\"")` (for tests).
    pub fn labelled(&self, name: &str, label: &str) -> u64 {
        self.registry.sample(name, label).map_or(0, |v| v as u64)
    }

    pub fn render(&self) -> String {
        self.registry.render()
    }

    /// The unlabelled series of the original relay (threefoldtech/rmb-rs), under its
    /// names, so its dashboards and alerts keep working: envelopes (and bytes) received
    /// from sessions and from other relays, envelopes (and bytes) written to sessions,
    /// and open sessions as the connections of one "worker".
    fn register_original(&self) {
        let r = &self.registry;
        let sum = |a: &Counter, b: &Counter| {
            let (a, b) = (a.clone(), b.clone());
            move || as_i64(a.get().saturating_add(b.get()))
        };
        let one = |a: &Counter| {
            let a = a.clone();
            move || as_i64(a.get())
        };
        r.computed(
            "relay_message_rx",
            "number of messages received by relay",
            Kind::Counter,
            &[],
            sum(&self.messages_in, &self.federation_received),
        );
        r.computed(
            "relay_message_tx",
            "number of messages forwarded by relay",
            Kind::Counter,
            &[],
            one(&self.messages_out),
        );
        r.computed(
            "relay_message_rx_bytes",
            "size of messages received by relay in bytes",
            Kind::Counter,
            &[],
            sum(&self.bytes_in, &self.federation_received_bytes),
        );
        r.computed(
            "relay_message_tx_bytes",
            "size of messages forwarded by relay in bytes",
            Kind::Counter,
            &[],
            one(&self.bytes_out),
        );
        let connections = self.connections.clone();
        r.computed(
            "relay_worker_connections",
            "number of connections handled by this worker",
            Kind::Gauge,
            &[("worker", "0")],
            move || connections.get(),
        );
    }
}

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        Metrics::inc(&m.messages_in);
        m.auth_failure(auth_failure::EXPIRED);
        m.auth_failure(auth_failure::EXPIRED);
        m.federation("r1:8080", "ok");
        let text = m.render();
        assert!(text.contains("rmb_relay_messages_in_total 1\n"));
        assert!(text.contains("rmb_relay_auth_failures_total{reason=\"expired\"} 2\n"));
        assert!(text.contains("rmb_relay_federation_total{relay=\"r1:8080\",result=\"ok\"} 1\n"));
        assert!(text.contains("federation_message_success{relay=\"r1:8080\"} 1\n"));
        assert_eq!(
            m.labelled("rmb_relay_auth_failures_total", "reason=\"expired\""),
            2
        );
    }

    #[test]
    fn the_original_names_sum_sessions_and_federation() {
        let m = Metrics::default();
        Metrics::add(&m.messages_in, 2);
        Metrics::inc(&m.federation_received);
        Metrics::add(&m.bytes_in, 10);
        Metrics::add(&m.federation_received_bytes, 5);
        m.connections.set(3);
        let text = m.render();
        assert!(text.contains("\nrelay_message_rx 3\n"), "{text}");
        assert!(text.contains("\nrelay_message_rx_bytes 15\n"), "{text}");
        assert!(
            text.contains("relay_worker_connections{worker=\"0\"} 3\n"),
            "{text}"
        );
    }

    #[test]
    fn relay_names_are_bounded_across_families() {
        let m = Metrics::new(1);
        m.federation("a:1", "ok");
        m.federation("b:1", "failed");
        assert_eq!(m.labelled("federation_message_error", "relay=\"other\""), 1);
        assert_eq!(
            m.labelled(
                "rmb_relay_federation_total",
                "relay=\"other\",result=\"failed\""
            ),
            1
        );
    }
}

//! The relay's Prometheus metrics.
//!
//! Counters are plain atomics owned by one relay instance (not a process-global
//! recorder): tests and `rmb up` run several relays in one process, and each must report
//! its own numbers. `render` writes the Prometheus text format for `GET /metrics`.

use std::collections::HashSet;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use dashmap::DashMap;
use parking_lot::Mutex;

/// Distinct relay names used as label values by default.
pub const DEFAULT_RELAY_LABELS: usize = 100;

/// Label values that come from outside (relay names twins registered): the first `cap`
/// distinct ones are used as they are (made safe for the text format), later ones are
/// counted as `other`, so an attacker cannot grow the metrics without bound.
pub struct BoundedLabels {
    cap: usize,
    admitted: Mutex<HashSet<String>>,
}

impl BoundedLabels {
    pub fn new(cap: usize) -> Self {
        BoundedLabels {
            cap,
            admitted: Mutex::default(),
        }
    }

    /// The label value to use for `value`.
    pub fn value(&self, value: &str) -> String {
        let safe = label_safe(value);
        let mut admitted = self.admitted.lock();
        if admitted.contains(&safe) {
            return safe;
        }
        if admitted.len() < self.cap {
            admitted.insert(safe.clone());
            return safe;
        }
        "other".into()
    }
}

/// Host-name characters only (others become `_`), at most 64: nothing that could break
/// out of a quoted label value.
fn label_safe(value: &str) -> String {
    value
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_:[]".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub struct Metrics {
    pub connections: AtomicI64,
    pub connections_total: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub queued_frames: AtomicI64,
    pub queue_dropped: AtomicU64,
    pub expired: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Times a session's reader stopped reading because its twin was over the limit.
    pub rate_limit_pauses: AtomicU64,
    pub federation_received: AtomicU64,
    pub federation_received_bytes: AtomicU64,
    /// Copies of envelopes already accepted, dropped (D1a).
    pub duplicates: AtomicU64,
    /// Envelopes forgotten by the de-duplication memory before their deadline, to make
    /// room (a copy of one of them would get through).
    pub dedup_evicted: AtomicU64,
    /// Sessions closed because nothing was received for the idle timeout.
    pub idle_closed: AtomicU64,
    /// Requests that may have reached a connection that broke, not sent again (D1).
    pub unconfirmed_requests_dropped: AtomicU64,
    /// Labelled counters: (metric name, label text) → count.
    labelled: DashMap<(&'static str, String), AtomicU64>,
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
        Metrics {
            connections: AtomicI64::default(),
            connections_total: AtomicU64::default(),
            messages_in: AtomicU64::default(),
            messages_out: AtomicU64::default(),
            bytes_in: AtomicU64::default(),
            bytes_out: AtomicU64::default(),
            queued_frames: AtomicI64::default(),
            queue_dropped: AtomicU64::default(),
            expired: AtomicU64::default(),
            rate_limited: AtomicU64::default(),
            rate_limit_pauses: AtomicU64::default(),
            federation_received: AtomicU64::default(),
            federation_received_bytes: AtomicU64::default(),
            duplicates: AtomicU64::default(),
            dedup_evicted: AtomicU64::default(),
            idle_closed: AtomicU64::default(),
            unconfirmed_requests_dropped: AtomicU64::default(),
            labelled: DashMap::default(),
            relay_labels: BoundedLabels::new(relay_labels),
        }
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Increments `name{label}` where `label` is e.g. `reason="expired"`.
    pub fn inc_labelled(&self, name: &'static str, label: String) {
        self.labelled
            .entry((name, label))
            .or_default()
            .fetch_add(1, Relaxed);
    }

    pub fn auth_failure(&self, reason: &str) {
        self.inc_labelled(
            "rmb_relay_auth_failures_total",
            format!("reason=\"{reason}\""),
        );
    }

    pub fn protocol_violation(&self, kind: &str) {
        self.inc_labelled(
            "rmb_relay_protocol_violations_total",
            format!("kind=\"{kind}\""),
        );
    }

    pub fn rejected(&self, reason: &str) {
        self.inc_labelled("rmb_relay_rejected_total", format!("reason=\"{reason}\""));
    }

    pub fn federation(&self, relay: &str, result: &str) {
        let relay = self.relay_labels.value(relay);
        // The original relay's names, for dashboards built on it: a success, or any
        // attempt that did not deliver.
        let original = if result == "ok" {
            "federation_message_success"
        } else {
            "federation_message_error"
        };
        self.inc_labelled(original, format!("relay=\"{relay}\""));
        self.inc_labelled(
            "rmb_relay_federation_total",
            format!("relay=\"{relay}\",result=\"{result}\""),
        );
    }

    /// Value of a labelled counter (for tests).
    pub fn labelled(&self, name: &'static str, label: &str) -> u64 {
        self.labelled
            .get(&(name, label.to_string()))
            .map_or(0, |c| c.load(Relaxed))
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut put = |name: &str, help: &str, kind: &str, value: i64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let g = |a: &AtomicI64| a.load(Relaxed);
        let c = |a: &AtomicU64| a.load(Relaxed) as i64;
        put(
            "rmb_relay_connections",
            "Open WebSocket sessions.",
            "gauge",
            g(&self.connections),
        );
        put(
            "rmb_relay_connections_total",
            "Sessions accepted since start.",
            "counter",
            c(&self.connections_total),
        );
        put(
            "rmb_relay_messages_in_total",
            "Envelopes received from sessions.",
            "counter",
            c(&self.messages_in),
        );
        put(
            "rmb_relay_messages_out_total",
            "Envelopes written to sessions.",
            "counter",
            c(&self.messages_out),
        );
        put(
            "rmb_relay_bytes_in_total",
            "Bytes received from sessions.",
            "counter",
            c(&self.bytes_in),
        );
        put(
            "rmb_relay_bytes_out_total",
            "Bytes written to sessions.",
            "counter",
            c(&self.bytes_out),
        );
        put(
            "rmb_relay_queued_frames",
            "Envelopes waiting in session queues.",
            "gauge",
            g(&self.queued_frames),
        );
        put(
            "rmb_relay_queue_dropped_total",
            "Oldest envelopes dropped from full queues.",
            "counter",
            c(&self.queue_dropped),
        );
        put(
            "rmb_relay_expired_total",
            "Envelopes dropped because they expired.",
            "counter",
            c(&self.expired),
        );
        put(
            "rmb_relay_rate_limited_total",
            "Envelopes refused by the per-twin rate limit.",
            "counter",
            c(&self.rate_limited),
        );
        put(
            "rmb_relay_rate_limit_pauses_total",
            "Times a session was not read until its twin's next rate-limit window.",
            "counter",
            c(&self.rate_limit_pauses),
        );
        put(
            "rmb_relay_federation_received_total",
            "Envelopes accepted from other relays.",
            "counter",
            c(&self.federation_received),
        );
        put(
            "rmb_relay_duplicates_total",
            "Copies of envelopes already accepted, dropped.",
            "counter",
            c(&self.duplicates),
        );
        put(
            "rmb_relay_dedup_evicted_total",
            "Envelopes forgotten by the de-duplication memory before their deadline to make room.",
            "counter",
            c(&self.dedup_evicted),
        );
        put(
            "rmb_relay_idle_closed_total",
            "Sessions closed because nothing was received for the idle timeout.",
            "counter",
            c(&self.idle_closed),
        );
        put(
            "rmb_relay_unconfirmed_requests_dropped_total",
            "Requests that may have reached a connection that broke, not written again.",
            "counter",
            c(&self.unconfirmed_requests_dropped),
        );
        self.render_original(&mut out);
        let mut rows: Vec<_> = self
            .labelled
            .iter()
            .map(|e| (e.key().0, e.key().1.clone(), e.value().load(Relaxed)))
            .collect();
        rows.sort();
        let mut last = "";
        for (name, label, value) in rows {
            if name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            let _ = writeln!(out, "{name}{{{label}}} {value}");
        }
        out
    }
}

impl Metrics {
    /// The unlabelled series of the original relay (threefoldtech/rmb-rs), under its
    /// names, so its dashboards and alerts keep working: envelopes (and bytes) received
    /// from sessions and from other relays, envelopes (and bytes) written to sessions,
    /// and open sessions as the connections of one "worker".
    fn render_original(&self, out: &mut String) {
        let c = |a: &AtomicU64| a.load(Relaxed);
        let rx = c(&self.messages_in).saturating_add(c(&self.federation_received));
        let rx_bytes = c(&self.bytes_in).saturating_add(c(&self.federation_received_bytes));
        for (name, help, value) in [
            (
                "relay_message_rx",
                "number of messages received by relay",
                rx,
            ),
            (
                "relay_message_tx",
                "number of messages forwarded by relay",
                c(&self.messages_out),
            ),
            (
                "relay_message_rx_bytes",
                "size of messages received by relay in bytes",
                rx_bytes,
            ),
            (
                "relay_message_tx_bytes",
                "size of messages forwarded by relay in bytes",
                c(&self.bytes_out),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP relay_worker_connections number of connections handled by this worker\n\
             # TYPE relay_worker_connections gauge\nrelay_worker_connections{{worker=\"0\"}} {}",
            self.connections.load(Relaxed)
        );
    }
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
        assert_eq!(
            m.labelled("rmb_relay_auth_failures_total", "reason=\"expired\""),
            2
        );
    }

    #[test]
    fn relay_label_values_are_bounded_and_safe() {
        let labels = BoundedLabels::new(2);
        assert_eq!(labels.value("a\"} 1\nevil"), "a___1_evil");
        assert_eq!(labels.value("b:80"), "b:80");
        assert_eq!(labels.value("c"), "other");
        assert_eq!(labels.value("b:80"), "b:80", "admitted values stay");
        assert_eq!(labels.value(&"x".repeat(100)).len(), 5, "other");
    }
}

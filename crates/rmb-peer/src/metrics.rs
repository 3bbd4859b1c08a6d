//! `GET /metrics` of rmb-peer (off unless `--metrics` is given; loopback by default),
//! on the same per-instance [`Registry`] design as the relay and the registrar.
//!
//! What helps at 3 a.m.: requests in from apps and out to relays, replies both ways,
//! errors by kind (malformed, refused, expired, Redis), copies dropped and replies
//! repeated by the receiver memory, requests re-sent, relay links up, what is held in
//! memory, and the length of the peer's Redis lists (read when scraped, so a stuck
//! service or a peer that stopped taking shows as a growing number).

use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use rmb_core::peer_api::{SYSTEM_LOCAL, SYSTEM_REPLY};
use rmb_metrics::{Gauge, GaugeVec, Kind, Registry};
use tokio::net::TcpListener;

use crate::peer::Shared;
use crate::redis_conn::Redis;
use crate::store::{LOCAL_PROCESSING, OUTBOX, REPLY_PROCESSING};

/// Where `--metrics` listens when given without an address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9464";

/// Lists whose length is reported, and the set of requests waiting for replies.
const LISTS: [&str; 4] = [
    SYSTEM_LOCAL,
    SYSTEM_REPLY,
    LOCAL_PROCESSING,
    REPLY_PROCESSING,
];

/// A scrape waits at most this long for Redis, then reports it down.
const REDIS_WAIT: Duration = Duration::from_secs(2);

/// A running peer's metrics; [`crate::Peer::metrics`].
pub struct PeerMetrics {
    registry: Registry,
    lengths: GaugeVec,
    redis_up: Gauge,
    redis: tokio::sync::Mutex<Redis>,
}

impl PeerMetrics {
    /// Adds the series read from `shared` (held weakly: the metrics do not keep a
    /// stopped peer alive) to the registry that already holds the [`crate::Stats`].
    pub(crate) fn new(registry: Registry, shared: &Arc<Shared>) -> PeerMetrics {
        let from = |read: fn(&Shared) -> u64| {
            let weak: Weak<Shared> = Arc::downgrade(shared);
            move || {
                weak.upgrade()
                    .map_or(0, |s| i64::try_from(read(&s)).unwrap_or(i64::MAX))
            }
        };
        let r = &registry;
        r.computed(
            "rmb_peer_copies_dropped_total",
            "Envelopes from relays already seen (copies), dropped before reaching a service or an app.",
            Kind::Counter,
            &[],
            from(|s| s.memory.copies_dropped.get()),
        );
        r.computed(
            "rmb_peer_replies_repeated_total",
            "Copies of requests already answered, answered again with the kept reply.",
            Kind::Counter,
            &[],
            from(|s| s.memory.replies_repeated.get()),
        );
        r.computed(
            "rmb_peer_requests_resent_total",
            "Copies of unanswered requests sent again (--resend).",
            Kind::Counter,
            &[],
            from(|s| s.client.requests_resent()),
        );
        r.computed(
            "rmb_peer_relays_connected",
            "Relay links up.",
            Kind::Gauge,
            &[],
            from(|s| s.client.connected_relays() as u64),
        );
        r.computed(
            "rmb_peer_local_requests_in_flight",
            "Requests of local apps sent and waiting for replies, held in memory.",
            Kind::Gauge,
            &[],
            from(|s| s.backlogs.usage().0 as u64),
        );
        r.computed(
            "rmb_peer_remote_requests_in_flight",
            "Requests of remote twins handed to services and not yet answered, held in memory.",
            Kind::Gauge,
            &[],
            from(|s| s.requests.usage().0 as u64),
        );
        r.computed(
            "rmb_peer_pending_write_bytes",
            "Bytes waiting in memory to be written to Redis (Redis down or slow).",
            Kind::Gauge,
            &[],
            from(|s| {
                let free = s.pending.available_permits();
                s.limits.pending_bytes.saturating_sub(free) as u64
            }),
        );
        let lengths = r.gauge_vec(
            "rmb_peer_redis_key_length",
            "Entries in the peer's Redis lists (and the outbox set), read when scraped.",
            &["key"],
        );
        let redis_up = r.gauge(
            "rmb_peer_redis_up",
            "1 if Redis answered the last scrape's length queries in time, else 0.",
        );
        let redis = Redis::new(&shared.redis_url, shared.backoff)
            .expect("the redis URL was checked at start");
        PeerMetrics {
            registry,
            lengths,
            redis_up,
            redis: tokio::sync::Mutex::new(redis),
        }
    }

    /// The Prometheus text, after reading the lengths of the peer's Redis keys.
    pub async fn render(&self) -> String {
        let lengths = tokio::time::timeout(REDIS_WAIT, self.read_lengths()).await;
        match lengths {
            Ok(Ok((lists, outbox))) => {
                for (key, len) in LISTS.iter().zip(lists) {
                    self.lengths.set(&[key], len);
                }
                self.lengths.set(&[OUTBOX], outbox);
                self.redis_up.set(1);
            }
            Ok(Err(e)) => {
                tracing::debug!("metrics: Redis did not answer: {e}");
                self.redis.lock().await.reset();
                self.redis_up.set(0);
            }
            Err(_) => {
                self.redis.lock().await.reset();
                self.redis_up.set(0);
            }
        }
        self.registry.render()
    }

    async fn read_lengths(&self) -> redis::RedisResult<(Vec<i64>, i64)> {
        let mut conn = self.redis.lock().await.conn(Duration::ZERO).await?;
        let mut pipe = redis::pipe();
        for list in LISTS {
            pipe.llen(list);
        }
        pipe.scard(OUTBOX);
        let (a, b, c, d, outbox): (i64, i64, i64, i64, i64) = pipe.query_async(&mut conn).await?;
        Ok((vec![a, b, c, d], outbox))
    }

    /// The value of one rendered series (see [`Registry::sample`]), without reading
    /// Redis: for tests.
    pub fn sample(&self, name: &str, labels: &str) -> Option<f64> {
        self.registry.sample(name, labels)
    }
}

/// Serves `GET /metrics` on `listener` through the servers' one HTTP loop until
/// `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<PeerMetrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/metrics", get(metrics_text))
        .with_state(metrics);
    rmb_http::serve(listener, router, rmb_http::ServeLimits::default(), shutdown).await
}

async fn metrics_text(State(metrics): State<Arc<PeerMetrics>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render().await,
    )
}

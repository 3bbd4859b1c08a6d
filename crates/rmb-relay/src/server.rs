//! The HTTP side: WebSocket upgrade with JWT authentication (§3.1), the federation
//! endpoint, `/metrics` and `/health`, plus start-up and graceful shutdown.
//!
//! Authentication happens before the upgrade so a refused client gets a plain HTTP
//! status and reason. The connection limit is checked there too: past it, new clients
//! get 503 while existing sessions are untouched.
//!
//! Shutdown: stop accepting, close every session with a close frame (1001), let the
//! backend keep what it can (Redis: local queues go back to Redis), wait for tasks.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::memory::MemoryBackend;
use crate::backend::redis::RedisBackend;
use crate::backend::Backend;
use crate::config::Config;
use crate::directory::TwinDirectory;
use crate::metrics::{auth_failure, Metrics};
use crate::session_key::SessionKey;
use crate::state::RelayState;
use crate::{connection, federation};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot connect to redis at {url}: {source}")]
    Redis {
        url: String,
        source: ::redis::RedisError,
    },
    #[error("cannot build the federation HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot read the listener address: {0}")]
    Io(#[from] std::io::Error),
}

/// A running relay. Dropping it without [`RelayHandle::shutdown`] still stops the
/// relay (sessions are closed, tasks stop) but does not wait for it.
pub struct RelayHandle {
    addr: SocketAddr,
    state: Arc<RelayState>,
    server: JoinHandle<()>,
}

impl RelayHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// The budget of bytes read and not yet handed on.
    pub fn read_budget(&self) -> Option<&rmb_http::ReadBudget> {
        self.state.config.http.read_budget.as_ref()
    }

    /// Sessions currently connected to this process (or upgrading).
    pub fn open_connections(&self) -> usize {
        self.state.open_connections()
    }

    /// Graceful shutdown; returns when every session is closed and queues are saved.
    pub async fn shutdown(mut self) {
        self.state.shutdown.cancel();
        let _ = (&mut self.server).await;
        self.state.tasks.close();
        self.state.tasks.wait().await;
        self.state.backend.shutdown().await;
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
    }
}

/// Starts a relay on `listener` with the twins of `directory`.
pub async fn start(
    listener: TcpListener,
    mut config: Config,
    directory: Arc<dyn TwinDirectory>,
) -> Result<RelayHandle, StartError> {
    let addr = listener.local_addr()?;
    // Messages of up to 64 MiB are accepted, so what sockets have delivered and the
    // relay has not handed on yet is bounded as a whole (see docs/relay.md).
    config.http.read_budget = Some(rmb_http::ReadBudget::with_room_for(
        config.read_budget,
        config.max_envelope_size,
        config.read_budget_wait,
    ));
    let metrics = Arc::new(Metrics::new(config.metric_relay_labels));
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let backend: Arc<dyn Backend> = match &config.redis_url {
        None => Arc::new(MemoryBackend::new(&config, metrics.clone())),
        Some(url) => Arc::new(
            RedisBackend::connect(
                url,
                config.queue_bounds(),
                config.dedup_capacity,
                metrics.clone(),
                config.redis_heartbeat,
                shutdown.clone(),
                &tasks,
            )
            .await
            .map_err(|source| StartError::Redis {
                url: url.clone(),
                source,
            })?,
        ),
    };
    let state = Arc::new(RelayState::new(
        config,
        directory,
        backend,
        metrics,
        shutdown.clone(),
        tasks,
    )?);
    state.tasks.spawn(sweeper(state.clone()));
    if let Some(outbox) = state.backend.outbox() {
        crate::outbox::start(&state, outbox);
    }
    let app = Router::new()
        .route("/", get(websocket).post(federation::receive))
        .route("/metrics", get(metrics_text))
        .route("/health", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(state.config.max_envelope_size))
        .with_state(state.clone());
    let stop = shutdown.clone();
    let limits = state.config.http.clone();
    let server = tokio::spawn(async move {
        // Header, body and idle timeouts and a cap on open sockets (design D5): a
        // client that connects and trickles or sends nothing cannot hold sockets.
        let serve = rmb_http::serve(listener, app, limits, stop.cancelled_owned());
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "relay server stopped with an error");
        }
    });
    tracing::info!(%addr, domains = ?state.config.domains, backend = if state.config.redis_url.is_some() { "redis" } else { "memory" }, rate_limit = %state.limiter.describe(), "relay listening");
    Ok(RelayHandle {
        addr,
        state,
        server,
    })
}

/// Periodically drops expired queued envelopes and forgets old rate-limit windows.
async fn sweeper(state: Arc<RelayState>) {
    let mut tick = tokio::time::interval(state.config.sweep_interval);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = state.clock.now();
        let expired = state.backend.sweep(now).await;
        if expired > 0 {
            Metrics::add(&state.metrics.expired, expired as u64);
        }
        state.limiter.sweep(now);
        update_gauges(&state);
    }
}

/// Gauges are read from what they measure, not kept by hand.
fn update_gauges(state: &RelayState) {
    let metrics = &state.metrics;
    let queued = state.backend.local_queue_depth();
    metrics
        .queued_frames
        .set(i64::try_from(queued).unwrap_or(i64::MAX));
    let open = state.open_connections();
    metrics
        .connections
        .set(i64::try_from(open).unwrap_or(i64::MAX));
    if let Some(budget) = &state.config.http.read_budget {
        let held = i64::try_from(budget.held()).unwrap_or(i64::MAX);
        metrics.read_bytes_held.set(held);
    }
}

async fn metrics_text(State(state): State<Arc<RelayState>>) -> impl IntoResponse {
    update_gauges(&state);
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

fn refuse(state: &RelayState, status: StatusCode, reason: &str, message: String) -> Response {
    state.metrics.auth_failure(reason);
    tracing::debug!(%status, %message, "connection refused");
    (status, message).into_response()
}

/// `GET /?<jwt>`: authenticate, then upgrade to a WebSocket session.
async fn websocket(
    State(state): State<Arc<RelayState>>,
    RawQuery(query): RawQuery,
    hold: Option<axum::Extension<rmb_http::ReadHold>>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let token = query.unwrap_or_default();
    if token.is_empty() {
        return refuse(&state, StatusCode::BAD_REQUEST, auth_failure::MISSING_TOKEN,
            "missing token: connect with the JWT as the whole query string, e.g. wss://relay/?<jwt>".into());
    }
    let parsed = match rmb_core::jwt::parse(&token) {
        Ok(t) => t,
        Err(e) => {
            return refuse(
                &state,
                StatusCode::BAD_REQUEST,
                auth_failure::MALFORMED,
                e.to_string(),
            )
        }
    };
    let twin_id = parsed.claims().sub;
    let twin = match state.directory.twin(twin_id).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            return refuse(
                &state,
                StatusCode::UNAUTHORIZED,
                auth_failure::UNKNOWN_TWIN,
                format!("twin {twin_id} is not registered"),
            )
        }
        Err(e) => {
            // The details (the registrar's URL, the transport error) go to the log only.
            tracing::warn!(twin_id, error = %e, "registrar lookup failed during authentication");
            return refuse(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                auth_failure::REGISTRAR_UNAVAILABLE,
                format!(
                    "cannot check twin {twin_id} now: the registrar is unavailable, retry later"
                ),
            );
        }
    };
    // The exact clock, not the coarse one: a token is checked once per connection, and
    // up to 100 ms of staleness would let one live a second past its `exp`.
    let now = rmb_core::time::now();
    let claims = match parsed.verify(&twin.public_key, now, &state.config.jwt) {
        Ok(c) => c,
        Err(e) => {
            let reason = match e {
                rmb_core::JwtError::Expired { .. } => auth_failure::EXPIRED,
                rmb_core::JwtError::BadSignature(_) => auth_failure::BAD_SIGNATURE,
                _ => auth_failure::INVALID_TIME,
            };
            return refuse(&state, StatusCode::UNAUTHORIZED, reason, e.to_string());
        }
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let Ok(slot) = state.connections.clone().try_acquire_owned() else {
        tracing::warn!(
            max = state.config.max_connections,
            "connection limit reached"
        );
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "relay is at its connection limit, retry later",
        )
            .into_response();
    };
    let key = SessionKey::new(claims.sub, claims.sid);
    let max = state.config.max_envelope_size;
    let tasks = state.tasks.clone();
    let drops_copies = state.config.dedup_capacity > 0;
    let mut response = upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(state.config.read_buffer_size)
        // A failed upgrade drops the `on_upgrade` closure, and the slot with it.
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "websocket upgrade failed"))
        // The session's future is returned as it is, not awaited inside another one:
        // a wrapper would hold it twice (its capture and its awaitee), 4 KiB more per
        // idle session.
        .on_upgrade(move |socket| {
            let hold = hold.map(|axum::Extension(h)| h);
            tasks.track_future(connection::run(socket, key, state, slot, hold))
        });
    // D1a: copies of what this relay accepted are dropped, so a client may re-send a
    // frame the relay did not confirm on a new connection here. Others ignore it. A relay
    // configured to remember nothing (`dedup_capacity` 0) must not say so.
    if drops_copies {
        response
            .headers_mut()
            .insert(DEDUP_HEADER, HeaderValue::from_static("1"));
    }
    response
}

/// The upgrade-response header saying this relay drops copies of accepted envelopes.
pub const DEDUP_HEADER: &str = "rmb-dedup";

//! Federation (§3.3): forwarding envelopes to the relays of twins that live elsewhere,
//! and accepting envelopes other relays forward to us.
//!
//! Outgoing: each envelope is tried against the destination twin's relays, best-ranked
//! first; 202 is success, any other 4xx is final, timeouts and 5xx move on to the next
//! relay. When every relay failed, the round is retried with back-off until the envelope
//! expires (one round only with `fail-fast`). A request that cannot be delivered gets a
//! relay error back to its sender.
//!
//! Incoming: unlike the original relay, we accept only envelopes whose signature
//! verifies against the source twin's registered key, so the endpoint cannot be used
//! to inject forged traffic; the body size is limited like a WebSocket frame.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use rmb_core::prost::Message as _;
use rmb_core::{envelope, Envelope};

use crate::metrics::Metrics;
use crate::route::{self, Forward};
use crate::session_key::SessionKey;
use crate::state::{DispatchError, Dispatched, RelayState};

/// Queues one envelope for federation to `relays`. Never blocks the caller.
pub fn submit(
    state: &Arc<RelayState>,
    frame: Bytes,
    fwd: Forward,
    sender: SessionKey,
    uid: String,
    relays: Vec<String>,
) {
    let state = state.clone();
    let pending = state.federation_pending.fetch_add(1, Ordering::Relaxed);
    if pending >= state.config.federation_backlog {
        state.federation_pending.fetch_sub(1, Ordering::Relaxed);
        state.metrics.rejected("federation_backlog_full");
        if fwd.is_request {
            let st = state.clone();
            state.tasks.spawn(async move {
                st.send_relay_error(
                    &sender,
                    &uid,
                    "relay federation backlog is full, retry later".into(),
                )
                .await;
            });
        }
        return;
    }
    let tasks = state.tasks.clone();
    tasks.spawn(async move {
        let result = deliver(&state, &frame, &fwd, &relays).await;
        state.federation_pending.fetch_sub(1, Ordering::Relaxed);
        if let Err(reason) = result {
            tracing::info!(uid, destination = %fwd.destination, %reason, "federation failed");
            if fwd.is_request {
                state.send_relay_error(&sender, &uid, reason).await;
            }
        }
    });
}

/// Tries the relays until one accepts; `Err` carries the reason for the sender.
async fn deliver(
    state: &Arc<RelayState>,
    frame: &Bytes,
    fwd: &Forward,
    relays: &[String],
) -> Result<(), String> {
    if relays.is_empty() {
        return Err(format!(
            "twin {} has no relays registered",
            fwd.destination.twin
        ));
    }
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut failures = Vec::new();
        for relay in state.ranker.rank(relays, Instant::now()) {
            let _slot = state
                .federation_slots
                .acquire()
                .await
                .map_err(|_| "relay shutting down")?;
            // An attempt may not outlive the envelope: the sender of a request must
            // hear of the failure while it still waits for an answer.
            let left = time_left(fwd.deadline);
            if left.is_zero() {
                failures.push(format!("{relay}: not tried, the envelope expired"));
                break;
            }
            let timeout = state.config.federation_timeout.min(left);
            match post(state, &relay, frame.clone(), timeout).await {
                Attempt::Accepted => {
                    state.ranker.record(&relay, true, Instant::now());
                    state.metrics.federation(&relay, "ok");
                    return Ok(());
                }
                Attempt::Refused(reason) => {
                    // The relay answered: it is up, the envelope is the problem.
                    state.ranker.record(&relay, true, Instant::now());
                    state.metrics.federation(&relay, "refused");
                    return Err(format!("relay {relay} refused the envelope: {reason}"));
                }
                Attempt::Failed(reason) => {
                    state.ranker.record(&relay, false, Instant::now());
                    state.metrics.federation(&relay, "failed");
                    tracing::debug!(%relay, %reason, "federation attempt failed");
                    failures.push(format!("{relay}: {reason}"));
                }
            }
        }
        let summary = format!(
            "could not reach any relay of twin {} ({})",
            fwd.destination.twin,
            failures.join("; ")
        );
        if fwd.fail_fast || backoff >= time_left(fwd.deadline) {
            return Err(summary);
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return Err(summary),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Margin kept before an envelope's deadline so that a relay error written when
/// federation gives up reaches the sender before the request expires.
const ERROR_MARGIN: Duration = Duration::from_millis(200);

/// Time left before the unix second `deadline`, less [`ERROR_MARGIN`].
fn time_left(deadline: u64) -> Duration {
    let deadline = std::time::UNIX_EPOCH + Duration::from_secs(deadline);
    deadline
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default()
        .saturating_sub(ERROR_MARGIN)
}

enum Attempt {
    Accepted,
    Refused(String),
    Failed(String),
}

async fn post(state: &RelayState, relay: &str, body: Bytes, timeout: Duration) -> Attempt {
    let url = format!("{}://{}/", state.config.federation_scheme, relay);
    let response = state
        .http
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(body)
        .timeout(timeout)
        .send()
        .await;
    match response {
        Err(e) if e.is_timeout() => Attempt::Failed("timeout".into()),
        Err(e) => Attempt::Failed(format!("unreachable ({})", e.without_url())),
        Ok(r) if r.status() == StatusCode::ACCEPTED => Attempt::Accepted,
        Ok(r) if r.status().is_client_error() => {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            Attempt::Refused(format!("{status} {}", text.trim()))
        }
        Ok(r) => Attempt::Failed(format!("HTTP {}", r.status())),
    }
}

/// `POST /`: an envelope forwarded by another relay.
pub async fn receive(State(state): State<Arc<RelayState>>, body: Bytes) -> (StatusCode, String) {
    match accept(&state, body).await {
        Ok(()) => {
            Metrics::inc(&state.metrics.federation_received);
            (StatusCode::ACCEPTED, String::new())
        }
        Err((status, reason)) => {
            tracing::debug!(%status, %reason, "federation post refused");
            state.metrics.rejected("federation_refused");
            (status, reason)
        }
    }
}

async fn accept(state: &RelayState, body: Bytes) -> Result<(), (StatusCode, String)> {
    let bad = |s: StatusCode, m: String| (s, m);
    let env = Envelope::decode(&body[..]).map_err(|e| {
        bad(
            StatusCode::BAD_REQUEST,
            format!("body is not a valid protobuf envelope: {e}"),
        )
    })?;
    let now = rmb_core::time::now();
    let source = env.source.as_ref().filter(|s| s.twin != 0).ok_or_else(|| {
        bad(
            StatusCode::BAD_REQUEST,
            "envelope has no source twin (unsigned relay envelopes are not federated)".into(),
        )
    })?;
    let destination = env
        .destination
        .as_ref()
        .filter(|d| d.twin != 0)
        .ok_or_else(|| {
            bad(
                StatusCode::BAD_REQUEST,
                "envelope has no destination".into(),
            )
        })?;
    if envelope::ttl(&env, now).is_none() {
        return Err(bad(StatusCode::BAD_REQUEST, "envelope expired".into()));
    }
    let twin = state
        .directory
        .twin(source.twin)
        .await
        .map_err(|e| bad(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
        .ok_or_else(|| {
            bad(
                StatusCode::UNAUTHORIZED,
                format!("source twin {} is not registered", source.twin),
            )
        })?;
    envelope::verify(&env, &twin.public_key).map_err(|e| {
        bad(
            StatusCode::UNAUTHORIZED,
            format!(
                "signature does not verify against twin {}'s key: {e}",
                source.twin
            ),
        )
    })?;
    // The same per-twin budget as on WebSockets: another relay (or anyone posting here)
    // must not be a way around it.
    if !state.limiter.allow(source.twin, body.len(), now) {
        Metrics::inc(&state.metrics.rate_limited);
        return Err(bad(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "rate limit exceeded for twin {}: at most {}",
                source.twin,
                state.limiter.describe()
            ),
        ));
    }
    let fwd = Forward {
        destination: SessionKey::of(destination),
        deadline: env.timestamp.saturating_add(env.expiration),
        is_request: route::is_request(env.message.as_ref()),
        fail_fast: envelope::is_fail_fast(&env),
    };
    match state.dispatch(&fwd, body).await {
        Ok(Dispatched::Delivered | Dispatched::Queued) => Ok(()),
        // Forwarding again could loop between relays that disagree about a twin.
        Ok(Dispatched::Elsewhere(_)) => Err(bad(
            StatusCode::NOT_FOUND,
            format!("twin {} does not live on this relay", destination.twin),
        )),
        Err(e @ (DispatchError::UnknownTwin(_) | DispatchError::Offline(_))) => {
            Err(bad(StatusCode::NOT_FOUND, e.to_string()))
        }
        Err(e) => Err(bad(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

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

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use rmb_core::prost::Message as _;
use rmb_core::proto::EnvelopeHeader;
use rmb_core::Envelope;

use crate::backend::BackendError;
use crate::dedup::SeenKeys;
use crate::mailbox::QueuedFrame;
use crate::metrics::Metrics;
use crate::outbound::{self, Attempt};
use crate::route::{self, Forward, ReplyTo};
use crate::state::{Outcome, Refusal, RelayState, Via};

/// Starts federating one envelope to `relays`; never waits for the other relay. With a
/// durable backend (Redis) the envelope goes into its outbox (returning once stored)
/// and [`crate::outbox`] federates it; otherwise a task of this process does, holding a
/// backlog permit for its whole life. `Err` when the backlog is full (nothing was
/// started); a later failure goes through the error policy ([`RelayState::refuse`])
/// toward `reply_to`.
pub async fn submit(
    state: &Arc<RelayState>,
    frame: QueuedFrame,
    fwd: Forward,
    reply_to: ReplyTo,
    relays: Vec<String>,
) -> Result<(), Refusal> {
    if let Some(outbox) = state.backend.outbox() {
        return match outbox.put(&frame).await {
            Ok(()) => Ok(()),
            Err(BackendError::OutboxFull { .. }) => Err(Refusal::FederationBacklogFull),
            Err(e) => Err(e.into()),
        };
    }
    let permit = state
        .federation_backlog
        .clone()
        .try_acquire_owned()
        .map_err(|_| Refusal::FederationBacklogFull)?;
    let bytes = u32::try_from(frame.data.len()).map_err(|_| Refusal::FederationBacklogFull)?;
    let bytes = state
        .federation_bytes
        .clone()
        .try_acquire_many_owned(bytes)
        .map_err(|_| Refusal::FederationBacklogFull)?;
    let state = state.clone();
    let tasks = state.tasks.clone();
    tasks.spawn(async move {
        let _permits = (permit, bytes);
        if let Err(reason) = deliver(&state, &frame.data, &fwd, &relays).await {
            tracing::info!(uid = %reply_to.uid, destination = %fwd.destination, %reason, "federation failed");
            let now = state.clock.now();
            state
                .refuse(&reply_to, &Refusal::FederationFailed(reason), now)
                .await;
        }
    });
    Ok(())
}

/// Tries the relays until one accepts; `Err` carries the reason for the sender.
pub(crate) async fn deliver(
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
            let config = &state.config;
            let attempt = outbound::post(
                &state.http,
                config.federation_scheme,
                &relay,
                config.federation_allow_private,
                frame.clone(),
                timeout,
            );
            match attempt.await {
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

/// Time left before the unix second `deadline`, less [`ERROR_MARGIN`]. Checked: a
/// deadline past what `SystemTime` can hold is simply far away.
fn time_left(deadline: u64) -> Duration {
    let Some(deadline) = UNIX_EPOCH.checked_add(Duration::from_secs(deadline)) else {
        return Duration::MAX;
    };
    deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .saturating_sub(ERROR_MARGIN)
}

/// `POST /`: an envelope forwarded by another relay.
pub async fn receive(
    State(state): State<Arc<RelayState>>,
    body: Result<Bytes, BytesRejection>,
) -> (StatusCode, String) {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return refused_body(&state, rejection),
    };
    let now = state.clock.now();
    let size = body.len() as u64;
    match accept(&state, body, now).await {
        Ok(Accepted::New) => {
            Metrics::inc(&state.metrics.federation_received);
            Metrics::add(&state.metrics.federation_received_bytes, size);
            (StatusCode::ACCEPTED, String::new())
        }
        // The sender must not take a copy for a failure: it was delivered the first time.
        Ok(Accepted::Duplicate) => {
            Metrics::inc(&state.metrics.duplicates);
            (StatusCode::ACCEPTED, String::new())
        }
        Err(refusal) => {
            if matches!(refusal, Refusal::RateLimited { .. }) {
                Metrics::inc(&state.metrics.rate_limited);
            }
            let status = status_of(&refusal);
            tracing::debug!(%status, %refusal, "federation post refused");
            state.metrics.rejected("federation_refused");
            (status, refusal.to_string())
        }
    }
}

/// A body that could not be read. Out of read budget is temporary (503: the posting
/// relay tries again or elsewhere); a body too large or too slow keeps axum's answer.
fn refused_body(state: &RelayState, rejection: BytesRejection) -> (StatusCode, String) {
    state.metrics.rejected("federation_body");
    if rmb_http::is_read_budget_exhausted(&rejection) {
        Metrics::inc(&state.metrics.read_budget_exhausted);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "relay is out of memory for incoming messages, retry later".into(),
        );
    }
    (rejection.status(), rejection.body_text())
}

/// How a federation post was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    New,
    /// A copy of an envelope accepted before: dropped.
    Duplicate,
}

/// The HTTP status telling the posting relay how to take a refusal: 4xx is final for
/// this envelope, 5xx means try again or elsewhere.
pub fn status_of(refusal: &Refusal) -> StatusCode {
    match refusal {
        Refusal::Undecodable(_) | Refusal::NoSource | Refusal::Rejected(_) => {
            StatusCode::BAD_REQUEST
        }
        Refusal::UnknownSource(_) | Refusal::BadSignature { .. } => StatusCode::UNAUTHORIZED,
        Refusal::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Refusal::UnknownTwin(_) | Refusal::Offline(_) | Refusal::NotHostedHere(_) => {
            StatusCode::NOT_FOUND
        }
        Refusal::SourceLookup(_)
        | Refusal::Directory(_)
        | Refusal::Backend(_)
        | Refusal::QueueFull(_)
        | Refusal::FederationBacklogFull
        | Refusal::FederationFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Accepts an envelope another relay posted at `now`: it must carry a signature that
/// verifies against its source twin's key, then it is routed like one from a session,
/// except that it is never federated again.
pub async fn accept(state: &Arc<RelayState>, body: Bytes, now: u64) -> Result<Accepted, Refusal> {
    let header = EnvelopeHeader::decode(body.clone())?;
    let source = header
        .source
        .as_ref()
        .map(|s| s.twin)
        .filter(|twin| *twin != 0)
        .ok_or(Refusal::NoSource)?;
    let fwd = route::forward(&header, &state.config.rules, now)?;
    let twin = state
        .directory
        .twin(source)
        .await
        .map_err(Refusal::SourceLookup)?
        .ok_or(Refusal::UnknownSource(source))?;
    let env = Envelope::decode(&body[..])?;
    state
        .verifier
        .verify(&env, &twin.public_key)
        .await
        .map_err(|source_error| Refusal::BadSignature {
            twin: source,
            source: source_error,
        })?;
    // Then the same steps as from a session: copies dropped, the same per-twin budget
    // (another relay, or anyone posting here, must not be a way around it).
    let keys = SeenKeys::of(&state.hash_key, &header);
    match state
        .accept(Via::Federation, fwd, keys, source, &body, now, None)
        .await
    {
        Outcome::Duplicate => Ok(Accepted::Duplicate),
        Outcome::Refused(refusal) => Err(refusal),
        // (Federated, Pong and NeedsLookup never come out of `Via::Federation`.)
        Outcome::Delivered
        | Outcome::Queued
        | Outcome::Federated
        | Outcome::Pong
        | Outcome::NeedsLookup => Ok(Accepted::New),
    }
}

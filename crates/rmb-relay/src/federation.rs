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
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use rmb_core::prost::Message as _;
use rmb_core::proto::EnvelopeHeader;
use rmb_core::{envelope, Envelope};

use crate::backend::BackendError;
use crate::mailbox::QueuedFrame;
use crate::metrics::Metrics;
use crate::route::{self, Forward, ReplyTo};
use crate::state::{Outcome, Refusal, RelayState};

/// Starts federating one envelope to `relays`; never waits for the other relay. With a
/// durable backend (Redis) the envelope goes into its outbox (returning once stored)
/// and [`crate::outbox`] federates it; otherwise a task of this process does, holding a
/// backlog permit for its whole life. `Err` when the backlog is full (nothing was
/// started); a later failure goes through the error policy ([`RelayState::refuse`])
/// toward `reply_to`.
pub async fn submit(
    state: &Arc<RelayState>,
    frame: Bytes,
    fwd: Forward,
    reply_to: ReplyTo,
    relays: Vec<String>,
) -> Result<(), Refusal> {
    if let Some(outbox) = state.backend.outbox() {
        return match outbox.put(&QueuedFrame::new(frame, fwd.deadline)).await {
            Ok(()) => Ok(()),
            Err(BackendError::OutboxFull { .. }) => Err(Refusal::FederationBacklogFull),
            Err(e) => Err(Refusal::Backend(e)),
        };
    }
    let permit = state
        .federation_backlog
        .clone()
        .try_acquire_owned()
        .map_err(|_| Refusal::FederationBacklogFull)?;
    let state = state.clone();
    let tasks = state.tasks.clone();
    tasks.spawn(async move {
        let _permit = permit;
        if let Err(reason) = deliver(&state, &frame, &fwd, &relays).await {
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
    let now = state.clock.now();
    match accept(&state, body, now).await {
        Ok(()) => {
            Metrics::inc(&state.metrics.federation_received);
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
        | Refusal::FederationBacklogFull
        | Refusal::FederationFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// Accepts an envelope another relay posted at `now`: it must carry a signature that
/// verifies against its source twin's key, then it is routed like one from a session,
/// except that it is never federated again.
pub async fn accept(state: &RelayState, body: Bytes, now: u64) -> Result<(), Refusal> {
    let header = EnvelopeHeader::decode(body.clone())?;
    let source = header
        .source
        .as_ref()
        .map(|s| s.twin)
        .filter(|twin| *twin != 0)
        .ok_or(Refusal::NoSource)?;
    let fwd = route::forward(&header, now)?;
    let twin = state
        .directory
        .twin(source)
        .await
        .map_err(Refusal::SourceLookup)?
        .ok_or(Refusal::UnknownSource(source))?;
    let env = Envelope::decode(&body[..])?;
    envelope::verify(&env, &twin.public_key).map_err(|source_error| Refusal::BadSignature {
        twin: source,
        source: source_error,
    })?;
    // The same per-twin budget as on WebSockets: another relay (or anyone posting here)
    // must not be a way around it.
    state.charge(source, body.len(), now)?;
    match state.dispatch(fwd, body).await {
        // (`dispatch` never answers pings: only a session's reader does.)
        Outcome::Delivered | Outcome::Queued | Outcome::Pong => Ok(()),
        Outcome::Elsewhere { fwd, .. } => Err(Refusal::NotHostedHere(fwd.destination.twin)),
        Outcome::Refused(refusal) => Err(refusal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::TwinRecord;
    use crate::session_key::SessionKey;
    use crate::state::tests::{attach, relay, NOW};
    use rmb_core::proto::{Message, Request};
    use rmb_core::{Address, KeyType, Signer};

    /// Twin 7 lives elsewhere and signs with `signer`.
    fn signed(signer: &Signer, to: Address) -> Bytes {
        let mut env = Envelope {
            uid: "u-7".into(),
            timestamp: NOW,
            expiration: 60,
            source: Some(Address::twin(7)),
            destination: Some(to),
            message: Some(Message::Request(Request {
                command: "x".into(),
            })),
            ..Default::default()
        };
        envelope::sign(&mut env, signer);
        Bytes::from(env.encode_to_vec())
    }

    #[tokio::test]
    async fn accepts_only_what_the_source_signed_for_twins_living_here() {
        let (state, directory) = relay(|_| {});
        let seven = Signer::from_seed(&[7; 32], KeyType::Ed25519).unwrap();
        let mallory = Signer::from_seed(&[8; 32], KeyType::Ed25519).unwrap();
        let record = TwinRecord {
            public_key: seven.public_key(),
            relays: vec!["relay.there".into()],
        };
        directory.insert(7, record);
        let status = |r: Result<(), Refusal>| r.map_err(|e| status_of(&e));

        let garbage = Bytes::from_static(b"\xff\xff");
        assert_eq!(
            status(accept(&state, garbage, NOW).await),
            Err(StatusCode::BAD_REQUEST)
        );
        let forged = signed(&mallory, Address::twin(2));
        assert_eq!(
            status(accept(&state, forged, NOW).await),
            Err(StatusCode::UNAUTHORIZED)
        );
        let not_here = signed(&seven, Address::twin(3));
        assert_eq!(
            status(accept(&state, not_here, NOW).await),
            Err(StatusCode::NOT_FOUND)
        );
        let late = signed(&seven, Address::twin(2));
        assert_eq!(
            status(accept(&state, late, NOW + 60).await),
            Err(StatusCode::BAD_REQUEST)
        );
        let genuine = signed(&seven, Address::twin(2));
        assert_eq!(status(accept(&state, genuine.clone(), NOW).await), Ok(()));
        let mailbox = attach(&state, &SessionKey::new(2, None)).await;
        let mut queued = Vec::new();
        mailbox.pop_batch(NOW, 10, &mut queued);
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].data, genuine);
    }
}

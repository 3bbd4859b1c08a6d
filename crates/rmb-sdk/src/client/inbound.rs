//! What the relays hand the client: frames checked and routed by bounded sets of
//! tasks, requests run by their handlers, replies handed to the calls waiting for them.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use rmb_core::peer_api::ErrorCode;
use rmb_core::prost::Message as _;
use rmb_core::proto::{EnvelopeHeader, Message, MessageKind};
use rmb_core::rules;
use rmb_core::time::DEFAULT_TTL;
use rmb_core::Envelope;
use tokio::sync::{mpsc, Semaphore};

use super::Inner;
use crate::error::{CallError, HandlerError};
use crate::incoming::{self, Classified, Incoming, Kind, Rejection};
use crate::memory::{self, EnvelopeKeys};
use crate::outgoing::Outgoing;
use crate::serve::{Handler, Request};
use crate::tags;

/// Something the client received that no call or handler took: handed to the
/// application when it asked for them ([`ClientBuilder::unhandled`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A verified request for a command without a handler.
    Request(Incoming),
    /// A verified reply (response or error) that matches no call in flight.
    Reply(Incoming),
    /// A relay could not route the request with this uid.
    RelayError {
        /// The request's uid.
        uid: String,
        /// What the relay said.
        message: String,
    },
}

/// Replies (and relay errors) checked at once, at most: each may wait for a registrar
/// lookup. When all are busy, reading waits, so a flood is read at the pace it can be
/// checked and the relay holds the rest (its queues are bounded and it drops from them).
const REPLY_WORKERS: usize = 64;
/// "Busy" refusals being sent at once, at most; beyond it a request that finds the
/// queue full is dropped without an answer (its sender times out).
const BUSY_REFUSALS: usize = 16;

/// Reads incoming frames and hands each to a bounded set of tasks. Replies and relay
/// errors are checked by at most [`REPLY_WORKERS`] tasks at once. Requests go through a
/// bounded queue to [`run_requests`], which runs at most `max_concurrent_requests` of
/// them at a time; when that queue is full too, the request is answered with a "busy"
/// error (at most [`BUSY_REFUSALS`] at once, beyond that it is dropped). This loop
/// itself never waits for a handler: a handler that calls another twin must get its
/// reply through here.
pub(super) async fn dispatch(inner: Arc<Inner>, mut frames: mpsc::Receiver<Bytes>) {
    let replies = Arc::new(Semaphore::new(REPLY_WORKERS));
    let refusals = Arc::new(Semaphore::new(BUSY_REFUSALS));
    loop {
        let frame = tokio::select! {
            f = frames.recv() => f,
            _ = inner.cancel.cancelled() => None,
        };
        let Some(frame) = frame else {
            // Fail calls still waiting rather than leaving them to time out.
            inner.pending.clear();
            return;
        };
        if is_request(&frame) {
            match inner.requests.try_send(frame) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(frame)) => {
                    let Ok(permit) = refusals.clone().try_acquire_owned() else {
                        tracing::warn!("too many requests and refusals in progress: dropping one");
                        continue;
                    };
                    let inner = inner.clone();
                    tokio::spawn(async move {
                        refuse_busy(&inner, frame).await;
                        drop(permit);
                    });
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
            continue;
        }
        let permit = tokio::select! {
            permit = replies.clone().acquire_owned() => permit.expect("never closed"),
            _ = inner.cancel.cancelled() => continue,
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            handle_frame(&inner, frame).await;
            drop(permit);
        });
    }
}

/// Runs queued requests, each in its own task, no more than the slots allow at once.
/// A slot is taken before a request is, so what waits for one stays in the queue
/// (where [`Client::requests_waiting`] counts it).
pub(super) async fn run_requests(inner: Arc<Inner>, mut requests: mpsc::Receiver<Bytes>) {
    loop {
        let slot = tokio::select! {
            slot = inner.request_slots.clone().acquire_owned() => {
                slot.expect("the semaphore is never closed")
            }
            _ = inner.cancel.cancelled() => return,
        };
        let frame = tokio::select! {
            f = requests.recv() => f,
            _ = inner.cancel.cancelled() => None,
        };
        let Some(frame) = frame else { return };
        let inner = inner.clone();
        tokio::spawn(async move {
            handle_frame(&inner, frame).await;
            drop(slot);
        });
    }
}

/// Answers a request that found every slot and the queue full. The relay has already
/// checked that the source is who it claims, so the error goes back unverified.
async fn refuse_busy(inner: &Inner, frame: Bytes) {
    let Ok(env) = Envelope::decode(frame) else {
        return;
    };
    let Some(source) = env.source else { return };
    tracing::warn!(uid = env.uid, %source, "too many requests in progress: refusing one");
    inner
        .reply_error(
            source,
            env.uid,
            ErrorCode::Other.code(),
            "busy: too many requests in progress, try again later".into(),
        )
        .await;
}

/// Whether a frame carries a request (a cheap header-only decode; anything that does not
/// decode is left to `handle_frame` to report).
fn is_request(frame: &Bytes) -> bool {
    matches!(
        EnvelopeHeader::decode(frame.clone()),
        Ok(EnvelopeHeader {
            kind: Some(MessageKind::Request(_)),
            ..
        })
    )
}

async fn handle_frame(inner: &Arc<Inner>, frame: Bytes) {
    let env = match Envelope::decode(frame) {
        Ok(env) => env,
        Err(e) => {
            tracing::warn!("dropping an undecodable envelope: {e}");
            return;
        }
    };
    let (source, is_request) = match incoming::classify(&env) {
        Ok(Classified::Pong | Classified::Ping) => return,
        Ok(Classified::RelayError { uid, message }) => {
            if let Err(violation) = inner.rules.check_envelope(&env, rmb_core::time::now()) {
                return tracing::warn!(uid, "dropping a relay error: {violation}");
            }
            inner.settled(&uid, None);
            if let Some((_, call)) = inner.pending.remove(&uid) {
                call.failed(CallError::Relay(message));
            } else if !inner
                .forward(Event::RelayError {
                    uid: uid.clone(),
                    message: message.clone(),
                })
                .await
            {
                tracing::debug!(uid, "relay error for no call in flight: {message}");
            }
            return;
        }
        Ok(Classified::Signed { source, is_request }) => (source, is_request),
        Err(rejection) => {
            tracing::warn!(uid = env.uid, "dropping an incoming envelope: {rejection}");
            return;
        }
    };
    let reply_to = env.source.clone().unwrap_or_default();
    let uid = env.uid.clone();
    match verify(inner, env, source).await {
        Ok(Some(msg)) => deliver(inner, msg).await,
        Ok(None) => {}
        Err(rejection) => {
            tracing::warn!(uid, source, "refused an incoming envelope: {rejection}");
            if is_request {
                inner
                    .reply_error(reply_to, uid, rejection.code.code(), rejection.message)
                    .await;
            } else if let Some((_, call)) = inner.pending.remove_if(&uid, |_, p| p.twin == source) {
                call.failed(CallError::Verification(rejection.message));
            }
        }
    }
}

/// Checks a signed envelope; `Ok(None)` for a duplicate.
async fn verify(inner: &Inner, env: Envelope, source: u32) -> Result<Option<Incoming>, Rejection> {
    let now = rmb_core::time::now();
    // Shapes, lengths and times first: they need no registrar lookup.
    inner
        .rules
        .check_envelope(&env, now)
        .map_err(incoming::refused)?;
    let lookup = |fresh: bool| async move {
        if fresh {
            inner.registrar.invalidate(source);
        }
        match inner.registrar.get_twin(source).await {
            Ok(Some(twin)) => Ok(twin),
            Ok(None) => Err(Rejection::new(
                ErrorCode::UnknownTwin,
                format!("twin {source} is not registered"),
            )),
            Err(e) => Err(Rejection::new(
                ErrorCode::Other,
                format!("cannot look up twin {source}: {e}"),
            )),
        }
    };
    let mut twin = lookup(false).await?;
    let keys = &inner.source_keys;
    if let Err(rejection) = incoming::verify(&env, &twin.public_key, now, keys) {
        if rejection.code != ErrorCode::BadSignature {
            return Err(rejection);
        }
        // The twin may have changed keys since we cached it: ask once more.
        twin = lookup(true).await?;
        incoming::verify(&env, &twin.public_key, now, keys)?;
    }
    // Several shifts move bytes into the destination's session id or twin, and a
    // relay may deliver the result anywhere: only what is addressed to us exactly.
    rules::check_destination(&env, &inner.address).map_err(incoming::refused)?;
    let keys = EnvelopeKeys::of(&env, &inner.hash_key);
    let until = memory::remember_until(&env, now);
    let is_request = matches!(env.message, Some(Message::Request(_)));
    let looked = if is_request {
        inner.memory.first_time(keys, until, now).await
    } else {
        inner.memory.first_time_reply(keys, until, now).await
    };
    let fresh = match looked {
        Ok(fresh) => fresh,
        // Better an error than a second run; a reply is delivered all the same.
        Err(e) if is_request => {
            return Err(Rejection::new(
                ErrorCode::Other,
                format!("cannot tell whether this request was already handled: {e}"),
            ))
        }
        Err(e) => {
            tracing::warn!(uid = env.uid, source, "{e}");
            true
        }
    };
    if !fresh {
        tracing::debug!(uid = env.uid, source, "dropping a duplicate envelope");
        if is_request {
            inner.resend_reply(&env).await;
        }
        return Ok(None);
    }
    let shared = inner
        .identity
        .shared_key(&twin)
        .map_err(|e| Rejection::new(ErrorCode::E2e, e.to_string()))?;
    incoming::open(env, shared.as_ref()).map(Some)
}

async fn deliver(inner: &Arc<Inner>, msg: Incoming) {
    match &msg.kind {
        Kind::Request { command } => {
            if let Some(handler) = inner.handlers.get(command) {
                let request = Request::from_incoming(msg).expect("a request");
                serve(inner, handler, request).await;
            } else {
                let (to, uid, command) = (msg.source.clone(), msg.uid.clone(), command.clone());
                if !inner.forward(Event::Request(msg)).await {
                    inner
                        .reply_error(
                            to,
                            uid,
                            ErrorCode::Other.code(),
                            format!("unknown command: {command}"),
                        )
                        .await;
                }
            }
        }
        Kind::Response | Kind::Error { .. } => {
            let source = msg.source.twin;
            let kept = inner.settled(&msg.uid, Some(source));
            let call = inner.pending.remove_if(&msg.uid, |_, p| p.twin == source);
            // Learned only from answers to our own requests, so strangers cannot fill
            // the table.
            if (kept || call.is_some()) && tags::has(msg.tags.as_deref(), tags::DEDUP) {
                inner
                    .deduplicators
                    .lock()
                    .learned(&msg.source, inner.now_ms());
            }
            if let Some((_, call)) = call {
                call.answered(msg);
            } else {
                let uid = msg.uid.clone();
                if !inner.forward(Event::Reply(msg)).await {
                    tracing::debug!(uid, source, "reply for no call in flight");
                }
            }
        }
    }
}

/// Runs a handler, catching panics, and sends its reply.
async fn serve(inner: &Arc<Inner>, handler: Handler, request: Request) {
    let (to, uid, schema, command) = (
        request.source.clone(),
        request.uid.clone(),
        request.schema.clone(),
        request.command.clone(),
    );
    let deadline = request.timestamp.saturating_add(request.expiration);
    let result = match AssertUnwindSafe(handler(request)).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(command, "handler panicked: {what}");
            Err(HandlerError::other(format!(
                "the handler for {command} failed"
            )))
        }
    };
    let ttl = reply_ttl(deadline, rmb_core::time::now());
    let reply = match result {
        Ok(body) => Outgoing::response(uid, inner.address.clone(), to, body, schema, ttl),
        Err(e) => Outgoing::error(
            uid,
            inner.address.clone(),
            to,
            e.code,
            e.message,
            schema,
            ttl,
        ),
    };
    if let Err(e) = inner.send(reply).await {
        tracing::warn!(command, "could not send the reply: {e}");
    }
}

/// A reply's lifetime: what is left of its request's (after that the caller has stopped
/// waiting), at least a second, and never more than [`DEFAULT_TTL`]. Short-lived replies
/// keep the caller's de-duplication memory and our reply cache small.
pub fn reply_ttl(request_deadline: u64, now: u64) -> u64 {
    request_deadline.saturating_sub(now).clamp(1, DEFAULT_TTL)
}

#[cfg(test)]
mod tests {
    use super::{reply_ttl, DEFAULT_TTL};

    #[test]
    fn replies_live_as_long_as_their_request_still_does() {
        assert_eq!(reply_ttl(1060, 1000), 60);
        assert_eq!(reply_ttl(1000, 1000), 1, "a late reply still gets a second");
        assert_eq!(reply_ttl(900, 1000), 1);
        assert_eq!(reply_ttl(9000, 1000), DEFAULT_TTL);
    }
}

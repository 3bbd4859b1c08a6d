//! Requests: the builder every call goes through, and the wait for its reply.

use std::time::Duration;

use bytes::Bytes;
use rmb_core::Address;
use tokio::sync::oneshot;

use super::{Client, Inner, Sent};
use crate::error::{CallError, SendError, Unconfirmed};
use crate::incoming::{Incoming, Kind};
use crate::outgoing::{Outgoing, DEFAULT_SCHEMA};

/// How long [`RequestBuilder::call`] waits for a reply unless told otherwise; it is also
/// the request's lifetime.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A verified successful reply to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reply {
    /// The request's uid, which the reply carries back.
    pub uid: String,
    /// Who answered (twin and session): the twin the request went to, whose signature
    /// was verified.
    pub source: Address,
    /// The decrypted body.
    pub payload: Bytes,
    /// The schema the replier declared for the body, if any.
    pub schema: Option<String>,
}

impl Reply {
    fn from_incoming(msg: Incoming) -> Self {
        Reply {
            uid: msg.uid,
            source: msg.source,
            payload: msg.payload.into(),
            schema: msg.schema,
        }
    }
}

/// A request being put together ([`Client::request`]): everything but the command and
/// the destination twin has a default. The client fills in what the protocol needs
/// (its own address as the source, a fresh uid, the lifetime), so no two requests can
/// share a uid by mistake.
#[derive(Debug, Clone)]
#[must_use = "a request does nothing until `call` or `send` is awaited"]
pub struct RequestBuilder {
    client: Client,
    destination: Address,
    command: String,
    payload: Bytes,
    schema: Option<String>,
    tags: Option<String>,
    timeout: Duration,
}

impl RequestBuilder {
    pub(super) fn new(client: Client, twin: u32, command: String) -> Self {
        RequestBuilder {
            client,
            destination: Address::twin(twin),
            command,
            payload: Bytes::new(),
            schema: Some(DEFAULT_SCHEMA.to_string()),
            tags: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The body (default empty). Encrypted when the destination has an e2e key.
    pub fn payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.payload = payload.into();
        self
    }

    /// Addresses one session of the destination twin (§3.1) instead of its default
    /// one. `""` is a session of its own, not the default (as the original relay has
    /// it).
    pub fn session(mut self, session: impl Into<String>) -> Self {
        self.destination.connection = Some(session.into());
        self
    }

    /// The schema declared for the body (default [`DEFAULT_SCHEMA`]).
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Tags (comma or space separated tokens the receiver may read; signed).
    pub fn tags(mut self, tags: impl Into<String>) -> Self {
        self.tags = Some(tags.into());
        self
    }

    /// How long [`call`](Self::call) waits for the reply (default [`DEFAULT_TIMEOUT`]).
    /// The request lives as long, capped at 1800 s: receivers remember uids no longer,
    /// so a request living longer could be replayed to them as new.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends the request and waits (up to the timeout) for its reply: the reply's body
    /// on success, the remote's error reply as [`CallError::Remote`].
    pub async fn call(self) -> Result<Reply, CallError> {
        let (client, timeout) = (self.client.clone(), self.timeout);
        wait_for_reply(&client.inner, self.into_outgoing(), timeout).await
    }

    /// Sends the request without waiting for the reply, which (arriving for no call in
    /// flight) goes to [`ClientBuilder::unhandled`](crate::ClientBuilder::unhandled)
    /// if set. Returns once it is queued for the relays.
    pub async fn send(self) -> Result<Sent, SendError> {
        let client = self.client.clone();
        client.inner.send(self.into_outgoing()).await
    }

    fn into_outgoing(self) -> Outgoing {
        // Whole seconds, at least one, at most what receivers remember uids for.
        let expiration =
            (self.timeout.as_secs_f64().ceil().max(1.0) as u64).min(rmb_core::time::MAX_TTL);
        let mut out = Outgoing::request(
            uuid::Uuid::new_v4().to_string(),
            self.client.inner.address.clone(),
            self.destination,
            self.command,
            self.payload.into(),
            expiration,
        );
        out.schema = self.schema;
        out.tags = self.tags;
        out
    }
}

impl Client {
    /// Starts a request for `command` to `twin` (its default session unless
    /// [`RequestBuilder::session`] says otherwise); `.call()` or `.send()` it.
    pub fn request(&self, twin: u32, command: impl Into<String>) -> RequestBuilder {
        RequestBuilder::new(self.clone(), twin, command.into())
    }

    /// Calls `command` on `twin`'s default session with `payload` and waits up to
    /// `timeout` for the reply: shorthand for
    /// `self.request(twin, command).payload(payload).timeout(timeout).call()`.
    pub async fn call(
        &self,
        twin: u32,
        command: impl Into<String>,
        payload: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        self.request(twin, command)
            .payload(payload)
            .timeout(timeout)
            .call()
            .await
    }
}

/// A call waiting for its reply.
pub(super) struct Pending {
    /// The twin the request went to: only its reply settles the call.
    pub(super) twin: u32,
    reply: oneshot::Sender<Result<Reply, CallError>>,
}

impl Pending {
    /// Hands the call its outcome: a reply (or error reply) from its twin.
    pub(super) fn answered(self, msg: Incoming) {
        let result = match msg.kind {
            Kind::Error { code, message } => Err(CallError::Remote { code, message }),
            _ => Ok(Reply::from_incoming(msg)),
        };
        let _ = self.reply.send(result);
    }

    /// Ends the call with `error`.
    pub(super) fn failed(self, error: CallError) {
        let _ = self.reply.send(Err(error));
    }
}

/// Removes a pending call when the caller stops waiting, and stops re-sending it.
struct PendingGuard<'a> {
    inner: &'a Inner,
    uid: String,
    twin: u32,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.inner.pending.remove(&self.uid);
        if let Some(outstanding) = &self.inner.outstanding {
            outstanding.lock().answered(&self.uid, self.twin);
        }
    }
}

/// Sends `request` and waits up to `timeout` for its reply. Fails early, rather than
/// timing out, when no relay confirmed it and it was not sent again (so that it cannot
/// run twice).
async fn wait_for_reply(
    inner: &Inner,
    request: Outgoing,
    timeout: Duration,
) -> Result<Reply, CallError> {
    let uid = request.uid.clone();
    let twin = request.destination.twin;
    let (tx, rx) = oneshot::channel();
    inner
        .pending
        .insert(uid.clone(), Pending { twin, reply: tx });
    let _guard = PendingGuard { inner, uid, twin };
    let work = async {
        let sent = inner.send(request).await?;
        let mut rx = rx;
        tokio::select! {
            reply = &mut rx => return reply.map_err(|_| CallError::NotConnected)?,
            confirmed = sent.confirmed() => match confirmed {
                Ok(()) => {}
                Err(Unconfirmed::Closed) => return Err(CallError::NotConnected),
                Err(e) => return Err(CallError::Unconfirmed(e)),
            },
        }
        rx.await.map_err(|_| CallError::NotConnected)?
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(CallError::Timeout))
}

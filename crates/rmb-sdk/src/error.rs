//! Errors, one type per operation.

use rmb_core::peer_api::ErrorCode;

/// Why [`Client::builder`](crate::Client::builder)`.build()` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The secret is neither a mnemonic nor a `0x` seed of the key type.
    #[error("invalid secret: {0}")]
    Secret(#[from] rmb_core::IdentityError),
    /// No relay URL was given.
    #[error("no relay given: a client needs at least one ws:// or wss:// relay URL")]
    NoRelay,
    /// A relay URL is not `ws://` or `wss://` with a host.
    #[error("invalid relay URL {0:?}: expected ws://host[:port] or wss://host[:port]")]
    BadRelayUrl(String),
    /// Neither a registrar URL nor a registrar client was given.
    #[error("no registrar given")]
    NoRegistrar,
    /// The registrar could not be asked or refused the account.
    #[error("registrar: {0}")]
    Registrar(#[from] rmb_registrar_client::ClientError),
    /// `no_update` is set and the key has no account.
    #[error("this key is not registered and no_update is set, so the account cannot be created")]
    NotRegistered,
    /// The session id is `""` (a session id names an extra connection; none is `None`).
    #[error("session id must not be empty")]
    EmptySession,
}

/// Why a [`Client::call`](crate::Client::call) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No reply within the call's timeout.
    #[error("no reply within the timeout")]
    Timeout,
    /// The remote service (or its peer) answered with an error.
    #[error("remote error {code}: {message}")]
    Remote {
        /// The error code (§4 codes from a peer, or the service's own).
        code: u32,
        /// What the remote said.
        message: String,
    },
    /// A relay could not route the request (unknown destination, rate limit, ...).
    #[error("relay error: {0}")]
    Relay(String),
    /// The reply did not verify (bad signature, undecryptable payload, ...).
    #[error("reply failed verification: {0}")]
    Verification(String),
    /// The request was not sent: see the [`SendError`] (its message is this one's).
    #[error(transparent)]
    NotSent(#[from] SendError),
    /// The client shut down while the call was waiting.
    #[error("the client is shut down")]
    NotConnected,
    /// The request may or may not have reached a relay, and it was not sent again so
    /// that it cannot run twice: the caller decides whether trying again is safe.
    #[error("the request's fate is unknown: {0}")]
    Unconfirmed(#[source] Unconfirmed),
}

/// Why a relay never confirmed an envelope (see [`Sent::confirmed`](crate::Sent::confirmed)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unconfirmed {
    /// Its deadline passed before a relay confirmed it. Usually it never left this
    /// process (no relay was up); it may also have reached a relay whose confirmation
    /// never came.
    #[error("it expired before a relay confirmed it")]
    Expired,
    /// It was written to `relay`, whose link broke before the relay confirmed it, so the
    /// relay may have passed it on; sending it again could run it twice, so it was not.
    #[error("relay {relay} may have received it before its link broke, and {why}; it was not sent again, so that it cannot run twice")]
    MaybeDelivered {
        /// The relay URL the link went to.
        relay: String,
        /// Why it was not sent again.
        why: NotResent,
    },
    /// The client shut down before a relay confirmed it (it may have reached one).
    #[error("the client shut down before a relay confirmed it")]
    Closed,
}

/// Why an envelope a relay may have received was not sent to it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NotResent {
    /// The relay's new connection did not advertise `rmb-dedup: 1`: a copy might be
    /// delivered a second time.
    #[error("the relay does not say that it drops copies")]
    RelayKeepsCopies,
    /// The envelope expired before a new connection to the relay was up.
    #[error("it expired before the relay was reachable again")]
    Expired,
}

/// Why sending an envelope failed before it left this process. Messages carry their
/// cause's as well (rmb-peer hands them to applications as they are); the cause itself
/// is the [`source`](std::error::Error::source).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The envelope breaks the envelope rules (an over-long command, a bad session id,
    /// ...): a relay or receiver would refuse it.
    #[error("invalid envelope: {0}")]
    Invalid(#[source] rmb_core::rules::Violation),
    /// The destination twin is not registered.
    #[error("twin {0} is not registered")]
    UnknownTwin(u32),
    /// The registrar could not be asked about the destination.
    #[error("registrar: {0}")]
    Registrar(#[source] rmb_registrar_client::ClientError),
    /// The destination's e2e key is unusable.
    #[error("cannot encrypt for twin {twin}: {source}")]
    Encryption {
        /// The destination twin.
        twin: u32,
        /// Why its key is unusable.
        #[source]
        source: rmb_core::E2eError,
    },
    /// The client is shut down.
    #[error("the client is shut down")]
    Closed,
    /// The envelope is larger than relays accept ([`rmb_core::rules::MAX_MESSAGE_SIZE`]):
    /// sent anyway, the relay would close the connection (1009), and a re-send on the
    /// next connection would be closed again.
    #[error("envelope is {size} bytes, more than the {max} bytes relays accept")]
    TooLarge {
        /// The encoded envelope's size.
        size: usize,
        /// The largest message relays accept.
        max: usize,
    },
}

impl SendError {
    /// The §4 error code an rmb-peer reports for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            SendError::Invalid(_) | SendError::TooLarge { .. } => ErrorCode::InvalidMessage,
            SendError::UnknownTwin(_) => ErrorCode::UnknownTwin,
            SendError::Encryption { .. } => ErrorCode::E2e,
            SendError::Registrar(_) | SendError::Closed => ErrorCode::Other,
        }
    }
}

/// What a handler returns instead of a body: sent back as an error reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct HandlerError {
    /// The error code sent back (§4 codes, or the service's own).
    pub code: u32,
    /// What the caller is told.
    pub message: String,
}

impl HandlerError {
    /// An error reply with `code` and `message`.
    pub fn new(code: u32, message: impl Into<String>) -> Self {
        HandlerError {
            code,
            message: message.into(),
        }
    }

    /// Code 500 ("other") with a message.
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Other.code(), message)
    }
}

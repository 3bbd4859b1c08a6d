//! Configuring and starting a [`Client`]: registration, then the background tasks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::Mutex;
use rmb_core::rules::Rules;
use rmb_core::{Address, KeyType};
use rmb_registrar_client::RegistrarClient;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{inbound, resend_loop, Client, Event, Guard, Inner};
use crate::error::BuildError;
use crate::identity::Identity;
use crate::memory::{InMemory, Memory};
use crate::pool::{Pool, PoolConfig};
use crate::resend::{Deduplicators, Outstanding, Resend};
use crate::serve::Registry;

/// Configures and starts a [`Client`].
pub struct ClientBuilder {
    secret: String,
    key_type: KeyType,
    registrar_url: Option<String>,
    registrar: Option<RegistrarClient>,
    relays: Vec<String>,
    session: Option<String>,
    no_update: bool,
    e2e: bool,
    pool: PoolConfig,
    unhandled: Option<mpsc::Sender<Event>>,
    max_concurrent_requests: usize,
    resend: Resend,
    resend_interval: Duration,
    memory: Option<Arc<dyn Memory>>,
    rules: Rules,
}

/// Default wait before a request with no reply is sent again, where the [`Resend`]
/// policy allows (see [`ClientBuilder::resend_interval`]).
pub const DEFAULT_RESEND_AFTER: Duration = Duration::from_secs(5);

/// How long a receiver is believed to drop copies after its last reply that said so.
const DEDUPLICATOR_TTL: Duration = Duration::from_secs(3600);
/// Receivers remembered as dropping copies, at most.
const DEDUPLICATORS: usize = 65_536;
/// Bytes of unanswered requests kept for sending again, at most.
const OUTSTANDING_BYTES: usize = 64 << 20;

/// Default cap on incoming requests handled at once (see
/// [`ClientBuilder::max_concurrent_requests`]).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;

impl ClientBuilder {
    /// Defaults for the twin of `secret` (see [`Client::builder`]).
    pub(super) fn new(secret: String, key_type: KeyType) -> Self {
        ClientBuilder {
            secret,
            key_type,
            registrar_url: None,
            registrar: None,
            relays: Vec::new(),
            session: None,
            no_update: false,
            e2e: true,
            pool: PoolConfig::default(),
            unhandled: None,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            resend: Resend::default(),
            resend_interval: DEFAULT_RESEND_AFTER,
            memory: None,
            rules: Rules::default(),
        }
    }

    /// The registrar's base URL (`http(s)://host[:port]`).
    pub fn registrar(mut self, url: impl Into<String>) -> Self {
        self.registrar_url = Some(url.into());
        self
    }

    /// A ready registrar client (e.g. with its own cache settings) instead of a URL.
    pub fn registrar_client(mut self, client: RegistrarClient) -> Self {
        self.registrar = Some(client);
        self
    }

    /// The relays to connect to (`ws://` or `wss://` URLs); the account's `relays` are
    /// set to their `host[:port]`.
    pub fn relays<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.relays = urls.into_iter().map(Into::into).collect();
        self
    }

    /// A session id, for an extra connection of the same twin (§3.1). `None` is the
    /// twin's default session.
    pub fn session(mut self, sid: Option<String>) -> Self {
        self.session = sid;
        self
    }

    /// Leave the registrar record alone (no create, no update).
    pub fn no_update(mut self, no_update: bool) -> Self {
        self.no_update = no_update;
        self
    }

    /// Derive and register an e2e key (default on). Off: payloads to and from this twin
    /// travel in plain text.
    pub fn e2e(mut self, on: bool) -> Self {
        self.e2e = on;
        self
    }

    /// Connection timing (backoff, pings).
    pub fn pool_config(mut self, config: PoolConfig) -> Self {
        self.pool = config;
        self
    }

    /// Where requests without a handler and replies without a call go (instead of an
    /// "unknown command" answer and a log line).
    pub fn unhandled(mut self, events: mpsc::Sender<Event>) -> Self {
        self.unhandled = Some(events);
        self
    }

    /// How many incoming requests are handled at once (default
    /// [`DEFAULT_MAX_CONCURRENT_REQUESTS`]). As many more wait in a queue; beyond that a
    /// request is answered at once with a "busy" error (code 500; at most 16 such
    /// answers are in progress at once, further requests are dropped unanswered), so a
    /// flood costs bounded memory and tasks and its senders learn why. Replies are never
    /// held back by this cap (they have 64 checkers of their own; when those are busy,
    /// reading from the relays waits): a handler that itself calls another twin always
    /// gets its answer. Zero is taken as one.
    pub fn max_concurrent_requests(mut self, n: usize) -> Self {
        self.max_concurrent_requests = n.max(1);
        self
    }

    /// Which receivers get the same request again when its reply is late (default
    /// [`Resend::KnownReceivers`]). This is what recovers a request a relay accepted and
    /// then lost (e.g. it stopped before passing it on); a receiver that drops copies
    /// answers a copy of a request it has seen with the reply it already sent, but one
    /// that does not (the original rmb-peer, the Go router, the TypeScript client) runs
    /// it again. See docs/compatibility.md, "Not running a request twice".
    pub fn resend(mut self, policy: Resend) -> Self {
        self.resend = policy;
        self
    }

    /// How long to wait for a reply before the first copy (then twice as long, and so
    /// on, until the request expires). Default [`DEFAULT_RESEND_AFTER`].
    pub fn resend_interval(mut self, interval: Duration) -> Self {
        self.resend_interval = interval;
        self
    }

    /// Where this receiver remembers the envelopes it has seen and the replies it sent
    /// (default: an [`InMemory`] with [`MemoryLimits::default`](crate::MemoryLimits)).
    /// A memory that survives restarts (rmb-peer keeps it in Redis) means a restarted
    /// receiver neither runs a copy again nor leaves it unanswered.
    pub fn memory(mut self, memory: Arc<dyn Memory>) -> Self {
        self.memory = Some(memory);
        self
    }

    /// What an envelope may hold (default [`Rules::default`], set from what the
    /// existing clients send): incoming envelopes outside them are refused (a request
    /// with an error reply saying which field and limit), outgoing ones are not sent
    /// ([`SendError::Invalid`]).
    pub fn rules(mut self, rules: Rules) -> Self {
        self.rules = rules;
        self
    }

    /// Makes sure the account exists and lists these relays and the e2e key (unless
    /// `no_update`), then starts connecting to every relay. Does not wait for the
    /// connections: see [`Client::wait_connected`].
    pub async fn build(self) -> Result<Client, BuildError> {
        if self.relays.is_empty() {
            return Err(BuildError::NoRelay);
        }
        if self.session.as_deref() == Some("") {
            return Err(BuildError::EmptySession);
        }
        let hosts = self
            .relays
            .iter()
            .map(|url| relay_host(url).ok_or_else(|| BuildError::BadRelayUrl(url.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let registrar = match (self.registrar, self.registrar_url) {
            (Some(client), _) => client,
            (None, Some(url)) => RegistrarClient::new(&url)?,
            (None, None) => return Err(BuildError::NoRegistrar),
        };
        let identity = Identity::from_secret(&self.secret, self.key_type, self.e2e)?;
        let twin = if self.no_update {
            registrar
                .get_twin_by_public_key(&identity.signer().public_key())
                .await?
                .ok_or(BuildError::NotRegistered)?
        } else {
            registrar
                .ensure_account(identity.signer(), &hosts, identity.e2e_public_key())
                .await?
        };
        tracing::info!(twin = twin.twin_id, relays = ?hosts, "twin ready");
        let address = Address {
            twin: twin.twin_id,
            connection: self.session.clone(),
        };
        let memory = self.memory.unwrap_or_else(|| Arc::new(InMemory::default()));
        let cancel = CancellationToken::new();
        let (incoming_tx, incoming_rx) = mpsc::channel(1024);
        let (requests_tx, requests_rx) = mpsc::channel(self.max_concurrent_requests);
        let pool = Pool::start(
            &self.relays,
            twin.twin_id,
            self.session,
            identity.signer().clone(),
            self.pool,
            incoming_tx,
            cancel.clone(),
        );
        let inner = Arc::new(Inner {
            address,
            identity,
            registrar,
            pool,
            pending: DashMap::new(),
            handlers: Registry::default(),
            unhandled: self.unhandled,
            rules: self.rules,
            hash_key: memory.hash_key(),
            source_keys: Default::default(),
            memory,
            cancel: cancel.clone(),
            request_slots: Arc::new(Semaphore::new(self.max_concurrent_requests)),
            requests: requests_tx,
            resend: self.resend,
            outstanding: (self.resend != Resend::Off)
                .then(|| Mutex::new(Outstanding::new(self.resend_interval, OUTSTANDING_BYTES))),
            deduplicators: Mutex::new(Deduplicators::new(DEDUPLICATOR_TTL, DEDUPLICATORS)),
            started: Instant::now(),
            resent: Default::default(),
        });
        if inner.outstanding.is_some() {
            tokio::spawn(resend_loop(inner.clone(), self.resend_interval));
        }
        tokio::spawn(inbound::dispatch(inner.clone(), incoming_rx));
        tokio::spawn(inbound::run_requests(inner.clone(), requests_rx));
        Ok(Client {
            inner,
            _guard: Arc::new(Guard(cancel)),
        })
    }
}

/// The `host[:port]` of a `ws://` or `wss://` URL (what the registrar lists as a relay).
pub fn relay_host(url: &str) -> Option<String> {
    let rest = url
        .trim()
        .strip_prefix("wss://")
        .or_else(|| url.trim().strip_prefix("ws://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::relay_host;

    #[test]
    fn relay_hosts_are_the_url_authority() {
        assert_eq!(relay_host("ws://127.0.0.1:8080").unwrap(), "127.0.0.1:8080");
        assert_eq!(relay_host("wss://relay.grid.tf/").unwrap(), "relay.grid.tf");
        assert_eq!(
            relay_host("wss://u@relay.grid.tf:443/x?y").unwrap(),
            "relay.grid.tf:443"
        );
        assert_eq!(relay_host("http://relay"), None);
        assert_eq!(relay_host("ws://"), None);
    }
}

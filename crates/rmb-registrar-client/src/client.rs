//! The registrar client relays and peers use.
//!
//! Lookups by twin id go through a bounded TTL cache: a relay routing thousands of
//! messages a second to the same twins asks the registrar once per twin per
//! [`ClientConfig::cache_ttl`]. Unknown twins are remembered for the shorter
//! [`ClientConfig::negative_ttl`], so a flood of messages to a twin that does not exist
//! does not become a flood of requests either. Concurrent misses for the same twin share
//! one request. [`RegistrarClient::invalidate`] drops an entry, and updates made through
//! this client drop theirs, so a peer that moves relays is seen at once.
//!
//! Twins found are also kept, for [`ClientConfig::stale_ttl`], as a fallback: when the
//! registrar cannot be reached (timeout, connection refused, 5xx), a lookup answers
//! with the last known record instead of failing, so relays and peers keep routing and
//! verifying between twins they know through a registrar outage. Twins never seen
//! still fail, and a registrar that answers is always believed.
//!
//! The cache is bounded in bytes ([`ClientConfig::cache_bytes`]; records carry relay
//! names whose lengths the registrar's owner chose), and at most
//! [`ClientConfig::max_concurrent_misses`] lookups of uncached twins are at the
//! registrar at once: a flood of distinct unknown twin ids (random ids in JWTs or
//! federation posts) costs at most that many requests in flight, each answer negatively
//! cached. A lookup beyond the bound waits for a free slot for up to
//! [`ClientConfig::timeout`], then fails with [`ClientError::Busy`] (or answers with the
//! last known record, as in an outage). Distinct ids are all misses, so the total is
//! bounded too: at most [`ClientConfig::miss_burst`] misses at once and
//! [`ClientConfig::misses_per_second`] after that (a token bucket); past it a miss
//! fails at once with [`ClientError::Busy`].
//!
//! It speaks to our registrar and to node-registrar alike (docs/registrar.md,
//! "node-registrar"): it signs with raw 64-byte signatures (which both verify), reads
//! their different answers (`200`/`201`, RFC 3339 times, base64 or hex e2e keys,
//! `wss://` relay URLs, wrapped bodies, an update answered with a message instead of the
//! account) into one [`Twin`], relays normalised to `host[:port]`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use moka::sync::Cache;
use moka::Expiry;
use reqwest::StatusCode;
use rmb_core::Signer;
use serde::de::DeserializeOwned;
use tokio::sync::{OnceCell, Semaphore};

use crate::auth;
use crate::validate;
use crate::wire::{AccountJson, AnyErrorBody, CreateRequest, UpdateRequest, Wrapped};

/// A twin as peers and relays need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Twin {
    pub twin_id: u32,
    pub public_key: [u8; 32],
    /// `host[:port]`, normalised, at most [`validate::MAX_RELAYS`].
    pub relays: Vec<String>,
    pub rmb_enc_key: Option<[u8; 33]>,
}

impl Twin {
    /// What the record costs in the cache, in bytes: its own size, its relay names
    /// (their lengths are the twin owner's choice) and the cache's per-entry overhead.
    fn weight(&self) -> u32 {
        let relays: usize = self.relays.iter().map(|r| r.len() + 24).sum();
        u32::try_from(ENTRY_OVERHEAD + 160 + relays).unwrap_or(u32::MAX)
    }
}

/// Client timeouts and cache bounds.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Whole-request timeout (connect + answer); also how long a lookup waits for a
    /// free slot when [`ClientConfig::max_concurrent_misses`] are in flight.
    pub timeout: Duration,
    /// How long a found twin is served from the cache.
    pub cache_ttl: Duration,
    /// Bytes the cache may hold (found and unknown twins together; the last-known
    /// records for outages have as much again).
    pub cache_bytes: u64,
    /// How long "no such twin" is served from the cache.
    pub negative_ttl: Duration,
    /// How long a found twin may still be served when the registrar cannot be reached
    /// (zero: never).
    pub stale_ttl: Duration,
    /// Lookups of uncached twins at the registrar at once, at most.
    pub max_concurrent_misses: usize,
    /// Lookups of uncached twins that may be started at once after a quiet period (a
    /// token bucket's size). Distinct random twin ids are all misses: coalescing and the
    /// negative cache do nothing for them, so this and
    /// [`ClientConfig::misses_per_second`] bound what a flood of them costs the
    /// registrar in total, not only in flight.
    pub miss_burst: u32,
    /// Rate at which the bucket of [`ClientConfig::miss_burst`] refills. Beyond it a
    /// lookup of an uncached twin fails at once with [`ClientError::Busy`] (a twin found
    /// before answers with its last known record, as in an outage).
    pub misses_per_second: f64,
}

/// What one cache entry costs beyond its value (the map slot, the key, moka's
/// bookkeeping for expiry and eviction), bytes; an unknown twin costs only this.
const ENTRY_OVERHEAD: usize = 128;

/// Largest registrar answer read, bytes: an account is well under 4 KiB.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(60),
            cache_bytes: 64 * 1024 * 1024,
            negative_ttl: Duration::from_secs(5),
            stale_ttl: Duration::from_secs(3600),
            max_concurrent_misses: 64,
            // A relay restarting with 50 000 sessions looks them all up again: at 500 a
            // second that is under two minutes, while a flood costs at most that rate.
            miss_burst: 1000,
            misses_per_second: 500.0,
        }
    }
}

/// Why a registrar call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("invalid registrar URL {0:?}: expected http(s)://host[:port][/prefix]")]
    InvalidUrl(String),
    #[error("registrar did not answer in time")]
    Timeout,
    #[error("registrar unreachable: {0}")]
    Unreachable(String),
    /// Too many lookups of uncached twins are already waiting for the registrar, or
    /// were started lately ([`ClientConfig::misses_per_second`]).
    #[error("too many registrar lookups of uncached twins; try again shortly")]
    Busy,
    /// The registrar refused the request; `message` is its `error` text.
    #[error("registrar refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("registrar answered something unexpected: {0}")]
    BadResponse(String),
}

impl ClientError {
    /// The registrar could not be asked (as opposed to answering "no"): worth falling
    /// back to what is already known, and worth retrying later.
    pub fn is_outage(&self) -> bool {
        match self {
            ClientError::Timeout | ClientError::Unreachable(_) | ClientError::Busy => true,
            ClientError::Rejected { status, .. } => *status >= 500,
            ClientError::InvalidUrl(_) | ClientError::BadResponse(_) => false,
        }
    }
}

/// A handle to one registrar. Cheap to clone; clones share the cache and connections.
#[derive(Clone)]
pub struct RegistrarClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    timeout: Duration,
    /// `<base>/v1/accounts/` (or `<base>/accounts/` when the base already ends in `/v1`,
    /// as node-registrar URLs are often written).
    accounts_url: String,
    by_id: Cache<u32, Option<Arc<Twin>>>,
    /// Last known record of each twin found, for lookups while the registrar is down.
    last_known: Cache<u32, Arc<Twin>>,
    /// Lookups by id in flight: concurrent misses wait on the same cell. An entry is
    /// removed (under this lock) when its answer is cached, or by `invalidate`, in which
    /// case the answer of the fetch already running is not cached.
    inflight: Mutex<HashMap<u32, Arc<Flight>>>,
    /// Slots for lookups at the registrar.
    misses: Arc<Semaphore>,
    /// Lookups of uncached twins that may start now.
    miss_tokens: Mutex<TokenBucket>,
    /// Newest X-Auth timestamp this client used per twin: updates made within one
    /// second still carry increasing timestamps.
    last_auth: Mutex<HashMap<u32, u64>>,
}

impl std::fmt::Debug for RegistrarClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrarClient")
            .field("accounts_url", &self.inner.accounts_url)
            .field("cached", &self.inner.by_id.entry_count())
            .finish()
    }
}

type Flight = OnceCell<Result<Option<Arc<Twin>>, ClientError>>;

/// A token bucket: `burst` tokens, refilled at `rate` a second.
#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    burst: f64,
    rate: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(burst: u32, rate: f64, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            tokens: burst,
            burst,
            rate: if rate.is_finite() { rate.max(0.0) } else { 0.0 },
            at: now,
        }
    }

    /// Takes a token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Found twins live `ttl`, unknown ones `negative_ttl`.
struct TwinExpiry {
    ttl: Duration,
    negative_ttl: Duration,
}

impl Expiry<u32, Option<Arc<Twin>>> for TwinExpiry {
    fn expire_after_create(
        &self,
        _key: &u32,
        value: &Option<Arc<Twin>>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(if value.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        })
    }

    fn expire_after_update(
        &self,
        key: &u32,
        value: &Option<Arc<Twin>>,
        updated_at: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, updated_at)
    }
}

/// The accounts URL for a registrar base URL.
fn accounts_url(base: &str) -> String {
    if base.ends_with("/v1") {
        format!("{base}/accounts/")
    } else {
        format!("{base}/v1/accounts/")
    }
}

impl RegistrarClient {
    /// A client with [`ClientConfig::default`]. `base_url` is `http(s)://host[:port]`
    /// (a path prefix is kept; a prefix ending in `/v1`, such as node-registrar's
    /// `/api/v1`, is the API root itself).
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Self::with_config(base_url, ClientConfig::default())
    }

    pub fn with_config(base_url: &str, config: ClientConfig) -> Result<Self, ClientError> {
        let base = base_url.trim().trim_end_matches('/');
        let url =
            reqwest::Url::parse(base).map_err(|_| ClientError::InvalidUrl(base_url.into()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ClientError::InvalidUrl(base_url.into()));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            // A registrar that redirects is misconfigured; following it would send
            // updates somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Unreachable(format!("building the HTTP client: {e}")))?;
        let by_id = Cache::builder()
            .max_capacity(config.cache_bytes)
            .weigher(|_id: &u32, twin: &Option<Arc<Twin>>| {
                twin.as_ref().map_or(ENTRY_OVERHEAD as u32, |t| t.weight())
            })
            .expire_after(TwinExpiry {
                ttl: config.cache_ttl,
                negative_ttl: config.negative_ttl,
            })
            .build();
        let last_known = Cache::builder()
            .max_capacity(config.cache_bytes)
            .weigher(|_id: &u32, twin: &Arc<Twin>| twin.weight())
            .time_to_live(config.stale_ttl)
            .build();
        Ok(RegistrarClient {
            inner: Arc::new(Inner {
                http,
                timeout: config.timeout,
                accounts_url: accounts_url(base),
                by_id,
                last_known,
                inflight: Mutex::new(HashMap::new()),
                misses: Arc::new(Semaphore::new(config.max_concurrent_misses.max(1))),
                miss_tokens: Mutex::new(TokenBucket::new(
                    config.miss_burst,
                    config.misses_per_second,
                    Instant::now(),
                )),
                last_auth: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The twin, from the cache or the registrar; `None` if it does not exist. Concurrent
    /// calls for an uncached twin make one request and all get its answer; errors are not
    /// cached.
    /// The cached answer for `twin_id`, without asking the registrar: `None` when
    /// nothing is cached, `Some(None)` when the twin is cached as unknown.
    pub fn cached_twin(&self, twin_id: u32) -> Option<Option<Arc<Twin>>> {
        self.inner.by_id.get(&twin_id)
    }

    pub async fn get_twin(&self, twin_id: u32) -> Result<Option<Arc<Twin>>, ClientError> {
        if let Some(hit) = self.inner.by_id.get(&twin_id) {
            return Ok(hit);
        }
        let flight = {
            let mut inflight = self.inner.inflight.lock().expect("not poisoned");
            // Re-check under the lock: a fetch that just finished cached its answer
            // while holding it.
            if let Some(hit) = self.inner.by_id.get(&twin_id) {
                return Ok(hit);
            }
            inflight.entry(twin_id).or_default().clone()
        };
        let result = flight
            .get_or_init(|| self.fetch_limited(twin_id))
            .await
            .clone();
        let mut inflight = self.inner.inflight.lock().expect("not poisoned");
        if inflight
            .get(&twin_id)
            .is_some_and(|current| Arc::ptr_eq(current, &flight))
        {
            inflight.remove(&twin_id);
            if let Ok(answer) = &result {
                self.inner.by_id.insert(twin_id, answer.clone());
            }
        }
        drop(inflight);
        match result {
            Ok(answer) => {
                if let Some(twin) = &answer {
                    self.inner.last_known.insert(twin_id, twin.clone());
                }
                Ok(answer)
            }
            Err(e) if e.is_outage() => match self.inner.last_known.get(&twin_id) {
                Some(twin) => {
                    tracing::warn!(
                        twin_id,
                        "registrar unavailable ({e}): using the last known record"
                    );
                    Ok(Some(twin))
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// One lookup by id at the registrar, in one of the bounded slots.
    async fn fetch_limited(&self, twin_id: u32) -> Result<Option<Arc<Twin>>, ClientError> {
        let allowed = self
            .inner
            .miss_tokens
            .lock()
            .expect("not poisoned")
            .take(Instant::now());
        if !allowed {
            tracing::debug!(twin_id, "registrar lookup refused: miss budget spent");
            return Err(ClientError::Busy);
        }
        let slot = tokio::time::timeout(
            self.inner.timeout,
            self.inner.misses.clone().acquire_owned(),
        )
        .await;
        let _slot = match slot {
            Ok(Ok(slot)) => slot,
            _ => return Err(ClientError::Busy),
        };
        self.fetch(vec![("twin_id", twin_id.to_string())]).await
    }

    /// The twin registered with `public_key`; always asks the registrar (a found twin is
    /// then cached by id).
    pub async fn get_twin_by_public_key(
        &self,
        public_key: &[u8; 32],
    ) -> Result<Option<Arc<Twin>>, ClientError> {
        let twin = self
            .fetch(vec![("public_key", STANDARD.encode(public_key))])
            .await?;
        if let Some(twin) = &twin {
            self.remember(twin);
        }
        Ok(twin)
    }

    /// Bytes the lookup cache holds now, as weighed (found and unknown twins); never
    /// more than [`ClientConfig::cache_bytes`] once pending evictions ran (this runs
    /// them).
    pub fn cache_weight(&self) -> u64 {
        self.inner.by_id.run_pending_tasks();
        self.inner.by_id.weighted_size()
    }

    /// Forgets the cached answer for `twin_id`: the next lookup asks the registrar.
    /// A lookup already in flight still answers its callers but is not cached.
    pub fn invalidate(&self, twin_id: u32) {
        let mut inflight = self.inner.inflight.lock().expect("not poisoned");
        inflight.remove(&twin_id);
        self.inner.by_id.invalidate(&twin_id);
    }

    fn remember(&self, twin: &Arc<Twin>) {
        self.inner.by_id.insert(twin.twin_id, Some(twin.clone()));
        self.inner.last_known.insert(twin.twin_id, twin.clone());
    }

    /// Registers `signer`'s key with a fresh proof of possession. If the registrar says
    /// the timestamp is outside its window and tells its time (node-registrar allows
    /// only ±2 s), the proof is signed once more at the registrar's time.
    pub async fn create_account(
        &self,
        signer: &Signer,
        relays: &[String],
        rmb_enc_key: Option<[u8; 33]>,
    ) -> Result<Arc<Twin>, ClientError> {
        let mut timestamp = rmb_core::time::now();
        let mut retried = false;
        loop {
            let public_key = STANDARD.encode(signer.public_key());
            let challenge = auth::create_challenge(timestamp, &public_key);
            let body = CreateRequest {
                timestamp,
                public_key,
                signature: STANDARD.encode(auth::sign_raw(signer, challenge.as_bytes())),
                relays: relays.to_vec(),
                rmb_enc_key: rmb_enc_key.map(hex::encode),
            };
            let request = self.inner.http.post(&self.inner.accounts_url).json(&body);
            let answer = send(request).await?;
            if answer.status == StatusCode::BAD_REQUEST && !retried {
                if let Some(server_time) = answer.error_body().server_time() {
                    tracing::info!(
                        server_time,
                        our_time = timestamp,
                        "registrar clock differs from ours: signing again at its time"
                    );
                    timestamp = server_time;
                    retried = true;
                    continue;
                }
            }
            let twin = Arc::new(answer.account(&[StatusCode::CREATED, StatusCode::OK])?);
            self.remember(&twin);
            return Ok(twin);
        }
    }

    /// Changes the relays and/or the e2e key of `twin_id` (`None`: leave as is), signed
    /// by `signer`. Drops the cached entry and caches the answer (node-registrar answers
    /// an update with a message, not the account: then the account is read back).
    pub async fn update_account(
        &self,
        signer: &Signer,
        twin_id: u32,
        relays: Option<&[String]>,
        rmb_enc_key: Option<[u8; 33]>,
    ) -> Result<Arc<Twin>, ClientError> {
        self.invalidate(twin_id);
        let timestamp = self.next_auth_timestamp(twin_id);
        let body = UpdateRequest {
            relays: relays.map(<[String]>::to_vec),
            rmb_enc_key: rmb_enc_key.map(|k| Some(hex::encode(k))),
            public_key: None,
        };
        let request = self
            .inner
            .http
            .patch(format!("{}{twin_id}", self.inner.accounts_url))
            .header("X-Auth", auth::x_auth_header(signer, twin_id, timestamp))
            .json(&body);
        let result = send(request).await;
        // Whatever happened, the cached view may be stale now.
        self.invalidate(twin_id);
        let answer = result?;
        let twin = match answer.account(&[StatusCode::OK]) {
            Ok(twin) => Arc::new(twin),
            Err(ClientError::BadResponse(_)) if answer.status == StatusCode::OK => self
                .fetch(vec![("twin_id", twin_id.to_string())])
                .await?
                .ok_or_else(|| {
                    ClientError::BadResponse(format!(
                        "twin {twin_id} was updated but the registrar does not find it"
                    ))
                })?,
            Err(e) => return Err(e),
        };
        self.remember(&twin);
        Ok(twin)
    }

    /// Creates the account for `signer` if its key is unknown, otherwise updates the
    /// relays (compared as sets, normalised) and the e2e key when they differ from the
    /// wanted ones. `rmb_enc_key: None` leaves a registered e2e key alone. Returns the
    /// twin.
    pub async fn ensure_account(
        &self,
        signer: &Signer,
        relays: &[String],
        rmb_enc_key: Option<[u8; 33]>,
    ) -> Result<Arc<Twin>, ClientError> {
        let public_key = signer.public_key();
        let existing = match self.get_twin_by_public_key(&public_key).await? {
            Some(twin) => twin,
            None => match self.create_account(signer, relays, rmb_enc_key).await {
                Ok(twin) => return Ok(twin),
                // Created concurrently by someone else holding the key: update it below.
                Err(ClientError::Rejected { status: 409, .. }) => self
                    .get_twin_by_public_key(&public_key)
                    .await?
                    .ok_or_else(|| {
                        ClientError::BadResponse(
                            "registrar says the key exists but does not find it".into(),
                        )
                    })?,
                Err(e) => return Err(e),
            },
        };
        let mut have: Vec<&String> = existing.relays.iter().collect();
        let wanted = validate::relays_lenient(relays);
        let mut want: Vec<&String> = wanted.iter().collect();
        have.sort();
        have.dedup();
        want.sort();
        want.dedup();
        let relays_differ = have != want;
        let key_differs = rmb_enc_key.is_some() && existing.rmb_enc_key != rmb_enc_key;
        if !relays_differ && !key_differs {
            return Ok(existing);
        }
        self.update_account(
            signer,
            existing.twin_id,
            relays_differ.then_some(relays),
            rmb_enc_key.filter(|_| key_differs),
        )
        .await
    }

    async fn fetch(
        &self,
        query: Vec<(&'static str, String)>,
    ) -> Result<Option<Arc<Twin>>, ClientError> {
        let request = self.inner.http.get(&self.inner.accounts_url).query(&query);
        let answer = send(request).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        // Some node-registrar versions answer lookups with 201.
        let account = answer.account(&[StatusCode::OK, StatusCode::CREATED])?;
        Ok(Some(Arc::new(account)))
    }

    /// `max(now, last used + 1)`: strictly increasing per twin within this process.
    fn next_auth_timestamp(&self, twin_id: u32) -> u64 {
        let now = rmb_core::time::now();
        let mut last = self.inner.last_auth.lock().expect("not poisoned");
        let entry = last.entry(twin_id).or_insert(0);
        *entry = now.max(entry.saturating_add(1));
        *entry
    }
}

/// A registrar's answer: its status and at most [`MAX_ANSWER_BYTES`] of its body.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

async fn send(request: reqwest::RequestBuilder) -> Result<Answer, ClientError> {
    let mut response = request.send().await.map_err(transport_error)?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(ClientError::BadResponse(format!(
                "answer larger than {MAX_ANSWER_BYTES} bytes (status {status})"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer { status, body })
}

impl Answer {
    fn error_body(&self) -> AnyErrorBody {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    /// The account in the body, if the status is one of `expected`; otherwise the
    /// refusal as an error.
    fn account(&self, expected: &[StatusCode]) -> Result<Twin, ClientError> {
        if !expected.contains(&self.status) {
            let status = self.status;
            let message = match self.error_body().text() {
                Some(text) => text.chars().take(300).collect(),
                None => String::from_utf8_lossy(&self.body)
                    .chars()
                    .take(200)
                    .collect(),
            };
            if status.is_client_error() || status.is_server_error() {
                return Err(ClientError::Rejected {
                    status: status.as_u16(),
                    message,
                });
            }
            return Err(ClientError::BadResponse(format!(
                "status {status}, expected {expected:?}"
            )));
        }
        let account: AccountJson = parse_maybe_wrapped(&self.body)
            .map_err(|e| ClientError::BadResponse(format!("account JSON: {e}")))?;
        twin_from_json(account)
    }
}

/// `T` itself or `{"data": T}`.
fn parse_maybe_wrapped<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice::<T>(body).or_else(|e| {
        serde_json::from_slice::<Wrapped<T>>(body)
            .map(|w| w.data)
            .map_err(|_| e)
    })
}

/// Checks and converts an account answer. Relays are normalised (entries that name no
/// relay are dropped); an e2e key that is neither hex nor base64 of a valid key is
/// treated as none (the twin could not decrypt with it either).
pub fn twin_from_json(account: AccountJson) -> Result<Twin, ClientError> {
    let public_key = STANDARD
        .decode(&account.public_key)
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or_else(|| ClientError::BadResponse("public_key is not base64 of 32 bytes".into()))?;
    let rmb_enc_key = match account.rmb_enc_key.as_deref().map(validate::e2e_key) {
        None => None,
        Some(Ok(key)) => key,
        Some(Err(e)) => {
            tracing::warn!(twin_id = account.twin_id, error = %e, "ignoring the twin's e2e key");
            None
        }
    };
    Ok(Twin {
        twin_id: account.twin_id,
        public_key,
        relays: validate::relays_lenient(&account.relays),
        rmb_enc_key,
    })
}

fn transport_error(e: reqwest::Error) -> ClientError {
    if e.is_timeout() {
        ClientError::Timeout
    } else if e.is_decode() || e.is_body() {
        ClientError::BadResponse(e.to_string())
    } else {
        // Connect failures, resets, DNS: include the cause chain, reqwest's top-level
        // message alone is "error sending request".
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        ClientError::Unreachable(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_miss_bucket_gives_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(3, 2.0, t0);
        assert_eq!((0..5).filter(|_| bucket.take(t0)).count(), 3);
        // Half a second refills one token at 2 a second, and never beyond the burst.
        assert!(bucket.take(t0 + Duration::from_millis(500)));
        assert!(!bucket.take(t0 + Duration::from_millis(500)));
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..5).filter(|_| bucket.take(later)).count(), 3);
        // Nonsense rates refill nothing rather than panicking.
        let mut odd = TokenBucket::new(0, f64::NAN, t0);
        assert!(odd.take(t0));
        assert!(!odd.take(later));
    }

    #[test]
    fn accounts_url_keeps_prefixes_and_knows_v1_roots() {
        assert_eq!(accounts_url("http://r:8080"), "http://r:8080/v1/accounts/");
        assert_eq!(
            accounts_url("https://r/registrar"),
            "https://r/registrar/v1/accounts/"
        );
        // zos4 and the Go client are configured with the API root.
        assert_eq!(
            accounts_url("https://r/api/v1"),
            "https://r/api/v1/accounts/"
        );
        assert_eq!(accounts_url("https://r/v1"), "https://r/v1/accounts/");
    }

    #[test]
    fn wrapped_and_plain_bodies() {
        let plain = br#"{"twin_id":3,"public_key":"AAAA","relays":[],"rmb_enc_key":null}"#;
        let wrapped = br#"{"msg":"Account retrieved successfully","data":{"twin_id":3,"public_key":"AAAA","relays":[],"rmb_enc_key":null}}"#;
        assert_eq!(
            parse_maybe_wrapped::<AccountJson>(plain).unwrap().twin_id,
            3
        );
        assert_eq!(
            parse_maybe_wrapped::<AccountJson>(wrapped).unwrap().twin_id,
            3
        );
        assert!(parse_maybe_wrapped::<AccountJson>(b"{\"message\":\"ok\"}").is_err());
    }
}

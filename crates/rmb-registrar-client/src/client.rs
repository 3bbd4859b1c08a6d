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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use moka::sync::Cache;
use moka::Expiry;
use reqwest::StatusCode;
use rmb_core::Signer;
use tokio::sync::OnceCell;

use crate::auth;
use crate::wire::{AccountJson, CreateRequest, ErrorBody, UpdateRequest};

/// A twin as peers and relays need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Twin {
    pub twin_id: u32,
    pub public_key: [u8; 32],
    pub relays: Vec<String>,
    pub rmb_enc_key: Option<[u8; 33]>,
}

/// Client timeouts and cache bounds.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Whole-request timeout (connect + answer).
    pub timeout: Duration,
    /// How long a found twin is served from the cache.
    pub cache_ttl: Duration,
    /// Most twins kept (found and unknown together).
    pub cache_capacity: u64,
    /// How long "no such twin" is served from the cache.
    pub negative_ttl: Duration,
    /// How long a found twin may still be served when the registrar cannot be reached
    /// (zero: never).
    pub stale_ttl: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(60),
            cache_capacity: 100_000,
            negative_ttl: Duration::from_secs(5),
            stale_ttl: Duration::from_secs(3600),
        }
    }
}

/// Why a registrar call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("invalid registrar URL {0:?}: expected http(s)://host[:port][/prefix]")]
    InvalidUrl(String),
    #[error("registrar did not answer in time")]
    Timeout,
    #[error("registrar unreachable: {0}")]
    Unreachable(String),
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
            ClientError::Timeout | ClientError::Unreachable(_) => true,
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
    /// `<base>/v1/accounts/`
    accounts_url: String,
    by_id: Cache<u32, Option<Arc<Twin>>>,
    /// Last known record of each twin found, for lookups while the registrar is down.
    last_known: Cache<u32, Arc<Twin>>,
    /// Lookups by id in flight: concurrent misses wait on the same cell. An entry is
    /// removed (under this lock) when its answer is cached, or by `invalidate`, in which
    /// case the answer of the fetch already running is not cached.
    inflight: Mutex<HashMap<u32, Arc<Flight>>>,
    /// Newest X-Auth timestamp this client used per twin: two updates within one second
    /// must still carry increasing timestamps.
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

impl RegistrarClient {
    /// A client with [`ClientConfig::default`]. `base_url` is `http(s)://host[:port]`
    /// (a path prefix is kept).
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
            .build()
            .map_err(|e| ClientError::Unreachable(format!("building the HTTP client: {e}")))?;
        let by_id = Cache::builder()
            .max_capacity(config.cache_capacity)
            .expire_after(TwinExpiry {
                ttl: config.cache_ttl,
                negative_ttl: config.negative_ttl,
            })
            .build();
        let last_known = Cache::builder()
            .max_capacity(config.cache_capacity)
            .time_to_live(config.stale_ttl)
            .build();
        Ok(RegistrarClient {
            inner: Arc::new(Inner {
                http,
                accounts_url: format!("{base}/v1/accounts/"),
                by_id,
                last_known,
                inflight: Mutex::new(HashMap::new()),
                last_auth: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The twin, from the cache or the registrar; `None` if it does not exist. Concurrent
    /// calls for an uncached twin make one request and all get its answer; errors are not
    /// cached.
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
            .get_or_init(|| self.fetch(vec![("twin_id", twin_id.to_string())]))
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
            self.inner.by_id.insert(twin.twin_id, Some(twin.clone()));
            self.inner.last_known.insert(twin.twin_id, twin.clone());
        }
        Ok(twin)
    }

    /// Forgets the cached answer for `twin_id`: the next lookup asks the registrar.
    /// A lookup already in flight still answers its callers but is not cached.
    pub fn invalidate(&self, twin_id: u32) {
        let mut inflight = self.inner.inflight.lock().expect("not poisoned");
        inflight.remove(&twin_id);
        self.inner.by_id.invalidate(&twin_id);
    }

    /// Registers `signer`'s key with a fresh proof of possession.
    pub async fn create_account(
        &self,
        signer: &Signer,
        relays: &[String],
        rmb_enc_key: Option<[u8; 33]>,
    ) -> Result<Arc<Twin>, ClientError> {
        let timestamp = rmb_core::time::now();
        let public_key = STANDARD.encode(signer.public_key());
        let signature = signer.sign(auth::create_challenge(timestamp, &public_key).as_bytes());
        let body = CreateRequest {
            timestamp,
            public_key,
            signature: STANDARD.encode(signature),
            relays: relays.to_vec(),
            rmb_enc_key: rmb_enc_key.map(hex::encode),
        };
        let request = self.inner.http.post(&self.inner.accounts_url).json(&body);
        let twin = Arc::new(expect_account(request, StatusCode::CREATED).await?);
        self.inner.by_id.insert(twin.twin_id, Some(twin.clone()));
        Ok(twin)
    }

    /// Changes the relays and/or the e2e key of `twin_id` (`None`: leave as is), signed
    /// by `signer`. Drops the cached entry and caches the answer.
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
        };
        let request = self
            .inner
            .http
            .patch(format!("{}{twin_id}", self.inner.accounts_url))
            .header("X-Auth", auth::x_auth_header(signer, twin_id, timestamp))
            .json(&body);
        let result = expect_account(request, StatusCode::OK).await;
        // Whatever happened, the cached view may be stale now.
        self.invalidate(twin_id);
        let twin = Arc::new(result?);
        self.inner.by_id.insert(twin.twin_id, Some(twin.clone()));
        Ok(twin)
    }

    /// Creates the account for `signer` if its key is unknown, otherwise updates the
    /// relays (compared as sets) and the e2e key when they differ from the wanted ones.
    /// `rmb_enc_key: None` leaves a registered e2e key alone. Returns the twin.
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
        let mut want: Vec<&String> = relays.iter().collect();
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
        let response = request.send().await.map_err(transport_error)?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let account = read_account(response, StatusCode::OK).await?;
        Ok(Some(Arc::new(account)))
    }

    /// `max(now, last used + 1)`: strictly increasing per twin within this process, and
    /// within the registrar's window as long as fewer than ~30 updates a second are made.
    fn next_auth_timestamp(&self, twin_id: u32) -> u64 {
        let now = rmb_core::time::now();
        let mut last = self.inner.last_auth.lock().expect("not poisoned");
        let entry = last.entry(twin_id).or_insert(0);
        *entry = now.max(*entry + 1);
        *entry
    }
}

async fn expect_account(
    request: reqwest::RequestBuilder,
    expected: StatusCode,
) -> Result<Twin, ClientError> {
    let response = request.send().await.map_err(transport_error)?;
    read_account(response, expected).await
}

async fn read_account(
    response: reqwest::Response,
    expected: StatusCode,
) -> Result<Twin, ClientError> {
    let status = response.status();
    let body = response.bytes().await.map_err(transport_error)?;
    if status != expected {
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(200).collect());
        if status.is_client_error() || status.is_server_error() {
            return Err(ClientError::Rejected {
                status: status.as_u16(),
                message,
            });
        }
        return Err(ClientError::BadResponse(format!(
            "status {status}, expected {expected}"
        )));
    }
    let account: AccountJson = serde_json::from_slice(&body)
        .map_err(|e| ClientError::BadResponse(format!("account JSON: {e}")))?;
    twin_from_json(account)
}

/// Checks and converts an account answer.
pub fn twin_from_json(account: AccountJson) -> Result<Twin, ClientError> {
    let bad = |what: &str| ClientError::BadResponse(what.to_string());
    let public_key = STANDARD
        .decode(&account.public_key)
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or_else(|| bad("public_key is not base64 of 32 bytes"))?;
    let rmb_enc_key = account
        .rmb_enc_key
        .map(|k| {
            hex::decode(k)
                .ok()
                .and_then(|k| <[u8; 33]>::try_from(k).ok())
                .ok_or_else(|| bad("rmb_enc_key is not hex of 33 bytes"))
        })
        .transpose()?;
    Ok(Twin {
        twin_id: account.twin_id,
        public_key,
        relays: account.relays,
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

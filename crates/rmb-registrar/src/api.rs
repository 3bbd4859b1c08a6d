//! HTTP routes of PROTOCOL.md §5, plus `/health` and `/metrics`.
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/accounts` | 201 + account; 409 if the key is registered |
//! | `GET /v1/accounts/?twin_id=N` or `?public_key=<b64>` | 200 + account; 404 |
//! | `GET /v1/accounts?page=P&size=S` | 200 + JSON array of accounts ordered by twin id; `page` is 1-based (default 1), `size` defaults to 50, at most 500 |
//! | `PATCH /v1/accounts/{twin_id}` + `X-Auth` | 200 + account |
//! | `GET /health` | 200 `{"status":"ok"}` when the database answers, else 503 |
//! | `GET /metrics` | Prometheus text |
//! | `/v1/farms...`, `/v1/nodes...`, `/v1/zos...` (node-registrar's other routes) | 501 + the reason: accounts only |
//!
//! Every `/v1/...` route is also served as `/api/v1/...` (node-registrar's base path),
//! with or without a trailing slash. Refusals are `{"error": "..."}`, with the status
//! node-registrar gives: 400 for anything malformed or invalid (JSON, base64, relays,
//! e2e key, query values, X-Auth shape, a create proof out of the time window, which
//! also carries `server_time`), 401 failed proof (signature, X-Auth window, replay), 404
//! unknown twin, 408 body too slow, 409 key already registered, 413 body over the limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, patch};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::auth::{self, AuthError};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{Account, AccountUpdate, Store, StoreError};
use rmb_registrar_client::validate::{self, ValidationError};
use rmb_registrar_client::wire::{AccountJson, CreateRequest, ErrorBody, UpdateRequest};

/// Default and largest page size of the account list.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 500;

/// Counters a running server exposes to its owner (tests use them to prove the client
/// coalesces requests).
#[derive(Debug, Default)]
pub struct Stats {
    lookups: AtomicU64,
}

impl Stats {
    /// `GET /v1/accounts/?twin_id=` and `?public_key=` requests answered (any status).
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }
}

pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) config: Config,
    pub(crate) stats: Arc<Stats>,
    pub(crate) metrics: Metrics,
}

type AppState = Arc<Shared>;

/// A refusal, rendered as `{"error": message}` (plus `server_time` where the client
/// should sign again at the server's time).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    server_time: Option<u64>,
}

impl ApiError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
            server_time: None,
        }
    }

    /// The HTTP status of this refusal.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
                server_time: self.server_time,
            }),
        )
            .into_response()
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError {
            server_time: e.server_time(),
            ..ApiError::new(e.status(), e.to_string())
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::new(400, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::KeyExists => ApiError::new(
                409,
                "this public key is already registered; look it up with GET /v1/accounts/?public_key=<base64> or update it with PATCH",
            ),
            StoreError::IdsExhausted => ApiError::new(507, "no twin ids left"),
            other => {
                tracing::error!(error = %other, "storage failure");
                ApiError::new(500, "internal storage error; try again later")
            }
        }
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let max_body = shared.config.max_body;
    let mut router = Router::new();
    // node-registrar serves both prefixes (pkg/server/routes.go); zos4 uses /api/v1.
    for prefix in ["/v1", "/api/v1"] {
        router = router
            .route(
                &format!("{prefix}/accounts"),
                get(get_accounts).post(create_account),
            )
            .route(
                &format!("{prefix}/accounts/"),
                get(get_accounts).post(create_account),
            )
            .route(
                &format!("{prefix}/accounts/{{twin_id}}"),
                patch(update_account),
            )
            .route(
                &format!("{prefix}/accounts/{{twin_id}}/"),
                patch(update_account),
            );
        // node-registrar's other routes (farms, nodes, uptime, zos version): RMB needs
        // accounts only, and serving farms and nodes would mean taking over the grid's
        // farm, node and uptime records. A client pointed here by mistake gets 501 and
        // the reason instead of a bare 404.
        for area in ["farms", "nodes", "zos"] {
            router = router
                .route(&format!("{prefix}/{area}"), any(not_served))
                .route(&format!("{prefix}/{area}/"), any(not_served))
                .route(&format!("{prefix}/{area}/{{*rest}}"), any(not_served));
        }
    }
    router
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route_layer(middleware::from_fn_with_state(shared.clone(), track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        // Outermost: preflights are answered before routing, and 404s get the headers too.
        .layer(middleware::from_fn(crate::cors::layer))
        .with_state(shared)
}

/// Counts every matched request by route, method and status, and times it.
async fn track(
    State(s): State<AppState>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = matched
        .as_ref()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    s.metrics
        .requests
        .inc(&[&route, method_label(&method), &status]);
    s.metrics
        .request_duration
        .observe(&[&route], started.elapsed().as_secs_f64());
    response
}

/// The metric label of a request method: HTTP lets a client invent methods, so any
/// other than the standard ones is `other` (labels must not grow with what strangers
/// send).
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::POST,
        Method::PATCH,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("other", |known| known.as_str())
}

async fn not_found(State(s): State<AppState>, method: Method) -> ApiError {
    s.metrics
        .requests
        .inc(&["unmatched", method_label(&method), "404"]);
    ApiError::new(
        404,
        "no such route: the API is /v1/accounts, /v1/accounts/{twin_id} (also under /api/v1), /health and /metrics",
    )
}

/// node-registrar's farm, node and zos routes, which this registrar does not serve.
async fn not_served() -> ApiError {
    ApiError::new(
        501,
        "not implemented: this registrar serves RMB accounts (twins) only, at /v1/accounts; \
         farms, nodes, uptime reports and the zos version are served by node-registrar \
         (tfgridv4-sdk-go): point farm and node clients at one",
    )
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(405, format!("method {method} is not allowed on this route"))
}

async fn health(State(s): State<AppState>) -> Response {
    match s.store.ping().await {
        Ok(()) => Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database does not answer");
            ApiError::new(503, "the database does not answer").into_response()
        }
    }
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// Reads a JSON body: 413 over the limit, 408 too slow, 400 for anything that is not the
/// expected JSON (as node-registrar). The content type is not required (older clients
/// omit it).
fn read_body(body: Result<Bytes, BytesRejection>, max_body: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        if rmb_http::is_body_timeout(&rejection) {
            ApiError::new(
                408,
                "the request body did not arrive in time; send the whole body at once",
            )
        } else if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                413,
                format!("request body is larger than the limit of {max_body} bytes; send a smaller body"),
            )
        } else {
            ApiError::new(status.as_u16(), format!("could not read the request body: {rejection}"))
        }
    })
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::new(400, format!("invalid JSON body: {e}")))
}

/// An account as the API shows it.
fn account_json(a: &Account) -> AccountJson {
    AccountJson {
        twin_id: a.twin_id,
        public_key: STANDARD.encode(a.public_key),
        relays: a.relays.clone(),
        rmb_enc_key: a.rmb_enc_key.map(hex::encode),
        created_at: a.created_at,
        updated_at: a.updated_at,
    }
}

fn account_response(status: StatusCode, account: &Account) -> Response {
    (status, Json(account_json(account))).into_response()
}

fn decode_public_key(text: &str, lenient: bool) -> Result<[u8; 32], ApiError> {
    let decoded = if lenient {
        // In a query string an unescaped '+' arrives as ' '; accept URL-safe and
        // unpadded forms too.
        let text = text.replace(' ', "+");
        [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(&text).ok())
    } else {
        STANDARD.decode(text).ok()
    };
    let bytes = decoded.ok_or_else(|| {
        ApiError::new(
            400,
            "public_key is not valid base64; send the 32-byte key in standard base64",
        )
    })?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| {
        ApiError::new(
            400,
            format!("public_key must be 32 bytes (an ed25519 or sr25519 public key), got {len}"),
        )
    })
}

/// A create request, decoded and checked (all but the proof's time and the database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidCreate {
    pub request: CreateRequest,
    pub public_key: [u8; 32],
    pub relays: Vec<String>,
    pub rmb_enc_key: Option<[u8; 33]>,
}

/// Decodes a create body: JSON, key, relays (normalised), e2e key. Pure; the fuzz
/// target `registrar_create` runs it.
pub fn decode_create(body: &[u8]) -> Result<ValidCreate, ApiError> {
    let request: CreateRequest = parse_json(body)?;
    let public_key = decode_public_key(&request.public_key, false)?;
    let relays = validate::relays(&request.relays)?;
    let rmb_enc_key = match request.rmb_enc_key.as_deref() {
        Some(text) => validate::e2e_key(text)?,
        None => None,
    };
    Ok(ValidCreate {
        request,
        public_key,
        relays,
        rmb_enc_key,
    })
}

async fn create_account(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(body, s.config.max_body)?;
    let create = decode_create(&body)?;
    auth::verify_create_proof(
        create.request.timestamp,
        &create.request.public_key,
        &create.public_key,
        &create.request.signature,
        rmb_core::time::now(),
        s.config.time_window.as_secs(),
    )?;
    // Checked first so a repeated registration does not consume an id from the
    // PostgreSQL sequence; the unique constraint still decides concurrent creates.
    if s.store.by_public_key(&create.public_key).await?.is_some() {
        return Err(StoreError::KeyExists.into());
    }
    let account = s
        .store
        .create(
            &create.public_key,
            &create.relays,
            create.rmb_enc_key.as_ref(),
            rmb_core::time::now(),
        )
        .await?;
    s.metrics.accounts_created.inc();
    tracing::info!(twin_id = account.twin_id, "account created");
    Ok(account_response(StatusCode::CREATED, &account))
}

#[derive(Debug, Default, Deserialize)]
struct AccountsQuery {
    twin_id: Option<String>,
    public_key: Option<String>,
    page: Option<String>,
    size: Option<String>,
}

/// What a `GET /v1/accounts` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    ById(u32),
    ByKey([u8; 32]),
    List { page: u32, size: u32 },
}

/// Decodes a lookup query string. Empty values count as absent, as node-registrar
/// reads them (`c.Query`). Pure; the fuzz target `registrar_lookup` runs it.
pub fn decode_lookup(query: &str) -> Result<Lookup, ApiError> {
    let q: AccountsQuery = serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::new(400, format!("invalid query string: {e}")))?;
    decode_lookup_query(q)
}

fn decode_lookup_query(q: AccountsQuery) -> Result<Lookup, ApiError> {
    let present = |v: &Option<String>| v.as_deref().filter(|v| !v.is_empty()).map(str::to_string);
    match (present(&q.twin_id), present(&q.public_key)) {
        (Some(_), Some(_)) => Err(ApiError::new(
            400,
            "give either twin_id or public_key, not both",
        )),
        (Some(id), None) => Ok(Lookup::ById(parse_twin_id(&id)?)),
        (None, Some(key)) => Ok(Lookup::ByKey(decode_public_key(&key, true)?)),
        (None, None) => Ok(Lookup::List {
            page: parse_page_param(&q.page, "page", 1, u32::MAX)?,
            size: parse_page_param(&q.size, "size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?,
        }),
    }
}

async fn get_accounts(
    State(s): State<AppState>,
    query: Result<Query<AccountsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(400, format!("invalid query string: {e}")))?;
    match decode_lookup_query(q)? {
        Lookup::ById(twin_id) => {
            s.stats.lookups.fetch_add(1, Ordering::Relaxed);
            let account = s.store.by_id(twin_id).await?;
            found(account, || format!("no twin with id {twin_id}"))
        }
        Lookup::ByKey(public_key) => {
            s.stats.lookups.fetch_add(1, Ordering::Relaxed);
            let account = s.store.by_public_key(&public_key).await?;
            found(account, || "no twin with this public key".to_string())
        }
        Lookup::List { page, size } => {
            let offset = u64::from(page - 1) * u64::from(size);
            let accounts = s.store.list(offset, size).await?;
            let body: Vec<AccountJson> = accounts.iter().map(account_json).collect();
            Ok(Json(body).into_response())
        }
    }
}

fn found(account: Option<Account>, missing: impl FnOnce() -> String) -> Result<Response, ApiError> {
    match account {
        Some(account) => Ok(account_response(StatusCode::OK, &account)),
        None => Err(ApiError::new(404, missing())),
    }
}

fn parse_twin_id(text: &str) -> Result<u32, ApiError> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(id) = text.parse::<u32>() {
            return Ok(id);
        }
    }
    Err(ApiError::new(
        400,
        format!(
            "twin id {:?} is not a number from 1 to 4294967295",
            text.chars().take(40).collect::<String>()
        ),
    ))
}

fn parse_page_param(
    value: &Option<String>,
    name: &str,
    default: u32,
    max: u32,
) -> Result<u32, ApiError> {
    let Some(text) = value.as_deref().filter(|v| !v.is_empty()) else {
        return Ok(default);
    };
    match text.trim().parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::new(
            400,
            format!(
                "{name} must be a whole number from 1 to {max}, got {:?}",
                text.chars().take(40).collect::<String>()
            ),
        )),
    }
}

/// A PATCH body, decoded and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidUpdate {
    pub update: AccountUpdate,
    /// The `public_key` the body names, if any: it must be the account's.
    pub public_key: Option<[u8; 32]>,
}

/// Decodes a PATCH body. `"relays": null` and `"rmb_enc_key": ""` leave the values as
/// they are (node-registrar); `"rmb_enc_key": null` removes the key; unknown fields are
/// ignored. Pure; the fuzz target `registrar_update` runs it.
pub fn decode_update(body: &[u8]) -> Result<ValidUpdate, ApiError> {
    let req: UpdateRequest = parse_json(body)?;
    let relays = req.relays.as_deref().map(validate::relays).transpose()?;
    let rmb_enc_key = match &req.rmb_enc_key {
        None => None,
        Some(None) => Some(None),
        Some(Some(text)) => validate::e2e_key(text)?.map(Some),
    };
    let public_key = req
        .public_key
        .as_deref()
        .map(|k| decode_public_key(k, false))
        .transpose()?;
    Ok(ValidUpdate {
        update: AccountUpdate {
            relays,
            rmb_enc_key,
        },
        public_key,
    })
}

/// Times a PATCH re-reads the account when another update changed it in between.
const UPDATE_ATTEMPTS: usize = 3;

async fn update_account(
    State(s): State<AppState>,
    Path(twin_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let twin_id = parse_twin_id(&twin_id)?;
    let header = headers
        .get("x-auth")
        .ok_or(AuthError::MissingHeader)?
        .to_str()
        .map_err(|_| AuthError::MalformedHeader("it is not ASCII".into()))?;
    let x_auth = auth::parse_x_auth(header)?;
    let mut account = s
        .store
        .by_id(twin_id)
        .await?
        .ok_or_else(|| ApiError::new(404, format!("no twin with id {twin_id}")))?;
    x_auth.verify(
        twin_id,
        &account.public_key,
        rmb_core::time::now(),
        s.config.auth_max_age.as_secs(),
        s.config.time_window.as_secs(),
    )?;

    let body = read_body(body, s.config.max_body)?;
    let valid = decode_update(&body)?;
    if valid.public_key.is_some_and(|k| k != account.public_key) {
        return Err(ApiError::new(
            400,
            "the public key of an account cannot be changed; register the new key as a new twin",
        ));
    }
    let digest = auth::body_digest(&body);
    let header_digest = x_auth.digest();
    for _ in 0..UPDATE_ATTEMPTS {
        let now = rmb_core::time::now();
        let guard = auth::admit(
            &account.auth,
            x_auth.timestamp,
            &header_digest,
            &digest,
            now,
            s.config.auth_max_age.as_secs(),
        )?;
        if let Some(updated) = s
            .store
            .update(twin_id, &valid.update, &account.auth, &guard, now)
            .await?
        {
            tracing::info!(twin_id, "account updated");
            return Ok(account_response(StatusCode::OK, &updated));
        }
        // Another update was accepted in between: decide again against it.
        account = s
            .store
            .by_id(twin_id)
            .await?
            .ok_or_else(|| ApiError::new(404, format!("no twin with id {twin_id}")))?;
    }
    Err(ApiError::new(
        409,
        "the account is being updated concurrently; try again",
    ))
}

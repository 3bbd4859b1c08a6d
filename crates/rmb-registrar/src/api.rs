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
//!
//! `/v1/accounts` and `/v1/accounts/` are the same route. Refusals are
//! `{"error": "..."}`: 400 malformed (JSON syntax, base64, hex, query values, X-Auth
//! shape), 401 failed proof (signature, timestamp window, replayed X-Auth), 404 unknown
//! twin, 409 key already registered, 413 body over the limit, 422 well-formed but
//! invalid values (relays, e2e key, key length, JSON fields of the wrong type).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::auth::{self, AuthError};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{Account, AccountUpdate, Store, StoreError};
use crate::validate::{self, ValidationError};
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

/// A refusal, rendered as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::new(e.status(), e.to_string())
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::new(e.status(), e.to_string())
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
    Router::new()
        .route("/v1/accounts", get(get_accounts).post(create_account))
        .route("/v1/accounts/", get(get_accounts).post(create_account))
        .route("/v1/accounts/{twin_id}", patch(update_account))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route_layer(middleware::from_fn(track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(shared)
}

/// Counts every matched request by route, method and status, and times it.
async fn track(matched: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = matched
        .as_ref()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("registrar_http_requests_total", "route" => route.clone(), "method" => method.to_string(), "status" => status).increment(1);
    metrics::histogram!("registrar_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

async fn not_found(method: Method) -> ApiError {
    metrics::counter!("registrar_http_requests_total", "route" => "unmatched", "method" => method.to_string(), "status" => "404").increment(1);
    ApiError::new(
        404,
        "no such route: the API is /v1/accounts, /v1/accounts/{twin_id}, /health and /metrics",
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
    match s.metrics.render() {
        Some(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        None => ApiError::new(
            503,
            "metrics are unavailable: another metrics recorder is installed in this process",
        )
        .into_response(),
    }
}

/// Reads a JSON body: 413 over the limit, 400 for a syntax error, 422 for fields of the
/// wrong shape. The content type is not required (older clients omit it).
fn json_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    max_body: usize,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
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
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        let status = match e.classify() {
            serde_json::error::Category::Data => 422,
            _ => 400,
        };
        ApiError::new(status, format!("invalid JSON body: {e}"))
    })
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
            422,
            format!("public_key must be 32 bytes (an ed25519 or sr25519 public key), got {len}"),
        )
    })
}

async fn create_account(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: CreateRequest = json_body(body, s.config.max_body)?;
    let public_key = decode_public_key(&req.public_key, false)?;
    validate::relays(&req.relays)?;
    let rmb_enc_key = req
        .rmb_enc_key
        .as_deref()
        .map(validate::e2e_key)
        .transpose()?;
    auth::verify_create_proof(
        req.timestamp,
        &req.public_key,
        &public_key,
        &req.signature,
        rmb_core::time::now(),
        s.config.time_window.as_secs(),
    )?;
    // Checked first so a repeated registration does not consume an id from the
    // PostgreSQL sequence; the unique constraint still decides concurrent creates.
    if s.store.by_public_key(&public_key).await?.is_some() {
        return Err(StoreError::KeyExists.into());
    }
    let account = s
        .store
        .create(
            &public_key,
            &req.relays,
            rmb_enc_key.as_ref(),
            rmb_core::time::now(),
        )
        .await?;
    metrics::counter!("registrar_accounts_created_total").increment(1);
    tracing::info!(twin_id = account.twin_id, "account created");
    Ok(account_response(StatusCode::CREATED, &account))
}

#[derive(Debug, Deserialize)]
struct AccountsQuery {
    twin_id: Option<String>,
    public_key: Option<String>,
    page: Option<String>,
    size: Option<String>,
}

async fn get_accounts(
    State(s): State<AppState>,
    query: Result<Query<AccountsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(400, format!("invalid query string: {e}")))?;
    match (&q.twin_id, &q.public_key) {
        (Some(_), Some(_)) => Err(ApiError::new(
            400,
            "give either twin_id or public_key, not both",
        )),
        (Some(id), None) => {
            s.stats.lookups.fetch_add(1, Ordering::Relaxed);
            let twin_id = parse_twin_id(id)?;
            let account = s.store.by_id(twin_id).await?;
            found(account, || format!("no twin with id {twin_id}"))
        }
        (None, Some(key)) => {
            s.stats.lookups.fetch_add(1, Ordering::Relaxed);
            let public_key = decode_public_key(key, true)?;
            let account = s.store.by_public_key(&public_key).await?;
            found(account, || "no twin with this public key".to_string())
        }
        (None, None) => list_accounts(&s, &q).await,
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
        format!("twin id {text:?} is not a number from 1 to 4294967295"),
    ))
}

fn parse_page_param(
    value: &Option<String>,
    name: &str,
    default: u32,
    max: u32,
) -> Result<u32, ApiError> {
    let Some(text) = value else {
        return Ok(default);
    };
    match text.trim().parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::new(
            400,
            format!("{name} must be a whole number from 1 to {max}, got {text:?}"),
        )),
    }
}

async fn list_accounts(s: &Shared, q: &AccountsQuery) -> Result<Response, ApiError> {
    let page = parse_page_param(&q.page, "page", 1, u32::MAX)?;
    let size = parse_page_param(&q.size, "size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
    let offset = u64::from(page - 1) * u64::from(size);
    let accounts = s.store.list(offset, size).await?;
    let body: Vec<AccountJson> = accounts.iter().map(account_json).collect();
    Ok(Json(body).into_response())
}

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
    let account = s
        .store
        .by_id(twin_id)
        .await?
        .ok_or_else(|| ApiError::new(404, format!("no twin with id {twin_id}")))?;
    let window = s.config.time_window.as_secs();
    x_auth.verify(
        twin_id,
        &account.public_key,
        account.last_auth_ts,
        rmb_core::time::now(),
        window,
    )?;

    let req: UpdateRequest = json_body(body, s.config.max_body)?;
    if let Some(relays) = &req.relays {
        validate::relays(relays)?;
    }
    let rmb_enc_key = match &req.rmb_enc_key {
        None => None,
        Some(None) => Some(None),
        Some(Some(text)) => Some(Some(validate::e2e_key(text)?)),
    };
    let update = AccountUpdate {
        relays: req.relays,
        rmb_enc_key,
    };
    match s
        .store
        .update(twin_id, &update, x_auth.timestamp, rmb_core::time::now())
        .await?
    {
        Some(updated) => {
            tracing::info!(twin_id, "account updated");
            Ok(account_response(StatusCode::OK, &updated))
        }
        // The row exists (read above) and accounts are never deleted: another request
        // with this or a newer timestamp was accepted in between.
        None => Err(AuthError::Replayed {
            timestamp: x_auth.timestamp,
            last: x_auth.timestamp,
        }
        .into()),
    }
}

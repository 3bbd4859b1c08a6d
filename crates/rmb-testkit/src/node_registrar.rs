//! A stand-in for node-registrar (`threefoldtech/tfgridv4-sdk-go`, `node-registrar/`),
//! the v4 identity service, for testing our registrar client against it.
//!
//! It answers the account routes byte for byte as node-registrar's handlers write them,
//! read from its source (each behaviour cites the file); it is not our server:
//!
//! - routes (`pkg/server/routes.go`): `/api/v1` and `/v1`; `POST` and `GET` on
//!   `accounts` and `accounts/`, `PATCH accounts/:twin_id` behind the X-Auth middleware;
//!   gin's `RedirectTrailingSlash` (`pkg/server/server.go`) answers `accounts/7/` with a
//!   redirect; anything else is gin's plain-text `404 page not found`;
//! - create (`handlers.go` `createAccountHandler`): required fields, a 32-byte standard
//!   base64 key, a timestamp within 2 s (else 400 with `server_time`), a signature over
//!   `"<timestamp>:<public_key>"` verified as ed25519, then sr25519, raw 64 bytes
//!   (`sigverifier.go`); strings stored as sent; 409 for a known key;
//! - lookups (`getAccountHandler`): by `twin_id` or by the exact `public_key` string;
//! - update (`middlewares.go` `AuthMiddleware`, `updateAccountHandler`): X-Auth at most
//!   60 s old (no bound ahead, no replay guard), relays changed if non-empty, the e2e key
//!   if non-empty, answered with a message, not the account;
//! - JSON as gin's `c.JSON` writes it: compact, `application/json; charset=utf-8`.
//!
//! The answer shapes changed between versions; [`Flavor`] picks one.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rmb_core::identity::{verify_raw, KeyType};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// Which version's answers to give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `handlers.go` at 0761f4fd: `db.Account` (`pkg/db/models.go`): RFC 3339
    /// `created_at`/`updated_at` and gorm's untagged `Farms` relation; lookups 200.
    DbAccount,
    /// `handlers.go` at cb2684c6: a four-field `Account`; lookups answer **201**.
    Lean,
    /// With `pkg/server/wrapper.go`: `{"msg": "...", "data": <db.Account>}`, errors as
    /// `{"msg": "..."}`.
    Wrapped,
}

/// An account as node-registrar stores it: strings as the client sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAccount {
    pub twin_id: u64,
    pub public_key: String,
    pub relays: Vec<String>,
    pub rmb_enc_key: String,
    pub created_at: String,
    pub updated_at: String,
}

/// A request the double received, for assertions on what a client sends.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Default)]
struct State {
    accounts: Vec<StoredAccount>,
    received: Vec<Received>,
    /// Seconds added to this machine's clock (a registrar whose clock is off).
    clock_offset: i64,
}

/// A running node-registrar double on a free loopback port.
pub struct NodeRegistrar {
    addr: SocketAddr,
    flavor: Flavor,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for NodeRegistrar {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NodeRegistrar {
    pub async fn start(flavor: Flavor) -> NodeRegistrar {
        let state = Arc::new(Mutex::new(State::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the node-registrar double");
        let addr = listener.local_addr().expect("its address");
        let app = Router::new().fallback({
            let state = state.clone();
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move { handle(&state, flavor, method, uri, headers, body) }
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        NodeRegistrar {
            addr,
            flavor,
            state,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`: our client adds `/v1/accounts`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:<port>/api/v1`, as zos4 configures its client
    /// (`url.JoinPath(env.RegistrarURL, "api", "v1")`).
    pub fn api_url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// Moves the double's clock by `seconds`.
    pub fn set_clock_offset(&self, seconds: i64) {
        self.state.lock().unwrap().clock_offset = seconds;
    }

    /// Stores an account as another client might have created it (no checks).
    pub fn insert(&self, public_key: &str, relays: &[&str], rmb_enc_key: &str) -> u64 {
        let mut state = self.state.lock().unwrap();
        let now = rfc3339_nano(unix_now(state.clock_offset));
        let twin_id = state.accounts.len() as u64 + 1;
        state.accounts.push(StoredAccount {
            twin_id,
            public_key: public_key.to_string(),
            relays: relays.iter().map(|r| r.to_string()).collect(),
            rmb_enc_key: rmb_enc_key.to_string(),
            created_at: now.clone(),
            updated_at: now,
        });
        twin_id
    }

    pub fn accounts(&self) -> Vec<StoredAccount> {
        self.state.lock().unwrap().accounts.clone()
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }
}

fn unix_now(offset: i64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    now + offset
}

/// gin's `c.JSON`.
fn gin_json(status: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        serde_json::to_string(&body).unwrap(),
    )
        .into_response()
}

/// An error as the flavor writes it.
fn error(flavor: Flavor, status: u16, message: &str) -> Response {
    match flavor {
        Flavor::Wrapped => gin_json(status, json!({ "msg": message })),
        _ => gin_json(status, json!({ "error": message })),
    }
}

/// gin's answer for an unknown route (and, with method checks off, a wrong method).
fn gin_404() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain")],
        "404 page not found",
    )
        .into_response()
}

fn account_body(flavor: Flavor, a: &StoredAccount) -> Value {
    let relays = if a.relays.is_empty() {
        json!([])
    } else {
        json!(a.relays)
    };
    match flavor {
        // Field order of db.Account; `Farms` has no json tag and is not preloaded.
        Flavor::DbAccount | Flavor::Wrapped => json!({
            "twin_id": a.twin_id,
            "relays": relays,
            "rmb_enc_key": a.rmb_enc_key,
            "created_at": a.created_at,
            "updated_at": a.updated_at,
            "public_key": a.public_key,
            "Farms": null,
        }),
        Flavor::Lean => json!({
            "twin_id": a.twin_id,
            "relays": relays,
            "rmb_enc_key": a.rmb_enc_key,
            "public_key": a.public_key,
        }),
    }
}

fn account_answer(flavor: Flavor, status: u16, message: &str, a: &StoredAccount) -> Response {
    match flavor {
        Flavor::Wrapped => gin_json(
            status,
            json!({ "msg": message, "data": account_body(flavor, a) }),
        ),
        _ => gin_json(status, account_body(flavor, a)),
    }
}

fn handle(
    state: &Mutex<State>,
    flavor: Flavor,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = state.lock().unwrap();
    state.received.push(Received {
        method: method.clone(),
        path_and_query: uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        headers: headers.clone(),
        body: body.clone(),
    });
    let path = uri.path();
    let Some(rest) = path
        .strip_prefix("/api/v1")
        .or_else(|| path.strip_prefix("/v1"))
    else {
        return gin_404();
    };
    let query = uri.query().unwrap_or("");
    match (method.clone(), rest) {
        (Method::POST, "/accounts" | "/accounts/") => create(&mut state, flavor, &body),
        (Method::GET, "/accounts" | "/accounts/") => lookup(&state, flavor, query),
        (Method::PATCH, rest) if rest.starts_with("/accounts/") => {
            let id = &rest["/accounts/".len()..];
            if let Some(id) = id.strip_suffix('/') {
                // RedirectTrailingSlash: 307 keeps the method for non-GET requests.
                let target = format!("{}{}", &path[..path.len() - rest.len()], "/accounts/");
                return (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, format!("{target}{id}"))],
                )
                    .into_response();
            }
            update(&mut state, flavor, id, &headers, &body)
        }
        _ => gin_404(),
    }
}

fn verify_either(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    if public_key.len() != 32 || message.is_empty() || signature.is_empty() {
        return false;
    }
    verify_raw(KeyType::Ed25519, public_key, message, signature).is_ok()
        || verify_raw(KeyType::Sr25519, public_key, message, signature).is_ok()
}

fn create(state: &mut State, flavor: Flavor, body: &[u8]) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return error(flavor, 400, "invalid character in JSON body");
    };
    let timestamp = req["timestamp"].as_i64().unwrap_or(0);
    let public_key = req["public_key"].as_str().unwrap_or("").to_string();
    let signature = req["signature"].as_str().unwrap_or("").to_string();
    // `binding:"required"`: zero values fail.
    for (field, missing) in [
        ("Timestamp", timestamp == 0),
        ("PublicKey", public_key.is_empty()),
        ("Signature", signature.is_empty()),
    ] {
        if missing {
            return error(
                flavor,
                400,
                &format!("Key: 'AccountCreationRequest.{field}' Error:Field validation for '{field}' failed on the 'required' tag"),
            );
        }
    }
    let key_bytes = match STANDARD.decode(&public_key) {
        Ok(k) if k.len() == 32 => k,
        _ => return error(flavor, 400, "invalid public key format"),
    };
    let now = unix_now(state.clock_offset);
    if (now - timestamp).abs() > 2 {
        let answer = match flavor {
            Flavor::Wrapped => {
                json!({"msg": "timestamp outside acceptable window", "data": {"server_time": now}})
            }
            _ => json!({"error": "timestamp outside acceptable window", "server_time": now}),
        };
        return gin_json(400, answer);
    }
    let Ok(signature) = STANDARD.decode(&signature) else {
        return error(flavor, 400, "invalid signature format: illegal base64 data");
    };
    let challenge = format!("{timestamp}:{public_key}");
    if !verify_either(&key_bytes, challenge.as_bytes(), &signature) {
        return error(
            flavor,
            401,
            "signature verification error: signature verification failed",
        );
    }
    if state.accounts.iter().any(|a| a.public_key == public_key) {
        return error(flavor, 409, "account with this public key already exists");
    }
    let relays = req["relays"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let created = rfc3339_nano(now);
    let account = StoredAccount {
        twin_id: state.accounts.len() as u64 + 1,
        public_key,
        relays,
        rmb_enc_key: req["rmb_enc_key"].as_str().unwrap_or("").to_string(),
        created_at: created.clone(),
        updated_at: created,
    };
    state.accounts.push(account.clone());
    account_answer(flavor, 201, "Account created successfully", &account)
}

fn lookup(state: &State, flavor: Flavor, query: &str) -> Response {
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| percent_decode(v))
            .unwrap_or_default()
    };
    let (twin_id, public_key) = (param("twin_id"), param("public_key"));
    if !twin_id.is_empty() && !public_key.is_empty() {
        return error(
            flavor,
            400,
            "provide either twin_id or public_key, not both",
        );
    }
    if twin_id.is_empty() && public_key.is_empty() {
        return error(
            flavor,
            400,
            "must provide either twin_id or public_key parameter",
        );
    }
    let found = if !twin_id.is_empty() {
        let Ok(id) = twin_id.parse::<u64>() else {
            return error(flavor, 400, "invalid twin ID");
        };
        state.accounts.iter().find(|a| a.twin_id == id)
    } else {
        state.accounts.iter().find(|a| a.public_key == public_key)
    };
    match found {
        None => error(flavor, 404, "account not found"),
        Some(a) => {
            let status = if flavor == Flavor::Lean { 201 } else { 200 };
            account_answer(flavor, status, "Account retrieved successfully", a)
        }
    }
}

fn update(
    state: &mut State,
    flavor: Flavor,
    path_id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    // AuthMiddleware (pkg/server/middlewares.go).
    let header = headers
        .get("x-auth")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if header.is_empty() {
        return error(flavor, 401, "Authorization header required");
    }
    let parts: Vec<&str> = header.split(':').collect();
    if parts.len() != 2 {
        return error(
            flavor,
            400,
            "Invalid header format. Use 'Challenge:Signature'",
        );
    }
    let Ok(challenge) = STANDARD.decode(parts[0]) else {
        return error(flavor, 400, "Invalid challenge encoding");
    };
    let text = String::from_utf8_lossy(&challenge).into_owned();
    let challenge_parts: Vec<&str> = text.split(':').collect();
    if challenge_parts.len() != 2 {
        return error(flavor, 400, "Invalid challenge format");
    }
    let Ok(timestamp) = challenge_parts[0].parse::<i64>() else {
        return error(flavor, 400, "Invalid timestamp");
    };
    if unix_now(state.clock_offset) - timestamp > 60 {
        return error(flavor, 401, "Expired challenge");
    }
    let Ok(auth_twin) = challenge_parts[1].parse::<u64>() else {
        return error(flavor, 400, "Invalid twin ID format");
    };
    let Some(account) = state.accounts.iter().find(|a| a.twin_id == auth_twin) else {
        return error(flavor, 404, "Account not found");
    };
    let stored_key = STANDARD.decode(&account.public_key).unwrap_or_default();
    let Ok(signature) = STANDARD.decode(parts[1]) else {
        return error(flavor, 400, "Invalid signature encoding");
    };
    if !verify_either(&stored_key, &challenge, &signature) {
        return error(
            flavor,
            401,
            "Signature verification failed: signature verification failed",
        );
    }
    // updateAccountHandler.
    let Ok(twin_id) = path_id.parse::<u64>() else {
        return error(flavor, 400, "invalid twin ID");
    };
    if twin_id != auth_twin || twin_id == 0 {
        return error(flavor, 401, "not authorized");
    }
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return error(flavor, 400, "invalid request body");
    };
    let now = rfc3339_nano(unix_now(state.clock_offset));
    let Some(account) = state.accounts.iter_mut().find(|a| a.twin_id == twin_id) else {
        return error(flavor, 404, "account not found");
    };
    if let Some(relays) = req["relays"].as_array().filter(|r| !r.is_empty()) {
        account.relays = relays
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
    }
    if let Some(key) = req["rmb_enc_key"].as_str().filter(|k| !k.is_empty()) {
        account.rmb_enc_key = key.to_string();
    }
    account.updated_at = now;
    match flavor {
        Flavor::Wrapped => gin_json(200, json!({"msg": "account updated successfully"})),
        _ => gin_json(200, json!({"message": "account updated successfully"})),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let digits = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(digits, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Go's `time.Time` JSON for a UTC time with microseconds (what PostgreSQL keeps):
/// RFC 3339 with the fraction's trailing zeros trimmed.
fn rfc3339_nano(unix: i64) -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_micros())
        .unwrap_or(0);
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let fraction = format!("{micros:06}");
    let fraction = fraction.trim_end_matches('0');
    let fraction = if fraction.is_empty() {
        String::new()
    } else {
        format!(".{fraction}")
    };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_time_format() {
        let text = rfc3339_nano(1_700_000_000);
        assert!(text.starts_with("2023-11-14T22:13:20"), "{text}");
        assert!(text.ends_with('Z'), "{text}");
        assert_eq!(
            rmb_registrar_client::wire::rfc3339_to_unix(&text),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("a%2Bb%2F%3D"), "a+b/=");
        assert_eq!(percent_decode("a+b"), "a b");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%2"), "end%2");
    }
}

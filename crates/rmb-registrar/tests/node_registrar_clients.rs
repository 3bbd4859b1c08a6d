//! Our registrar as a drop-in for node-registrar: the requests its clients send, built
//! as their source builds them, against a real server.
//!
//! - The Go client, `threefoldtech/tfgridv4-sdk-go` `node-registrar/client/account.go`:
//!   `createAccount` posts `json.NewEncoder(&body).Encode(map[string]any{...})` (keys
//!   sorted, a trailing newline, a nil `relays` slice as `null`, `rmb_enc_key` `""` by
//!   default) with `http.Post(url, "application/json", ...)`; `getAccountByPK` and
//!   `getAccount` add `public_key` / `twin_id` with `url.Values.Encode`; `updateAccount`
//!   PATCHes `parseUpdateAccountOpts` (only the non-empty fields) with `X-Auth` from
//!   `signRequest` (`client/utils.go`: `base64(challenge):base64(signature)`, the raw
//!   64-byte signature of go-subkey's `KeyPair.Sign`) and `time.Now().Unix()`.
//! - zos4, `threefoldtech/zos4` `pkg/registrar_light/register.go` `registerNode`:
//!   `EnsureAccount(env.RelayURL, "")` through a client on `<registrar>/api/v1`
//!   (`pkg/registrar_gateway`), with relays `wss://relay.dev.grid.tf`,
//!   `wss://relay.02.dev.grid.tf` (zosbase `pkg/environment`), ed25519 node keys.
//! - Farmers sign with sr25519 keys through the same client: raw 64-byte sr25519.
//! - The original rmb-rs registrar client (`threefoldtech/rmb-rs` `src/twin/registrar.rs`
//!   `update_twin`) PATCHes `{"relays": [...], "public_key": <the account's key>}`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rmb_core::{KeyType, Signer};
use rmb_registrar_client::auth::{create_challenge, sign_raw, x_auth_challenge};
use rmb_testkit::TestRegistrar;
use serde_json::Value;

fn signer(kind: KeyType) -> Signer {
    Signer::from_seed(&rand::random::<[u8; 32]>(), kind).unwrap()
}

fn now() -> u64 {
    rmb_core::time::now()
}

/// Go's `url.QueryEscape`, enough for base64.
fn query_escape(text: &str) -> String {
    text.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

/// The body `createAccount` encodes: keys in Go's sorted map order, then "\n".
fn go_create_body(
    s: &Signer,
    timestamp: u64,
    relays: Option<&[&str]>,
    rmb_enc_key: &str,
) -> Vec<u8> {
    let public_key = STANDARD.encode(s.public_key());
    let signature = STANDARD.encode(sign_raw(
        s,
        create_challenge(timestamp, &public_key).as_bytes(),
    ));
    let relays = match relays {
        None => "null".to_string(),
        Some(list) => serde_json::to_string(list).unwrap(),
    };
    format!(
        "{{\"public_key\":\"{public_key}\",\"relays\":{relays},\"rmb_enc_key\":\"{rmb_enc_key}\",\"signature\":\"{signature}\",\"timestamp\":{timestamp}}}\n"
    )
    .into_bytes()
}

/// `signRequest`: raw signature.
fn go_x_auth(s: &Signer, twin_id: u32, timestamp: u64) -> String {
    let challenge = x_auth_challenge(timestamp, twin_id);
    format!(
        "{}:{}",
        STANDARD.encode(&challenge),
        STANDARD.encode(sign_raw(s, challenge.as_bytes()))
    )
}

struct GoClient {
    http: reqwest::Client,
    /// `<registrar>/api/v1`, as zos4 configures it.
    base: String,
}

impl GoClient {
    fn new(registrar: &TestRegistrar) -> GoClient {
        GoClient {
            http: reqwest::Client::new(),
            base: format!("{}/api/v1", registrar.url()),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        // Headers Go's net/http adds to every request.
        let response = request
            .header("User-Agent", "Go-http-client/1.1")
            .header("Accept-Encoding", "gzip")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn create(&self, body: Vec<u8>) -> (u16, Value) {
        let url = format!("{}/accounts", self.base);
        self.send(
            self.http
                .post(url)
                .header("Content-Type", "application/json")
                .body(body),
        )
        .await
    }

    async fn by_key(&self, s: &Signer) -> (u16, Value) {
        let key = query_escape(&STANDARD.encode(s.public_key()));
        self.send(
            self.http
                .get(format!("{}/accounts?public_key={key}", self.base)),
        )
        .await
    }

    async fn by_id(&self, twin_id: u32) -> (u16, Value) {
        self.send(
            self.http
                .get(format!("{}/accounts?twin_id={twin_id}", self.base)),
        )
        .await
    }

    async fn patch(&self, path: &str, x_auth: &str, body: &str) -> (u16, Value) {
        self.send(
            self.http
                .patch(format!("{}{path}", self.base))
                .header("X-Auth", x_auth)
                .header("Content-Type", "application/json")
                .body(body.to_string()),
        )
        .await
    }
}

/// A registrar, the Go client, and an account created the way the Go client creates one.
async fn go_account(kind: KeyType) -> (TestRegistrar, GoClient, Signer, u32) {
    let registrar = TestRegistrar::start().await.unwrap();
    let go = GoClient::new(&registrar);
    let s = signer(kind);
    let (_, created) = go.create(go_create_body(&s, now(), None, "")).await;
    let id = twin_id(&created);
    (registrar, go, s, id)
}

fn twin_id(account: &Value) -> u32 {
    u32::try_from(account["twin_id"].as_u64().unwrap()).unwrap()
}

#[tokio::test]
async fn zos4_registers_a_node_as_it_does_on_node_registrar() {
    let registrar = TestRegistrar::start().await.unwrap();
    let go = GoClient::new(&registrar);
    let node = signer(KeyType::Ed25519);
    // EnsureAccount: look the key up, then create.
    let (status, body) = go.by_key(&node).await;
    assert_eq!(status, 404, "{body}");
    let relays = ["wss://relay.dev.grid.tf", "wss://relay.02.dev.grid.tf"];
    let (status, created) = go
        .create(go_create_body(&node, now(), Some(&relays), ""))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["relays"],
        serde_json::json!(["relay.dev.grid.tf", "relay.02.dev.grid.tf"])
    );
    assert_eq!(created["rmb_enc_key"], Value::Null);
    // The client decodes the answer into its Account (twin_id, relays, rmb_enc_key,
    // public_key): all there.
    assert_eq!(created["public_key"], STANDARD.encode(node.public_key()));
    let (status, found) = go.by_key(&node).await;
    assert_eq!((status, &found), (200, &created));
    let (status, found) = go.by_id(twin_id(&created)).await;
    assert_eq!((status, &found), (200, &created));
}

#[tokio::test]
async fn the_go_client_creates_with_nil_relays_and_farmers_sign_with_sr25519() {
    let registrar = TestRegistrar::start().await.unwrap();
    let go = GoClient::new(&registrar);
    for kind in [KeyType::Ed25519, KeyType::Sr25519] {
        let s = signer(kind);
        let (status, created) = go.create(go_create_body(&s, now(), None, "")).await;
        assert_eq!(status, 201, "{kind}: {created}");
        assert_eq!(created["relays"], serde_json::json!([]));
    }
}

#[tokio::test]
async fn the_go_client_updates_twice_in_one_second_and_a_replay_is_refused() {
    let (_registrar, go, farmer, id) = go_account(KeyType::Sr25519).await;
    let path = format!("/accounts/{id}");
    let ts = now();
    let header = go_x_auth(&farmer, id, ts);
    // UpdateAccount(UpdateAccountWithRelays(...)), then UpdateAccount(
    // UpdateAccountWithRMBEncKey(<base64, as node-registrar documents it>)) within the
    // same second: the same X-Auth header twice.
    let relays_body = "{\"relays\":[\"wss://relay.example.com\"]}\n";
    let (status, first) = go.patch(&path, &header, relays_body).await;
    assert_eq!(status, 200, "{first}");
    let key = rmb_core::E2eKey::from_bytes(&[5; 32]).unwrap().public_key();
    let key_body = format!("{{\"rmb_enc_key\":\"{}\"}}\n", STANDARD.encode(key));
    let (status, second) = go.patch(&path, &header, &key_body).await;
    assert_eq!(
        status, 200,
        "an honest second update in the same second: {second}"
    );
    assert_eq!(second["relays"], serde_json::json!(["relay.example.com"]));
    assert_eq!(
        second["rmb_enc_key"],
        hex::encode(key),
        "stored and written as hex"
    );
    // A replay of the first request is refused.
    let (status, replay) = go.patch(&path, &header, relays_body).await;
    assert_eq!(status, 401, "{replay}");
    // The account is what the two honest updates made it.
    let (_, account) = go.by_id(id).await;
    assert_eq!(account, second);
}

#[tokio::test]
async fn headers_arriving_out_of_order_inside_the_window_pass_and_exact_replays_do_not() {
    let (_registrar, go, s, id) = go_account(KeyType::Ed25519).await;
    let path = format!("/accounts/{id}");
    let t = now();
    // A newer update lands first, then one a slower client signed 50 s ago: node-registrar
    // takes both (it has no replay guard), so must we.
    let newer = go_x_auth(&s, id, t);
    let (status, body) = go
        .patch(&path, &newer, "{\"relays\":[\"new.example\"]}\n")
        .await;
    assert_eq!(status, 200, "{body}");
    let older = go_x_auth(&s, id, t - 50);
    let older_body = "{\"relays\":[\"old.example\"]}\n";
    let (status, body) = go.patch(&path, &older, older_body).await;
    assert_eq!(status, 200, "a 50 s old header after a newer one: {body}");
    // The exact requests again: 401, and nothing changes.
    let (status, body) = go.patch(&path, &older, older_body).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = go
        .patch(&path, &newer, "{\"relays\":[\"new.example\"]}\n")
        .await;
    assert_eq!(status, 401, "{body}");
    let (_, account) = go.by_id(id).await;
    assert_eq!(account["relays"], serde_json::json!(["old.example"]));
}

#[tokio::test]
async fn a_flood_of_distinct_valid_headers_is_capped_per_account() {
    let (_registrar, go, s, id) = go_account(KeyType::Ed25519).await;
    let path = format!("/accounts/{id}");
    let t = now();
    let cap = rmb_registrar::auth::MAX_REMEMBERED;
    let per_header = rmb_registrar::auth::MAX_UPDATES_PER_HEADER;
    // `cap` distinct (header, body) pairs inside the window: all accepted.
    for i in 0..cap {
        let header = go_x_auth(&s, id, t - (i / per_header) as u64);
        let body = format!("{{\"relays\":[\"r{i}.example\"]}}");
        let (status, answer) = go.patch(&path, &header, &body).await;
        assert_eq!(status, 200, "update {i}: {answer}");
    }
    // One more inside the window: the account's memory is full, so it is refused (429)
    // instead of growing or forgetting an entry (which would admit its replay).
    let header = go_x_auth(&s, id, t - 20);
    let (status, answer) = go.patch(&path, &header, "{\"relays\":[]}").await;
    assert_eq!(status, 429, "{answer}");
    // Headers that do not verify are never remembered: they cost nothing.
    let other = signer(KeyType::Sr25519);
    for i in 0..10 {
        let forged = go_x_auth(&other, id, t - i);
        let (status, _) = go.patch(&path, &forged, "{\"relays\":[]}").await;
        assert_eq!(status, 401);
    }
}

#[tokio::test]
async fn node_registrars_farm_node_and_zos_routes_answer_501_with_the_reason() {
    let registrar = TestRegistrar::start().await.unwrap();
    let http = reqwest::Client::new();
    // Every route of node-registrar's pkg/server/routes.go other than accounts, under
    // both of its prefixes.
    let routes = [
        ("GET", "farms"),
        ("GET", "farms/"),
        ("POST", "farms"),
        ("POST", "farms/"),
        ("GET", "farms/7"),
        ("PATCH", "farms/7"),
        ("GET", "nodes"),
        ("POST", "nodes"),
        ("GET", "nodes/3"),
        ("PATCH", "nodes/3"),
        ("POST", "nodes/3/uptime"),
        ("GET", "zos/version"),
        ("PUT", "zos/version"),
    ];
    for prefix in ["/v1", "/api/v1"] {
        for (method, route) in routes {
            let url = format!("{}{prefix}/{route}", registrar.url());
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let response = http
                .request(method.clone(), &url)
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 501, "{method} {url}");
            let body: Value = response.json().await.unwrap();
            let error = body["error"].as_str().unwrap_or_default();
            assert!(
                error.contains("accounts") && error.contains("node-registrar"),
                "{method} {url}: {body}"
            );
        }
    }
    // Anything else is still a plain 404.
    let response = http
        .get(format!("{}/v1/bogus", registrar.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
}

#[tokio::test]
async fn x_auth_up_to_a_minute_old_and_a_trailing_slash_are_accepted() {
    let (_registrar, go, s, id) = go_account(KeyType::Ed25519).await;
    let old = go_x_auth(&s, id, now() - 45);
    let (status, body) = go
        .patch(
            &format!("/accounts/{id}/"),
            &old,
            "{\"relays\":[\"r1.example\"]}\n",
        )
        .await;
    assert_eq!(status, 200, "45 s old, trailing slash: {body}");
    let expired = go_x_auth(&s, id, now() - 120);
    let (status, body) = go
        .patch(
            &format!("/accounts/{id}"),
            &expired,
            "{\"relays\":[\"r2.example\"]}\n",
        )
        .await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn unknown_fields_are_ignored_and_the_key_cannot_change() {
    let (_registrar, go, s, id) = go_account(KeyType::Ed25519).await;
    let path = format!("/accounts/{id}");
    // rmb-rs update_twin: relays plus the account's own public key.
    let own = format!(
        "{{\"relays\":[\"relay.gent02.dev.grid.tf\"],\"public_key\":\"{}\",\"farm\":7}}",
        STANDARD.encode(s.public_key())
    );
    let (status, body) = go.patch(&path, &go_x_auth(&s, id, now()), &own).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["relays"],
        serde_json::json!(["relay.gent02.dev.grid.tf"])
    );
    let other = format!(
        "{{\"public_key\":\"{}\"}}",
        STANDARD.encode(signer(KeyType::Ed25519).public_key())
    );
    let (status, body) = go.patch(&path, &go_x_auth(&s, id, now() + 1), &other).await;
    assert_eq!(status, 400, "{body}");
    let (_, account) = go.by_id(id).await;
    assert_eq!(account["public_key"], STANDARD.encode(s.public_key()));
}

#[tokio::test]
async fn refusals_carry_node_registrar_statuses() {
    let registrar = TestRegistrar::start().await.unwrap();
    let go = GoClient::new(&registrar);
    let s = signer(KeyType::Ed25519);
    // Out of the window: 400 with server_time, as createAccountHandler answers.
    let (status, body) = go.create(go_create_body(&s, now() - 600, None, "")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["server_time"].as_u64().unwrap() >= now() - 5, "{body}");
    assert!(body["error"].is_string(), "{body}");
    // Invalid values are 400 too.
    let (status, body) = go
        .create(go_create_body(
            &s,
            now(),
            Some(&["wss://relay.example.com/path"]),
            "",
        ))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = go.create(b"{\"timestamp\":\"soon\"}\n".to_vec()).await;
    assert_eq!(status, 400, "{body}");
    // A signature by another key is 401; a known key 409.
    let (_, created) = go.create(go_create_body(&s, now(), None, "")).await;
    let (status, body) = go.create(go_create_body(&s, now(), None, "")).await;
    assert_eq!(status, 409, "{body}");
    let id = twin_id(&created);
    let by_another_key = go_x_auth(&signer(KeyType::Ed25519), id, now());
    let (status, body) = go
        .patch(&format!("/accounts/{id}"), &by_another_key, "{}")
        .await;
    assert_eq!(status, 401, "{body}");
}

/// A browser dashboard (a page on another origin) calling the registrar: the preflight
/// it sends before a PATCH with `X-Auth`, then the request itself. node-registrar
/// answers both with `cors.New` (`pkg/server/routes.go`): any origin, any header.
#[tokio::test]
async fn a_browser_on_another_origin_may_call_the_api() {
    let registrar = TestRegistrar::start().await.unwrap();
    let http = reqwest::Client::new();
    let origin = "https://dashboard.example.com";
    for path in ["/api/v1/accounts/7", "/v1/accounts?twin_id=7"] {
        let preflight = http
            .request(
                reqwest::Method::OPTIONS,
                format!("{}{path}", registrar.url()),
            )
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "PATCH")
            .header("Access-Control-Request-Headers", "content-type,x-auth")
            .send()
            .await
            .unwrap();
        assert_eq!(preflight.status(), 204, "{path}");
        let headers = preflight.headers();
        assert_eq!(headers["access-control-allow-origin"], "*");
        let methods = headers["access-control-allow-methods"].to_str().unwrap();
        for method in ["GET", "POST", "PATCH"] {
            assert!(methods.contains(method), "{methods}");
        }
        let allowed = headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(
            allowed.contains("x-auth") && allowed.contains("content-type"),
            "{allowed}"
        );
        assert_eq!(headers["access-control-max-age"], "43200");
    }
    // The actual requests carry the origin header in the answer, refusals too.
    let s = signer(KeyType::Ed25519);
    let body = go_create_body(&s, now(), None, "");
    let created = http
        .post(format!("{}/api/v1/accounts", registrar.url()))
        .header("Origin", origin)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["access-control-allow-origin"], "*");
    let missing = http
        .get(format!(
            "{}/api/v1/accounts?twin_id=999999",
            registrar.url()
        ))
        .header("Origin", origin)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["access-control-allow-origin"], "*");
    // Without an Origin (not a browser), no CORS headers and OPTIONS is not a route.
    let plain = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/accounts", registrar.url()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 405);
    assert!(plain.headers().get("access-control-allow-origin").is_none());
}

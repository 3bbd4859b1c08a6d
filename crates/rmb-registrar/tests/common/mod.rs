//! Helpers shared by the registrar's integration tests: raw HTTP requests with
//! hand-built proofs, so tests control every byte the server sees.
#![allow(dead_code)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rmb_core::{KeyType, Signer};
use rmb_registrar_client::auth;
use serde_json::{json, Value};

pub(crate) fn signer(kind: KeyType) -> Signer {
    Signer::from_seed(&rand::random::<[u8; 32]>(), kind).unwrap()
}

pub(crate) fn now() -> u64 {
    rmb_core::time::now()
}

pub(crate) fn e2e_key_hex() -> String {
    let key = rmb_core::E2eKey::from_bytes(&rand::random::<[u8; 32]>()).unwrap();
    hex::encode(key.public_key())
}

/// A create request body with a valid typed signature at `timestamp`.
pub(crate) fn create_body(
    signer: &Signer,
    timestamp: u64,
    relays: &[&str],
    enc: Option<&str>,
) -> Value {
    let public_key = STANDARD.encode(signer.public_key());
    let signature = signer.sign(auth::create_challenge(timestamp, &public_key).as_bytes());
    json!({
        "timestamp": timestamp,
        "public_key": public_key,
        "signature": STANDARD.encode(signature),
        "relays": relays,
        "rmb_enc_key": enc,
    })
}

pub(crate) struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

impl Api {
    pub(crate) fn new(base: &str) -> Self {
        Api {
            http: reqwest::Client::new(),
            base: base.to_string(),
        }
    }

    async fn read(response: reqwest::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap();
        let value: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("status {status}: body is not JSON: {body:?}"));
        if status >= 400 {
            let error = value["error"].as_str().unwrap_or_else(|| {
                panic!("status {status}: refusal without an error text: {value}")
            });
            assert!(!error.is_empty());
        }
        (status, value)
    }

    pub(crate) async fn create(&self, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/v1/accounts", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        Self::read(r).await
    }

    pub(crate) async fn create_raw(&self, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/v1/accounts", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        Self::read(r).await
    }

    pub(crate) async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await
            .unwrap();
        Self::read(r).await
    }

    /// The Prometheus text of `/metrics`.
    pub(crate) async fn metrics(&self) -> String {
        let response = self.http.get(format!("{}/metrics", self.base)).send().await;
        response.unwrap().text().await.unwrap()
    }

    pub(crate) async fn by_id(&self, twin_id: u64) -> (u16, Value) {
        self.get(&format!("/v1/accounts/?twin_id={twin_id}")).await
    }

    /// The account, which must exist.
    pub(crate) async fn account(&self, twin_id: u64) -> Value {
        let (status, body) = self.by_id(twin_id).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub(crate) async fn all(&self) -> Vec<Value> {
        let (status, body) = self.get("/v1/accounts?size=500").await;
        assert_eq!(status, 200, "{body}");
        body.as_array().unwrap().clone()
    }

    pub(crate) async fn patch(
        &self,
        twin_id: u64,
        x_auth: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .patch(format!("{}/v1/accounts/{twin_id}", self.base))
            .json(body);
        if let Some(x_auth) = x_auth {
            request = request.header("X-Auth", x_auth);
        }
        Self::read(request.send().await.unwrap()).await
    }
}

/// Creates an account with `signer` and returns its JSON.
pub(crate) async fn register(api: &Api, signer: &Signer, relays: &[&str]) -> Value {
    let (status, body) = api.create(&create_body(signer, now(), relays, None)).await;
    assert_eq!(status, 201, "{body}");
    body
}

pub(crate) fn x_auth(signer: &Signer, twin_id: u64, timestamp: u64) -> String {
    auth::x_auth_header(signer, twin_id as u32, timestamp)
}

//! A twin driven by hand over raw WebSockets: an ed25519 identity registered without an
//! e2e key (so what it receives is plain), and envelopes built and signed by hand,
//! exactly as given. It stands for a hostile twin, or for a receiver that, like the
//! original rmb-peer, the Go router and the TypeScript client, does not de-duplicate.
//! One definition for the SDK's and rmb-peer's tests.

use std::net::SocketAddr;

use rmb_core::proto::{Message, Payload, Request, Response};
use rmb_core::{envelope, Address, Envelope, KeyType, Signer};

use crate::{RawConn, TestRegistrar, TestRelay};

/// Lifetime of the envelopes a raw twin builds, and of its tokens, seconds.
const LIFETIME: u64 = 60;

pub struct RawTwin {
    pub id: u32,
    pub signer: Signer,
}

impl RawTwin {
    /// A fresh twin registered on `relays`.
    pub async fn register(reg: &TestRegistrar, relays: &[&TestRelay]) -> Self {
        let domains: Vec<String> = relays.iter().map(|r| r.domain()).collect();
        Self::register_on(reg, &domains).await
    }

    /// A fresh twin registered with the relay names `domains`.
    pub async fn register_on(reg: &TestRegistrar, domains: &[String]) -> Self {
        let signer = Signer::from_seed(&rand::random(), KeyType::Ed25519).unwrap();
        let twin = reg
            .client()
            .create_account(&signer, domains, None)
            .await
            .unwrap();
        RawTwin {
            id: twin.twin_id,
            signer,
        }
    }

    /// A request signed by this twin to `to`'s default session (plain, 60 s, JSON
    /// schema as the SDK sends).
    pub fn request(&self, uid: &str, to: u32, command: &str, body: &[u8]) -> Envelope {
        let request = Message::Request(Request {
            command: command.into(),
        });
        let schema = Some("application/json".to_string());
        self.sealed(uid, Address::twin(to), request, body, schema, None)
    }

    /// This twin's signed reply to `request` (plain, 60 s, the request's schema).
    pub fn reply(&self, request: &Envelope, body: &[u8], tags: Option<&str>) -> Envelope {
        let to = request.source.clone().unwrap();
        let schema = request.schema.clone();
        self.sealed(
            &request.uid,
            to,
            Message::Response(Response {}),
            body,
            schema,
            tags,
        )
    }

    /// This twin's signed reply to request `uid` of `to` (plain, 60 s, no schema).
    pub fn response(&self, uid: &str, to: &Address, body: &[u8]) -> Envelope {
        self.sealed(
            uid,
            to.clone(),
            Message::Response(Response {}),
            body,
            None,
            None,
        )
    }

    fn sealed(
        &self,
        uid: &str,
        to: Address,
        message: Message,
        body: &[u8],
        schema: Option<String>,
        tags: Option<&str>,
    ) -> Envelope {
        let mut env = Envelope {
            uid: uid.into(),
            tags: tags.map(str::to_string),
            expiration: LIFETIME,
            source: Some(Address::twin(self.id)),
            destination: Some(to),
            message: Some(message),
            schema,
            payload: Some(Payload::Plain(body.to_vec())),
            ..Default::default()
        };
        envelope::stamp(&mut env, rmb_core::time::now());
        envelope::sign(&mut env, &self.signer);
        env
    }

    /// A session of this twin on `relay`.
    pub async fn connect(&self, relay: &TestRelay) -> RawConn {
        self.connect_to(relay.addr()).await
    }

    /// A session of this twin on the relay listening at `addr`.
    pub async fn connect_to(&self, addr: SocketAddr) -> RawConn {
        let token =
            rmb_core::jwt::create(&self.signer, self.id, None, rmb_core::time::now(), LIFETIME);
        RawConn::connect(addr, &token).await.unwrap()
    }
}

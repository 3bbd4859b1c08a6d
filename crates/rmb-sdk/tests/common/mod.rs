//! Shared setup for the SDK integration tests: a real registrar and relays from
//! rmb-testkit, clients with fresh random identities, and a raw WebSocket twin for
//! sending hand-made envelopes.

#![allow(dead_code)]

use std::time::Duration;

use rmb_core::{jwt, Address, Envelope, KeyType, Signer};
use rmb_sdk::outgoing::{seal, Outgoing};
use rmb_sdk::{Client, PoolConfig};
use rmb_testkit::{RawConn, TestRegistrar, TestRelay};

/// Longest a test waits for any one event.
pub const WAIT: Duration = Duration::from_secs(15);

pub fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("0x{hex}")
}

/// Fast reconnects and pings so fault tests finish quickly.
pub fn fast_pool() -> PoolConfig {
    PoolConfig {
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        ping_interval: Duration::from_millis(500),
        dead_after: Duration::from_secs(3),
        ..PoolConfig::default()
    }
}

pub async fn client_on(
    reg: &TestRegistrar,
    relays: &[&TestRelay],
    key_type: KeyType,
    e2e: bool,
) -> Client {
    let client = Client::builder(random_secret(), key_type)
        .registrar_client(rmb_testkit::fresh_client(&reg.url()).unwrap())
        .relays(relays.iter().map(|r| r.ws_url()))
        .e2e(e2e)
        .pool_config(fast_pool())
        .build()
        .await
        .unwrap();
    assert!(
        client.wait_connected(relays.len(), WAIT).await,
        "client did not connect to its relays"
    );
    client
}

/// The common setup: a registrar and one relay.
pub struct Net {
    pub reg: TestRegistrar,
    pub relay: TestRelay,
}

pub async fn net() -> Net {
    let reg = TestRegistrar::start().await.unwrap();
    let relay = TestRelay::start("127.0.0.1", &reg.url()).await.unwrap();
    Net { reg, relay }
}

/// A twin driven by hand over raw WebSockets.
pub struct RawTwin {
    pub id: u32,
    pub signer: Signer,
}

impl RawTwin {
    pub async fn register(reg: &TestRegistrar, relays: &[&TestRelay]) -> Self {
        let signer = Signer::from_seed(&rand::random(), KeyType::Ed25519).unwrap();
        let domains: Vec<String> = relays.iter().map(|r| r.domain()).collect();
        let twin = reg
            .client()
            .create_account(&signer, &domains, None)
            .await
            .unwrap();
        RawTwin {
            id: twin.twin_id,
            signer,
        }
    }

    /// A request signed by this twin to `to` (plain text, 60 s).
    pub fn request(&self, uid: &str, to: u32, command: &str, body: &[u8]) -> Envelope {
        let out = Outgoing::request(
            uid,
            Address::twin(self.id),
            Address::twin(to),
            command,
            body.to_vec(),
            60,
        );
        seal(out, &self.signer, None, rmb_core::time::now())
    }

    pub async fn connect(&self, relay: &TestRelay) -> RawConn {
        let token = jwt::create(&self.signer, self.id, None, rmb_core::time::now(), 60);
        RawConn::connect(relay.addr(), &token).await.unwrap()
    }
}

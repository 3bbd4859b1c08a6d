//! A twin driven by hand over a raw WebSocket: hand-made, signed envelopes, exactly as
//! given. It stands for a hostile twin, or for a receiver that, like the original
//! rmb-peer, the Go router and the TypeScript client, does not de-duplicate.

use rmb_core::prost::Message as _;
use rmb_core::proto::Message;
use rmb_core::{Address, Envelope, KeyType, Signer};
use rmb_sdk::outgoing::{seal, Outgoing};
use rmb_testkit::{RawConn, TestRegistrar};

use super::Relay;

pub struct RawTwin {
    pub id: u32,
    pub signer: Signer,
    pub conn: RawConn,
}

impl RawTwin {
    /// Registers an ed25519 twin without an e2e key (so what it receives is plain)
    /// on `relay`, and connects to it.
    pub async fn connect(reg: &TestRegistrar, relay: &Relay) -> RawTwin {
        let signer = Signer::from_seed(&rand::random(), KeyType::Ed25519).unwrap();
        let id = reg
            .client()
            .create_account(&signer, &[relay.domain()], None)
            .await
            .unwrap()
            .twin_id;
        let token = rmb_core::jwt::create(&signer, id, None, rmb_core::time::now(), 300);
        let conn = RawConn::connect(relay.domain().parse().unwrap(), &token)
            .await
            .unwrap();
        RawTwin { id, signer, conn }
    }

    fn seal(&self, out: Outgoing) -> Vec<u8> {
        seal(out, &self.signer, None, rmb_core::time::now()).encode_to_vec()
    }

    /// A signed request to `to`'s default session, living 60 s.
    pub fn request(&self, uid: &str, to: u32, command: &str, body: &[u8]) -> Vec<u8> {
        self.seal(Outgoing::request(
            uid,
            Address::twin(self.id),
            Address::twin(to),
            command,
            body.to_vec(),
            60,
        ))
    }

    /// A signed reply to request `uid` of `to`.
    pub fn response(&self, uid: &str, to: &Address, body: &[u8]) -> Vec<u8> {
        self.seal(Outgoing::response(
            uid,
            Address::twin(self.id),
            to.clone(),
            body.to_vec(),
            None,
            60,
        ))
    }

    pub async fn send(&mut self, frame: Vec<u8>) {
        self.conn.send_bytes(frame).await.unwrap();
    }

    /// The next envelope (not a pong) the relay delivers.
    pub async fn recv(&mut self) -> Envelope {
        self.conn.recv().await
    }

    /// The next error reply, with its code and message; fails on anything else.
    pub async fn recv_error(&mut self) -> (String, u32, String) {
        let env = self.recv().await;
        match env.message {
            Some(Message::Error(e)) => (env.uid, e.code, e.message),
            other => panic!("expected an error reply, got {other:?} for {}", env.uid),
        }
    }
}

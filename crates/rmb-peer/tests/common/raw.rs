//! A raw twin ([`rmb_testkit::RawTwin`]: hand-made, signed envelopes, exactly as given)
//! with its one session on a relay, sending and receiving frames.

use rmb_core::prost::Message as _;
use rmb_core::proto::Message;
use rmb_core::{Address, Envelope};
use rmb_testkit::{RawConn, TestRegistrar};

use super::Relay;

pub(crate) struct RawTwin {
    pub id: u32,
    pub twin: rmb_testkit::RawTwin,
    pub conn: RawConn,
}

impl RawTwin {
    /// Registers a twin on `relay` and connects to it.
    pub(crate) async fn connect(reg: &TestRegistrar, relay: &Relay) -> RawTwin {
        let twin = rmb_testkit::RawTwin::register_on(reg, &[relay.domain()]).await;
        let conn = twin.connect_to(relay.domain().parse().unwrap()).await;
        RawTwin {
            id: twin.id,
            twin,
            conn,
        }
    }

    /// A signed request to `to`'s default session, living 60 s.
    pub(crate) fn request(&self, uid: &str, to: u32, command: &str, body: &[u8]) -> Vec<u8> {
        self.twin.request(uid, to, command, body).encode_to_vec()
    }

    /// A signed reply to request `uid` of `to`.
    pub(crate) fn response(&self, uid: &str, to: &Address, body: &[u8]) -> Vec<u8> {
        self.twin.response(uid, to, body).encode_to_vec()
    }

    pub(crate) async fn send(&mut self, frame: Vec<u8>) {
        self.conn.send_bytes(frame).await.unwrap();
    }

    /// The next envelope (not a pong) the relay delivers.
    pub(crate) async fn recv(&mut self) -> Envelope {
        self.conn.recv().await
    }

    /// The next error reply, with its code and message; fails on anything else.
    pub(crate) async fn recv_error(&mut self) -> (String, u32, String) {
        let env = self.recv().await;
        match env.message {
            Some(Message::Error(e)) => (env.uid, e.code, e.message),
            other => panic!("expected an error reply, got {other:?} for {}", env.uid),
        }
    }

    /// Connects again to `relay` (after it restarted), as the same twin.
    pub(crate) async fn reconnect(&mut self, relay: &Relay) {
        self.conn = self.twin.connect_to(relay.domain().parse().unwrap()).await;
    }
}

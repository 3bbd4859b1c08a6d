//! A request replayed byte for byte within its lifetime reaches the local app once:
//! rmb-peer de-duplicates by uid through the SDK it is built on.

mod common;

use std::time::Duration;

use common::*;
use rmb_core::prost::Message as _;
use rmb_core::{Address, KeyType, Signer};
use rmb_sdk::outgoing::{seal, Outgoing};
use rmb_testkit::{RawConn, TestRegistrar};

#[tokio::test]
async fn a_replayed_request_is_pushed_to_the_app_once() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let reg = TestRegistrar::start().await.unwrap();
        let relay = Relay::start("127.0.0.1", &reg.url()).await;
        let (peer, redis) = peer(&reg, &[&relay], PeerOpts::default()).await;
        let signer = Signer::from_seed(&rand::random(), KeyType::Ed25519).unwrap();
        let raw = reg
            .client()
            .create_account(&signer, &[relay.domain()], None)
            .await
            .unwrap()
            .twin_id;
        let token = rmb_core::jwt::create(&signer, raw, None, rmb_core::time::now(), 60);
        let mut conn = RawConn::connect(relay.domain().parse().unwrap(), &token)
            .await
            .unwrap();
        let request = |uid: &str| {
            let out = Outgoing::request(
                uid,
                Address::twin(raw),
                Address::twin(peer.twin_id()),
                "count",
                uid.as_bytes().to_vec(),
                60,
            );
            seal(out, &signer, None, rmb_core::time::now()).encode_to_vec()
        };
        let captured = request("replayed");
        for _ in 0..3 {
            conn.send_bytes(captured.clone()).await.unwrap();
        }
        conn.send_bytes(request("marker")).await.unwrap();
        // Pushed in arrival order: the copies would sit between the two.
        let first = brpop(&redis.url(), "msgbus.count").await;
        assert_eq!(first["ref"], "replayed");
        let second = brpop(&redis.url(), "msgbus.count").await;
        assert_eq!(second["ref"], "marker", "a copy reached the app");
        assert!(list(&redis.url(), "msgbus.count").await.is_empty());
        assert_eq!(rmb_peer::Stats::get(&peer.stats().incoming_requests), 2);
    })
    .await
    .expect("the scenario took too long");
}

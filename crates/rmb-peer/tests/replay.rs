//! A request replayed byte for byte within its lifetime reaches the local app once:
//! rmb-peer de-duplicates by uid through the SDK it is built on.

mod common;

use std::time::Duration;

use common::*;
use rmb_testkit::TestRegistrar;

#[tokio::test]
async fn a_replayed_request_is_pushed_to_the_app_once() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let reg = TestRegistrar::start().await.unwrap();
        let relay = Relay::start("127.0.0.1", &reg.url()).await;
        let (peer, redis) = peer(&reg, &[&relay], PeerOpts::default()).await;
        let mut raw = RawTwin::connect(&reg, &relay).await;
        let captured = raw.request("replayed", peer.twin_id(), "count", b"replayed");
        for _ in 0..3 {
            raw.send(captured.clone()).await;
        }
        let marker = raw.request("marker", peer.twin_id(), "count", b"marker");
        raw.send(marker).await;
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

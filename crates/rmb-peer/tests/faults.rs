//! rmb-peer under faults: Redis killed and restarted, relays killed and restarted.
//! Every request the app managed to hand over gets its reply.

mod common;

use std::collections::BTreeSet;

use common::*;
use rmb_peer::{Peer, Stats};
use rmb_testkit::{RedisServer, TestRegistrar};

/// Pushes `n` echo requests named `<prefix>-<i>` from `app_redis` to `to`.
async fn send_batch(app_redis: &str, prefix: &str, n: usize, to: u32) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    for i in 0..n {
        let reference = format!("{prefix}-{i}");
        let dat = b64(reference.as_bytes());
        lpush(
            app_redis,
            "msgbus.system.local",
            &request(&reference, "echo", &dat, &[to], "app.ret"),
        )
        .await;
        refs.insert(reference);
    }
    refs
}

/// Collects `refs.len()` replies from the app's `ret` list and checks them all.
async fn collect(app_redis: &str, refs: &BTreeSet<String>) {
    let mut got = BTreeSet::new();
    for _ in 0..refs.len() {
        let reply = brpop(app_redis, "app.ret").await;
        assert_eq!(reply["err"], serde_json::Value::Null, "{reply}");
        let reference = reply["ref"].as_str().unwrap().to_string();
        assert_eq!(unb64(&reply["dat"]), reference.as_bytes());
        got.insert(reference);
    }
    assert_eq!(&got, refs);
}

fn kill(redis: &mut RedisServer) {
    tokio::task::block_in_place(|| redis.kill());
}

fn restart(redis: &mut RedisServer) {
    tokio::task::block_in_place(|| redis.restart().unwrap());
}

fn errors(peer: &Peer) -> u64 {
    Stats::get(&peer.stats().redis_errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_loses_no_request() {
    let reg = TestRegistrar::start().await.unwrap();
    let relay = Relay::start("127.0.0.1", &reg.url()).await;
    let (a, mut redis_a) = peer(&reg, &[&relay], PeerOpts::default()).await;
    let (b, mut redis_b) = peer(&reg, &[&relay], PeerOpts::default()).await;
    let (url_a, url_b) = (redis_a.url(), redis_b.url());
    let svc = service(&url_b, "echo", echo);
    let refs = send_batch(&url_a, "warmup", 3, b.twin_id()).await;
    collect(&url_a, &refs).await;

    // The service side's Redis dies: requests arriving meanwhile are held by peer B.
    kill(&mut redis_b);
    let refs = send_batch(&url_a, "b-down", 5, b.twin_id()).await;
    eventually("B received the requests while its Redis is down", || {
        Stats::get(&b.stats().incoming_requests) >= 8 && errors(&b) > 0
    })
    .await;
    restart(&mut redis_b);
    collect(&url_a, &refs).await;

    // The app side's Redis dies after A took the requests: the replies are held.
    svc.abort();
    let refs = send_batch(&url_a, "a-down", 5, b.twin_id()).await;
    eventually(
        "A sent the requests and B queued them for its service",
        || Stats::get(&a.stats().envelopes_sent) >= 13 && Stats::get(&b.stats().pushed) >= 13,
    )
    .await;
    let errors_before = errors(&a);
    kill(&mut redis_a);
    let _svc = service(&url_b, "echo", echo);
    eventually("A received the replies while its Redis is down", || {
        Stats::get(&a.stats().incoming_replies) >= 13 && errors(&a) > errors_before
    })
    .await;
    restart(&mut redis_a);
    collect(&url_a, &refs).await;
}

#[tokio::test]
async fn relay_killed_and_restarted_every_request_answered() {
    let reg = TestRegistrar::start().await.unwrap();
    let mut relay = Relay::start("127.0.0.1", &reg.url()).await;
    let (a, redis_a) = peer(&reg, &[&relay], PeerOpts::default()).await;
    let (b, redis_b) = peer(&reg, &[&relay], PeerOpts::default()).await;
    let url_a = redis_a.url();
    let _svc = service(&redis_b.url(), "echo", echo);
    let refs = send_batch(&url_a, "before", 3, b.twin_id()).await;
    collect(&url_a, &refs).await;

    relay.stop().await;
    eventually("both peers noticed the relay is gone", || {
        a.client().connected_relays() == 0 && b.client().connected_relays() == 0
    })
    .await;
    // Requests taken while no relay is up wait in the peer until one is.
    let refs = send_batch(&url_a, "during", 5, b.twin_id()).await;
    eventually("A took the requests", || {
        Stats::get(&a.stats().envelopes_sent) >= 8
    })
    .await;
    relay.restart().await;
    assert!(a.client().wait_connected(1, WAIT).await);
    assert!(b.client().wait_connected(1, WAIT).await);
    collect(&url_a, &refs).await;
    let refs = send_batch(&url_a, "after", 3, b.twin_id()).await;
    collect(&url_a, &refs).await;
}

#[tokio::test]
async fn two_relays_where_one_dies() {
    let reg = TestRegistrar::start().await.unwrap();
    let mut r1 = Relay::start("127.0.0.1", &reg.url()).await;
    let r2 = Relay::start("127.0.0.5", &reg.url()).await;
    let (a, redis_a) = peer(&reg, &[&r1, &r2], PeerOpts::default()).await;
    let (b, redis_b) = peer(&reg, &[&r1, &r2], PeerOpts::default()).await;
    let url_a = redis_a.url();
    let _svc = service(&redis_b.url(), "echo", echo);
    let refs = send_batch(&url_a, "both", 5, b.twin_id()).await;
    collect(&url_a, &refs).await;
    r1.stop().await;
    let refs = send_batch(&url_a, "one", 10, b.twin_id()).await;
    collect(&url_a, &refs).await;
    assert_eq!(a.client().connected_relays(), 1);
}

#[tokio::test]
async fn a_request_lost_with_a_crashed_relay_is_sent_again_and_answered() {
    let reg = TestRegistrar::start().await.unwrap();
    let mut relay = Relay::start("127.0.0.1", &reg.url()).await;
    let resend = PeerOpts {
        resend_interval: std::time::Duration::from_millis(300),
        ..Default::default()
    };
    let (a, redis_a) = peer(&reg, &[&relay], resend).await;
    let b_secret = random_secret();
    let b_opts = || PeerOpts {
        secret: Some(b_secret.clone()),
        ..Default::default()
    };
    let (b, redis_b) = peer(&reg, &[&relay], b_opts()).await;
    let b_twin = b.twin_id();
    let url_a = redis_a.url();
    // A learns from B's reply that B drops copies: only such receivers get copies.
    let svc = service(&redis_b.url(), "echo", echo);
    let refs = send_batch(&url_a, "warm-up", 1, b_twin).await;
    collect(&url_a, &refs).await;
    svc.abort();
    // B goes offline: the relay accepts A's requests and keeps them for B, in memory.
    b.shutdown().await;
    eventually("the relay saw B go", || relay.open_connections() == 1).await;
    let refs = send_batch(&url_a, "lost", 3, b_twin).await;
    eventually("the relay holds the requests for B", || {
        relay.queued_frames() == 3
    })
    .await;
    // The relay crashes with them: only A still has them, and sends them again.
    relay.restart().await;
    assert_eq!(relay.queued_frames(), 0);
    drop(redis_b);
    let (b, redis_b) = peer(&reg, &[&relay], b_opts()).await;
    assert_eq!(b.twin_id(), b_twin);
    let _svc = service(&redis_b.url(), "echo", echo);
    collect(&url_a, &refs).await;
    assert!(
        Stats::get(&a.stats().envelopes_sent) == 4,
        "the copies are the SDK's, not new requests"
    );
}

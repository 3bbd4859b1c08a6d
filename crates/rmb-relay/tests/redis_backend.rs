//! Several relay processes sharing sessions and queues through a real redis-server.

mod common;

use std::time::Duration;

use common::*;
use rmb_core::{Address, KeyType};
use rmb_testkit::RedisServer;

const DOMAIN: &str = "cluster.rmb.test";

async fn instance(registrar: &str, redis: &str) -> rmb_testkit::TestRelay {
    let redis = redis.to_string();
    start_relay_for(vec![DOMAIN.into()], registrar, move |c| {
        c.redis_url = Some(redis);
        c.redis_heartbeat = Duration::from_millis(300);
    })
    .await
}

#[tokio::test]
async fn twins_on_different_instances_reach_each_other() {
    let redis = RedisServer::start().unwrap();
    let reg = registrar().await;
    let one = instance(&reg.url(), &redis.url()).await;
    let two = instance(&reg.url(), &redis.url()).await;
    let a = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let b = twin(&reg.url(), KeyType::Sr25519, &[DOMAIN.into()]).await;
    let mut ca = connect(one.addr(), &a, None).await;
    let mut cb = connect(two.addr(), &b, None).await;

    let req = request(&a, Address::twin(b.id), "x", b"across");
    ca.send(&req).await;
    let got = cb.recv().await;
    assert_eq!(got, req);
    cb.send(&response(&b, &got, b"back")).await;
    assert_eq!(plain(&ca.recv().await), b"back");

    // A second connection of B on instance one replaces the one on instance two.
    let mut cb_again = connect(one.addr(), &b, None).await;
    let close = cb.recv_close().await.expect("close frame");
    assert!(close.reason.contains("replaced"), "{close:?}");
    ca.send(&request(&a, Address::twin(b.id), "x", b"to the new one"))
        .await;
    assert_eq!(plain(&cb_again.recv().await), b"to the new one");
}

#[tokio::test]
async fn queued_envelopes_survive_a_relay_restart() {
    let redis = RedisServer::start().unwrap();
    let reg = registrar().await;
    let one = instance(&reg.url(), &redis.url()).await;
    let a = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let b = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let mut ca = connect(one.addr(), &a, None).await;
    for i in 0..3u8 {
        ca.send(&request(&a, Address::twin(b.id), "x", &[i])).await;
    }
    // Pong after the three: the relay has routed (queued) them.
    barrier(&mut ca, &a).await;
    drop(ca);
    let mut one = one;
    one.shutdown().await;

    let restarted = instance(&reg.url(), &redis.url()).await;
    let mut cb = connect(restarted.addr(), &b, None).await;
    for i in 0..3u8 {
        assert_eq!(plain(&cb.recv().await), &[i]);
    }
}

#[tokio::test]
async fn delivery_resumes_after_redis_restarts() {
    let mut redis = RedisServer::start().unwrap();
    let reg = registrar().await;
    let one = instance(&reg.url(), &redis.url()).await;
    let two = instance(&reg.url(), &redis.url()).await;
    let a = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let b = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let mut ca = connect(one.addr(), &a, None).await;
    let mut cb = connect(two.addr(), &b, None).await;
    ca.send(&request(&a, Address::twin(b.id), "x", b"before"))
        .await;
    assert_eq!(plain(&cb.recv().await), b"before");

    redis.kill();
    redis.restart().unwrap();

    // Redis lost everything (no persistence); the heartbeat re-announces B. Until the
    // backend has reconnected, A may get relay errors: retry until B gets one.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut attempt = 0u8;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivery did not resume"
        );
        attempt += 1;
        ca.send(&request(&a, Address::twin(b.id), "x", &[attempt]))
            .await;
        tokio::select! {
            got = cb.recv() => { assert_eq!(plain(&got)[0], attempt.min(plain(&got)[0])); break; }
            err = ca.recv() => { relay_error(&err); }
        }
    }
}

#[tokio::test]
async fn a_sender_with_an_outdated_owner_still_reaches_a_session_that_moved() {
    let redis = RedisServer::start().unwrap();
    let reg = registrar().await;
    let one = instance(&reg.url(), &redis.url()).await;
    let two = instance(&reg.url(), &redis.url()).await;
    let three = instance(&reg.url(), &redis.url()).await;
    let a = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let b = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let mut ca = connect(one.addr(), &a, None).await;
    let mut cb = connect(two.addr(), &b, None).await;
    // Instance one learns (and remembers for a moment) that B is on instance two.
    ca.send(&request(&a, Address::twin(b.id), "x", b"to two"))
        .await;
    assert_eq!(plain(&cb.recv().await), b"to two");

    // B moves to instance three; one's memory of the owner is now wrong.
    let mut cb_three = connect(three.addr(), &b, None).await;
    assert!(cb.recv_close().await.is_some(), "the old session is closed");
    ca.send(&request(&a, Address::twin(b.id), "x", b"to three"))
        .await;
    assert_eq!(plain(&cb_three.recv().await), b"to three");

    // B goes offline: what one still hands to instance two is queued, not lost.
    drop(cb_three);
    eventually("B's session on three is gone", || {
        three.open_connections() == 0
    })
    .await;
    ca.send(&request(&a, Address::twin(b.id), "x", b"while away"))
        .await;
    barrier(&mut ca, &a).await;
    let mut cb_back = connect(one.addr(), &b, None).await;
    assert_eq!(plain(&cb_back.recv().await), b"while away");
}

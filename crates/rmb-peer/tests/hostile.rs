//! A hostile remote twin against a real rmb-peer and its real redis-server: the twin
//! chooses the command (so the Redis key the peer writes), the sizes, and when to
//! send; none of it may wedge the peer, fill its Redis or memory, or reach an app.

mod common;

use common::*;
use redis::AsyncCommands as _;
use rmb_core::peer_api::ErrorCode;
use rmb_peer::{Limits, Stats};
use rmb_testkit::TestRegistrar;

/// A request of B's app to `to`, and the uid it travels with (as `to` receives it).
async fn request_from_app(redis_url: &str, raw: &mut RawTwin, reference: &str) -> String {
    lpush(
        redis_url,
        "msgbus.system.local",
        &request(reference, "probe", "", &[raw.id], "b.ret"),
    )
    .await;
    raw.recv().await.uid
}

#[tokio::test]
async fn commands_naming_the_peers_own_keys_are_refused_and_the_peer_keeps_serving() {
    let reg = TestRegistrar::start().await.unwrap();
    let relay = Relay::start("127.0.0.1", &reg.url()).await;
    let (b, redis_b) = peer(&reg, &[&relay], PeerOpts::default()).await;
    let url = redis_b.url();
    let mut raw = RawTwin::connect(&reg, &relay).await;
    // B calls the attacker, who so learns the uid of a backlog key on B's Redis.
    let uid = request_from_app(&url, &mut raw, "probe-1").await;
    let hostile = [
        "system.local".to_string(),
        "system.reply".to_string(),
        format!("backlog.{uid}"),
        "system.outbox".to_string(),
    ];
    // Commands no list name can be: our relay refuses them already (rmb_core::rules); a
    // stranger's relay would pass them on, and the peer applies the same rules.
    let unlisted = ["two words", "new\nline", "glob*"];
    for (i, command) in unlisted.iter().enumerate() {
        let frame = raw.request(&format!("u-{i}"), b.twin_id(), command, b"x");
        raw.send(frame).await;
        let (got, _, message) = raw.recv_error().await;
        assert_eq!(got, format!("u-{i}"));
        assert!(
            message.contains("allowed characters"),
            "{command:?}: {message}"
        );
    }
    for (i, command) in hostile.iter().enumerate() {
        let frame = raw.request(&format!("h-{i}"), b.twin_id(), command, b"x");
        raw.send(frame).await;
        let (got, code, message) = raw.recv_error().await;
        assert_eq!(got, format!("h-{i}"));
        assert_eq!(
            code,
            ErrorCode::InvalidMessage.code(),
            "{command:?}: {message}"
        );
        assert!(message.contains("refuses"), "{command:?}: {message}");
    }
    // Nothing was written where the peer keeps its own state, and the peer never
    // read its own pushes back as an app's messages.
    let mut c = conn(&url).await.unwrap();
    let kind: String = redis::cmd("TYPE")
        .arg(format!("msgbus.backlog.{uid}"))
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(kind, "hash", "the backlog is intact");
    // The peer still serves: a request for a real command reaches its service, and the
    // reply to B's own request reaches B's app.
    let frame = raw.request("fine", b.twin_id(), "ok.cmd", b"hi");
    raw.send(frame).await;
    assert_eq!(brpop(&url, "msgbus.ok.cmd").await["ref"], "fine");
    let frame = raw.response(&uid, b.client().address(), b"answer");
    raw.send(frame).await;
    let reply = brpop(&url, "b.ret").await;
    assert_eq!(
        (reply["ref"].as_str(), reply["err"].is_null()),
        (Some("probe-1"), true)
    );
    assert_eq!(Stats::get(&b.stats().refused), hostile.len() as u64);
    assert_eq!(Stats::get(&b.stats().malformed), 0);
}

#[tokio::test]
async fn a_key_of_the_wrong_type_fails_its_request_alone_and_nothing_is_pushed_twice() {
    let reg = TestRegistrar::start().await.unwrap();
    let relay = Relay::start("127.0.0.1", &reg.url()).await;
    let (b, redis, proxy) = peer_behind_proxy(&reg, &[&relay], PeerOpts::default()).await;
    let mut raw = RawTwin::connect(&reg, &relay).await;
    // An app's key that is not a list where a service list would be.
    let mut c = conn(&redis.url()).await.unwrap();
    let _: () = c.set("msgbus.broken", "not a list").await.unwrap();
    // B's Redis stops answering, so the three requests are retried together.
    proxy.partition();
    for (uid, command) in [("g1", "good"), ("b1", "broken"), ("g2", "good")] {
        let frame = raw.request(uid, b.twin_id(), command, b"x");
        raw.send(frame).await;
    }
    eventually("B holds the three requests", || {
        Stats::get(&b.stats().incoming_requests) == 3
    })
    .await;
    proxy.heal();
    let (uid, code, message) = raw.recv_error().await;
    assert_eq!(uid, "b1");
    assert_eq!(code, ErrorCode::Other.code());
    assert!(message.contains("msgbus.broken is not a list"), "{message}");
    // The error is sent once the batch was written: both good requests are there, once.
    let good: Vec<String> = c.lrange("msgbus.good", 0, -1).await.unwrap();
    assert_eq!(good.len(), 2, "{good:?}");
    let value: String = c.get("msgbus.broken").await.unwrap();
    assert_eq!(value, "not a list");
}

#[tokio::test]
async fn a_service_list_is_capped_by_entries_and_bytes_and_expires_with_its_requests() {
    let reg = TestRegistrar::start().await.unwrap();
    let relay = Relay::start("127.0.0.1", &reg.url()).await;
    let opts = PeerOpts {
        limits: Limits {
            command_list_entries: 3,
            command_list_bytes: 6_000,
            ..Limits::default()
        },
        ..Default::default()
    };
    let (b, redis_b) = peer(&reg, &[&relay], opts).await;
    let url = redis_b.url();
    let mut raw = RawTwin::connect(&reg, &relay).await;
    // Small requests: whichever comes fourth finds the list full.
    for i in 0..4 {
        let frame = raw.request(&format!("s{i}"), b.twin_id(), "nobody.home", b"x");
        raw.send(frame).await;
    }
    let (_, _, message) = raw.recv_error().await;
    assert!(message.contains("is full"), "{message}");
    let mut c = conn(&url).await.unwrap();
    let len: usize = c.llen("msgbus.nobody.home").await.unwrap();
    assert_eq!(len, 3);
    // Nobody serves the list: it goes when its newest request expires (60 s here).
    let ttl: i64 = c.ttl("msgbus.nobody.home").await.unwrap();
    assert!((1..=60).contains(&ttl), "ttl {ttl}");
    // Big requests: the second would take the list over its bytes.
    for i in 0..2 {
        let frame = raw.request(&format!("big{i}"), b.twin_id(), "big", &[b'x'; 3_000]);
        raw.send(frame).await;
    }
    let (uid, _, message) = raw.recv_error().await;
    assert!(uid.starts_with("big"), "{uid}");
    assert!(message.contains("6000 bytes"), "{message}");
    let len: usize = c.llen("msgbus.big").await.unwrap();
    assert_eq!(len, 1);
    assert_eq!(Stats::get(&b.stats().refused), 2);
}

#[tokio::test]
async fn while_redis_is_away_what_waits_in_memory_is_capped_in_bytes() {
    let reg = TestRegistrar::start().await.unwrap();
    let relay = Relay::start("127.0.0.1", &reg.url()).await;
    let opts = PeerOpts {
        limits: Limits {
            pending_bytes: 12_000,
            ..Limits::default()
        },
        ..Default::default()
    };
    let (b, redis, proxy) = peer_behind_proxy(&reg, &[&relay], opts).await;
    let mut raw = RawTwin::connect(&reg, &relay).await;
    proxy.partition();
    // Each request takes about 3 KB as JSON: at most four fit in 12 KB.
    for i in 0..10 {
        let frame = raw.request(&format!("f{i}"), b.twin_id(), "flood", &[b'x'; 2_000]);
        raw.send(frame).await;
    }
    eventually("B took all ten", || {
        Stats::get(&b.stats().incoming_requests) == 10
    })
    .await;
    let refused = Stats::get(&b.stats().refused);
    assert!((6..10).contains(&refused), "{refused} refused");
    for _ in 0..refused {
        let (_, code, message) = raw.recv_error().await;
        assert_eq!(code, ErrorCode::Other.code());
        assert!(message.starts_with("busy"), "{message}");
    }
    proxy.heal();
    let held = 10 - refused;
    eventually("the held requests reach Redis", || {
        Stats::get(&b.stats().pushed) == held
    })
    .await;
    let mut c = conn(&redis.url()).await.unwrap();
    let len: u64 = c.llen("msgbus.flood").await.unwrap();
    assert_eq!(len, held);
}

#[tokio::test]
async fn a_reply_from_a_twin_the_request_did_not_go_to_never_reaches_the_app() {
    let reg = TestRegistrar::start().await.unwrap();
    let relay = Relay::start("127.0.0.1", &reg.url()).await;
    let (b, redis_b) = peer(&reg, &[&relay], PeerOpts::default()).await;
    let url = redis_b.url();
    let mut callee = RawTwin::connect(&reg, &relay).await;
    let mut forger = RawTwin::connect(&reg, &relay).await;
    let uid = request_from_app(&url, &mut callee, "mine").await;
    // Another twin learns the uid (say, from a log) and answers first.
    let forged = forger.response(&uid, b.client().address(), b"forged");
    forger.send(forged).await;
    eventually("B received the forged reply", || {
        Stats::get(&b.stats().incoming_replies) == 1
    })
    .await;
    let real = callee.response(&uid, b.client().address(), b"real");
    callee.send(real).await;
    let reply = brpop(&url, "b.ret").await;
    assert_eq!(reply["src"], callee.id.to_string());
    assert_eq!(unb64(&reply["dat"]), b"real");
    assert!(list(&url, "b.ret").await.is_empty());
}

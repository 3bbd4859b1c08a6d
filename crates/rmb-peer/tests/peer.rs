//! Two or more rmb-peers, each with its own redis-server, driven only through Redis
//! lists with the JSON of PROTOCOL.md §4, over real relays and a real registrar.

mod common;

use std::collections::BTreeSet;

use common::*;
use rmb_core::KeyType;
use rmb_peer::Stats;
use rmb_testkit::TestRegistrar;
use serde_json::Value;

#[tokio::test]
async fn round_trip_between_sr25519_and_ed25519_peers() {
    let reg = TestRegistrar::start().await.unwrap();
    let relay = Relay::start("127.0.0.1", &reg.url()).await;
    let (a, redis_a) = peer(&reg, &[&relay], PeerOpts::default()).await;
    let opts = PeerOpts {
        key_type: KeyType::Ed25519,
        ..Default::default()
    };
    let (b, redis_b) = peer(&reg, &[&relay], opts).await;
    let _svc = service(&redis_b.url(), "calc.echo", echo);
    let req = format!(
        r#"{{"ver":1,"ref":"my-ref-1","cmd":"calc.echo","exp":0,"dat":"aGVsbG8=","tag":"t1","dst":[{}],"ret":"app.replies","shm":"application/json","now":{}}}"#,
        b.twin_id(),
        rmb_core::time::now()
    );
    lpush(&redis_a.url(), "msgbus.system.local", &req).await;
    let reply = brpop(&redis_a.url(), "app.replies").await;
    assert_eq!(reply["ver"], 1);
    assert_eq!(reply["ref"], "my-ref-1");
    assert_eq!(reply["src"], b.twin_id().to_string());
    assert_eq!(reply["dat"], "aGVsbG8=");
    assert_eq!(reply["err"], Value::Null);
    assert_eq!(reply["shm"], "application/json");
    // The built-in version command is answered by the peer itself.
    let req = format!(
        r#"{{"ver":1,"ref":"v","cmd":"rmb.version","exp":30,"dat":"","tag":null,"dst":[{}],"ret":"app.version","shm":null,"now":0}}"#,
        b.twin_id()
    );
    lpush(&redis_a.url(), "msgbus.system.local", &req).await;
    let reply = brpop(&redis_a.url(), "app.version").await;
    assert_eq!(reply["err"], Value::Null);
    // As the original answers it: a JSON string "v<version>", schema application/json,
    // even when the request named no schema.
    assert_eq!(
        unb64(&reply["dat"]),
        format!("\"v{}\"", env!("CARGO_PKG_VERSION")).into_bytes()
    );
    assert_eq!(reply["shm"], "application/json");
    // And the other way round, checking what the service sees.
    lpush(
        &redis_b.url(),
        "msgbus.system.local",
        &request("back", "app.ping", "cGluZw==", &[a.twin_id()], "b.ret"),
    )
    .await;
    let incoming = brpop(&redis_a.url(), "msgbus.app.ping").await;
    assert_eq!(incoming["src"], b.twin_id().to_string());
    assert_eq!(incoming["cmd"], "app.ping");
    assert_eq!(incoming["ret"], "msgbus.system.reply");
    assert_eq!(incoming["dat"], "cGluZw==");
    assert_eq!(incoming["shm"], "application/json");
    lpush(&redis_a.url(), "msgbus.system.reply", &echo(&incoming)).await;
    let reply = brpop(&redis_b.url(), "b.ret").await;
    assert_eq!(
        (reply["ref"].as_str(), reply["dat"].as_str()),
        (Some("back"), Some("cGluZw=="))
    );
}

#[tokio::test]
async fn multi_destination_request_with_and_without_e2e() {
    let reg = TestRegistrar::start().await.unwrap();
    let relay = Relay::start("127.0.0.1", &reg.url()).await;
    let (a, redis_a) = peer(&reg, &[&relay], PeerOpts::default()).await;
    let (b, redis_b) = peer(&reg, &[&relay], PeerOpts::default()).await;
    let plain = PeerOpts {
        key_type: KeyType::Ed25519,
        e2e: false,
        ..Default::default()
    };
    let (c, redis_c) = peer(&reg, &[&relay], plain).await;
    let c_twin = reg.client().get_twin(c.twin_id()).await.unwrap().unwrap();
    assert_eq!(c_twin.rmb_enc_key, None, "twin C has no e2e key");
    let b_twin = reg.client().get_twin(b.twin_id()).await.unwrap().unwrap();
    assert!(b_twin.rmb_enc_key.is_some(), "twin B has an e2e key");
    for (redis, name) in [(&redis_b, "b"), (&redis_c, "c")] {
        let name = name.to_string();
        service(&redis.url(), "who", move |req| {
            format!(
                r#"{{"ver":1,"ref":"{}","dat":"{}","dst":"{}","shm":null,"now":0,"err":null}}"#,
                req["ref"].as_str().unwrap(),
                b64(
                    format!("{name}:{}", String::from_utf8(unb64(&req["dat"])).unwrap()).as_bytes()
                ),
                req["src"].as_str().unwrap(),
            )
        });
    }
    lpush(
        &redis_a.url(),
        "msgbus.system.local",
        &request(
            "multi",
            "who",
            &b64(b"q"),
            &[b.twin_id(), c.twin_id()],
            "a.ret",
        ),
    )
    .await;
    let mut replies = BTreeSet::new();
    for _ in 0..2 {
        let reply = brpop(&redis_a.url(), "a.ret").await;
        assert_eq!(reply["ref"], "multi");
        assert_eq!(reply["err"], Value::Null);
        replies.insert((
            reply["src"].as_str().unwrap().to_string(),
            String::from_utf8(unb64(&reply["dat"])).unwrap(),
        ));
    }
    let expected = BTreeSet::from([
        (b.twin_id().to_string(), "b:q".to_string()),
        (c.twin_id().to_string(), "c:q".to_string()),
    ]);
    assert_eq!(replies, expected);
    assert_eq!(Stats::get(&a.stats().envelopes_sent), 2);
}

#[tokio::test]
async fn unknown_twins_and_remote_errors_reach_ret() {
    let reg = TestRegistrar::start().await.unwrap();
    let relay = Relay::start("127.0.0.1", &reg.url()).await;
    let (_a, redis_a) = peer(&reg, &[&relay], PeerOpts::default()).await;
    let (b, redis_b) = peer(&reg, &[&relay], PeerOpts::default()).await;
    lpush(
        &redis_a.url(),
        "msgbus.system.local",
        &request("to-nobody", "x", "", &[999_999], "a.ret"),
    )
    .await;
    let reply = brpop(&redis_a.url(), "a.ret").await;
    assert_eq!(reply["ref"], "to-nobody");
    assert_eq!(reply["src"], "999999");
    assert_eq!(reply["err"]["code"], 103);
    service(&redis_b.url(), "fails", |req| {
        format!(
            r#"{{"ver":1,"ref":"{}","dat":"","dst":"{}","shm":null,"now":0,"err":{{"code":42,"message":"not today"}}}}"#,
            req["ref"].as_str().unwrap(),
            req["src"].as_str().unwrap(),
        )
    });
    lpush(
        &redis_a.url(),
        "msgbus.system.local",
        &request("err", "fails", "", &[b.twin_id()], "a.ret"),
    )
    .await;
    let reply = brpop(&redis_a.url(), "a.ret").await;
    assert_eq!(reply["ref"], "err");
    assert_eq!(reply["src"], b.twin_id().to_string());
    assert_eq!(reply["err"]["code"], 42);
    assert_eq!(reply["err"]["message"], "not today");
}

#[tokio::test]
async fn expired_and_malformed_messages_are_dropped_and_the_peer_keeps_going() {
    let reg = TestRegistrar::start().await.unwrap();
    let relay = Relay::start("127.0.0.1", &reg.url()).await;
    let (a, redis_a) = peer(&reg, &[&relay], PeerOpts::default()).await;
    let (b, redis_b) = peer(&reg, &[&relay], PeerOpts::default()).await;
    let local = "msgbus.system.local";
    lpush(&redis_a.url(), local, "{this is not json").await;
    let bad_dat = format!(
        r#"{{"ver":1,"ref":"bad-dat","cmd":"x","exp":60,"dat":"%%%","tag":null,"dst":[{}],"ret":"a.errors","shm":null,"now":0}}"#,
        b.twin_id()
    );
    lpush(&redis_a.url(), local, &bad_dat).await;
    let bad_dst = r#"{"ver":1,"ref":"bad-dst","cmd":"x","exp":60,"dat":"","dst":"everyone","ret":"a.errors"}"#;
    lpush(&redis_a.url(), local, bad_dst).await;
    let expired = format!(
        r#"{{"ver":1,"ref":"too-old","cmd":"work","exp":60,"dat":"b2xk","tag":null,"dst":[{}],"ret":"a.ret","shm":null,"now":1000000}}"#,
        b.twin_id()
    );
    lpush(&redis_a.url(), local, &expired).await;
    lpush(
        &redis_a.url(),
        local,
        &request("fresh", "work", "bmV3", &[b.twin_id()], "a.ret"),
    )
    .await;
    let e1 = brpop(&redis_a.url(), "a.errors").await;
    let e2 = brpop(&redis_a.url(), "a.errors").await;
    assert_eq!(
        (&e1["ref"], &e1["err"]["code"]),
        (&Value::from("bad-dat"), &Value::from(101))
    );
    assert_eq!(
        (&e2["ref"], &e2["err"]["code"]),
        (&Value::from("bad-dst"), &Value::from(100))
    );
    // Only the fresh request reached the service; the expired one never left.
    let incoming = brpop(&redis_b.url(), "msgbus.work").await;
    assert_eq!(incoming["dat"], "bmV3");
    assert!(list(&redis_b.url(), "msgbus.work").await.is_empty());
    assert_eq!(Stats::get(&a.stats().expired_dropped), 1);
    assert_eq!(Stats::get(&a.stats().malformed), 3);
    // Malformed replies on B's reply list: logged; a readable one gets an error back.
    lpush(&redis_b.url(), "msgbus.system.reply", "[1,2").await;
    let bad_reply = format!(
        r#"{{"ver":1,"ref":"{}","dat":"***","dst":"{}","shm":null,"now":0,"err":null}}"#,
        incoming["ref"].as_str().unwrap(),
        incoming["src"].as_str().unwrap()
    );
    lpush(&redis_b.url(), "msgbus.system.reply", &bad_reply).await;
    let reply = brpop(&redis_a.url(), "a.ret").await;
    assert_eq!(reply["ref"], "fresh");
    assert_eq!(reply["err"]["code"], 101);
    // B still serves (a new request: a second reply to the first one would be a
    // duplicate of its uid from the same twin, and dropped).
    lpush(
        &redis_a.url(),
        local,
        &request("again", "work", "bW9yZQ==", &[b.twin_id()], "a.ret"),
    )
    .await;
    let incoming = brpop(&redis_b.url(), "msgbus.work").await;
    lpush(&redis_b.url(), "msgbus.system.reply", &echo(&incoming)).await;
    let reply = brpop(&redis_a.url(), "a.ret").await;
    assert_eq!(
        (reply["ref"].as_str(), reply["dat"].as_str()),
        (Some("again"), Some("bW9yZQ=="))
    );
    assert_eq!(Stats::get(&b.stats().malformed), 2);
}

#[tokio::test]
async fn a_one_mib_payload_goes_both_ways() {
    let reg = TestRegistrar::start().await.unwrap();
    let relay = Relay::start("127.0.0.1", &reg.url()).await;
    let (_a, redis_a) = peer(&reg, &[&relay], PeerOpts::default()).await;
    let (b, redis_b) = peer(&reg, &[&relay], PeerOpts::default()).await;
    service(&redis_b.url(), "big", echo);
    let body: Vec<u8> = (0..(1 << 20)).map(|_| rand::random::<u8>()).collect();
    lpush(
        &redis_a.url(),
        "msgbus.system.local",
        &request("big", "big", &b64(&body), &[b.twin_id()], "a.ret"),
    )
    .await;
    let reply = brpop(&redis_a.url(), "a.ret").await;
    assert_eq!(reply["err"], Value::Null);
    assert!(
        unb64(&reply["dat"]) == body,
        "the 1 MiB body came back intact"
    );
}

/// Requests and replies waiting together are taken in batches (one blocking move, then
/// the rest with the accept): every one is sent and answered exactly once, a malformed
/// one in the middle of a batch is answered with its error, and nothing is left on the
/// processing lists.
#[tokio::test]
async fn a_burst_taken_in_batches_is_answered_once_per_request() {
    use redis::AsyncCommands as _;
    const N: usize = 150;
    let reg = TestRegistrar::start().await.unwrap();
    let relay = Relay::start("127.0.0.1", &reg.url()).await;
    let (a, redis_a) = peer(&reg, &[&relay], PeerOpts::default()).await;
    let (b, redis_b) = peer(&reg, &[&relay], PeerOpts::default()).await;
    let mut entries: Vec<String> = (0..N)
        .map(|i| {
            request(
                &format!("r{i}"),
                "calc.echo",
                "aGk=",
                &[b.twin_id()],
                "a.ret",
            )
        })
        .collect();
    let bad = format!(
        r#"{{"ver":1,"ref":"bad","cmd":"x","exp":60,"dat":"%%%","tag":null,"dst":[{}],"ret":"a.ret","shm":null,"now":0}}"#,
        b.twin_id()
    );
    entries.insert(N / 2, bad);
    // One LPUSH: everything waits on the list before the peer's first move returns.
    let mut c = conn(&redis_a.url()).await.unwrap();
    let _: () = c.lpush("msgbus.system.local", &entries).await.unwrap();
    // The service starts after the requests are queued for it, so replies wait too.
    let mut cb = conn(&redis_b.url()).await.unwrap();
    let mut queued = 0;
    while queued < N {
        queued = cb.llen("msgbus.calc.echo").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let _svc = service(&redis_b.url(), "calc.echo", echo);
    let mut refs = BTreeSet::new();
    for _ in 0..=N {
        let reply = brpop(&redis_a.url(), "a.ret").await;
        let reference = reply["ref"].as_str().unwrap().to_string();
        if reference == "bad" {
            assert_eq!(reply["err"]["code"], 101);
        } else {
            assert_eq!(reply["dat"], "aGk=");
        }
        assert!(refs.insert(reference.clone()), "{reference} answered twice");
    }
    assert_eq!(refs.len(), N + 1);
    assert_eq!(Stats::get(&a.stats().requests_popped), N as u64 + 1);
    assert_eq!(Stats::get(&b.stats().incoming_requests), N as u64);
    for (url, key) in [
        (redis_a.url(), "msgbus.system.local.processing"),
        (redis_b.url(), "msgbus.system.reply.processing"),
    ] {
        let mut c = conn(&url).await.unwrap();
        let mut left: usize = 1;
        for _ in 0..500 {
            left = c.llen(key).await.unwrap();
            if left == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(left, 0, "{key} still holds entries");
    }
    assert_eq!(Stats::get(&b.stats().replies_sent), N as u64);
}

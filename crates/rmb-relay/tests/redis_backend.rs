//! Several relay processes sharing sessions and queues through a real redis-server.

mod common;

use std::time::Duration;

use common::*;
use rmb_core::prost::Message as _;
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

/// A Redis, a registrar, one relay instance on them, and twins A and B living there.
struct Cluster {
    redis: RedisServer,
    reg: rmb_testkit::TestRegistrar,
    one: rmb_testkit::TestRelay,
    a: Twin,
    b: Twin,
}

async fn cluster() -> Cluster {
    cluster_with(|_| {}).await
}

/// [`cluster`], its relay instance's configuration changed by `tweak`.
async fn cluster_with(tweak: impl FnOnce(&mut rmb_relay::Config)) -> Cluster {
    let redis = RedisServer::start().unwrap();
    let reg = registrar().await;
    let url = redis.url();
    let one = start_relay_for(vec![DOMAIN.into()], &reg.url(), move |c| {
        c.redis_url = Some(url);
        c.redis_heartbeat = Duration::from_millis(300);
        tweak(c);
    })
    .await;
    let a = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let b = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    Cluster {
        redis,
        reg,
        one,
        a,
        b,
    }
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
    let Cluster {
        redis,
        reg,
        one,
        a,
        b,
    } = cluster().await;
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

/// Bytes Redis holds for the relay: the `MEMORY USAGE` of every `rmb.relay.*` key, so
/// the check does not depend on how the backend lays its data out.
async fn relay_bytes_in_redis(url: &str) -> usize {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("rmb.relay.*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut total = 0;
    for key in keys {
        let used: Option<usize> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut conn)
            .await
            .unwrap();
        total += used.unwrap_or(0);
    }
    total
}

/// The relay-wide accounting in Redis: (frames, bytes) queued.
async fn queued_in_redis(url: &str) -> (i64, i64) {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let (f, b): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
        .arg("rmb.relay.total")
        .arg("f")
        .arg("b")
        .query_async(&mut conn)
        .await
        .unwrap();
    (f.unwrap_or(0), b.unwrap_or(0))
}

/// Waits until nothing is queued in Redis any more, and no queue key is left: the
/// accounting came back to zero with the queues.
async fn until_redis_is_drained(url: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let queues: Vec<String> = redis::cmd("KEYS")
            .arg("rmb.relay.q.*")
            .query_async(&mut conn)
            .await
            .unwrap();
        let queued = queued_in_redis(url).await;
        if queues.is_empty() && queued == (0, 0) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still in Redis: queues {queues:?}, accounting {queued:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn redis_queues_are_capped_in_bytes_per_session_and_per_twin() {
    // The attack (issue 12): twin A fills offline twin B's queues with large envelopes,
    // on as many session ids as it likes. Redis must hold at most the per-twin cap.
    const SESSION_BYTES: usize = 1 << 20;
    const TWIN_BYTES: usize = 2 << 20;
    let redis = RedisServer::start().unwrap();
    let reg = registrar().await;
    let url = redis.url();
    let one = start_relay_for(vec![DOMAIN.into()], &reg.url(), move |c| {
        c.redis_url = Some(url);
        c.mailbox.max_bytes = SESSION_BYTES;
        c.queues.twin_max_bytes = TWIN_BYTES;
    })
    .await;
    let a = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let b = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let mut ca = connect(one.addr(), &a, None).await;
    let body = vec![7u8; 200 << 10];

    // One session id: the oldest are dropped beyond the session's cap.
    for i in 0..8u8 {
        let mut body = body.clone();
        body[0] = i;
        ca.send(&request(&a, Address::session(b.id, "s0"), "x", &body))
            .await;
    }
    assert!(barrier_counting_errors(&mut ca, &a).await.is_empty());
    let held = relay_bytes_in_redis(&redis.url()).await;
    assert!(
        held < SESSION_BYTES + (256 << 10),
        "Redis holds {held} bytes for one session (cap {SESSION_BYTES})"
    );

    // Many session ids: refused beyond the twin's cap, with an error saying so.
    for sid in 1..8 {
        for _ in 0..4 {
            ca.send(&request(
                &a,
                Address::session(b.id, format!("s{sid}")),
                "x",
                &body,
            ))
            .await;
        }
    }
    let errors = barrier_counting_errors(&mut ca, &a).await;
    assert!(!errors.is_empty(), "nothing was refused");
    assert!(errors.iter().all(|e| e.contains("full")), "{errors:?}");
    let held = relay_bytes_in_redis(&redis.url()).await;
    assert!(
        held < TWIN_BYTES + (256 << 10),
        "Redis holds {held} bytes for one destination twin (cap {TWIN_BYTES})"
    );

    // What was kept is delivered, newest of s0 in order.
    let mut cb = connect(one.addr(), &b, Some("s0")).await;
    let first = plain(&cb.recv().await)[0];
    assert!(first > 0, "the oldest were dropped");
    for i in first + 1..8 {
        assert_eq!(plain(&cb.recv().await)[0], i);
    }
    // The other sessions' queues expire unread: nothing stays counted.
}

#[tokio::test]
async fn attach_streams_a_long_queue_instead_of_loading_it() {
    // 24 MiB queued for B, who connects and does not read. The relay must take the
    // queue out of Redis in bounded batches as B's socket accepts them, not move it
    // whole into its memory (where a crash would also lose it).
    const N: u16 = 240;
    const SIZE: usize = 100 << 10;
    let Cluster {
        redis,
        reg: _reg,
        one,
        a,
        b,
    } = cluster().await;
    let mut ca = connect(one.addr(), &a, None).await;
    for i in 0..N {
        let mut body = vec![1u8; SIZE];
        body[..2].copy_from_slice(&i.to_be_bytes());
        ca.send(&request(&a, Address::twin(b.id), "x", &body)).await;
    }
    barrier(&mut ca, &a).await;

    let mut cb = connect(one.addr(), &b, None).await;
    // B takes one envelope; its socket buffers hold a few MiB more. The rest must still
    // be in Redis.
    assert_eq!(plain(&cb.recv().await)[..2], 0u16.to_be_bytes());
    let held = relay_bytes_in_redis(&redis.url()).await;
    assert!(
        held > usize::from(N) * SIZE / 3,
        "only {held} bytes of B's {} are still in Redis",
        usize::from(N) * SIZE
    );
    for i in 1..N {
        assert_eq!(plain(&cb.recv().await)[..2], i.to_be_bytes());
    }
    until_redis_is_drained(&redis.url()).await;
}

#[tokio::test]
async fn expired_offline_queues_leave_redis_with_their_accounting() {
    let Cluster {
        redis,
        reg: _reg,
        one,
        a,
        b,
    } = cluster().await;
    let mut ca = connect(one.addr(), &a, None).await;
    for sid in ["x", "y"] {
        let mut env = request(&a, Address::session(b.id, sid), "x", b"soon gone");
        env.expiration = 1;
        rmb_core::envelope::sign(&mut env, &a.signer);
        ca.send(&env).await;
    }
    barrier(&mut ca, &a).await;
    assert_eq!(queued_in_redis(&redis.url()).await.0, 2);
    until_redis_is_drained(&redis.url()).await;
}

#[tokio::test]
async fn federation_goes_through_the_outbox_and_failures_reach_the_sender() {
    let c = cluster().await;
    let other = start_relay("127.0.0.2", &c.reg.url(), |_| {}).await;
    // A relay address nothing listens on (bound, then closed).
    let dead = std::net::TcpListener::bind("127.0.0.3:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let y = twin(&c.reg.url(), KeyType::Ed25519, &[domain(&other)]).await;
    let z = twin(&c.reg.url(), KeyType::Ed25519, &[dead]).await;
    let mut ca = connect(c.one.addr(), &c.a, None).await;
    let mut cy = connect(other.addr(), &y, None).await;

    let req = request(&c.a, Address::twin(y.id), "x", b"over there");
    ca.send(&req).await;
    assert_eq!(cy.recv().await, req);

    let mut lost = request(&c.a, Address::twin(z.id), "x", b"nowhere");
    lost.tags = Some("fail-fast".into());
    rmb_core::envelope::sign(&mut lost, &c.a.signer);
    ca.send(&lost).await;
    let err = ca.recv().await;
    assert_eq!(err.uid, lost.uid);
    assert!(relay_error(&err).contains("could not reach"), "{err:?}");

    // Both entries left the outbox, and its accounting with them.
    let client = redis::Client::open(c.redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let left: usize = redis::cmd("XLEN")
        .arg("rmb.relay.outbox")
        .query_async(&mut conn)
        .await
        .unwrap();
    let counted: Option<i64> = redis::cmd("HGET")
        .arg("rmb.relay.outbox.count")
        .arg("f")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((left, counted.unwrap_or(0)), (0, 0));
}

/// Entries of the shared memory of accepted envelopes in Redis.
async fn remembered_in_redis(url: &str) -> usize {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("ZCARD")
        .arg("rmb.relay.seen")
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_copy_through_another_instance_is_dropped() {
    // The attack (D1a with several instances): an envelope accepted by instance one
    // is sent again through instance two, over WebSocket and as a federation post. A
    // receiver that does not de-duplicate would run it once per copy.
    let Cluster {
        redis,
        reg,
        one,
        a,
        b,
    } = cluster().await;
    let two = instance(&reg.url(), &redis.url()).await;
    let mut on_one = connect(one.addr(), &a, None).await;
    let original = request(&a, Address::twin(b.id), "x", b"once");
    on_one.send(&original).await;
    barrier(&mut on_one, &a).await;
    // A reconnects through the other instance (as after losing instance one).
    let mut on_two = connect(two.addr(), &a, None).await;
    on_two.send(&original).await;
    barrier(&mut on_two, &a).await;
    let (status, text) = federation_post(two.addr(), original.encode_to_vec()).await;
    assert_eq!(status, 202, "a copy is accepted and dropped: {text}");
    let marker = request(&a, Address::twin(b.id), "x", b"after");
    on_two.send(&marker).await;
    barrier(&mut on_two, &a).await;

    let mut cb = connect(one.addr(), &b, None).await;
    assert_eq!(cb.recv().await, original);
    assert_eq!(
        plain(&cb.recv().await),
        b"after",
        "the copies were dropped, by the instance that did not accept the original too"
    );
}

#[tokio::test]
async fn the_shared_memory_of_accepted_envelopes_is_bounded() {
    // The attack: distinct envelopes, each remembered until its deadline, would grow
    // Redis without bound; the memory keeps at most `dedup_capacity` keys.
    let redis = RedisServer::start().unwrap();
    let reg = registrar().await;
    let url = redis.url();
    let relay = start_relay_for(vec![DOMAIN.into()], &reg.url(), move |c| {
        c.redis_url = Some(url);
        c.dedup_capacity = 10;
    })
    .await;
    let a = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let b = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let mut ca = connect(relay.addr(), &a, None).await;
    for i in 0..30u8 {
        ca.send(&request(&a, Address::twin(b.id), "x", &[i])).await;
    }
    let errors = barrier_counting_errors(&mut ca, &a).await;
    assert!(errors.is_empty(), "{errors:?}");
    let remembered = remembered_in_redis(&redis.url()).await;
    assert!(
        (1..=10).contains(&remembered),
        "{remembered} keys remembered"
    );
}

#[tokio::test]
async fn the_federation_outbox_is_capped_in_bytes_toward_a_relay_that_never_answers() {
    // The attack (issues 12 and 13): twin A addresses a twin registered on a relay that
    // accepts connections and never answers. Every envelope waits in the durable outbox
    // in Redis; without a bound in bytes, A fills the relay's Redis through it.
    const OUTBOX_BYTES: usize = 1 << 20;
    let c = cluster_with(|c| {
        c.federation_backlog_bytes = OUTBOX_BYTES;
        c.federation_timeout = Duration::from_secs(600);
    })
    .await;
    let (_silent, y) = twin_on_a_silent_relay(&c.reg.url()).await;
    let mut ca = connect(c.one.addr(), &c.a, None).await;
    let errors = send_distinct_requests(&mut ca, &c.a, Address::twin(y.id), 12, 200 << 10).await;
    assert!(!errors.is_empty(), "2.4 MiB entered a 1 MiB outbox");
    assert!(
        errors
            .iter()
            .all(|e| e.contains("federation backlog is full")),
        "{errors:?}"
    );
    let held = relay_bytes_in_redis(&c.redis.url()).await;
    assert!(
        held < OUTBOX_BYTES + (256 << 10),
        "Redis holds {held} bytes of federation work (cap {OUTBOX_BYTES})"
    );
    // Local delivery is not affected by the full outbox.
    let mut cb = connect(c.one.addr(), &c.b, None).await;
    let req = request(&c.a, Address::twin(c.b.id), "x", b"still here");
    ca.send(&req).await;
    assert_eq!(cb.recv().await, req);
}

/// A connection's envelopes are routed many at a time (each waits for Redis, not for
/// the one before it), yet they are stored in the order they were sent, and the pong
/// after them still confirms every one: here B is connected to the other instance and
/// C is offline, and A sends to both without waiting.
#[tokio::test]
async fn pipelined_envelopes_keep_their_order_and_the_pong_confirms_them_all() {
    const EACH: u16 = 300;
    let cl = cluster().await;
    let (a, b, redis) = (&cl.a, &cl.b, &cl.redis);
    let two = instance(&cl.reg.url(), &redis.url()).await;
    let c = twin(&cl.reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let mut ca = connect(cl.one.addr(), a, None).await;
    let mut cb = connect(two.addr(), b, None).await;
    for i in 0..EACH {
        for to in [b, &c] {
            ca.send(&request(a, Address::twin(to.id), "x", &i.to_be_bytes()))
                .await;
        }
    }
    barrier(&mut ca, a).await;
    let (frames, _) = queued_in_redis(&redis.url()).await;
    assert!(
        frames >= i64::from(EACH),
        "the pong came while only {frames} frames were in Redis: C's {EACH} were not all stored"
    );
    for i in 0..EACH {
        assert_eq!(plain(&cb.recv().await), i.to_be_bytes(), "B's envelope {i}");
    }
    let mut cc = connect(two.addr(), &c, None).await;
    for i in 0..EACH {
        assert_eq!(plain(&cc.recv().await), i.to_be_bytes(), "C's envelope {i}");
    }
    until_redis_is_drained(&redis.url()).await;
}

/// The attack: a client sends large envelopes while Redis is slow and disconnects, over
/// and over. Each envelope already handed to storage must stay charged to the read
/// budget until storage answers; freed at the disconnect, it would wait in memory
/// uncounted, and the next connection could queue as much again.
#[tokio::test]
async fn envelopes_a_gone_session_handed_to_a_slow_redis_stay_charged() {
    const SIZE: usize = 1 << 20;
    let cl = cluster().await;
    let (a, b) = (&cl.a, &cl.b);
    let relay = cl.one.handle();
    let mut ca = connect(cl.one.addr(), a, None).await;
    // B's record cached: the large envelopes are routed together, not one by one.
    ca.send(&request(a, Address::twin(b.id), "x", b"warm"))
        .await;
    barrier(&mut ca, a).await;
    let client = redis::Client::open(cl.redis.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    // Writes wait for longer than the relay's 2 s Redis timeout: the envelopes' store
    // fails that long after they were read, and the check below needs 300 ms of it.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(4000)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .unwrap();
    for i in 0..3u8 {
        ca.send(&request(a, Address::twin(b.id), "x", &vec![i; SIZE]))
            .await;
    }
    let budget = relay.read_budget().expect("the relay has a read budget");
    eventually("the three envelopes are read", || budget.held() >= 3 * SIZE).await;
    drop(ca);
    // The relay sees the close within milliseconds; the store ends only with the
    // relay's Redis timeout, 2 s after the envelopes were read. Every sample of the
    // first 300 ms after the close falls in between (there is no event to wait for:
    // nothing happens until the store ends).
    let until = tokio::time::Instant::now() + Duration::from_millis(300);
    while tokio::time::Instant::now() < until {
        assert!(
            budget.held() >= 3 * SIZE,
            "the gone session's envelopes still wait for Redis, but only {} bytes are charged",
            budget.held()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eventually("the store ended, the bytes are released", || {
        budget.held() == 0
    })
    .await;
    eventually("the session is gone", || relay.open_connections() == 0).await;
}

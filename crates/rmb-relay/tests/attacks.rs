//! Attacks on the relay, each reproduced against a real relay on real sockets.

mod common;

use common::*;
use rmb_core::{envelope, Address, KeyType};

/// A request from `from` to `to` signed with a deadline at the end of time.
fn with_huge_deadline(from: &Twin, to: Address) -> rmb_core::Envelope {
    let mut env = request(from, to, "x", b"forever");
    env.expiration = u64::MAX - env.timestamp;
    envelope::sign(&mut env, &from.signer);
    env
}

#[tokio::test]
async fn a_huge_deadline_is_refused_and_leaves_the_federation_backlog_free() {
    let reg = registrar().await;
    let url = reg.url();
    // Room for two federation deliveries: a leaked slot shows at once.
    let r1 = start_relay("127.0.0.1", &url, |c| c.federation_backlog = 2).await;
    let r2 = start_relay("127.0.0.2", &url, |_| {}).await;
    let a = twin(&url, KeyType::Ed25519, &[domain(&r1)]).await;
    let b = twin(&url, KeyType::Ed25519, &[domain(&r2)]).await;
    let mut ca = connect(r1.addr(), &a, None).await;
    let mut cb = connect(r2.addr(), &b, None).await;
    for _ in 0..3 {
        let huge = with_huge_deadline(&a, Address::twin(b.id));
        ca.send(&huge).await;
        let err = ca.recv().await;
        assert_eq!(err.uid, huge.uid);
        let message = relay_error(&err);
        assert!(message.contains("expiration"), "{message}");
    }
    let fine = request(&a, Address::twin(b.id), "x", b"fine");
    ca.send(&fine).await;
    assert_eq!(cb.recv().await, fine, "federation still works");
}

#[tokio::test]
async fn a_federation_post_with_a_huge_deadline_is_refused() {
    let reg = registrar().await;
    let url = reg.url();
    let r2 = start_relay("127.0.0.2", &url, |_| {}).await;
    let a = twin(&url, KeyType::Ed25519, &["elsewhere.example".to_string()]).await;
    let b = twin(&url, KeyType::Ed25519, &[domain(&r2)]).await;
    let huge = with_huge_deadline(&a, Address::twin(b.id));
    let body = rmb_core::prost::Message::encode_to_vec(&huge);
    let (status, text) = federation_post(r2.addr(), body).await;
    assert_eq!(status, 400);
    assert!(text.contains("expiration"), "{text}");
}

/// Copies of an envelope the relay accepted (D1a): dropped, over WebSocket and by
/// federation, and never charged to the source twin's rate limit.
#[tokio::test]
async fn a_copy_sent_twice_over_websocket_reaches_the_destination_once() {
    let setup = one_relay(|c| c.rate_limit = messages_per_hour(3)).await;
    let (a, b) = (&setup.a, &setup.b);
    let mut ca = connect(setup.addr(), a, None).await;
    let mut cb = connect(setup.addr(), b, None).await;
    let first = request(a, Address::twin(b.id), "pay", b"once");
    for _ in 0..5 {
        ca.send(&first).await;
    }
    let second = request(a, Address::twin(b.id), "pay", b"another");
    ca.send(&second).await;
    let third = request(a, Address::twin(b.id), "pay", b"and another");
    ca.send(&third).await;
    assert_eq!(cb.recv().await, first);
    assert_eq!(cb.recv().await, second, "the copies were dropped");
    assert_eq!(
        cb.recv().await,
        third,
        "the copies did not use up A's budget of 3"
    );
    assert_eq!(setup.relay.metrics().duplicates.get(), 4);
}

#[tokio::test]
async fn a_replayed_federation_post_is_answered_202_delivered_once_and_not_charged() {
    let reg = registrar().await;
    let url = reg.url();
    let r2 = start_relay("127.0.0.2", &url, |c| c.rate_limit = messages_per_hour(2)).await;
    let victim = twin(&url, KeyType::Ed25519, &["elsewhere.example".to_string()]).await;
    let b = twin(&url, KeyType::Ed25519, &[domain(&r2)]).await;
    let mut cb = connect(r2.addr(), &b, None).await;
    let relay = r2.addr();
    let post = |env: &rmb_core::Envelope| {
        let body = rmb_core::prost::Message::encode_to_vec(env);
        async move { federation_post(relay, body).await.0 }
    };
    // The victim's genuine envelope, captured and replayed by anyone.
    let captured = request(&victim, Address::twin(b.id), "pay", b"once");
    for _ in 0..10 {
        assert_eq!(post(&captured).await, 202);
    }
    let next = request(&victim, Address::twin(b.id), "pay", b"next");
    assert_eq!(
        post(&next).await,
        202,
        "the replays used up the victim's budget"
    );
    assert_eq!(cb.recv().await, captured);
    assert_eq!(cb.recv().await, next, "a replay reached the destination");
}

#[tokio::test]
async fn the_upgrade_response_advertises_that_copies_are_dropped() {
    let setup = one_relay(|_| {}).await;
    let url = format!("ws://{}/?{}", setup.addr(), token(&setup.a, None));
    let (_ws, response) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(
        response.headers().get("rmb-dedup").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
}

/// The envelope rules (D3) on both ways in: a session gets a relay error naming the
/// field and the limit, a federation post 400 with the same words.
#[tokio::test]
async fn envelopes_breaking_the_rules_are_refused_naming_the_field() {
    let setup = one_relay(|_| {}).await;
    let (a, b) = (&setup.a, &setup.b);
    let mut ca = connect(setup.addr(), a, None).await;
    type Breaks = fn(&mut rmb_core::Envelope);
    let cases: [(&str, Breaks); 3] = [
        ("uid is 1000 bytes", |e| e.uid = "u".repeat(1000)),
        ("ahead of this clock", |e| {
            // The timestamp/expiration shift: valid for millennia.
            e.timestamp = e.timestamp * 100 + e.expiration / 10;
            e.expiration = 0;
        }),
        ("destination session id", |e| {
            e.destination = Some(Address::session(
                e.destination.as_ref().unwrap().twin,
                "a b",
            ))
        }),
    ];
    for (words, break_it) in cases {
        let mut env = request(a, Address::twin(b.id), "x", b"");
        break_it(&mut env);
        envelope::sign(&mut env, &a.signer);
        ca.send(&env).await;
        let err = ca.recv().await;
        assert_eq!(err.uid, env.uid);
        assert!(relay_error(&err).contains(words), "{words}: {err:?}");
        let body = rmb_core::prost::Message::encode_to_vec(&env);
        let (status, text) = federation_post(setup.addr(), body).await;
        assert_eq!(
            (status, text.contains(words)),
            (400, true),
            "{words}: {text}"
        );
    }
}

/// Offline queues are keyed by a session id the sender chooses: one twin addressing
/// many session ids of an offline victim must not make the relay hold unbounded memory.
#[tokio::test]
async fn queues_for_many_session_ids_of_one_twin_are_capped_together() {
    let setup = one_relay(|c| {
        c.queues.twin_max_frames = 5;
        c.queues.total_max_frames = 8;
    })
    .await;
    let (a, victim) = (&setup.a, &setup.b);
    let other = setup.twin().await;
    let mut ca = connect(setup.addr(), a, None).await;
    for i in 0..5 {
        let to = Address::session(victim.id, format!("s{i}"));
        ca.send(&request(a, to, "x", b"junk")).await;
    }
    // The sixth, to yet another session id, is over the victim's budget.
    let over = request(a, Address::session(victim.id, "s5"), "x", b"junk");
    ca.send(&over).await;
    let err = ca.recv().await;
    assert_eq!(err.uid, over.uid);
    let message = relay_error(&err);
    assert!(
        message.contains("queue") && message.contains(&victim.id.to_string()),
        "{message}"
    );
    // Other twins still have room, up to the relay's total.
    for i in 0..3 {
        let to = Address::session(other.id, format!("s{i}"));
        ca.send(&request(a, to, "x", b"fine")).await;
    }
    let over = request(a, Address::twin(other.id), "x", b"too much");
    ca.send(&over).await;
    let err = ca.recv().await;
    assert_eq!(err.uid, over.uid);
    assert!(relay_error(&err).contains("relay"), "{err:?}");
    // A session that connects takes its queue, which frees room.
    let mut s0 = connect(setup.addr(), victim, Some("s0")).await;
    assert_eq!(plain(&s0.recv().await), b"junk");
    barrier(&mut s0, victim).await;
    let again = request(a, Address::session(victim.id, "s9"), "x", b"room again");
    ca.send(&again).await;
    let mut s9 = connect(setup.addr(), victim, Some("s9")).await;
    assert_eq!(s9.recv().await, again);
}

/// A relay run by a stranger answers our federation post with a redirect to an internal
/// address: it must not be followed (reqwest follows up to ten, and turns a 303's POST
/// into a GET to wherever it points).
#[tokio::test]
async fn federation_never_follows_a_redirect_to_an_internal_url() {
    let internal = FakeRelay::start(
        "127.0.0.6",
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
    )
    .await;
    let redirect = format!(
        "HTTP/1.1 303 See Other\r\nlocation: http://{}/admin/delete-everything\r\ncontent-length: 0\r\n\r\n",
        internal.addr
    );
    let stranger = FakeRelay::start("127.0.0.7", redirect.into_bytes()).await;
    let reg = registrar().await;
    let url = reg.url();
    let r1 = start_relay("127.0.0.1", &url, |_| {}).await;
    let a = twin(&url, KeyType::Ed25519, &[domain(&r1)]).await;
    let message = federation_error(&url, &r1, &a, &[stranger.domain()]).await;
    assert!(message.contains("303"), "{message}");
    assert!(stranger.hits() >= 1);
    assert_eq!(internal.hits(), 0, "the redirect was followed");
}

/// A stranger's relay answers 4xx with a huge body full of control characters: the
/// sender gets a short, printable reason.
#[tokio::test]
async fn a_refusing_relay_cannot_send_its_body_back_to_our_sender() {
    let mut response = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 1000000\r\n\r\n".to_vec();
    response.extend(b"\x1b[2Jowned\r\n\x00".iter().cycle().take(1_000_000));
    let stranger = FakeRelay::start("127.0.0.8", response).await;
    let reg = registrar().await;
    let url = reg.url();
    let r1 = start_relay("127.0.0.1", &url, |_| {}).await;
    let a = twin(&url, KeyType::Ed25519, &[domain(&r1)]).await;
    let message = federation_error(&url, &r1, &a, &[stranger.domain()]).await;
    assert!(message.contains("400"), "{message}");
    assert!(message.len() < 512, "{} bytes", message.len());
    assert!(
        message.chars().all(|c| !c.is_control()),
        "control characters reached the sender: {message:?}"
    );
}

/// Twins register their relays freely: a relay must not be made to post to loopback or
/// private addresses (its own admin endpoints, the cloud's metadata service) unless its
/// operator allows it (test networks, `rmb up`).
#[tokio::test]
async fn federation_to_loopback_and_private_addresses_is_refused_unless_allowed() {
    let reg = registrar().await;
    let url = reg.url();
    let r1 = start_relay("127.0.0.1", &url, |c| c.federation_allow_private = false).await;
    let r2 = start_relay("127.0.0.2", &url, |_| {}).await;
    let a = twin(&url, KeyType::Ed25519, &[domain(&r1)]).await;
    let targets = [
        domain(&r2),
        "localhost:1".to_string(),
        "10.1.2.3:80".to_string(),
    ];
    for target in targets {
        let message = federation_error(&url, &r1, &a, std::slice::from_ref(&target)).await;
        assert!(message.contains("private"), "{target}: {message}");
    }
    let received = r2.metrics().federation_received.get();
    assert_eq!(received, 0);
}

/// Twins register whatever relay names they like, and each name used to become a label
/// value of `rmb_relay_federation_total` (and a ranker entry) for ever.
#[tokio::test]
async fn relay_names_chosen_by_twins_do_not_grow_the_metrics() {
    let reg = registrar().await;
    let url = reg.url();
    let r1 = start_relay("127.0.0.1", &url, |c| c.metric_relay_labels = 3).await;
    let a = twin(&url, KeyType::Ed25519, &[domain(&r1)]).await;
    for _ in 0..8 {
        // A relay name of its own, where nothing listens.
        let dead = std::net::TcpListener::bind("127.0.0.9:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let message = federation_error(&url, &r1, &a, &[dead.to_string()]).await;
        assert!(message.contains("could not reach"), "{message}");
    }
    let text = reqwest::get(format!("http://{}/metrics", r1.addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("rmb_relay_federation_total{"))
        .collect();
    assert_eq!(rows.len(), 4, "three relays and `other`: {rows:#?}");
    assert!(
        rows.iter()
            .any(|r| r.contains("relay=\"other\"") && r.ends_with(" 5")),
        "{rows:#?}"
    );
}

/// The field-shift attack (rmb_testkit::shift): a relay that carried a signed envelope
/// moves bytes between its fields, keeping the signature valid, and posts every variant
/// to our relay. Each is refused or dropped as a copy of the genuine one (the signature
/// key); the destination sees the genuine envelope once and nothing else.
#[tokio::test]
async fn shifted_copies_of_a_federated_envelope_never_reach_anyone() {
    let reg = registrar().await;
    let url = reg.url();
    let relay = start_relay("127.0.0.2", &url, |_| {}).await;
    let v = twin(&url, KeyType::Ed25519, &["elsewhere.example".to_string()]).await;
    let b = twin(&url, KeyType::Ed25519, &[domain(&relay)]).await;
    let mut cb = connect(relay.addr(), &b, None).await;
    let mut genuine = request(
        &v,
        Address::twin(b.id),
        "zos.deployment.deploy",
        br#"{"amount":100}"#,
    );
    genuine.schema = Some("application/json".into());
    envelope::sign(&mut genuine, &v.signer);
    let post = |env: &rmb_core::Envelope| {
        let body = rmb_core::prost::Message::encode_to_vec(env);
        federation_post(relay.addr(), body)
    };
    assert_eq!(post(&genuine).await.0, 202);
    assert_eq!(cb.recv().await, genuine);
    let variants = rmb_testkit::shift::variants(&genuine);
    assert!(variants.len() > 20, "{} variants", variants.len());
    let mut dropped = 0;
    for variant in &variants {
        let (status, text) = post(&variant.envelope).await;
        match status {
            202 => dropped += 1,
            400 | 401 | 404 => {}
            other => panic!("{}: {other} {text}", variant.name),
        }
    }
    let duplicates = relay.metrics().duplicates.get();
    assert_eq!(duplicates, dropped, "every 202 was a dropped copy");
    let fresh = request(&v, Address::twin(b.id), "x", b"fresh");
    assert_eq!(post(&fresh).await.0, 202);
    assert_eq!(cb.recv().await, fresh, "a shifted variant reached B");
}

/// A relay that pings every 200 ms and closes a session silent for 1 s.
async fn pinging_relay() -> OneRelay {
    one_relay(|c| {
        c.ws_ping_interval = std::time::Duration::from_millis(200);
        c.ws_idle_timeout = std::time::Duration::from_secs(1);
    })
    .await
}

fn idle_closed(setup: &OneRelay) -> u64 {
    let metrics = setup.relay.metrics();
    metrics.idle_closed.get()
}

#[tokio::test]
async fn a_session_that_answers_nothing_is_closed_after_the_idle_timeout() {
    use tokio::io::AsyncReadExt;
    let setup = pinging_relay().await;
    let mut tcp = silent_session(setup.addr(), &token(&setup.a, None)).await;
    // Pings, then the close frame, then the end of the stream.
    let mut received = Vec::new();
    let read_to_end = tcp.read_to_end(&mut received);
    tokio::time::timeout(WAIT, read_to_end)
        .await
        .expect("the relay kept a silent session open")
        .unwrap();
    let text = String::from_utf8_lossy(&received);
    assert!(text.contains("idle"), "the close frame says why: {text:?}");
    assert_eq!(idle_closed(&setup), 1);
    eventually("the slot is free", || setup.relay.open_connections() == 0).await;
}

#[tokio::test]
async fn a_session_that_answers_pings_outlives_the_idle_timeout() {
    use futures_util::StreamExt;
    let setup = pinging_relay().await;
    let mut conn = connect(setup.addr(), &setup.a, None).await;
    // Reading answers each ping with a pong: ten of them span two idle timeouts.
    let mut pings = 0;
    while pings < 10 {
        let msg = tokio::time::timeout(WAIT, conn.raw.ws.next())
            .await
            .unwrap();
        match msg {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Ping(_))) => pings += 1,
            other => panic!("expected pings, got {other:?}"),
        }
    }
    barrier(&mut conn, &setup.a).await;
    assert_eq!(idle_closed(&setup), 0);
}

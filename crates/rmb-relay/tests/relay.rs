//! The relay against real sockets and a real registrar: routing, sessions, queues,
//! authentication, protection, federation.

mod common;

use common::*;
use rmb_core::proto::{Message, Payload, Ping};
use rmb_core::{envelope, jwt, Address, Envelope, KeyType};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[tokio::test]
async fn two_twins_exchange_request_and_response() {
    let reg = registrar().await;
    let relay = start_relay("127.0.0.1", &reg.url(), |_| {}).await;
    let relays = vec![domain(&relay)];
    let a = twin(&reg.url(), KeyType::Sr25519, &relays).await;
    let b = twin(&reg.url(), KeyType::Ed25519, &relays).await;
    let mut ca = connect(relay.addr(), &a, None).await;
    let mut cb = connect(relay.addr(), &b, None).await;

    let req = request(&a, Address::twin(b.id), "calc.add", b"[1,2]");
    ca.send(&req).await;
    let got = cb.recv().await;
    assert_eq!(got, req, "the relay forwards the envelope unchanged");
    envelope::verify(&got, &a.signer.public_key()).unwrap();

    cb.send(&response(&b, &got, b"3")).await;
    let reply = ca.recv().await;
    assert_eq!(reply.uid, req.uid);
    assert_eq!(plain(&reply), b"3");
    envelope::verify(&reply, &b.signer.public_key()).unwrap();
    assert!(relay.metrics().messages_in.get() >= 2);
}

#[tokio::test]
async fn sessions_are_addressed_exactly() {
    let OneRelay {
        reg: _reg,
        relay,
        a,
        b,
    } = one_relay(|_| {}).await;
    let mut ca = connect(relay.addr(), &a, Some("app")).await;
    let mut b_default = connect(relay.addr(), &b, None).await;
    let mut b_s1 = connect(relay.addr(), &b, Some("s1")).await;

    let mut to_s1 = request(&a, Address::session(b.id, "s1"), "x", b"for s1");
    to_s1.source = Some(Address::session(a.id, "app"));
    envelope::sign(&mut to_s1, &a.signer);
    let mut to_default = request(&a, Address::twin(b.id), "x", b"for default");
    to_default.source = Some(Address::session(a.id, "app"));
    envelope::sign(&mut to_default, &a.signer);
    ca.send(&to_s1).await;
    ca.send(&to_default).await;
    assert_eq!(plain(&b_s1.recv().await), b"for s1");
    assert_eq!(plain(&b_default.recv().await), b"for default");

    // The reply goes back to the sending session.
    b_s1.send(&{
        let mut r = response(&b, &to_s1, b"ok");
        r.source = Some(Address::session(b.id, "s1"));
        envelope::sign(&mut r, &b.signer);
        r
    })
    .await;
    assert_eq!(plain(&ca.recv().await), b"ok");
}

#[tokio::test]
async fn a_newer_connection_replaces_the_older_one() {
    let OneRelay {
        reg: _reg,
        relay,
        a,
        b,
    } = one_relay(|_| {}).await;
    let mut first = connect(relay.addr(), &b, Some("s")).await;
    let mut second = connect(relay.addr(), &b, Some("s")).await;
    let close = first.recv_close().await.expect("a close frame");
    assert!(close.reason.contains("replaced"), "{close:?}");

    let mut ca = connect(relay.addr(), &a, None).await;
    ca.send(&request(&a, Address::session(b.id, "s"), "x", b"hi"))
        .await;
    assert_eq!(plain(&second.recv().await), b"hi");
    eventually("one connection left for b plus a", || {
        relay.open_connections() == 2
    })
    .await;
}

#[tokio::test]
async fn offline_twin_gets_its_queue_in_order_and_expired_envelopes_are_dropped() {
    let OneRelay {
        reg: _reg,
        relay,
        a,
        b,
    } = one_relay(|_| {}).await;
    let mut ca = connect(relay.addr(), &a, None).await;

    // One envelope that expires while queued: its deadline is one second away.
    let mut short = request(&a, Address::twin(b.id), "x", b"short-lived");
    short.expiration = 1;
    envelope::sign(&mut short, &a.signer);
    ca.send(&short).await;
    eventually("the short-lived envelope expired in the queue", || {
        relay.metrics().expired.get() >= 1
    })
    .await;

    for i in 0..5u8 {
        ca.send(&request(&a, Address::twin(b.id), "x", &[i])).await;
    }
    // A pong for a ping sent after them proves the relay has routed all five.
    let mut ping = Envelope {
        uid: uuid(),
        message: Some(Message::Ping(Ping {})),
        ..Default::default()
    };
    ping.source = Some(Address::twin(a.id));
    ca.send(&ping).await;
    assert!(matches!(ca.recv().await.message, Some(Message::Pong(_))));

    let mut cb = connect(relay.addr(), &b, None).await;
    for i in 0..5u8 {
        assert_eq!(
            plain(&cb.recv().await),
            &[i],
            "queued envelopes arrive in order"
        );
    }
}

#[tokio::test]
async fn already_expired_request_gets_an_error() {
    let OneRelay {
        reg: _reg,
        relay,
        a,
        b,
    } = one_relay(|_| {}).await;
    let mut ca = connect(relay.addr(), &a, None).await;
    let mut old = request(&a, Address::twin(b.id), "x", b"");
    old.timestamp -= 120;
    envelope::sign(&mut old, &a.signer);
    ca.send(&old).await;
    let err = ca.recv().await;
    assert_eq!(err.uid, old.uid);
    assert!(relay_error(&err).contains("expired"));
}

#[tokio::test]
async fn envelope_ping_gets_a_pong_even_without_destination() {
    let reg = registrar().await;
    let relay = start_relay("127.0.0.1", &reg.url(), |_| {}).await;
    let a = twin(&reg.url(), KeyType::Sr25519, &[domain(&relay)]).await;
    let mut ca = connect(relay.addr(), &a, None).await;
    // As the TypeScript client sends it: empty destination, empty signature.
    let ping = Envelope {
        uid: "ping-1".into(),
        source: Some(Address::twin(a.id)),
        message: Some(Message::Ping(Ping {})),
        signature: Some(vec![]),
        ..Default::default()
    };
    ca.send(&ping).await;
    let pong = ca.recv().await;
    assert_eq!(pong.uid, "ping-1");
    assert!(matches!(pong.message, Some(Message::Pong(_))));
    assert_eq!(pong.destination, Some(Address::twin(a.id)));
    assert_eq!(pong.payload, Some(Payload::Plain(b"hello world".to_vec())));
}

#[tokio::test]
async fn requests_to_unknown_twins_and_spoofed_sources_get_errors() {
    let OneRelay {
        reg: _reg,
        relay,
        a,
        b,
    } = one_relay(|_| {}).await;
    let mut ca = connect(relay.addr(), &a, None).await;

    let unknown = request(&a, Address::twin(999_999), "x", b"");
    ca.send(&unknown).await;
    let err = ca.recv().await;
    assert_eq!(err.uid, unknown.uid);
    assert!(relay_error(&err).contains("not registered"), "{err:?}");

    // a pretends to be b.
    let mut spoofed = request(&a, Address::twin(a.id), "x", b"");
    spoofed.source = Some(Address::twin(b.id));
    ca.send(&spoofed).await;
    let err = ca.recv().await;
    assert_eq!(err.uid, spoofed.uid);
    assert!(
        relay_error(&err).contains("does not match your session"),
        "{err:?}"
    );

    let mut no_dst = request(&a, Address::twin(b.id), "x", b"");
    no_dst.destination = None;
    ca.send(&no_dst).await;
    assert!(relay_error(&ca.recv().await).contains("no destination"));
}

#[tokio::test]
async fn every_authentication_failure_is_refused_before_the_upgrade() {
    let reg = registrar().await;
    let relay = start_relay("127.0.0.1", &reg.url(), |_| {}).await;
    let addr = relay.addr();
    let a = twin(&reg.url(), KeyType::Ed25519, &[domain(&relay)]).await;
    let other = twin(&reg.url(), KeyType::Ed25519, &[domain(&relay)]).await;
    let now = rmb_core::time::now();

    assert_eq!(refused_status(addr, "").await, 400, "missing token");
    assert_eq!(refused_status(addr, "not.a.jwt").await, 400, "malformed");
    let expired = jwt::create(&a.signer, a.id, None, now - 100, 60);
    assert_eq!(refused_status(addr, &expired).await, 401, "expired");
    let future = jwt::create(&a.signer, a.id, None, now + 600, 60);
    assert_eq!(
        refused_status(addr, &future).await,
        401,
        "issued in the future"
    );
    let long = jwt::create(&a.signer, a.id, None, now, 86_400);
    assert_eq!(refused_status(addr, &long).await, 401, "lifetime too long");
    let forged = jwt::create(&other.signer, a.id, None, now, 60);
    assert_eq!(
        refused_status(addr, &forged).await,
        401,
        "signed by another twin's key"
    );
    let unknown = jwt::create(&a.signer, 999_999, None, now, 60);
    assert_eq!(refused_status(addr, &unknown).await, 401, "unknown twin");
    let mut parts: Vec<String> = token(&a, None).split('.').map(String::from).collect();
    {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let mut sig = URL_SAFE_NO_PAD.decode(&parts[2]).unwrap();
        sig[10] ^= 0x01;
        parts[2] = URL_SAFE_NO_PAD.encode(sig);
    }
    assert_eq!(
        refused_status(addr, &parts.join(".")).await,
        401,
        "corrupted signature"
    );

    let failures = relay.metrics().render();
    for reason in [
        "missing_token",
        "malformed",
        "expired",
        "invalid_time",
        "bad_signature",
        "unknown_twin",
    ] {
        assert!(
            failures.contains(&format!("reason=\"{reason}\"")),
            "no metric for {reason}:\n{failures}"
        );
    }
    // The TypeScript client's token shape (typ header, no sid, exp = iat + 1000) is accepted.
    connect(addr, &a, None).await;
}

#[tokio::test]
async fn text_frames_garbage_and_oversized_frames_close_the_connection() {
    let reg = registrar().await;
    let relay = start_relay("127.0.0.1", &reg.url(), |c| c.max_envelope_size = 4096).await;
    let a = twin(&reg.url(), KeyType::Ed25519, &[domain(&relay)]).await;

    let mut conn = connect(relay.addr(), &a, None).await;
    conn.send_raw(WsMessage::Text("hello".into())).await;
    let close = conn.recv_close().await.expect("close frame");
    assert_eq!(close.code, CloseCode::Unsupported);

    let mut conn = connect(relay.addr(), &a, None).await;
    conn.send_raw(WsMessage::Binary(vec![0xff; 64].into()))
        .await;
    let close = conn.recv_close().await.expect("close frame");
    assert_eq!(close.code, CloseCode::Invalid);
    assert!(close.reason.contains("protobuf"), "{close:?}");

    let mut conn = connect(relay.addr(), &a, None).await;
    // The relay may close before the client finishes writing: ignore the send result.
    let _ = futures_util::SinkExt::send(
        &mut conn.raw.ws,
        WsMessage::Binary(vec![1u8; 10_000].into()),
    )
    .await;
    // Depending on timing the client sees the close frame or a reset; the metric below
    // proves the relay refused the frame either way.
    if let Some(close) = conn.recv_close().await {
        assert_eq!(close.code, CloseCode::Size);
    }
    let m = relay.metrics();
    for kind in ["text_frame", "undecodable_frame", "oversized_frame"] {
        assert_eq!(
            m.labelled(
                "rmb_relay_protocol_violations_total",
                &format!("kind=\"{kind}\"")
            ),
            1,
            "{kind}"
        );
    }
    // The relay is still serving.
    let b = twin(&reg.url(), KeyType::Ed25519, &[domain(&relay)]).await;
    let mut cb = connect(relay.addr(), &b, None).await;
    let mut ca = connect(relay.addr(), &a, None).await;
    ca.send(&request(&a, Address::twin(b.id), "x", b"still up"))
        .await;
    assert_eq!(plain(&cb.recv().await), b"still up");
}

#[tokio::test]
async fn rate_limit_refuses_the_flooder_only() {
    let reg = registrar().await;
    let relay = start_relay("127.0.0.1", &reg.url(), |c| {
        c.rate_limit.messages = Some(5);
        c.rate_limit.window_secs = 3600;
    })
    .await;
    let relays = vec![domain(&relay)];
    let flooder = twin(&reg.url(), KeyType::Ed25519, &relays).await;
    let polite = twin(&reg.url(), KeyType::Ed25519, &relays).await;
    let sink = twin(&reg.url(), KeyType::Ed25519, &relays).await;
    let mut cf = connect(relay.addr(), &flooder, None).await;
    let mut cp = connect(relay.addr(), &polite, None).await;
    let mut cs = connect(relay.addr(), &sink, None).await;

    for i in 0..8u8 {
        cf.send(&request(&flooder, Address::twin(sink.id), "x", &[i]))
            .await;
    }
    for _ in 0..3 {
        let err = cf.recv().await;
        assert!(relay_error(&err).contains("rate limit"), "{err:?}");
    }
    for i in 0..5u8 {
        assert_eq!(plain(&cs.recv().await), &[i]);
    }
    cp.send(&request(&polite, Address::twin(sink.id), "x", b"polite"))
        .await;
    assert_eq!(
        plain(&cs.recv().await),
        b"polite",
        "other twins are not limited"
    );
    assert_eq!(relay.metrics().rate_limited.get(), 3);
    // The flooder's connection stays open: its pings are still answered.
    let mut ping = Envelope {
        uid: uuid(),
        message: Some(Message::Ping(Ping {})),
        ..Default::default()
    };
    ping.source = Some(Address::twin(flooder.id));
    cf.send(&ping).await;
    assert!(matches!(cf.recv().await.message, Some(Message::Pong(_))));
}

#[tokio::test]
async fn fail_fast_to_an_offline_twin_is_refused_not_queued() {
    let OneRelay {
        reg: _reg,
        relay,
        a,
        b,
    } = one_relay(|_| {}).await;
    let mut ca = connect(relay.addr(), &a, None).await;
    let mut req = request(&a, Address::twin(b.id), "x", b"");
    req.tags = Some("fail-fast".into());
    envelope::sign(&mut req, &a.signer);
    ca.send(&req).await;
    assert!(relay_error(&ca.recv().await).contains("offline"));
}

#[tokio::test]
async fn connections_beyond_the_limit_get_503_and_slots_are_freed() {
    let OneRelay {
        reg: _reg,
        relay,
        a,
        b,
    } = one_relay(|c| c.max_connections = 2).await;
    let first = connect(relay.addr(), &a, None).await;
    let _second = connect(relay.addr(), &b, None).await;
    assert_eq!(
        refused_status(relay.addr(), &token(&a, Some("third"))).await,
        503
    );
    drop(first);
    eventually("the closed session frees its slot", || {
        relay.open_connections() == 1
    })
    .await;
    connect(relay.addr(), &a, Some("third")).await;
}

#[tokio::test]
async fn a_reader_that_never_reads_stays_bounded_and_blocks_nobody() {
    let OneRelay {
        reg: _reg,
        relay,
        a,
        b,
    } = one_relay(|c| c.mailbox.max_frames = 50).await;
    let c = twin(&_reg.url(), KeyType::Ed25519, &[domain(&relay)]).await;
    let mut ca = connect(relay.addr(), &a, None).await;
    // B connects and then never reads: kernel buffers fill, then its mailbox does.
    let _stalled = connect(relay.addr(), &b, None).await;
    let mut cc = connect(relay.addr(), &c, None).await;
    let big = vec![7u8; 64 * 1024];
    for _ in 0..400 {
        ca.send(&request(&a, Address::twin(b.id), "x", &big)).await;
    }
    ca.send(&request(&a, Address::twin(c.id), "x", b"not blocked"))
        .await;
    assert_eq!(plain(&cc.recv().await), b"not blocked");
    eventually("the stalled session's oldest envelopes are dropped", || {
        relay.metrics().queue_dropped.get() > 0
    })
    .await;
    eventually("the gauge has been refreshed", || {
        relay.metrics().queued_frames.get() > 0
    })
    .await;
    let queued = relay.metrics().queued_frames.get();
    assert!(queued <= 50, "mailbox grew past its bound: {queued}");
}

#[tokio::test]
async fn many_connect_disconnect_cycles_leave_no_sessions_behind() {
    let OneRelay {
        reg: _reg,
        relay,
        a,
        b: _,
    } = one_relay(|_| {}).await;
    for i in 0..300 {
        let mut conn = connect(relay.addr(), &a, Some(&format!("cycle-{}", i % 7))).await;
        if i % 2 == 0 {
            futures_util::SinkExt::close(&mut conn.raw.ws)
                .await
                .unwrap();
        }
        // Odd cycles just drop the socket without a close handshake.
    }
    eventually("every session is gone", || {
        relay.open_connections() == 0 && relay.metrics().connections.get() == 0
    })
    .await;
    assert_eq!(relay.metrics().connections_total.get(), 300);
}

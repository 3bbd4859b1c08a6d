//! SDK against a real registrar and real relays.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rmb_core::peer_api::ErrorCode;
use rmb_core::proto::{Message, Payload};
use rmb_core::{envelope, Address, Envelope, KeyType};
use rmb_sdk::{seal, Outgoing};
use rmb_sdk::{CallError, Client, HandlerError, Reply, Resend, SendError};
use rmb_testkit::TestRelay;

#[tokio::test]
async fn call_and_serve_between_sr25519_and_ed25519_with_e2e() {
    let n = net().await;
    let server = client_on(&n.reg, &[&n.relay], KeyType::Sr25519, true).await;
    let caller = client_on(&n.reg, &[&n.relay], KeyType::Ed25519, true).await;
    server.handle("echo", |req| async move {
        let mut body = format!("from {}: ", req.source).into_bytes();
        body.extend(req.payload);
        Ok(body)
    });
    // Both registered e2e keys, so the payload travels encrypted.
    let twin = server.registrar().get_twin(server.twin_id()).await.unwrap();
    assert!(twin.unwrap().rmb_enc_key.is_some());
    let reply = caller
        .call(server.twin_id(), "echo", b"hello".to_vec(), WAIT)
        .await
        .unwrap();
    // The reply says who answered, with what schema (the request's, by default).
    assert_eq!(reply.source, Address::twin(server.twin_id()));
    assert_eq!(reply.schema.as_deref(), Some(rmb_sdk::DEFAULT_SCHEMA));
    assert_eq!(
        reply.payload,
        format!("from {}: hello", caller.twin_id()).into_bytes()
    );
    // And the other way round.
    caller.handle("ping", |_| async { Ok(b"pong".to_vec()) });
    let reply = server
        .call(caller.twin_id(), "ping", vec![], WAIT)
        .await
        .unwrap();
    assert_eq!(reply.payload, &b"pong"[..]);
}

#[tokio::test]
async fn plain_text_to_a_twin_without_e2e_key() {
    let n = net().await;
    let server = client_on(&n.reg, &[&n.relay], KeyType::Ed25519, false).await;
    let caller = client_on(&n.reg, &[&n.relay], KeyType::Sr25519, true).await;
    let twin = caller
        .registrar()
        .get_twin(server.twin_id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(twin.rmb_enc_key, None);
    server.handle("echo", |req| async move { Ok(req.payload) });
    let reply = caller
        .call(server.twin_id(), "echo", b"clear".to_vec(), WAIT)
        .await
        .unwrap();
    assert_eq!(reply.payload, &b"clear"[..]);
}

#[tokio::test]
async fn many_concurrent_calls_are_matched_by_uid() {
    let n = net().await;
    let server = client_on(&n.reg, &[&n.relay], KeyType::Ed25519, true).await;
    let caller = client_on(&n.reg, &[&n.relay], KeyType::Ed25519, true).await;
    server.handle("double", |req| async move {
        let n: u64 = String::from_utf8(req.payload).unwrap().parse().unwrap();
        // Later requests finish first, so replies come back out of order.
        tokio::time::sleep(Duration::from_millis(100 - n)).await;
        Ok((n * 2).to_string().into_bytes())
    });
    let calls = (0..100u64).map(|i| {
        let caller = caller.clone();
        let server = server.twin_id();
        async move {
            let reply = caller
                .call(server, "double", i.to_string().into_bytes(), WAIT)
                .await
                .unwrap();
            (i, String::from_utf8(reply.payload.to_vec()).unwrap())
        }
    });
    for (i, reply) in futures_util::future::join_all(calls).await {
        assert_eq!(reply, (i * 2).to_string());
    }
}

#[tokio::test]
async fn remote_errors_unknown_commands_and_panics_become_error_replies() {
    let n = net().await;
    let server = client_on(&n.reg, &[&n.relay], KeyType::Sr25519, true).await;
    let caller = client_on(&n.reg, &[&n.relay], KeyType::Sr25519, true).await;
    server.handle("fail", |_| async { Err(HandlerError::new(42, "no way")) });
    server.handle("panic", |_| async { panic!("handler bug") });
    server.handle("ok", |_| async { Ok(b"fine".to_vec()) });
    let to = server.twin_id();
    assert_eq!(
        caller.call(to, "fail", vec![], WAIT).await,
        Err(CallError::Remote {
            code: 42,
            message: "no way".into()
        })
    );
    match caller.call(to, "nope", vec![], WAIT).await {
        Err(CallError::Remote { code, message }) => {
            assert_eq!(code, ErrorCode::Other.code());
            assert!(message.contains("nope"), "{message}");
        }
        other => panic!("expected an unknown command error, got {other:?}"),
    }
    for _ in 0..3 {
        match caller.call(to, "panic", vec![], WAIT).await {
            Err(CallError::Remote { code, .. }) => assert_eq!(code, ErrorCode::Other.code()),
            other => panic!("expected an error reply for a panic, got {other:?}"),
        }
    }
    // The server survived its handler's panics.
    let reply = caller.call(to, "ok", vec![], WAIT).await.unwrap();
    assert_eq!(reply.payload, &b"fine"[..]);
}

#[tokio::test]
async fn calls_time_out_and_unknown_twins_are_reported() {
    let n = net().await;
    let caller = client_on(&n.reg, &[&n.relay], KeyType::Ed25519, true).await;
    // Registered but never connected: the relay queues the request, nobody answers.
    let offline = RawTwin::register(&n.reg, &[&n.relay]).await;
    assert_eq!(
        caller
            .call(offline.id, "x", vec![], Duration::from_millis(300))
            .await,
        Err(CallError::Timeout)
    );
    assert_eq!(
        caller.call(999_999, "x", vec![], WAIT).await,
        Err(CallError::NotSent(SendError::UnknownTwin(999_999)))
    );
}

#[tokio::test]
async fn relay_errors_fail_the_call() {
    let reg = rmb_testkit::TestRegistrar::start().await.unwrap();
    let relay = TestRelay::start_with("127.0.0.1", &reg.url(), None, |c| {
        c.rate_limit.messages = Some(1);
    })
    .await
    .unwrap();
    let caller = client_on(&reg, &[&relay], KeyType::Ed25519, true).await;
    let server = client_on(&reg, &[&relay], KeyType::Ed25519, true).await;
    server.handle("x", |_| async { Ok(vec![]) });
    // One message per window: within three calls one is refused by the relay.
    let mut refused = None;
    for _ in 0..3 {
        if let Err(e) = caller.call(server.twin_id(), "x", vec![], WAIT).await {
            refused = Some(e);
            break;
        }
    }
    match refused {
        Some(CallError::Relay(message)) => assert!(message.contains("rate"), "{message}"),
        other => panic!("expected a relay error, got {other:?}"),
    }
}

#[tokio::test]
async fn duplicate_delivery_over_two_relays_is_handled_once() {
    let reg = rmb_testkit::TestRegistrar::start().await.unwrap();
    let r1 = TestRelay::start("127.0.0.1", &reg.url()).await.unwrap();
    let r2 = TestRelay::start("127.0.0.2", &reg.url()).await.unwrap();
    let server = client_on(&reg, &[&r1, &r2], KeyType::Sr25519, true).await;
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    server.handle("count", move |req| {
        let seen = seen.clone();
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            Ok(req.payload)
        }
    });
    let raw = RawTwin::register(&reg, &[&r1, &r2]).await;
    let mut c1 = raw.connect(&r1).await;
    let mut c2 = raw.connect(&r2).await;
    let request = |uid: &str, body: &[u8]| raw.request(uid, server.twin_id(), "count", body);
    let dup = request("dup-1", b"first");
    c1.send(&dup).await;
    c2.send(&dup).await;
    // A second, distinct request sent after both copies: once its reply is back, both
    // copies of the first have been processed (or dropped).
    let marker = request("marker-1", b"marker");
    c1.send(&marker).await;
    c2.send(&marker).await;
    // A copy that arrives after the first was answered gets the reply kept from it
    // (one arriving while the handler runs is dropped: its sender re-sends later). So
    // there are one or two replies per uid, all the same, and one handler run per uid.
    let mut replies: Vec<Envelope> = Vec::new();
    while !["dup-1", "marker-1"]
        .iter()
        .all(|uid| replies.iter().any(|r| r.uid == *uid))
    {
        let env = tokio::select! {
            e = c1.recv() => e,
            e = c2.recv() => e,
        };
        assert!(matches!(env.message, Some(Message::Response(_))));
        replies.push(env);
    }
    let dup_replies: Vec<_> = replies.iter().filter(|r| r.uid == "dup-1").collect();
    // Copies get the same reply (a kept reply goes out signed again), not a second run.
    for reply in &dup_replies {
        assert_same_reply(reply, dup_replies[0]);
    }
    assert_eq!(count.load(Ordering::SeqCst), 2, "each uid handled once");
}

#[tokio::test]
async fn bad_signatures_are_refused_with_code_104() {
    let n = net().await;
    let server = client_on(&n.reg, &[&n.relay], KeyType::Sr25519, true).await;
    let called = Arc::new(AtomicUsize::new(0));
    let seen = called.clone();
    server.handle("x", move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
        async { Ok(vec![]) }
    });
    let raw = RawTwin::register(&n.reg, &[&n.relay]).await;
    let mut conn = raw.connect(&n.relay).await;
    let mut env = raw.request("forged", server.twin_id(), "x", b"body");
    env.payload = Some(Payload::Plain(b"tampered".to_vec()));
    conn.send(&env).await;
    let reply = conn.recv().await;
    assert_eq!(reply.uid, "forged");
    match &reply.message {
        Some(Message::Error(e)) => assert_eq!(e.code, ErrorCode::BadSignature.code()),
        other => panic!("expected an error reply, got {other:?}"),
    }
    // The error reply itself is signed by the server.
    let twin = n
        .reg
        .client()
        .get_twin(server.twin_id())
        .await
        .unwrap()
        .unwrap();
    envelope::verify(&reply, &twin.public_key).unwrap();
    assert_eq!(called.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_reply_that_does_not_verify_fails_the_call() {
    let n = net().await;
    let caller = client_on(&n.reg, &[&n.relay], KeyType::Ed25519, false).await;
    let raw = RawTwin::register(&n.reg, &[&n.relay]).await;
    let mut conn = raw.connect(&n.relay).await;
    let call = tokio::spawn({
        let caller = caller.clone();
        async move { caller.call(raw.id, "x", b"q".to_vec(), WAIT).await }
    });
    let request = conn.recv().await;
    let mut reply = raw.reply(&request, b"answer", None);
    reply.payload = Some(Payload::Plain(b"forged answer".to_vec()));
    conn.send(&reply).await;
    match call.await.unwrap() {
        Err(CallError::Verification(message)) => {
            assert!(message.contains("signature"), "{message}")
        }
        other => panic!("expected a verification failure, got {other:?}"),
    }
}

// Calls keep working over the surviving relay. (What a dying relay was written but did
// not confirm: replies go again over another link; requests only to the same relay, and
// only if it drops copies: tests/no_double_run.rs.)
#[tokio::test]
async fn calls_fail_over_when_one_of_two_relays_dies() {
    let reg = rmb_testkit::TestRegistrar::start().await.unwrap();
    let mut r1 = TestRelay::start("127.0.0.1", &reg.url()).await.unwrap();
    let r2 = TestRelay::start("127.0.0.3", &reg.url()).await.unwrap();
    let server = client_on(&reg, &[&r1, &r2], KeyType::Sr25519, true).await;
    let caller = client_on(&reg, &[&r1, &r2], KeyType::Ed25519, true).await;
    server.handle("echo", |req| async move { Ok(req.payload) });
    for i in 0..10 {
        let body = format!("before {i}").into_bytes();
        let reply = caller
            .call(server.twin_id(), "echo", body.clone(), WAIT)
            .await
            .unwrap();
        assert_eq!(reply.payload, body);
    }
    r1.shutdown().await;
    // Every call still gets its answer, over the surviving relay.
    for i in 0..10 {
        let body = format!("after {i}").into_bytes();
        let reply = caller
            .call(server.twin_id(), "echo", body.clone(), WAIT)
            .await
            .unwrap();
        assert_eq!(reply.payload, body);
    }
    assert_eq!(caller.connected_relays(), 1);
}

#[tokio::test]
async fn sessions_are_separate_destinations() {
    let n = net().await;
    let secret = random_secret();
    let build = |sid: Option<&str>| {
        rmb_sdk::Client::builder(secret.clone(), KeyType::Sr25519)
            .registrar_client(rmb_testkit::fresh_client(&n.reg.url()).unwrap())
            .relays([n.relay.ws_url()])
            .session(sid.map(str::to_string))
            .pool_config(fast_pool())
            .build()
    };
    let main = build(None).await.unwrap();
    let side = build(Some("side")).await.unwrap();
    assert!(main.wait_connected(1, WAIT).await && side.wait_connected(1, WAIT).await);
    assert_eq!(main.twin_id(), side.twin_id());
    main.handle("who", |_| async { Ok(b"main".to_vec()) });
    side.handle("who", |_| async { Ok(b"side".to_vec()) });
    let caller = client_on(&n.reg, &[&n.relay], KeyType::Ed25519, true).await;
    let who = caller.request(main.twin_id(), "who");
    let reply = who.clone().call().await.unwrap();
    assert_eq!(reply.payload, &b"main"[..]);
    assert_eq!(reply.source, Address::twin(main.twin_id()));
    let reply = who.session("side").call().await.unwrap();
    assert_eq!(reply.payload, &b"side"[..]);
    assert_eq!(reply.source, Address::session(main.twin_id(), "side"));
}

/// A server whose "hold" handlers first call the helper's echo (that reply must get
/// through even while every request slot is taken), report it, then wait for the test to
/// release them.
struct HoldServer {
    server: Client,
    caller: Client,
    started: tokio::sync::mpsc::UnboundedReceiver<bool>,
    release: Arc<tokio::sync::Semaphore>,
    most_running: Arc<AtomicUsize>,
    _helper: Client,
}

impl HoldServer {
    async fn start(n: &Net, max_requests: usize) -> Self {
        let server = Client::builder(random_secret(), KeyType::Ed25519)
            .registrar_client(rmb_testkit::fresh_client(&n.reg.url()).unwrap())
            .relays([n.relay.ws_url()])
            .pool_config(fast_pool())
            .max_concurrent_requests(max_requests)
            .build()
            .await
            .unwrap();
        assert!(server.wait_connected(1, WAIT).await);
        let helper = client_on(&n.reg, &[&n.relay], KeyType::Ed25519, true).await;
        let caller = client_on(&n.reg, &[&n.relay], KeyType::Ed25519, true).await;
        helper.handle("echo", |req| async move { Ok(req.payload) });
        let running = Arc::new(AtomicUsize::new(0));
        let most_running = Arc::new(AtomicUsize::new(0));
        let (started_tx, started) = tokio::sync::mpsc::unbounded_channel();
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let (me, helper_id) = (server.clone(), helper.twin_id());
        let (most, gate) = (most_running.clone(), release.clone());
        server.handle("hold", move |req| {
            let (running, most, gate) = (running.clone(), most.clone(), gate.clone());
            let (me, started_tx) = (me.clone(), started_tx.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let echoed = me.call(helper_id, "echo", req.payload, WAIT).await;
                started_tx.send(echoed.is_ok()).unwrap();
                gate.acquire().await.unwrap().forget();
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(b"done".to_vec())
            }
        });
        HoldServer {
            server,
            caller,
            started,
            release,
            most_running,
            _helper: helper,
        }
    }

    fn call(&self) -> tokio::task::JoinHandle<Result<Reply, CallError>> {
        let (caller, to) = (self.caller.clone(), self.server.twin_id());
        tokio::spawn(async move { caller.call(to, "hold", b"x".to_vec(), WAIT * 2).await })
    }

    /// Waits for `count` handlers to start, each having got its nested reply.
    async fn started(&mut self, count: usize) {
        for _ in 0..count {
            let echoed = tokio::time::timeout(WAIT, self.started.recv())
                .await
                .unwrap();
            assert_eq!(
                echoed,
                Some(true),
                "a nested call failed while slots were full"
            );
        }
    }
}

#[tokio::test]
async fn incoming_requests_are_capped_and_replies_still_flow() {
    let n = net().await;
    let mut hold = HoldServer::start(&n, 2).await;
    let mut calls = vec![hold.call(), hold.call()];
    hold.started(2).await;
    // Both slots are busy: two more wait in the queue instead of running.
    calls.push(hold.call());
    calls.push(hold.call());
    let server = hold.server.clone();
    rmb_testkit::eventually("two requests waiting", WAIT, || {
        server.requests_waiting() == 2
    })
    .await;
    assert!(hold.started.try_recv().is_err(), "a third handler ran");
    hold.release.add_permits(4);
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().payload, &b"done"[..]);
    }
    assert_eq!(hold.most_running.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn requests_beyond_the_queue_get_a_busy_error() {
    use futures_util::stream::{FuturesUnordered, StreamExt as _};

    let n = net().await;
    let mut hold = HoldServer::start(&n, 1).await;
    let first = hold.call();
    hold.started(1).await;
    // The one slot is taken. Of four more requests, one waits for the slot, at most one
    // more fits the queue (of one), and the rest are refused at once.
    let mut more: FuturesUnordered<_> = (0..4).map(|_| hold.call()).collect();
    let is_busy = |outcome: &Result<Reply, CallError>| {
        matches!(outcome, Err(CallError::Remote { code, message })
            if *code == ErrorCode::Other.code() && message.contains("busy"))
    };
    // Nothing can finish normally before the release, so the first two are refusals.
    for _ in 0..2 {
        let outcome = tokio::time::timeout(WAIT, more.next()).await.unwrap();
        let outcome = outcome.unwrap().unwrap();
        assert!(is_busy(&outcome), "expected a busy error, got {outcome:?}");
    }
    hold.release.add_permits(5);
    assert_eq!(first.await.unwrap().unwrap().payload, &b"done"[..]);
    let (mut done, mut busy) = (0, 2);
    while let Some(outcome) = more.next().await {
        match outcome.unwrap() {
            Ok(reply) if reply.payload == b"done"[..] => done += 1,
            outcome if is_busy(&outcome) => busy += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert!(done >= 1, "the request waiting for the slot was not served");
    assert_eq!(done + busy, 4);
}

// With `Resend::Always` (a deployment whose receivers all drop copies), even a receiver
// never heard from gets the same envelope again. (The default policy, and receivers
// that do not de-duplicate: tests/no_double_run.rs.)
#[tokio::test]
async fn with_resend_always_a_request_the_network_lost_is_sent_again_until_answered() {
    let n = net().await;
    let caller = client_with(&n.reg, [n.relay.ws_url()], |b| {
        b.resend(Resend::Always)
            .resend_interval(Duration::from_millis(100))
    })
    .await;
    let raw = RawTwin::register(&n.reg, &[&n.relay]).await;
    let mut conn = raw.connect(&n.relay).await;
    let call = {
        let (caller, to) = (caller.clone(), raw.id);
        tokio::spawn(async move { caller.call(to, "x", b"hi".to_vec(), WAIT).await })
    };
    // The raw twin plays a relay that lost the first copy: it ignores it.
    let first = conn.recv().await;
    let second = conn.recv().await;
    assert!(matches!(first.message, Some(Message::Request(_))));
    assert_signed_again(&first, &second);
    let reply = Outgoing::response(
        first.uid.clone(),
        Address::twin(raw.id),
        Address::twin(caller.twin_id()),
        b"answer".to_vec(),
        None,
        60,
    );
    conn.send(&seal(reply, &raw.signer, None, rmb_core::time::now()))
        .await;
    assert_eq!(call.await.unwrap().unwrap().payload, &b"answer"[..]);
}

#[tokio::test]
async fn a_copy_of_an_answered_request_gets_the_same_reply_without_a_second_run() {
    let n = net().await;
    let server = client_on(&n.reg, &[&n.relay], KeyType::Ed25519, true).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let seen = runs.clone();
    server.handle("count", move |_| {
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok(n.to_string().into_bytes()) }
    });
    let raw = RawTwin::register(&n.reg, &[&n.relay]).await;
    let mut conn = raw.connect(&n.relay).await;
    let request = raw.request("replayed-1", server.twin_id(), "count", b"");
    conn.send(&request).await;
    let first = conn.recv().await;
    // The reply was "lost"; the requester sends the request again, signed anew (the
    // relay drops an exact copy before it reaches the receiver).
    let mut again = request.clone();
    again.timestamp += 1;
    again.expiration -= 1;
    rmb_core::envelope::sign(&mut again, &raw.signer);
    conn.send(&again).await;
    let second = conn.recv().await;
    assert_signed_again(&first, &second);
    match first.message {
        Some(Message::Response(_)) => {}
        other => panic!("expected a response, got {other:?}"),
    }
    // The reply lives only as long as its 60 s request still does.
    let reply_deadline = first.timestamp + first.expiration;
    let request_deadline = request.timestamp + request.expiration;
    assert!(reply_deadline <= request_deadline.max(first.timestamp + 1));
    assert!(first.expiration >= 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran once");
}

#[tokio::test]
async fn a_long_call_still_expires_within_the_replay_window() {
    let n = net().await;
    let caller = client_on(&n.reg, &[&n.relay], KeyType::Ed25519, true).await;
    let raw = RawTwin::register(&n.reg, &[&n.relay]).await;
    let mut conn = raw.connect(&n.relay).await;
    let call = {
        let (caller, to) = (caller.clone(), raw.id);
        let two_hours = Duration::from_secs(7200);
        tokio::spawn(async move { caller.call(to, "slow", vec![], two_hours).await })
    };
    let request = conn.recv().await;
    assert_eq!(request.expiration, rmb_core::time::MAX_TTL);
    call.abort();
}

#[tokio::test]
async fn a_request_larger_than_tungstenites_default_frame_limit_arrives() {
    // Relays write each message as one frame, and tungstenite refuses frames over 16 MiB
    // by default: the SDK must accept frames as large as the messages relays accept
    // (rmb_core::rules::MAX_MESSAGE_SIZE, 64 MiB), or a large request never arrives.
    let (_n, server, caller) = size_service().await;
    let body = vec![b'x'; 20 << 20];
    let reply = caller
        .call(server.twin_id(), "size", body, WAIT)
        .await
        .unwrap();
    assert_eq!(reply.payload, (20usize << 20).to_string().into_bytes());
}

#[tokio::test]
async fn a_request_larger_than_relays_accept_is_refused_before_it_is_sent() {
    let (_n, server, caller) = size_service().await;
    let body = vec![b'x'; rmb_core::rules::MAX_MESSAGE_SIZE];
    let refused = caller.call(server.twin_id(), "size", body, WAIT).await;
    assert!(
        matches!(
            refused,
            Err(CallError::NotSent(SendError::TooLarge { max, .. }))
                if max == rmb_core::rules::MAX_MESSAGE_SIZE
        ),
        "{refused:?}"
    );
    // The connection was not broken by it: the next call goes through.
    let reply = caller
        .call(server.twin_id(), "size", b"small".to_vec(), WAIT)
        .await
        .unwrap();
    assert_eq!(reply.payload, &b"5"[..]);
}

/// A network, a service answering "size" with the request's payload length, and a caller
/// (no e2e: large payloads stay cheap in debug builds).
async fn size_service() -> (Net, Client, Client) {
    let n = net().await;
    let server = client_on(&n.reg, &[&n.relay], KeyType::Ed25519, false).await;
    let caller = client_on(&n.reg, &[&n.relay], KeyType::Ed25519, false).await;
    server.handle("size", |req| async move {
        Ok(req.payload.len().to_string().into_bytes())
    });
    (n, server, caller)
}

//! Nothing we send makes a receiver that does not de-duplicate run a request twice
//! (docs/compatibility.md, "Not running a request twice").
//!
//! The receivers here are raw test-kit twins playing the original rmb-peer, the Go
//! router or the TypeScript client: every copy of a request that reaches them runs
//! their handler again.

mod common;

use std::time::Duration;

use common::*;
use rmb_core::proto::Message;
use rmb_core::{Envelope, KeyType};
use rmb_sdk::{CallError, Client, NotResent, Unconfirmed};
use rmb_testkit::{Proxy, TestRelay};

/// A caller that re-sends unanswered requests after 50 ms (then 100 ms, ...), where
/// its policy allows.
async fn eager_caller(n: &Net) -> Client {
    client_with(&n.reg, [n.relay.ws_url()], |b| {
        b.resend_interval(Duration::from_millis(50))
    })
    .await
}

fn command(env: &Envelope) -> Option<&str> {
    match &env.message {
        Some(Message::Request(r)) => Some(&r.command),
        _ => None,
    }
}

#[tokio::test]
async fn a_receiver_that_does_not_deduplicate_sees_a_slow_request_once() {
    let n = net().await;
    let caller = eager_caller(&n).await;
    let raw = RawTwin::register(&n.reg, &[&n.relay]).await;
    let mut conn = raw.connect(&n.relay).await;
    let slow = {
        let (caller, to) = (caller.clone(), raw.id);
        tokio::spawn(async move {
            caller
                .call(to, "slow", b"once".to_vec(), Duration::from_secs(3))
                .await
        })
    };
    let request = conn.recv().await;
    assert_eq!(command(&request), Some("slow"));
    // The handler takes longer than the caller waits (and longer than every re-send
    // interval): once the call has given up, nothing more of it can be on its way.
    assert_eq!(slow.await.unwrap(), Err(CallError::Timeout));
    conn.send(&raw.reply(&request, b"\"done\"", None)).await;
    // Frames of one link arrive in order: once the marker is here, every copy of the
    // slow request the caller sent before it has arrived too.
    let marker = {
        let (caller, to) = (caller.clone(), raw.id);
        tokio::spawn(async move { caller.call(to, "marker", vec![], WAIT).await })
    };
    let mut copies = 0;
    let marker_request = loop {
        let env = conn.recv().await;
        match command(&env) {
            Some("marker") => break env,
            Some("slow") => copies += 1,
            other => panic!("unexpected envelope {other:?}: {env:?}"),
        }
    };
    assert_eq!(copies, 0, "the slow request ran {} times", copies + 1);
    conn.send(&raw.reply(&marker_request, b"\"done\"", None))
        .await;
    assert!(marker.await.unwrap().is_ok());
}

#[tokio::test]
async fn a_request_a_relay_lost_reaches_a_receiver_that_advertised_dedup() {
    let n = net().await;
    let caller = eager_caller(&n).await;
    let raw = RawTwin::register(&n.reg, &[&n.relay]).await;
    let mut conn = raw.connect(&n.relay).await;
    let call = |command: &'static str| {
        let (caller, to) = (caller.clone(), raw.id);
        tokio::spawn(async move { caller.call(to, command, vec![], WAIT).await })
    };
    // The raw twin plays one of our receivers: its replies say that it drops copies.
    let first = call("first");
    let request = conn.recv().await;
    conn.send(&raw.reply(&request, b"\"done\"", Some("dedup")))
        .await;
    assert!(first.await.unwrap().is_ok());
    // Now it plays a relay that lost the first copy of the next request.
    let second = call("second");
    let lost = conn.recv().await;
    let again = conn.recv().await;
    assert_eq!(command(&lost), Some("second"));
    assert_signed_again(&lost, &again);
    conn.send(&raw.reply(&again, b"\"done\"", Some("dedup")))
        .await;
    assert!(second.await.unwrap().is_ok());
}

#[tokio::test]
async fn replies_say_that_the_receiver_drops_copies() {
    let n = net().await;
    let server = client_on(&n.reg, &[&n.relay], KeyType::Sr25519, true).await;
    server.handle("echo", |req| async move { Ok(req.payload) });
    let raw = RawTwin::register(&n.reg, &[&n.relay]).await;
    let mut conn = raw.connect(&n.relay).await;
    conn.send(&raw.request("tagged-1", server.twin_id(), "echo", b"{}"))
        .await;
    conn.send(&raw.request("tagged-2", server.twin_id(), "nope", b"{}"))
        .await;
    let twin = n.reg.client().get_twin(server.twin_id()).await.unwrap();
    let key = twin.unwrap().public_key;
    for _ in 0..2 {
        let reply = conn.recv().await;
        let tags = reply.tags.as_deref().unwrap_or_default();
        assert!(
            tags.split([',', ' ']).any(|t| t == "dedup"),
            "reply {} has tags {tags:?}",
            reply.uid
        );
        rmb_core::envelope::verify(&reply, &key).unwrap();
    }
}

/// A request body big enough that the proxy having swallowed this many bytes means the
/// request (not just pings) went into the black hole.
const BIG: usize = 20_000;

/// A relay on `ip` registered under the names `names` (proxies and stand-ins in front
/// of it, bound before it starts); returns it once `proxies` forward to it.
async fn relay_named(
    reg: &rmb_testkit::TestRegistrar,
    ip: &str,
    names: &[std::net::SocketAddr],
    proxies: &[&Proxy],
    drops_copies: bool,
) -> TestRelay {
    let domains = names.iter().map(|a| a.to_string()).collect();
    // A relay that remembers nothing stands in for the original relay: it does not
    // advertise `rmb-dedup: 1`.
    let relay = TestRelay::start_with(ip, &reg.url(), Some(domains), |c| {
        if !drops_copies {
            c.dedup_capacity = 0;
        }
    })
    .await
    .unwrap();
    for proxy in proxies {
        proxy.set_target(relay.addr());
        proxy.heal();
    }
    relay
}

fn spawn_call(
    caller: &Client,
    to: u32,
    command: &'static str,
    body: Vec<u8>,
) -> tokio::task::JoinHandle<Result<Vec<u8>, CallError>> {
    let caller = caller.clone();
    tokio::spawn(async move { caller.call(to, command, body, WAIT * 2).await })
}

/// Partitions `proxy` (the caller's only link) and calls `x` on `to`: returns once the
/// request was written into the black hole.
async fn call_into_black_hole(
    caller: &Client,
    to: u32,
    proxy: &Proxy,
) -> tokio::task::JoinHandle<Result<Vec<u8>, CallError>> {
    proxy.partition();
    let before = proxy.swallowed();
    let call = spawn_call(caller, to, "x", vec![b'x'; BIG]);
    rmb_testkit::eventually("the request went into the black hole", WAIT, || {
        proxy.swallowed() >= before + BIG
    })
    .await;
    call
}

/// Receives the next envelope, which must be a request for `expected`, and answers it.
async fn answer(raw: &RawTwin, conn: &mut rmb_testkit::RawConn, expected: &str) {
    let env = conn.recv().await;
    assert_eq!(command(&env), Some(expected), "envelope {}", env.uid);
    conn.send(&raw.reply(&env, b"\"done\"", None)).await;
}

#[tokio::test]
async fn a_request_a_relay_may_have_got_is_not_sent_again_where_copies_are_not_dropped() {
    let reg = rmb_testkit::TestRegistrar::start().await.unwrap();
    let proxy = Proxy::bind("127.0.0.1").await.unwrap();
    let relay = relay_named(&reg, "127.0.0.1", &[proxy.addr()], &[&proxy], false).await;
    let caller = client_with(&reg, [format!("ws://{}", proxy.addr())], |b| b).await;
    let raw = RawTwin::register(&reg, &[&relay]).await;
    let mut conn = raw.connect(&relay).await;
    let call = call_into_black_hole(&caller, raw.id, &proxy).await;
    // The link breaks before the relay confirmed the request; the caller reconnects to
    // the same relay, which does not say that it drops copies.
    proxy.heal();
    // It fails at once, saying why (rather than timing out).
    match call.await.unwrap() {
        Err(CallError::Unconfirmed(Unconfirmed::MaybeDelivered { relay, why })) => {
            assert_eq!(relay, format!("ws://{}", proxy.addr()));
            assert_eq!(why, NotResent::RelayKeepsCopies);
        }
        other => panic!("expected an unconfirmed request, got {other:?}"),
    }
    // Once the marker is here, a copy sent before it would be too.
    let marker = spawn_call(&caller, raw.id, "marker", vec![]);
    answer(&raw, &mut conn, "marker").await;
    assert!(marker.await.unwrap().is_ok());
}

#[tokio::test]
async fn a_request_a_relay_may_have_got_goes_again_only_to_that_relay_when_it_drops_copies() {
    let reg = rmb_testkit::TestRegistrar::start().await.unwrap();
    // r1 is known by two names: `direct` (the receiver's, never cut) and a stand-in
    // that says it drops copies in front of `cut`, a proxy that can be partitioned
    // (the caller's). r2 is behind `p2`, down at first.
    let direct = Proxy::bind("127.0.0.1").await.unwrap();
    let cut = Proxy::bind("127.0.0.1").await.unwrap();
    let dedup = advertising_dedup(cut.addr()).await;
    let r1 = relay_named(
        &reg,
        "127.0.0.1",
        &[direct.addr(), dedup],
        &[&direct, &cut],
        true,
    )
    .await;
    let p2 = Proxy::bind("127.0.0.6").await.unwrap();
    let r2 = relay_named(&reg, "127.0.0.6", &[p2.addr()], &[], true).await;
    let urls = [format!("ws://{dedup}"), format!("ws://{}", p2.addr())];
    let caller = client_with(&reg, urls, |b| b).await;
    // The receiver lives on r1: what goes through r2 reaches it by federation.
    let raw = RawTwin::register(&reg, &[&r1]).await;
    let mut conn = raw.connect(&r1).await;
    let call = call_into_black_hole(&caller, raw.id, &cut).await;
    // r2 comes up; then the link to r1 is found dead, the request unconfirmed.
    p2.set_target(r2.addr());
    p2.heal();
    assert!(caller.wait_connected(2, WAIT).await);
    let c = caller.clone();
    rmb_testkit::eventually("the link to r1 is dropped", WAIT, move || {
        c.connected_relays() == 1
    })
    .await;
    // The request waits for r1: a marker sent now goes through r2 and arrives first.
    let marker = spawn_call(&caller, raw.id, "marker", vec![]);
    answer(&raw, &mut conn, "marker").await;
    // r1 is back and drops copies: the request goes to it again, and arrives once.
    cut.heal();
    answer(&raw, &mut conn, "x").await;
    assert!(call.await.unwrap().is_ok());
    // (The marker's reply went to the caller's frozen session on r1 and is lost.)
    marker.abort();
    let marker = spawn_call(&caller, raw.id, "marker", vec![]);
    answer(&raw, &mut conn, "marker").await;
    assert!(marker.await.unwrap().is_ok());
}

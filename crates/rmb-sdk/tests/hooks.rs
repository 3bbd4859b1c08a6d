//! The hooks a gateway builds durability on (design D6): a send that tells when a relay
//! confirmed it, and a receiver memory it can keep where a restart does not lose it.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use common::*;
use rmb_core::peer_api::ErrorCode;
use rmb_core::proto::Message;
use rmb_core::{Address, KeyType};
use rmb_sdk::memory::{EnvelopeKeys, HashKey, ReplyKey};
use rmb_sdk::{Client, InMemory, Memory, MemoryError, Outgoing};
use rmb_testkit::{TestRegistrar, TestRelay};

/// A server of `secret` on `relays` that counts its runs of `count`, remembering in
/// `memory`.
async fn counting_server(
    reg: &TestRegistrar,
    relays: &[&TestRelay],
    secret: &str,
    memory: Arc<dyn Memory>,
) -> (Client, Arc<AtomicUsize>) {
    let server = Client::builder(secret, KeyType::Sr25519)
        .registrar_client(rmb_testkit::fresh_client(&reg.url()).unwrap())
        .relays(relays.iter().map(|r| r.ws_url()))
        .pool_config(fast_pool())
        .memory(memory)
        .build()
        .await
        .unwrap();
    assert!(server.wait_connected(relays.len(), WAIT).await);
    let runs = Arc::new(AtomicUsize::new(0));
    let seen = runs.clone();
    server.handle("count", move |_| {
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok(n.to_string().into_bytes()) }
    });
    (server, runs)
}

#[tokio::test]
async fn a_memory_kept_across_a_restart_answers_a_copy_without_a_second_run() {
    let reg = TestRegistrar::start().await.unwrap();
    let r1 = TestRelay::start("127.0.0.1", &reg.url()).await.unwrap();
    let r2 = TestRelay::start("127.0.0.7", &reg.url()).await.unwrap();
    // What survives the restart: a gateway would keep this in Redis.
    let kept: Arc<dyn Memory> = Arc::new(InMemory::default());
    let secret = random_secret();
    let (server, runs) = counting_server(&reg, &[&r1, &r2], &secret, kept.clone()).await;
    let raw = RawTwin::register(&reg, &[&r1, &r2]).await;
    let (mut c1, mut c2) = (raw.connect(&r1).await, raw.connect(&r2).await);
    let request = raw.request("survivor-1", server.twin_id(), "count", b"");
    c1.send(&request).await;
    let first = tokio::select! { e = c1.recv() => e, e = c2.recv() => e };
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    server.shutdown();
    drop(server);
    let (restarted, runs_after) = counting_server(&reg, &[&r1, &r2], &secret, kept).await;
    // The copy goes through the other relay (which has not seen it, so it passes it on).
    c2.send(&request).await;
    // The server answers over either relay.
    let again = tokio::select! { e = c1.recv() => e, e = c2.recv() => e };
    // The copy gets the reply kept before the restart (signed again).
    assert_signed_again(&first, &again);
    assert_same_reply(&first, &again);
    assert_eq!(
        runs_after.load(Ordering::SeqCst),
        0,
        "the handler ran again"
    );
    drop(restarted);
}

/// A memory whose store is down.
struct Broken;

#[async_trait]
impl Memory for Broken {
    fn hash_key(&self) -> HashKey {
        HashKey::from_bytes(&[0; 64])
    }
    async fn first_time(&self, _: EnvelopeKeys, _: u64, _: u64) -> Result<bool, MemoryError> {
        Err(MemoryError::new("store is down"))
    }
    async fn keep_reply(&self, _: ReplyKey, _: Bytes, _: u64, _: u64) -> Result<(), MemoryError> {
        Err(MemoryError::new("store is down"))
    }
    async fn reply(&self, _: ReplyKey, _: u64) -> Result<Option<Bytes>, MemoryError> {
        Err(MemoryError::new("store is down"))
    }
}

#[tokio::test]
async fn a_memory_that_fails_refuses_requests_rather_than_risk_a_second_run() {
    let n = net().await;
    let (server, runs) =
        counting_server(&n.reg, &[&n.relay], &random_secret(), Arc::new(Broken)).await;
    let raw = RawTwin::register(&n.reg, &[&n.relay]).await;
    let mut conn = raw.connect(&n.relay).await;
    conn.send(&raw.request("unsure-1", server.twin_id(), "count", b""))
        .await;
    let reply = conn.recv().await;
    match &reply.message {
        Some(Message::Error(e)) => {
            assert_eq!(e.code, ErrorCode::Other.code());
            assert!(e.message.contains("already handled"), "{}", e.message);
        }
        other => panic!("expected an error reply, got {other:?}"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_send_tells_when_the_relay_confirmed_it() {
    let n = net().await;
    let caller = client_on(&n.reg, &[&n.relay], KeyType::Ed25519, false).await;
    let raw = RawTwin::register(&n.reg, &[&n.relay]).await;
    let mut conn = raw.connect(&n.relay).await;
    let out = Outgoing::request(
        "confirmed-1",
        caller.address().clone(),
        Address::twin(raw.id),
        "x",
        b"{}".to_vec(),
        60,
    );
    let sent = caller.send(out).await.unwrap();
    assert_eq!(sent.uid(), "confirmed-1");
    assert_eq!(sent.confirmed().await, Ok(()));
    assert_eq!(conn.recv().await.uid, "confirmed-1");
}

//! The registrar goes away (stopped, or black-holed so requests to it hang): twins
//! that are connected and have looked each other up keep talking, from the last records
//! their registrar clients kept (no fresh cache at all here, so every lookup meets the
//! outage);
//! a twin the relay has not seen yet is refused clearly, not left hanging, and can
//! connect once the registrar is back.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rmb_core::proto::Message;
use rmb_core::{jwt, KeyType};
use rmb_registrar_client::{ClientConfig, RegistrarClient};
use rmb_sdk::Client;
use rmb_testkit::{Proxy, RawConn, TestRegistrar, TestRelay};

const SCENARIO: Duration = Duration::from_secs(60);

/// A registrar client that asks the registrar on every lookup (so only its last-known
/// fallback can carry traffic through the outage), with a short request timeout so a
/// black-holed registrar fails lookups quickly.
fn caching_client(url: &str) -> RegistrarClient {
    RegistrarClient::with_config(
        url,
        ClientConfig {
            timeout: Duration::from_millis(300),
            cache_ttl: Duration::ZERO,
            negative_ttl: Duration::from_millis(1),
            ..Default::default()
        },
    )
    .unwrap()
}

async fn caching_sdk_client(registrar: &str, relay: &TestRelay) -> Client {
    let client = Client::builder(random_secret(), KeyType::Ed25519)
        .registrar_client(caching_client(registrar))
        .relays([relay.ws_url()])
        .pool_config(fast_pool())
        .build()
        .await
        .unwrap();
    assert!(client.wait_connected(1, WAIT).await);
    client
}

async fn echo_three_times(caller: &Client, to: u32, tag: &str) {
    for i in 0..3 {
        let body = format!("{tag} {i}").into_bytes();
        let reply = caller.call(to, "echo", body.clone(), WAIT).await;
        assert_eq!(reply.as_deref(), Ok(&body[..]), "{tag} {i}");
    }
}

fn token(twin: &RawTwin) -> String {
    jwt::create(&twin.signer, twin.id, None, rmb_core::time::now(), 60)
}

/// The relay cannot check `twin` now: a 503 saying why, without internal details.
async fn assert_refused_for_now(relay: &TestRelay, twin: &RawTwin) {
    let refusal = RawConn::refused(relay.addr(), &token(twin)).await;
    assert_eq!(refusal.status, 503, "{refusal:?}");
    assert!(
        refusal.body.contains("registrar is unavailable") && !refusal.body.contains("http"),
        "{refusal:?}"
    );
}

#[tokio::test]
async fn cached_twins_keep_talking_and_new_twins_are_refused_until_the_registrar_is_back() {
    tokio::time::timeout(SCENARIO, async {
        let mut reg = TestRegistrar::start().await.unwrap();
        // Everyone reaches the registrar through a proxy that can black-hole it.
        let proxy = Proxy::start("127.0.0.1", reg.addr()).await.unwrap();
        let registrar = format!("http://{}", proxy.addr());
        let relay =
            TestRelay::start_with_client("127.0.0.1", caching_client(&registrar), None, |_| {})
                .await
                .unwrap();
        let server = caching_sdk_client(&registrar, &relay).await;
        let caller = caching_sdk_client(&registrar, &relay).await;
        let handled = Arc::new(AtomicUsize::new(0));
        let count = handled.clone();
        server.handle("echo", move |req| {
            count.fetch_add(1, Ordering::SeqCst);
            async move { Ok(req.payload) }
        });
        // Registered (and not yet seen by the relay) while the registrar is up.
        let newcomer = RawTwin::register(&reg, &[&relay]).await;
        echo_three_times(&caller, server.twin_id(), "warm-up").await;

        // (1) Black-holed: lookups hang until the client's timeout.
        proxy.partition();
        echo_three_times(&caller, server.twin_id(), "black-holed").await;
        assert_refused_for_now(&relay, &newcomer).await;

        // (2) Stopped: lookups are refused at once.
        proxy.heal();
        reg.shutdown().await.unwrap();
        echo_three_times(&caller, server.twin_id(), "stopped").await;
        assert_refused_for_now(&relay, &newcomer).await;
        assert_eq!(
            relay.open_connections(),
            2,
            "refusals must not leak sessions"
        );
        assert_eq!(
            relay.metrics().labelled(
                "rmb_relay_auth_failures_total",
                "reason=\"registrar_unavailable\""
            ),
            2
        );
        assert_eq!(handled.load(Ordering::SeqCst), 9);

        // Back: the newcomer connects and is served (the server looks it up afresh).
        reg.restart().await.unwrap();
        let mut conn = RawConn::connect(relay.addr(), &token(&newcomer))
            .await
            .unwrap();
        let request = newcomer.request("newcomer-1", server.twin_id(), "echo", b"hello again");
        conn.send(&request).await;
        let reply = conn.recv().await;
        assert_eq!(reply.uid, "newcomer-1");
        assert!(
            matches!(reply.message, Some(Message::Response(_))),
            "{reply:?}"
        );
        echo_three_times(&caller, server.twin_id(), "after").await;
    })
    .await
    .expect("the registrar-down scenario took too long");
}

//! Shared setup for the SDK integration tests: a real registrar and relays from
//! rmb-testkit, clients with fresh random identities, and a raw WebSocket twin for
//! sending hand-made envelopes.

#![allow(dead_code)]

mod hostile;
#[allow(unused_imports)]
pub(crate) use hostile::HostileRelay;

use std::time::Duration;

use rmb_core::{Envelope, KeyType};
use rmb_sdk::{Client, ClientBuilder, PoolConfig};
use rmb_testkit::{TestRegistrar, TestRelay};

/// Longest a test waits for any one event.
pub(crate) const WAIT: Duration = Duration::from_secs(15);

pub(crate) fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("0x{hex}")
}

/// Fast reconnects and pings so fault tests finish quickly.
pub(crate) fn fast_pool() -> PoolConfig {
    PoolConfig {
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        ping_interval: Duration::from_millis(500),
        dead_after: Duration::from_secs(3),
        ..PoolConfig::default()
    }
}

pub(crate) async fn client_on(
    reg: &TestRegistrar,
    relays: &[&TestRelay],
    key_type: KeyType,
    e2e: bool,
) -> Client {
    let client = Client::builder(random_secret(), key_type)
        .registrar_client(rmb_testkit::fresh_client(&reg.url()).unwrap())
        .relays(relays.iter().map(|r| r.ws_url()))
        .e2e(e2e)
        .pool_config(fast_pool())
        .build()
        .await
        .unwrap();
    assert!(
        client.wait_connected(relays.len(), WAIT).await,
        "client did not connect to its relays"
    );
    client
}

/// A client of `reg` connected to the relays at `urls` (at least one of them), built
/// with fast pool timing and whatever else `tweak` sets.
pub(crate) async fn client_with(
    reg: &TestRegistrar,
    urls: impl IntoIterator<Item = String>,
    tweak: impl FnOnce(ClientBuilder) -> ClientBuilder,
) -> Client {
    let builder = Client::builder(random_secret(), KeyType::Ed25519)
        .registrar_client(rmb_testkit::fresh_client(&reg.url()).unwrap())
        .relays(urls)
        .pool_config(fast_pool());
    let client = tweak(builder).build().await.unwrap();
    assert!(
        client.wait_connected(1, WAIT).await,
        "client did not connect"
    );
    client
}

/// The common setup: a registrar and one relay.
pub(crate) struct Net {
    pub reg: TestRegistrar,
    pub relay: TestRelay,
}

pub(crate) async fn net() -> Net {
    let reg = TestRegistrar::start().await.unwrap();
    let relay = TestRelay::start("127.0.0.1", &reg.url()).await.unwrap();
    Net { reg, relay }
}

/// A twin driven by hand over raw WebSockets (one definition in the test kit).
pub(crate) use rmb_testkit::RawTwin;

/// Stands in for a relay that drops copies until ours says so itself: forwards TCP to
/// `target` and adds `rmb-dedup: 1` to the HTTP response head (the WebSocket upgrade),
/// byte for byte otherwise. Returns its address.
pub(crate) async fn advertising_dedup(target: std::net::SocketAddr) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                let upstream = tokio::io::copy(&mut client_rx, &mut server_tx);
                let downstream = async {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    let end = loop {
                        let n = server_rx.read(&mut buf).await?;
                        if n == 0 {
                            return Ok::<_, std::io::Error>(());
                        }
                        head.extend_from_slice(&buf[..n]);
                        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 2;
                        }
                    };
                    head.splice(end..end, b"rmb-dedup: 1\r\n".iter().copied());
                    client_tx.write_all(&head).await?;
                    tokio::io::copy(&mut server_rx, &mut client_tx).await?;
                    Ok(())
                };
                tokio::select! {
                    _ = upstream => {}
                    _ = downstream => {}
                }
            });
        }
    });
    addr
}

/// A timed re-send is the same request (uid, addresses, payload, deadline) signed again,
/// so that a relay which dropped exact copies lets it through to the receiver.
pub(crate) fn assert_signed_again(first: &Envelope, again: &Envelope) {
    assert_eq!(again.uid, first.uid);
    assert_eq!(again.payload, first.payload);
    assert_eq!(
        again.timestamp + again.expiration,
        first.timestamp + first.expiration,
        "the deadline is kept"
    );
    assert_ne!(again.signature, first.signature, "signed again");
}

/// Two envelopes are the same reply (one may be the kept reply sent again, signed anew):
/// same uid, kind, addresses and payload.
pub(crate) fn assert_same_reply(a: &Envelope, b: &Envelope) {
    assert_eq!(
        (&a.uid, &a.message, &a.source, &a.destination, &a.payload),
        (&b.uid, &b.message, &b.source, &b.destination, &b.payload),
        "the same reply"
    );
}

//! The SDK against a stranger's relay and hostile twins (issue 12): what arrives is
//! chosen by an attacker, and each attack costs bounded memory and tasks, is refused
//! with the §4 code that fits, or is harmless.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rmb_core::proto::{Message, Request, Response};
use rmb_core::{Address, Envelope, KeyType};
use rmb_registrar_client::{ClientConfig, RegistrarClient};
use rmb_sdk::{Client, ClientBuilder};
use rmb_testkit::{Proxy, TestRegistrar};

/// A registrar that knows nobody and takes `delay` to say so (each lookup holds a
/// connection for that long, then it is closed). Returns its address.
async fn slow_empty_registrar(delay: Duration) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                tokio::time::sleep(delay).await;
                let body = r#"{"error":"account not found"}"#;
                let answer = format!(
                    "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

/// A client (tuned by `tweak`) on a stranger's relay, whose lookups go through a proxy
/// to a registrar that answers in 200 ms that it knows nobody, except the raw twin it
/// looked up before (kept in its cache): the setting of a flood from twins that do not
/// exist, each costing a slow lookup.
struct Flooded {
    relay: HostileRelay,
    client: Client,
    raw: RawTwin,
    // Kept alive until the end of the test (moved out of with the other fields).
    _reg: TestRegistrar,
    _proxy: Proxy,
}

impl Flooded {
    async fn start(tweak: impl FnOnce(ClientBuilder) -> ClientBuilder) -> Self {
        let reg = TestRegistrar::start().await.unwrap();
        let proxy = Proxy::start("127.0.0.1", reg.addr()).await.unwrap();
        let relay = HostileRelay::start().await;
        let registrar = RegistrarClient::with_config(
            &format!("http://{}", proxy.addr()),
            ClientConfig {
                negative_ttl: Duration::from_millis(1),
                ..Default::default()
            },
        )
        .unwrap();
        let builder = Client::builder(random_secret(), KeyType::Ed25519)
            .registrar_client(registrar)
            .relays([relay.url()])
            .pool_config(fast_pool());
        let client = tweak(builder).build().await.unwrap();
        assert!(client.wait_connected(1, WAIT).await);
        let raw = RawTwin::register(&reg, &[]).await;
        client.registrar().get_twin(raw.id).await.unwrap().unwrap();
        proxy.set_target(slow_empty_registrar(Duration::from_millis(200)).await);
        // Closes the connections the registrar client keeps alive: every lookup from
        // now on meets the slow registrar.
        proxy.partition();
        proxy.heal();
        Flooded {
            relay,
            client,
            raw,
            _reg: reg,
            _proxy: proxy,
        }
    }
}

/// The most tasks alive at once in this runtime while `work` runs.
async fn peak_tasks(work: impl std::future::Future<Output = ()>) -> usize {
    let runtime = tokio::runtime::Handle::current().metrics();
    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(runtime.num_alive_tasks(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::timeout(Duration::from_secs(120), work)
        .await
        .expect("the flood took too long");
    sampler.abort();
    peak.load(Ordering::Relaxed)
}

/// An envelope from `twin` (who does not exist) to `to`, with a well-formed but
/// meaningless signature: checking it needs a registrar lookup.
fn stray(uid: String, twin: u32, to: &Address, message: Message) -> Envelope {
    let mut signature = vec![b'e'];
    signature.extend([7u8; 64]);
    Envelope {
        uid,
        timestamp: rmb_core::time::now(),
        expiration: 60,
        source: Some(Address::twin(twin)),
        destination: Some(to.clone()),
        message: Some(message),
        signature: Some(signature),
        ..Default::default()
    }
}

const FLOOD: u32 = 1500;

#[tokio::test]
async fn a_flood_of_replies_from_unknown_twins_costs_a_bounded_number_of_tasks() {
    let flooded = Flooded::start(|b| b).await;
    let (mut relay, client, raw) = (flooded.relay, flooded.client, flooded.raw);
    client.handle("marker", |_| async { Ok(b"{}".to_vec()) });
    let me = client.address().clone();
    let peak = peak_tasks(async move {
        for i in 0..FLOOD {
            let reply = Message::Response(Response {});
            let env = stray(format!("flood-{i}"), 1_000_000 + i, &me, reply);
            relay.inject_envelope(&env).await;
        }
        let marker = raw.request("marker-1", client.twin_id(), "marker", b"{}");
        relay.inject_envelope(&marker).await;
        // Frames are handled in order: once the marker is answered, the flood was too.
        let reply = relay.recv_uid("marker-1").await;
        assert!(
            matches!(reply.message, Some(Message::Response(_))),
            "{reply:?}"
        );
    })
    .await;
    assert!(
        peak < (FLOOD / 2) as usize,
        "{peak} tasks alive at once for {FLOOD} stray replies"
    );
}

#[tokio::test]
async fn a_flood_of_requests_beyond_the_queue_costs_a_bounded_number_of_refusals() {
    let flooded = Flooded::start(|b| b.max_concurrent_requests(1)).await;
    let (mut relay, client, raw) = (flooded.relay, flooded.client, flooded.raw);
    let me = client.address().clone();
    let call = {
        let client = client.clone();
        let to = raw.id;
        tokio::spawn(async move { client.call(to, "marker", b"{}".to_vec(), WAIT * 4).await })
    };
    let peak = peak_tasks(async move {
        let request = relay.recv().await;
        for i in 0..FLOOD {
            let work = Message::Request(Request {
                command: "work".into(),
            });
            let env = stray(format!("flood-{i}"), 1_000_000 + i, &me, work);
            relay.inject_envelope(&env).await;
        }
        // The reply comes after the flood: once the call has it, the flood was handled.
        relay
            .inject_envelope(&raw.reply(&request, b"{}", None))
            .await;
        assert_eq!(call.await.unwrap().unwrap(), b"{}");
    })
    .await;
    assert!(
        peak < (FLOOD / 2) as usize,
        "{peak} tasks alive at once for {FLOOD} requests from nobody"
    );
}

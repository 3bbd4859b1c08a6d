//! Harness for relay integration tests: a real registrar (rmb-testkit), relays started
//! in-process on real sockets, and a minimal WebSocket client speaking the protocol.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rmb_core::prost::Message as _;
use rmb_core::proto::{Message, Payload, Request, Response};
use rmb_core::{envelope, jwt, Address, Envelope, KeyType, Signer};
use rmb_registrar_client::RegistrarClient;
use rmb_relay::Config;
use rmb_testkit::{RawConn, TestRelay};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

/// Longest a test waits for an event before failing.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// A relay on `ip` (a 127.0.0.x address) whose domain is its own `ip:port`.
pub(crate) async fn start_relay(
    ip: &str,
    registrar: &str,
    tweak: impl FnOnce(&mut Config),
) -> TestRelay {
    TestRelay::start_with(ip, registrar, None, tweak)
        .await
        .unwrap()
}

/// A relay instance serving `domains` (several instances may share them over Redis).
pub(crate) async fn start_relay_for(
    domains: Vec<String>,
    registrar: &str,
    tweak: impl FnOnce(&mut Config),
) -> TestRelay {
    TestRelay::start_with("127.0.0.1", registrar, Some(domains), tweak)
        .await
        .unwrap()
}

pub(crate) fn test_client(registrar: &str) -> RegistrarClient {
    rmb_testkit::fresh_client(registrar).unwrap()
}

pub(crate) struct Twin {
    pub id: u32,
    pub signer: Signer,
}

static SEED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// Registers a fresh twin reachable on `relays`.
pub(crate) async fn twin(registrar: &str, key_type: KeyType, relays: &[String]) -> Twin {
    let n = SEED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut seed = rand::random::<[u8; 32]>();
    seed[..4].copy_from_slice(&n.to_be_bytes());
    let signer = Signer::from_seed(&seed, key_type).unwrap();
    let account = test_client(registrar)
        .create_account(&signer, relays, None)
        .await
        .unwrap();
    Twin {
        id: account.twin_id,
        signer,
    }
}

pub(crate) fn domain(relay: &TestRelay) -> String {
    relay.domain()
}

pub(crate) fn token(twin: &Twin, sid: Option<&str>) -> String {
    jwt::create(&twin.signer, twin.id, sid, rmb_core::time::now(), 60)
}

/// A raw connection to the relay (the test kit's), whose [`Conn::recv`] also returns
/// pongs: these tests check the relay's answers to pings.
pub(crate) struct Conn {
    pub raw: RawConn,
}

/// Connects with a valid token.
pub(crate) async fn connect(relay: SocketAddr, twin: &Twin, sid: Option<&str>) -> Conn {
    connect_with(relay, &token(twin, sid)).await.unwrap()
}

pub(crate) async fn connect_with(
    relay: SocketAddr,
    query: &str,
) -> Result<Conn, tungstenite::Error> {
    Ok(Conn {
        raw: RawConn::connect(relay, query).await?,
    })
}

/// The HTTP status a refused connection attempt got.
pub(crate) async fn refused_status(relay: SocketAddr, query: &str) -> u16 {
    RawConn::refused(relay, query).await.status
}

impl Conn {
    pub(crate) async fn send(&mut self, env: &Envelope) {
        self.raw.send(env).await;
    }

    pub(crate) async fn send_raw(&mut self, msg: WsMessage) {
        self.raw.ws.send(msg).await.unwrap();
    }

    /// The next envelope, pongs included; fails the test if none arrives within [`WAIT`].
    pub(crate) async fn recv(&mut self) -> Envelope {
        loop {
            let msg = tokio::time::timeout(WAIT, self.raw.ws.next())
                .await
                .expect("timed out waiting for an envelope")
                .expect("connection ended")
                .expect("websocket error");
            match msg {
                WsMessage::Binary(data) => return Envelope::decode(&data[..]).unwrap(),
                WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
                other => panic!("expected a binary frame, got {other:?}"),
            }
        }
    }

    /// Waits for the relay to close the connection; returns its close frame.
    pub(crate) async fn recv_close(&mut self) -> Option<CloseFrame> {
        self.raw.recv_close().await
    }
}

/// A signed request from `from` to `to`.
pub(crate) fn request(from: &Twin, to: Address, command: &str, body: &[u8]) -> Envelope {
    let mut env = Envelope {
        uid: uuid(),
        timestamp: rmb_core::time::now(),
        expiration: 60,
        source: Some(Address::twin(from.id)),
        destination: Some(to),
        message: Some(Message::Request(Request {
            command: command.into(),
        })),
        payload: Some(Payload::Plain(body.to_vec())),
        ..Default::default()
    };
    envelope::sign(&mut env, &from.signer);
    env
}

/// A signed response to `req`.
pub(crate) fn response(from: &Twin, req: &Envelope, body: &[u8]) -> Envelope {
    let mut env = Envelope {
        uid: req.uid.clone(),
        timestamp: rmb_core::time::now(),
        expiration: 60,
        source: Some(Address::twin(from.id)),
        destination: req.source.clone(),
        message: Some(Message::Response(Response {})),
        payload: Some(Payload::Plain(body.to_vec())),
        ..Default::default()
    };
    envelope::sign(&mut env, &from.signer);
    env
}

pub(crate) fn uuid() -> String {
    format!("{:032x}", rand::random::<u128>())
}

pub(crate) fn plain(env: &Envelope) -> &[u8] {
    match &env.payload {
        Some(Payload::Plain(p)) => p,
        _ => panic!("no plain payload in {env:?}"),
    }
}

/// The relay error message of an error envelope.
pub(crate) fn relay_error(env: &Envelope) -> &str {
    match &env.message {
        Some(Message::Error(e)) if env.source.is_none() => &e.message,
        other => panic!("expected a relay error, got {other:?}"),
    }
}

/// Polls `check` until true; fails the test after [`WAIT`].
pub(crate) async fn eventually(what: &str, check: impl FnMut() -> bool) {
    rmb_testkit::eventually(what, WAIT, check).await
}

/// A registrar on a free port with its own SQLite file (from the test kit).
pub(crate) async fn registrar() -> rmb_testkit::TestRegistrar {
    rmb_testkit::TestRegistrar::start().await.unwrap()
}

/// The common setup: a registrar, one relay on 127.0.0.1 and two twins (ed25519)
/// registered on it.
pub(crate) struct OneRelay {
    pub reg: rmb_testkit::TestRegistrar,
    pub relay: TestRelay,
    pub a: Twin,
    pub b: Twin,
}

pub(crate) async fn one_relay(tweak: impl FnOnce(&mut Config)) -> OneRelay {
    let reg = registrar().await;
    let relay = start_relay("127.0.0.1", &reg.url(), tweak).await;
    let relays = vec![domain(&relay)];
    let a = twin(&reg.url(), KeyType::Ed25519, &relays).await;
    let b = twin(&reg.url(), KeyType::Ed25519, &relays).await;
    OneRelay { reg, relay, a, b }
}

impl OneRelay {
    pub(crate) fn addr(&self) -> SocketAddr {
        self.relay.addr()
    }

    /// Another twin on the same relay.
    pub(crate) async fn twin(&self) -> Twin {
        twin(&self.reg.url(), KeyType::Ed25519, &[domain(&self.relay)]).await
    }
}

/// An envelope ping from `twin`'s default session.
pub(crate) fn ping(twin: &Twin) -> Envelope {
    Envelope {
        uid: uuid(),
        source: Some(Address::twin(twin.id)),
        message: Some(Message::Ping(rmb_core::proto::Ping {})),
        ..Default::default()
    }
}

/// Sends a ping and waits for its pong: everything sent before it has been routed.
pub(crate) async fn barrier(conn: &mut Conn, twin: &Twin) {
    let p = ping(twin);
    conn.send(&p).await;
    let pong = conn.recv().await;
    assert!(
        matches!(pong.message, Some(Message::Pong(_))) && pong.uid == p.uid,
        "{pong:?}"
    );
}

/// A per-twin rate limit of `messages` envelopes an hour, bytes unlimited.
pub(crate) fn messages_per_hour(messages: u64) -> rmb_relay::ratelimit::RateLimit {
    rmb_relay::ratelimit::RateLimit {
        messages: Some(messages),
        bytes: None,
        window_secs: 3600,
    }
}

/// POSTs `body` to `relay`'s federation endpoint; returns the status and body text.
pub(crate) async fn federation_post(relay: SocketAddr, body: Vec<u8>) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("http://{relay}/"))
        .body(body)
        .send()
        .await
        .expect("the relay answers federation posts");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// A stand-in for a relay run by a stranger: answers every HTTP request with the same
/// raw `response` bytes, and counts the requests it read.
pub(crate) struct FakeRelay {
    pub addr: SocketAddr,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FakeRelay {
    pub(crate) async fn start(ip: &str, response: Vec<u8>) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (response, counter) = (response.clone(), counter.clone());
                tokio::spawn(async move {
                    // Read the head and as much body as it announces, then answer.
                    let mut read = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let Ok(n) = socket.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        read.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&read).to_ascii_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length = text[..end]
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if read.len() >= end + 4 + length {
                                break;
                            }
                        }
                    }
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = socket.write_all(&response).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        FakeRelay { addr, hits }
    }

    /// Requests read so far.
    pub(crate) fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The name twins register to live on it.
    pub(crate) fn domain(&self) -> String {
        self.addr.to_string()
    }
}

/// `from` (a twin of `relay`) sends a `fail-fast` request to a new twin registered on
/// `relays`, and gets back the relay error: what federation made of those relays.
pub(crate) async fn federation_error(
    registrar: &str,
    relay: &TestRelay,
    from: &Twin,
    relays: &[String],
) -> String {
    let to = twin(registrar, KeyType::Ed25519, relays).await;
    let mut conn = connect(relay.addr(), from, None).await;
    let mut req = request(from, Address::twin(to.id), "x", b"");
    req.tags = Some("fail-fast".into());
    envelope::sign(&mut req, &from.signer);
    conn.send(&req).await;
    let err = conn.recv().await;
    assert_eq!(err.uid, req.uid);
    relay_error(&err).to_string()
}

/// Completes a WebSocket upgrade by hand and then neither reads frames nor answers
/// pings: a dead peer, or a client holding a slot for nothing.
pub(crate) async fn silent_session(
    relay: std::net::SocketAddr,
    token: &str,
) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(relay).await.unwrap();
    let upgrade = format!(
        "GET /?{token} HTTP/1.1\r\nHost: {relay}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(upgrade.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

/// Sends a ping and reads until its pong; returns the relay errors read before it.
pub(crate) async fn barrier_counting_errors(conn: &mut Conn, twin: &Twin) -> Vec<String> {
    let p = ping(twin);
    conn.send(&p).await;
    let mut errors = Vec::new();
    loop {
        let env = conn.recv().await;
        if env.uid == p.uid {
            return errors;
        }
        errors.push(relay_error(&env).to_string());
    }
}

/// A twin registered on a relay that accepts TCP connections (the kernel completes the
/// handshake) and never reads: federation toward it waits until its timeout. Keep the
/// listener alive as long as the relay must stay silent.
pub(crate) async fn twin_on_a_silent_relay(registrar: &str) -> (std::net::TcpListener, Twin) {
    let silent = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
    let relay = silent.local_addr().unwrap().to_string();
    let twin = twin(registrar, KeyType::Ed25519, &[relay]).await;
    (silent, twin)
}

/// Sends `count` distinct requests of `size` bytes from `from` to `to`, then returns
/// the relay errors read before a barrier.
pub(crate) async fn send_distinct_requests(
    conn: &mut Conn,
    from: &Twin,
    to: Address,
    count: u8,
    size: usize,
) -> Vec<String> {
    for i in 0..count {
        let mut body = vec![9u8; size];
        body[0] = i;
        conn.send(&request(from, to.clone(), "x", &body)).await;
    }
    barrier_counting_errors(conn, from).await
}

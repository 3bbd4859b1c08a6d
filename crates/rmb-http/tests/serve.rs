//! `rmb_http::serve` against real sockets: slow and silent clients are cut off, the
//! connection cap holds (also for WebSockets) and frees its permits, bodies have a
//! deadline, WebSocket upgrades work, shutdown lets requests in progress finish.
//!
//! Timeouts in these tests are short so the tests are quick; the outer bounds
//! (`WITHIN`) are only there so a broken server fails the test instead of hanging it.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use rmb_http::{serve, ServeLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Mutex};
use tokio::task::JoinHandle;

const WITHIN: Duration = Duration::from_secs(30);

fn limits() -> ServeLimits {
    ServeLimits {
        max_connections: 100,
        header_read_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(1),
        shutdown_grace: Duration::from_secs(10),
        max_header_bytes: 16 * 1024,
        read_budget: None,
    }
}

async fn echo_body(body: Result<Bytes, BytesRejection>) -> (StatusCode, String) {
    match body {
        Ok(bytes) => (StatusCode::OK, format!("got {} bytes", bytes.len())),
        Err(e) if rmb_http::is_body_timeout(&e) => (StatusCode::REQUEST_TIMEOUT, "slow".into()),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn ws_echo(upgrade: WebSocketUpgrade) -> axum::response::Response {
    upgrade.on_upgrade(|mut socket| async move {
        while let Some(Ok(message)) = socket.recv().await {
            if let Message::Text(text) = message {
                if socket.send(Message::Text(text)).await.is_err() {
                    return;
                }
            }
        }
    })
}

fn router() -> Router {
    Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/echo", post(echo_body))
        .route("/ws", get(ws_echo))
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(router: Router, limits: ServeLimits) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, router, limits, async move {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WITHIN, self.task)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

/// Reads until the server closes the connection; returns what it sent. Fails the test if
/// the server keeps the socket open past `WITHIN`.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(WITHIN, stream.read(&mut buf)).await {
            Err(_) => panic!("the server kept the connection open; it sent {all:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&all).into_owned(),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

async fn get_ok(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    read_until_closed(&mut stream).await
}

#[tokio::test]
async fn a_client_that_sends_nothing_is_disconnected() {
    let server = Server::start(router(), limits()).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(read_until_closed(&mut silent).await, "");
    server.shutdown().await;
}

#[tokio::test]
async fn headers_trickled_one_byte_at_a_time_are_cut_off() {
    let server = Server::start(router(), limits()).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let writer = async {
        // Keeps the connection busy (so it is never idle) but never finishes the head.
        for byte in b"GET / HTTP/1.1\r\nx-slow: "
            .iter()
            .chain(std::iter::repeat(&b'a'))
        {
            if slow.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(WITHIN, writer)
        .await
        .expect("the server closed the trickling connection");
    server.shutdown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_answer() {
    let server = Server::start(router(), limits()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("hello"), "{answer}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_refused() {
    let server = Server::start(router(), limits()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A complete body is read as usual.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc",
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.ends_with("got 3 bytes"), "{answer}");
    server.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_and_permits_come_back() {
    let mut limits = limits();
    limits.max_connections = 2;
    limits.idle_timeout = Duration::from_secs(3600);
    limits.header_read_timeout = Duration::from_secs(3600);
    let server = Server::start(router(), limits).await;
    let first = TcpStream::connect(server.addr).await.unwrap();
    let second = TcpStream::connect(server.addr).await.unwrap();
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    let refused = read_until_closed(&mut third).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("too many open connections"), "{refused}");

    drop(first);
    drop(second);
    // The permits return when the sockets close on the server side.
    let answer = get_when_served(server.addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.shutdown().await;
}

/// Retries a plain GET until it is served (the server notices closed sockets
/// asynchronously); fails after `WITHIN`.
async fn get_when_served(addr: SocketAddr) -> String {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let answer = get_ok(addr).await;
        if answer.starts_with("HTTP/1.1 200") || tokio::time::Instant::now() > deadline {
            return answer;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn websocket_upgrades_work_and_hold_their_permit() {
    let mut limits = limits();
    limits.max_connections = 1;
    let server = Server::start(router(), limits).await;
    let (mut ws, response) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr))
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    ws.send(tokio_tungstenite::tungstenite::Message::text("ping"))
        .await
        .unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "ping");

    // The upgraded socket still counts against the cap of one...
    let mut other = TcpStream::connect(server.addr).await.unwrap();
    let refused = read_until_closed(&mut other).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");

    // ...until it closes.
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    drop(ws);
    let answer = get_when_served(server.addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_a_request_in_progress_finish() {
    let (entered_tx, entered_rx) = oneshot::channel::<()>();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let entered = std::sync::Arc::new(Mutex::new(Some(entered_tx)));
    let release = std::sync::Arc::new(Mutex::new(Some(release_rx)));
    let app = Router::new().route(
        "/slow",
        get(move || {
            let entered = entered.clone();
            let release = release.clone();
            async move {
                if let Some(tx) = entered.lock().await.take() {
                    let _ = tx.send(());
                }
                if let Some(rx) = release.lock().await.take() {
                    let _ = rx.await;
                }
                "finished"
            }
        }),
    );
    let server = Server::start(app, limits()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    entered_rx.await.unwrap();
    let addr = server.addr;
    let shutdown = tokio::spawn(server.shutdown());
    // New connections are no longer accepted once shutdown began.
    tokio::time::timeout(WITHIN, async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the listener closes on shutdown");
    release_tx.send(()).unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("finished"), "{answer}");
    shutdown.await.unwrap();
}

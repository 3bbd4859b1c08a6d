//! Slowloris against a real relay: sockets that send nothing, trickle a request head or
//! a federation body one byte at a time, or simply pile up, must not hold the relay's
//! file descriptors forever.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Only so a relay that never closes fails the test instead of hanging it.
const WITHIN: Duration = Duration::from_secs(20);

async fn short_limits() -> OneRelay {
    one_relay(|c| {
        c.http.header_read_timeout = Duration::from_secs(1);
        c.http.idle_timeout = Duration::from_secs(1);
        c.http.body_read_timeout = Duration::from_secs(1);
    })
    .await
}

/// Reads until the relay answers or closes the socket; `false` if it did neither.
async fn relay_answers_or_closes(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    matches!(
        tokio::time::timeout(WITHIN, stream.read(&mut buf)).await,
        Ok(Ok(_) | Err(_))
    )
}

/// Writes `bytes` one at a time, 200 ms apart, until the relay stops taking them.
async fn trickle(stream: &mut TcpStream, bytes: impl Iterator<Item = u8>) {
    for byte in bytes {
        if stream.write_all(&[byte]).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let setup = short_limits().await;
    let mut silent = TcpStream::connect(setup.addr()).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WITHIN, silent.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the relay kept a connection that sent nothing open: {read:?}"
    );
}

#[tokio::test]
async fn a_request_head_sent_one_byte_at_a_time_is_cut_off() {
    let setup = short_limits().await;
    let mut slow = TcpStream::connect(setup.addr()).await.unwrap();
    let head = b"GET /health HTTP/1.1\r\nx-slow: "
        .iter()
        .copied()
        .chain(std::iter::repeat(b'a'));
    assert!(
        tokio::time::timeout(WITHIN, trickle(&mut slow, head))
            .await
            .is_ok(),
        "the relay kept reading a head sent one byte at a time"
    );
}

#[tokio::test]
async fn a_federation_body_sent_one_byte_at_a_time_is_cut_off() {
    let setup = short_limits().await;
    let mut slow = TcpStream::connect(setup.addr()).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 100000\r\n\r\n",
        setup.addr()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = slow.into_split();
    let body = tokio::spawn(async move {
        for _ in 0..100_000 {
            if writer.write_all(&[0]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(WITHIN, reader.read(&mut buf)).await;
    body.abort();
    assert!(
        read.is_ok(),
        "the relay kept waiting for a body sent one byte at a time"
    );
}

/// `GET /health` on a kept-alive connection; the status line of the answer.
async fn health(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: relay\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(WITHIN, stream.read(&mut buf))
        .await
        .expect("the relay answers")
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn sockets_beyond_the_connection_cap_are_refused_at_once() {
    let setup = one_relay(|c| c.http.max_connections = 2).await;
    // Two connections the relay has accepted (each answered once) and that stay open.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(setup.addr()).await.unwrap();
        assert_eq!(health(&mut stream).await, "HTTP/1.1 200 OK");
        held.push(stream);
    }
    let mut third = TcpStream::connect(setup.addr()).await.unwrap();
    assert_eq!(health(&mut third).await, "HTTP/1.1 503 Service Unavailable");
    assert!(relay_answers_or_closes(&mut third).await);
    // A slot freed is a slot usable again.
    drop(held.pop());
    let mut again = String::new();
    for _ in 0..1000 {
        let mut stream = TcpStream::connect(setup.addr()).await.unwrap();
        again = health(&mut stream).await;
        if again == "HTTP/1.1 200 OK" {
            break;
        }
        // The relay notices the closed socket asynchronously: try again until it has.
        tokio::task::yield_now().await;
    }
    assert_eq!(again, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn websocket_sessions_count_against_the_connection_cap() {
    let setup = one_relay(|c| c.http.max_connections = 2).await;
    let _a = connect(setup.addr(), &setup.a, None).await;
    let _b = connect(setup.addr(), &setup.b, None).await;
    let mut third = TcpStream::connect(setup.addr()).await.unwrap();
    assert_eq!(health(&mut third).await, "HTTP/1.1 503 Service Unavailable");
}

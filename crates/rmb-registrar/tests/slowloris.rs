//! Slowloris against the real registrar: clients that connect and send nothing, or
//! trickle their headers, must not hold sockets forever.

use std::time::Duration;

use rmb_testkit::TestRegistrar;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Only so a server that never closes fails the test instead of hanging it.
const WITHIN: Duration = Duration::from_secs(20);

async fn short_limits() -> TestRegistrar {
    TestRegistrar::start_configured(|config| {
        config.http.header_read_timeout = Duration::from_secs(1);
        config.http.idle_timeout = Duration::from_secs(1);
    })
    .await
    .unwrap()
}

/// Waits for the server to close the socket (EOF or reset).
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(WITHIN, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn a_silent_connection_is_closed() {
    let registrar = short_limits().await;
    let mut silent = TcpStream::connect(registrar.addr()).await.unwrap();
    assert!(
        closed_by_server(&mut silent).await,
        "the registrar kept a connection that sent nothing open"
    );
}

#[tokio::test]
async fn trickled_headers_are_cut_off() {
    let registrar = short_limits().await;
    let mut slow = TcpStream::connect(registrar.addr()).await.unwrap();
    let trickle = async {
        for byte in b"GET /health HTTP/1.1\r\nx-slow: "
            .iter()
            .chain(std::iter::repeat(&b'a'))
        {
            if slow.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert!(
        tokio::time::timeout(WITHIN, trickle).await.is_ok(),
        "the registrar kept reading a head sent one byte at a time"
    );
}

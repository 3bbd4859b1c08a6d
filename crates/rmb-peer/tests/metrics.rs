//! rmb-peer's `/metrics`: the counters move with the traffic, per peer (two peers in one
//! process report apart), and the Redis list lengths are read when scraped.

mod common;

use common::*;
use rmb_testkit::TestRegistrar;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `GET /metrics` over a real socket, without an HTTP client crate.
async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of an unlabelled (or exactly labelled) sample in a Prometheus page.
fn value(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn counters_follow_a_request_and_its_reply() {
    let reg = TestRegistrar::start().await.unwrap();
    let relay = Relay::start("127.0.0.1", &reg.url()).await;
    let (a, redis_a) = peer(&reg, &[&relay], PeerOpts::default()).await;
    let (b, redis_b) = peer(&reg, &[&relay], PeerOpts::default()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(rmb_peer::metrics::serve(
        listener,
        a.metrics(),
        stop.clone().cancelled_owned(),
    ));

    let before = scrape(addr).await;
    assert_eq!(value(&before, "rmb_peer_requests_popped_total"), Some(0.0));
    assert_eq!(value(&before, "rmb_peer_redis_up"), Some(1.0));
    assert_eq!(value(&before, "rmb_peer_relays_connected"), Some(1.0));

    // Once recovery ran, nothing but a worker's own move touches a processing list: an
    // entry put there by hand stays, and shows as the list's length.
    a.recovered().await;
    let mut conn = conn(&redis_a.url()).await.unwrap();
    let _: i64 = redis::cmd("LPUSH")
        .arg("msgbus.system.reply.processing")
        .arg("not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    let page = scrape(addr).await;
    assert_eq!(
        value(
            &page,
            "rmb_peer_redis_key_length{key=\"msgbus.system.reply.processing\"}"
        ),
        Some(1.0),
        "{page}"
    );
    let _: i64 = redis::cmd("DEL")
        .arg("msgbus.system.reply.processing")
        .query_async(&mut conn)
        .await
        .unwrap();

    // Errors by kind: something that is not JSON on an app's list.
    lpush(&redis_a.url(), "msgbus.system.local", "not json").await;
    let metrics = a.metrics();
    eventually("the malformed request is counted", || {
        metrics.sample("rmb_peer_malformed_total", "") == Some(1.0)
    })
    .await;

    let _svc = service(&redis_b.url(), "calc.echo", echo);
    lpush(
        &redis_a.url(),
        "msgbus.system.local",
        &request("m1", "calc.echo", "aGk=", &[b.twin_id()], "app.ret"),
    )
    .await;
    let reply = brpop(&redis_a.url(), "app.ret").await;
    assert_eq!(reply["dat"], "aGk=");

    let after = scrape(addr).await;
    for (series, expected) in [
        // The malformed one was taken off the list too.
        ("rmb_peer_requests_popped_total", 2.0),
        ("rmb_peer_envelopes_sent_total", 1.0),
        ("rmb_peer_incoming_replies_total", 1.0),
        ("rmb_peer_incoming_requests_total", 0.0),
    ] {
        assert_eq!(value(&after, series), Some(expected), "{series}:\n{after}");
    }
    // b served it: its own numbers, not a's.
    let b_metrics = b.metrics();
    eventually("b counts the reply it sent", || {
        b_metrics.sample("rmb_peer_replies_sent_total", "") == Some(1.0)
    })
    .await;
    assert_eq!(
        b_metrics.sample("rmb_peer_incoming_requests_total", ""),
        Some(1.0)
    );
    assert_eq!(
        b_metrics.sample("rmb_peer_requests_popped_total", ""),
        Some(0.0)
    );
    stop.cancel();
}

//! Crashes with `--redis`: relay binaries and redis-server killed with SIGKILL (no
//! shutdown code runs), Redis with its append-only file on and restarted with its
//! data. Whatever a relay confirmed to a sender (the pong after it) must reach its
//! destination afterwards; what was in flight at the crash may arrive twice (the
//! receivers drop copies by uid), never not at all.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::net::SocketAddr;

use common::*;
use futures_util::StreamExt;
use rmb_core::prost::Message as _;
use rmb_core::proto::Message;
use rmb_core::{Address, Envelope, KeyType};
use rmb_testkit::{Process, Proxy, RedisServer, TestRelay};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const BIN: &str = env!("CARGO_BIN_EXE_rmb-relay");
const DOMAIN: &str = "crash.rmb.test";

/// An `rmb-relay` process serving [`DOMAIN`] on a free port with the Redis backend.
struct RelayProcess {
    process: Process,
    addr: SocketAddr,
}

async fn relay_process(registrar: &str, redis: &str) -> RelayProcess {
    relay_process_with(registrar, redis, &[]).await
}

/// [`relay_process`] with more flags.
async fn relay_process_with(registrar: &str, redis: &str, more: &[&str]) -> RelayProcess {
    let addr: SocketAddr = format!("127.0.0.1:{}", rmb_testkit::free_port())
        .parse()
        .unwrap();
    let args: Vec<std::ffi::OsString> = [
        "--domain",
        DOMAIN,
        "--listen",
        &addr.to_string(),
        "--registrar",
        registrar,
        "--redis",
        redis,
    ]
    .iter()
    .chain(more)
    .map(|a| OsStr::new(a).to_owned())
    .collect();
    let process = tokio::task::spawn_blocking(move || {
        let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        Process::start_until(BIN, &args, &[], |line| line.contains("relay listening"))
    })
    .await
    .unwrap()
    .expect("rmb-relay starts")
    .0;
    RelayProcess { process, addr }
}

/// A request whose plain payload starts with `n`, padded to `size` bytes.
fn numbered(from: &Twin, to: &Twin, n: u16, size: usize) -> Envelope {
    let mut body = vec![0; size.max(2)];
    body[..2].copy_from_slice(&n.to_be_bytes());
    request(from, Address::twin(to.id), "x", &body)
}

fn number(env: &Envelope) -> u16 {
    u16::from_be_bytes(plain(env)[..2].try_into().expect("a numbered request"))
}

/// Everything the relay wrote to `conn` before the connection ended.
async fn drain_until_closed(conn: &mut Conn) -> Vec<u16> {
    let mut got = Vec::new();
    loop {
        let next = tokio::time::timeout(WAIT, conn.raw.ws.next())
            .await
            .expect("the connection of a killed relay ends");
        match next {
            Some(Ok(WsMessage::Binary(data))) => {
                let env = Envelope::decode(&data[..]).unwrap();
                if !matches!(env.message, Some(Message::Pong(_))) {
                    got.push(number(&env));
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return got,
        }
    }
}

/// Reads from `conn` until every number of `want` was seen (in `seen` or now); fails
/// the test if one does not come. The numbers read now must come in order.
async fn receive_all(conn: &mut Conn, want: std::ops::Range<u16>, seen: &mut BTreeSet<u16>) {
    let mut last = None;
    while !want.clone().all(|n| seen.contains(&n)) {
        let n = number(&conn.recv().await);
        assert!(
            last.map_or(true, |l| n > l),
            "{n} after {last:?}: out of order"
        );
        last = Some(n);
        seen.insert(n);
    }
}

#[tokio::test]
async fn sigkill_of_an_instance_loses_nothing_it_confirmed() {
    let redis = RedisServer::start_persistent().unwrap();
    let reg = registrar().await;
    let one = relay_process(&reg.url(), &redis.url()).await;
    let two = relay_process(&reg.url(), &redis.url()).await;
    let a = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let b = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let mut ca = connect(two.addr, &a, None).await;
    let mut cb = connect(one.addr, &b, None).await;

    // A (on two) sends 12 MiB to B (on one), handed over to one; B reads a few, its
    // socket buffers take some MiB more, the rest is what one holds when it is killed.
    const N: u16 = 200;
    for i in 0..N {
        ca.send(&numbered(&a, &b, i, 64 << 10)).await;
    }
    barrier(&mut ca, &a).await;
    let mut seen: BTreeSet<u16> = BTreeSet::new();
    for _ in 0..5 {
        seen.insert(number(&cb.recv().await));
    }
    one.process.kill();
    seen.extend(drain_until_closed(&mut cb).await);

    // Sent while B is away and its owner mark still names the dead instance.
    const M: u16 = 20;
    for i in N..N + M {
        ca.send(&numbered(&a, &b, i, 2)).await;
    }
    barrier(&mut ca, &a).await;

    let mut cb = connect(two.addr, &b, None).await;
    receive_all(&mut cb, 0..N + M, &mut seen).await;
}

#[tokio::test]
async fn sigkill_of_redis_with_its_append_only_file_loses_nothing_confirmed() {
    let mut redis = RedisServer::start_persistent().unwrap();
    let reg = registrar().await;
    let one = relay_process(&reg.url(), &redis.url()).await;
    let a = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let b = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let probe = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let mut ca = connect(one.addr, &a, None).await;
    const N: u16 = 100;
    for i in 0..N {
        ca.send(&numbered(&a, &b, i, 2)).await;
    }
    barrier(&mut ca, &a).await;

    redis.kill();
    redis.restart().unwrap();

    // The relay reconnects by itself; until it has, sessions cannot attach.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay did not reconnect to redis"
        );
        let mut c = connect(one.addr, &probe, None).await;
        c.send(&ping(&probe)).await;
        let next = tokio::time::timeout(WAIT, c.raw.ws.next()).await.unwrap();
        if matches!(next, Some(Ok(WsMessage::Binary(_)))) {
            break;
        }
    }
    let mut cb = connect(one.addr, &b, None).await;
    receive_all(&mut cb, 0..N, &mut BTreeSet::new()).await;
}

#[tokio::test]
async fn a_sender_hears_when_the_relay_cannot_store_its_envelope() {
    // Redis goes away under a relay: a request it cannot store must get a relay error
    // before the pong that follows it, not a pong alone (which says "accepted").
    let mut redis = RedisServer::start().unwrap();
    let reg = registrar().await;
    let url = redis.url();
    let one = start_relay_for(vec![DOMAIN.into()], &reg.url(), move |c| {
        c.redis_url = Some(url);
    })
    .await;
    let a = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let b = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let mut ca = connect(one.addr(), &a, None).await;
    barrier(&mut ca, &a).await;
    redis.kill();

    let req = numbered(&a, &b, 1, 2);
    ca.send(&req).await;
    let p = ping(&a);
    ca.send(&p).await;
    let first = ca.recv().await;
    assert_eq!(
        first.uid, req.uid,
        "expected the relay error first, got {first:?}"
    );
    assert!(relay_error(&first).contains("storage"), "{first:?}");
    assert_eq!(ca.recv().await.uid, p.uid);
}

#[tokio::test]
async fn federation_work_of_a_killed_instance_is_picked_up_by_another() {
    // Relay A runs as two instances on one Redis; relay B is behind a proxy that
    // black-holes traffic. X (on instance one) sends to Y (on B): the envelopes wait in
    // A's federation work when instance one is killed. Instance two must deliver them
    // once B is reachable again.
    let redis = RedisServer::start_persistent().unwrap();
    let reg = registrar().await;
    let proxy = Proxy::bind("127.0.0.2").await.unwrap();
    let b_relay = TestRelay::start_with(
        "127.0.0.2",
        &reg.url(),
        Some(vec![proxy.addr().to_string()]),
        |_| {},
    )
    .await
    .unwrap();
    proxy.set_target(b_relay.addr());
    let fast = [
        "--federation-http",
        "--federation-allow-private",
        "--federation-timeout",
        "1",
        "--redis-heartbeat",
        "1",
    ];
    let one = relay_process_with(&reg.url(), &redis.url(), &fast).await;
    let two = relay_process_with(&reg.url(), &redis.url(), &fast).await;
    let x = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let y = twin(&reg.url(), KeyType::Ed25519, &[proxy.addr().to_string()]).await;
    let mut cy = connect(b_relay.addr(), &y, None).await;
    let mut cx = connect(one.addr, &x, None).await;

    proxy.partition();
    const N: u16 = 20;
    for i in 0..N {
        cx.send(&numbered(&x, &y, i, 2)).await;
    }
    barrier(&mut cx, &x).await;
    one.process.kill();
    proxy.heal();

    let mut seen = BTreeSet::new();
    while !(0..N).all(|n| seen.contains(&n)) {
        seen.insert(number(&cy.recv().await));
    }
    drop(two);
}

#[tokio::test]
async fn a_relay_restarted_after_sigkill_still_drops_copies() {
    // The sender re-sends what the killed relay had not confirmed, and here the relay
    // had stored it: the restarted process, whose own memory is empty, must drop the
    // copy, or a receiver that does not de-duplicate runs it twice.
    let redis = RedisServer::start_persistent().unwrap();
    let reg = registrar().await;
    let one = relay_process(&reg.url(), &redis.url()).await;
    let a = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let b = twin(&reg.url(), KeyType::Ed25519, &[DOMAIN.into()]).await;
    let mut ca = connect(one.addr, &a, None).await;
    let original = numbered(&a, &b, 1, 2);
    ca.send(&original).await;
    barrier(&mut ca, &a).await;
    one.process.kill();
    drop(ca);

    let again = relay_process(&reg.url(), &redis.url()).await;
    let mut ca = connect(again.addr, &a, None).await;
    ca.send(&original).await;
    ca.send(&numbered(&a, &b, 2, 2)).await;
    barrier(&mut ca, &a).await;
    let mut cb = connect(again.addr, &b, None).await;
    assert_eq!(number(&cb.recv().await), 1);
    assert_eq!(number(&cb.recv().await), 2, "the copy was dropped");
}

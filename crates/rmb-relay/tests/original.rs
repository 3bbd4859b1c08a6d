//! Living beside the original software (issue 11 §3): what the original relay and the
//! TypeScript client send, byte for byte, and what the original relay's operators scrape.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use rmb_core::{Address, Envelope};

/// The token the TypeScript client (tfgrid-sdk-ts `rmb_direct_client`, `newJWT`) writes:
/// header `{"alg":"RS512","typ":"JWT"}`, claims in the order sub, iat, exp, sid, an
/// `exp` 1000 s after `iat`, the typed signature over `header.claims`.
fn typescript_token(twin: &Twin, session: &str) -> String {
    let now = rmb_core::time::now();
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS512","typ":"JWT"}"#);
    let claims = format!(
        r#"{{"sub":{},"iat":{now},"exp":{},"sid":"{session}"}}"#,
        twin.id,
        now + 1000
    );
    let signed = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
    let signature = twin.signer.sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[tokio::test]
async fn a_typescript_session_with_id_empty_and_the_default_session_live_side_by_side() {
    let setup = one_relay(|_| {}).await;
    let (a, b) = (&setup.a, &setup.b);
    // rmb-peer of twin A (no session id), then a TypeScript client of A (session "").
    let mut peer = connect(setup.addr(), a, None).await;
    let mut ts = connect_with(setup.addr(), &typescript_token(a, ""))
        .await
        .unwrap();
    // The TypeScript client's own ping carries `connection: ""` as its source.
    let mut ping = ping(a);
    ping.source = Some(Address::session(a.id, ""));
    ts.send(&ping).await;
    assert_eq!(ts.recv().await.uid, ping.uid, "pong to session \"\"");

    let mut cb = connect(setup.addr(), b, None).await;
    let to_peer = request(b, Address::twin(a.id), "calc.add", b"peer");
    let to_ts = request(b, Address::session(a.id, ""), "calc.add", b"ts");
    cb.send(&to_peer).await;
    cb.send(&to_ts).await;
    assert_eq!(peer.recv().await, to_peer, "no session id: rmb-peer");
    assert_eq!(
        ts.recv().await,
        to_ts,
        "session \"\": the TypeScript client"
    );
    // Neither replaced the other: both still answer.
    barrier(&mut peer, a).await;
    let mut ping = common::ping(a);
    ping.source = Some(Address::session(a.id, ""));
    ts.send(&ping).await;
    assert_eq!(ts.recv().await.uid, ping.uid);
}

/// `GET /metrics` over a real socket.
async fn scrape(setup: &OneRelay) -> String {
    reqwest::get(format!("http://{}/metrics", setup.addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the unlabelled sample `name` in a Prometheus text page.
fn sample(page: &str, name: &str) -> Option<u64> {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn the_original_relays_metric_names_are_exported() {
    let setup = one_relay(|_| {}).await;
    let (a, b) = (&setup.a, &setup.b);
    let mut ca = connect(setup.addr(), a, None).await;
    let mut cb = connect(setup.addr(), b, None).await;
    let env: Envelope = request(a, Address::twin(b.id), "calc.add", b"1");
    ca.send(&env).await;
    assert_eq!(cb.recv().await, env);
    let page = scrape(&setup).await;
    for name in [
        "relay_message_rx",
        "relay_message_tx",
        "relay_message_rx_bytes",
        "relay_message_tx_bytes",
    ] {
        let value = sample(&page, name).unwrap_or_else(|| panic!("no {name} in:\n{page}"));
        assert!(value >= 1, "{name} counted nothing");
        assert!(page.contains(&format!("# TYPE {name} counter")), "{name}");
    }
    assert!(
        page.contains("relay_worker_connections{worker=\"0\"} 2"),
        "{page}"
    );
    // Federation counters carry the original names and label too.
    let mut far = common::request(a, Address::twin(setup.b.id), "x", b"");
    far.destination = Some(Address::twin(elsewhere_twin(&setup).await));
    rmb_core::envelope::sign(&mut far, &a.signer);
    ca.send(&far).await;
    eventually("the federation attempt is counted", || {
        setup
            .relay
            .metrics()
            .render()
            .contains("federation_message_error{relay=")
    })
    .await;
}

/// A twin registered on a relay nobody runs.
async fn elsewhere_twin(setup: &OneRelay) -> u32 {
    twin(
        &setup.reg.url(),
        rmb_core::KeyType::Ed25519,
        &["127.0.0.1:9".into()],
    )
    .await
    .id
}

/// POSTs `env` the way the original relay federates: `POST https://<relay>/` with the
/// envelope's bytes as the body and no other header than reqwest's defaults.
async fn post_like_the_original(relay: std::net::SocketAddr, env: &Envelope) -> (u16, String) {
    federation_post(relay, rmb_core::prost::Message::encode_to_vec(env)).await
}

#[tokio::test]
async fn a_federation_post_for_a_twin_that_just_moved_here_is_queued_not_refused() {
    let reg = registrar().await;
    let url = reg.url();
    let relay = start_relay("127.0.0.1", &url, |_| {}).await;
    let sender = twin(
        &url,
        rmb_core::KeyType::Ed25519,
        &["elsewhere.example".into()],
    )
    .await;
    let mover = twin(&url, rmb_core::KeyType::Ed25519, &["old.example".into()]).await;
    // The relay looks the twin up (and caches the answer): it lives elsewhere.
    let early = request(&sender, Address::twin(mover.id), "x", b"early");
    let (status, _) = post_like_the_original(relay.addr(), &early).await;
    assert_eq!(status, 404, "a twin that does not live here");
    // The twin moves here: the relay's cached record is now stale.
    test_client(&url)
        .update_account(&mover.signer, mover.id, Some(&[domain(&relay)]), None)
        .await
        .unwrap();
    let late = request(&sender, Address::twin(mover.id), "x", b"late");
    let (status, body) = post_like_the_original(relay.addr(), &late).await;
    assert_eq!(status, 202, "refused on a stale record: {body}");
    let mut conn = connect(relay.addr(), &mover, None).await;
    assert_eq!(conn.recv().await, late, "queued until the twin connected");
}

//! Replays: a captured JWT or envelope sent again, before and after it expires.
//!
//! What the relay guarantees: a JWT is a bearer token for one (twin, session) until its
//! `exp`, so replaying it within its lifetime is allowed but only ever yields that same
//! session (the newest connection replaces the older one); a token is checked when a
//! connection opens, not for the life of the connection. An envelope past its deadline
//! is refused, over WebSocket and over federation. Within its lifetime a replayed
//! envelope is dropped as a copy (design D1a, see `attacks.rs`); receivers de-duplicate
//! too (rmb-sdk, and rmb-peer through it), for copies that come through other relays.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;
use rmb_core::prost::Message as _;
use rmb_core::{envelope, jwt, Address};
use rmb_testkit::RawConn;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const SCENARIO: Duration = Duration::from_secs(60);

/// Waits (a real wait: there is no event to await) until the wall clock reaches `t`.
async fn until_unix_time(t: u64) {
    while rmb_core::time::now() < t {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_jwt_replayed_after_it_expired_is_refused() {
    tokio::time::timeout(SCENARIO, async {
        let OneRelay {
            reg: _reg,
            relay,
            a,
            b,
        } = one_relay(|_| {}).await;
        let now = rmb_core::time::now();
        // Issued a while ago, expiring in two seconds.
        let captured = jwt::create(&a.signer, a.id, None, now - 58, 60);
        let mut first = connect_with(relay.addr(), &captured).await.unwrap();
        until_unix_time(now + 2).await;

        let refusal = RawConn::refused(relay.addr(), &captured).await;
        assert_eq!(refusal.status, 401, "{refusal:?}");
        assert!(refusal.body.contains("expired"), "{refusal:?}");
        // The token was checked when the connection opened: that session carries on.
        let mut cb = connect(relay.addr(), &b, None).await;
        first
            .send(&request(&a, Address::twin(b.id), "x", b"still here"))
            .await;
        assert_eq!(plain(&cb.recv().await), b"still here");
    })
    .await
    .expect("the scenario took too long");
}

/// `token` with its claims replaced by `sub` and `sid`, the original signature kept.
fn with_claims(token: &str, sub: u32, sid: Option<&str>) -> String {
    let claims = jwt::parse(token).unwrap().claims().clone();
    let sid = sid.map_or("null".to_string(), |s| format!("\"{s}\""));
    let json = format!(
        r#"{{"sub":{sub},"sid":{sid},"iat":{},"exp":{}}}"#,
        claims.iat, claims.exp
    );
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(json), parts[2])
}

#[tokio::test]
async fn a_jwt_replayed_within_its_lifetime_only_ever_opens_its_own_session() {
    tokio::time::timeout(SCENARIO, async {
        let OneRelay {
            reg: _reg,
            relay,
            a,
            b,
        } = one_relay(|_| {}).await;
        let captured = token(&b, Some("s"));
        let mut original = connect_with(relay.addr(), &captured).await.unwrap();
        let mut replayed = connect_with(relay.addr(), &captured).await.unwrap();
        let close = original.recv_close().await.expect("a close frame");
        assert!(close.reason.contains("replaced"), "{close:?}");

        // The replayed connection is b's session "s", nothing more.
        let mut ca = connect(relay.addr(), &a, None).await;
        ca.send(&request(&a, Address::session(b.id, "s"), "x", b"to s"))
            .await;
        assert_eq!(plain(&replayed.recv().await), b"to s");
        replayed
            .send(&request(&a, Address::twin(b.id), "x", b"as a"))
            .await;
        assert!(relay_error(&replayed.recv().await).contains("does not match your session"));

        // Rewriting the claims to another twin or session breaks the signature.
        for (what, forged) in [
            ("another twin", with_claims(&captured, a.id, Some("s"))),
            ("another session", with_claims(&captured, b.id, Some("t"))),
            ("no session", with_claims(&captured, b.id, None)),
        ] {
            let refusal = RawConn::refused(relay.addr(), &forged).await;
            assert_eq!(refusal.status, 401, "{what}: {refusal:?}");
        }
        assert_eq!(
            relay
                .metrics()
                .labelled("rmb_relay_auth_failures_total", "reason=\"bad_signature\""),
            3
        );
        barrier(&mut replayed, &b).await;
    })
    .await
    .expect("the scenario took too long");
}

#[tokio::test]
async fn an_envelope_replayed_after_its_deadline_is_refused_over_websocket_and_federation() {
    tokio::time::timeout(SCENARIO, async {
        let OneRelay {
            reg: _reg,
            relay,
            a,
            b,
        } = one_relay(|_| {}).await;
        let mut ca = connect(relay.addr(), &a, None).await;
        let mut cb = connect(relay.addr(), &b, None).await;
        let now = rmb_core::time::now();
        let mut captured = request(&a, Address::twin(b.id), "x", b"once");
        captured.timestamp = now - 58;
        captured.expiration = 60;
        envelope::sign(&mut captured, &a.signer);
        let bytes = captured.encode_to_vec();
        ca.send_raw(WsMessage::Binary(bytes.clone().into())).await;
        assert_eq!(cb.recv().await, captured);
        // One second more: the relay reads a coarse clock that may lag by up to a second.
        until_unix_time(now + 3).await;

        ca.send_raw(WsMessage::Binary(bytes.clone().into())).await;
        let err = ca.recv().await;
        assert_eq!(err.uid, captured.uid);
        assert!(relay_error(&err).contains("expired"), "{err:?}");
        let response = reqwest::Client::new()
            .post(format!("http://{}/", relay.addr()))
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        assert!(response.text().await.unwrap().contains("expired"));

        // B got nothing more: the next envelope it sees is a fresh one.
        let fresh = request(&a, Address::twin(b.id), "x", b"fresh");
        ca.send(&fresh).await;
        assert_eq!(cb.recv().await.uid, fresh.uid);
    })
    .await
    .expect("the scenario took too long");
}

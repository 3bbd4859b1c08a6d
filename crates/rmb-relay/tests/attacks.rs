//! Attacks on the relay, each reproduced against a real relay on real sockets.

mod common;

use common::*;
use rmb_core::{envelope, Address, KeyType};

/// A request from `from` to `to` signed with a deadline at the end of time.
fn with_huge_deadline(from: &Twin, to: Address) -> rmb_core::Envelope {
    let mut env = request(from, to, "x", b"forever");
    env.expiration = u64::MAX - env.timestamp;
    envelope::sign(&mut env, &from.signer);
    env
}

#[tokio::test]
async fn a_huge_deadline_is_refused_and_leaves_the_federation_backlog_free() {
    let reg = registrar().await;
    let url = reg.url();
    // Room for two federation deliveries: a leaked slot shows at once.
    let r1 = start_relay("127.0.0.1", &url, |c| c.federation_backlog = 2).await;
    let r2 = start_relay("127.0.0.2", &url, |_| {}).await;
    let a = twin(&url, KeyType::Ed25519, &[domain(&r1)]).await;
    let b = twin(&url, KeyType::Ed25519, &[domain(&r2)]).await;
    let mut ca = connect(r1.addr(), &a, None).await;
    let mut cb = connect(r2.addr(), &b, None).await;
    for _ in 0..3 {
        let huge = with_huge_deadline(&a, Address::twin(b.id));
        ca.send(&huge).await;
        let err = ca.recv().await;
        assert_eq!(err.uid, huge.uid);
        let message = relay_error(&err);
        assert!(message.contains("expiration"), "{message}");
    }
    let fine = request(&a, Address::twin(b.id), "x", b"fine");
    ca.send(&fine).await;
    assert_eq!(cb.recv().await, fine, "federation still works");
}

#[tokio::test]
async fn a_federation_post_with_a_huge_deadline_is_refused() {
    let reg = registrar().await;
    let url = reg.url();
    let r2 = start_relay("127.0.0.2", &url, |_| {}).await;
    let a = twin(&url, KeyType::Ed25519, &["elsewhere.example".to_string()]).await;
    let b = twin(&url, KeyType::Ed25519, &[domain(&r2)]).await;
    let huge = with_huge_deadline(&a, Address::twin(b.id));
    let response = reqwest::Client::new()
        .post(format!("http://{}/", r2.addr()))
        .body(rmb_core::prost::Message::encode_to_vec(&huge))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let text = response.text().await.unwrap();
    assert!(text.contains("expiration"), "{text}");
}

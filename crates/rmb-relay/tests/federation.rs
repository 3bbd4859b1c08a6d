//! Federation between relays on different loopback addresses, with a real registrar.

mod common;

use common::*;
use rmb_core::prost::Message as _;
use rmb_core::{envelope, Address, KeyType};

#[tokio::test]
async fn three_relays_federate_and_fail_over() {
    let reg = registrar().await;
    let url = reg.url();
    let r1 = start_relay("127.0.0.1", &url, |_| {}).await;
    let r2 = start_relay("127.0.0.2", &url, |_| {}).await;
    let r3 = start_relay("127.0.0.3", &url, |_| {}).await;
    // A relay address nothing listens on (bound, then closed).
    let dead = std::net::TcpListener::bind("127.0.0.4:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();

    let a = twin(&url, KeyType::Sr25519, &[domain(&r1)]).await;
    let b = twin(&url, KeyType::Ed25519, &[domain(&r2)]).await;
    let c = twin(&url, KeyType::Sr25519, &[domain(&r3)]).await;
    let d = twin(&url, KeyType::Ed25519, &[dead, domain(&r3)]).await;
    let mut ca = connect(r1.addr(), &a, None).await;
    let mut cb = connect(r2.addr(), &b, None).await;
    let mut cc = connect(r3.addr(), &c, None).await;
    let mut cd = connect(r3.addr(), &d, None).await;

    // A → B (R1 → R2) and the reply back (R2 → R1).
    let req = request(&a, Address::twin(b.id), "calc.add", b"ab");
    ca.send(&req).await;
    let got = cb.recv().await;
    assert_eq!(got, req);
    cb.send(&response(&b, &got, b"ba")).await;
    let reply = ca.recv().await;
    assert_eq!(plain(&reply), b"ba");
    envelope::verify(&reply, &b.signer.public_key()).unwrap();

    // B → C (R2 → R3).
    cb.send(&request(&b, Address::twin(c.id), "x", b"bc")).await;
    assert_eq!(plain(&cc.recv().await), b"bc");

    // A → D, whose first relay is down: delivered through the other one, every time.
    for i in 0..4u8 {
        ca.send(&request(&a, Address::twin(d.id), "x", &[i])).await;
        assert_eq!(plain(&cd.recv().await), &[i]);
    }
    assert!(r2.handle().metrics().federation_received.get() >= 1);
}

#[tokio::test]
async fn unreachable_destination_relays_give_the_sender_an_error() {
    let reg = registrar().await;
    let url = reg.url();
    let r1 = start_relay("127.0.0.1", &url, |_| {}).await;
    let dead = std::net::TcpListener::bind("127.0.0.5:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let a = twin(&url, KeyType::Ed25519, &[domain(&r1)]).await;
    let message = federation_error(&url, &r1, &a, std::slice::from_ref(&dead)).await;
    assert!(
        message.contains("could not reach") && message.contains(&dead),
        "{message}"
    );
    assert_eq!(
        r1.metrics().labelled(
            "rmb_relay_federation_total",
            &format!("relay=\"{dead}\",result=\"failed\"")
        ),
        1
    );
}

#[tokio::test]
async fn federation_endpoint_accepts_only_verified_envelopes() {
    let reg = registrar().await;
    let url = reg.url();
    let r2 = start_relay("127.0.0.2", &url, |c| c.max_envelope_size = 64 * 1024).await;
    let a = twin(&url, KeyType::Ed25519, &["elsewhere.example".to_string()]).await;
    let b = twin(&url, KeyType::Ed25519, &[domain(&r2)]).await;
    let mallory = twin(&url, KeyType::Ed25519, &["elsewhere.example".to_string()]).await;
    let mut cb = connect(r2.addr(), &b, None).await;
    let post = |body: Vec<u8>| federation_post(r2.addr(), body);

    assert_eq!(post(b"garbage".to_vec()).await.0, 400);

    // Claims to be from A but signed by Mallory.
    let mut forged = request(&a, Address::twin(b.id), "x", b"transfer all");
    envelope::sign(&mut forged, &mallory.signer);
    let (status, text) = post(forged.encode_to_vec()).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("signature"), "{text}");

    let mut unsigned = request(&a, Address::twin(b.id), "x", b"");
    unsigned.signature = None;
    let (status, text) = post(unsigned.encode_to_vec()).await;
    assert_eq!(status, 400, "the envelope rules refuse it: {text}");
    assert!(text.contains("not signed"), "{text}");

    let mut relay_error = request(&a, Address::twin(b.id), "x", b"");
    relay_error.source = None;
    assert_eq!(post(relay_error.encode_to_vec()).await.0, 400);

    let (status, _) = post(vec![0u8; 100 * 1024]).await;
    assert_eq!(status, 413, "body over the size limit");

    let not_here = twin(&url, KeyType::Ed25519, &["elsewhere.example".to_string()]).await;
    let (status, text) =
        post(request(&a, Address::twin(not_here.id), "x", b"").encode_to_vec()).await;
    assert_eq!(status, 404, "{text}");

    let genuine = request(&a, Address::twin(b.id), "x", b"genuine");
    assert_eq!(post(genuine.encode_to_vec()).await.0, 202);
    assert_eq!(
        cb.recv().await,
        genuine,
        "only the genuine envelope reaches B"
    );
}

#[tokio::test]
async fn federation_posts_count_against_the_sources_rate_limit() {
    let reg = registrar().await;
    let url = reg.url();
    let r2 = start_relay("127.0.0.2", &url, |c| c.rate_limit = messages_per_hour(2)).await;
    let a = twin(&url, KeyType::Ed25519, &["elsewhere.example".to_string()]).await;
    let other = twin(&url, KeyType::Ed25519, &["elsewhere.example".to_string()]).await;
    let b = twin(&url, KeyType::Ed25519, &[domain(&r2)]).await;
    let mut cb = connect(r2.addr(), &b, None).await;
    let post = |env: rmb_core::Envelope| federation_post(r2.addr(), env.encode_to_vec());
    for i in 0..2 {
        let env = request(&a, Address::twin(b.id), "x", format!("{i}").as_bytes());
        assert_eq!(post(env.clone()).await.0, 202);
        assert_eq!(cb.recv().await, env);
    }
    let (status, text) = post(request(&a, Address::twin(b.id), "x", b"one too many")).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("rate limit"), "{text}");
    // The budget is A's alone.
    let env = request(&other, Address::twin(b.id), "x", b"from another twin");
    assert_eq!(post(env.clone()).await.0, 202);
    assert_eq!(cb.recv().await, env);
}

//! An envelope replayed byte for byte within its lifetime, through one relay (which
//! forwards it again: de-duplication is the receiver's job), is handled once.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rmb_core::prost::Message as _;
use rmb_core::proto::Message;
use rmb_core::KeyType;
use rmb_testkit::RawConn;

#[tokio::test]
async fn a_request_replayed_byte_for_byte_through_one_relay_is_handled_once() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let n = net().await;
        let server = client_on(&n.reg, &[&n.relay], KeyType::Ed25519, true).await;
        let handled = Arc::new(AtomicUsize::new(0));
        let count = handled.clone();
        server.handle("count", move |req| {
            count.fetch_add(1, Ordering::SeqCst);
            async move { Ok(req.payload) }
        });
        let raw = RawTwin::register(&n.reg, &[&n.relay]).await;
        let token = rmb_core::jwt::create(&raw.signer, raw.id, None, rmb_core::time::now(), 60);
        let mut conn = RawConn::connect(n.relay.addr(), &token).await.unwrap();
        let request = |uid: &str| {
            raw.request(uid, server.twin_id(), "count", uid.as_bytes())
                .encode_to_vec()
        };
        let captured = request("replayed");
        for _ in 0..3 {
            conn.send_bytes(captured.clone()).await.unwrap();
        }
        // A distinct request after the copies: once its reply is back, every copy has
        // been handled or dropped.
        conn.send_bytes(request("marker")).await.unwrap();
        // Copies may be answered again (with the reply already sent), but the handler
        // runs once per distinct request.
        let mut replied = false;
        loop {
            let reply = conn.recv().await;
            assert!(
                matches!(reply.message, Some(Message::Response(_))),
                "{reply:?}"
            );
            match reply.uid.as_str() {
                "marker" => break,
                "replayed" => replied = true,
                other => panic!("a reply to nothing that was sent: {other}"),
            }
        }
        assert!(replied, "the first copy was not answered");
        assert_eq!(
            handled.load(Ordering::SeqCst),
            2,
            "the replay reached the handler"
        );
    })
    .await
    .expect("the scenario took too long");
}

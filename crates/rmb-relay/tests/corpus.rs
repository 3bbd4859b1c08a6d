//! The malformed-envelope corpus (tests/corpus/protobuf) against a live relay: each
//! file as a WebSocket frame from an authenticated twin, and as a federation post.
//! The relay closes the connection with a reason or carries on (answering a ping
//! afterwards), never crashes, refuses every post with a 4xx, and keeps serving a
//! healthy pair after each file.

mod common;

use std::path::PathBuf;

#[path = "corpus/load.rs"]
mod load;
use std::time::Duration;

use common::*;
use rmb_core::proto::Message;
use rmb_core::Address;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;

fn corpus() -> Vec<(String, Vec<u8>)> {
    load::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/protobuf"),
        20,
    )
}

#[tokio::test]
async fn every_malformed_frame_is_refused_and_the_relay_keeps_serving() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let OneRelay { reg, relay, a, b } = one_relay(|_| {}).await;
        let mallory = twin(&reg.url(), rmb_core::KeyType::Ed25519, &[domain(&relay)]).await;
        let mut ca = connect(relay.addr(), &a, None).await;
        let mut cb = connect(relay.addr(), &b, None).await;
        let http = reqwest::Client::new();
        let mut closed = 0;
        for (i, (name, data)) in corpus().into_iter().enumerate() {
            let mut cm = connect(relay.addr(), &mallory, Some("corpus")).await;
            cm.send_raw(WsMessage::Binary(data.clone().into())).await;
            // A ping after the frame: either the relay closed the connection over the
            // frame, or it handled the frame and answers the ping.
            let ping = ping(&mallory);
            let _ = futures_util::SinkExt::send(
                &mut cm.raw.ws,
                WsMessage::Binary(rmb_core::prost::Message::encode_to_vec(&ping).into()),
            )
            .await;
            loop {
                match futures_util::StreamExt::next(&mut cm.raw.ws).await {
                    Some(Ok(WsMessage::Close(frame))) => {
                        let frame = frame.expect("a close frame with a reason");
                        assert_eq!(frame.code, CloseCode::Invalid, "{name}: {frame:?}");
                        closed += 1;
                        break;
                    }
                    Some(Ok(WsMessage::Binary(reply))) => {
                        let env: rmb_core::Envelope =
                            rmb_core::prost::Message::decode(&reply[..]).unwrap();
                        if env.uid == ping.uid {
                            assert!(matches!(env.message, Some(Message::Pong(_))), "{name}");
                            break;
                        }
                        // Otherwise a relay error about the frame itself.
                        relay_error(&env);
                    }
                    Some(Ok(_)) => continue,
                    other => {
                        panic!("{name}: the connection ended without a close frame: {other:?}")
                    }
                }
            }

            let response = http
                .post(format!("http://{}/", relay.addr()))
                .body(data)
                .send()
                .await
                .unwrap();
            let status = response.status();
            assert!(
                status.is_client_error(),
                "{name}: federation post got {status}"
            );

            let req = request(&a, Address::twin(b.id), "x", &[i as u8]);
            ca.send(&req).await;
            assert_eq!(
                cb.recv().await,
                req,
                "{name}: the healthy pair is not served"
            );
        }
        assert!(closed >= 10, "only {closed} frames closed their connection");
        assert_eq!(
            relay.metrics().labelled(
                "rmb_relay_protocol_violations_total",
                "kind=\"undecodable_frame\""
            ),
            closed
        );
    })
    .await
    .expect("the corpus scenario took too long");
}

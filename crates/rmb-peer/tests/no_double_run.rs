//! A receiver that does not de-duplicate (a raw twin, as the original rmb-peer, the Go
//! router and the TypeScript client behave: every copy runs the handler) sees each
//! request pushed through rmb-peer once, however slow its handler (design D1(c)).

mod common;

use std::time::Duration;

use common::*;
use rmb_core::proto::Message;
use rmb_sdk::Resend;
use rmb_testkit::TestRegistrar;

/// The first re-send interval; copies, where allowed, go after 50, 150, 350 ms...
const INTERVAL: Duration = Duration::from_millis(50);
/// The receiver's handler takes longer than the first three intervals together.
const HANDLER: Duration = Duration::from_millis(500);

/// How many envelopes of one request the raw receiver gets while its handler runs,
/// with the peer's policy `resend`. Copies sent while the handler ran are in the
/// receiver's socket before the marker request the app sends after the reply, so
/// counting up to the marker counts them all.
async fn envelopes_seen(resend: Resend) -> usize {
    let reg = TestRegistrar::start().await.unwrap();
    let relay = Relay::start("127.0.0.1", &reg.url()).await;
    let opts = PeerOpts {
        resend,
        resend_interval: INTERVAL,
        ..Default::default()
    };
    let (_a, redis_a) = peer(&reg, &[&relay], opts).await;
    let url = redis_a.url();
    let mut receiver = RawTwin::connect(&reg, &relay).await;
    lpush(
        &url,
        "msgbus.system.local",
        &request("pay", "wallet.pay", "", &[receiver.id], "app.ret"),
    )
    .await;
    let first = receiver.recv().await;
    let uid = first.uid.clone();
    // The handler runs, slower than every re-send interval, then answers.
    tokio::time::sleep(HANDLER).await;
    let answer = receiver.response(&uid, first.source.as_ref().unwrap(), b"paid");
    receiver.send(answer).await;
    let reply = brpop(&url, "app.ret").await;
    assert_eq!(reply["ref"], "pay");
    lpush(
        &url,
        "msgbus.system.local",
        &request("marker", "wallet.balance", "", &[receiver.id], "app.ret"),
    )
    .await;
    let mut seen = 1;
    loop {
        let env = receiver.recv().await;
        match env.message {
            Some(Message::Request(r)) if r.command == "wallet.balance" => return seen,
            _ => {
                assert_eq!(
                    env.uid, uid,
                    "only copies of the first request come between"
                );
                seen += 1;
            }
        }
    }
}

#[tokio::test]
async fn a_receiver_that_does_not_deduplicate_runs_each_request_once() {
    assert_eq!(envelopes_seen(Resend::KnownReceivers).await, 1);
    assert_eq!(envelopes_seen(Resend::Off).await, 1);
}

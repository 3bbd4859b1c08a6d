//! Large messages (issue 11 §3): the original relay takes WebSocket messages of up to
//! 64 MiB, so ours does too; what keeps many of them from taking all the memory is the
//! relay-wide read budget (bytes read from sockets and not yet handed on), not a small
//! message limit.

mod common;

use std::time::Duration;

use common::*;
use rmb_core::prost::Message as _;
use rmb_core::Address;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Room for an envelope's fields around its payload.
const ENVELOPE_OVERHEAD: usize = 4 * KIB;

#[tokio::test]
async fn a_message_of_the_original_relays_limit_goes_through() {
    let setup = one_relay(|_| {}).await;
    let limit = rmb_relay::config::DEFAULT_MAX_ENVELOPE;
    assert_eq!(
        limit,
        64 * MIB,
        "the original relay's limit (tungstenite's default)"
    );
    let mut a = connect(setup.addr(), &setup.a, None).await;
    let mut b = connect(setup.addr(), &setup.b, None).await;
    let body = vec![7u8; limit - ENVELOPE_OVERHEAD];
    let req = request(&setup.a, Address::twin(setup.b.id), "big", &body);
    assert!(req.encoded_len() <= limit);
    a.send(&req).await;
    let got = b.recv().await;
    assert_eq!(got.uid, req.uid);
    assert_eq!(plain(&got).len(), body.len());
    let budget = setup
        .relay
        .handle()
        .read_budget()
        .expect("the relay has a read budget");
    assert!(
        budget.peak() >= body.len(),
        "the message was charged to the read budget while it was read: peak {}",
        budget.peak()
    );
    eventually("the message's bytes are released", || budget.held() == 0).await;
}

#[tokio::test]
async fn one_byte_over_the_limit_is_refused_with_1009() {
    let setup = one_relay(|c| c.max_envelope_size = MIB).await;
    let mut a = connect(setup.addr(), &setup.a, None).await;
    let body = vec![1u8; MIB];
    a.send(&request(&setup.a, Address::twin(setup.b.id), "big", &body))
        .await;
    let close = a.recv_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1009, "{close:?}");
}

#[tokio::test]
async fn many_sessions_sending_near_limit_messages_at_once_are_held_to_the_budget() {
    const SENDERS: usize = 12;
    const BUDGET: usize = 3 * MIB;
    let setup = one_relay(|c| {
        c.max_envelope_size = MIB;
        c.read_budget = BUDGET;
        // Long enough that waiting senders are back-pressured, not refused.
        c.read_budget_wait = Duration::from_secs(60);
    })
    .await;
    let mut b = connect(setup.addr(), &setup.b, None).await;
    let body = vec![3u8; MIB - ENVELOPE_OVERHEAD];
    let mut sends = Vec::new();
    let mut uids = Vec::new();
    for _ in 0..SENDERS {
        let sender = setup.twin().await;
        let mut conn = connect(setup.addr(), &sender, None).await;
        let req = request(&sender, Address::twin(setup.b.id), "big", &body);
        uids.push(req.uid.clone());
        sends.push(tokio::spawn(async move {
            conn.send(&req).await;
            conn
        }));
    }
    let mut received = Vec::new();
    for _ in 0..SENDERS {
        received.push(b.recv().await.uid);
    }
    received.sort();
    uids.sort();
    assert_eq!(received, uids, "every sender's message arrived, once");
    let budget = setup.relay.handle().read_budget().unwrap();
    assert!(
        budget.peak() <= BUDGET,
        "{} bytes held at once, more than the budget of {BUDGET}",
        budget.peak()
    );
    assert!(
        budget.peak() >= MIB / 2,
        "reads were charged: peak {}",
        budget.peak()
    );
    assert_eq!(
        setup.relay.metrics().read_budget_exhausted.get(),
        0,
        "nobody was refused: they waited"
    );
    for send in sends {
        send.await.unwrap();
    }
}

/// A WebSocket session on a raw socket, so a test can stop in the middle of a message.
async fn raw_session(setup: &OneRelay, twin: &Twin) -> TcpStream {
    silent_session(setup.addr(), &token(twin, None)).await
}

/// Sends the head of a masked binary frame of `len` bytes and `sent` bytes of it.
async fn start_message(stream: &mut TcpStream, len: usize, sent: usize) {
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(len as u64).to_be_bytes());
    // A zero mask leaves the payload as sent.
    frame.extend_from_slice(&[0, 0, 0, 0]);
    stream.write_all(&frame).await.unwrap();
    stream.write_all(&vec![0u8; sent]).await.unwrap();
}

#[tokio::test]
async fn sessions_stalled_mid_message_get_back_pressure_then_a_clear_refusal_not_memory() {
    const BUDGET: usize = 3 * MIB;
    let setup = one_relay(|c| {
        c.max_envelope_size = MIB;
        c.read_budget = BUDGET;
        c.read_budget_wait = Duration::from_secs(1);
    })
    .await;
    let budget = setup.relay.handle().read_budget().unwrap().clone();
    // Three sessions each stop 900 KiB into a 1 MiB message: 2.7 MiB of the 3 held.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let twin = setup.twin().await;
        let mut s = raw_session(&setup, &twin).await;
        start_message(&mut s, MIB - KIB, 900 * KIB).await;
        stalled.push(s);
    }
    eventually("the stalled messages are charged", || {
        budget.held() >= 3 * 900 * KIB - 64 * KIB
    })
    .await;
    // An honest session's message does not fit: it waits, then is told why.
    let mut honest = connect(setup.addr(), &setup.a, None).await;
    let body = vec![5u8; 600 * KIB];
    honest
        .send(&request(&setup.a, Address::twin(setup.b.id), "big", &body))
        .await;
    let close = honest.recv_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1013, "try again later: {close:?}");
    assert!(close.reason.contains("out of memory"), "{close:?}");
    assert!(budget.peak() <= BUDGET, "peak {}", budget.peak());
    assert!(setup.relay.metrics().read_budget_exhausted.get() >= 1);

    // When the stalled sessions go, their bytes come back and messages flow again.
    drop(stalled);
    eventually("the stalled sessions' bytes are released", || {
        budget.held() == 0
    })
    .await;
    let mut a = connect(setup.addr(), &setup.a, None).await;
    let mut b = connect(setup.addr(), &setup.b, None).await;
    let req = request(&setup.a, Address::twin(setup.b.id), "big", &body);
    a.send(&req).await;
    assert_eq!(b.recv().await.uid, req.uid);
}

#[tokio::test]
async fn a_federation_post_of_the_limit_is_accepted_and_over_budget_gets_503() {
    let setup = one_relay(|c| {
        c.max_envelope_size = 2 * MIB;
        c.read_budget = 2 * MIB;
        c.read_budget_wait = Duration::from_secs(1);
    })
    .await;
    let mut b = connect(setup.addr(), &setup.b, None).await;
    let body = vec![9u8; 2 * MIB - ENVELOPE_OVERHEAD];
    let req = request(&setup.a, Address::twin(setup.b.id), "big", &body);
    let (status, text) = federation_post(setup.addr(), req.encode_to_vec()).await;
    assert_eq!(status, 202, "{text}");
    assert_eq!(b.recv().await.uid, req.uid);

    // A session holding most of the budget mid-message: a post that needs more waits,
    // then gets 503 (the posting relay retries) rather than a final 4xx.
    let twin = setup.twin().await;
    let mut stalled = raw_session(&setup, &twin).await;
    start_message(&mut stalled, 2 * MIB - KIB, 2 * MIB - 128 * KIB).await;
    let budget = setup.relay.handle().read_budget().unwrap().clone();
    eventually("the stalled message is charged", || {
        budget.held() >= 2 * MIB - 192 * KIB
    })
    .await;
    let req = request(&setup.a, Address::twin(setup.b.id), "big", &body);
    let (status, text) = federation_post(setup.addr(), req.encode_to_vec()).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("out of memory"), "{text}");
    drop(stalled);
}

#[tokio::test]
async fn federation_work_is_capped_in_bytes_toward_a_relay_that_never_answers() {
    // The attack: twin A addresses a twin registered on a relay that accepts
    // connections and never answers. With the memory backend every envelope waits in a
    // delivery task; with 64 MiB envelopes a cap on their count bounds nothing.
    const FEDERATION_BYTES: usize = MIB;
    let setup = one_relay(|c| {
        // (The federation byte bound is at least one largest envelope.)
        c.max_envelope_size = FEDERATION_BYTES;
        c.federation_backlog_bytes = FEDERATION_BYTES;
        c.federation_timeout = Duration::from_secs(600);
    })
    .await;
    let (_silent, y) = twin_on_a_silent_relay(&setup.reg.url()).await;
    let mut a = connect(setup.addr(), &setup.a, None).await;
    let errors = send_distinct_requests(&mut a, &setup.a, Address::twin(y.id), 12, 200 * KIB).await;
    assert!(
        !errors.is_empty(),
        "2.4 MiB entered 1 MiB of federation work"
    );
    assert!(
        errors
            .iter()
            .all(|e| e.contains("federation backlog is full")),
        "{errors:?}"
    );
    assert!(
        errors.len() >= 12 - FEDERATION_BYTES / (200 * KIB),
        "{errors:?}"
    );
    // Local delivery is not affected.
    let mut b = connect(setup.addr(), &setup.b, None).await;
    let req = request(&setup.a, Address::twin(setup.b.id), "x", b"still here");
    a.send(&req).await;
    assert_eq!(b.recv().await.uid, req.uid);
}

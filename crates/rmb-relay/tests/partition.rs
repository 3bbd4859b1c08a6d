//! A network partition between two federating relays, and its healing. Each relay is
//! reached by federation only through a proxy (rmb_testkit::Proxy) that can black-hole
//! traffic: connections are accepted but nothing is forwarded or answered.

mod common;

use std::time::Duration;

use common::*;
use rmb_core::{envelope, Address, KeyType};
use rmb_testkit::{Proxy, TestRelay};

/// The whole scenario's bound.
const SCENARIO: Duration = Duration::from_secs(60);

/// A relay on `ip` whose only domain is `proxy`'s address, then the proxy pointed at it.
async fn relay_behind(ip: &str, registrar: &str, proxy: &Proxy, timeout: Duration) -> TestRelay {
    let relay = TestRelay::start_with(ip, registrar, Some(vec![proxy.addr().to_string()]), |c| {
        c.federation_timeout = timeout;
    })
    .await
    .unwrap();
    proxy.set_target(relay.addr());
    proxy.heal();
    relay
}

#[tokio::test]
async fn partitioned_relays_answer_with_an_error_within_the_ttl_and_recover_when_healed() {
    tokio::time::timeout(SCENARIO, async {
        let reg = registrar().await;
        let url = reg.url();
        let (pa, pb) = (
            Proxy::bind("127.0.0.3").await.unwrap(),
            Proxy::bind("127.0.0.4").await.unwrap(),
        );
        // A federation timeout longer than the request's life below: the relay must
        // still answer before the request expires.
        let federation_timeout = Duration::from_secs(4);
        let ra = relay_behind("127.0.0.1", &url, &pa, federation_timeout).await;
        let rb = relay_behind("127.0.0.2", &url, &pb, federation_timeout).await;
        let a = twin(&url, KeyType::Ed25519, &[pa.addr().to_string()]).await;
        let b = twin(&url, KeyType::Sr25519, &[pb.addr().to_string()]).await;
        let mut ca = connect(ra.addr(), &a, None).await;
        let mut cb = connect(rb.addr(), &b, None).await;

        // Healthy: A → B through B's proxy, and the reply back through A's.
        let before = request(&a, Address::twin(b.id), "x", b"before");
        ca.send(&before).await;
        let got = cb.recv().await;
        assert_eq!(got, before);
        cb.send(&response(&b, &got, b"reply before")).await;
        assert_eq!(plain(&ca.recv().await), b"reply before");
        let forwarded = pb.forwarded();
        assert!(
            forwarded >= 1,
            "federation to B did not go through the proxy"
        );

        pa.partition();
        pb.partition();
        let mut lost = request(&a, Address::twin(b.id), "x", b"during");
        lost.expiration = 2;
        envelope::sign(&mut lost, &a.signer);
        ca.send(&lost).await;
        let err = ca.recv().await;
        assert_eq!(err.uid, lost.uid);
        let message = relay_error(&err);
        // A timeout, not a refused connection: the attempt went into the partition.
        assert!(
            message.contains("could not reach") && message.contains("timeout"),
            "{message}"
        );
        assert!(
            err.timestamp <= lost.timestamp + lost.expiration,
            "the error was written at {} after the request expired at {}: the sender \
             heard nothing within the request's lifetime",
            err.timestamp,
            lost.timestamp + lost.expiration
        );
        assert!(pb.held() >= 1, "the partition held no connection");
        assert_eq!(
            pb.forwarded(),
            forwarded,
            "the partition let traffic through"
        );

        pa.heal();
        pb.heal();
        // Traffic flows again, both ways; the request lost in the partition never
        // arrives late, and nothing arrives twice.
        for i in 0..3u8 {
            let after = request(&a, Address::twin(b.id), "x", &[i]);
            ca.send(&after).await;
            let got = cb.recv().await;
            assert_eq!(got.uid, after.uid, "B got something else first: {got:?}");
            cb.send(&response(&b, &got, &[i, i])).await;
            let reply = ca.recv().await;
            assert_eq!(
                (reply.uid.as_str(), plain(&reply)),
                (after.uid.as_str(), &[i, i][..])
            );
        }
        barrier(&mut cb, &b).await;
        barrier(&mut ca, &a).await;
    })
    .await
    .expect("the partition scenario took too long");
}

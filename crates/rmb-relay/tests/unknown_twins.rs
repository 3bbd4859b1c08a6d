//! Random twin ids against a real relay and a real registrar (issue 12): a flood of
//! federation posts and connection attempts naming twins that do not exist must cost a
//! bounded number of registrar lookups, counted at the registrar itself.

mod common;

use common::*;
use rmb_core::prost::Message as _;
use rmb_core::{Address, KeyType};
use rmb_registrar_client::{ClientConfig, RegistrarClient};
use rmb_testkit::TestRelay;

/// GET lookups of accounts the registrar has answered, from its own metrics.
async fn account_lookups(registrar: &rmb_testkit::TestRegistrar) -> u64 {
    let text = reqwest::get(format!("{}/metrics", registrar.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("registrar_http_requests_total{"))
        .filter(|l| l.contains("method=\"GET\"") && l.contains("accounts"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn a_flood_of_random_unknown_twin_ids_costs_a_bounded_number_of_lookups() {
    const FLOOD: u32 = 300;
    const BURST: u32 = 20;
    let reg = registrar().await;
    // Refilled so slowly that the burst is all the flood can spend.
    let client = RegistrarClient::with_config(
        &reg.url(),
        ClientConfig {
            miss_burst: BURST,
            misses_per_second: 0.001,
            ..ClientConfig::default()
        },
    )
    .unwrap();
    let relay = TestRelay::start_with_client("127.0.0.1", client, None, |_| {})
        .await
        .unwrap();
    let relays = vec![domain(&relay)];
    let a = twin(&reg.url(), KeyType::Ed25519, &relays).await;
    let b = twin(&reg.url(), KeyType::Ed25519, &relays).await;
    // Known twins connect before the flood (their lookups are cached).
    let mut b_conn = connect(relay.addr(), &b, None).await;
    let mut a_conn = connect(relay.addr(), &a, None).await;
    let before = account_lookups(&reg).await;

    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..FLOOD {
        // A twin id nobody registered, different every time, in a post "from" it.
        let fake = Twin {
            id: 1_000_000 + i * 7919,
            signer: a.signer.clone(),
        };
        let env = request(&fake, Address::twin(b.id), "flood", b"x");
        let (status, _) = federation_post(relay.addr(), env.encode_to_vec()).await;
        *statuses.entry(status).or_insert(0u32) += 1;
        // And a session "of" it.
        if i % 10 == 0 {
            let status = refused_status(relay.addr(), &token(&fake, None)).await;
            *statuses.entry(status).or_insert(0u32) += 1;
        }
    }
    let spent = account_lookups(&reg).await - before;
    assert!(
        spent <= u64::from(BURST) + 2,
        "{spent} registrar lookups for {FLOOD} random twin ids (answers: {statuses:?})"
    );
    assert!(
        statuses.keys().all(|s| *s >= 400),
        "every post of an unknown twin was refused: {statuses:?}"
    );
    assert!(
        statuses.contains_key(&503),
        "beyond the budget the answer is 'try again later': {statuses:?}"
    );

    // Known twins are not hurt: their records are cached (or last known).
    let req = request(&a, Address::twin(b.id), "hello", b"after the flood");
    a_conn.send(&req).await;
    assert_eq!(b_conn.recv().await.uid, req.uid);
    let (status, text) = federation_post(
        relay.addr(),
        request(&a, Address::twin(b.id), "hello", b"posted").encode_to_vec(),
    )
    .await;
    assert_eq!(status, 202, "{text}");
}

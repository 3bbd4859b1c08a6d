//! The registrar client against a real server: the API round trip, the cache (hits,
//! invalidation, negative entries, one request for many concurrent misses) and typed
//! errors.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{e2e_key_hex, signer};
use rmb_core::KeyType;
use rmb_registrar_client::{ClientConfig, ClientError, RegistrarClient, Twin};
use rmb_testkit::TestRegistrar;

fn relays(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn e2e_key() -> [u8; 33] {
    hex::decode(e2e_key_hex()).unwrap().try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_update_round_trip() {
    let registrar = TestRegistrar::start().await.unwrap();
    let client = registrar.client();
    let s = signer(KeyType::Sr25519);
    let key = e2e_key();
    let created = client
        .create_account(&s, &relays(&["r1.example"]), Some(key))
        .await
        .unwrap();
    assert_eq!(
        *created,
        Twin {
            twin_id: 1,
            public_key: s.public_key(),
            relays: relays(&["r1.example"]),
            rmb_enc_key: Some(key),
        }
    );
    assert_eq!(client.get_twin(1).await.unwrap(), Some(created.clone()));
    let fresh = registrar.client();
    assert_eq!(fresh.get_twin(1).await.unwrap(), Some(created.clone()));
    assert_eq!(
        fresh.get_twin_by_public_key(&s.public_key()).await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(fresh.get_twin_by_public_key(&[5; 32]).await.unwrap(), None);

    // Two updates in the same second: the client keeps X-Auth timestamps increasing.
    let updated = client
        .update_account(&s, 1, Some(&relays(&["r2.example:8443"])), None)
        .await
        .unwrap();
    assert_eq!(updated.relays, relays(&["r2.example:8443"]));
    assert_eq!(updated.rmb_enc_key, Some(key));
    let new_key = e2e_key();
    let updated = client
        .update_account(&s, 1, None, Some(new_key))
        .await
        .unwrap();
    assert_eq!(updated.rmb_enc_key, Some(new_key));
    assert_eq!(updated.relays, relays(&["r2.example:8443"]));
    // The updating client sees its own change at once; a third client reads it too.
    assert_eq!(client.get_twin(1).await.unwrap(), Some(updated.clone()));
    assert_eq!(registrar.client().get_twin(1).await.unwrap(), Some(updated));
}

#[tokio::test]
async fn hits_do_not_reach_the_server_until_invalidated() {
    let registrar = TestRegistrar::start().await.unwrap();
    let owner = signer(KeyType::Ed25519);
    registrar
        .client()
        .create_account(&owner, &relays(&["old.example"]), None)
        .await
        .unwrap();
    let stats = registrar.server().stats();
    let client = registrar.client();

    let before = stats.lookups();
    let first = client.get_twin(1).await.unwrap().unwrap();
    assert_eq!(stats.lookups(), before + 1);
    let second = client.get_twin(1).await.unwrap().unwrap();
    assert_eq!(
        stats.lookups(),
        before + 1,
        "second get must be a cache hit"
    );
    assert!(Arc::ptr_eq(&first, &second));

    // Another party moves the twin: the cache still answers the old relays...
    registrar
        .client()
        .update_account(&owner, 1, Some(&relays(&["new.example"])), None)
        .await
        .unwrap();
    let before = stats.lookups();
    assert_eq!(
        client.get_twin(1).await.unwrap().unwrap().relays,
        relays(&["old.example"])
    );
    // ...until invalidated.
    client.invalidate(1);
    assert_eq!(
        client.get_twin(1).await.unwrap().unwrap().relays,
        relays(&["new.example"])
    );
    assert_eq!(stats.lookups(), before + 1);
}

#[tokio::test]
async fn unknown_twins_are_cached_negatively() {
    let registrar = TestRegistrar::start().await.unwrap();
    let stats = registrar.server().stats();
    let client = registrar.client();
    let before = stats.lookups();
    assert_eq!(client.get_twin(1).await.unwrap(), None);
    assert_eq!(client.get_twin(1).await.unwrap(), None);
    assert_eq!(stats.lookups(), before + 1, "the miss must be remembered");

    let created = registrar
        .client()
        .create_account(&signer(KeyType::Sr25519), &[], None)
        .await
        .unwrap();
    assert_eq!(created.twin_id, 1);
    assert_eq!(client.get_twin(1).await.unwrap(), None, "negative entry");
    client.invalidate(1);
    assert_eq!(client.get_twin(1).await.unwrap(), Some(created));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_misses_make_one_request() {
    let registrar = TestRegistrar::start().await.unwrap();
    let twin = registrar
        .client()
        .create_account(&signer(KeyType::Ed25519), &relays(&["r.example"]), None)
        .await
        .unwrap();
    let stats = registrar.server().stats();

    for (id, expected) in [(twin.twin_id, Some(twin.clone())), (77, None)] {
        let client = registrar.client();
        let before = stats.lookups();
        let barrier = Arc::new(tokio::sync::Barrier::new(50));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (client, barrier) = (client.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    client.get_twin(id).await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), expected);
        }
        assert_eq!(stats.lookups(), before + 1, "twin {id}");
    }
}

#[tokio::test]
async fn ensure_account_creates_then_converges() {
    let registrar = TestRegistrar::start().await.unwrap();
    let client = registrar.client();
    let s = signer(KeyType::Sr25519);
    let created = client
        .ensure_account(&s, &relays(&["a.example", "b.example"]), None)
        .await
        .unwrap();
    assert_eq!(created.twin_id, 1);

    // Same relays in another order: nothing to change.
    let same = client
        .ensure_account(&s, &relays(&["b.example", "a.example"]), None)
        .await
        .unwrap();
    assert_eq!(same, created);

    let key = e2e_key();
    let changed = client
        .ensure_account(&s, &relays(&["c.example"]), Some(key))
        .await
        .unwrap();
    assert_eq!(changed.twin_id, 1);
    assert_eq!(changed.relays, relays(&["c.example"]));
    assert_eq!(changed.rmb_enc_key, Some(key));
    // What the registrar stores, seen by a client with an empty cache.
    assert_eq!(registrar.client().get_twin(1).await.unwrap(), Some(changed));
}

#[tokio::test]
async fn refusals_are_typed_with_the_server_message() {
    let registrar = TestRegistrar::start().await.unwrap();
    let client = registrar.client();
    let s = signer(KeyType::Ed25519);
    client.create_account(&s, &[], None).await.unwrap();

    match client.create_account(&s, &[], None).await {
        Err(ClientError::Rejected {
            status: 409,
            message,
        }) => {
            assert!(message.contains("already registered"), "{message}")
        }
        other => panic!("expected 409, got {other:?}"),
    }
    match client
        .update_account(&signer(KeyType::Ed25519), 1, Some(&[]), None)
        .await
    {
        Err(ClientError::Rejected {
            status: 401,
            message,
        }) => {
            assert!(message.contains("signature"), "{message}")
        }
        other => panic!("expected 401, got {other:?}"),
    }
    match client
        .update_account(&s, 1, Some(&relays(&["bad host"])), None)
        .await
    {
        Err(ClientError::Rejected {
            status: 422,
            message,
        }) => {
            assert!(message.contains("bad host"), "{message}")
        }
        other => panic!("expected 422, got {other:?}"),
    }
    match client
        .create_account(&signer(KeyType::Sr25519), &relays(&["x"; 9]), None)
        .await
    {
        Err(ClientError::Rejected { status: 422, .. }) => {}
        other => panic!("expected 422, got {other:?}"),
    }
}

#[tokio::test]
async fn transport_failures_are_typed() {
    for bad in ["not a url", "ftp://127.0.0.1/", "http://"] {
        assert!(matches!(
            RegistrarClient::new(bad),
            Err(ClientError::InvalidUrl(_))
        ));
    }

    // Nothing listens: unreachable.
    let port = rmb_testkit::free_port();
    let client = RegistrarClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    assert!(matches!(
        client.get_twin(1).await,
        Err(ClientError::Unreachable(_))
    ));

    // Accepts and never answers: timeout (errors are not cached, so it asks again).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let config = ClientConfig {
        timeout: Duration::from_millis(200),
        ..ClientConfig::default()
    };
    let client = RegistrarClient::with_config(&format!("http://{addr}"), config).unwrap();
    assert_eq!(client.get_twin(1).await, Err(ClientError::Timeout));
    assert_eq!(client.get_twin(1).await, Err(ClientError::Timeout));
    hold.abort();

    // Answers something that is not an account.
    let app = axum::Router::new().route("/v1/accounts/", axum::routing::get(|| async { "hello" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = RegistrarClient::new(&format!("http://{addr}/")).unwrap();
    assert!(matches!(
        client.get_twin(1).await,
        Err(ClientError::BadResponse(_))
    ));
    server.abort();
}

#[tokio::test]
async fn known_twins_are_served_from_the_last_record_while_the_registrar_is_down() {
    let mut registrar = TestRegistrar::start().await.unwrap();
    let known = registrar
        .client()
        .create_account(&signer(KeyType::Ed25519), &relays(&["r.example"]), None)
        .await
        .unwrap();
    let never_looked_up = registrar
        .client()
        .create_account(&signer(KeyType::Ed25519), &[], None)
        .await
        .unwrap();
    // No fresh cache at all: every lookup asks the registrar.
    let config = |stale_ttl| ClientConfig {
        cache_ttl: Duration::ZERO,
        negative_ttl: Duration::ZERO,
        stale_ttl,
        ..ClientConfig::default()
    };
    let client =
        RegistrarClient::with_config(&registrar.url(), config(Duration::from_secs(3600))).unwrap();
    let no_fallback =
        RegistrarClient::with_config(&registrar.url(), config(Duration::ZERO)).unwrap();
    for c in [&client, &no_fallback] {
        let found = c.get_twin(known.twin_id).await.unwrap().unwrap();
        assert_eq!(*found, *known);
    }
    registrar.shutdown().await.unwrap();

    let stale = client.get_twin(known.twin_id).await.unwrap().unwrap();
    assert_eq!(
        *stale, *known,
        "the last record stands in for the registrar"
    );
    let unknown = client.get_twin(never_looked_up.twin_id).await.unwrap_err();
    assert!(unknown.is_outage(), "{unknown}");
    let without = no_fallback.get_twin(known.twin_id).await.unwrap_err();
    assert!(without.is_outage(), "{without}");
}

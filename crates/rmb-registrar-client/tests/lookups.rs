//! Lookups of twins an attacker names (random twin ids in JWTs and federation posts,
//! relay names of the attacker's own choosing): one request per twin however many ask
//! at once, negative answers cached, the cache bounded in bytes, and at most
//! `max_concurrent_misses` lookups at the registrar at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rmb_core::{KeyType, Signer};
use rmb_registrar_client::{ClientConfig, RegistrarClient};
use rmb_testkit::TestRegistrar;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_lookups_of_one_unknown_twin_cost_one_request() {
    let registrar = TestRegistrar::start().await.unwrap();
    let stats = registrar.server().stats();
    let client = registrar.client();
    let barrier = Arc::new(tokio::sync::Barrier::new(200));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (client, barrier) = (client.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                client.get_twin(3_000_000_007).await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), None);
    }
    assert_eq!(stats.lookups(), 1, "200 lookups, one request");
    // And the answer is cached: asking again costs nothing.
    assert_eq!(client.get_twin(3_000_000_007).await.unwrap(), None);
    assert_eq!(stats.lookups(), 1);
}

#[tokio::test]
async fn random_unknown_twins_keep_the_cache_within_its_bytes() {
    let registrar = TestRegistrar::start().await.unwrap();
    let budget = 16 * 1024;
    let client = RegistrarClient::with_config(
        &registrar.url(),
        ClientConfig {
            cache_bytes: budget,
            negative_ttl: Duration::from_secs(3600),
            // This test is about the cache's bytes, not the budget for lookups of
            // unknown twins (that has its own test): let all 2 000 through.
            miss_burst: 10_000,
            ..ClientConfig::default()
        },
    )
    .unwrap();
    for _ in 0..2_000 {
        let id = rand::random::<u32>() | 1 << 31;
        assert_eq!(client.get_twin(id).await.unwrap(), None);
    }
    let weight = client.cache_weight();
    assert!(weight > 0, "negative answers are cached");
    assert!(weight <= budget, "{weight} bytes cached, budget {budget}");
}

#[tokio::test]
async fn twins_with_the_longest_relay_names_keep_the_cache_within_its_bytes() {
    let registrar = TestRegistrar::start().await.unwrap();
    // 8 relays of 253-byte names: what an attacker registers to make its record big.
    let label = "a".repeat(63);
    let relays: Vec<String> = (0..8)
        .map(|i| format!("{i}{}.{label}.{label}.{}", &label[1..], &label[..61]))
        .collect();
    assert!(relays.iter().all(|r| r.len() == 253));
    let owner = registrar.client();
    let mut ids = Vec::new();
    for _ in 0..40 {
        let s = Signer::from_seed(&rand::random::<[u8; 32]>(), KeyType::Ed25519).unwrap();
        ids.push(
            owner
                .create_account(&s, &relays, None)
                .await
                .unwrap()
                .twin_id,
        );
    }
    let budget = 16 * 1024;
    let client = RegistrarClient::with_config(
        &registrar.url(),
        ClientConfig {
            cache_bytes: budget,
            ..ClientConfig::default()
        },
    )
    .unwrap();
    for id in &ids {
        let twin = client.get_twin(*id).await.unwrap().unwrap();
        assert_eq!(twin.relays, relays);
    }
    let weight = client.cache_weight();
    // 40 records of over 2 KiB each were read: the cache kept only what fits.
    assert!(weight > 2048, "found twins are cached: {weight}");
    assert!(weight <= budget, "{weight} bytes cached, budget {budget}");
}

/// A registrar that counts the lookups it holds open and answers each `404` only when
/// the test hands out a permit.
struct HeldRegistrar {
    url: String,
    open: Arc<AtomicUsize>,
    most_open: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    permits: Arc<Semaphore>,
}

impl HeldRegistrar {
    async fn start() -> HeldRegistrar {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let held = HeldRegistrar {
            url,
            open: Arc::default(),
            most_open: Arc::default(),
            answered: Arc::default(),
            permits: Arc::new(Semaphore::new(0)),
        };
        let (open, most_open, answered, permits) = (
            held.open.clone(),
            held.most_open.clone(),
            held.answered.clone(),
            held.permits.clone(),
        );
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let (open, most_open, answered, permits) = (
                    open.clone(),
                    most_open.clone(),
                    answered.clone(),
                    permits.clone(),
                );
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = socket.read(&mut buf).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                    }
                    let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
                    most_open.fetch_max(now_open, Ordering::SeqCst);
                    permits.acquire().await.unwrap().forget();
                    open.fetch_sub(1, Ordering::SeqCst);
                    let body = "{\"error\":\"account not found\"}";
                    let answer = format!(
                        "HTTP/1.1 404 Not Found\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    // Counted before the write: the client may read the answer (and the
                    // test check the count) before this task runs again.
                    answered.fetch_add(1, Ordering::SeqCst);
                    socket.write_all(answer.as_bytes()).await.unwrap();
                });
            }
        });
        held
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_unknown_twins_keeps_few_lookups_at_the_registrar() {
    let registrar = HeldRegistrar::start().await;
    let client = RegistrarClient::with_config(
        &registrar.url,
        ClientConfig {
            timeout: Duration::from_secs(60),
            max_concurrent_misses: 2,
            ..ClientConfig::default()
        },
    )
    .unwrap();
    let lookups: Vec<_> = (0..20u32)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.get_twin(1_000 + i).await })
        })
        .collect();
    // Wait until the registrar holds two lookups, then let every answer go.
    while registrar.open.load(Ordering::SeqCst) < 2 {
        tokio::task::yield_now().await;
    }
    registrar.permits.add_permits(20);
    for lookup in lookups {
        assert_eq!(lookup.await.unwrap().unwrap(), None);
    }
    assert_eq!(registrar.answered.load(Ordering::SeqCst), 20);
    assert_eq!(
        registrar.most_open.load(Ordering::SeqCst),
        2,
        "at most two lookups at the registrar at once"
    );
}

/// A registrar that gives every request the same raw answer.
async fn answering(answer: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test]
async fn a_hostile_registrar_cannot_send_a_huge_answer_or_redirect_us() {
    let huge = format!(
        "{{\"twin_id\":5,\"public_key\":\"{}\"}}",
        "A".repeat(1 << 20)
    );
    let url = answering(format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{huge}",
        huge.len()
    ))
    .await;
    let client = RegistrarClient::new(&url).unwrap();
    match client.get_twin(5).await {
        Err(rmb_registrar_client::ClientError::BadResponse(message)) => {
            assert!(message.contains("larger than"), "{message}")
        }
        other => panic!("a 1 MiB answer must be refused, got {other:?}"),
    }
    // A redirect to an internal address is not followed (it would also carry updates
    // elsewhere).
    let internal = HeldRegistrar::start().await;
    let url = answering(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: {}/v1/accounts/?twin_id=5\r\nContent-Length: 0\r\n\r\n",
        internal.url
    ))
    .await;
    let client = RegistrarClient::new(&url).unwrap();
    assert!(client.get_twin(5).await.is_err());
    assert_eq!(internal.open.load(Ordering::SeqCst), 0);
    assert_eq!(internal.answered.load(Ordering::SeqCst), 0);
}

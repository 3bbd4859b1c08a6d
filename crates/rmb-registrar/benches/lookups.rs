//! Registrar lookup throughput (run: `cargo bench -p rmb-registrar --bench lookups`).
//!
//! 1. HTTP lookups by twin id with 64 concurrent keep-alive clients against a registrar
//!    on a SQLite file (the server has no read cache: every lookup is a database query);
//!    in the same run and on the same runtime, a baseline: a trivial axum handler
//!    answering a constant account JSON, so the numbers say what the registrar costs on
//!    top of HTTP on this machine.
//! 2. `RegistrarClient::get_twin` on a cached twin: the per-lookup cost a relay pays.
//!
//! The load generator is a minimal HTTP/1.1 client on raw sockets in the same process,
//! so its own cost is small but shares the machine's cores with the server.
//! `RMB_BENCH_SECONDS` sets the length of each HTTP run (default 5).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Json, Router};
use rmb_core::{KeyType, Signer};
use rmb_registrar::Config;
use rmb_registrar_client::RegistrarClient;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const CLIENTS: usize = 64;
const TWINS: u32 = 1000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let seconds: u64 = std::env::var("RMB_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let duration = Duration::from_secs(seconds);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "registrar lookups: {CLIENTS} concurrent clients, {TWINS} twins, {seconds} s per run, {workers} runtime workers"
    );

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.db").to_string_lossy().into_owned();

    // Populate through the API (and the client), then measure.
    let (server, url) = start(Config::new(db)).await;
    let client = RegistrarClient::new(&url).unwrap();
    for i in 0..TWINS {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&i.to_le_bytes());
        let signer = Signer::from_seed(&seed, KeyType::Sr25519).unwrap();
        let relays = vec![format!("relay{}.example.com", i % 4)];
        client.create_account(&signer, &relays, None).await.unwrap();
    }
    let sample = client.get_twin(1).await.unwrap().unwrap();

    let registrar = load(server.local_addr(), duration).await;
    report("registrar, SQLite, uncached", registrar);

    // Baseline: the same response shape from a constant.
    let constant = serde_json::json!({
        "twin_id": 1, "public_key": base64_key(&sample.public_key), "relays": sample.relays,
        "rmb_enc_key": null, "created_at": 1_700_000_000u64, "updated_at": 1_700_000_000u64,
    });
    let app = Router::new().route(
        "/v1/accounts/",
        get(move || {
            let body = constant.clone();
            async move { Json(body) }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let baseline_addr = listener.local_addr().unwrap();
    let baseline_task = tokio::spawn(async move { axum::serve(listener, app).await });
    let baseline = load(baseline_addr, duration).await;
    report("baseline: axum constant JSON", baseline);
    baseline_task.abort();

    println!("registrar/baseline: {:.0}%", 100.0 * registrar / baseline);

    // Client cache: the cost of a hit.
    let client = RegistrarClient::new(&server.url()).unwrap();
    client.get_twin(1).await.unwrap().unwrap();
    let before = server.stats().lookups();
    let n = 2_000_000u32;
    let started = Instant::now();
    for _ in 0..n {
        let twin = client.get_twin(1).await.unwrap();
        std::hint::black_box(twin);
    }
    let per_hit = started.elapsed().as_nanos() as f64 / f64::from(n);
    assert_eq!(
        server.stats().lookups(),
        before,
        "hits must not reach the server"
    );
    println!("client cache hit, one task: {per_hit:.0} ns per get_twin");

    // Warm every twin first so the timed run is all hits.
    hit_from_all_clients(&client, n).await;
    let started = Instant::now();
    hit_from_all_clients(&client, n).await;
    let elapsed = started.elapsed();
    let total = f64::from(n / CLIENTS as u32 * CLIENTS as u32);
    println!(
        "client cache hit, {CLIENTS} tasks over {TWINS} twins: {:.0} ns per get_twin ({:.1} M lookups/s)",
        elapsed.as_nanos() as f64 / total,
        total / elapsed.as_secs_f64() / 1e6
    );
    server.shutdown().await.unwrap();
}

/// `n` lookups spread over `CLIENTS` tasks, each walking through the twins.
async fn hit_from_all_clients(client: &RegistrarClient, n: u32) {
    let tasks: Vec<_> = (0..CLIENTS as u32)
        .map(|t| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..n / CLIENTS as u32 {
                    let id = 1 + (i + t) % TWINS;
                    std::hint::black_box(client.get_twin(id).await.unwrap());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

async fn start(config: Config) -> (rmb_registrar::ServerHandle, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = rmb_registrar::serve(listener, config).await.unwrap();
    let url = server.url();
    (server, url)
}

fn base64_key(key: &[u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(key)
}

fn report(what: &str, per_second: f64) {
    println!("{what}: {per_second:.0} lookups/s");
}

/// Runs `CLIENTS` keep-alive connections asking for twins 1..=TWINS in turn for
/// `duration` (after a 1 s warm-up); returns successful lookups per second.
async fn load(addr: std::net::SocketAddr, duration: Duration) -> f64 {
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (counting, stop, done) = (counting.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let mut stream = BufReader::new(stream);
                let mut line = String::new();
                let mut body = Vec::new();
                let mut i = c as u32;
                while !stop.load(Ordering::Relaxed) {
                    let id = 1 + i % TWINS;
                    i += CLIENTS as u32;
                    let request =
                        format!("GET /v1/accounts/?twin_id={id} HTTP/1.1\r\nHost: bench\r\n\r\n");
                    stream
                        .get_mut()
                        .write_all(request.as_bytes())
                        .await
                        .unwrap();
                    // Status line, headers, body by Content-Length.
                    line.clear();
                    stream.read_line(&mut line).await.unwrap();
                    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
                    let mut length = 0usize;
                    loop {
                        line.clear();
                        stream.read_line(&mut line).await.unwrap();
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    body.resize(length, 0);
                    stream.read_exact(&mut body).await.unwrap();
                    if counting.load(Ordering::Relaxed) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    let count = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    count as f64 / elapsed.as_secs_f64()
}

//! `rmb-bench peer`: round trips through (a) SDK → relay → SDK and (b) the full rmb-peer
//! path app → Redis → rmb-peer → relay → rmb-peer → Redis → service and back, against
//! a bare Redis LPUSH/BRPOP ping-pong (the floor for path b), all in the same run.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use redis::AsyncCommands;
use rmb_core::peer_api::{
    self, IncomingRequest, IncomingResponse, OutgoingRequest, OutgoingResponse,
};
use rmb_core::KeyType;
use rmb_peer::{Peer, PeerConfig};
use rmb_sdk::Client;
use rmb_testkit::{RedisServer, TestRegistrar, TestRelay};
use serde::Serialize;

use crate::load::LoadResult;

#[derive(Args, Debug)]
pub struct PeerArgs {
    /// Round trips in flight (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    in_flight: Vec<usize>,
    /// Payload bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Seconds measured per scenario (after a 1 s warm-up).
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Service workers popping requests (the same for the baseline).
    #[arg(long, default_value_t = 8)]
    workers: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    path: String,
    in_flight: usize,
    round_trips_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    ratio_to_redis_baseline: f64,
}

/// Runs `op` in `concurrency` loops; counts and times round trips during the window.
async fn closed_loop<F, Fut>(
    concurrency: usize,
    duration: Duration,
    op: F,
) -> anyhow::Result<LoadResult>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let (op, measuring, stop) = (op.clone(), measuring.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                op(i).await?;
                if measuring.load(Ordering::Relaxed) {
                    samples.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
            }
            anyhow::Ok(samples)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    measuring.store(true, Ordering::SeqCst);
    let start = Instant::now();
    tokio::time::sleep(duration).await;
    measuring.store(false, Ordering::SeqCst);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut latencies_us = Vec::new();
    for t in tasks {
        latencies_us.extend(t.await??);
    }
    latencies_us.sort_unstable();
    Ok(LoadResult {
        messages: latencies_us.len() as u64,
        elapsed,
        latencies_us,
    })
}

async fn conn(redis: &RedisServer) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    Ok(redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?)
}

pub async fn run(args: PeerArgs) -> anyhow::Result<()> {
    let duration = Duration::from_secs(args.duration);
    let payload = vec![b'x'; args.size];
    let registrar = TestRegistrar::start().await?;
    let relay = TestRelay::start("127.0.0.1", &registrar.url()).await?;
    let redis_a = RedisServer::start()?;
    let redis_b = RedisServer::start()?;
    let mut rows = Vec::new();

    // (a) SDK → relay → SDK.
    let secret = |b: u8| format!("0x{}", hex_byte(b).repeat(32));
    let sdk_server = Client::builder(secret(0x51), KeyType::Sr25519)
        .registrar(registrar.url())
        .relays([relay.ws_url()])
        .build()
        .await?;
    sdk_server.handle("bench.echo", |req| async move { Ok(req.payload) });
    let sdk_caller = Arc::new(
        Client::builder(secret(0x52), KeyType::Sr25519)
            .registrar(registrar.url())
            .relays([relay.ws_url()])
            .build()
            .await?,
    );
    sdk_caller.wait_connected(1, Duration::from_secs(10)).await;
    sdk_server.wait_connected(1, Duration::from_secs(10)).await;

    // (b) two rmb-peers, each with its own Redis, and a service on B's Redis.
    let peer_a = Peer::start(PeerConfig::new(
        secret(0x61),
        KeyType::Sr25519,
        vec![relay.ws_url()],
        redis_a.url(),
        registrar.url(),
    ))
    .await?;
    let peer_b = Peer::start(PeerConfig::new(
        secret(0x62),
        KeyType::Sr25519,
        vec![relay.ws_url()],
        redis_b.url(),
        registrar.url(),
    ))
    .await?;
    peer_a
        .client()
        .wait_connected(1, Duration::from_secs(10))
        .await;
    peer_b
        .client()
        .wait_connected(1, Duration::from_secs(10))
        .await;
    let twin_b = peer_b.twin_id();
    let stop_service = Arc::new(AtomicBool::new(false));
    for _ in 0..args.workers {
        let mut c = conn(&redis_b).await?;
        let stop = stop_service.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let popped: Option<(String, String)> =
                    c.brpop(peer_api::command_list("bench.echo"), 1.0).await?;
                let Some((_, raw)) = popped else { continue };
                let req: IncomingRequest = serde_json::from_str(&raw)?;
                let reply = OutgoingResponse {
                    version: 1,
                    reference: req.reference,
                    data: req.data,
                    destination: req.source,
                    schema: req.schema,
                    timestamp: rmb_core::time::now(),
                    error: None,
                };
                let _: () = c
                    .lpush(peer_api::SYSTEM_REPLY, serde_json::to_string(&reply)?)
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    // Baseline service: pop "ret|payload", push the payload to ret.
    for _ in 0..args.workers {
        let mut c = conn(&redis_b).await?;
        let stop = stop_service.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let popped: Option<(String, Vec<u8>)> = c.brpop("bench.ping", 1.0).await?;
                let Some((_, raw)) = popped else { continue };
                let split = raw.iter().position(|b| *b == b'|').unwrap_or(0);
                let ret = String::from_utf8_lossy(&raw[..split]).into_owned();
                let _: () = c.lpush(ret, &raw[split + 1..]).await?;
            }
            anyhow::Ok(())
        });
    }

    for &n in &args.in_flight {
        eprintln!("measuring with {n} in flight ...");
        // Baseline: bare Redis ping-pong through the service's Redis.
        let mut conns = Vec::new();
        for _ in 0..n {
            conns.push(conn(&redis_b).await?);
        }
        let conns = Arc::new(conns);
        let body = payload.clone();
        let base = closed_loop(n, duration, move |i| {
            let mut c = conns[i].clone();
            let mut msg = format!("bench.pong.{i}|").into_bytes();
            msg.extend_from_slice(&body);
            async move {
                let _: () = c.lpush("bench.ping", msg).await?;
                let _: Option<(String, Vec<u8>)> = c.brpop(format!("bench.pong.{i}"), 10.0).await?;
                Ok(())
            }
        })
        .await?;
        let base_rate = base.rate();
        rows.push(row(
            "bare redis LPUSH/BRPOP ping-pong (baseline)",
            n,
            &base,
            base_rate,
        ));

        let caller = sdk_caller.clone();
        let body = payload.clone();
        let twin = sdk_server.twin_id();
        let sdk = closed_loop(n, duration, move |_| {
            let (caller, body) = (caller.clone(), body.clone());
            async move {
                caller
                    .call(twin, "bench.echo", body, Duration::from_secs(10))
                    .await?;
                Ok(())
            }
        })
        .await?;
        rows.push(row("(a) SDK → relay → SDK", n, &sdk, base_rate));

        let mut conns = Vec::new();
        for _ in 0..n {
            conns.push(conn(&redis_a).await?);
        }
        let conns = Arc::new(conns);
        let data = peer_api::encode_data(&payload);
        let peer = closed_loop(n, duration, move |i| {
            let mut c = conns[i].clone();
            let ret = format!("bench.ret.{i}");
            let request = OutgoingRequest {
                version: 1,
                reference: Some(i.to_string()),
                command: "bench.echo".into(),
                expiration: 60,
                data: data.clone(),
                tags: None,
                destinations: vec![twin_b],
                reply_to: ret.clone(),
                schema: None,
                timestamp: rmb_core::time::now(),
            };
            async move {
                let _: () = c
                    .lpush(peer_api::SYSTEM_LOCAL, serde_json::to_string(&request)?)
                    .await?;
                let popped: Option<(String, String)> = c.brpop(&ret, 10.0).await?;
                let (_, raw) = popped.ok_or_else(|| anyhow::anyhow!("no reply within 10 s"))?;
                let reply: IncomingResponse = serde_json::from_str(&raw)?;
                if let Some(err) = reply.error {
                    anyhow::bail!("reply error {}: {}", err.code, err.message);
                }
                Ok(())
            }
        })
        .await?;
        rows.push(row(
            "(b) app → redis → rmb-peer → relay → rmb-peer → redis → service",
            n,
            &peer,
            base_rate,
        ));
    }
    stop_service.store(true, Ordering::SeqCst);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("payload {} B, {} s measured after 1 s warm-up, {} service workers, sr25519 twins with e2e", args.size, args.duration, args.workers);
        println!("| path | in flight | round trips/s | p50 ms | p99 ms | vs redis ping-pong |");
        println!("|---|---:|---:|---:|---:|---:|");
        for r in &rows {
            println!(
                "| {} | {} | {:.0} | {:.2} | {:.2} | {:.0}% |",
                r.path,
                r.in_flight,
                r.round_trips_per_sec,
                r.p50_ms,
                r.p99_ms,
                r.ratio_to_redis_baseline * 100.0
            );
        }
    }
    peer_a.shutdown().await;
    peer_b.shutdown().await;
    Ok(())
}

fn row(path: &str, in_flight: usize, r: &LoadResult, base: f64) -> Row {
    Row {
        path: path.into(),
        in_flight,
        round_trips_per_sec: r.rate(),
        p50_ms: r.percentile(0.5),
        p99_ms: r.percentile(0.99),
        ratio_to_redis_baseline: r.rate() / base,
    }
}

fn hex_byte(b: u8) -> String {
    format!("{b:02x}")
}

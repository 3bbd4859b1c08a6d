//! `rmb-bench peer`: round trips through (a) SDK → relay → SDK and (b) the full rmb-peer
//! path app → Redis → rmb-peer → relay → rmb-peer → Redis → service and back, against
//! a bare Redis LPUSH/BRPOP ping-pong (the floor for path b), all in the same run.
//! `rmb-bench soak`: path (b) at a fixed rate for minutes, counting every reply and
//! watching the memory of the relay and both peers.
//!
//! The relay and both rmb-peers are child processes (so their CPU and RSS are their
//! own); the SDK clients, the service workers and the apps run in this process.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use dashmap::DashMap;
use redis::AsyncCommands;
use rmb_core::peer_api::{
    self, IncomingRequest, IncomingResponse, OutgoingRequest, OutgoingResponse,
};
use rmb_core::KeyType;
use rmb_sdk::Client;
use rmb_testkit::{RedisServer, TestRegistrar};

use crate::load::{closed_loop, LoadResult};
use crate::proc_stats;
use crate::report::{Common, Meter, Row, Table};
use crate::servers::{listen_addr, Server};

#[derive(Args, Debug, Clone)]
pub(crate) struct PeerArgs {
    /// Round trips in flight (comma separated).
    #[arg(
        long,
        alias = "concurrency",
        value_delimiter = ',',
        default_value = "1,64"
    )]
    pub in_flight: Vec<usize>,
    /// Service workers popping requests (the same for the baseline).
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// End-to-end encryption between the twins: on or off.
    #[arg(long, default_value = "on", value_parser = on_off, action = clap::ArgAction::Set)]
    pub e2e: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct SoakArgs {
    /// Round trips started per second (open loop: the rate does not wait for replies).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Seconds to run.
    #[arg(long, default_value_t = 300)]
    pub duration: u64,
    /// Seconds between memory samples.
    #[arg(long, default_value_t = 30)]
    pub sample_every: u64,
    /// Payload bytes.
    #[arg(long, default_value_t = 1024)]
    pub payload: usize,
    /// Service workers popping requests.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    #[arg(long, default_value = "sr25519")]
    pub key_type: KeyType,
    /// End-to-end encryption between the twins: on or off.
    #[arg(long, default_value = "on", value_parser = on_off, action = clap::ArgAction::Set)]
    pub e2e: bool,
    /// Also write the results as JSON to this file (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<std::path::PathBuf>,
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("expected on or off, not {s:?}")),
    }
}

async fn conn(redis: &RedisServer) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    Ok(redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?)
}

fn random_secret() -> String {
    let seed: [u8; 32] = rand::random();
    let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    format!("0x{hex}")
}

/// A registrar, a relay, two redis-servers (one per peer, as on two hosts), two
/// rmb-peers and a service answering `bench.echo` on B's Redis.
struct PeerNet {
    registrar: TestRegistrar,
    relay: Server,
    redis_a: RedisServer,
    redis_b: RedisServer,
    peer_a: Server,
    peer_b: Server,
    twin_b: u32,
    stop: Arc<AtomicBool>,
}

impl PeerNet {
    async fn start(key_type: KeyType, e2e: bool, workers: usize) -> anyhow::Result<PeerNet> {
        let registrar = TestRegistrar::start().await?;
        let listen = listen_addr();
        // Clients register the relay's host:port as their relay: serve that domain.
        let relay = Server::relay(&listen, &registrar.url(), None, &[&listen]).await?;
        let redis_a = RedisServer::start()?;
        let redis_b = RedisServer::start()?;
        let peer = |redis: &RedisServer| {
            let args = [
                "serve-peer".to_string(),
                "--secret".into(),
                random_secret(),
                "--key-type".into(),
                key_type.to_string(),
                "--relay".into(),
                format!("ws://{}", relay.addr),
                "--redis".into(),
                redis.url(),
                "--registrar".into(),
                registrar.url(),
                "--e2e".into(),
                e2e.to_string(),
            ];
            async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Server::spawn(&args).await
            }
        };
        let peer_a = peer(&redis_a).await?;
        let peer_b = peer(&redis_b).await?;
        let twin_b = peer_b.addr.parse()?;
        let net = PeerNet {
            registrar,
            relay,
            redis_a,
            redis_b,
            peer_a,
            peer_b,
            twin_b,
            stop: Arc::default(),
        };
        net.serve_echo(workers).await?;
        Ok(net)
    }

    /// `workers` service workers answering `bench.echo` through B's Redis (the §4
    /// service side), and as many baseline workers popping `bench.ping`.
    async fn serve_echo(&self, workers: usize) -> anyhow::Result<()> {
        for _ in 0..workers {
            let mut c = conn(&self.redis_b).await?;
            let stop = self.stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let popped: Option<(String, String)> =
                        c.brpop(peer_api::command_list("bench.echo"), 1.0).await?;
                    let Some((_, raw)) = popped else { continue };
                    let req: IncomingRequest = serde_json::from_str(&raw)?;
                    let reply = echo_reply(req);
                    let _: () = c
                        .lpush(peer_api::SYSTEM_REPLY, serde_json::to_string(&reply)?)
                        .await?;
                }
                anyhow::Ok(())
            });
        }
        // Baseline service: pop "ret|payload", push the payload to ret.
        for _ in 0..workers {
            let mut c = conn(&self.redis_b).await?;
            let stop = self.stop.clone();
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
        Ok(())
    }

    /// A §4 request for `bench.echo` on twin B, answered on `ret`.
    fn request(&self, data: &str, reference: String, ret: &str) -> OutgoingRequest {
        OutgoingRequest {
            version: 1,
            reference: Some(reference),
            command: "bench.echo".into(),
            expiration: 60,
            data: data.to_string(),
            tags: None,
            destinations: vec![self.twin_b],
            reply_to: ret.to_string(),
            schema: None,
            timestamp: rmb_core::time::now(),
        }
    }

    fn processes(&self) -> Vec<(&'static str, u32)> {
        vec![
            ("relay", self.relay.pid()),
            ("peer A", self.peer_a.pid()),
            ("peer B", self.peer_b.pid()),
        ]
    }

    /// Both redis-servers, when they can be found.
    fn redis_processes(&self) -> Vec<(&'static str, u32)> {
        let a = proc_stats::redis_pid(self.redis_a.port()).map(|pid| ("redis A", pid));
        let b = proc_stats::redis_pid(self.redis_b.port()).map(|pid| ("redis B", pid));
        a.into_iter().chain(b).collect()
    }
}

impl Drop for PeerNet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

pub(crate) async fn run(args: PeerArgs) -> anyhow::Result<Vec<Table>> {
    let c = &args.common;
    let (warmup, duration) = (c.warmup(), c.duration());
    let payload = vec![b'x'; c.payload];
    let net = Arc::new(PeerNet::start(c.key_type, args.e2e, args.workers).await?);

    // (a) SDK → relay → SDK, in this process.
    let relay_url = format!("ws://{}", net.relay.addr);
    let sdk = |secret: String| {
        Client::builder(secret, c.key_type)
            .registrar(net.registrar.url())
            .relays([relay_url.clone()])
            .e2e(args.e2e)
            .build()
    };
    let sdk_server = sdk(random_secret()).await?;
    sdk_server.handle("bench.echo", |req| async move { Ok(req.payload) });
    let sdk_caller = Arc::new(sdk(random_secret()).await?);
    sdk_caller.wait_connected(1, Duration::from_secs(10)).await;
    sdk_server.wait_connected(1, Duration::from_secs(10)).await;

    let mut t = Table {
        bench: "peer".into(),
        title: "Round trips through the SDK and rmb-peer".into(),
        setup: format!(
            "Relay and both rmb-peers are child processes; each peer has its own redis-server; {} service workers answer `msgbus.bench.echo` on B's Redis with the exact JSON of PROTOCOL.md §4. Path (a) is the Rust SDK calling the SDK through the relay. {} B payloads, {} twins, e2e {}, {} s warm-up, {} s measured.",
            args.workers, c.payload, c.key_type, if args.e2e { "on" } else { "off" }, c.warmup, c.duration
        ),
        concurrency_label: "in flight".into(),
        unit: "round trips/s".into(),
        baseline: "redis ping-pong".into(),
        ..Default::default()
    };
    let check = |label: &str, r: &LoadResult| {
        anyhow::ensure!(r.messages > 0, "{label}: no round trip completed");
        Ok(())
    };
    for &n in &args.in_flight {
        eprintln!("measuring with {n} in flight ...");
        // Baseline: bare Redis ping-pong through the service's Redis.
        let mut conns = Vec::new();
        for _ in 0..n {
            conns.push(conn(&net.redis_b).await?);
        }
        let conns = Arc::new(conns);
        let body = payload.clone();
        let redis_b: Vec<_> = net.redis_processes().into_iter().skip(1).collect();
        let meter = Meter::start(&redis_b);
        let base = closed_loop(n, warmup, duration, move |i| {
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
        check("redis ping-pong", &base)?;
        let base = Row::new(
            "baseline: bare redis LPUSH/BRPOP ping-pong",
            n,
            &base,
            meter.finish(),
        );
        t.rows.push(base.clone());

        let caller = sdk_caller.clone();
        let body = payload.clone();
        let twin = sdk_server.twin_id();
        let meter = Meter::start(&[("relay", net.relay.pid())]);
        let r = closed_loop(n, warmup, duration, move |_| {
            let (caller, body) = (caller.clone(), body.clone());
            async move {
                caller
                    .call(twin, "bench.echo", body, Duration::from_secs(10))
                    .await?;
                Ok(())
            }
        })
        .await?;
        check("SDK", &r)?;
        t.rows
            .push(Row::new("(a) SDK → relay → SDK", n, &r, meter.finish()).against(&base));

        let mut conns = Vec::new();
        for _ in 0..n {
            conns.push(conn(&net.redis_a).await?);
        }
        let conns = Arc::new(conns);
        let data = peer_api::encode_data(&payload);
        let processes: Vec<_> = net
            .processes()
            .into_iter()
            .chain(net.redis_processes())
            .collect();
        let meter = Meter::start(&processes);
        let net2 = net.clone();
        let r = closed_loop(n, warmup, duration, move |i| {
            let mut c = conns[i].clone();
            let ret = format!("bench.ret.{i}");
            let request = net2.request(&data, i.to_string(), &ret);
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
        check("rmb-peer", &r)?;
        t.rows.push(
            Row::new(
                "(b) app → redis → rmb-peer → relay → rmb-peer → redis → service",
                n,
                &r,
                meter.finish(),
            )
            .against(&base),
        );
    }
    sdk_server.shutdown();
    sdk_caller.shutdown();
    Ok(vec![t])
}

/// RSS of the relay and both peers at one moment.
#[derive(serde::Serialize)]
struct MemorySample {
    second: u64,
    sent: u64,
    replies: u64,
    rss_mib: Vec<(String, f64)>,
}

fn memory_sample(net: &PeerNet, second: u64, sent: u64, replies: u64) -> MemorySample {
    MemorySample {
        second,
        sent,
        replies,
        rss_mib: net
            .processes()
            .into_iter()
            .map(|(name, pid)| {
                let rss = proc_stats::sample(pid).map_or(f64::NAN, |s| s.rss_kib as f64 / 1024.0);
                (name.to_string(), rss)
            })
            .collect(),
    }
}

/// How long the soak waits for the last replies after it stops sending.
const DRAIN: Duration = Duration::from_secs(15);

pub(crate) async fn soak(args: SoakArgs) -> anyhow::Result<Vec<Table>> {
    let net = Arc::new(PeerNet::start(args.key_type, args.e2e, args.workers).await?);
    let data = peer_api::encode_data(&vec![b'x'; args.payload]);
    const RET: &str = "bench.soak.ret";
    // Reference → when it was sent; replies remove their entry.
    let pending: Arc<DashMap<u64, Instant>> = Arc::default();
    let replies = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(parking_lot::Mutex::new(Vec::<u32>::new()));
    let collector = {
        let mut c = conn(&net.redis_a).await?;
        let (pending, replies, errors, latencies) = (
            pending.clone(),
            replies.clone(),
            errors.clone(),
            latencies.clone(),
        );
        tokio::spawn(async move {
            loop {
                let popped: Option<(String, String)> = c.brpop(RET, 1.0).await?;
                let Some((_, raw)) = popped else { continue };
                let reply: IncomingResponse = serde_json::from_str(&raw)?;
                if reply.error.is_some() {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let sent = reply
                    .reference
                    .and_then(|r| r.parse::<u64>().ok())
                    .and_then(|r| pending.remove(&r));
                if let Some((_, at)) = sent {
                    replies.fetch_add(1, Ordering::Relaxed);
                    let us = at.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    latencies.lock().push(us);
                }
            }
            #[allow(unreachable_code)]
            anyhow::Ok(())
        })
    };
    let mut push = conn(&net.redis_a).await?;
    let meter = Meter::start(&net.processes());
    let started = Instant::now();
    let end = started + Duration::from_secs(args.duration);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(0.001)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut samples = vec![memory_sample(&net, 0, 0, 0)];
    let mut next_sample = Duration::from_secs(args.sample_every.max(1));
    let mut sent = 0u64;
    eprintln!(
        "soak: {} round trips/s for {} s through rmb-peer ...",
        args.rate, args.duration
    );
    while Instant::now() < end {
        ticks.tick().await;
        let request = net.request(&data, sent.to_string(), RET);
        pending.insert(sent, Instant::now());
        let _: () = push
            .lpush(peer_api::SYSTEM_LOCAL, serde_json::to_string(&request)?)
            .await?;
        sent += 1;
        if started.elapsed() >= next_sample {
            let s = memory_sample(
                &net,
                next_sample.as_secs(),
                sent,
                replies.load(Ordering::Relaxed),
            );
            eprintln!(
                "  {} s: sent {}, replies {}, RSS {:?}",
                s.second, s.sent, s.replies, s.rss_mib
            );
            samples.push(s);
            next_sample += Duration::from_secs(args.sample_every.max(1));
        }
    }
    let sending = started.elapsed();
    let drain_until = Instant::now() + DRAIN;
    while !pending.is_empty() && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    collector.abort();
    let received = replies.load(Ordering::Relaxed);
    let usage = meter.finish();
    samples.push(memory_sample(
        &net,
        started.elapsed().as_secs(),
        sent,
        received,
    ));
    let lost = sent - received;

    let mut latencies_us = std::mem::take(&mut *latencies.lock());
    latencies_us.sort_unstable();
    let result = LoadResult {
        messages: received,
        elapsed: sending,
        latencies_us,
    };
    let row = Row::new(
        "app → redis → rmb-peer → relay → rmb-peer → redis → service",
        1,
        &result,
        usage,
    );
    let first = &samples[0];
    let last = samples.last().expect("at least two samples");
    let mut notes = vec![format!(
        "sent {sent}, replies {received}, **lost {lost}**, error replies {}",
        errors.load(Ordering::Relaxed)
    )];
    for (i, (name, start)) in first.rss_mib.iter().enumerate() {
        let end = last.rss_mib[i].1;
        notes.push(format!(
            "{name} RSS: {start:.1} MiB at start → {end:.1} MiB at the end"
        ));
    }
    let series: Vec<String> = samples
        .iter()
        .map(|s| {
            let rss: Vec<String> = s.rss_mib.iter().map(|(_, v)| format!("{v:.1}")).collect();
            format!("{} s: {}", s.second, rss.join(" / "))
        })
        .collect();
    notes.push(format!(
        "RSS over time, relay / peer A / peer B MiB: {}",
        series.join("; ")
    ));
    let mut t = Table {
        bench: "soak".into(),
        title: "Soak through relay and rmb-peer".into(),
        setup: format!(
            "Open loop: {} round trips/s started for {} s (every reply awaited up to {} s after), {} B payloads, {} twins, e2e {}; relay and peers are child processes. The concurrency column is not used; latency is from LPUSH to the reply's BRPOP.",
            args.rate, args.duration, DRAIN.as_secs(), args.payload, args.key_type, if args.e2e { "on" } else { "off" }
        ),
        concurrency_label: "-".into(),
        unit: "round trips/s".into(),
        baseline: "itself".into(),
        rows: vec![row],
        notes,
        ..Default::default()
    };
    t.extra.insert("sent".into(), sent.into());
    t.extra.insert("replies".into(), received.into());
    t.extra.insert("lost".into(), lost.into());
    t.extra
        .insert("memory".into(), serde_json::to_value(&samples)?);
    let tables = vec![t];
    if lost > 0 {
        crate::report::emit(&tables, args.json.as_deref())?;
        anyhow::bail!("soak lost {lost} of {sent} replies");
    }
    Ok(tables)
}

/// What an echo service pushes to `msgbus.system.reply` for `req`: its own data back.
pub(crate) fn echo_reply(req: IncomingRequest) -> OutgoingResponse {
    OutgoingResponse {
        version: 1,
        reference: req.reference,
        data: req.data,
        destination: req.source,
        schema: req.schema,
        timestamp: rmb_core::time::now(),
        error: None,
    }
}

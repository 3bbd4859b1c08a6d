//! `rmb-bench relay` and `rmb-bench idle`.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use rmb_core::prost::Message as _;
use rmb_core::proto::{Message, Payload, Request};
use rmb_core::{envelope, jwt, Address, Envelope, KeyType, Signer};
use rmb_registrar::RegistrarClient;
use rmb_relay::registrar_directory::RegistrarDirectory;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::load::{self, Pair};
use crate::proc_stats::{self, TICKS_PER_SEC};

/// The relay domain every benchmark twin is registered on.
const DOMAIN: &str = "bench.relay";

#[derive(Args, Debug)]
pub struct RelayArgs {
    /// Sender→receiver pair counts to measure (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    pairs: Vec<usize>,
    /// Payload bytes per envelope.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Seconds measured per scenario (after the warm-up).
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Seconds of warm-up per scenario.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Envelopes in flight per pair.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Relay backends to measure: memory, redis.
    #[arg(long, value_delimiter = ',', default_value = "memory,redis")]
    backends: Vec<String>,
    /// Key type of the benchmark twins.
    #[arg(long, default_value = "ed25519")]
    key_type: KeyType,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct IdleArgs {
    /// Authenticated idle sessions to open.
    #[arg(long, default_value_t = 20_000)]
    sessions: usize,
    /// Spread client connections over this many source addresses (127.0.0.2, ...).
    #[arg(long, default_value_t = 4)]
    source_ips: u8,
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    target: String,
    pairs: usize,
    msgs_per_sec: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    server_cpu_percent: f64,
    server_peak_rss_mib: f64,
    ratio_to_baseline: f64,
}

/// A server child process that printed `ready <addr>`.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    async fn spawn(args: &[&str]) -> anyhow::Result<Server> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .context("server did not start in time")??
            .context("server exited before it was ready")?;
        let addr = line
            .strip_prefix("ready ")
            .context("unexpected server output")?
            .to_string();
        Ok(Server { child, addr })
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

struct BenchTwin {
    id: u32,
    signer: Signer,
}

async fn register(client: &RegistrarClient, key_type: KeyType) -> anyhow::Result<BenchTwin> {
    let signer = Signer::from_seed(&rand::random(), key_type)?;
    let account = client
        .create_account(&signer, &[DOMAIN.to_string()], None)
        .await?;
    Ok(BenchTwin {
        id: account.twin_id,
        signer,
    })
}

fn frame(from: &BenchTwin, to: &BenchTwin, size: usize) -> (Vec<u8>, usize) {
    let mut env = Envelope {
        uid: format!("{:032x}", rand::random::<u128>()),
        timestamp: rmb_core::time::now(),
        expiration: 3600,
        source: Some(Address::twin(from.id)),
        destination: Some(Address::twin(to.id)),
        message: Some(Message::Request(Request {
            command: "bench".into(),
        })),
        payload: Some(Payload::Plain(vec![0; size.max(8)])),
        ..Default::default()
    };
    // Signed once: the relay does not verify signatures on the WebSocket path (receivers
    // do), so re-sending the same envelope with a new timestamp in its payload is fair.
    envelope::sign(&mut env, &from.signer);
    let bytes = env.encode_to_vec();
    let offset = bytes.len() - size.max(8);
    (bytes, offset)
}

pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    let registrar = rmb_testkit::TestRegistrar::start().await?;
    let client = registrar.client();
    let redis = if args.backends.iter().any(|b| b == "redis") {
        Some(rmb_testkit::RedisServer::start()?)
    } else {
        None
    };
    let max_pairs = args.pairs.iter().copied().max().unwrap_or(1);
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..max_pairs {
        senders.push(register(&client, args.key_type).await?);
        receivers.push(register(&client, args.key_type).await?);
    }
    let warmup = Duration::from_secs(args.warmup);
    let duration = Duration::from_secs(args.duration);
    let mut rows = Vec::new();
    for &pairs in &args.pairs {
        let frames: Vec<(Vec<u8>, usize)> = (0..pairs)
            .map(|i| frame(&senders[i], &receivers[i], args.size))
            .collect();

        let baseline = Server::spawn(&["serve-forwarder", "127.0.0.1:0"]).await?;
        let plan = (0..pairs)
            .map(|i| Pair {
                receiver_url: format!("ws://{}/?r{i}", baseline.addr),
                sender_url: format!("ws://{}/?s{i}", baseline.addr),
                frame: frames[i].0.clone(),
                ts_offset: frames[i].1,
            })
            .collect();
        let base_row = measure(
            "baseline ws forwarder",
            pairs,
            &baseline,
            plan,
            warmup,
            duration,
            args.window,
            None,
        )
        .await?;
        let base_rate = base_row.msgs_per_sec;
        rows.push(base_row);
        drop(baseline);

        for backend in &args.backends {
            let port = rmb_testkit::free_port();
            let listen = format!("127.0.0.1:{port}");
            let mut spawn_args = vec!["serve-relay", listen.as_str(), registrar.url().leak()];
            let redis_url;
            match backend.as_str() {
                "memory" => {}
                "redis" => {
                    redis_url = redis.as_ref().expect("started above").url();
                    spawn_args.push(&redis_url);
                }
                other => bail!("unknown backend {other:?} (memory, redis)"),
            }
            let relay = Server::spawn(&spawn_args).await?;
            let now = rmb_core::time::now();
            let plan = (0..pairs)
                .map(|i| Pair {
                    receiver_url: format!(
                        "ws://{}/?{}",
                        relay.addr,
                        jwt::create(&receivers[i].signer, receivers[i].id, None, now, 3600)
                    ),
                    sender_url: format!(
                        "ws://{}/?{}",
                        relay.addr,
                        jwt::create(&senders[i].signer, senders[i].id, None, now, 3600)
                    ),
                    frame: frames[i].0.clone(),
                    ts_offset: frames[i].1,
                })
                .collect();
            let name = format!("relay ({backend})");
            rows.push(
                measure(
                    &name,
                    pairs,
                    &relay,
                    plan,
                    warmup,
                    duration,
                    args.window,
                    Some(base_rate),
                )
                .await?,
            );
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_table(&rows, &args);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    target: &str,
    pairs: usize,
    server: &Server,
    plan: Vec<Pair>,
    warmup: Duration,
    duration: Duration,
    window: usize,
    baseline_rate: Option<f64>,
) -> anyhow::Result<Row> {
    eprintln!("measuring {target} with {pairs} pairs ...");
    let before = proc_stats::sample(server.pid());
    let result = load::run(plan, warmup, duration, window).await?;
    let after = proc_stats::sample(server.pid());
    let (cpu, rss) = match (before, after) {
        (Some(b), Some(a)) => (
            (a.cpu_ticks - b.cpu_ticks) as f64 / TICKS_PER_SEC / (warmup + duration).as_secs_f64()
                * 100.0,
            a.peak_rss_kib as f64 / 1024.0,
        ),
        _ => (f64::NAN, f64::NAN),
    };
    let rate = result.rate();
    Ok(Row {
        target: target.to_string(),
        pairs,
        msgs_per_sec: rate,
        p50_ms: result.percentile(0.5),
        p90_ms: result.percentile(0.9),
        p99_ms: result.percentile(0.99),
        max_ms: result.percentile(1.0),
        server_cpu_percent: cpu,
        server_peak_rss_mib: rss,
        ratio_to_baseline: baseline_rate.map_or(1.0, |b| rate / b),
    })
}

fn print_table(rows: &[Row], args: &RelayArgs) {
    println!(
        "payload {} B, window {} per pair, {} s measured after {} s warm-up, {} twins",
        args.size, args.window, args.duration, args.warmup, args.key_type
    );
    println!("| target | pairs | msgs/s | p50 ms | p90 ms | p99 ms | max ms | server CPU % | server peak RSS MiB | vs baseline |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1} | {:.0}% |",
            r.target,
            r.pairs,
            r.msgs_per_sec,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.max_ms,
            r.server_cpu_percent,
            r.server_peak_rss_mib,
            r.ratio_to_baseline * 100.0
        );
    }
}

/// Runs a relay for the benchmark (child process).
pub async fn serve_relay(
    listen: &str,
    registrar: &str,
    redis: Option<String>,
) -> anyhow::Result<()> {
    let mut config = rmb_relay::Config::new(vec![DOMAIN.to_string()]);
    config.redis_url = redis;
    config.max_connections = 1_000_000;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let directory = Arc::new(RegistrarDirectory::new(registrar)?);
    let relay = rmb_relay::start(listener, config, directory).await?;
    println!("ready {}", relay.local_addr());
    std::future::pending::<()>().await;
    Ok(())
}

#[derive(Serialize)]
struct IdleResult {
    sessions: usize,
    rss_before_mib: f64,
    rss_after_mib: f64,
    kib_per_session: f64,
}

pub async fn idle(mut args: IdleArgs) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    // Each session costs this process (the clients) and the relay one descriptor; both
    // need a few more for themselves.
    if let Ok((soft, _)) = rlimit::Resource::NOFILE.get() {
        let room = soft.saturating_sub(200) as usize;
        if args.sessions > room {
            eprintln!(
                "note: {} sessions requested but the open-file limit is {soft}; measuring {room} (raise it with `ulimit -n` as a privileged user)",
                args.sessions
            );
            args.sessions = room;
        }
    }
    let registrar = rmb_testkit::TestRegistrar::start().await?;
    let twin = register(&registrar.client(), KeyType::Ed25519).await?;
    let relay = Server::spawn(&["serve-relay", "127.0.0.1:0", registrar.url().leak()]).await?;
    // Warm the relay's registrar cache and runtime with one session first.
    let _first = connect_from("127.0.0.1", &relay.addr, &twin, "warm").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = proc_stats::sample(relay.pid()).context("reading relay memory")?;
    let addr = relay.addr.clone();
    let twin = Arc::new(twin);
    let sockets: Vec<_> = futures_util::stream::iter(0..args.sessions)
        .map(|i| {
            let ip = format!("127.0.0.{}", 2 + (i % args.source_ips.max(1) as usize));
            let addr = addr.clone();
            let twin = twin.clone();
            async move { connect_from(&ip, &addr, &twin, &format!("idle-{i}")).await }
        })
        .buffer_unordered(128)
        .collect()
        .await;
    let opened = sockets.iter().filter(|s| s.is_ok()).count();
    if let Some(Err(e)) = sockets.iter().find(|s| s.is_err()) {
        eprintln!("some sessions failed to open, e.g.: {e}");
    }
    // Let the relay finish setting up the last sessions.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = proc_stats::sample(relay.pid()).context("reading relay memory")?;
    let result = IdleResult {
        sessions: opened,
        rss_before_mib: before.rss_kib as f64 / 1024.0,
        rss_after_mib: after.rss_kib as f64 / 1024.0,
        kib_per_session: (after.rss_kib.saturating_sub(before.rss_kib)) as f64
            / opened.max(1) as f64,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        println!(
            "{} idle authenticated sessions: relay RSS {:.1} MiB -> {:.1} MiB = {:.1} KiB per session",
            result.sessions, result.rss_before_mib, result.rss_after_mib, result.kib_per_session
        );
    }
    drop(sockets);
    Ok(())
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect_from(
    source_ip: &str,
    relay: &str,
    twin: &BenchTwin,
    sid: &str,
) -> anyhow::Result<Ws> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source_ip}:0").parse()?)?;
    let stream = socket.connect(relay.parse()?).await?;
    let token = jwt::create(
        &twin.signer,
        twin.id,
        Some(sid),
        rmb_core::time::now(),
        3600,
    );
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{relay}/?{token}"), stream).await?;
    Ok(ws)
}

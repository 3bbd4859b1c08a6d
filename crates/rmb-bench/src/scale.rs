//! `rmb-bench load` (alias `idle`): connection scale. N authenticated idle sessions on
//! one relay plus a steady request stream between a few pairs; latency of the stream
//! with and without the idle sessions, in the same run, and memory per session.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::load::{self, Pair, Shape};
use crate::proc_stats;
use crate::relay_bench;
use crate::report::{Common, Meter, Row, Table};
use crate::servers::{self, listen_addr, BenchTwin, Server, DOMAIN};

#[derive(Args, Debug, Clone)]
pub(crate) struct LoadArgs {
    /// Authenticated idle sessions to open (clamped to the open-file limit).
    #[arg(long, alias = "sessions", default_value_t = 20_000)]
    pub idle: usize,
    /// Spread idle connections over this many source addresses: 127.0.0.2, 127.0.0.3, ...
    #[arg(long, default_value_t = 253, value_parser = clap::value_parser!(u8).range(1..=253))]
    pub source_ips: u8,
    /// Sender→receiver pairs of the steady stream.
    #[arg(long, alias = "concurrency", default_value_t = 8)]
    pub pairs: usize,
    /// Envelopes per second of the steady stream, all pairs together.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    #[command(flatten)]
    pub common: Common,
}

/// Descriptors kept free for everything but the idle sessions (stream pairs, the
/// registrar, Redis, the relay's own files).
const SPARE_FDS: u64 = 300;

pub(crate) async fn run(mut args: LoadArgs) -> anyhow::Result<Vec<Table>> {
    let c = args.common.clone();
    let mut notes = Vec::new();
    // Each idle session costs this process (the client side) and the relay (a child
    // process with the same limit) one descriptor each.
    if let Ok((soft, _)) = rlimit::Resource::NOFILE.get() {
        let room = soft.saturating_sub(SPARE_FDS) as usize;
        if args.idle > room {
            let note = format!(
                "{} idle sessions requested but the open-file limit is {soft} (per process, and it cannot be raised here): measured {room}",
                args.idle
            );
            eprintln!("note: {note}");
            notes.push(note);
            args.idle = room;
        }
    }
    let registrar = rmb_testkit::TestRegistrar::start().await?;
    let client = registrar.client();
    let idle_twin = servers::register(&client, c.key_type, &[DOMAIN.to_string()]).await?;
    let twins = relay_bench::twins_on(&client, &c, args.pairs).await?;
    let relay = Server::relay(&listen_addr(), &registrar.url(), None, &[]).await?;
    let stream = |label: String| steady_row(label, &relay, &twins, &c, args.rate);
    let quiet = stream("steady stream, no idle sessions".into()).await?;

    // Warm the relay's registrar cache and runtime with one session first.
    let _first = connect_from("127.0.0.1", &relay.addr, &idle_twin, "warm").await?;
    let before = proc_stats::sample(relay.pid()).context("reading relay memory")?;
    eprintln!("opening {} idle sessions ...", args.idle);
    let idle_twin = Arc::new(idle_twin);
    let sockets: Vec<_> = futures_util::stream::iter(0..args.idle)
        .map(|i| {
            let ip = format!("127.0.0.{}", 2 + (i % args.source_ips as usize));
            let (addr, twin) = (relay.addr.clone(), idle_twin.clone());
            async move { connect_from(&ip, &addr, &twin, &format!("idle-{i}")).await }
        })
        .buffer_unordered(128)
        .collect()
        .await;
    let opened = sockets.iter().filter(|s| s.is_ok()).count();
    if let Some(Err(e)) = sockets.iter().find(|s| s.is_err()) {
        let note = format!("{} sessions failed to open, e.g.: {e}", args.idle - opened);
        eprintln!("note: {note}");
        notes.push(note);
    }
    let after = proc_stats::sample(relay.pid()).context("reading relay memory")?;
    let loaded = stream(format!("steady stream + {opened} idle sessions"))
        .await?
        .against(&quiet);
    drop(sockets);

    let mib = |kib: u64| kib as f64 / 1024.0;
    let per_session = after.rss_kib.saturating_sub(before.rss_kib) as f64 / opened.max(1) as f64;
    notes.insert(
        0,
        format!(
            "{opened} idle authenticated sessions (from {} source addresses): relay RSS {:.1} MiB → {:.1} MiB = **{per_session:.1} KiB per session**",
            args.source_ips,
            mib(before.rss_kib),
            mib(after.rss_kib)
        ),
    );
    notes.insert(1, latency_note("with the idle sessions", &quiet, &loaded));
    let mut t = Table {
        bench: "load".into(),
        title: "Connection scale: idle sessions plus a steady stream".into(),
        setup: format!(
            "One relay (in-memory). {} idle authenticated sessions (one twin, a session id each), then a steady stream of {} envelopes/s over {} pairs ({} B payloads, {} s warm-up, {} s measured) before and with them.",
            opened, args.rate, args.pairs, c.payload, c.warmup, c.duration
        ),
        concurrency_label: "pairs".into(),
        unit: "msgs/s".into(),
        baseline: "no idle sessions".into(),
        rows: vec![quiet, loaded],
        notes,
        ..Default::default()
    };
    t.extra.insert("sessions".into(), opened.into());
    t.extra
        .insert("rss_before_mib".into(), mib(before.rss_kib).into());
    t.extra
        .insert("rss_after_mib".into(), mib(after.rss_kib).into());
    t.extra.insert("kib_per_session".into(), per_session.into());
    Ok(vec![t])
}

/// "stream latency <what>: p50 a → b ms, p99 c → d ms".
pub(crate) fn latency_note(what: &str, quiet: &Row, loaded: &Row) -> String {
    format!(
        "stream latency {what}: p50 {:.2} → {:.2} ms, p99 {:.2} → {:.2} ms",
        quiet.p50_ms, loaded.p50_ms, quiet.p99_ms, loaded.p99_ms
    )
}

/// A steady stream of `rate` envelopes/s in all between `twins` (sender, receiver)
/// through `relay`, measured as one row.
pub(crate) async fn steady_row(
    label: String,
    relay: &Server,
    twins: &[(BenchTwin, BenchTwin)],
    c: &Common,
    rate: f64,
) -> anyhow::Result<Row> {
    let plan = twins
        .iter()
        .map(|(s, r)| Pair {
            receiver_url: r.url(&relay.addr),
            sender_url: s.url(&relay.addr),
            frames: servers::Frames::unverified(s, r, c.payload),
        })
        .collect();
    let shape = Shape {
        window: 64,
        rate: Some(rate / twins.len().max(1) as f64),
    };
    eprintln!("measuring {label} ...");
    let meter = Meter::start(&[("relay", relay.pid())]);
    let result = load::run(plan, c.warmup(), c.duration(), shape).await?;
    anyhow::ensure!(result.messages > 0, "{label}: nothing was delivered");
    Ok(Row::new(&label, twins.len(), &result, meter.finish()))
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// An authenticated session from `source_ip` (bound before connecting, so 20 000
/// connections do not exhaust one address's ephemeral ports), returned once the relay
/// has set it up: it answers a WebSocket ping only after attaching the session.
async fn connect_from(
    source_ip: &str,
    relay: &str,
    twin: &BenchTwin,
    sid: &str,
) -> anyhow::Result<Ws> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source_ip}:0").parse()?)?;
    let stream = socket.connect(relay.parse()?).await?;
    let url = format!("ws://{relay}/?{}", twin.token(Some(sid)));
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await?;
    ws.send(Message::Ping(b"ready".to_vec().into())).await?;
    let answered = tokio::time::timeout(SESSION_READY_WITHIN, async {
        while let Some(msg) = ws.next().await {
            if let Message::Pong(_) = msg? {
                return Ok(());
            }
        }
        anyhow::bail!("the relay closed session {sid} before answering a ping")
    });
    answered
        .await
        .with_context(|| format!("session {sid} not set up within {SESSION_READY_WITHIN:?}"))??;
    Ok(ws)
}

/// How long the relay may take to set up one idle session.
const SESSION_READY_WITHIN: Duration = Duration::from_secs(30);

//! `rmb-bench flood`: one twin sends as fast as it can while a steady stream runs
//! between other twins on the same relay, which limits every twin's rate. Measures the
//! stream's latency without and with the flood, in the same run, and how much of the
//! flood the limit let through.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::relay_bench;
use crate::report::{Common, Table};
use crate::scale;
use crate::servers::{self, listen_addr, Server, DOMAIN};

#[derive(Args, Debug, Clone)]
pub(crate) struct FloodArgs {
    /// The relay's rate limit: envelopes per second per twin.
    #[arg(long, default_value_t = 1000)]
    pub limit: u64,
    /// Sender→receiver pairs of the steady stream.
    #[arg(long, alias = "concurrency", default_value_t = 8)]
    pub pairs: usize,
    /// Envelopes per second of the steady stream, all pairs together (each pair stays
    /// well under the limit).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    #[command(flatten)]
    pub common: Common,
}

/// What the flooder managed, counted while `counting` is set.
#[derive(Default)]
struct FloodCounts {
    counting: AtomicBool,
    sent: AtomicU64,
    refused: AtomicU64,
    delivered: AtomicU64,
}

pub(crate) async fn run(args: FloodArgs) -> anyhow::Result<Vec<Table>> {
    let c = args.common.clone();
    let registrar = rmb_testkit::TestRegistrar::start().await?;
    let client = registrar.client();
    let twins = relay_bench::twins_on(&client, &c, args.pairs).await?;
    let here = [DOMAIN.to_string()];
    let flooder = servers::register(&client, c.key_type, &here).await?;
    let sink = servers::register(&client, c.key_type, &here).await?;
    let listen = listen_addr();
    let limit = args.limit.to_string();
    let relay = Server::spawn(&[
        "serve-relay",
        "--listen",
        &listen,
        "--registrar",
        &registrar.url(),
        "--limit-per-second",
        &limit,
    ])
    .await?;
    let stream = |label: &str| scale::steady_row(label.into(), &relay, &twins, &c, args.rate);
    let quiet = stream("steady stream, no flood").await?;

    let counts = Arc::new(FloodCounts::default());
    let flood_frames = servers::Frames::unverified(&flooder, &sink, c.payload);
    let (flood_ws, _) = tokio_tungstenite::connect_async(flooder.url(&relay.addr)).await?;
    let (sink_ws, _) = tokio_tungstenite::connect_async(sink.url(&relay.addr)).await?;
    let flood = tokio::spawn(flood_loop(flood_ws, flood_frames, counts.clone()));
    let drain = tokio::spawn(count_arrivals(sink_ws, counts.clone()));
    counts.counting.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let flooded = stream("steady stream + one twin flooding")
        .await?
        .against(&quiet);
    counts.counting.store(false, Ordering::SeqCst);
    let secs = started.elapsed().as_secs_f64();
    flood.abort();
    drain.abort();

    let per_sec = |n: &AtomicU64| n.load(Ordering::SeqCst) as f64 / secs;
    let (sent, refused, delivered) = (
        per_sec(&counts.sent),
        per_sec(&counts.refused),
        per_sec(&counts.delivered),
    );
    anyhow::ensure!(sent > 0.0, "the flooder sent nothing");
    let notes = vec![
        format!(
            "the flooder offered {sent:.0} envelopes/s; the relay passed **{delivered:.0}/s** to its destination (limit {} per second) and answered {refused:.0}/s with a rate-limit relay error",
            args.limit
        ),
        scale::latency_note("with the flood", &quiet, &flooded),
    ];
    let mut t = Table {
        bench: "flood".into(),
        title: "Flood from one twin".into(),
        setup: format!(
            "One relay (in-memory) limiting every twin to {} envelopes/s. A steady stream of {} envelopes/s over {} pairs ({} B payloads, {} s warm-up, {} s measured), alone and while one more twin sends to another as fast as its connection allows.",
            args.limit, args.rate, args.pairs, c.payload, c.warmup, c.duration
        ),
        concurrency_label: "pairs".into(),
        unit: "msgs/s".into(),
        baseline: "no flood".into(),
        rows: vec![quiet, flooded],
        notes,
        ..Default::default()
    };
    t.extra.insert("flood_offered_per_s".into(), sent.into());
    t.extra
        .insert("flood_delivered_per_s".into(), delivered.into());
    t.extra.insert("flood_refused_per_s".into(), refused.into());
    Ok(vec![t])
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Sends envelopes (each new: copies would be dropped before the limit counts them) as
/// fast as the socket takes them, 64 frames per flush, and counts the
/// relay errors coming back on the same connection.
async fn flood_loop(ws: Ws, mut frames: servers::Frames, counts: Arc<FloodCounts>) {
    let (mut tx, mut rx) = ws.split();
    let errors = counts.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = rx.next().await {
            if matches!(msg, Message::Binary(_)) && errors.counting.load(Ordering::Relaxed) {
                errors.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    'send: loop {
        for _ in 0..64 {
            let frame = frames.next_frame().bytes;
            if tx.feed(Message::Binary(frame.into())).await.is_err() {
                break 'send;
            }
        }
        if tx.flush().await.is_err() {
            break;
        }
        if counts.counting.load(Ordering::Relaxed) {
            counts.sent.fetch_add(64, Ordering::Relaxed);
        }
    }
    reader.abort();
}

async fn count_arrivals(mut ws: Ws, counts: Arc<FloodCounts>) {
    while let Some(Ok(msg)) = ws.next().await {
        if matches!(msg, Message::Binary(_)) && counts.counting.load(Ordering::Relaxed) {
            counts.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

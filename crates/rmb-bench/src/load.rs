//! The load generator shared by every relay-like target: N sender→receiver pairs, each
//! sender keeping at most `window` envelopes in flight, the receiver measuring latency
//! from a send timestamp written into the payload.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

/// One pair: where the receiver and the sender connect, and the frame the sender sends
/// (its bytes `ts_offset..ts_offset + 8` are overwritten with the send time).
pub struct Pair {
    pub receiver_url: String,
    pub sender_url: String,
    pub frame: Vec<u8>,
    pub ts_offset: usize,
}

pub struct LoadResult {
    pub messages: u64,
    pub elapsed: Duration,
    /// Microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

struct Shared {
    t0: Instant,
    measuring: AtomicBool,
    received: AtomicU64,
}

/// Latencies of one receiver (uncontended lock; collected after the run).
type Samples = Arc<parking_lot::Mutex<Vec<u32>>>;

/// How senders send: as fast as `window` envelopes in flight allow, or also at most
/// `rate` envelopes per second each (a steady stream).
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub window: usize,
    pub rate: Option<f64>,
}

impl Shape {
    pub fn window(window: usize) -> Shape {
        Shape { window, rate: None }
    }
}

pub async fn run(
    pairs: Vec<Pair>,
    warmup: Duration,
    duration: Duration,
    shape: Shape,
) -> anyhow::Result<LoadResult> {
    let shared = Arc::new(Shared {
        t0: Instant::now(),
        measuring: AtomicBool::new(false),
        received: AtomicU64::new(0),
    });
    let mut tasks = Vec::new();
    let mut samples: Vec<Samples> = Vec::new();
    for pair in pairs {
        let (receiver, _) = tokio_tungstenite::connect_async(&pair.receiver_url).await?;
        let (sender, _) = tokio_tungstenite::connect_async(&pair.sender_url).await?;
        let credit = Arc::new(Semaphore::new(shape.window));
        let mine = Samples::default();
        samples.push(mine.clone());
        let tail = pair.frame.len() - pair.ts_offset;
        tasks.push(tokio::spawn(receive(
            receiver,
            credit.clone(),
            shared.clone(),
            mine,
            tail,
        )));
        tasks.push(tokio::spawn(send(
            sender,
            pair.frame,
            pair.ts_offset,
            credit,
            shared.clone(),
            shape.rate,
        )));
    }
    tokio::time::sleep(warmup).await;
    shared.received.store(0, Ordering::SeqCst);
    shared.measuring.store(true, Ordering::SeqCst);
    let start = Instant::now();
    tokio::time::sleep(duration).await;
    shared.measuring.store(false, Ordering::SeqCst);
    let elapsed = start.elapsed();
    for t in &tasks {
        t.abort();
    }
    let messages = shared.received.load(Ordering::SeqCst);
    let mut latencies_us: Vec<u32> = Vec::new();
    for s in samples {
        latencies_us.append(&mut s.lock());
    }
    latencies_us.sort_unstable();
    Ok(LoadResult {
        messages,
        elapsed,
        latencies_us,
    })
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(
    mut ws: Ws,
    mut frame: Vec<u8>,
    ts_offset: usize,
    credit: Arc<Semaphore>,
    shared: Arc<Shared>,
    rate: Option<f64>,
) {
    if let Some(rate) = rate {
        return send_steady(ws, frame, ts_offset, credit, shared, rate).await;
    }
    loop {
        let Ok(permit) = credit.acquire().await else {
            return;
        };
        permit.forget();
        let mut batch = 1;
        loop {
            let now = shared.t0.elapsed().as_nanos() as u64;
            frame[ts_offset..ts_offset + 8].copy_from_slice(&now.to_le_bytes());
            if ws
                .feed(Message::Binary(frame.clone().into()))
                .await
                .is_err()
            {
                return;
            }
            match credit.try_acquire() {
                Ok(p) if batch < 64 => {
                    p.forget();
                    batch += 1;
                }
                Ok(p) => {
                    drop(p);
                    break;
                }
                Err(_) => break,
            }
        }
        if ws.flush().await.is_err() {
            return;
        }
    }
}

/// One envelope every `1 / rate` seconds (late ticks are caught up, so the offered rate
/// holds even when a send was delayed).
async fn send_steady(
    mut ws: Ws,
    mut frame: Vec<u8>,
    ts_offset: usize,
    credit: Arc<Semaphore>,
    shared: Arc<Shared>,
    rate: f64,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        ticks.tick().await;
        let Ok(permit) = credit.acquire().await else {
            return;
        };
        permit.forget();
        let now = shared.t0.elapsed().as_nanos() as u64;
        frame[ts_offset..ts_offset + 8].copy_from_slice(&now.to_le_bytes());
        if ws
            .send(Message::Binary(frame.clone().into()))
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn receive(
    mut ws: Ws,
    credit: Arc<Semaphore>,
    shared: Arc<Shared>,
    samples: Samples,
    tail: usize,
) {
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Binary(data) = msg else { continue };
        credit.add_permits(1);
        if data.len() < tail || !shared.measuring.load(Ordering::Relaxed) {
            continue;
        }
        shared.received.fetch_add(1, Ordering::Relaxed);
        // The payload is the frame's tail; the sender wrote its clock at its start.
        let at = data.len() - tail;
        let sent = u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
        let now = shared.t0.elapsed().as_nanos() as u64;
        let micros = (now.saturating_sub(sent) / 1000).min(u32::MAX as u64) as u32;
        samples.lock().push(micros);
    }
}

/// Runs `op(i)` in `concurrency` loops (i = 0..concurrency); counts and times the calls
/// that complete inside the measured window.
pub async fn closed_loop<F, Fut>(
    concurrency: usize,
    warmup: Duration,
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
                // An op that never waits (a cache hit) must still let timers run.
                tokio::task::coop::consume_budget().await;
                if measuring.load(Ordering::Relaxed) {
                    samples.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
            }
            anyhow::Ok(samples)
        }));
    }
    tokio::time::sleep(warmup).await;
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

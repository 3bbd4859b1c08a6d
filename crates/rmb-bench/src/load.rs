//! The load generator shared by every relay-like target: N sender→receiver pairs, each
//! sender keeping at most `window` envelopes in flight, the receiver measuring latency
//! from a send timestamp written into the frame. Before the clock starts, every pair's
//! path is proven to deliver (a server registers a session after answering the
//! WebSocket upgrade, so the first frames may have nowhere to go yet).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::proc_stats;
use crate::servers::Frames;

/// CPU ticks of all the bench's processes ([`proc_stats::tree_cpu_ticks`]) over the
/// last measured windows, keyed by the window's exact length: [`window_cpu`] finds the
/// one a [`LoadResult`] came from without the result having to carry it.
static WINDOWS: parking_lot::Mutex<Vec<(Duration, u64)>> = parking_lot::const_mutex(Vec::new());

/// Windows remembered (rows are measured one after the other, so a few are plenty).
const WINDOWS_KEPT: usize = 16;

/// Starts counting CPU for a measured window; [`end_window`] ends it.
pub(crate) fn start_window() -> u64 {
    proc_stats::tree_cpu_ticks()
}

/// Records the CPU ticks spent since `started` (from [`start_window`]) for the window
/// that lasted `elapsed`.
pub(crate) fn end_window(started: u64, elapsed: Duration) {
    let ticks = proc_stats::tree_cpu_ticks().saturating_sub(started);
    let mut windows = WINDOWS.lock();
    if windows.len() >= WINDOWS_KEPT {
        windows.remove(0);
    }
    windows.push((elapsed, ticks));
}

/// CPU ticks of every process of the bench during the measured window of the result
/// whose `elapsed` this is (`None` for a result not measured by [`run`] or
/// [`closed_loop`]).
pub(crate) fn window_cpu(elapsed: Duration) -> Option<u64> {
    WINDOWS
        .lock()
        .iter()
        .rev()
        .find(|(e, _)| *e == elapsed)
        .map(|(_, ticks)| *ticks)
}

/// One pair: where the receiver and the sender connect, and what the sender sends.
pub(crate) struct Pair {
    pub receiver_url: String,
    pub sender_url: String,
    pub frames: Frames,
}

/// The send time is a frame's last 8 bytes (see [`Frames`]).
const CLOCK_TAIL: usize = 8;

/// How long a pair's path may take to deliver its first frame before the run fails.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// How long one probe frame is waited for before another is sent (a probe sent before
/// the receiver's session existed is lost with the forwarder, queued with a relay).
const PROBE_EVERY: Duration = Duration::from_millis(200);

pub(crate) struct LoadResult {
    pub messages: u64,
    pub elapsed: Duration,
    /// Microseconds, sorted.
    pub latencies_us: Vec<u32>,
}

impl LoadResult {
    pub(crate) fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

struct Shared {
    /// When this run started, on [`clock`].
    started: u64,
    measuring: AtomicBool,
    received: AtomicU64,
}

/// Latencies of one receiver (uncontended lock; collected after the run).
type Samples = Arc<parking_lot::Mutex<Vec<u32>>>;

/// How senders send: as fast as `window` envelopes in flight allow, or also at most
/// `rate` envelopes per second each (a steady stream).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    pub window: usize,
    pub rate: Option<f64>,
}

impl Shape {
    pub(crate) fn window(window: usize) -> Shape {
        Shape { window, rate: None }
    }
}

pub(crate) async fn run(
    pairs: Vec<Pair>,
    warmup: Duration,
    duration: Duration,
    shape: Shape,
) -> anyhow::Result<LoadResult> {
    // Every pair is connected before any sender starts: with many pairs, or a slow
    // path, connecting takes seconds, and frames sent meanwhile queued up ahead of the
    // warm-up (p99 of 22 s in a 6 s run).
    let mut connected = Vec::with_capacity(pairs.len());
    for mut pair in pairs {
        let (mut receiver, _) = tokio_tungstenite::connect_async(&pair.receiver_url).await?;
        let (mut sender, _) = tokio_tungstenite::connect_async(&pair.sender_url).await?;
        delivers(&mut sender, &mut receiver, &mut pair.frames)
            .await
            .map_err(|e| anyhow::anyhow!("{} → {}: {e}", pair.sender_url, pair.receiver_url))?;
        connected.push((sender, receiver, pair.frames));
    }
    let shared = Arc::new(Shared {
        // Never 0: unstamped probe frames carry 0.
        started: clock().max(1),
        measuring: AtomicBool::new(false),
        received: AtomicU64::new(0),
    });
    let mut tasks = Vec::new();
    let mut samples: Vec<Samples> = Vec::new();
    for (sender, receiver, frames) in connected {
        let credit = Arc::new(Semaphore::new(shape.window));
        let mine = Samples::default();
        samples.push(mine.clone());
        tasks.push(tokio::spawn(receive(
            receiver,
            credit.clone(),
            shared.clone(),
            mine,
        )));
        tasks.push(tokio::spawn(send(sender, frames, credit, shape.rate)));
    }
    tokio::time::sleep(warmup).await;
    shared.received.store(0, Ordering::SeqCst);
    shared.measuring.store(true, Ordering::SeqCst);
    let cpu = start_window();
    let start = Instant::now();
    tokio::time::sleep(duration).await;
    shared.measuring.store(false, Ordering::SeqCst);
    let elapsed = start.elapsed();
    end_window(cpu, elapsed);
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

/// Waits until the path from `sender` to `receiver` delivers: sends a probe frame, and
/// another each [`PROBE_EVERY`] until one arrives, for at most [`READY_WITHIN`].
async fn delivers(sender: &mut Ws, receiver: &mut Ws, frames: &mut Frames) -> anyhow::Result<()> {
    let give_up = Instant::now() + READY_WITHIN;
    while Instant::now() < give_up {
        sender
            .send(Message::Binary(frames.next_frame().bytes.into()))
            .await?;
        let arrived = tokio::time::timeout(PROBE_EVERY, async {
            while let Some(msg) = receiver.next().await {
                if let Message::Binary(_) = msg? {
                    return Ok(true);
                }
            }
            Ok::<_, anyhow::Error>(false)
        })
        .await;
        match arrived {
            Ok(Ok(true)) => return Ok(()),
            Ok(Ok(false)) => bail!("the receiver's connection closed before anything arrived"),
            Ok(Err(e)) => return Err(e),
            Err(_) => continue,
        }
    }
    bail!("nothing arrived within {READY_WITHIN:?}")
}

/// Nanoseconds since this process first asked: the send time written into each frame.
/// One clock for every run, so a receiver can tell a frame of an earlier run (still
/// queued for the same twin by a relay the runs share) from one of its own.
fn clock() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

async fn send(mut ws: Ws, mut frames: Frames, credit: Arc<Semaphore>, rate: Option<f64>) {
    if let Some(rate) = rate {
        return send_steady(ws, frames, credit, rate).await;
    }
    loop {
        let Ok(permit) = credit.acquire().await else {
            return;
        };
        permit.forget();
        let mut batch = 1;
        loop {
            let mut frame = frames.next_frame();
            frame.stamp(clock());
            if ws.feed(Message::Binary(frame.bytes.into())).await.is_err() {
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
async fn send_steady(mut ws: Ws, mut frames: Frames, credit: Arc<Semaphore>, rate: f64) {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        ticks.tick().await;
        let Ok(permit) = credit.acquire().await else {
            return;
        };
        permit.forget();
        let mut frame = frames.next_frame();
        frame.stamp(clock());
        if ws.send(Message::Binary(frame.bytes.into())).await.is_err() {
            return;
        }
    }
}

async fn receive(mut ws: Ws, credit: Arc<Semaphore>, shared: Arc<Shared>, samples: Samples) {
    while let Some(Ok(msg)) = ws.next().await {
        let Message::Binary(data) = msg else { continue };
        let Some(at) = data.len().checked_sub(CLOCK_TAIL) else {
            continue;
        };
        let sent = u64::from_le_bytes(data[at..].try_into().expect("8 bytes"));
        // Sent before this run (an earlier run's frame a relay kept queued for this
        // twin, or an unstamped probe): not this sender's, so it returns no credit. It
        // did once, and every such frame widened the window by one: the "1 in flight"
        // rows ran with 60 in flight.
        if sent < shared.started {
            continue;
        }
        credit.add_permits(1);
        if !shared.measuring.load(Ordering::Relaxed) {
            continue;
        }
        shared.received.fetch_add(1, Ordering::Relaxed);
        let now = clock();
        let micros = (now.saturating_sub(sent) / 1000).min(u32::MAX as u64) as u32;
        samples.lock().push(micros);
    }
}

/// Runs `op(i)` in `concurrency` loops (i = 0..concurrency); counts and times the calls
/// that complete inside the measured window.
pub(crate) async fn closed_loop<F, Fut>(
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
    let cpu = start_window();
    let start = Instant::now();
    tokio::time::sleep(duration).await;
    measuring.store(false, Ordering::SeqCst);
    let elapsed = start.elapsed();
    end_window(cpu, elapsed);
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

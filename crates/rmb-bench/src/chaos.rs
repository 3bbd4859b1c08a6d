//! `rmb-bench chaos`: a steady stream of requests through two rmb-peers and two relay
//! instances sharing one Redis, while processes are killed with SIGKILL and restarted
//! a moment later (issue 13). Afterwards every request must have exactly one answer
//! (a reply or an explicit error), and the service must have run none twice.
//!
//! The network: relay instances 1 and 2 (child processes) both serve both relay domains
//! and share a Redis with its append-only file on; rmb-peer A (child process, its own
//! Redis) is connected to instance 1, rmb-peer B (likewise) to instance 2, so every
//! request goes A → instance 1 → Redis → instance 2 → B. The app pushing requests to
//! A's Redis, reading the answers there, and the service behind B counting every
//! request it runs (by the request's data, the app's own id) run in this process; their
//! Redis servers are never killed.
//!
//! Kills rotate over relay instance 1, peer A, relay instance 2, peer B and the relays'
//! Redis, evenly spaced over `--duration`; each killed process is restarted after
//! `--down-ms` (its window: from the kill until the new process is ready).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use dashmap::DashMap;
use redis::AsyncCommands;
use rmb_core::peer_api::{self, IncomingRequest, IncomingResponse, OutgoingRequest};
use rmb_testkit::{RedisServer, TestRegistrar};
use serde::Serialize;

use crate::servers::{listen_addr, Server};

#[derive(Args, Debug, Clone)]
pub(crate) struct ChaosArgs {
    /// Processes killed (SIGKILL), spread evenly over the run.
    #[arg(long, default_value_t = 21)]
    pub kills: usize,
    /// Seconds of the request stream (and of killing).
    #[arg(long, default_value_t = 120)]
    pub duration: u64,
    /// Requests started per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Each request's expiration, seconds: an answer may take this long.
    #[arg(long, default_value_t = 30)]
    pub expiration: u64,
    /// How long a killed process stays down before it is restarted, milliseconds.
    #[arg(long, default_value_t = 500)]
    pub down_ms: u64,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// What is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    Relay1,
    PeerA,
    Relay2,
    PeerB,
    RelayRedis,
}

impl Kind {
    const ROTATION: [Kind; 5] = [
        Kind::Relay1,
        Kind::PeerA,
        Kind::Relay2,
        Kind::PeerB,
        Kind::RelayRedis,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Relay1 => "relay instance 1",
            Kind::PeerA => "rmb-peer A (sender)",
            Kind::Relay2 => "relay instance 2",
            Kind::PeerB => "rmb-peer B (service)",
            Kind::RelayRedis => "relays' redis-server (AOF)",
        }
    }
}

/// The outcome, as printed and written as JSON.
#[derive(Debug, Serialize)]
pub(crate) struct Outcome {
    pub sent: u64,
    /// Requests answered by the service (exactly once or more).
    pub replies: u64,
    /// Requests answered with an error (and no reply).
    pub errors: u64,
    /// Requests with no answer at all.
    pub lost: u64,
    /// Of those, the ones the service ran (so the reply was lost, not the request).
    pub lost_after_running: u64,
    /// Requests the app got more than one answer for.
    pub duplicate_answers: u64,
    /// Requests the service ran more than once.
    pub run_twice: u64,
    /// Kill windows in milliseconds, per kind.
    pub windows_ms: BTreeMap<Kind, Vec<u64>>,
    /// Requests lost, or answered twice, or run twice, by the kill that started
    /// nearest to when each was sent (the kill most likely to blame).
    pub trouble_by_kill: BTreeMap<Kind, u64>,
    /// A few of the distinct error messages.
    pub error_samples: Vec<String>,
}

/// A process of the network that can be killed and started again.
struct Restartable {
    args: Vec<String>,
    server: Option<Server>,
}

impl Restartable {
    async fn start(args: Vec<String>) -> anyhow::Result<Self> {
        let mut r = Restartable { args, server: None };
        r.restart().await?;
        Ok(r)
    }

    async fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.kill().await;
        }
    }

    async fn restart(&mut self) -> anyhow::Result<()> {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.server = Some(Server::spawn(&args).await?);
        Ok(())
    }

    fn ready_line(&self) -> &str {
        self.server.as_ref().map_or("", |s| s.addr.as_str())
    }
}

struct Net {
    _registrar: TestRegistrar,
    relay_redis: RedisServer,
    relays: [Restartable; 2],
    peers: [Restartable; 2],
    redis_a: RedisServer,
    redis_b: RedisServer,
    twin_b: u32,
}

const COMMAND: &str = "chaos.count";
const REPLIES: &str = "chaos.replies";

impl Net {
    async fn start() -> anyhow::Result<Net> {
        let registrar = TestRegistrar::start().await?;
        let relay_redis = RedisServer::start_persistent()?;
        let listens = [listen_addr(), listen_addr()];
        let relay = |listen: &str| {
            let mut args: Vec<String> = ["serve-relay", "--listen", listen, "--registrar"]
                .map(String::from)
                .into();
            args.extend([registrar.url(), "--redis".into(), relay_redis.url()]);
            for domain in &listens {
                args.extend(["--domain".into(), domain.clone()]);
            }
            args
        };
        let relays = [
            Restartable::start(relay(&listens[0])).await?,
            Restartable::start(relay(&listens[1])).await?,
        ];
        let redis_a = RedisServer::start()?;
        let redis_b = RedisServer::start()?;
        let peer = |redis: &RedisServer, listen: &str| -> Vec<String> {
            let seed: [u8; 32] = rand::random();
            let secret: String = seed.iter().map(|b| format!("{b:02x}")).collect();
            [
                "serve-peer".to_string(),
                "--secret".into(),
                format!("0x{secret}"),
                "--key-type".into(),
                "ed25519".into(),
                "--relay".into(),
                format!("ws://{listen}"),
                "--redis".into(),
                redis.url(),
                "--registrar".into(),
                registrar.url(),
                "--e2e".into(),
                "false".into(),
            ]
            .into()
        };
        let peers = [
            Restartable::start(peer(&redis_a, &listens[0])).await?,
            Restartable::start(peer(&redis_b, &listens[1])).await?,
        ];
        let twin_b = peers[1].ready_line().parse()?;
        Ok(Net {
            _registrar: registrar,
            relay_redis,
            relays,
            peers,
            redis_a,
            redis_b,
            twin_b,
        })
    }

    /// Kills `kind`, waits `down`, starts it again; returns the window.
    async fn kill_and_restart(&mut self, kind: Kind, down: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        match kind {
            Kind::Relay1 | Kind::Relay2 | Kind::PeerA | Kind::PeerB => {
                let process = self.process(kind);
                process.kill().await;
                tokio::time::sleep(down).await;
                self.process(kind).restart().await?;
            }
            Kind::RelayRedis => {
                let redis = &mut self.relay_redis;
                tokio::task::block_in_place(|| redis.kill());
                tokio::time::sleep(down).await;
                tokio::task::block_in_place(|| redis.restart())?;
            }
        }
        Ok(started.elapsed())
    }

    fn process(&mut self, kind: Kind) -> &mut Restartable {
        match kind {
            Kind::Relay1 => &mut self.relays[0],
            Kind::Relay2 => &mut self.relays[1],
            Kind::PeerA => &mut self.peers[0],
            _ => &mut self.peers[1],
        }
    }
}

async fn conn(redis: &RedisServer) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    Ok(redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?)
}

/// The app's id of request `n`: digits only, 8 of them, so it is valid base64 and the
/// service sees it unchanged.
fn request_id(n: u64) -> String {
    format!("{n:08}")
}

/// Service workers behind B: run each request (count it by its id) and reply.
fn serve(
    workers: usize,
    conn: redis::aio::MultiplexedConnection,
    runs: Arc<DashMap<String, u32>>,
    stop: Arc<AtomicBool>,
) {
    for _ in 0..workers {
        let (mut c, runs, stop) = (conn.clone(), runs.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let popped: Option<(String, String)> =
                    c.brpop(peer_api::command_list(COMMAND), 1.0).await?;
                let Some((_, raw)) = popped else { continue };
                let req: IncomingRequest = serde_json::from_str(&raw)?;
                *runs.entry(req.data.clone()).or_default() += 1;
                let reply = crate::peer_bench::echo_reply(req);
                let _: () = c
                    .lpush(peer_api::SYSTEM_REPLY, serde_json::to_string(&reply)?)
                    .await?;
            }
            anyhow::Ok(())
        });
    }
}

/// What the app heard for one request.
#[derive(Debug, Default)]
struct Answers {
    replies: u32,
    errors: u32,
}

/// Reads answers on [`REPLIES`] into `answers` (keyed by the request's `ref`).
fn listen(
    mut c: redis::aio::MultiplexedConnection,
    answers: Arc<DashMap<String, Answers>>,
    samples: Arc<parking_lot::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let popped: Option<(String, String)> = c.brpop(REPLIES, 1.0).await?;
            let Some((_, raw)) = popped else { continue };
            let answer: IncomingResponse = serde_json::from_str(&raw)?;
            let id = answer.reference.unwrap_or_default();
            let mut entry = answers.entry(id).or_default();
            match answer.error {
                None => entry.replies += 1,
                Some(e) => {
                    entry.errors += 1;
                    let mut samples = samples.lock();
                    if samples.len() < 5 && !samples.contains(&e.message) {
                        samples.push(e.message);
                    }
                }
            }
        }
        anyhow::Ok(())
    });
}

pub(crate) async fn run(args: ChaosArgs) -> anyhow::Result<Outcome> {
    let mut net = Net::start().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let runs: Arc<DashMap<String, u32>> = Arc::default();
    let answers: Arc<DashMap<String, Answers>> = Arc::default();
    let samples = Arc::default();
    serve(8, conn(&net.redis_b).await?, runs.clone(), stop.clone());
    listen(
        conn(&net.redis_a).await?,
        answers.clone(),
        Arc::clone(&samples),
        stop.clone(),
    );

    // The steady stream, open loop: it does not wait for answers or for restarts.
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let sent_at: Arc<parking_lot::Mutex<Vec<Duration>>> = Arc::default();
    let duration = Duration::from_secs(args.duration);
    let sender = {
        let (mut c, sent, twin_b) = (conn(&net.redis_a).await?, sent.clone(), net.twin_b);
        let sent_at = sent_at.clone();
        let (rate, expiration) = (args.rate.max(0.1), args.expiration);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            let end = Instant::now() + duration;
            while Instant::now() < end {
                ticks.tick().await;
                let id = request_id(sent.load(Ordering::Relaxed));
                let request = OutgoingRequest {
                    version: 1,
                    reference: Some(id.clone()),
                    command: COMMAND.into(),
                    expiration,
                    data: id,
                    tags: None,
                    destinations: vec![twin_b],
                    reply_to: REPLIES.into(),
                    schema: None,
                    timestamp: rmb_core::time::now(),
                };
                sent_at.lock().push(started.elapsed());
                let _: () = c
                    .lpush(peer_api::SYSTEM_LOCAL, serde_json::to_string(&request)?)
                    .await?;
                sent.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        })
    };

    let mut windows: BTreeMap<Kind, Vec<u64>> = BTreeMap::new();
    let mut kill_times: Vec<(Duration, Kind)> = Vec::new();
    let every = duration / (args.kills.max(1) as u32 + 1);
    let down = Duration::from_millis(args.down_ms);
    for k in 0..args.kills {
        tokio::time::sleep(every.saturating_sub(down)).await;
        let kind = Kind::ROTATION[k % Kind::ROTATION.len()];
        let at = started.elapsed();
        kill_times.push((at, kind));
        let window = net.kill_and_restart(kind, down).await?;
        let (at, ms) = (at.as_secs_f64(), window.as_millis());
        eprintln!("kill {} at {at:.1} s: {} down {ms} ms", k + 1, kind.name());
        windows
            .entry(kind)
            .or_default()
            .push(window.as_millis() as u64);
    }
    sender.await??;

    // Every request has an answer by its expiration (plus the relays' margins), or none
    // comes any more.
    let total = sent.load(Ordering::Relaxed);
    let give_up = Instant::now() + Duration::from_secs(args.expiration + 15);
    while Instant::now() < give_up && (answers.len() as u64) < total {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Late copies have a moment to show up before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);

    let mut outcome = Outcome {
        sent: total,
        replies: 0,
        errors: 0,
        lost: 0,
        lost_after_running: 0,
        duplicate_answers: 0,
        run_twice: runs.iter().filter(|r| *r.value() > 1).count() as u64,
        windows_ms: windows,
        trouble_by_kill: BTreeMap::new(),
        error_samples: samples.lock().clone(),
    };
    let sent_at = sent_at.lock().clone();
    for n in 0..total {
        let id = request_id(n);
        let mut trouble = runs.get(&id).is_some_and(|r| *r > 1);
        match answers.get(&id) {
            None => {
                outcome.lost += 1;
                trouble = true;
                let ran = runs.contains_key(&id);
                outcome.lost_after_running += u64::from(ran);
                let at = sent_at.get(n as usize).copied().unwrap_or_default();
                let what = if ran { "its reply" } else { "the request" };
                eprintln!("lost: {what} of {id}, sent at {:.1} s", at.as_secs_f64());
            }
            Some(a) => {
                if a.replies > 0 {
                    outcome.replies += 1;
                } else {
                    outcome.errors += 1;
                }
                if a.replies + a.errors > 1 {
                    outcome.duplicate_answers += 1;
                    trouble = true;
                }
            }
        }
        let at = sent_at.get(n as usize).copied().unwrap_or_default();
        if let (true, Some(kind)) = (trouble, nearest_kill(&kill_times, at)) {
            *outcome.trouble_by_kill.entry(kind).or_default() += 1;
        }
    }
    Ok(outcome)
}

/// The kill that started nearest to `at`.
fn nearest_kill(kills: &[(Duration, Kind)], at: Duration) -> Option<Kind> {
    kills
        .iter()
        .min_by_key(|(t, _)| if *t > at { *t - at } else { at - *t })
        .map(|(_, kind)| *kind)
}

impl Outcome {
    pub(crate) fn markdown(&self, args: &ChaosArgs) -> String {
        let mut out = format!(
            "### Chaos: SIGKILL under a steady request stream\n\n\
             `rmb-bench chaos --kills {} --duration {} --rate {} --expiration {} --down-ms {}`: \
             app → redis → rmb-peer A → relay instance 1 → shared redis (AOF) → relay \
             instance 2 → rmb-peer B → redis → service, and back. Each killed process \
             is restarted {} ms later; its window runs from the kill until the new \
             process is ready.\n\n\
             | killed | kills | window min ms | window max ms | lost or duplicated near it |\n\
             |---|---|---|---|---|\n",
            args.kills, args.duration, args.rate, args.expiration, args.down_ms, args.down_ms
        );
        for (kind, windows) in &self.windows_ms {
            let min = windows.iter().min().copied().unwrap_or(0);
            let max = windows.iter().max().copied().unwrap_or(0);
            let trouble = self.trouble_by_kill.get(kind).copied().unwrap_or(0);
            out.push_str(&format!(
                "| {} | {} | {min} | {max} | {trouble} |\n",
                kind.name(),
                windows.len()
            ));
        }
        out.push_str(&format!(
            "\n| requests sent | replies | errors | lost (of which the service ran) | duplicate answers | run twice by the service |\n\
             |---|---|---|---|---|---|\n| {} | {} | {} | {} ({}) | {} | {} |\n",
            self.sent,
            self.replies,
            self.errors,
            self.lost,
            self.lost_after_running,
            self.duplicate_answers,
            self.run_twice
        ));
        if !self.error_samples.is_empty() {
            out.push_str("\nErrors seen: ");
            let quoted: Vec<String> = self
                .error_samples
                .iter()
                .map(|e| format!("`{e}`"))
                .collect();
            out.push_str(&quoted.join("; "));
            out.push('\n');
        }
        out
    }
}

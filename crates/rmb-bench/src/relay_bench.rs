//! `rmb-bench relay`, `federation` and `redis-cross`: envelopes forwarded between
//! sender→receiver pairs of WebSocket clients, each path against the bare WebSocket
//! forwarder (and, for the multi-relay paths, one relay) measured in the same run.

use anyhow::bail;
use clap::Args;
use rmb_registrar_client::RegistrarClient;

use crate::load::{self, Pair, Shape};
use crate::proc_stats;
use crate::report::{Common, Meter, Row, Table};
use crate::servers::{self, listen_addr, BenchTwin, Frames, Server, DOMAIN};

#[derive(Args, Debug, Clone)]
pub(crate) struct RelayArgs {
    /// Sender→receiver pair counts to measure (comma separated).
    #[arg(
        long,
        alias = "concurrency",
        value_delimiter = ',',
        default_value = "1,16,256"
    )]
    pub pairs: Vec<usize>,
    /// Envelopes in flight per pair.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Relay backends to measure: memory, redis.
    #[arg(long, value_delimiter = ',', default_value = "memory,redis")]
    pub backends: Vec<String>,
    #[command(flatten)]
    pub common: Common,
}

/// Options of `federation` and `redis-cross`.
#[derive(Args, Debug, Clone)]
pub(crate) struct CrossArgs {
    /// Sender→receiver pair counts to measure (comma separated).
    #[arg(
        long,
        alias = "concurrency",
        value_delimiter = ',',
        default_value = "1,16"
    )]
    pub pairs: Vec<usize>,
    /// Envelopes in flight per pair.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    #[command(flatten)]
    pub common: Common,
}

const SETUP: &str = "Latency is from the sender's write to the receiver's read; the load generator runs on the same cores as the servers, so the ratio to the baseline is the number to compare across machines.";

fn table(bench: &str, title: &str, common: &Common, window: usize, what: &str) -> Table {
    Table {
        bench: bench.into(),
        title: title.into(),
        setup: format!(
            "{what} {} B payloads, at most {window} envelopes in flight per pair, {} s warm-up, {} s measured, {} twins. {SETUP}",
            common.payload, common.warmup, common.duration, common.key_type
        ),
        concurrency_label: "pairs".into(),
        unit: "msgs/s".into(),
        baseline: "forwarder".into(),
        ..Default::default()
    }
}

/// Measures one target: the pairs of `plan` under load, and the servers' CPU and RSS.
async fn measure(
    target: &str,
    servers: &[(&str, u32)],
    plan: Vec<Pair>,
    common: &Common,
    window: usize,
) -> anyhow::Result<Row> {
    let pairs = plan.len();
    eprintln!("measuring {target} with {pairs} pairs ...");
    let meter = Meter::start(servers);
    let result = load::run(
        plan,
        common.warmup(),
        common.duration(),
        Shape::window(window),
    )
    .await?;
    if result.messages == 0 {
        bail!("{target}: nothing was delivered");
    }
    Ok(Row::new(target, pairs, &result, meter.finish()))
}

/// What each pair's sender sends (the same envelopes through every target of a run).
type PlanFrames = Vec<Frames>;

/// How a run makes each pair's [`Frames`]: [`Frames::signed`] where a relay on the
/// path verifies signatures, [`Frames::unverified`] elsewhere.
type MakeFrames = fn(&BenchTwin, &BenchTwin, usize) -> Frames;

fn frames(twins: &[(BenchTwin, BenchTwin)], size: usize, make: MakeFrames) -> PlanFrames {
    twins.iter().map(|(s, r)| make(s, r, size)).collect()
}

/// The baseline: the same frames through the bare forwarder.
async fn forwarder_row(frames: &PlanFrames, common: &Common, window: usize) -> anyhow::Result<Row> {
    let fwd = Server::forwarder().await?;
    let plan = frames
        .iter()
        .enumerate()
        .map(|(i, frames)| Pair {
            receiver_url: format!("ws://{}/?r{i}", fwd.addr),
            sender_url: format!("ws://{}/?s{i}", fwd.addr),
            frames: frames.clone(),
        })
        .collect();
    measure(
        "baseline: bare ws forwarder",
        &[("forwarder", fwd.pid())],
        plan,
        common,
        window,
    )
    .await
}

/// Envelopes used by [`verify_ceiling`] (distinct, so nothing is cached by accident).
const CEILING_ENVELOPES: usize = 256;

/// The physical ceiling of a verifying relay on this machine, measured in the same run:
/// envelopes like the first pair's verified per second with our own verification
/// ([`rmb_core::envelope::verify`], what relay B runs on each federated envelope), one
/// thread per core and nothing else. Latency columns: one verification.
async fn verify_ceiling(
    twins: &[(BenchTwin, BenchTwin)],
    frames: &PlanFrames,
    common: &Common,
) -> anyhow::Result<Row> {
    let (Some((sender, _)), Some(frames)) = (twins.first(), frames.first()) else {
        bail!("no pairs to take envelopes from");
    };
    let key = sender.signer.public_key();
    let mut frames = frames.clone();
    let envelopes: Vec<rmb_core::Envelope> = (0..CEILING_ENVELOPES)
        .map(|_| rmb_core::prost::Message::decode(&frames.next_frame().bytes[..]))
        .collect::<Result<_, _>>()?;
    for env in &envelopes {
        rmb_core::envelope::verify(env, &key)?;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (warmup, duration) = (common.warmup(), common.duration());
    eprintln!("measuring the verification ceiling on {threads} threads ...");
    let result = tokio::task::spawn_blocking(move || {
        let verify_for = |how_long: std::time::Duration, samples: &mut Vec<u32>| {
            let until = std::time::Instant::now() + how_long;
            let mut n = 0u64;
            for env in envelopes.iter().cycle() {
                let t = std::time::Instant::now();
                if t >= until {
                    break;
                }
                // Checked so the work cannot be optimised away, and counted as failed.
                if rmb_core::envelope::verify(env, &key).is_err() {
                    return None;
                }
                samples.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                n += 1;
            }
            Some(n)
        };
        // Every worker warms up, then all start the measured window together.
        let start = std::sync::Barrier::new(threads + 1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut samples = Vec::new();
                        let warm = verify_for(warmup, &mut samples);
                        samples.clear();
                        start.wait();
                        warm?;
                        let n = verify_for(duration, &mut samples)?;
                        Some((n, samples))
                    })
                })
                .collect();
            start.wait();
            let cpu = load::start_window();
            let mut total = 0;
            let mut latencies_us = Vec::new();
            for w in workers {
                let (n, mut samples) = w.join().ok().flatten()?;
                total += n;
                latencies_us.append(&mut samples);
            }
            latencies_us.sort_unstable();
            load::end_window(cpu, duration);
            Some(load::LoadResult {
                messages: total,
                elapsed: duration,
                latencies_us,
            })
        })
    })
    .await?;
    let Some(result) = result else {
        bail!("an envelope failed to verify in the ceiling measurement");
    };
    Ok(Row::new(
        &format!("ceiling: signature verification alone, {threads} threads"),
        threads,
        &result,
        Vec::new(),
    ))
}

/// Senders connect to `from`, receivers to `to` (relay addresses).
fn relay_plan(
    twins: &[(BenchTwin, BenchTwin)],
    frames: &PlanFrames,
    from: &str,
    to: &str,
) -> Vec<Pair> {
    twins
        .iter()
        .zip(frames)
        .map(|((s, r), frames)| Pair {
            receiver_url: r.url(to),
            sender_url: s.url(from),
            frames: frames.clone(),
        })
        .collect()
}

pub(crate) async fn run(args: RelayArgs) -> anyhow::Result<Vec<Table>> {
    let c = &args.common;
    let registrar = rmb_testkit::TestRegistrar::start().await?;
    let url = registrar.url();
    let redis = if args.backends.iter().any(|b| b == "redis") {
        Some(rmb_testkit::RedisServer::start()?)
    } else {
        None
    };
    let max_pairs = args.pairs.iter().copied().max().unwrap_or(1);
    let here = [DOMAIN.to_string()];
    let twins =
        servers::register_pairs(&registrar.client(), c.key_type, max_pairs, &here, &here).await?;
    let mut t = table("relay", "Relay forwarding", c, args.window, "One relay.");
    for &pairs in &args.pairs {
        let twins = &twins[..pairs];
        // Nobody on a one-relay path verifies signatures.
        let frames = frames(twins, c.payload, Frames::unverified);
        let base = forwarder_row(&frames, c, args.window).await?;
        t.rows.push(base.clone());
        for backend in &args.backends {
            let redis_url = match backend.as_str() {
                "memory" => None,
                "redis" => redis.as_ref().map(|r| r.url()),
                other => bail!("unknown backend {other:?} (memory, redis)"),
            };
            let relay = Server::relay(&listen_addr(), &url, redis_url.as_deref(), &[]).await?;
            let plan = relay_plan(twins, &frames, &relay.addr, &relay.addr);
            let name = format!("relay ({backend})");
            let row = measure(&name, &[("relay", relay.pid())], plan, c, args.window).await?;
            t.rows.push(row.against(&base));
        }
    }
    Ok(vec![t])
}

/// The servers of one pair count in `federation` and `redis-cross`: one relay that
/// holds both ends, and the two processes the path crosses.
struct Crossing {
    one: (&'static str, Server),
    from: (&'static str, Server),
    to: (&'static str, Server),
    label: &'static str,
    compared: &'static str,
    /// The redis-server between them, if any (measured too).
    redis: Option<u32>,
}

impl Crossing {
    /// Kills the servers and waits until they are gone (their ports are free again).
    async fn stop(self) {
        self.one.1.kill().await;
        self.from.1.kill().await;
        self.to.1.kill().await;
    }
}

/// For each pair count: the forwarder, one relay, then the path from one process to the
/// other, all with the same twins and frames.
async fn crossing<F, Fut>(
    mut t: Table,
    args: &CrossArgs,
    twins: &[(BenchTwin, BenchTwin)],
    make: MakeFrames,
    ceiling: bool,
    start: F,
) -> anyhow::Result<Vec<Table>>
where
    F: Fn(bool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Crossing>>,
{
    let c = &args.common;
    for &pairs in &args.pairs {
        let twins = &twins[..pairs];
        let frames = frames(twins, c.payload, make);
        let base = forwarder_row(&frames, c, args.window).await?;
        t.rows.push(base.clone());
        let ceiling = match ceiling {
            true => Some(verify_ceiling(twins, &frames, c).await?.against(&base)),
            false => None,
        };
        t.rows.extend(ceiling.clone());
        let x = start(false).await?;
        let plan = relay_plan(twins, &frames, &x.one.1.addr, &x.one.1.addr);
        let servers = [("relay", x.one.1.pid())];
        let one = measure(x.one.0, &servers, plan, c, args.window).await?;
        let one = one.against(&base);
        t.rows.push(one.clone());
        let plan = relay_plan(twins, &frames, &x.from.1.addr, &x.to.1.addr);
        let mut servers = vec![(x.from.0, x.from.1.pid()), (x.to.0, x.to.1.pid())];
        servers.extend(x.redis.map(|pid| ("redis-server", pid)));
        let row = measure(x.label, &servers, plan, c, args.window).await?;
        let row = row.against(&base);
        t.notes.push(format!(
            "with {pairs} pair(s), {} runs at {:.0}% of {}",
            x.label,
            100.0 * row.throughput / one.throughput,
            x.compared
        ));
        if let Some(ceiling) = &ceiling {
            t.notes.push(format!(
                "with {pairs} pair(s), {} runs at **{:.0}% of the verification ceiling** ({:.0} envelopes/s verified on all cores in this run)",
                x.label,
                100.0 * row.throughput / ceiling.throughput,
                ceiling.throughput
            ));
        }
        t.rows.push(row);
        if ceiling.is_some() && pairs == 1 {
            latency_rows(&mut t, c, twins, &frames, &x).await?;
        }
        if ceiling.is_some() {
            // The same path with relay B verifying each post inline, as before batches:
            // the before/after of this run. The domains are the listen addresses, so
            // the first relays must be gone before these take their ports.
            x.stop().await;
            let x = start(true).await?;
            let plan = relay_plan(twins, &frames, &x.from.1.addr, &x.to.1.addr);
            let servers = [(x.from.0, x.from.1.pid()), (x.to.0, x.to.1.pid())];
            let target = format!("{}, verified one by one inline (before)", x.label);
            let before = measure(&target, &servers, plan, c, args.window).await?;
            t.rows.push(before.against(&base));
            x.stop().await;
        }
    }
    Ok(vec![t])
}

/// One pair with one envelope in flight through one relay and through the crossing
/// (the servers of the 1-pair rows): what the path adds to a single request's latency.
async fn latency_rows(
    t: &mut Table,
    c: &Common,
    twins: &[(BenchTwin, BenchTwin)],
    frames: &PlanFrames,
    x: &Crossing,
) -> anyhow::Result<()> {
    let plan = relay_plan(twins, frames, &x.one.1.addr, &x.one.1.addr);
    let target = format!("{}, 1 in flight", x.one.0);
    let one = measure(&target, &[("relay", x.one.1.pid())], plan, c, 1).await?;
    let plan = relay_plan(twins, frames, &x.from.1.addr, &x.to.1.addr);
    let servers = [(x.from.0, x.from.1.pid()), (x.to.0, x.to.1.pid())];
    let target = format!("{}, 1 in flight", x.label);
    let row = measure(&target, &servers, plan, c, 1).await?.against(&one);
    t.notes.push(format!(
        "one envelope in flight: {} p50 {:.2} ms against {:.2} ms through one relay (**{:.1}×**; ratio column of these two rows: against one relay)",
        x.label,
        row.p50_ms,
        one.p50_ms,
        row.p50_ms / one.p50_ms
    ));
    t.rows.push(one);
    t.rows.push(row);
    Ok(())
}

/// `federation`: senders on relay A, receivers on relay B (each twin registered on its
/// relay's domain), every envelope crossing A → B by HTTP POST; against the forwarder and
/// one relay serving both domains, with the same twins and frames.
pub(crate) async fn federation(args: CrossArgs) -> anyhow::Result<Vec<Table>> {
    let c = &args.common;
    let registrar = rmb_testkit::TestRegistrar::start().await?;
    let url = registrar.url();
    let (addr_a, addr_b) = (listen_addr(), listen_addr());
    let max_pairs = args.pairs.iter().copied().max().unwrap_or(1);
    let twins = servers::register_pairs(
        &registrar.client(),
        c.key_type,
        max_pairs,
        std::slice::from_ref(&addr_a),
        std::slice::from_ref(&addr_b),
    )
    .await?;
    let t = table(
        "federation",
        "Federation across two relays",
        c,
        args.window,
        "Senders on relay A, receivers on relay B; A forwards each envelope to B by HTTP POST and B verifies its signature.",
    );
    // Relay B verifies the signature of every envelope federated to it.
    let (url, addr_a, addr_b) = (&url, &addr_a, &addr_b);
    crossing(
        t,
        &args,
        &twins,
        Frames::signed,
        true,
        |inline| async move {
            let one = Server::relay(&listen_addr(), url, None, &[addr_a, addr_b]).await?;
            let to = match inline {
                false => Server::relay(addr_b, url, None, &[addr_b]).await?,
                true => {
                    Server::spawn(&[
                        "serve-relay",
                        "--listen",
                        addr_b,
                        "--registrar",
                        url,
                        "--domain",
                        addr_b,
                        "--verify-threads",
                        "0",
                    ])
                    .await?
                }
            };
            Ok(Crossing {
                one: ("one relay (both domains)", one),
                from: (
                    "relay A",
                    Server::relay(addr_a, url, None, &[addr_a]).await?,
                ),
                to: ("relay B", to),
                label: "relay A → federation → relay B",
                compared: "one relay",
                redis: None,
            })
        },
    )
    .await
}

/// `redis-cross`: two relay instances sharing one Redis, senders on instance 1 and
/// receivers on instance 2, so every envelope goes through Redis; against the forwarder
/// and one in-memory relay.
pub(crate) async fn redis_cross(args: CrossArgs) -> anyhow::Result<Vec<Table>> {
    let c = &args.common;
    let registrar = rmb_testkit::TestRegistrar::start().await?;
    let url = registrar.url();
    let redis = rmb_testkit::RedisServer::start()?;
    let redis_url = redis.url();
    let redis_pid = proc_stats::redis_pid(redis.port());
    let max_pairs = args.pairs.iter().copied().max().unwrap_or(1);
    let here = [DOMAIN.to_string()];
    let twins =
        servers::register_pairs(&registrar.client(), c.key_type, max_pairs, &here, &here).await?;
    let t = table(
        "redis-cross",
        "Two relay instances sharing Redis",
        c,
        args.window,
        "Senders on instance 1, receivers on instance 2 (Redis backend, one redis-server started by the bench), so every envelope crosses Redis.",
    );
    crossing(t, &args, &twins, Frames::unverified, false, |_| async {
        let redis = Some(redis_url.as_str());
        Ok(Crossing {
            one: (
                "one relay (memory)",
                Server::relay(&listen_addr(), &url, None, &[]).await?,
            ),
            from: (
                "instance 1",
                Server::relay(&listen_addr(), &url, redis, &[]).await?,
            ),
            to: (
                "instance 2",
                Server::relay(&listen_addr(), &url, redis, &[]).await?,
            ),
            label: "instance 1 → redis → instance 2",
            compared: "one in-memory relay",
            redis: redis_pid,
        })
    })
    .await
}

/// `n` sender→receiver twin pairs living on [`DOMAIN`] (for other benchmarks' streams).
pub(crate) async fn twins_on(
    client: &RegistrarClient,
    common: &Common,
    n: usize,
) -> anyhow::Result<Vec<(BenchTwin, BenchTwin)>> {
    let here = [DOMAIN.to_string()];
    servers::register_pairs(client, common.key_type, n, &here, &here).await
}

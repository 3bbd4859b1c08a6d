//! # rmb-bench: RMB measured against baselines in the same run
//!
//! Every number this tool prints comes with a baseline measured by the same client code
//! in the same run, so results from different machines compare as ratios:
//! - `relay`: envelopes/s and latency through one relay (in-memory and Redis
//!   backends) for N sender→receiver pairs, against a bare WebSocket forwarder (no
//!   auth, no decode, no routing);
//! - `federation`: senders on relay A, receivers on relay B, against the forwarder and
//!   one relay;
//! - `redis-cross`: two relay instances sharing one Redis, against the forwarder and
//!   one in-memory relay;
//! - `peer`: round trips through the SDK and through rmb-peer, against a bare Redis
//!   LPUSH/BRPOP ping-pong;
//! - `registrar`: lookups through `RegistrarClient`, uncached and cached, against the
//!   same client asking a trivial HTTP handler;
//! - `load` (alias `idle`): memory per authenticated idle session, and the latency of a
//!   steady stream with and without them;
//! - `flood`: one twin flooding a rate-limited relay: what gets through, and the latency
//!   of a steady stream between other twins without and with it;
//! - `soak`: minutes of fixed-rate round trips through rmb-peer: no reply may be lost;
//! - `chaos`: a request stream through two rmb-peers and two relay instances on one
//!   Redis while each of them (and the Redis) is killed with SIGKILL and restarted:
//!   every request must get exactly one answer and run at most once;
//! - `all`: all but `soak`, written into docs/benchmarks.md.
//!
//! Servers run as child processes (this binary re-executed with a hidden subcommand), so
//! their CPU time and peak RSS are measured apart from the load generator's.

mod all;
mod chaos;
mod flood;
mod forwarder;
mod load;
mod peer_bench;
mod proc_stats;
mod registrar_bench;
mod relay_bench;
mod report;
mod scale;
mod servers;

use clap::{Parser, Subcommand};

use crate::report::Table;

#[derive(Parser)]
#[command(version, about = "RMB benchmarks, each with a same-run baseline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Relay forwarding throughput and latency vs a bare WebSocket forwarder.
    Relay(relay_bench::RelayArgs),
    /// Federation between two relays vs one relay and the bare forwarder.
    Federation(relay_bench::CrossArgs),
    /// Two relay instances sharing Redis vs one in-memory relay and the bare forwarder.
    RedisCross(relay_bench::CrossArgs),
    /// Round trips through the SDK and through rmb-peer vs a bare Redis ping-pong.
    Peer(peer_bench::PeerArgs),
    /// Registrar lookups (uncached, cached) vs the same client on a trivial handler.
    Registrar(registrar_bench::RegistrarArgs),
    /// Idle authenticated sessions: memory per session, and stream latency with them.
    #[command(alias = "idle")]
    Load(scale::LoadArgs),
    /// One twin flooding a rate-limited relay: what gets through, and other twins' latency.
    Flood(flood::FloodArgs),
    /// Fixed-rate round trips through relay and rmb-peer for minutes; fails on a lost reply.
    Soak(peer_bench::SoakArgs),
    /// SIGKILL of relays, rmb-peers and Redis under a request stream: nothing lost or run twice.
    Chaos(chaos::ChaosArgs),
    /// Everything but soak, written into docs/benchmarks.md (~5 minutes).
    All(all::AllArgs),
    /// (internal) run the baseline forwarder on a listener address.
    #[command(hide = true)]
    ServeForwarder { listen: String },
    /// (internal) run a relay.
    #[command(hide = true)]
    ServeRelay(servers::ServeRelayArgs),
    /// (internal) run an rmb-peer gateway.
    #[command(hide = true)]
    ServePeer(servers::ServePeerArgs),
    /// (internal) run a registrar on a SQLite file.
    #[command(hide = true)]
    ServeRegistrar {
        #[arg(long)]
        db: String,
    },
    /// (internal) run the trivial HTTP handler answering `body`.
    #[command(hide = true)]
    ServeHttp {
        #[arg(long)]
        body: String,
    },
}

fn main() -> anyhow::Result<()> {
    // Thousands of sockets: lift the descriptor limit as far as we are allowed.
    let _ = rlimit::increase_nofile_limit(200_000);
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::All(args) => run_all(args).await,
        Command::Chaos(args) => run_chaos(args).await,
        Command::ServeForwarder { listen } => forwarder::serve(&listen).await,
        Command::ServeRelay(args) => servers::serve_relay(args).await,
        Command::ServePeer(args) => servers::serve_peer(args).await,
        Command::ServeRegistrar { db } => servers::serve_registrar(&db).await,
        Command::ServeHttp { body } => servers::serve_http(body).await,
        bench => {
            let json = match &bench {
                Command::Relay(a) => a.common.json.clone(),
                Command::Federation(a) | Command::RedisCross(a) => a.common.json.clone(),
                Command::Peer(a) => a.common.json.clone(),
                Command::Registrar(a) => a.common.json.clone(),
                Command::Load(a) => a.common.json.clone(),
                Command::Flood(a) => a.common.json.clone(),
                Command::Soak(a) => a.json.clone(),
                _ => None,
            };
            let tables = measure(bench).await?;
            report::emit(&tables, json.as_deref())
        }
    }
}

/// Runs one benchmark subcommand.
async fn measure(command: Command) -> anyhow::Result<Vec<Table>> {
    match command {
        Command::Relay(args) => relay_bench::run(args).await,
        Command::Federation(args) => relay_bench::federation(args).await,
        Command::RedisCross(args) => relay_bench::redis_cross(args).await,
        Command::Peer(args) => peer_bench::run(args).await,
        Command::Registrar(args) => registrar_bench::run(args).await,
        Command::Load(args) => scale::run(args).await,
        Command::Flood(args) => flood::run(args).await,
        Command::Soak(args) => peer_bench::soak(args).await,
        _ => anyhow::bail!("not a benchmark"),
    }
}

async fn run_chaos(args: chaos::ChaosArgs) -> anyhow::Result<()> {
    let outcome = chaos::run(args.clone()).await?;
    println!("{}", outcome.markdown(&args));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&outcome)?)?;
    }
    if outcome.lost > 0 || outcome.duplicate_answers > 0 || outcome.run_twice > 0 {
        anyhow::bail!(
            "chaos: {} lost, {} answered twice, {} run twice",
            outcome.lost,
            outcome.duplicate_answers,
            outcome.run_twice
        );
    }
    Ok(())
}

async fn run_all(args: all::AllArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut tables = Vec::new();
    for bench in args.benches() {
        let line = args.command_line(&bench);
        eprintln!("== {}", line.join(" "));
        let command = Cli::try_parse_from(&line)?.command;
        if matches!(command, Command::All(_)) {
            anyhow::bail!("`all` cannot run itself");
        }
        let result = measure(command).await?;
        for t in &result {
            println!("{}", t.markdown());
        }
        tables.extend(result);
    }
    if let Some(path) = &args.common.json {
        report::write_json(&tables, path)?;
    }
    all::write(&args, &tables, started)
}

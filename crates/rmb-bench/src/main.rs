//! # rmb-bench: RMB measured against baselines in the same run
//!
//! Every number this tool prints comes with a baseline measured by the same client code
//! in the same run, so results from different machines compare as ratios:
//! - `relay`: envelopes/s and latency through one relay (in-memory and Redis
//!   backends) for N sender→receiver pairs, against a bare WebSocket forwarder (no
//!   auth, no decode, no routing) on the same runtime;
//! - `idle`: memory per authenticated idle session;
//! - `peer`: round trips through the SDK and through rmb-peer, against a bare Redis
//!   LPUSH/BRPOP ping-pong.
//!
//! Servers run as child processes (this binary re-executed with a hidden subcommand), so
//! their CPU time and peak RSS are measured apart from the load generator's.

mod forwarder;
mod load;
mod peer_bench;
mod proc_stats;
mod relay_bench;

use clap::{Parser, Subcommand};

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
    /// Memory per authenticated idle session on a relay.
    Idle(relay_bench::IdleArgs),
    /// Round trips through the SDK and through rmb-peer vs a bare Redis ping-pong.
    Peer(peer_bench::PeerArgs),
    /// (internal) run the baseline forwarder on a listener address.
    #[command(hide = true)]
    ServeForwarder { listen: String },
    /// (internal) run a relay: listen address, registrar URL, optional Redis URL.
    #[command(hide = true)]
    ServeRelay {
        listen: String,
        registrar: String,
        redis: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    // Thousands of sockets: lift the descriptor limit as far as we are allowed.
    let _ = rlimit::increase_nofile_limit(200_000);
    if let Ok((soft, hard)) = rlimit::Resource::NOFILE.get() {
        if hard < 200_000 {
            let _ = rlimit::Resource::NOFILE.set(200_000.max(soft), 200_000);
        }
    }
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Relay(args) => relay_bench::run(args).await,
            Command::Idle(args) => relay_bench::idle(args).await,
            Command::Peer(args) => peer_bench::run(args).await,
            Command::ServeForwarder { listen } => forwarder::serve(&listen).await,
            Command::ServeRelay {
                listen,
                registrar,
                redis,
            } => relay_bench::serve_relay(&listen, &registrar, redis).await,
        }
    })
}

//! `rmb-peer`: flags and environment onto [`rmb_peer::PeerConfig`].

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use rmb_core::KeyType;
use rmb_peer::{Peer, PeerConfig};
use tracing_subscriber::EnvFilter;

/// RMB peer: lets local applications talk RMB through Redis lists.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The twin's secret: BIP-39 words or 0x followed by 64 hex digits. Prefer
    /// RMB_MNEMONIC or --mnemonic-file, so it stays off the command line.
    #[arg(short = 'm', long, env = "RMB_MNEMONIC", hide_env_values = true)]
    mnemonic: Option<String>,

    /// Read the secret from this file (surrounding whitespace ignored).
    #[arg(long, env = "RMB_MNEMONIC_FILE", conflicts_with = "mnemonic")]
    mnemonic_file: Option<PathBuf>,

    /// Key type of the twin: ed25519 or sr25519.
    #[arg(short = 'k', long, env = "RMB_KEY_TYPE", default_value = "sr25519")]
    key_type: String,

    /// Relay URL (ws:// or wss://); repeat, or comma-separate in RMB_RELAY, for several.
    #[arg(
        long = "relay",
        env = "RMB_RELAY",
        value_delimiter = ',',
        required = true
    )]
    relays: Vec<String>,

    /// Local Redis.
    #[arg(
        short = 'r',
        long,
        env = "RMB_REDIS",
        default_value = "redis://localhost:6379"
    )]
    redis: String,

    /// Registrar base URL (http:// or https://).
    #[arg(long, env = "RMB_REGISTRAR")]
    registrar: String,

    /// Do not create or update the twin's registrar record.
    #[arg(long, env = "RMB_NO_UPDATE")]
    no_update: bool,

    /// Debug logging.
    #[arg(short = 'd', long, env = "RMB_DEBUG")]
    debug: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let level = if args.debug { "debug" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level)),
        )
        .init();
    let secret = match (&args.mnemonic, &args.mnemonic_file) {
        (Some(m), _) => m.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the secret from {}", path.display()))?
            .trim()
            .to_string(),
        (None, None) => anyhow::bail!(
            "no secret: give -m/--mnemonic, --mnemonic-file or the RMB_MNEMONIC variable"
        ),
    };
    let key_type: KeyType = args.key_type.parse()?;
    let mut config = PeerConfig::new(
        secret,
        key_type,
        args.relays.clone(),
        args.redis.clone(),
        args.registrar.clone(),
    );
    config.no_update = args.no_update;
    let mut peer = Peer::start(config).await?;
    tracing::info!(twin = peer.twin_id(), relays = ?args.relays, redis = %args.redis, "started");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
        _ = peer.wait() => tracing::error!("a peer task ended unexpectedly"),
    }
    peer.shutdown().await;
    Ok(())
}

//! `rmb-peer`: flags and environment onto [`rmb_peer::PeerConfig`].

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use rmb_config::Loaded;
use rmb_core::KeyType;
use rmb_peer::{Peer, PeerConfig};
use tracing_subscriber::EnvFilter;

/// RMB peer: lets local applications talk RMB through Redis lists.
///
/// Every flag can also be set in a TOML file given with --config: the key is the long
/// flag name in snake_case (`mnemonic_file = "/etc/rmb/secret"`). Flags and environment
/// variables override the file. A raw `mnemonic` in the file is refused unless only
/// the file's owner can read it (mode 0600 or stricter).
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// TOML file of defaults for the flags below (see docs/deploy.md).
    #[arg(long, env = "RMB_PEER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

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
    let loaded = rmb_config::parse::<Args>()?;
    let level = if loaded.args.debug { "debug" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level)),
        )
        .init();
    let secret = secret(&loaded)?;
    let args = loaded.args;
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
        _ = rmb_config::shutdown_signal() => tracing::info!("shutting down"),
        _ = peer.wait() => tracing::error!("a peer task ended unexpectedly"),
    }
    peer.shutdown().await;
    Ok(())
}

/// The twin's secret from whichever of `mnemonic` and `mnemonic_file` has the higher
/// precedence: clap only rejects both when both are explicit, but one may come from the
/// config file and the other from a flag or variable, and then the flag or variable wins.
fn secret(loaded: &Loaded<Args>) -> anyhow::Result<String> {
    let args = &loaded.args;
    // Checked even when a flag overrides it: the secret in the file is exposed either way.
    if loaded.in_config_file("mnemonic") {
        let config = loaded.config_file().expect("a config file was read");
        ensure_private(config)?;
    }
    let raw_wins = loaded.source("mnemonic") >= loaded.source("mnemonic_file");
    match (&args.mnemonic, &args.mnemonic_file) {
        (Some(m), _) if raw_wins => Ok(m.clone()),
        (_, Some(path)) => Ok(std::fs::read_to_string(path)
            .with_context(|| format!("reading the secret from {}", path.display()))?
            .trim()
            .to_string()),
        _ => anyhow::bail!(
            "no secret: give -m/--mnemonic, --mnemonic-file, the RMB_MNEMONIC or \
             RMB_MNEMONIC_FILE variable, or mnemonic_file in the config file"
        ),
    }
}

/// A config file holding a raw secret must be readable by its owner alone; otherwise
/// the peer refuses to start rather than run with a secret other users may have read.
#[cfg(unix)]
fn ensure_private(path: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("checking the permissions of {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "config file {} holds a raw mnemonic but its mode is {:o}: run `chmod 600` on it, \
             or use mnemonic_file (or RMB_MNEMONIC) instead",
            path.display(),
            mode & 0o777
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn ensure_private(_path: &std::path::Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmb_config::Source;

    const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/rmb-peer.toml");

    fn load(argv: &[&str]) -> Loaded<Args> {
        rmb_config::try_parse_from(std::iter::once("rmb-peer").chain(argv.iter().copied()))
            .expect("valid arguments")
    }

    /// A config file in its own directory, with the given mode.
    fn config(text: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rmb-peer.toml");
        std::fs::write(&path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        (dir, path)
    }

    #[test]
    fn deploy_example_config_parses() {
        let loaded = load(&["--config", EXAMPLE]);
        let args = &loaded.args;
        assert_eq!(
            args.relays,
            ["wss://relay.example.org", "wss://relay2.example.org"]
        );
        assert_eq!(args.registrar, "https://registrar.example.org");
        assert_eq!(args.redis, "redis://localhost:6379");
        assert_eq!(args.key_type, "sr25519");
        assert!(!args.no_update && !args.debug);
        assert_eq!(loaded.source("registrar"), Source::ConfigFile);
    }

    #[test]
    fn flags_override_the_example_config() {
        let loaded = load(&[
            "--config",
            EXAMPLE,
            "--relay",
            "ws://127.0.0.1:1",
            "-k",
            "ed25519",
        ]);
        assert_eq!(loaded.args.relays, ["ws://127.0.0.1:1"]);
        assert_eq!(loaded.args.key_type, "ed25519");
        assert_eq!(loaded.args.registrar, "https://registrar.example.org");
    }

    #[test]
    fn raw_mnemonic_needs_a_private_config_file() {
        let text = "relay = \"ws://r\"\nregistrar = \"http://g\"\nmnemonic = \"0xabc\"\n";
        let (_dir, path) = config(text, 0o600);
        let loaded = load(&["--config", path.to_str().unwrap()]);
        assert_eq!(secret(&loaded).unwrap(), "0xabc");

        let (_dir, path) = config(text, 0o644);
        let loaded = load(&["--config", path.to_str().unwrap()]);
        let err = secret(&loaded).unwrap_err().to_string();
        assert!(
            err.contains("mode is 644") && err.contains("chmod 600"),
            "{err}"
        );
    }

    #[test]
    fn a_secret_file_on_the_command_line_beats_a_mnemonic_in_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, "0xfromfile\n").unwrap();
        let text = "relay = \"ws://r\"\nregistrar = \"http://g\"\nmnemonic = \"0xfromconfig\"\n";
        let (_dir, path) = config(text, 0o600);
        let argv = [
            "--config",
            path.to_str().unwrap(),
            "--mnemonic-file",
            secret_file.to_str().unwrap(),
        ];
        assert_eq!(secret(&load(&argv)).unwrap(), "0xfromfile");
    }

    #[test]
    fn mnemonic_file_from_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, "  0xsecret\n").unwrap();
        let text = format!(
            "relay = \"ws://r\"\nregistrar = \"http://g\"\nmnemonic_file = {:?}\n",
            secret_file.to_str().unwrap()
        );
        // Only the secret file needs to be private, not the config naming it.
        let (_dir, path) = config(&text, 0o644);
        let loaded = load(&["--config", path.to_str().unwrap()]);
        assert_eq!(secret(&loaded).unwrap(), "0xsecret");
    }
}

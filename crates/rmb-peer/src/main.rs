//! `rmb-peer`: flags and environment onto [`rmb_peer::PeerConfig`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Parser};
use rmb_config::Loaded;
use rmb_core::KeyType;
use rmb_peer::redis_conn::redact_url;
use rmb_peer::{Peer, PeerConfig};
use rmb_sdk::Resend;
use tracing_subscriber::EnvFilter;

/// RMB peer: lets local applications talk RMB through Redis lists.
///
/// Accepts the original rmb-peer's command lines: `-m/--mnemonic` (and its deprecated
/// spellings `--mnemonics` and `--seed`), `-k`, `-r`, `--relay` (repeated, or several
/// URLs after one flag), `-d` counted (`-dd` for trace), `--no-update`; `--substrate` and
/// `--uploads` are accepted and ignored. Twins are looked up on a registrar, so
/// `--registrar` (or RMB_REGISTRAR) is needed where the original pointed at TFChain.
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

    /// The twin's secret: BIP-39 words or 0x followed by 64 hex digits (the original's
    /// deprecated --mnemonics and --seed mean the same). Prefer RMB_MNEMONIC or
    /// --mnemonic-file, so it stays off the command line.
    #[arg(
        short = 'm',
        long,
        alias = "mnemonics",
        alias = "seed",
        env = "RMB_MNEMONIC",
        hide_env_values = true
    )]
    mnemonic: Option<String>,

    /// Read the secret from this file (surrounding whitespace ignored). A warning is
    /// logged if users other than its owner may read it.
    #[arg(long, env = "RMB_MNEMONIC_FILE", conflicts_with = "mnemonic")]
    mnemonic_file: Option<PathBuf>,

    /// Key type of the twin: ed25519 or sr25519.
    #[arg(short = 'k', long, env = "RMB_KEY_TYPE", default_value = "sr25519")]
    key_type: String,

    /// Relay URL (ws:// or wss://). Repeat the flag, list several after it
    /// (`--relay wss://a wss://b`), or comma-separate them in RMB_RELAY.
    #[arg(
        long = "relay",
        env = "RMB_RELAY",
        value_delimiter = ',',
        num_args = 1..,
        value_name = "URL",
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

    /// Registrar base URL (http:// or https://), where twins, their keys and relays are
    /// looked up (the original rmb-peer read them from TFChain).
    #[arg(long, env = "RMB_REGISTRAR", value_name = "URL", required = true)]
    registrar: String,

    /// Accepted so the original's command lines keep working, and ignored: twins are
    /// looked up on --registrar, not on TFChain.
    #[arg(short = 's', long, num_args = 1.., value_name = "URL")]
    substrate: Vec<String>,

    /// Accepted so the original's command lines keep working, and ignored (the
    /// original ignores it too).
    #[arg(short = 'u', long, value_name = "DIR", hide = true)]
    uploads: Option<PathBuf>,

    /// Do not create or update the twin's registrar record.
    #[arg(long, env = "RMB_NO_UPDATE")]
    no_update: bool,

    /// Which receivers get a copy of a request whose reply has not come after 5 s,
    /// 10 s, 20 s...: `known` (only twins whose replies said they drop copies: ours
    /// do), `off`, or `always` (only if every receiver drops copies; the original
    /// rmb-peer, the Go router and the TypeScript client run every copy).
    #[arg(long, env = "RMB_RESEND", default_value = "known", value_parser = resend_policy)]
    resend: Resend,

    /// Serve Prometheus metrics at http://ADDR/metrics (off unless given; without an
    /// address, on 127.0.0.1:9464). They are not secret but not meant for strangers:
    /// keep them on loopback or a private network.
    #[arg(
        long,
        env = "RMB_PEER_METRICS",
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = rmb_peer::metrics::DEFAULT_ADDR
    )]
    metrics: Option<std::net::SocketAddr>,

    /// More logs: -d for debug, -dd for trace (RUST_LOG overrides). RMB_DEBUG takes a
    /// count or true/false.
    #[arg(
        short = 'd',
        long,
        env = "RMB_DEBUG",
        action = ArgAction::Count,
        value_parser = debug_count
    )]
    debug: u8,
}

/// `--resend`'s value.
fn resend_policy(value: &str) -> Result<Resend, String> {
    match value {
        "off" => Ok(Resend::Off),
        "known" => Ok(Resend::KnownReceivers),
        "always" => Ok(Resend::Always),
        other => Err(format!("expected off, known or always, not {other:?}")),
    }
}

/// `-d`'s value from RMB_DEBUG or the config file: a count, or a switch (once or never).
fn debug_count(value: &str) -> Result<u8, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "false" | "no" | "off" => Ok(0),
        "true" | "yes" | "on" => Ok(1),
        n => n
            .parse()
            .map_err(|_| format!("expected a count (0-255) or true/false, not {value:?}")),
    }
}

/// The log filter for `-d` given `count` times: our crates get the detail, the
/// libraries under them one level less (their trace floods the log).
fn log_filter(count: u8) -> &'static str {
    match count {
        0 => "info",
        1 => "debug,hyper=info,tungstenite=info,tokio_tungstenite=info",
        _ => "debug,rmb_peer=trace,rmb_sdk=trace,rmb_core=trace,rmb_registrar_client=trace",
    }
}

/// Spellings of the original rmb-peer that still work but should be replaced.
fn deprecated_flags(argv: &[String]) -> Vec<&'static str> {
    ["--mnemonics", "--seed"]
        .into_iter()
        .filter(|flag| {
            argv.iter()
                .take_while(|a| *a != "--")
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let loaded = match rmb_config::parse::<Args>() {
        Ok(loaded) => loaded,
        Err(e) => return Err(explain_missing_registrar(e)),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(log_filter(loaded.args.debug))),
        )
        .init();
    let argv: Vec<String> = std::env::args().collect();
    for flag in deprecated_flags(&argv) {
        tracing::warn!("{flag} is deprecated: use -m/--mnemonic (it takes words or a 0x seed)");
    }
    if !loaded.args.substrate.is_empty() {
        tracing::warn!(
            substrate = ?loaded.args.substrate,
            "--substrate is ignored: twins are looked up on the registrar ({})",
            loaded.args.registrar
        );
    }
    if loaded.args.uploads.is_some() {
        tracing::warn!("--uploads is ignored (the original rmb-peer ignores it too)");
    }
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
    config.resend = args.resend;
    // Bound first, so a taken port fails the start instead of a running peer.
    let metrics_listener = match args.metrics {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--metrics {addr}"))?,
        ),
        None => None,
    };
    let mut peer = Peer::start(config).await?;
    let stop_metrics = tokio_util::sync::CancellationToken::new();
    if let Some(listener) = metrics_listener {
        tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
        let stop = stop_metrics.clone().cancelled_owned();
        tokio::spawn(rmb_peer::metrics::serve(listener, peer.metrics(), stop));
    }
    tracing::info!(
        twin = peer.twin_id(),
        relays = ?args.relays,
        redis = %redact_url(&args.redis),
        "started"
    );
    let client = peer.client().clone();
    let relays = args.relays.len();
    // The original rmb-peer logs "now connected" once a relay link is up, and scripts
    // wait for that line (rmb-rs tools/rmb_tester/test_live_nodes.sh greps for it).
    let ready = async move {
        while !client.wait_connected(1, Duration::from_secs(3600)).await {}
        tracing::info!(
            twin = client.twin_id(),
            connected = client.connected_relays(),
            relays,
            "now connected: ready"
        );
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = rmb_config::shutdown_signal() => tracing::info!("shutting down"),
        _ = peer.wait() => tracing::error!("a peer task ended unexpectedly"),
        _ = ready => {}
    }
    stop_metrics.cancel();
    peer.shutdown().await;
    Ok(())
}

/// The original rmb-peer needed no registrar (it read TFChain), so its command lines
/// lack one: say so when that is what is missing.
fn explain_missing_registrar(e: rmb_config::ConfigError) -> anyhow::Error {
    match &e {
        rmb_config::ConfigError::Missing { flag, .. } if flag == "--registrar" => {
            anyhow::Error::new(e).context(
                "this rmb-peer looks twins up on a registrar, not on TFChain (--substrate is \
                 accepted but ignored): add --registrar URL or set RMB_REGISTRAR",
            )
        }
        _ => e.into(),
    }
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
        (_, Some(path)) => {
            if let Some(mode) = shared_mode(path)? {
                // A warning, not a refusal: container runtimes mount secrets with modes
                // the operator may not choose (Kubernetes 0644, Docker swarm 0444), where
                // only the container can see the file anyway.
                tracing::warn!(
                    "the secret file {} has mode {mode:o}: users other than its owner may \
                     read it; run `chmod 600` on it",
                    path.display()
                );
            }
            Ok(std::fs::read_to_string(path)
                .with_context(|| format!("reading the secret from {}", path.display()))?
                .trim()
                .to_string())
        }
        _ => anyhow::bail!(
            "no secret: give -m/--mnemonic, --mnemonic-file, the RMB_MNEMONIC or \
             RMB_MNEMONIC_FILE variable, or mnemonic_file in the config file"
        ),
    }
}

/// A config file holding a raw secret must be readable by its owner alone; otherwise
/// the peer refuses to start rather than run with a secret other users may have read.
fn ensure_private(path: &std::path::Path) -> anyhow::Result<()> {
    if let Some(mode) = shared_mode(path)? {
        anyhow::bail!(
            "config file {} holds a raw mnemonic but its mode is {mode:o}: run `chmod 600` on \
             it, or use mnemonic_file (or RMB_MNEMONIC) instead",
            path.display(),
        );
    }
    Ok(())
}

/// The file's permission bits if its group or others have any access to it.
#[cfg(unix)]
fn shared_mode(path: &std::path::Path) -> anyhow::Result<Option<u32>> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("checking the permissions of {}", path.display()))?
        .permissions()
        .mode();
    Ok((mode & 0o077 != 0).then_some(mode & 0o777))
}

#[cfg(not(unix))]
fn shared_mode(_path: &std::path::Path) -> anyhow::Result<Option<u32>> {
    Ok(None)
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
        assert!(!args.no_update);
        assert_eq!(args.debug, 0);
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

    /// `/metrics` is off unless asked for, and loopback when asked without an address
    /// (the original had no metrics port; a new open port must be a choice).
    #[test]
    fn metrics_are_off_by_default_and_loopback_when_asked() {
        let base = [
            "--relay",
            "ws://127.0.0.1:1",
            "--registrar",
            "http://127.0.0.1:1",
        ];
        for (extra, expected) in [
            (&[][..], None),
            (&["--metrics"][..], Some("127.0.0.1:9464")),
            (&["--metrics", "0.0.0.0:9100"][..], Some("0.0.0.0:9100")),
            (&["--metrics=127.0.0.1:0"][..], Some("127.0.0.1:0")),
        ] {
            let args = load(&[&base[..], extra].concat()).args;
            assert_eq!(
                args.metrics,
                expected.map(|a| a.parse().unwrap()),
                "{extra:?}"
            );
        }
        let (_dir, path) = config("metrics = \"127.0.0.1:9200\"\n", 0o644);
        let path = path.to_str().unwrap();
        let args = load(&[&base[..], &["--config", path][..]].concat()).args;
        assert_eq!(args.metrics, Some("127.0.0.1:9200".parse().unwrap()));
    }

    /// The command lines of the original rmb-peer (threefoldtech/rmb-rs,
    /// src/bins/rmb-peer.rs: `-m/--mnemonic` with the deprecated `--mnemonics` and
    /// `--seed`, `-k`, `-r`, `-s/--substrate` taking several URLs, `--relay` taking up to
    /// three after one flag, `-d` counted, `--no-update`), plus our `--registrar`.
    #[test]
    fn the_original_command_lines_parse() {
        let reg = ["--registrar", "http://127.0.0.1:1"];
        let with = |argv: &[&str]| load(&[argv, &reg[..]].concat()).args;
        let a = with(&[
            "-m",
            "word list",
            "--relay",
            "wss://r1",
            "-ddd",
            "--no-update",
        ]);
        assert_eq!(a.mnemonic.as_deref(), Some("word list"));
        assert_eq!(a.relays, ["wss://r1"]);
        assert_eq!(a.debug, 3);
        assert!(a.no_update);
        let a = with(&[
            "--mnemonics",
            "w",
            "--relay",
            "wss://r1",
            "wss://r2",
            "wss://r3",
        ]);
        assert_eq!(a.mnemonic.as_deref(), Some("w"));
        assert_eq!(a.relays, ["wss://r1", "wss://r2", "wss://r3"]);
        let a = with(&[
            "--seed", "0xab", "--relay", "wss://r1", "--relay", "wss://r2",
        ]);
        assert_eq!(a.mnemonic.as_deref(), Some("0xab"));
        assert_eq!(a.relays, ["wss://r1", "wss://r2"]);
        let a = with(&[
            "-k",
            "ed25519",
            "-r",
            "redis://127.0.0.1:7777",
            "-s",
            "wss://tfchain.grid.tf:443",
            "wss://02.tfchain.grid.tf:443",
            "-u",
            "/tmp/uploads",
            "--relay",
            "wss://r",
            "-d",
            "-m",
            "w",
        ]);
        assert_eq!(a.key_type, "ed25519");
        assert_eq!(a.redis, "redis://127.0.0.1:7777");
        assert_eq!(a.substrate.len(), 2);
        assert_eq!(a.debug, 1);
        let a = with(&["-m", "w", "--relay", "wss://r", "--debug", "--debug"]);
        assert_eq!(a.debug, 2);
    }

    #[test]
    fn resend_policy_from_flag_and_file() {
        let reg = ["--relay", "ws://r", "--registrar", "http://g"];
        assert_eq!(
            load(&reg).args.resend,
            Resend::KnownReceivers,
            "the default"
        );
        let a = load(&[&reg[..], &["--resend", "off"]].concat()).args;
        assert_eq!(a.resend, Resend::Off);
        let text = "relay = \"ws://r\"\nregistrar = \"http://g\"\nresend = \"always\"\n";
        let (_dir, path) = config(text, 0o600);
        assert_eq!(
            load(&["--config", path.to_str().unwrap()]).args.resend,
            Resend::Always
        );
        assert!(rmb_config::try_parse_from::<Args, _, _>(
            ["rmb-peer", "--resend", "sometimes"].iter().chain(&reg)
        )
        .is_err());
    }

    #[test]
    fn deprecated_spellings_are_noticed() {
        let argv = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        assert_eq!(
            deprecated_flags(&argv(&["rmb-peer", "--seed=0x1", "--mnemonics", "w"])),
            ["--mnemonics", "--seed"]
        );
        assert!(deprecated_flags(&argv(&["rmb-peer", "-m", "--seed"])).len() == 1);
        assert!(deprecated_flags(&argv(&["rmb-peer", "--mnemonic", "w"])).is_empty());
    }

    #[test]
    fn debug_counts_from_the_environment_and_the_file() {
        assert_eq!(debug_count("true"), Ok(1));
        assert_eq!(debug_count("false"), Ok(0));
        assert_eq!(debug_count("2"), Ok(2));
        assert!(debug_count("loud").is_err());
        let text = "relay = \"ws://r\"\nregistrar = \"http://g\"\ndebug = true\n";
        let (_dir, path) = config(text, 0o600);
        assert_eq!(load(&["--config", path.to_str().unwrap()]).args.debug, 1);
        assert_eq!(log_filter(0), "info");
        assert!(log_filter(2).contains("rmb_peer=trace"));
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

    /// A secret file others can read is noticed (and warned about) but still used:
    /// container runtimes mount secrets 0644 or 0444 (see `secret`).
    #[cfg(unix)]
    #[test]
    fn a_secret_file_others_can_read_is_noticed_but_used() {
        for (mode, noticed) in [
            (0o600, None),
            (0o400, None),
            (0o644, Some(0o644)),
            (0o440, Some(0o440)),
        ] {
            let (_dir, path) = config("0xsecret\n", mode);
            assert_eq!(shared_mode(&path).unwrap(), noticed, "mode {mode:o}");
            let argv = [
                "--relay",
                "ws://r",
                "--registrar",
                "http://g",
                "--mnemonic-file",
                path.to_str().unwrap(),
            ];
            assert_eq!(secret(&load(&argv)).unwrap(), "0xsecret", "mode {mode:o}");
        }
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

//! `rmb-relay`: run an RMB relay.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use rmb_relay::budget::QueueLimits;
use rmb_relay::ratelimit::RateLimit;
use rmb_relay::registrar_directory::RegistrarDirectory;
use rmb_relay::Config;

/// RMB relay: authenticated WebSocket routing between twins, offline queues and
/// federation with other relays.
///
/// Twins connect with `wss://<domain>/?<jwt>`; other relays POST envelopes to `/`.
/// Prometheus metrics are served at `/metrics`, liveness at `/health`.
///
/// Every flag can also be set in a TOML file given with --config: the key is the long
/// flag name in snake_case (`max_envelope_size = 1048576`). Flags and environment
/// variables override the file.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// TOML file of defaults for the flags below (see docs/deploy.md).
    #[arg(long, env = "RMB_RELAY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// A hostname (`host` or `host:port`) this relay serves, exactly as twins list it in
    /// the registrar. Repeat for several. Twins listing one of them "live here": their
    /// messages are queued here while they are offline; others are federated.
    #[arg(
        short = 'm',
        long = "domain",
        env = "RMB_RELAY_DOMAINS",
        value_delimiter = ',',
        required = true
    )]
    domains: Vec<String>,

    /// Address to listen on (put TLS in front with a reverse proxy in production).
    #[arg(short, long, env = "RMB_RELAY_LISTEN", default_value = "0.0.0.0:8081")]
    listen: SocketAddr,

    /// Registrar base URL, used to look up twins' keys and relays.
    #[arg(long, env = "RMB_REGISTRAR", default_value = "http://127.0.0.1:8080")]
    registrar: String,

    /// Redis URL: share sessions and queues with other relay processes of the same
    /// domains, and keep queued envelopes across restarts. Without it everything is in
    /// memory.
    #[arg(long, env = "RMB_RELAY_REDIS")]
    redis: Option<String>,

    /// With --redis: how often an instance refreshes the marks saying it is alive and
    /// which sessions it holds, seconds. Marks expire after three missed beats; then
    /// other instances take over the dead one's federation work.
    #[arg(long, env = "RMB_RELAY_REDIS_HEARTBEAT", default_value_t = 20)]
    redis_heartbeat: u64,

    /// Per-twin rate limit: at most COUNT envelopes and BYTES bytes per window
    /// (see --limit-window). 0 means unlimited. Over the limit, requests get a relay
    /// error and the connection stays open. Default: unlimited.
    #[arg(long, num_args = 2, value_names = ["COUNT", "BYTES"], env = "RMB_RELAY_LIMIT", value_delimiter = ' ')]
    limit: Option<Vec<u64>>,

    /// Length of the rate-limit window, seconds.
    #[arg(long, env = "RMB_RELAY_LIMIT_WINDOW", default_value_t = 60)]
    limit_window: u64,

    /// Window (seconds) over which federation failures rank a relay down.
    #[arg(long, env = "RMB_RELAY_RANKER_PERIOD", default_value_t = 3600)]
    ranker_period: u64,

    /// Longest envelope lifetime (`expiration`) accepted, seconds; a longer one is
    /// refused (a request gets a relay error, a federation post 400).
    #[arg(long, env = "RMB_RELAY_MAX_LIFETIME", default_value_t = rmb_core::rules::Rules::default().max_lifetime)]
    max_lifetime: u64,

    /// Largest envelope (WebSocket message or federation body) accepted, bytes.
    #[arg(long, env = "RMB_RELAY_MAX_ENVELOPE", default_value_t = rmb_relay::config::DEFAULT_MAX_ENVELOPE)]
    max_envelope_size: usize,

    /// Bytes being read from all sockets, or held in messages not yet handed on, at
    /// most (at least --max-envelope-size); past it reads wait.
    #[arg(long, env = "RMB_RELAY_READ_BUDGET", default_value_t = rmb_relay::config::DEFAULT_READ_BUDGET, value_name = "BYTES")]
    read_budget: usize,

    /// WebSocket read buffer of each session, bytes: every connected session holds
    /// one. Larger costs memory per idle session and saves read calls under load.
    #[arg(long, env = "RMB_RELAY_READ_BUFFER", default_value_t = rmb_relay::config::DEFAULT_READ_BUFFER, value_name = "BYTES")]
    read_buffer: usize,

    /// Seconds a read may wait for room in the read budget; then the session is closed
    /// with 1013 (try again later), or the federation post answered 503.
    #[arg(
        long,
        env = "RMB_RELAY_READ_BUDGET_WAIT",
        default_value_t = 10,
        value_name = "SECONDS"
    )]
    read_budget_wait: u64,

    /// Most WebSocket sessions at once; beyond it new clients get HTTP 503.
    #[arg(long, env = "RMB_RELAY_MAX_CONNECTIONS", default_value_t = 50_000)]
    max_connections: usize,

    /// Seconds a client may take to send a whole HTTP request head (upgrade or
    /// federation post); a slower one is disconnected.
    #[arg(long, env = "RMB_RELAY_HEADER_TIMEOUT", default_value_t = rmb_http::ServeLimits::default().header_read_timeout.as_secs(), value_name = "SECONDS")]
    header_timeout: u64,

    /// Seconds a federation post's body may take to arrive after its head.
    #[arg(long, env = "RMB_RELAY_BODY_TIMEOUT", default_value_t = rmb_http::ServeLimits::default().body_read_timeout.as_secs(), value_name = "SECONDS")]
    body_timeout: u64,

    /// Seconds an HTTP connection (not a WebSocket session) may stay open with nothing
    /// moving.
    #[arg(long, env = "RMB_RELAY_IDLE_TIMEOUT", default_value_t = rmb_http::ServeLimits::default().idle_timeout.as_secs(), value_name = "SECONDS")]
    idle_timeout: u64,

    /// Seconds between the relay's WebSocket pings to a session.
    #[arg(
        long,
        env = "RMB_RELAY_WS_PING_INTERVAL",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    ws_ping_interval: u64,

    /// Seconds a WebSocket session may stay silent (no frame, no pong) before it is
    /// closed.
    #[arg(
        long,
        env = "RMB_RELAY_WS_IDLE_TIMEOUT",
        default_value_t = 90,
        value_name = "SECONDS"
    )]
    ws_idle_timeout: u64,

    /// Envelopes the memory of accepted envelopes holds (one key each: its signature key,
    /// or its uid key if unsigned); copies of remembered envelopes are dropped. When full,
    /// the entry nearest its deadline is forgotten first. About 40 bytes per key. 0 turns
    /// copy-dropping off (the relay then does not advertise `rmb-dedup: 1`).
    #[arg(long, env = "RMB_RELAY_DEDUP_ENTRIES", default_value_t = rmb_relay::config::DEFAULT_DEDUP_CAPACITY)]
    dedup_entries: usize,

    /// Most envelopes queued per session; beyond it the oldest are dropped.
    #[arg(long, env = "RMB_RELAY_QUEUE_FRAMES", default_value_t = 10_000)]
    queue_max_frames: usize,

    /// Most bytes queued per session; beyond it the oldest are dropped.
    #[arg(long, env = "RMB_RELAY_QUEUE_BYTES", default_value_t = 64 << 20)]
    queue_max_bytes: usize,

    /// Most envelopes queued for one offline twin, all its session ids together (the
    /// sender chooses session ids); beyond it new ones are refused with a relay error.
    #[arg(long, env = "RMB_RELAY_QUEUE_TWIN_FRAMES", default_value_t = QueueLimits::default().twin_max_frames)]
    queue_twin_max_frames: usize,

    /// Most bytes queued for one offline twin, all its session ids together.
    #[arg(long, env = "RMB_RELAY_QUEUE_TWIN_BYTES", default_value_t = QueueLimits::default().twin_max_bytes)]
    queue_twin_max_bytes: usize,

    /// Most envelopes queued for offline twins on this relay in all.
    #[arg(long, env = "RMB_RELAY_QUEUE_TOTAL_FRAMES", default_value_t = QueueLimits::default().total_max_frames)]
    queue_total_max_frames: usize,

    /// Most bytes queued for offline twins on this relay in all.
    #[arg(long, env = "RMB_RELAY_QUEUE_TOTAL_BYTES", default_value_t = QueueLimits::default().total_max_bytes)]
    queue_total_max_bytes: usize,

    /// Longest JWT lifetime (exp - iat) accepted, seconds.
    #[arg(long, env = "RMB_RELAY_JWT_MAX_LIFETIME", default_value_t = 3600)]
    jwt_max_lifetime: u64,

    /// Federate over plain http instead of https. Only for local test networks.
    #[arg(long, env = "RMB_RELAY_FEDERATION_HTTP")]
    federation_http: bool,

    /// Federate to loopback, private (10/8, 192.168/16, ...), link-local and other
    /// non-public addresses. Off by default: twins register their relays freely, so a
    /// relay that posts wherever they say can be aimed at its own network. For local
    /// test networks.
    #[arg(long, env = "RMB_RELAY_FEDERATION_ALLOW_PRIVATE")]
    federation_allow_private: bool,

    /// Timeout of one federation attempt, seconds.
    #[arg(long, env = "RMB_RELAY_FEDERATION_TIMEOUT", default_value_t = 10)]
    federation_timeout: u64,

    /// Debug logs (RUST_LOG overrides).
    #[arg(short, long)]
    debug: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let loaded = rmb_config::parse::<Args>()?;
    let args = loaded.args;
    init_logs(args.debug);
    if let Some(file) = &args.config {
        tracing::info!(config = %file.display(), "read config file");
    }

    let mut config = Config::new(args.domains.clone());
    config.redis_url = args.redis.clone();
    config.redis_heartbeat = Duration::from_secs(args.redis_heartbeat.max(1));
    if let Some(limit) = &args.limit {
        let nonzero = |v: u64| (v > 0).then_some(v);
        config.rate_limit = RateLimit {
            messages: nonzero(limit[0]),
            bytes: nonzero(limit[1]),
            window_secs: args.limit_window,
        };
    }
    config.ranker_period = Duration::from_secs(args.ranker_period);
    config.rules.max_lifetime = args.max_lifetime;
    config.max_envelope_size = args.max_envelope_size;
    config.read_budget = args.read_budget;
    config.read_buffer_size = args.read_buffer.max(256);
    config.read_budget_wait = Duration::from_secs(args.read_budget_wait.max(1));
    config.max_connections = args.max_connections;
    config.http.max_connections = args
        .max_connections
        .saturating_add(rmb_relay::config::HTTP_HEADROOM);
    config.http.header_read_timeout = Duration::from_secs(args.header_timeout);
    config.http.body_read_timeout = Duration::from_secs(args.body_timeout);
    config.http.idle_timeout = Duration::from_secs(args.idle_timeout);
    config.ws_ping_interval = Duration::from_secs(args.ws_ping_interval.max(1));
    config.ws_idle_timeout = Duration::from_secs(args.ws_idle_timeout.max(1));
    config.dedup_capacity = args.dedup_entries;
    config.mailbox.max_frames = args.queue_max_frames;
    config.mailbox.max_bytes = args.queue_max_bytes;
    config.queues = QueueLimits {
        twin_max_frames: args.queue_twin_max_frames,
        twin_max_bytes: args.queue_twin_max_bytes,
        total_max_frames: args.queue_total_max_frames,
        total_max_bytes: args.queue_total_max_bytes,
    };
    config.jwt.max_lifetime = args.jwt_max_lifetime;
    config.federation_timeout = Duration::from_secs(args.federation_timeout);
    if args.federation_http {
        config.federation_scheme = "http";
    }
    config.federation_allow_private = args.federation_allow_private;

    let directory = Arc::new(
        RegistrarDirectory::new(&args.registrar)
            .with_context(|| format!("invalid registrar URL {:?}", args.registrar))?,
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another process using it?)",
                args.listen
            )
        })?;
    let relay = rmb_relay::start(listener, config, directory)
        .await
        .context("relay failed to start")?;
    rmb_config::shutdown_signal().await;
    tracing::info!("shutting down: closing sessions");
    relay.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

fn init_logs(debug: bool) {
    let default = if debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

#[cfg(test)]
mod tests {
    use super::Args;

    const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/relay.toml");

    #[test]
    fn deploy_example_config_parses() {
        let loaded = rmb_config::try_parse_from::<Args, _, _>(["rmb-relay", "--config", EXAMPLE])
            .expect("deploy/relay.toml is a valid relay config");
        let args = loaded.args;
        assert_eq!(args.domains, ["relay.example.org"]);
        assert_eq!(args.listen.to_string(), "127.0.0.1:8081");
        assert_eq!(args.redis.as_deref(), Some("redis://127.0.0.1:6379/0"));
        assert_eq!(args.limit, Some(vec![1000, 64 << 20]));
        assert_eq!(
            args.max_envelope_size,
            rmb_relay::config::DEFAULT_MAX_ENVELOPE
        );
        assert!(!args.federation_http);
    }

    #[test]
    fn flags_override_the_example_config() {
        let argv = [
            "rmb-relay",
            "--config",
            EXAMPLE,
            "--domain",
            "a.test,b.test",
        ];
        let loaded = rmb_config::try_parse_from::<Args, _, _>(argv).unwrap();
        assert_eq!(loaded.args.domains, ["a.test", "b.test"]);
        assert_eq!(loaded.source("domains"), rmb_config::Source::CommandLine);
        assert_eq!(loaded.source("listen"), rmb_config::Source::ConfigFile);
        let argv = ["rmb-relay", "--config", EXAMPLE, "--limit", "5", "0"];
        let loaded = rmb_config::try_parse_from::<Args, _, _>(argv).unwrap();
        assert_eq!(loaded.args.limit, Some(vec![5, 0]));
    }
}

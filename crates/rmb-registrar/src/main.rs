//! `rmb-registrar`: run the RMB identity service.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use rmb_registrar::config::DEFAULT_MAX_BODY;
use rmb_registrar::Config;

/// The RMB registrar: maps twin ids to signing keys, relays and e2e keys (HTTP/JSON).
///
/// Every flag can also be given as the environment variable shown.
#[derive(Debug, Parser)]
#[command(name = "rmb-registrar", version)]
struct Args {
    /// Address and port to serve HTTP on. Use 0.0.0.0:8080 to accept connections from
    /// other machines (put TLS in front of it then).
    #[arg(long, env = "RMB_REGISTRAR_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Database: a SQLite file path (created and migrated on first start), a
    /// sqlite://path URL, or a postgres://user[:password]@host[:port]/database URL (the
    /// database must exist; tables are created on first start).
    #[arg(long, env = "RMB_REGISTRAR_DB", default_value = "rmb-registrar.db")]
    db: String,

    /// Seconds a signed timestamp (account creation, X-Auth) may differ from the server
    /// clock, in either direction. Older or newer requests are refused with 401.
    #[arg(
        long,
        env = "RMB_REGISTRAR_TIME_WINDOW",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    time_window: u64,

    /// Largest accepted request body in bytes; larger ones are refused with 413.
    #[arg(long, env = "RMB_REGISTRAR_MAX_BODY", default_value_t = DEFAULT_MAX_BODY, value_name = "BYTES")]
    max_body: usize,

    /// Open HTTP connections at most; beyond it new connections get 503 and are closed.
    #[arg(long, env = "RMB_REGISTRAR_MAX_CONNECTIONS", default_value_t = rmb_http::ServeLimits::default().max_connections, value_name = "N")]
    max_connections: usize,

    /// Seconds a client may take to send a request's headers.
    #[arg(long, env = "RMB_REGISTRAR_HEADER_TIMEOUT", default_value_t = rmb_http::ServeLimits::default().header_read_timeout.as_secs(), value_name = "SECONDS")]
    header_timeout: u64,

    /// Seconds a connection may stay open with no request in progress and nothing sent.
    #[arg(long, env = "RMB_REGISTRAR_IDLE_TIMEOUT", default_value_t = rmb_http::ServeLimits::default().idle_timeout.as_secs(), value_name = "SECONDS")]
    idle_timeout: u64,

    /// Seconds a request's body may take to arrive; slower ones get 408.
    #[arg(long, env = "RMB_REGISTRAR_BODY_TIMEOUT", default_value_t = rmb_http::ServeLimits::default().body_read_timeout.as_secs(), value_name = "SECONDS")]
    body_timeout: u64,

    /// Debug logging (otherwise info; RUST_LOG overrides both).
    #[arg(short, long, env = "RMB_REGISTRAR_DEBUG")]
    debug: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let default_level = if args.debug {
        "rmb_registrar=debug,info"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let config = Config {
        database: args.db,
        time_window: Duration::from_secs(args.time_window),
        max_body: args.max_body,
        http: rmb_http::ServeLimits {
            max_connections: args.max_connections,
            header_read_timeout: Duration::from_secs(args.header_timeout),
            idle_timeout: Duration::from_secs(args.idle_timeout),
            body_read_timeout: Duration::from_secs(args.body_timeout),
            ..rmb_http::ServeLimits::default()
        },
    };
    let server = rmb_registrar::serve(listener, config)
        .await
        .context("cannot start the registrar")?;
    rmb_config::shutdown_signal().await;
    tracing::info!("shutting down");
    server
        .shutdown()
        .await
        .context("registrar stopped with an error")?;
    Ok(())
}

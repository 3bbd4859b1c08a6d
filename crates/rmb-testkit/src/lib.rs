//! # rmb-testkit: real services for integration tests
//!
//! Integration tests of every RMB crate run against real processes and databases on
//! loopback, each on its own free port, so tests run in parallel and leave nothing
//! behind:
//!
//! - [`free_port`]: a TCP port nothing listens on right now;
//! - [`RedisServer`]: a throwaway `redis-server` (no persistence) in a temp dir, killed on
//!   drop, which can be killed and restarted on the same port for fault tests;
//! - [`Postgres`]: a freshly created, uniquely named database on the machine's
//!   PostgreSQL, dropped afterwards;
//! - [`TestRegistrar`]: an in-process registrar on a free port, on a temp SQLite file or
//!   a given database, that can be restarted on the same port and database;
//! - [`TestRelay`]: an in-process relay on any 127.0.0.x address and a free port;
//! - [`Proxy`]: a TCP proxy that can be switched to a black hole (a network partition);
//! - [`RawConn`]: a raw WebSocket connection to a relay for hand-made envelopes;
//! - [`node_registrar::NodeRegistrar`]: a stand-in for node-registrar, answering as its
//!   handlers do, to test our registrar client against;
//! - [`shift`]: every variant of a signed envelope that keeps its signature (the
//!   field-shift attack), to send to real servers.
//!
//! Readiness is polled with a bounded deadline, never waited for with sleeps. Use it as
//! a dev-dependency only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod node_registrar;
mod process;
mod proxy;
pub mod raw;
mod relay;
pub mod shift;
pub mod ws;

pub use process::{refused_config, Process};
pub use proxy::Proxy;
pub use raw::RawTwin;
pub use relay::{fresh_client, TestRelay};
use rmb_registrar::{Config, ServerHandle};
use rmb_registrar_client::RegistrarClient;
use sqlx::migrate::MigrateDatabase as _;
pub use ws::RawConn;

/// How long a service may take to become ready before the helper gives up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a test service could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} did not become ready within {READY_TIMEOUT:?}")]
    NotReady(String),
    #[error("PostgreSQL at {url}: {source} (is it running? set RMB_TEST_POSTGRES_URL to another server)")]
    Postgres {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("registrar: {0}")]
    Registrar(#[from] rmb_registrar::Error),
    #[error("registrar client: {0}")]
    Client(#[from] rmb_registrar_client::ClientError),
    #[error("relay: {0}")]
    Relay(#[from] rmb_relay::StartError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Polls `check` every 10 ms until it holds; fails the test after `within`.
/// For conditions without an event to await (a metric, a gauge, a count).
pub async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A loopback TCP port that was free when asked (the OS picks it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// A `redis-server` on a free loopback port, in its own temp dir: without persistence
/// ([`RedisServer::start`]) or with an append-only file ([`RedisServer::start_persistent`]).
/// Killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    persistent: bool,
}

impl RedisServer {
    /// Starts one without persistence and waits until it answers PING.
    pub fn start() -> Result<Self> {
        Self::start_with(false)
    }

    /// Starts one with the append-only file on (`appendfsync everysec`, the production
    /// setting: Redis writes each command to the file before answering it, so a SIGKILL
    /// of the server loses nothing it acknowledged). [`RedisServer::restart`] brings it
    /// back with its data.
    pub fn start_persistent() -> Result<Self> {
        Self::start_with(true)
    }

    fn start_with(persistent: bool) -> Result<Self> {
        let dir = tempfile::tempdir().map_err(io("creating a temp dir for redis"))?;
        let mut server = RedisServer {
            port: free_port(),
            dir,
            child: None,
            persistent,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<()> {
        let persistence: &[&str] = if self.persistent {
            &[
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
            ]
        } else {
            &["--save", "", "--appendonly", "no"]
        };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(persistence)
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io(
                "starting redis-server (is it installed? apt-get install redis-server)",
            ))?;
        self.child = Some(child);
        let port = self.port;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("just spawned");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(Error::NotReady(format!(
                    "redis-server on port {port} (exited with {status})"
                )));
            }
            if ping(port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(Error::NotReady(format!("redis-server on port {port}")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL) and waits for it to exit. Data is lost unless the
    /// server is persistent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a new server on the same port and directory (after [`RedisServer::kill`],
    /// or kills the running one first) and waits until it answers (a persistent one
    /// has loaded its append-only file by then).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// True if a Redis server on `port` answers `PING` with `+PONG`.
fn ping(port: u16) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        stream.write_all(b"PING\r\n")?;
        let mut buf = [0u8; 7];
        stream.read_exact(&mut buf)?;
        Ok(&buf == b"+PONG\r\n")
    };
    attempt().unwrap_or(false)
}

/// The server [`Postgres::fresh_database`] uses unless `RMB_TEST_POSTGRES_URL` is set.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A new, empty PostgreSQL database with a unique name. Dropped (with `WITH (FORCE)`,
/// closing leftover connections) by [`Postgres::drop_db`] or, failing that, on drop.
#[derive(Debug)]
pub struct Postgres {
    url: String,
    name: String,
    dropped: bool,
}

impl Postgres {
    /// Creates the database on the server named by `RMB_TEST_POSTGRES_URL` (default
    /// [`DEFAULT_POSTGRES_URL`]).
    pub async fn fresh_database() -> Result<Self> {
        let admin =
            std::env::var("RMB_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into());
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "rmb_test_{}_{}_{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let url = with_database(&admin, &name);
        sqlx::Postgres::create_database(&url)
            .await
            .map_err(|source| Error::Postgres {
                url: admin.clone(),
                source,
            })?;
        Ok(Postgres {
            url,
            name,
            dropped: false,
        })
    }

    /// `postgres://.../<unique name>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database now (closing connections still open to it).
    pub async fn drop_db(mut self) -> Result<()> {
        self.dropped = true;
        sqlx::Postgres::force_drop_database(&self.url)
            .await
            .map_err(|source| Error::Postgres {
                url: self.url.clone(),
                source,
            })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Drop may run inside a runtime that cannot block on async work: use a thread
        // with its own small runtime, and wait for it so the database is gone when the
        // test ends.
        let url = self.url.clone();
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for dropping the test database");
            runtime.block_on(sqlx::Postgres::force_drop_database(&url))
        });
        if let Ok(Err(e)) = dropper.join() {
            eprintln!(
                "rmb-testkit: could not drop test database {}: {e}",
                self.name
            );
        }
    }
}

/// Replaces the database name (the last path segment) of a PostgreSQL URL.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// A registrar served in-process on a free loopback port.
pub struct TestRegistrar {
    server: Option<ServerHandle>,
    addr: SocketAddr,
    config: Config,
    _dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for TestRegistrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRegistrar")
            .field("addr", &self.addr)
            .field("database", &self.config.database)
            .field("running", &self.server.is_some())
            .finish()
    }
}

impl TestRegistrar {
    /// On a new SQLite file in a temp dir (removed on drop).
    pub async fn start() -> Result<Self> {
        let dir = tempfile::tempdir().map_err(io("creating a temp dir for the registrar"))?;
        let db = dir.path().join("registrar.db");
        let mut registrar = Self::start_with_config(Config::new(path_str(&db))).await?;
        registrar._dir = Some(dir);
        Ok(registrar)
    }

    /// On a new SQLite file in a temp dir, with the configuration changed by `adjust`
    /// (e.g. short HTTP timeouts).
    pub async fn start_configured(adjust: impl FnOnce(&mut Config)) -> Result<Self> {
        let dir = tempfile::tempdir().map_err(io("creating a temp dir for the registrar"))?;
        let mut config = Config::new(path_str(&dir.path().join("registrar.db")));
        adjust(&mut config);
        let mut registrar = Self::start_with_config(config).await?;
        registrar._dir = Some(dir);
        Ok(registrar)
    }

    /// On the given database (`postgres://...`, `sqlite://...` or a file path).
    pub async fn start_with(database: &str) -> Result<Self> {
        Self::start_with_config(Config::new(database)).await
    }

    /// With a full configuration (e.g. a short time window).
    pub async fn start_with_config(config: Config) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io("binding the registrar"))?;
        let addr = listener.local_addr().map_err(io("registrar address"))?;
        let server = rmb_registrar::serve(listener, config.clone()).await?;
        Ok(TestRegistrar {
            server: Some(server),
            addr,
            config,
            _dir: None,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The database the registrar uses.
    pub fn database(&self) -> &str {
        &self.config.database
    }

    /// A new client (with its own cache) for this registrar.
    pub fn client(&self) -> RegistrarClient {
        RegistrarClient::new(&self.url()).expect("the test registrar URL is valid")
    }

    /// The running server (for its [`rmb_registrar::Stats`]). Panics after
    /// [`TestRegistrar::shutdown`].
    pub fn server(&self) -> &ServerHandle {
        self.server.as_ref().expect("the test registrar is stopped")
    }

    /// Stops the server and closes its database; the temp dir stays until drop.
    pub async fn shutdown(&mut self) -> Result<()> {
        if let Some(server) = self.server.take() {
            server.shutdown().await?;
        }
        Ok(())
    }

    /// Stops the server if running, then starts a new one on the same port and database.
    pub async fn restart(&mut self) -> Result<()> {
        self.shutdown().await?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() >= deadline => {
                    return Err(io(format!("re-binding the registrar on {}", self.addr))(e))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        self.server = Some(rmb_registrar::serve(listener, self.config.clone()).await?);
        Ok(())
    }
}

fn path_str(path: &Path) -> String {
    PathBuf::from(path).to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_in_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x"),
            "postgres://h:5432/x"
        );
    }

    #[test]
    fn free_ports_are_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
    }

    #[test]
    fn redis_starts_answers_and_restarts_on_the_same_port() {
        let mut redis = RedisServer::start().unwrap();
        let port = redis.port();
        assert!(ping(port));
        assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/"));
        redis.kill();
        assert!(!ping(port), "killed server still answers");
        redis.restart().unwrap();
        assert_eq!(redis.port(), port);
        assert!(ping(port));
        drop(redis);
        assert!(!ping(port), "dropped server still answers");
    }
}

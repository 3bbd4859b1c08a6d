//! # rmb-registrar: who is twin N
//!
//! The registrar is RMB's root of trust: it maps a twin id to the twin's signing key, the
//! relays it is reachable on and its optional e2e key (PROTOCOL.md §5). This crate owns:
//!
//! - the server ([`serve`], binary `rmb-registrar`): create an account with a proof of
//!   key possession, look accounts up by twin id or key, update relays and e2e key with
//!   a signed, non-replayable `X-Auth` challenge, list accounts; `/health`, `/metrics`;
//! - its storage ([`store`]): SQLite (a file, the default, no setup) or PostgreSQL,
//!   through one sqlx code path with embedded migrations;
//!
//! The client relays and peers use, and the JSON bodies both sides share, are the crate
//! `rmb-registrar-client`.
//!
//! Modules: [`api`] (routes and handlers), [`auth`] (proof and `X-Auth` checks, pure),
//! [`store`], [`config`], [`error`], [`cors`] (browsers may call us, as node-registrar). Relay names and e2e keys follow
//! `rmb_registrar_client::validate`, shared with the client.
//!
//! ```no_run
//! # async fn run() -> Result<(), rmb_registrar::Error> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = rmb_registrar::serve(listener, rmb_registrar::Config::new("registrar.db")).await?;
//! println!("registrar on {}", server.url());
//! server.shutdown().await
//! # }
//! ```

pub mod api;
pub mod auth;
pub mod config;
pub mod cors;
pub mod error;
mod metrics;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use api::Stats;
pub use config::Config;
pub use error::Error;
pub use store::{Backend, Store};

/// Opens (creating and migrating) the database, then serves the API on `listener` until
/// [`ServerHandle::shutdown`] is called or the handle is dropped.
pub async fn serve(listener: TcpListener, config: Config) -> Result<ServerHandle, Error> {
    let metrics = metrics::Metrics::new();
    let store = Store::open(&config.database)
        .await?
        .measured(&metrics.registry);
    let limits = config.http.clone();
    let addr = listener.local_addr()?;
    let stats = Arc::new(Stats::default());
    let shared = Arc::new(api::Shared {
        store: store.clone(),
        config,
        stats: stats.clone(),
        metrics,
    });
    let app = api::router(shared);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    tracing::info!(%addr, backend = ?store.backend(), "registrar listening");
    let task = tokio::spawn(async move {
        // A dropped sender also stops the server.
        let result = rmb_http::serve(listener, app, limits, async move {
            let _ = stop_rx.await;
        })
        .await;
        store.close().await;
        tracing::info!(%addr, "registrar stopped");
        result.map_err(Error::Io)
    });
    Ok(ServerHandle {
        addr,
        stop: Some(stop_tx),
        task: Some(task),
        stats,
    })
}

/// A running server. Dropping it stops the server in the background; call
/// [`ServerHandle::shutdown`] to wait until connections and the database are closed.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), Error>>>,
    stats: Arc<Stats>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<local_addr>`, the base URL for `rmb_registrar_client::RegistrarClient::new`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Stops accepting, lets in-flight requests finish, closes the database.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join().await
    }

    /// Waits until the server stops (after [`ServerHandle::shutdown`] elsewhere, or an
    /// error).
    pub async fn join(mut self) -> Result<(), Error> {
        match self.task.take() {
            Some(task) => match task.await {
                Ok(result) => result,
                Err(e) => Err(Error::Io(std::io::Error::other(e))),
            },
            None => Ok(()),
        }
    }
}

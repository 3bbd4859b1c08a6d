//! In-process relays for integration tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rmb_registrar_client::{ClientConfig, RegistrarClient};
use rmb_relay::registrar_directory::RegistrarDirectory;
use rmb_relay::{Config, RelayHandle};

use crate::{io, Result};

/// A registrar client with short caches, so tests see (re)registrations at once.
pub fn fresh_client(registrar_url: &str) -> Result<RegistrarClient> {
    Ok(RegistrarClient::with_config(
        registrar_url,
        ClientConfig {
            cache_ttl: Duration::from_millis(200),
            negative_ttl: Duration::from_millis(1),
            ..Default::default()
        },
    )?)
}

/// A relay served in-process on `ip` (any 127.0.0.x) and a free port. Its domain is its
/// own `ip:port` unless other domains are given; federation uses plain http, may target
/// loopback addresses, and queues are swept every 100 ms so expiry is observable quickly.
pub struct TestRelay {
    handle: Option<RelayHandle>,
    addr: SocketAddr,
    domains: Vec<String>,
}

impl TestRelay {
    pub async fn start(ip: &str, registrar_url: &str) -> Result<Self> {
        Self::start_with(ip, registrar_url, None, |_| {}).await
    }

    /// `domains`: `None` = its own `ip:port`. `tweak` adjusts the config before start.
    pub async fn start_with(
        ip: &str,
        registrar_url: &str,
        domains: Option<Vec<String>>,
        tweak: impl FnOnce(&mut Config),
    ) -> Result<Self> {
        Self::start_with_client(ip, fresh_client(registrar_url)?, domains, tweak).await
    }

    /// Like [`TestRelay::start_with`], looking twins up through `registrar` (e.g. a
    /// client with long caches, to keep routing while the registrar is down).
    pub async fn start_with_client(
        ip: &str,
        registrar: RegistrarClient,
        domains: Option<Vec<String>>,
        tweak: impl FnOnce(&mut Config),
    ) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .map_err(io(format!("binding a relay on {ip}")))?;
        let addr = listener
            .local_addr()
            .map_err(io("reading the relay address"))?;
        let domains = domains.unwrap_or_else(|| vec![addr.to_string()]);
        let mut config = Config::new(domains.clone());
        config.federation_scheme = "http";
        // Every test relay lives on a loopback address.
        config.federation_allow_private = true;
        config.sweep_interval = Duration::from_millis(100);
        tweak(&mut config);
        let directory = Arc::new(RegistrarDirectory::from_client(registrar));
        let handle = rmb_relay::start(listener, config, directory).await?;
        Ok(TestRelay {
            handle: Some(handle),
            addr,
            domains,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name twins register to live here (the first domain).
    pub fn domain(&self) -> String {
        self.domains[0].clone()
    }

    /// `ws://<addr>` (append `/?<jwt>` to connect).
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub fn handle(&self) -> &RelayHandle {
        self.handle.as_ref().expect("relay is running")
    }

    pub fn metrics(&self) -> &rmb_relay::metrics::Metrics {
        self.handle().metrics()
    }

    pub fn open_connections(&self) -> usize {
        self.handle().open_connections()
    }

    /// Graceful shutdown (sessions get a close frame).
    pub async fn shutdown(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
    }
}

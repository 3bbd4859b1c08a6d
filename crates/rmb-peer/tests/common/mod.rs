//! Shared setup for rmb-peer tests: a real registrar, relays that can be restarted on
//! the same address, a real redis-server per peer, and "apps" that speak to the peer
//! only through Redis lists with literal §4 JSON.

#![allow(dead_code)]

mod raw;
#[allow(unused_imports)]
pub(crate) use raw::RawTwin;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use rmb_core::KeyType;
use rmb_peer::redis_conn::Backoff;
use rmb_peer::{Limits, Peer, PeerConfig};
use rmb_relay::registrar_directory::RegistrarDirectory;
use rmb_relay::RelayHandle;
use rmb_sdk::{PoolConfig, Resend};
use rmb_testkit::{Proxy, RedisServer, TestRegistrar};
use serde_json::Value;
use tokio::task::JoinHandle;

/// Longest a test waits for any one event.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

pub(crate) fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("0x{hex}")
}

/// A relay that can be stopped and started again on the same address.
pub(crate) struct Relay {
    addr: SocketAddr,
    registrar: String,
    handle: Option<RelayHandle>,
}

impl Relay {
    pub(crate) async fn start(ip: &str, registrar: &str) -> Relay {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let mut relay = Relay {
            addr: listener.local_addr().unwrap(),
            registrar: registrar.to_string(),
            handle: None,
        };
        relay.serve(listener).await;
        relay
    }

    async fn serve(&mut self, listener: tokio::net::TcpListener) {
        let mut config = rmb_relay::Config::new(vec![self.domain()]);
        config.federation_scheme = "http";
        config.federation_allow_private = true;
        config.sweep_interval = Duration::from_millis(100);
        let directory =
            RegistrarDirectory::from_client(rmb_testkit::fresh_client(&self.registrar).unwrap());
        self.handle = Some(
            rmb_relay::start(listener, config, Arc::new(directory))
                .await
                .unwrap(),
        );
    }

    pub(crate) fn domain(&self) -> String {
        self.addr.to_string()
    }

    pub(crate) fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Live WebSocket sessions on this relay.
    pub(crate) fn open_connections(&self) -> usize {
        self.handle.as_ref().map_or(0, |h| h.open_connections())
    }

    /// Envelopes waiting in this relay's queues (refreshed by its sweep).
    pub(crate) fn queued_frames(&self) -> i64 {
        self.handle
            .as_ref()
            .map_or(0, |h| h.metrics().queued_frames.get())
    }

    pub(crate) async fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
    }

    /// Starts again on the same address (retrying the bind while the port is released).
    pub(crate) async fn restart(&mut self) {
        self.stop().await;
        let deadline = tokio::time::Instant::now() + WAIT;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => {
                    assert!(tokio::time::Instant::now() < deadline, "rebinding: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        self.serve(listener).await;
    }
}

pub(crate) struct PeerOpts {
    pub key_type: KeyType,
    pub e2e: bool,
    /// `None`: a fresh random identity.
    pub secret: Option<String>,
    pub resend: Resend,
    pub resend_interval: Duration,
    pub limits: Limits,
}

impl Default for PeerOpts {
    fn default() -> Self {
        PeerOpts {
            key_type: KeyType::Sr25519,
            e2e: true,
            secret: None,
            resend: Resend::KnownReceivers,
            resend_interval: rmb_sdk::DEFAULT_RESEND_AFTER,
            limits: Limits::default(),
        }
    }
}

/// A peer with its own redis-server, connected to `relays`.
pub(crate) async fn peer(
    reg: &TestRegistrar,
    relays: &[&Relay],
    opts: PeerOpts,
) -> (Peer, RedisServer) {
    let redis = RedisServer::start().unwrap();
    let peer = peer_on(reg, relays, opts, &redis.url()).await;
    (peer, redis)
}

/// A peer whose Redis is reached through a proxy the test can partition.
pub(crate) async fn peer_behind_proxy(
    reg: &TestRegistrar,
    relays: &[&Relay],
    opts: PeerOpts,
) -> (Peer, RedisServer, Proxy) {
    let redis = RedisServer::start().unwrap();
    let target = format!("127.0.0.1:{}", redis.port()).parse().unwrap();
    let proxy = Proxy::start("127.0.0.1", target).await.unwrap();
    let peer = peer_on(reg, relays, opts, &format!("redis://{}/", proxy.addr())).await;
    (peer, redis, proxy)
}

/// A peer on the Redis at `redis_url`, connected to `relays`, with short timeouts.
/// `RUST_LOG=rmb_peer=debug` shows the peers' logs.
pub(crate) async fn peer_on(
    reg: &TestRegistrar,
    relays: &[&Relay],
    opts: PeerOpts,
    redis_url: &str,
) -> Peer {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut config = PeerConfig::new(
        opts.secret.unwrap_or_else(random_secret),
        opts.key_type,
        relays.iter().map(|r| r.ws_url()).collect(),
        redis_url,
        reg.url(),
    );
    config.e2e = opts.e2e;
    config.resend = opts.resend;
    config.resend_interval = opts.resend_interval;
    config.limits = opts.limits;
    config.pool = PoolConfig {
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        ping_interval: Duration::from_millis(500),
        dead_after: Duration::from_secs(3),
        ..PoolConfig::default()
    };
    config.redis_backoff = Backoff {
        min: Duration::from_millis(20),
        max: Duration::from_millis(300),
        response_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(1),
    };
    let registrar = rmb_testkit::fresh_client(&reg.url()).unwrap();
    let peer = Peer::start_with_registrar(config, Some(registrar))
        .await
        .unwrap();
    assert!(
        peer.client().wait_connected(relays.len(), WAIT).await,
        "peer did not connect to its relays"
    );
    peer
}

/// A connection to the Redis at `url`, for what a test reads or sets directly.
pub(crate) async fn conn(url: &str) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(WAIT + Duration::from_secs(5));
    redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// LPUSH, as an app does.
pub(crate) async fn lpush(url: &str, list: &str, json: &str) {
    let mut c = conn(url).await.unwrap();
    let _: () = c.lpush(list, json).await.unwrap();
}

/// BRPOP with a bounded wait; fails the test on timeout.
pub(crate) async fn brpop(url: &str, list: &str) -> Value {
    let mut c = conn(url).await.unwrap();
    let popped: Option<(String, String)> = c.brpop(list, WAIT.as_secs_f64()).await.unwrap();
    let (_, json) = popped.unwrap_or_else(|| panic!("nothing arrived on {list}"));
    serde_json::from_str(&json).unwrap()
}

/// The entries of a list, oldest first.
pub(crate) async fn list(url: &str, list: &str) -> Vec<Value> {
    let mut c = conn(url).await.unwrap();
    let items: Vec<String> = c.lrange(list, 0, -1).await.unwrap();
    items
        .iter()
        .rev()
        .map(|j| serde_json::from_str(j).unwrap())
        .collect()
}

/// A request as an app writes it.
pub(crate) fn request(reference: &str, cmd: &str, dat: &str, dst: &[u32], ret: &str) -> String {
    let dst: Vec<String> = dst.iter().map(u32::to_string).collect();
    format!(
        r#"{{"ver":1,"ref":"{reference}","cmd":"{cmd}","exp":60,"dat":"{dat}","tag":null,"dst":[{}],"ret":"{ret}","shm":"application/json","now":{}}}"#,
        dst.join(","),
        rmb_core::time::now()
    )
}

/// A service on `redis_url` answering `cmd` with what `answer` makes of each incoming
/// request (a literal reply JSON). Survives Redis restarts; never drops a popped
/// request (it retries the reply push until Redis takes it).
pub(crate) fn service(
    redis_url: &str,
    cmd: &str,
    answer: impl Fn(&Value) -> String + Send + 'static,
) -> JoinHandle<()> {
    let url = redis_url.to_string();
    let list = format!("msgbus.{cmd}");
    tokio::spawn(async move {
        loop {
            let Ok(mut c) = conn(&url).await else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let popped: Option<(String, String)> = match c.brpop(&list, 1.0).await {
                Ok(p) => p,
                Err(_) => continue,
            };
            let Some((_, json)) = popped else { continue };
            let reply = answer(&serde_json::from_str(&json).unwrap());
            loop {
                if let Ok(mut c) = conn(&url).await {
                    if c.lpush::<_, _, ()>("msgbus.system.reply", &reply)
                        .await
                        .is_ok()
                    {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    })
}

/// The reply of an echo service: same `dat`, to the request's `src`, with its `ref`.
pub(crate) fn echo(req: &Value) -> String {
    format!(
        r#"{{"ver":1,"ref":"{}","dat":"{}","dst":"{}","shm":null,"now":{},"err":null}}"#,
        req["ref"].as_str().unwrap(),
        req["dat"].as_str().unwrap(),
        req["src"].as_str().unwrap(),
        rmb_core::time::now()
    )
}

/// Polls `check` until it holds; fails the test after [`WAIT`].
pub(crate) async fn eventually(what: &str, check: impl FnMut() -> bool) {
    rmb_testkit::eventually(what, WAIT, check).await
}

pub(crate) fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub(crate) fn unb64(data: &Value) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(data.as_str().unwrap())
        .unwrap()
}

//! What the gateway needs to run, and the limits that bound what it holds.

use std::time::Duration;

use rmb_core::KeyType;
use rmb_sdk::{PoolConfig, Resend};

use crate::redis_conn::{redact_url, Backoff};

/// What the gateway needs to run. Its `Debug` shows neither the secret nor the Redis
/// URL's credentials.
#[derive(Clone)]
pub struct PeerConfig {
    /// Mnemonic or `0x` seed.
    pub secret: String,
    pub key_type: KeyType,
    /// `ws://` / `wss://` relay URLs.
    pub relays: Vec<String>,
    pub redis_url: String,
    pub registrar_url: String,
    /// Leave the registrar record as it is.
    pub no_update: bool,
    /// Register and use an e2e key (on in production).
    pub e2e: bool,
    pub pool: PoolConfig,
    /// Redis timeouts and the backoff between retries.
    pub redis_backoff: Backoff,
    /// Concurrent movers of each of the two system lists.
    pub workers: usize,
    /// Which receivers get a copy of a request whose reply has not come (design
    /// D1(c)): by default only those known to drop copies. See [`Resend`].
    pub resend: Resend,
    /// The first wait before a copy (doubling each time).
    pub resend_interval: Duration,
    pub limits: Limits,
}

/// Caps on what remote twins and local apps can make the peer hold, in Redis and in
/// memory. Each is in entries and in bytes where an entry's size is someone else's
/// choice.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Requests waiting in one service's `msgbus.<cmd>` list; beyond it, or beyond
    /// `command_list_bytes`, a request is refused with an error to its sender (the
    /// original dropped the oldest waiting request instead).
    pub command_list_entries: usize,
    pub command_list_bytes: usize,
    /// Requests of local apps accepted and still waiting for a reply; beyond it the
    /// peer stops taking from `msgbus.system.local` until some are answered.
    pub outbox_entries: usize,
    /// Bytes of messages waiting in memory for Redis (while it is down or slow); beyond
    /// it, requests from remote twins are refused with a "busy" error.
    pub pending_bytes: usize,
    /// What the peer remembers in memory of requests in flight (both directions).
    pub memory_entries: usize,
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            command_list_entries: rmb_core::peer_api::COMMAND_LIST_CAP,
            command_list_bytes: 256 << 20,
            outbox_entries: 100_000,
            pending_bytes: 64 << 20,
            memory_entries: 100_000,
            memory_bytes: 64 << 20,
        }
    }
}

impl PeerConfig {
    pub fn new(
        secret: impl Into<String>,
        key_type: KeyType,
        relays: Vec<String>,
        redis_url: impl Into<String>,
        registrar_url: impl Into<String>,
    ) -> Self {
        PeerConfig {
            secret: secret.into(),
            key_type,
            relays,
            redis_url: redis_url.into(),
            registrar_url: registrar_url.into(),
            no_update: false,
            e2e: true,
            pool: PoolConfig::default(),
            redis_backoff: Backoff::default(),
            workers: 2,
            resend: Resend::KnownReceivers,
            resend_interval: rmb_sdk::DEFAULT_RESEND_AFTER,
            limits: Limits::default(),
        }
    }
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("secret", &"<redacted>")
            .field("key_type", &self.key_type)
            .field("relays", &self.relays)
            .field("redis_url", &redact_url(&self.redis_url))
            .field("registrar_url", &self.registrar_url)
            .field("no_update", &self.no_update)
            .field("e2e", &self.e2e)
            .field("pool", &self.pool)
            .field("redis_backoff", &self.redis_backoff)
            .field("workers", &self.workers)
            .field("resend", &self.resend)
            .field("resend_interval", &self.resend_interval)
            .field("limits", &self.limits)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_secret_and_redis_credentials() {
        let config = PeerConfig::new(
            "0xdeadbeefsecret",
            KeyType::Sr25519,
            vec!["ws://relay".into()],
            "redis://:hunter2@127.0.0.1:6379",
            "http://registrar",
        );
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("deadbeef") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(
            shown.contains("127.0.0.1:6379") && shown.contains("ws://relay"),
            "{shown}"
        );
    }
}

//! Relay settings (the library view; `main.rs` maps flags and env vars onto it).

use std::time::Duration;

use rmb_core::JwtPolicy;

use crate::mailbox::MailboxLimits;
use crate::ratelimit::RateLimit;

/// Default largest envelope (and WebSocket message) accepted: 2 MiB, so a 1 MiB payload
/// fits with room for headers and e2e overhead.
pub const DEFAULT_MAX_ENVELOPE: usize = 2 << 20;

#[derive(Debug, Clone)]
pub struct Config {
    /// The hostnames (`host` or `host:port`) this relay serves; a twin whose registered
    /// relays include one of them lives here.
    pub domains: Vec<String>,
    /// Redis URL for the shared backend; `None` = in-memory.
    pub redis_url: Option<String>,
    pub rate_limit: RateLimit,
    pub max_envelope_size: usize,
    pub max_connections: usize,
    /// Bounds of one session's queue (beyond them its oldest envelopes are dropped).
    pub mailbox: MailboxLimits,
    /// Bounds of everything queued for one destination twin, across all its session
    /// ids (which the sender chooses); beyond them new envelopes are refused.
    pub twin_queue: MailboxLimits,
    /// Bounds of everything queued by the relay (with Redis: by all its instances
    /// together, in Redis); beyond them new envelopes are refused. Redis backend only.
    pub queue_total: MailboxLimits,
    pub jwt: JwtPolicy,
    /// `https` in production; `http` for local test networks.
    pub federation_scheme: &'static str,
    pub federation_timeout: Duration,
    /// Window over which federation failures rank a relay down.
    pub ranker_period: Duration,
    /// Federation deliveries in flight at once; more wait.
    pub federation_concurrency: usize,
    /// Federation deliveries waiting or in flight before new ones are refused.
    pub federation_backlog: usize,
    /// Bytes of federation work waiting before new work is refused (Redis backend).
    pub federation_backlog_bytes: usize,
    /// WebSocket read buffer per connection (small keeps idle sessions cheap).
    pub read_buffer_size: usize,
    /// How often queues are swept of expired envelopes.
    pub sweep_interval: Duration,
    /// How often the Redis backend refreshes the marks saying which instance holds
    /// which session (marks expire after three missed beats).
    pub redis_heartbeat: Duration,
}

impl Config {
    /// The queue bounds the backend enforces.
    pub fn queue_bounds(&self) -> crate::backend::QueueBounds {
        crate::backend::QueueBounds {
            session: self.mailbox,
            twin: self.twin_queue,
            total: self.queue_total,
            outbox: MailboxLimits {
                max_frames: self.federation_backlog,
                max_bytes: self.federation_backlog_bytes,
            },
        }
    }

    /// Defaults for a relay serving `domains`.
    pub fn new(domains: Vec<String>) -> Self {
        Config {
            domains,
            redis_url: None,
            rate_limit: RateLimit {
                messages: None,
                bytes: None,
                window_secs: 60,
            },
            max_envelope_size: DEFAULT_MAX_ENVELOPE,
            max_connections: 50_000,
            mailbox: MailboxLimits::default(),
            twin_queue: MailboxLimits {
                max_frames: 20_000,
                max_bytes: 128 << 20,
            },
            queue_total: MailboxLimits {
                max_frames: 1_000_000,
                max_bytes: 1 << 30,
            },
            jwt: JwtPolicy::default(),
            federation_scheme: "https",
            federation_timeout: Duration::from_secs(10),
            ranker_period: Duration::from_secs(3600),
            federation_concurrency: 256,
            federation_backlog: 100_000,
            federation_backlog_bytes: 256 << 20,
            read_buffer_size: 4096,
            sweep_interval: Duration::from_secs(5),
            redis_heartbeat: Duration::from_secs(20),
        }
    }
}

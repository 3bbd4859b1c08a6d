//! Relay settings (the library view; `main.rs` maps flags and env vars onto it).

use std::time::Duration;

use rmb_core::rules::Rules;
use rmb_core::JwtPolicy;

use crate::budget::QueueLimits;
use crate::mailbox::MailboxLimits;
use crate::ratelimit::RateLimit;

/// Default largest envelope (WebSocket message or federation body) accepted: 64 MiB,
/// the original relay's limit (tungstenite's default message size, which it never
/// changes), so whatever its clients send is accepted here too. Memory is protected by
/// the read budget and the byte-bounded queues, not by a small message limit.
pub const DEFAULT_MAX_ENVELOPE: usize = rmb_core::rules::MAX_MESSAGE_SIZE;

/// Default read budget: bytes read from all sockets and not yet handed on (queued,
/// delivered or federated), 512 MiB: eight largest messages at once, or many thousands
/// of ordinary ones.
pub const DEFAULT_READ_BUDGET: usize = 512 << 20;
/// Default WebSocket read buffer per connection. Every connected session holds one,
/// idle or not: at 2 KiB an idle session costs 7.8 KiB in all, at 4 KiB 10.1 KiB
/// (5 000 idle sessions, `rmb-bench load`), while 16 busy pairs forward about 12%
/// fewer 1 KiB envelopes per second (more, smaller reads).
pub const DEFAULT_READ_BUFFER: usize = 2048;

/// Open sockets allowed beyond the session cap: federation posts, scrapes and upgrades
/// in progress beside a full house of sessions.
pub const HTTP_HEADROOM: usize = 4096;

/// Default size of the memory of accepted envelopes, in keys: a million keys (half a
/// million signed envelopes) is about 40 MiB when full.
pub const DEFAULT_DEDUP_CAPACITY: usize = 1_000_000;

#[derive(Debug, Clone)]
pub struct Config {
    /// The hostnames (`host` or `host:port`) this relay serves; a twin whose registered
    /// relays include one of them lives here.
    pub domains: Vec<String>,
    /// Redis URL for the shared backend; `None` = in-memory.
    pub redis_url: Option<String>,
    pub rate_limit: RateLimit,
    /// The envelope rules applied to every envelope from a session and every federation
    /// post (`rmb_core::rules`; the defaults, `max_lifetime` from `--max-lifetime`).
    pub rules: Rules,
    pub max_envelope_size: usize,
    /// Bytes being read from sockets, or held in messages not yet handed on, across the
    /// whole relay; past it reads wait (rmb_http::ReadBudget).
    pub read_budget: usize,
    /// How long a read may wait for room in the read budget before the session is
    /// closed with 1013 (try again later) or the federation post gets 503.
    pub read_budget_wait: Duration,
    /// WebSocket sessions at most; past it an upgrade gets 503.
    pub max_connections: usize,
    /// The HTTP serving limits (rmb-http): open sockets of every kind (sessions,
    /// federation posts, scrapes, half-sent requests), header, body and idle timeouts.
    pub http: rmb_http::ServeLimits,
    /// Bounds of one session's queue (beyond them its oldest envelopes are dropped).
    pub mailbox: MailboxLimits,
    /// What offline queues may hold per twin (all its sessions) and in all.
    pub queues: QueueLimits,
    pub jwt: JwtPolicy,
    /// `https` in production; `http` for local test networks.
    pub federation_scheme: &'static str,
    pub federation_timeout: Duration,
    /// Federate to loopback, private, link-local and other non-public addresses. Off in
    /// production: twins register their relays freely, and a relay that posts wherever
    /// they say can be aimed at its own network. Test networks and `rmb up` turn it on.
    pub federation_allow_private: bool,
    /// Window over which federation failures rank a relay down.
    pub ranker_period: Duration,
    /// Distinct relay names the ranker remembers (twins choose relay names freely).
    pub ranker_relays: usize,
    /// Distinct relay names used as metric label values; further ones count as
    /// `other` (twins choose relay names freely).
    pub metric_relay_labels: usize,
    /// Federation deliveries in flight at once; more wait.
    pub federation_concurrency: usize,
    /// Threads verifying federated envelopes' signatures in batches (default: one per
    /// core); 0: each post verifies its own, inline (what the relay did before batches,
    /// kept to measure against).
    pub verify_threads: usize,
    /// Federation deliveries waiting or in flight before new ones are refused.
    pub federation_backlog: usize,
    /// Bytes of federation work waiting or in flight before new work is refused (both
    /// backends).
    pub federation_backlog_bytes: usize,
    /// Keys the memory of accepted envelopes holds (one per envelope; 0: none, and the
    /// relay does not advertise that it drops copies); when full,
    /// the entry nearest its deadline is forgotten first.
    pub dedup_capacity: usize,
    /// How often the relay pings a session it has nothing to write to.
    pub ws_ping_interval: Duration,
    /// A session the relay hears nothing from (no frame, no pong) for this long is
    /// closed (1008): a dead peer or a half-open TCP connection must not hold a slot.
    pub ws_idle_timeout: Duration,
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
            twin: MailboxLimits {
                max_frames: self.queues.twin_max_frames,
                max_bytes: self.queues.twin_max_bytes,
            },
            total: MailboxLimits {
                max_frames: self.queues.total_max_frames,
                max_bytes: self.queues.total_max_bytes,
            },
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
            rules: Rules::default(),
            max_envelope_size: DEFAULT_MAX_ENVELOPE,
            read_budget: DEFAULT_READ_BUDGET,
            read_budget_wait: Duration::from_secs(10),
            max_connections: 50_000,
            http: rmb_http::ServeLimits {
                max_connections: 50_000 + HTTP_HEADROOM,
                ..rmb_http::ServeLimits::default()
            },
            mailbox: MailboxLimits::default(),
            queues: QueueLimits::default(),
            jwt: JwtPolicy::default(),
            federation_scheme: "https",
            federation_timeout: Duration::from_secs(10),
            federation_allow_private: false,
            ranker_period: Duration::from_secs(3600),
            ranker_relays: 4096,
            metric_relay_labels: 100,
            federation_concurrency: 256,
            verify_threads: crate::verifier::default_threads(),
            federation_backlog: 100_000,
            federation_backlog_bytes: 256 << 20,
            dedup_capacity: DEFAULT_DEDUP_CAPACITY,
            ws_ping_interval: Duration::from_secs(30),
            ws_idle_timeout: Duration::from_secs(90),
            read_buffer_size: DEFAULT_READ_BUFFER,
            sweep_interval: Duration::from_secs(5),
            redis_heartbeat: Duration::from_secs(20),
        }
    }
}

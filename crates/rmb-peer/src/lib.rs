//! # rmb-peer: RMB for applications in any language, over Redis
//!
//! The gateway that lets programs in any language use RMB through a local Redis, with
//! the JSON messages of PROTOCOL.md §4 (the same as the original rmb-peer, so existing
//! apps and "peer client" SDKs work unchanged). It owns:
//!
//! - [`translate`]: the §4 JSON shapes to and from envelopes (pure functions);
//! - [`store`]: the peer's Redis keys and the Lua scripts that change them, each
//!   applied once however often it is retried;
//! - [`Peer`] (`peer`): the running gateway, whose loops are `local` (apps' requests
//!   out), `replies` (services' replies out), `events` (what the SDK verified, in),
//!   `writer` (batched pushes to Redis) and `recover` (what a previous run left);
//! - [`redis_conn`]: a reconnecting Redis connection, which failures are transient,
//!   and the retry loop;
//! - [`memory`]: the SDK's receiver memory (seen envelopes, replies sent) in Redis, so a
//!   restarted peer neither loses nor repeats;
//! - [`ttl_map`]: the bounded, expiring maps of what the peer remembers in memory;
//! - [`metrics`]: `GET /metrics` (`--metrics`), counters and queue lengths;
//! - the `rmb-peer` binary (`src/main.rs`): flags compatible with the original.
//!
//! Signing, encryption, verification, relay connections and fail-over come from
//! `rmb-sdk`.

mod config;
mod events;
mod local;
pub mod memory;
pub mod metrics;
pub mod peer;
mod recover;
pub mod redis_conn;
mod replies;
pub mod store;
pub mod translate;
pub mod ttl_map;
mod writer;

pub use config::{Limits, PeerConfig};
pub use peer::{Peer, Stats};

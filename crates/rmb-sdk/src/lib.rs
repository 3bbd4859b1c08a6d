//! # rmb-sdk: call and serve RMB twins from Rust
//!
//! The peer side of RMB for Rust programs (other languages use the `rmb-peer` gateway,
//! which is built on this crate).
//!
//! - [`Client::builder`] registers the twin (its signing key, relays and e2e key) and
//!   connects to every relay at once; envelopes go out over whichever link is healthy,
//!   links are kept alive with pings and reconnected with backoff.
//! - [`Client::request`] starts a [`RequestBuilder`]: the client fills in its own
//!   address, a fresh uid and a lifetime; [`RequestBuilder::call`] waits for the
//!   [`Reply`] (many calls in flight at once, matched by uid), [`RequestBuilder::send`]
//!   returns once the request is queued, with a [`Sent`] that tells when a relay
//!   accepted it. [`Client::call`] is the shorthand.
//! - [`Client::handle`] serves a command; unknown commands, handler errors and panics
//!   become error replies, incoming envelopes that fail a check are answered with the
//!   §4 error codes, and a flood of requests costs bounded tasks and memory.
//! - Nothing runs twice: copies of requests are dropped (and answered with the reply
//!   already sent, kept in a [`Memory`]), and a request without a reply is sent again
//!   only toward receivers that said they drop copies ([`Resend`]).
//! - One error type per operation: [`BuildError`], [`CallError`], [`SendError`],
//!   [`Unconfirmed`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use rmb_sdk::{Client, KeyType};
//!
//! let client = Client::builder("0x<64 hex digits>", KeyType::Sr25519)
//!     .registrar("http://127.0.0.1:8080")
//!     .relays(["ws://127.0.0.1:8081"])
//!     .build()
//!     .await?;
//! client.handle("echo", |req| async move { Ok(req.payload) });
//! let reply = client
//!     .request(7, "echo")
//!     .payload("hi")
//!     .timeout(Duration::from_secs(10))
//!     .call()
//!     .await?;
//! println!("{} says {:?}", reply.source, reply.payload);
//! # Ok(()) }
//! ```
//!
//! ## Examples
//!
//! `examples/echo_server.rs` serves `echo` and `examples/call.rs` calls it. Both read
//! `RMB_REGISTRAR` (registrar URL), `RMB_RELAY` (one or more relay URLs, comma
//! separated), `RMB_MNEMONIC` (the secret) and `RMB_KEY_TYPE` (`sr25519` or `ed25519`):
//!
//! ```text
//! RMB_REGISTRAR=http://127.0.0.1:8080 RMB_RELAY=ws://127.0.0.1:8081 \
//!   RMB_MNEMONIC=0x$(openssl rand -hex 32) cargo run -p rmb-sdk --example echo_server
//! # prints "serving echo as twin N"; then, with another secret:
//! RMB_REGISTRAR=... RMB_RELAY=... RMB_MNEMONIC=0x... \
//!   cargo run -p rmb-sdk --example call -- N echo 'hello'
//! ```

#![warn(missing_docs)]

mod client;
mod error;
mod identity;
mod incoming;
pub mod memory;
mod outgoing;
mod pool;
mod resend;
mod serve;
mod tags;

/// The checks every received envelope goes through, for the fuzz targets in `fuzz/`
/// (feature `fuzzing`); not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::incoming::{classify, open, verify};
}

pub use client::{
    relay_host, reply_ttl, Client, ClientBuilder, Event, Reply, RequestBuilder, Sent,
    DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_RESEND_AFTER, DEFAULT_TIMEOUT,
};
pub use error::{BuildError, CallError, HandlerError, NotResent, SendError, Unconfirmed};
pub use incoming::{Incoming, Kind};
pub use memory::{InMemory, Memory, MemoryError, MemoryLimits};
// Envelopes built by hand: for gateways that relay envelopes whose uid and destination
// someone else chose (rmb-peer sends what its local applications wrote), and for tools
// and tests that play a twin without a client. Applications use `Client::request`.
pub use outgoing::{seal, Outgoing, DEFAULT_SCHEMA};
pub use pool::{PoolConfig, DEDUP_HEADER};
pub use resend::Resend;
pub use rmb_core::{Address, KeyType};
pub use serve::{HandlerResult, Request};
pub use tags::DEDUP as DEDUP_TAG;

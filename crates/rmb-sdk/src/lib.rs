//! # rmb-sdk: call and serve RMB twins from Rust
//!
//! The peer side of RMB for Rust programs (other languages use the `rmb-peer` gateway,
//! which is built on this crate). This crate owns:
//!
//! - [`identity`]: the twin's signing key and e2e key from one secret string, and the
//!   cache of AES keys shared with other twins;
//! - [`pool`]: connections to every relay at once (JWT of PROTOCOL.md §3.1), kept alive
//!   with WebSocket and envelope pings, reconnected with capped exponential backoff and
//!   jitter; envelopes go out over whichever link is healthy;
//! - [`outgoing`] / [`incoming`]: the pure protocol steps: building, encrypting,
//!   stamping and signing envelopes; classifying, checking expiry and signature,
//!   decrypting and de-duplicating what arrives (tested without sockets);
//! - [`Client`]: registration, [`Client::call`] with replies correlated by uid (many in
//!   flight at once), handlers ([`Client::handle`]) with unknown commands and panics
//!   turned into error replies, and incoming failures answered with the §4 error codes;
//! - [`resend`]: end-to-end retransmission: requests are sent again until answered,
//!   by default only to receivers that said (in a reply's tags) that they drop copies,
//!   so that none that does not de-duplicate runs a request twice ([`Resend`]); replies
//!   are kept to answer a copy of a request already handled;
//! - [`error`]: one error type per operation ([`CallError`], [`BuildError`], ...).
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
//! let reply = client.call(7, "echo", b"hi".to_vec(), Duration::from_secs(10)).await?;
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

pub mod client;
pub mod error;
pub mod identity;
pub mod incoming;
pub mod memory;
pub mod outgoing;
pub mod pool;
pub mod resend;
pub mod serve;
mod tags;

pub use client::{
    relay_host, Client, ClientBuilder, Event, Sent, DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_RESEND_AFTER,
};
pub use error::{BuildError, CallError, HandlerError, NotResent, SendError, Unconfirmed};
pub use incoming::{Incoming, Kind};
pub use memory::{InMemory, Memory, MemoryError, MemoryLimits};
pub use outgoing::{Outgoing, DEFAULT_SCHEMA};
pub use pool::{PoolConfig, DEDUP_HEADER};
pub use resend::Resend;
pub use rmb_core::{Address, KeyType};
pub use serve::{HandlerResult, Request};
pub use tags::DEDUP as DEDUP_TAG;

//! # rmb-registrar-client: ask the registrar who twin N is
//!
//! The client every relay, peer and tool uses to talk to an RMB registrar (PROTOCOL.md
//! §5): lookups by twin id through a bounded TTL cache whose concurrent misses for one
//! twin share a single request, lookups by key, account creation with a proof of key
//! possession, updates signed with `X-Auth`, and `ensure_account`, which does whichever
//! is needed. Typed errors, timeouts, explicit invalidation.
//!
//! This crate is small on purpose: an application that only calls twins (through
//! `rmb-sdk`) compiles an HTTP client and a cache, not the registrar server with its
//! databases.
//!
//! Modules: [`client`] (the client and its cache), [`wire`] (the JSON bodies, shared with
//! the server), [`auth`] (the texts a client signs).
//!
//! ```no_run
//! # async fn run() -> Result<(), rmb_registrar_client::ClientError> {
//! let registrar = rmb_registrar_client::RegistrarClient::new("http://127.0.0.1:8080")?;
//! if let Some(twin) = registrar.get_twin(7).await? {
//!     println!("twin 7 is on {:?}", twin.relays);
//! }
//! # Ok(())
//! # }
//! ```

pub mod auth;
pub mod client;
pub mod wire;

pub use client::{ClientConfig, ClientError, RegistrarClient, Twin};

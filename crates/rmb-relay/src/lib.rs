//! # rmb-relay: the RMB relay
//!
//! A WebSocket server that twins connect to with a JWT (PROTOCOL.md §3.1) and that
//! routes signed envelopes between them (§3.2): to a connected session, to a queue
//! until the destination connects, or to another relay by federation (§3.3).
//!
//! The per-envelope rules are pure functions in [`route`]; [`connection`] runs one
//! session (reader + writer tasks), [`state`] holds the shared routing step,
//! [`federation`] talks to other relays, [`backend`] keeps sessions and queues (in
//! memory, or shared through Redis by several relay processes), and [`server`] wires it
//! to HTTP. Start one with [`server::start`].

pub mod backend;
pub mod budget;
pub mod clock;
pub mod config;
pub mod connection;
pub mod dedup;
pub mod directory;
pub mod federation;
pub mod mailbox;
pub mod metrics;
pub mod outbound;
pub mod outbox;
pub mod ranker;
pub mod ratelimit;
pub mod recheck;
pub mod registrar_directory;
pub mod route;
pub mod server;
pub mod session_key;
pub mod state;
pub mod verifier;

pub use config::Config;
pub use directory::{StaticDirectory, TwinDirectory, TwinRecord};
pub use server::{start, RelayHandle, StartError};

//! # rmb-peer: RMB for applications in any language, over Redis
//!
//! The gateway that lets programs in any language use RMB through a local Redis, with
//! the JSON messages of PROTOCOL.md §4 (the same as the original rmb-peer, so existing
//! apps and "peer client" SDKs work unchanged). It owns:
//!
//! - [`translate`]: the §4 JSON shapes to and from envelopes (pure functions: backlog
//!   and envelopes for a request, the `ret` and `msgbus.<cmd>` messages, error replies);
//! - [`peer`]: the running gateway ([`Peer`]): poppers of `msgbus.system.local` and
//!   `msgbus.system.reply`, the writer that pushes replies and incoming requests, and
//!   the `rmb.version` command; Redis failures are retried with backoff without losing
//!   what was already popped, while the relay connections (an [`rmb_sdk::Client`]) stay
//!   up;
//! - [`redis_conn`]: a reconnecting Redis connection and the retry loop;
//! - the `rmb-peer` binary (`src/main.rs`): flags compatible with the original.
//!
//! Signing, encryption, verification, relay connections and fail-over come from
//! `rmb-sdk`.

pub mod peer;
pub mod redis_conn;
pub mod translate;

pub use peer::{Peer, PeerConfig, Stats};

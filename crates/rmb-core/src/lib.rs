//! # rmb-core: the RMB protocol, without I/O
//!
//! Everything two RMB parties must agree on byte for byte, and nothing that touches a
//! socket, a clock thread or a database (in the spirit of `quinn-proto`): the relay,
//! registrar, SDK and rmb-peer crates build their I/O on top of it, and its behaviour is
//! fully unit-testable.
//!
//! - [`proto`]: the protobuf wire messages (`Envelope`, `Address`, ...), derived by hand
//!   with prost so no `protoc` is needed;
//! - [`envelope`]: the signing challenge (MD5 over the fields of PROTOCOL.md §2.1),
//!   sign/verify, stamping and expiry;
//! - [`identity`]: signing keys (ed25519/sr25519) from a mnemonic or `0x` seed with
//!   substrate derivation junctions, and typed 65-byte signatures;
//! - [`jwt`]: the relay connection token;
//! - [`e2e`]: secp256k1 ECDH + AES-256-GCM payload encryption;
//! - [`address`]: `"7"` / `"7:session"` text addresses;
//! - [`time`]: ttl and stamping rules;
//! - [`peer_api`]: the rmb-peer Redis JSON API shapes and error codes;
//! - [`rules`]: limits and shapes every relay and receiver checks, and the two
//!   de-duplication keys.
//!
//! Time-dependent functions take `now` as an argument; [`time::now`] reads the clock.

pub mod address;
pub mod e2e;
pub mod envelope;
pub mod identity;
pub mod jwt;
pub mod peer_api;
pub mod proto;
pub mod rules;
pub mod time;

pub use address::AddressError;
pub use e2e::{E2eError, E2eKey, SharedKey};
pub use identity::{IdentityError, KeyType, SignatureError, Signer};
pub use jwt::{Claims, JwtError, JwtPolicy};
pub use proto::{Address, Envelope};

/// Re-exported so dependants encode/decode with the same prost version.
pub use prost;

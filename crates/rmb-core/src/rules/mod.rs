//! Envelope rules: what a relay or a receiver accepts, beyond a valid signature.
//!
//! The signing challenge (PROTOCOL.md §2.1) concatenates fields without separators, so a
//! relay can move bytes between neighbouring fields and the signature still verifies
//! (the *shift attack*, see `docs/security.md`). These rules close most of those shifts
//! and bound what a hostile sender can make others store: a timestamp may be only a
//! little in the future, a lifetime is capped, every text field has a length cap and a
//! character set that every known client stays inside. The shifts that remain valid are
//! made harmless by the signature de-duplication key ([`signature_key`]): a shifted copy
//! carries the original's signature.
//!
//! Everything here is pure: `now` is passed in.
//!
//! ```
//! use rmb_core::proto::{Message, Request};
//! use rmb_core::rules::{Rules, Violation};
//! use rmb_core::Envelope;
//!
//! let request = Message::Request(Request { command: "calc.add".into() });
//! let env = Envelope {
//!     timestamp: 2_000_000_000,
//!     message: Some(request),
//!     ..Default::default()
//! };
//! let refused = Rules::default().check_envelope(&env, 1_700_000_000).unwrap_err();
//! assert!(matches!(refused, Violation::FromTheFuture { .. }));
//! ```

mod dedup;
mod fields;
mod shape;
mod violation;

pub use dedup::{message_key, signature_key, HashKey};
pub use fields::EnvelopeFields;
pub use violation::{Field, Violation};

use crate::proto::{Address, Envelope, EnvelopeHeader, Kind};

/// Largest WebSocket message (one envelope) every component sends and accepts: 64 MiB,
/// the original relay's and rmb-peer's limit (tungstenite's default `max_message_size`,
/// which neither changes: rmb-rs `hyper_tungstenite::upgrade(&mut request, None)`). The
/// relay's `--max-envelope-size` defaults to it; the SDK accepts it as one frame too
/// (tungstenite's default frame limit is 16 MiB, but relays write each message as one
/// frame).
pub const MAX_MESSAGE_SIZE: usize = 64 << 20;
use shape::{check_schema, check_text, COMMAND, HOST, TAGS, TOKEN};

/// Limits on what an envelope may hold. [`Rules::default`] is set from what the existing
/// clients send (sources in each field's comment and in `docs/compatibility.md`,
/// "Envelope rules"), with a margin of at least two over the largest real value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Seconds a `timestamp` may be ahead of our clock. Every client stamps with its own
    /// clock (rmb-rs `EnvelopeExt::stamp`, rmb-sdk-go `time.Now().Unix()`, the TypeScript
    /// client `Math.round(Date.now() / 1000)`, which can be half a second ahead), so this
    /// only has to absorb clock skew between machines: 300 s, the skew Kerberos allows.
    /// A timestamp far ahead is what the timestamp/expiration shift produces
    /// (`1733000000`,`300` → `173300000030`,`0`).
    pub max_future_skew: u64,
    /// Longest `expiration` (seconds of life from `timestamp`): 7200. The largest value a
    /// known client sends is the original rmb-peer's 3600 on every response
    /// (rmb-rs `src/peer/storage/mod.rs`, `env.expiration = 3600`); requests carry the
    /// caller's timeout (rmb-sdk-go: the context deadline, 300 s without one; the
    /// TypeScript client `expirationMinutes * 60`; our SDK and rmb-peer cap at 1800).
    /// This bounds how long a relay or receiver must remember an envelope to refuse its
    /// copies.
    pub max_lifetime: u64,
    /// Longest uid: 64 bytes. Every client sends a UUID (36 bytes): rmb-rs rmb-peer
    /// `uuid::Uuid::new_v4()`, rmb-sdk-go `uuid.NewString()`, the TypeScript client
    /// `uuidv4()`, our SDK and rmb-peer `Uuid::new_v4()`.
    pub max_uid_len: usize,
    /// Longest request command: 128 bytes. Real commands are dotted names such as
    /// `zos.deployment.deploy` or `zos.network.public_config_get` (under 40 bytes), in
    /// letters, digits and `._-:` (rmb-sdk-go's router splits them on `.`).
    pub max_command_len: usize,
    /// Longest `tags`: 256 bytes. rmb-sdk-go sends none, the TypeScript client `""`, our
    /// SDK tokens such as `dedup` or `fail-fast`; rmb-peer passes the application's `tag`.
    pub max_tags_len: usize,
    /// Longest `schema`: 128 bytes. Clients send `application/json` (rmb-sdk-go
    /// `DefaultSchema`, the TypeScript client always), rmb-peer the application's `shm`
    /// (`application/json`, `text/plain`, `""` or none in practice). A schema must be
    /// empty or a media type (`type/subtype`, registered type).
    pub max_schema_len: usize,
    /// Longest session id: 128 bytes. The TypeScript grid client uses 10 random
    /// characters (`generateString(10)`), rmb-sdk-go whatever `WithSession` is given,
    /// rmb-peer none.
    pub max_session_len: usize,
    /// Longest entry of `relays`: 260 bytes, a 253-byte DNS name plus `:65535`. The
    /// TypeScript client fills `relays` with its own twin's relays
    /// (`twin.relay.split("_")`); the other clients send none.
    pub max_relay_len: usize,
    /// Most entries in `relays`: 16 (the registrar allows 8 relays per twin).
    pub max_relays: usize,
    /// Longest `federation`: 1024 bytes. rmb-sdk-go sends the destination twin's relay
    /// field, which tfchain holds as relays joined by `_`: eight relays of up to ~120
    /// bytes each.
    pub max_federation_len: usize,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            max_future_skew: 300,
            max_lifetime: 7200,
            max_uid_len: 64,
            max_command_len: 128,
            max_tags_len: 256,
            max_schema_len: 128,
            max_session_len: 128,
            max_relay_len: 260,
            max_relays: 16,
            max_federation_len: 1024,
        }
    }
}

impl Rules {
    /// Checks what a relay sees of a frame: every field but the payload and an error's
    /// contents. Pings and pongs are not required to have a source, destination or
    /// signature (the TypeScript client sends its pings with neither, PROTOCOL.md §6).
    pub fn check_header(&self, header: &EnvelopeHeader, now: u64) -> Result<(), Violation> {
        self.check(header, now)
    }

    /// Checks a decoded envelope, as a receiver does before verifying its signature.
    /// The same rules as [`Rules::check_header`]: a header holds every field they read.
    pub fn check_envelope(&self, env: &Envelope, now: u64) -> Result<(), Violation> {
        self.check(env, now)
    }

    /// Checks either view of an envelope (see [`EnvelopeFields`]).
    pub fn check(&self, env: &impl EnvelopeFields, now: u64) -> Result<(), Violation> {
        let kind = env.kind().ok_or(Violation::NoMessage)?;
        self.check_times(env.timestamp(), env.expiration(), now)?;
        self.check_parties(env, kind)?;
        self.check_texts(env)
    }

    fn check_times(&self, timestamp: u64, expiration: u64, now: u64) -> Result<(), Violation> {
        if timestamp > now.saturating_add(self.max_future_skew) {
            return Err(Violation::FromTheFuture {
                timestamp,
                now,
                ahead: timestamp - now,
                max_skew: self.max_future_skew,
            });
        }
        if expiration > self.max_lifetime {
            return Err(Violation::LifetimeTooLong {
                expiration,
                max: self.max_lifetime,
            });
        }
        if crate::time::ttl(timestamp, expiration, now).is_none() {
            return Err(Violation::Expired {
                timestamp,
                expiration,
                now,
            });
        }
        Ok(())
    }

    /// Source, destination and signature, which pings and pongs may lack.
    fn check_parties(&self, env: &impl EnvelopeFields, kind: Kind) -> Result<(), Violation> {
        if matches!(kind, Kind::Ping | Kind::Pong) {
            return Ok(());
        }
        if !env.destination().is_some_and(|d| d.twin != 0) {
            return Err(Violation::NoDestination);
        }
        let from_relay = !env.source().is_some_and(|s| s.twin != 0);
        if from_relay {
            // A relay's error (PROTOCOL.md §3.2) is unsigned and comes from twin 0.
            return match kind {
                Kind::Error => Ok(()),
                _ => Err(Violation::NoSource),
            };
        }
        check_signature_shape(env.signature())
    }

    fn check_texts(&self, env: &impl EnvelopeFields) -> Result<(), Violation> {
        check_text(Field::Uid, env.uid(), self.max_uid_len, TOKEN, false)?;
        if let Some(tags) = env.tags() {
            check_text(Field::Tags, tags, self.max_tags_len, TAGS, true)?;
        }
        if let Some(command) = env.command() {
            check_text(
                Field::Command,
                command,
                self.max_command_len,
                COMMAND,
                false,
            )?;
        }
        if let Some(schema) = env.schema() {
            check_schema(schema, self.max_schema_len)?;
        }
        if let Some(federation) = env.federation() {
            check_text(
                Field::Federation,
                federation,
                self.max_federation_len,
                HOST,
                true,
            )?;
        }
        let sessions = [
            (Field::SourceSession, env.source()),
            (Field::DestinationSession, env.destination()),
        ];
        for (field, address) in sessions {
            if let Some(session) = address.and_then(|a| a.connection.as_deref()) {
                check_text(field, session.as_bytes(), self.max_session_len, TOKEN, true)?;
            }
        }
        if env.relay_count() > self.max_relays {
            return Err(Violation::TooManyRelays {
                count: env.relay_count(),
                max: self.max_relays,
            });
        }
        for i in 0..env.relay_count() {
            let relay = env.relay(i).unwrap_or_default();
            check_text(Field::Relay(i), relay, self.max_relay_len, HOST, false)?;
        }
        Ok(())
    }
}

/// A signature is a type byte (`e` ed25519, `s` sr25519) and 64 bytes (PROTOCOL.md §1).
fn check_signature_shape(signature: Option<&[u8]>) -> Result<(), Violation> {
    let signature = signature.unwrap_or_default();
    match signature {
        [] => Err(Violation::Unsigned),
        s if s.len() != 65 => Err(Violation::BadSignatureLength { len: s.len() }),
        [b'e' | b's', ..] => Ok(()),
        [byte, ..] => Err(Violation::BadSignatureType { byte: *byte }),
    }
}

/// Refuses an envelope not addressed to `me` exactly (twin and session id, where an
/// empty session id is not the same as none, as in the original relay). A receiver calls
/// this after verifying the signature: several shifts move bytes into a session id or
/// change the destination twin, and a relay may deliver the result anywhere.
pub fn check_destination(env: &impl EnvelopeFields, me: &Address) -> Result<(), Violation> {
    match env.destination() {
        Some(found) if found == me => Ok(()),
        found => Err(Violation::NotForUs {
            found: found.map_or_else(|| "nobody".to_string(), exact_text),
            expected: exact_text(me),
        }),
    }
}

/// `twin`, `twin:session`, or `twin:""` for an empty session id.
fn exact_text(address: &Address) -> String {
    match &address.connection {
        None => address.twin.to_string(),
        Some(s) if s.is_empty() => format!("{}:\"\"", address.twin),
        Some(s) => format!("{}:{s}", address.twin),
    }
}

#[cfg(test)]
mod tests;

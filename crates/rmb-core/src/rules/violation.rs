//! Why an envelope was refused, in words a sender can act on.

use std::fmt;

/// A field of an envelope, for [`Violation`] messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Field {
    Uid,
    Tags,
    Command,
    Schema,
    Federation,
    SourceSession,
    DestinationSession,
    /// An entry of the deprecated `relays` list, by index.
    Relay(usize),
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Uid => f.write_str("uid"),
            Field::Tags => f.write_str("tags"),
            Field::Command => f.write_str("request command"),
            Field::Schema => f.write_str("schema"),
            Field::Federation => f.write_str("federation"),
            Field::SourceSession => f.write_str("source session id"),
            Field::DestinationSession => f.write_str("destination session id"),
            Field::Relay(i) => write!(f, "relays[{i}]"),
        }
    }
}

/// Why [`Rules`](super::Rules) refused an envelope. Each message names the field, what
/// was found and the limit, so the sender can fix it without reading our source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    #[error("{field} is {len} bytes, longer than the limit of {max}")]
    TooLong {
        field: Field,
        len: usize,
        max: usize,
    },
    #[error("{field} is empty")]
    Empty { field: Field },
    #[error(
        "{field} has byte {byte:#04x} at offset {at}, outside its allowed characters ({allowed})"
    )]
    BadCharacter {
        field: Field,
        at: usize,
        byte: u8,
        allowed: &'static str,
    },
    #[error("schema {schema:?} is not a media type such as application/json (type/subtype, with a registered type)")]
    NotAMediaType { schema: String },
    #[error("relays has {count} entries, more than the limit of {max}")]
    TooManyRelays { count: usize, max: usize },
    #[error("timestamp {timestamp} is {ahead} s ahead of this clock ({now}); at most {max_skew} s is allowed")]
    FromTheFuture {
        timestamp: u64,
        now: u64,
        ahead: u64,
        max_skew: u64,
    },
    #[error("expiration {expiration} s is longer than the limit of {max} s")]
    LifetimeTooLong { expiration: u64, max: u64 },
    #[error("expired: timestamp {timestamp} + expiration {expiration} is not after now ({now})")]
    Expired {
        timestamp: u64,
        expiration: u64,
        now: u64,
    },
    #[error("the envelope carries no message (request, response, error, ping or pong)")]
    NoMessage,
    #[error("the envelope has no source twin (only a relay's error may come from twin 0)")]
    NoSource,
    #[error("the envelope has no destination twin")]
    NoDestination,
    #[error("the envelope is not signed")]
    Unsigned,
    #[error("the signature is {len} bytes; it must be 65 (a type byte 'e' or 's' and 64 bytes)")]
    BadSignatureLength { len: usize },
    #[error("the signature's type byte is {byte:#04x}; it must be 'e' (ed25519) or 's' (sr25519)")]
    BadSignatureType { byte: u8 },
    #[error("the envelope is addressed to {found}, not to {expected}")]
    NotForUs { found: String, expected: String },
}

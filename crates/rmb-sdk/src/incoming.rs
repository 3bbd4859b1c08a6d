//! Checking incoming envelopes: classification, expiry, signature and decryption. Pure
//! functions; the client does the registrar lookups (and de-duplication: `memory`).
//!
//! The checks stay `pub` because feature `fuzzing` re-exports them for fuzz/ (lib.rs);
//! without it the module is private and they are the crate's own.
#![cfg_attr(not(feature = "fuzzing"), allow(unreachable_pub))]

use rmb_core::identity::KeyCache;
use rmb_core::peer_api::ErrorCode;
use rmb_core::proto::{Message, Payload};
use rmb_core::rules::Violation;
use rmb_core::{envelope, Address, Envelope, SharedKey};

/// What an incoming envelope carries once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// A request for a command.
    Request {
        /// The command to run.
        command: String,
    },
    /// A successful reply.
    Response,
    /// An error reply from the remote twin (its service or its peer).
    Error {
        /// The error code.
        code: u32,
        /// What the remote said.
        message: String,
    },
}

/// A verified (and decrypted) incoming message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The envelope uid (a reply carries its request's).
    pub uid: String,
    /// Who sent it (twin and session); its signature was verified.
    pub source: Address,
    /// Request, reply or error reply.
    pub kind: Kind,
    /// The decrypted body (empty for an error reply).
    pub payload: Vec<u8>,
    /// The schema the sender declared for the body.
    pub schema: Option<String>,
    /// The sender's tags.
    pub tags: Option<String>,
    /// When it was sent (unix seconds).
    pub timestamp: u64,
    /// Seconds of life from `timestamp`.
    pub expiration: u64,
}

/// Why an incoming envelope was refused, with the §4 code to answer a request with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: String,
}

impl Rejection {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Rejection {
            code,
            message: message.into(),
        }
    }
}

/// The refusal of an envelope that breaks the rules, with the §4 code that fits: 102
/// for its times or an envelope not addressed to us, 104 for a malformed signature, 100
/// for the rest (shapes and lengths).
pub(crate) fn refused(violation: Violation) -> Rejection {
    let code = match violation {
        Violation::FromTheFuture { .. }
        | Violation::LifetimeTooLong { .. }
        | Violation::Expired { .. }
        | Violation::NotForUs { .. } => ErrorCode::Expired,
        Violation::Unsigned
        | Violation::BadSignatureLength { .. }
        | Violation::BadSignatureType { .. } => ErrorCode::BadSignature,
        _ => ErrorCode::InvalidMessage,
    };
    Rejection::new(code, violation.to_string())
}

/// The first look at a decoded envelope, before any key is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    /// An unsigned error from a relay (no source, or twin 0): the request with this uid
    /// could not be routed.
    RelayError { uid: String, message: String },
    /// A relay's answer to our ping; proves the link is alive and nothing more.
    Pong,
    /// Pings are for relays; one reaching us is ignored.
    Ping,
    /// Signed by a twin: request, response or error reply; still to be verified.
    Signed { source: u32, is_request: bool },
}

/// Sorts an envelope by who sent it and what it is.
pub fn classify(env: &Envelope) -> Result<Classified, Rejection> {
    let source = env.source.as_ref().map(|a| a.twin).unwrap_or(0);
    match &env.message {
        Some(Message::Pong(_)) => Ok(Classified::Pong),
        Some(Message::Ping(_)) => Ok(Classified::Ping),
        Some(Message::Error(e)) if source == 0 => Ok(Classified::RelayError {
            uid: env.uid.clone(),
            message: e.message.clone(),
        }),
        Some(_) if source == 0 => Err(Rejection::new(
            ErrorCode::InvalidMessage,
            "envelope has no source twin",
        )),
        Some(Message::Request(_)) => Ok(Classified::Signed {
            source,
            is_request: true,
        }),
        Some(Message::Response(_) | Message::Error(_)) => Ok(Classified::Signed {
            source,
            is_request: false,
        }),
        None => Err(Rejection::new(
            ErrorCode::InvalidMessage,
            "envelope carries no message",
        )),
    }
}

/// Checks expiry and the signature against the source twin's `public_key`, parsed
/// through `keys` (each twin's key is decompressed once, not for every envelope).
pub fn verify(
    env: &Envelope,
    public_key: &[u8],
    now: u64,
    keys: &KeyCache,
) -> Result<(), Rejection> {
    if envelope::ttl(env, now).is_none() {
        return Err(Rejection::new(
            ErrorCode::Expired,
            format!(
                "envelope expired (timestamp {}, expiration {}s, now {now})",
                env.timestamp, env.expiration
            ),
        ));
    }
    envelope::verify_cached(env, public_key, keys)
        .map_err(|e| Rejection::new(ErrorCode::BadSignature, format!("bad signature: {e}")))
}

/// Takes a verified envelope apart, decrypting a `cipher` payload with `shared` (the
/// key shared with the source twin; `None` when there is none).
pub fn open(env: Envelope, shared: Option<&SharedKey>) -> Result<Incoming, Rejection> {
    let payload = match env.payload {
        None => Vec::new(),
        Some(Payload::Plain(data)) => data,
        Some(Payload::Cipher(cipher)) => {
            let key = shared.ok_or_else(|| {
                Rejection::new(
                    ErrorCode::E2e,
                    "payload is encrypted but there is no e2e key to decrypt it",
                )
            })?;
            key.decrypt(&cipher)
                .map_err(|e| Rejection::new(ErrorCode::E2e, e.to_string()))?
        }
    };
    let kind = match env.message {
        Some(Message::Request(r)) => Kind::Request { command: r.command },
        Some(Message::Response(_)) => Kind::Response,
        Some(Message::Error(e)) => Kind::Error {
            code: e.code,
            message: e.message,
        },
        _ => {
            return Err(Rejection::new(
                ErrorCode::InvalidMessage,
                "not a request or reply",
            ))
        }
    };
    let source = env.source.unwrap_or_default();
    Ok(Incoming {
        uid: env.uid,
        source,
        kind,
        payload,
        schema: env.schema,
        tags: env.tags,
        timestamp: env.timestamp,
        expiration: env.expiration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outgoing::{seal, Outgoing};
    use rmb_core::proto::{Error, Pong};
    use rmb_core::{E2eKey, KeyType, Signer};

    fn signer(n: u8) -> Signer {
        Signer::from_seed(&[n; 32], KeyType::Ed25519).unwrap()
    }

    fn request(now: u64) -> Envelope {
        let out = Outgoing::request(
            "uid-1",
            Address::twin(1),
            Address::twin(2),
            "echo",
            b"x".to_vec(),
            60,
        );
        seal(out, &signer(1), None, now)
    }

    #[test]
    fn relay_errors_pongs_and_signed_messages_are_told_apart() {
        let relay_error = Envelope {
            uid: "u".into(),
            message: Some(Message::Error(Error {
                code: 0,
                message: "twin not found".into(),
            })),
            ..Default::default()
        };
        assert_eq!(
            classify(&relay_error).unwrap(),
            Classified::RelayError {
                uid: "u".into(),
                message: "twin not found".into()
            }
        );
        let pong = Envelope {
            message: Some(Message::Pong(Pong {})),
            ..Default::default()
        };
        assert_eq!(classify(&pong).unwrap(), Classified::Pong);
        assert_eq!(
            classify(&request(1000)).unwrap(),
            Classified::Signed {
                source: 1,
                is_request: true
            }
        );
        // A request without a source cannot be answered or verified.
        let mut anonymous = request(1000);
        anonymous.source = None;
        assert_eq!(
            classify(&anonymous).unwrap_err().code,
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn rule_violations_are_answered_with_the_code_that_fits() {
        let code = |v| refused(v).code;
        let expired = Violation::Expired {
            timestamp: 1,
            expiration: 1,
            now: 5,
        };
        assert_eq!(code(expired), ErrorCode::Expired);
        let future = Violation::FromTheFuture {
            timestamp: 9,
            now: 1,
            ahead: 8,
            max_skew: 5,
        };
        assert_eq!(code(future), ErrorCode::Expired);
        let elsewhere = Violation::NotForUs {
            found: "7:x".into(),
            expected: "7".into(),
        };
        assert_eq!(code(elsewhere), ErrorCode::Expired);
        assert_eq!(code(Violation::Unsigned), ErrorCode::BadSignature);
        assert_eq!(code(Violation::NoSource), ErrorCode::InvalidMessage);
        let rejection = refused(Violation::TooManyRelays { count: 20, max: 16 });
        assert_eq!(rejection.code, ErrorCode::InvalidMessage);
        assert!(rejection.message.contains("20"), "{}", rejection.message);
    }

    #[test]
    fn verification_checks_expiry_then_signature() {
        // One cache throughout: a key parsed for one envelope must not let a tampered
        // one, or another key's, through.
        let keys = KeyCache::default();
        let verify = |env: &Envelope, key: &[u8], now| super::verify(env, key, now, &keys);
        let env = request(1000);
        verify(&env, &signer(1).public_key(), 1010).unwrap();
        assert_eq!(
            verify(&env, &signer(1).public_key(), 1060)
                .unwrap_err()
                .code,
            ErrorCode::Expired
        );
        assert_eq!(
            verify(&env, &signer(9).public_key(), 1010)
                .unwrap_err()
                .code,
            ErrorCode::BadSignature
        );
        let mut tampered = env.clone();
        tampered.payload = Some(Payload::Plain(b"y".to_vec()));
        assert_eq!(
            verify(&tampered, &signer(1).public_key(), 1010)
                .unwrap_err()
                .code,
            ErrorCode::BadSignature
        );
    }

    #[test]
    fn open_decrypts_or_reports_e2e_failure() {
        let a = E2eKey::from_bytes(&[3; 32]).unwrap();
        let b = E2eKey::from_bytes(&[4; 32]).unwrap();
        let c = E2eKey::from_bytes(&[5; 32]).unwrap();
        let ab = a.shared_key(&b.public_key()).unwrap();
        let mut out = Outgoing::request(
            "u",
            Address::twin(1),
            Address::session(2, "s"),
            "cmd",
            b"body".to_vec(),
            60,
        );
        out.tags = Some("t".into());
        let env = seal(out, &signer(1), Some(&ab), 1000);
        let ba = b.shared_key(&a.public_key()).unwrap();
        let opened = open(env.clone(), Some(&ba)).unwrap();
        assert_eq!(opened.payload, b"body");
        assert_eq!(
            opened.kind,
            Kind::Request {
                command: "cmd".into()
            }
        );
        assert_eq!(opened.tags.as_deref(), Some("t"));
        assert_eq!(opened.source, Address::twin(1));
        let cb = c.shared_key(&a.public_key()).unwrap();
        assert_eq!(
            open(env.clone(), Some(&cb)).unwrap_err().code,
            ErrorCode::E2e
        );
        assert_eq!(open(env, None).unwrap_err().code, ErrorCode::E2e);
    }
}

//! Building outgoing envelopes: fill, encrypt, stamp, sign. Pure functions.

use bytes::Bytes;
use rmb_core::prost::Message as _;
use rmb_core::proto::{Error, Message, Payload, Ping, Request, Response};
use rmb_core::{envelope, Address, Envelope, SharedKey, Signer};

/// The schema set on requests unless the caller picks another: the TypeScript client
/// verifies replies as if they carried it (PROTOCOL.md §6).
pub const DEFAULT_SCHEMA: &str = "application/json";

/// What an envelope says, before it is sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The envelope uid; unique per request, a reply repeats its request's.
    pub uid: String,
    /// The sender (twin and session); a client sends only as its own address.
    pub source: Address,
    /// The receiver (twin and session).
    pub destination: Address,
    /// Request, response or error reply.
    pub message: Message,
    /// The body; `None` for error replies and pings.
    pub payload: Option<Vec<u8>>,
    /// Tags (comma or space separated tokens; signed).
    pub tags: Option<String>,
    /// The schema declared for the body.
    pub schema: Option<String>,
    /// When the message was created (0 = now). Stamping keeps the deadline
    /// `timestamp + expiration` (§2.2).
    pub timestamp: u64,
    /// Seconds of life from `timestamp`.
    pub expiration: u64,
}

impl Outgoing {
    fn new(
        uid: String,
        source: Address,
        destination: Address,
        message: Message,
        payload: Option<Vec<u8>>,
        schema: Option<String>,
        expiration: u64,
    ) -> Self {
        Outgoing {
            uid,
            source,
            destination,
            message,
            payload,
            tags: None,
            schema,
            timestamp: 0,
            expiration,
        }
    }

    /// A request for `command`, with the [`DEFAULT_SCHEMA`].
    pub fn request(
        uid: impl Into<String>,
        source: Address,
        destination: Address,
        command: impl Into<String>,
        payload: Vec<u8>,
        expiration: u64,
    ) -> Self {
        let command = command.into();
        let message = Message::Request(Request { command });
        let schema = Some(DEFAULT_SCHEMA.to_string());
        Self::new(
            uid.into(),
            source,
            destination,
            message,
            Some(payload),
            schema,
            expiration,
        )
    }

    /// A successful reply (same uid as the request).
    pub fn response(
        uid: impl Into<String>,
        source: Address,
        destination: Address,
        payload: Vec<u8>,
        schema: Option<String>,
        expiration: u64,
    ) -> Self {
        let message = Message::Response(Response {});
        Self::new(
            uid.into(),
            source,
            destination,
            message,
            Some(payload),
            schema,
            expiration,
        )
    }

    /// An error reply (same uid as the request).
    pub fn error(
        uid: impl Into<String>,
        source: Address,
        destination: Address,
        code: u32,
        message: impl Into<String>,
        schema: Option<String>,
        expiration: u64,
    ) -> Self {
        let message = Message::Error(Error {
            code,
            message: message.into(),
        });
        Self::new(
            uid.into(),
            source,
            destination,
            message,
            None,
            schema,
            expiration,
        )
    }
}

/// Encrypts the payload with `shared` (when given), stamps with `now` and signs.
pub fn seal(out: Outgoing, signer: &Signer, shared: Option<&SharedKey>, now: u64) -> Envelope {
    let payload = out.payload.map(|body| match shared {
        Some(key) => Payload::Cipher(key.encrypt(&body)),
        None => Payload::Plain(body),
    });
    let mut env = Envelope {
        uid: out.uid,
        tags: out.tags,
        timestamp: out.timestamp,
        expiration: out.expiration,
        source: Some(out.source),
        destination: Some(out.destination),
        message: Some(out.message),
        schema: out.schema,
        payload,
        ..Default::default()
    };
    envelope::stamp(&mut env, now);
    envelope::sign(&mut env, signer);
    env
}

/// The envelope in `frame` signed again at `now`, with its deadline kept: a timed re-send
/// of a request (design D1c), or a cached reply sent again for a copy of its request. A relay drops exact copies of what it accepted (it knows them by their
/// signature) even when the receiver never got them, so a re-send must carry a new
/// signature over the same uid; it goes only to receivers that de-duplicate by uid, which
/// run the request once and answer the copy from their reply cache. The new timestamp is
/// at least a second after the old one, since an ed25519 signature over the same bytes
/// would be the same. `None` when the frame does not decode or its deadline has passed.
pub(crate) fn resign(frame: &[u8], signer: &Signer, now: u64) -> Option<Bytes> {
    let mut env = Envelope::decode(frame).ok()?;
    let deadline = env.timestamp.checked_add(env.expiration)?;
    let stamped = now.max(env.timestamp.checked_add(1)?);
    env.expiration = deadline.checked_sub(stamped).filter(|&left| left > 0)?;
    env.timestamp = stamped;
    envelope::sign(&mut env, signer);
    Some(Bytes::from(env.encode_to_vec()))
}

/// An envelope ping for dead-link detection: the relay answers it with a pong. Unsigned
/// (relays answer pings before any other check, as for the TypeScript client).
pub(crate) fn ping(uid: impl Into<String>, source: Address, now: u64) -> Envelope {
    Envelope {
        uid: uid.into(),
        timestamp: now,
        expiration: 60,
        source: Some(source),
        message: Some(Message::Ping(Ping {})),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmb_core::{E2eKey, KeyType};

    fn signer(n: u8) -> Signer {
        Signer::from_seed(&[n; 32], KeyType::Sr25519).unwrap()
    }

    #[test]
    fn requests_are_signed_stamped_and_carry_the_default_schema() {
        let s = signer(1);
        let out = Outgoing::request(
            "u1",
            Address::twin(1),
            Address::twin(2),
            "cmd",
            b"hi".to_vec(),
            60,
        );
        let env = seal(out, &s, None, 1000);
        assert_eq!(env.timestamp, 1000);
        assert_eq!(env.expiration, 60);
        assert_eq!(env.schema.as_deref(), Some(DEFAULT_SCHEMA));
        assert_eq!(env.payload, Some(Payload::Plain(b"hi".to_vec())));
        envelope::verify(&env, &s.public_key()).unwrap();
        // Someone else's key does not verify it.
        assert!(envelope::verify(&env, &signer(2).public_key()).is_err());
    }

    #[test]
    fn stamping_keeps_the_deadline_of_an_old_message() {
        let s = signer(1);
        let mut out = Outgoing::request("u", Address::twin(1), Address::twin(2), "c", vec![], 60);
        out.timestamp = 990;
        let env = seal(out, &s, None, 1000);
        assert_eq!((env.timestamp, env.expiration), (1000, 50));
    }

    #[test]
    fn encrypted_payload_opens_with_the_peer_key() {
        let a = E2eKey::from_bytes(&[3; 32]).unwrap();
        let b = E2eKey::from_bytes(&[4; 32]).unwrap();
        let ab = a.shared_key(&b.public_key()).unwrap();
        let out = Outgoing::response(
            "u",
            Address::twin(1),
            Address::twin(2),
            b"secret".to_vec(),
            None,
            60,
        );
        let env = seal(out, &signer(1), Some(&ab), 1000);
        let Some(Payload::Cipher(cipher)) = &env.payload else {
            panic!("expected a cipher payload, got {:?}", env.payload);
        };
        assert_ne!(&cipher[..], b"secret");
        let ba = b.shared_key(&a.public_key()).unwrap();
        assert_eq!(ba.decrypt(cipher).unwrap(), b"secret");
    }

    #[test]
    fn error_replies_have_no_payload() {
        let out = Outgoing::error(
            "u",
            Address::twin(1),
            Address::twin(2),
            104,
            "bad",
            None,
            300,
        );
        let env = seal(out, &signer(1), None, 5);
        assert_eq!(env.payload, None);
        assert_eq!(
            env.message,
            Some(Message::Error(Error {
                code: 104,
                message: "bad".into()
            }))
        );
    }
}

//! Envelope helpers: the signing challenge (§2.1), sign/verify, stamping and expiry.

use md5::{Digest, Md5};

use crate::identity::{self, SignatureError, Signer};
use crate::proto::{Envelope, Message, Payload};
use crate::time;

/// The exact bytes whose MD5 digest is signed (§2.1). No separators anywhere; numbers
/// as decimal text; an absent address counts as twin 0.
pub fn challenge(env: &Envelope) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + payload_len(env));
    write_challenge(env, &mut out);
    out
}

/// MD5 of [`challenge`]: what signatures actually cover.
pub fn challenge_digest(env: &Envelope) -> [u8; 16] {
    let mut hasher = DigestWriter(Md5::new());
    write_challenge(env, &mut hasher);
    hasher.0.finalize().into()
}

/// Where the challenge bytes go: a buffer, or straight into the hash so signing a large
/// payload does not copy it.
trait ChallengeSink {
    fn put(&mut self, bytes: &[u8]);
}

impl ChallengeSink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

struct DigestWriter(Md5);

impl ChallengeSink for DigestWriter {
    fn put(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

fn write_challenge(env: &Envelope, out: &mut impl ChallengeSink) {
    out.put(env.uid.as_bytes());
    if let Some(tags) = &env.tags {
        out.put(tags.as_bytes());
    }
    put_decimal(out, env.timestamp);
    put_decimal(out, env.expiration);
    for addr in [&env.source, &env.destination] {
        match addr {
            Some(addr) => {
                put_decimal(out, addr.twin.into());
                if let Some(conn) = &addr.connection {
                    out.put(conn.as_bytes());
                }
            }
            None => put_decimal(out, 0),
        }
    }
    match &env.message {
        Some(Message::Request(req)) => out.put(req.command.as_bytes()),
        Some(Message::Error(err)) => {
            put_decimal(out, err.code.into());
            out.put(err.message.as_bytes());
        }
        Some(Message::Response(_) | Message::Ping(_) | Message::Pong(_)) | None => {}
    }
    if let Some(schema) = &env.schema {
        out.put(schema.as_bytes());
    }
    if let Some(federation) = &env.federation {
        out.put(federation.as_bytes());
    }
    if let Some(Payload::Plain(data) | Payload::Cipher(data)) = &env.payload {
        out.put(data);
    }
    for relay in &env.relays {
        out.put(relay.as_bytes());
    }
}

/// Writes `n` as decimal text without allocating (this runs for every envelope).
fn put_decimal(out: &mut impl ChallengeSink, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put(&buf[i..]);
}

fn payload_len(env: &Envelope) -> usize {
    match &env.payload {
        Some(Payload::Plain(d) | Payload::Cipher(d)) => d.len(),
        None => 0,
    }
}

/// Signs the envelope in place with the twin's key.
pub fn sign(env: &mut Envelope, signer: &Signer) {
    let digest = challenge_digest(env);
    env.signature = Some(signer.sign(&digest).to_vec());
}

/// Verifies the envelope's signature against the source twin's public key.
pub fn verify(env: &Envelope, public_key: &[u8]) -> Result<(), SignatureError> {
    identity::verify(public_key, &challenge_digest(env), signature_of(env)?)
}

/// [`verify`], with ed25519 public keys parsed once through `cache`.
pub fn verify_cached(
    env: &Envelope,
    public_key: &[u8],
    cache: &identity::KeyCache,
) -> Result<(), SignatureError> {
    identity::verify_cached(
        cache,
        public_key,
        &challenge_digest(env),
        signature_of(env)?,
    )
}

/// The envelope's signature, which must be there.
fn signature_of(env: &Envelope) -> Result<&[u8], SignatureError> {
    match env.signature.as_deref() {
        Some(signature) if !signature.is_empty() => Ok(signature),
        _ => Err(SignatureError::Missing),
    }
}

/// Applies the stamping rule of §2.2 (do this right before [`sign`]).
pub fn stamp(env: &mut Envelope, now: u64) {
    (env.timestamp, env.expiration) = time::stamp(env.timestamp, env.expiration, now);
}

/// Seconds left to live, or `None` when the envelope has expired.
pub fn ttl(env: &Envelope, now: u64) -> Option<u64> {
    time::ttl(env.timestamp, env.expiration, now)
}

/// True when the envelope's `tags` contain the token `fail-fast` (comma or space
/// separated), asking relays not to queue it for an offline destination (§3.3).
pub fn is_fail_fast(env: &Envelope) -> bool {
    tags_say_fail_fast(env.tags.as_deref())
}

/// [`is_fail_fast`] on the tags alone (for an [`EnvelopeHeader`](crate::proto::EnvelopeHeader)).
pub fn tags_say_fail_fast(tags: Option<&str>) -> bool {
    tags.map(|tags| {
        tags.split(|c: char| c == ',' || c.is_whitespace())
            .any(|t| t == "fail-fast")
    })
    .unwrap_or(false)
}

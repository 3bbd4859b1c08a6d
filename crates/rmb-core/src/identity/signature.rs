//! Verification of the 65-byte typed signatures: one type byte (`e`/`s`) + 64 bytes.

use std::sync::Mutex;

use ed25519_dalek::Verifier as _;

use super::{KeyType, SR25519_CONTEXT};

/// Length of a signature on the wire.
pub const SIGNATURE_LEN: usize = 65;

/// Why a signature did not verify.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("signature is missing")]
    Missing,
    #[error("signature must be 65 bytes (type byte + 64), got {0}")]
    BadLength(usize),
    #[error("unknown signature type byte 0x{0:02x} (expected 'e' for ed25519 or 's' for sr25519)")]
    UnknownType(u8),
    #[error("public key must be 32 bytes, got {0}")]
    BadPublicKeyLength(usize),
    #[error("public key is not a valid {0} point")]
    BadPublicKey(KeyType),
    /// A key anyone can sign for (see [`verify_raw`]); no honest key generation makes one.
    #[error("public key is a weak {0} key (an identity or small-order point), which anyone can sign for")]
    WeakPublicKey(KeyType),
    #[error("{0} signature does not match the signed data and public key")]
    Mismatch(KeyType),
}

/// Verifies a typed signature over `message` with the twin's 32-byte public key.
/// The algorithm is chosen by the signature's type byte: the registrar stores only the
/// raw key, so the signer tells us which scheme it used.
pub fn verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
    if signature.is_empty() {
        return Err(SignatureError::Missing);
    }
    if signature.len() != SIGNATURE_LEN {
        return Err(SignatureError::BadLength(signature.len()));
    }
    let key_type =
        KeyType::from_type_byte(signature[0]).ok_or(SignatureError::UnknownType(signature[0]))?;
    verify_raw(key_type, public_key, message, &signature[1..])
}

/// [`verify`], with ed25519 public keys parsed through `cache`: the same answer for
/// every input.
pub fn verify_cached(
    cache: &KeyCache,
    public_key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let check = Check {
        public_key,
        message,
        signature,
    };
    match parse_ed25519(&check, Some(cache)) {
        Some(Ok((key, sig))) => single_ed25519(&key, message, &sig),
        Some(Err(e)) => Err(e),
        None => verify(public_key, message, signature),
    }
}

/// Parsed ed25519 public keys, so that a twin's key is decompressed once instead of for
/// every signature it made (a point decompression, about a tenth of a verification).
/// Direct-mapped: a key has one slot, chosen by its leading bytes; keys that share a
/// slot only cost a parse each, so nothing an attacker registers makes a verification
/// dearer than without the cache. Parse failures are kept too.
pub struct KeyCache {
    slots: Box<[Mutex<Option<CachedKey>>]>,
}

type CachedKey = (
    [u8; 32],
    Result<ed25519_dalek::VerifyingKey, SignatureError>,
);

/// Slots of a [`KeyCache`]: a few hundred twins in use at once fit; about 60 KiB.
const KEY_SLOTS: usize = 256;

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache {
            slots: (0..KEY_SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache").finish_non_exhaustive()
    }
}

impl KeyCache {
    /// The parsed ed25519 key of `bytes`, or why it is not one anybody may verify with
    /// (not a point, or weak: see [`verify_raw`]).
    fn ed25519(&self, bytes: &[u8; 32]) -> Result<ed25519_dalek::VerifyingKey, SignatureError> {
        let lead = u64::from_le_bytes(bytes[..8].try_into().expect("8 of 32 bytes"));
        let slot = &self.slots[(lead % KEY_SLOTS as u64) as usize];
        // A poisoned slot still holds a whole entry (it is replaced in one store).
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached, parsed)) = slot.as_ref() {
            if cached == bytes {
                return parsed.clone();
            }
        }
        let parsed = parse_ed25519_key(bytes);
        *slot = Some((*bytes, parsed.clone()));
        parsed
    }
}

/// An ed25519 public key anybody may verify with: a point, and not a weak one.
fn parse_ed25519_key(bytes: &[u8; 32]) -> Result<ed25519_dalek::VerifyingKey, SignatureError> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(bytes)
        .map_err(|_| SignatureError::BadPublicKey(KeyType::Ed25519))?;
    if key.is_weak() {
        return Err(SignatureError::WeakPublicKey(KeyType::Ed25519));
    }
    Ok(key)
}

/// Verifies an untyped 64-byte signature made with a known key type.
///
/// Weak keys are refused before any signature check: for the ed25519 identity and the
/// other small-order points, and for the ristretto identity (sr25519), a signature with
/// R = identity and s = 0 verifies for (nearly) every message under both libraries'
/// checks, so a twin registered with such a key is one everyone can sign as. No key
/// derived from a secret is weak; node-registrar and the other clients do not refuse
/// them, so the check is here, where every signature (envelopes, JWTs, registrar
/// proofs) is verified.
pub fn verify_raw(
    key_type: KeyType,
    public_key: &[u8],
    message: &[u8],
    raw: &[u8],
) -> Result<(), SignatureError> {
    let public_key: &[u8; 32] = public_key
        .try_into()
        .map_err(|_| SignatureError::BadPublicKeyLength(public_key.len()))?;
    let raw: &[u8; 64] = raw
        .try_into()
        .map_err(|_| SignatureError::BadLength(raw.len() + 1))?;
    let mismatch = SignatureError::Mismatch(key_type);
    match key_type {
        KeyType::Ed25519 => {
            let key = parse_ed25519_key(public_key)?;
            key.verify(message, &ed25519_dalek::Signature::from_bytes(raw))
                .map_err(|_| mismatch)
        }
        KeyType::Sr25519 => {
            // The group is of prime order: its identity, encoded as 32 zero bytes (the
            // only encoding ristretto decodes it from), is the one weak key.
            if public_key == &[0u8; 32] {
                return Err(SignatureError::WeakPublicKey(key_type));
            }
            let key = schnorrkel::PublicKey::from_bytes(public_key)
                .map_err(|_| SignatureError::BadPublicKey(key_type))?;
            let sig = schnorrkel::Signature::from_bytes(raw).map_err(|_| mismatch.clone())?;
            key.verify_simple(SR25519_CONTEXT, message, &sig)
                .map_err(|_| mismatch)
        }
    }
}

/// One signature to check in [`verify_many`]: the same arguments as [`verify`].
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    pub public_key: &'a [u8],
    pub message: &'a [u8],
    pub signature: &'a [u8],
}

/// Fewest ed25519 signatures worth a batch: below it, one by one is as fast.
const MIN_BATCH: usize = 4;

/// [`verify`] for many signatures at once, one result per check, in order; each result
/// is what [`verify`] would say of that check alone, except that a batch of ed25519
/// signatures is checked with ed25519-dalek's batch verification (about half the cost
/// per signature for tens of them). A failed batch is re-checked one by one, so one bad
/// signature costs its batch twice but never fails the good ones.
///
/// Batch verification checks the cofactored equation, single verification the
/// cofactorless one: they can disagree only on signatures built with small-order
/// components, which nobody can make for a key without its secret. A twin with a
/// crafted key of its own could get such an envelope through (it can sign validly in
/// any case); nobody can get one through under another twin's key.
pub fn verify_many(checks: &[Check<'_>]) -> Vec<Result<(), SignatureError>> {
    verify_many_with(checks, None)
}

/// [`verify_many`], with ed25519 public keys parsed through `cache`.
pub fn verify_many_cached(
    checks: &[Check<'_>],
    cache: &KeyCache,
) -> Vec<Result<(), SignatureError>> {
    verify_many_with(checks, Some(cache))
}

fn verify_many_with(
    checks: &[Check<'_>],
    cache: Option<&KeyCache>,
) -> Vec<Result<(), SignatureError>> {
    let mut results: Vec<Result<(), SignatureError>> = Vec::with_capacity(checks.len());
    // Ed25519 checks that parse, by index, with their parsed parts.
    let mut batch: Vec<(usize, ed25519_dalek::VerifyingKey, ed25519_dalek::Signature)> = Vec::new();
    for (i, c) in checks.iter().enumerate() {
        match parse_ed25519(c, cache) {
            Some(Ok((key, sig))) => {
                batch.push((i, key, sig));
                results.push(Ok(()));
            }
            Some(Err(e)) => results.push(Err(e)),
            None => results.push(verify(c.public_key, c.message, c.signature)),
        }
    }
    if batch.len() < MIN_BATCH {
        for (i, key, sig) in &batch {
            results[*i] = single_ed25519(key, checks[*i].message, sig);
        }
        return results;
    }
    let messages: Vec<&[u8]> = batch.iter().map(|(i, _, _)| checks[*i].message).collect();
    let signatures: Vec<_> = batch.iter().map(|(_, _, sig)| *sig).collect();
    let keys: Vec<_> = batch.iter().map(|(_, key, _)| *key).collect();
    if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_err() {
        for (i, key, sig) in &batch {
            results[*i] = single_ed25519(key, checks[*i].message, sig);
        }
    }
    results
}

/// The parsed key and signature of an ed25519 check; `None`: not ed25519 (or not
/// well-formed enough to say: [`verify`] gives the error).
#[allow(clippy::type_complexity)]
fn parse_ed25519(
    c: &Check<'_>,
    cache: Option<&KeyCache>,
) -> Option<Result<(ed25519_dalek::VerifyingKey, ed25519_dalek::Signature), SignatureError>> {
    if c.signature.len() != SIGNATURE_LEN
        || KeyType::from_type_byte(c.signature[0]) != Some(KeyType::Ed25519)
    {
        return None;
    }
    let public_key: &[u8; 32] = match c.public_key.try_into() {
        Ok(k) => k,
        Err(_) => return Some(Err(SignatureError::BadPublicKeyLength(c.public_key.len()))),
    };
    let raw: &[u8; 64] = c.signature[1..].try_into().ok()?;
    // Weak keys are refused here too: a batch would pass the R = identity, s = 0
    // signature that `verify` refuses.
    let key = match cache {
        Some(cache) => cache.ed25519(public_key),
        None => parse_ed25519_key(public_key),
    };
    Some(key.map(|key| (key, ed25519_dalek::Signature::from_bytes(raw))))
}

fn single_ed25519(
    key: &ed25519_dalek::VerifyingKey,
    message: &[u8],
    sig: &ed25519_dalek::Signature,
) -> Result<(), SignatureError> {
    key.verify(message, sig)
        .map_err(|_| SignatureError::Mismatch(KeyType::Ed25519))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Signer;

    fn signer(seed: u8, key_type: KeyType) -> Signer {
        Signer::from_seed(&[seed; 32], key_type).unwrap()
    }

    #[test]
    fn the_key_cache_gives_the_answers_verify_gives() {
        let cache = KeyCache::default();
        // More keys than slots, each used twice: hits, misses and replaced slots.
        let signers: Vec<Signer> = (0..300u16)
            .map(|i| {
                let mut seed = [0u8; 32];
                seed[..2].copy_from_slice(&i.to_le_bytes());
                Signer::from_seed(&seed, KeyType::Ed25519).unwrap()
            })
            .collect();
        for _ in 0..2 {
            for (i, s) in signers.iter().enumerate() {
                let key = s.public_key();
                let good = s.sign(b"m");
                let by_another = signers[(i + 1) % signers.len()].sign(b"m");
                assert_eq!(verify_cached(&cache, &key, b"m", &good), Ok(()));
                assert_eq!(
                    verify_cached(&cache, &key, b"m", &by_another),
                    verify(&key, b"m", &by_another)
                );
                assert!(verify_cached(&cache, &key, b"other", &good).is_err());
            }
        }
        // Bytes that are no point: refused the same way, cached or not.
        let not_a_point = (0u8..=255)
            .map(|b| [b; 32])
            .find(|k| ed25519_dalek::VerifyingKey::from_bytes(k).is_err())
            .expect("some repeated byte is no point");
        let sig = signers[0].sign(b"m");
        for _ in 0..2 {
            assert_eq!(
                verify_cached(&cache, &not_a_point, b"m", &sig),
                Err(SignatureError::BadPublicKey(KeyType::Ed25519))
            );
        }
        assert_eq!(
            verify(&not_a_point, b"m", &sig),
            Err(SignatureError::BadPublicKey(KeyType::Ed25519))
        );
    }

    #[test]
    fn many_agrees_with_one_by_one_and_finds_the_bad_ones() {
        let signers: Vec<Signer> = (0..20)
            .map(|i| {
                signer(
                    i,
                    if i % 5 == 0 {
                        KeyType::Sr25519
                    } else {
                        KeyType::Ed25519
                    },
                )
            })
            .collect();
        let messages: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 16]).collect();
        let mut signatures: Vec<Vec<u8>> = signers
            .iter()
            .zip(&messages)
            .map(|(s, m)| s.sign(m).to_vec())
            .collect();
        let keys: Vec<[u8; 32]> = signers.iter().map(|s| s.public_key()).collect();
        // A flipped bit in one ed25519 signature, one sr25519 signature and one
        // message signed by the wrong key; a truncated signature and a bad type byte.
        signatures[3][10] ^= 1;
        signatures[10][10] ^= 1;
        signatures[7] = signers[8].sign(&messages[7]).to_vec();
        signatures[12].truncate(30);
        signatures[13][0] = b'x';
        let checks: Vec<Check> = (0..20)
            .map(|i| Check {
                public_key: &keys[i],
                message: &messages[i],
                signature: &signatures[i],
            })
            .collect();
        let many = verify_many(&checks);
        let one_by_one: Vec<_> = checks
            .iter()
            .map(|c| verify(c.public_key, c.message, c.signature))
            .collect();
        assert_eq!(many, one_by_one);
        let bad: Vec<usize> = (0..20).filter(|i| many[*i].is_err()).collect();
        assert_eq!(bad, [3, 7, 10, 12, 13]);
    }

    #[test]
    fn a_batch_of_good_signatures_passes_and_a_short_key_is_refused() {
        let s = signer(1, KeyType::Ed25519);
        let sig = s.sign(b"m").to_vec();
        let key = s.public_key();
        let mut checks = vec![
            Check {
                public_key: &key,
                message: b"m",
                signature: &sig,
            };
            8
        ];
        assert!(verify_many(&checks).iter().all(Result::is_ok));
        checks[2].public_key = &key[..31];
        let results = verify_many(&checks);
        assert_eq!(results[2], Err(SignatureError::BadPublicKeyLength(31)));
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 7);
    }
}

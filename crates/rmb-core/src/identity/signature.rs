//! Verification of the 65-byte typed signatures: one type byte (`e`/`s`) + 64 bytes.

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
            let key = ed25519_dalek::VerifyingKey::from_bytes(public_key)
                .map_err(|_| SignatureError::BadPublicKey(key_type))?;
            if key.is_weak() {
                return Err(SignatureError::WeakPublicKey(key_type));
            }
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

//! End-to-end encryption (§4.1): a secp256k1 key derived from the twin's secret,
//! ECDH with the peer's public key → sha256 of the x-coordinate → AES-256-GCM with a
//! random 12-byte nonce written in front of the ciphertext.

use aes_gcm::aead::Aead;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use k256::elliptic_curve::sec1::ToEncodedPoint;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::identity::{parse_secret, IdentityError};

/// Length of the nonce prefix.
pub const NONCE_LEN: usize = 12;
/// Length of a compressed secp256k1 public key.
pub const PUBLIC_KEY_LEN: usize = 33;
/// AES-GCM tag length appended to the ciphertext.
pub const TAG_LEN: usize = 16;

/// Why an e2e operation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum E2eError {
    #[error(transparent)]
    Secret(#[from] IdentityError),
    #[error("e2e keys need a plain mnemonic or 0x seed: derivation paths and passwords are not supported")]
    DerivedSecret,
    #[error("the secret is not a valid secp256k1 key")]
    InvalidSecret,
    #[error(
        "e2e public key must be a {PUBLIC_KEY_LEN}-byte compressed secp256k1 point, got {0} bytes"
    )]
    BadPublicKeyLength(usize),
    #[error("e2e public key is not a valid secp256k1 point")]
    BadPublicKey,
    #[error("ciphertext of {0} bytes is too short (needs a {NONCE_LEN}-byte nonce and a {TAG_LEN}-byte tag)")]
    TooShort(usize),
    #[error("decryption failed: wrong key or corrupted ciphertext")]
    DecryptFailed,
}

/// A twin's e2e key pair. The secret scalar is zeroized on drop by `k256`.
#[derive(Clone)]
pub struct E2eKey {
    secret: k256::SecretKey,
}

impl E2eKey {
    /// The e2e key of a secret string: for a mnemonic, its substrate mini-secret; for a
    /// `0x` seed, the seed bytes. Derivation paths are refused, like the reference does.
    pub fn from_secret(secret: &str) -> Result<Self, E2eError> {
        let parsed = parse_secret(secret)?;
        if !parsed.is_plain() {
            return Err(E2eError::DerivedSecret);
        }
        Self::from_bytes(&parsed.seed)
    }

    pub fn from_bytes(secret: &[u8; 32]) -> Result<Self, E2eError> {
        let secret = k256::SecretKey::from_slice(secret).map_err(|_| E2eError::InvalidSecret)?;
        Ok(E2eKey { secret })
    }

    /// The compressed public key to register as `rmb_enc_key`.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        let point = self.secret.public_key().to_encoded_point(true);
        point
            .as_bytes()
            .try_into()
            .expect("compressed point is 33 bytes")
    }

    /// The AES key shared with the owner of `their_public_key` (same from both sides).
    pub fn shared_key(&self, their_public_key: &[u8]) -> Result<SharedKey, E2eError> {
        let theirs = parse_public_key(their_public_key)?;
        let shared =
            k256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), theirs.as_affine());
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&Sha256::digest(shared.raw_secret_bytes()));
        Ok(SharedKey::from_bytes(&key))
    }

    /// Encrypts for `their_public_key` with a fresh random nonce.
    pub fn encrypt(&self, their_public_key: &[u8], plain: &[u8]) -> Result<Vec<u8>, E2eError> {
        Ok(self.shared_key(their_public_key)?.encrypt(plain))
    }

    /// Decrypts what `their_public_key`'s owner encrypted for us.
    pub fn decrypt(&self, their_public_key: &[u8], cipher: &[u8]) -> Result<Vec<u8>, E2eError> {
        self.shared_key(their_public_key)?.decrypt(cipher)
    }
}

impl std::fmt::Debug for E2eKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2eKey")
            .field("public_key", &hex::encode(self.public_key()))
            .finish_non_exhaustive()
    }
}

/// Checks that bytes are a compressed secp256k1 public key (what the registrar stores).
pub fn parse_public_key(bytes: &[u8]) -> Result<k256::PublicKey, E2eError> {
    if bytes.len() != PUBLIC_KEY_LEN {
        return Err(E2eError::BadPublicKeyLength(bytes.len()));
    }
    // Only the compressed tags: k256 would also take 0x05 ("compact") for 33 bytes.
    if !matches!(bytes[0], 0x02 | 0x03) {
        return Err(E2eError::BadPublicKey);
    }
    k256::PublicKey::from_sec1_bytes(bytes).map_err(|_| E2eError::BadPublicKey)
}

/// A ready AES-256-GCM key for one pair of twins. Deriving it costs an ECDH, so callers
/// that talk to the same twin repeatedly should keep it.
#[derive(Clone)]
pub struct SharedKey {
    key: Zeroizing<[u8; 32]>,
    cipher: Aes256Gcm,
}

impl SharedKey {
    pub fn from_bytes(key: &[u8; 32]) -> Self {
        SharedKey {
            key: Zeroizing::new(*key),
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// `nonce ‖ ciphertext ‖ tag` with a random nonce.
    pub fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        self.encrypt_with_nonce(&nonce, plain)
    }

    /// Deterministic variant for known-answer tests. Never reuse a nonce in production.
    pub fn encrypt_with_nonce(&self, nonce: &[u8; NONCE_LEN], plain: &[u8]) -> Vec<u8> {
        let body = self
            .cipher
            .encrypt(Nonce::from_slice(nonce), plain)
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + body.len());
        out.extend_from_slice(nonce);
        out.extend_from_slice(&body);
        out
    }

    pub fn decrypt(&self, cipher: &[u8]) -> Result<Vec<u8>, E2eError> {
        if cipher.len() < NONCE_LEN + TAG_LEN {
            return Err(E2eError::TooShort(cipher.len()));
        }
        let (nonce, body) = cipher.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), body)
            .map_err(|_| E2eError::DecryptFailed)
    }
}

impl std::fmt::Debug for SharedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedKey(..)")
    }
}

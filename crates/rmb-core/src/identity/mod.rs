//! Identities: the twin's signing key (ed25519 or sr25519) built from one secret
//! string, and verification of the 65-byte typed signatures of PROTOCOL.md §1.

mod derive;
mod secret;
mod signature;

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::Signer as _;
use schnorrkel::{ExpansionMode, MiniSecretKey};
use zeroize::Zeroizing;

pub(crate) use secret::parse as parse_secret;
pub use secret::{generate_mnemonic, DEV_PHRASE};
pub use signature::{
    verify, verify_cached, verify_many, verify_many_cached, verify_raw, Check, KeyCache,
    SignatureError, SIGNATURE_LEN,
};

use secret::Junction;

/// The signing context substrate (and so every RMB client) uses for sr25519.
pub const SR25519_CONTEXT: &[u8] = b"substrate";

/// Why a secret or key type was refused. Messages never contain the secret itself.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("invalid mnemonic: {0} (expected 12-24 English BIP-39 words, or 0x followed by 64 hex digits)")]
    BadMnemonic(String),
    #[error("invalid hex seed: {0}")]
    BadHexSeed(String),
    #[error("a derivation path has an empty junction (use //name or /name)")]
    EmptyJunction,
    #[error("a password (///...) applies only to a mnemonic, not to a 0x seed")]
    PasswordWithHexSeed,
    #[error("ed25519 keys support only hard derivation (//name), not soft (/name)")]
    SoftDerivationEd25519,
    #[error("unknown key type {0:?}: expected \"ed25519\" or \"sr25519\"")]
    UnknownKeyType(String),
    #[error("a mnemonic has 12, 15, 18, 21 or 24 words, not {0}")]
    BadWordCount(usize),
    #[error("the secret is not a valid key for this curve")]
    InvalidKey,
}

/// Which signature scheme a twin's key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyType {
    Ed25519,
    /// The default, as in the original rmb-peer.
    #[default]
    Sr25519,
}

impl KeyType {
    /// The first byte of a signature made with this key type (§1).
    pub const fn type_byte(self) -> u8 {
        match self {
            KeyType::Ed25519 => b'e',
            KeyType::Sr25519 => b's',
        }
    }

    pub const fn from_type_byte(byte: u8) -> Option<Self> {
        match byte {
            b'e' => Some(KeyType::Ed25519),
            b's' => Some(KeyType::Sr25519),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ed25519",
            KeyType::Sr25519 => "sr25519",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ed25519" => Ok(KeyType::Ed25519),
            "sr25519" => Ok(KeyType::Sr25519),
            _ => Err(IdentityError::UnknownKeyType(s.to_string())),
        }
    }
}

/// A twin's signing key. Secret material is zeroized on drop by the underlying crates;
/// `Debug` shows only the key type and public key.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
}

#[derive(Clone)]
enum SigningKey {
    Ed25519(ed25519_dalek::SigningKey),
    Sr25519(schnorrkel::Keypair),
}

impl Signer {
    /// Builds the signer from a secret string: mnemonic, `0x` seed, optional junctions
    /// (`//hard`, `/soft` for sr25519) and optional `///password`.
    pub fn from_secret(secret: &str, key_type: KeyType) -> Result<Self, IdentityError> {
        let parsed = parse_secret(secret)?;
        match key_type {
            KeyType::Ed25519 => {
                let mut seed = parsed.seed.clone();
                for junction in &parsed.path {
                    match junction {
                        Junction::Hard(cc) => seed = derive::ed25519_hard(&seed, cc),
                        Junction::Soft(_) => return Err(IdentityError::SoftDerivationEd25519),
                    }
                }
                Ok(Self::ed25519_from_seed(&seed))
            }
            KeyType::Sr25519 => {
                let mut pair = sr25519_from_seed(&parsed.seed)?;
                for junction in &parsed.path {
                    pair = match junction {
                        Junction::Hard(cc) => pair
                            .secret
                            .hard_derive_mini_secret_key(
                                Some(schnorrkel::derive::ChainCode(*cc)),
                                b"",
                            )
                            .0
                            .expand_to_keypair(ExpansionMode::Ed25519),
                        Junction::Soft(cc) => {
                            use schnorrkel::derive::Derivation;
                            pair.derived_key_simple(schnorrkel::derive::ChainCode(*cc), [])
                                .0
                        }
                    };
                }
                Ok(Signer {
                    key: SigningKey::Sr25519(pair),
                })
            }
        }
    }

    /// A signer straight from a 32-byte seed (ed25519 seed or sr25519 mini-secret).
    pub fn from_seed(seed: &[u8; 32], key_type: KeyType) -> Result<Self, IdentityError> {
        match key_type {
            KeyType::Ed25519 => Ok(Self::ed25519_from_seed(seed)),
            KeyType::Sr25519 => Ok(Signer {
                key: SigningKey::Sr25519(sr25519_from_seed(seed)?),
            }),
        }
    }

    fn ed25519_from_seed(seed: &[u8; 32]) -> Self {
        Signer {
            key: SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(seed)),
        }
    }

    pub fn key_type(&self) -> KeyType {
        match self.key {
            SigningKey::Ed25519(_) => KeyType::Ed25519,
            SigningKey::Sr25519(_) => KeyType::Sr25519,
        }
    }

    /// The 32-byte public key registered for the twin.
    pub fn public_key(&self) -> [u8; 32] {
        match &self.key {
            SigningKey::Ed25519(k) => k.verifying_key().to_bytes(),
            SigningKey::Sr25519(k) => k.public.to_bytes(),
        }
    }

    /// Signs `message` and returns the 65-byte typed signature (type byte + 64 bytes).
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let raw = match &self.key {
            SigningKey::Ed25519(k) => k.sign(message).to_bytes(),
            SigningKey::Sr25519(k) => k.sign_simple(SR25519_CONTEXT, message).to_bytes(),
        };
        let mut out = [0u8; SIGNATURE_LEN];
        out[0] = self.key_type().type_byte();
        out[1..].copy_from_slice(&raw);
        out
    }
}

fn sr25519_from_seed(seed: &[u8; 32]) -> Result<schnorrkel::Keypair, IdentityError> {
    let mini = Zeroizing::new(seed.to_vec());
    Ok(MiniSecretKey::from_bytes(&mini)
        .map_err(|_| IdentityError::InvalidKey)?
        .expand_to_keypair(ExpansionMode::Ed25519))
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key_type", &self.key_type())
            .field("public_key", &hex::encode(self.public_key()))
            .finish_non_exhaustive()
    }
}

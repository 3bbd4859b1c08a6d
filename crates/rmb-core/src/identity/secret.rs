//! Parsing one secret string the way substrate's `Pair::from_string` does:
//! `<phrase or 0x seed><junctions>[///password]`.
//!
//! Every intermediate buffer that holds secret bytes is `Zeroizing`, and no error
//! message ever repeats the secret: errors say which part was wrong, never its value.

use bip39::{Language, Mnemonic};
use sha2::Sha512;
use zeroize::Zeroizing;

use super::derive::{junction_chain_code, ChainCode};
use super::IdentityError;

/// The well-known substrate development phrase; `//Alice` means this phrase + `//Alice`.
pub const DEV_PHRASE: &str =
    "bottom drive obey lake curtain smoke basket hold race lonely fit walk";

/// One derivation step: `//hard` or `/soft`, already encoded as a 32-byte chain code.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Junction {
    Hard(ChainCode),
    Soft(ChainCode),
}

/// A secret string split into its root seed and derivation path.
pub(crate) struct ParsedSecret {
    /// The ed25519 seed / sr25519 mini-secret before any junction is applied.
    pub seed: Zeroizing<[u8; 32]>,
    pub path: Vec<Junction>,
    pub has_password: bool,
}

impl ParsedSecret {
    /// True when the string is a bare mnemonic or `0x` seed: no junctions, no password.
    /// Only such secrets have an e2e key (the reference refuses the others too).
    pub(crate) fn is_plain(&self) -> bool {
        self.path.is_empty() && !self.has_password
    }
}

pub(crate) fn parse(secret: &str) -> Result<ParsedSecret, IdentityError> {
    // Secrets often come from files with a trailing newline.
    let secret = secret.trim();
    let (rest, password) = match secret.find("///") {
        Some(i) => (&secret[..i], Some(&secret[i + 3..])),
        None => (secret, None),
    };
    let phrase_end = rest.find('/').unwrap_or(rest.len());
    let (phrase, path_text) = rest.split_at(phrase_end);
    let phrase = phrase.trim();
    let path = parse_path(path_text)?;
    let phrase = if phrase.is_empty() {
        DEV_PHRASE
    } else {
        phrase
    };

    let seed = if let Some(hex_seed) = phrase.strip_prefix("0x") {
        if password.is_some() {
            return Err(IdentityError::PasswordWithHexSeed);
        }
        parse_hex_seed(hex_seed)?
    } else {
        mini_secret_from_mnemonic(phrase, password.unwrap_or(""))?
    };
    Ok(ParsedSecret {
        seed,
        path,
        has_password: password.is_some(),
    })
}

fn parse_path(mut text: &str) -> Result<Vec<Junction>, IdentityError> {
    let mut path = Vec::new();
    while !text.is_empty() {
        let hard = text.starts_with("//");
        text = &text[if hard { 2 } else { 1 }..];
        let end = text.find('/').unwrap_or(text.len());
        let code = &text[..end];
        if code.is_empty() {
            return Err(IdentityError::EmptyJunction);
        }
        let cc = junction_chain_code(code);
        path.push(if hard {
            Junction::Hard(cc)
        } else {
            Junction::Soft(cc)
        });
        text = &text[end..];
    }
    Ok(path)
}

fn parse_hex_seed(hex_seed: &str) -> Result<Zeroizing<[u8; 32]>, IdentityError> {
    if hex_seed.len() != 64 {
        return Err(IdentityError::BadHexSeed(format!(
            "a 0x seed must have 64 hex digits (32 bytes), this one has {}",
            hex_seed.len()
        )));
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex_seed, &mut seed[..]).map_err(|_| {
        IdentityError::BadHexSeed("a 0x seed may contain only the digits 0-9 and a-f".into())
    })?;
    Ok(seed)
}

/// substrate-bip39: PBKDF2-HMAC-SHA512 over the mnemonic's *entropy* (not its words),
/// salt `"mnemonic" + password`, 2048 rounds; the first 32 bytes are the mini-secret.
fn mini_secret_from_mnemonic(
    phrase: &str,
    password: &str,
) -> Result<Zeroizing<[u8; 32]>, IdentityError> {
    let mnemonic = Mnemonic::parse_in_normalized(Language::English, phrase)
        .map_err(|e| IdentityError::BadMnemonic(e.to_string()))?;
    let (entropy, len) = mnemonic.to_entropy_array();
    let entropy = Zeroizing::new(entropy);
    let salt = Zeroizing::new(format!("mnemonic{password}"));
    let mut out = Zeroizing::new([0u8; 64]);
    pbkdf2::pbkdf2_hmac::<Sha512>(&entropy[..len], salt.as_bytes(), 2048, &mut out[..]);
    let mut seed = Zeroizing::new([0u8; 32]);
    seed.copy_from_slice(&out[..32]);
    Ok(seed)
}

/// A fresh random English mnemonic of `words` words (12, 15, 18, 21 or 24).
pub fn generate_mnemonic(words: usize) -> Result<Zeroizing<String>, IdentityError> {
    if !matches!(words, 12 | 15 | 18 | 21 | 24) {
        return Err(IdentityError::BadWordCount(words));
    }
    let mut entropy = Zeroizing::new([0u8; 32]);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut entropy[..]);
    let mnemonic = Mnemonic::from_entropy_in(Language::English, &entropy[..words / 3 * 4])
        .expect("entropy length is valid for the word count");
    Ok(Zeroizing::new(mnemonic.to_string()))
}

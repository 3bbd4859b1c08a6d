//! The two de-duplication keys (docs/compatibility.md, "Not running a request twice"):
//! relays and receivers remember each envelope they accepted under both and drop a
//! later envelope that matches either.
//!
//! Each key is a 64-bit keyed hash (BLAKE2b-MAC with a secret per process), so entries
//! are fixed-size and nobody who does not know the key can aim collisions at them.

use std::fmt;

use blake2::digest::consts::U8;
use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::Blake2bMac;

use super::fields::EnvelopeFields;
use crate::proto::Address;

/// The secret that seeds both keys. One per process ([`HashKey::random`]); several
/// processes that share a de-duplication memory (relay instances on one Redis) must use
/// the same bytes ([`HashKey::from_bytes`]).
#[derive(Clone)]
pub struct HashKey {
    /// The MAC with the key already absorbed: each use clones it.
    keyed: Blake2bMac<U8>,
}

impl HashKey {
    /// A fresh random key.
    pub fn random() -> Self {
        let mut bytes = [0u8; 64];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        Self::from_bytes(&bytes)
    }

    /// A key from 64 secret bytes.
    pub fn from_bytes(bytes: &[u8; 64]) -> Self {
        let keyed = <Blake2bMac<U8> as KeyInit>::new_from_slice(bytes)
            .expect("64 bytes is BLAKE2b's largest key, never too long");
        HashKey { keyed }
    }

    fn hash(&self, domain: u8, write: impl FnOnce(&mut Blake2bMac<U8>)) -> u64 {
        let mut mac = self.keyed.clone();
        mac.update(&[domain]);
        write(&mut mac);
        u64::from_le_bytes(mac.finalize_fixed().into())
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(..)")
    }
}

const MESSAGE_DOMAIN: u8 = 1;
const SIGNATURE_DOMAIN: u8 = 2;

/// The key of `(kind, source twin, source session, destination twin, destination
/// session, uid)`. The destination is part of it because one uid goes to several
/// destinations in a multi-destination rmb-peer request; the session ids are kept exact
/// (an empty one is not the same as none).
pub fn message_key(key: &HashKey, env: &impl EnvelopeFields) -> u64 {
    key.hash(MESSAGE_DOMAIN, |mac| {
        mac.update(&[env.kind().map_or(0, |k| k.tag())]);
        put_address(mac, env.source());
        put_address(mac, env.destination());
        put_bytes(mac, env.uid());
    })
}

/// The key of `(source twin, signature)`, `None` for an unsigned envelope. Every shift
/// of bytes between fields keeps the signature, so a shifted copy of an envelope already
/// accepted has the same key and is dropped, whatever its uid or kind became.
pub fn signature_key(key: &HashKey, env: &impl EnvelopeFields) -> Option<u64> {
    let signature = env.signature().filter(|s| !s.is_empty())?;
    Some(key.hash(SIGNATURE_DOMAIN, |mac| {
        mac.update(&env.source().map_or(0, |a| a.twin).to_le_bytes());
        put_bytes(mac, signature);
    }))
}

/// Length-prefixed, so no two different field sequences hash the same input.
fn put_bytes(mac: &mut Blake2bMac<U8>, bytes: &[u8]) {
    mac.update(&(bytes.len() as u64).to_le_bytes());
    mac.update(bytes);
}

fn put_address(mac: &mut Blake2bMac<U8>, address: Option<&Address>) {
    mac.update(&address.map_or(0, |a| a.twin).to_le_bytes());
    match address.and_then(|a| a.connection.as_deref()) {
        None => mac.update(&[0]),
        Some(session) => {
            mac.update(&[1]);
            put_bytes(mac, session.as_bytes());
        }
    }
}

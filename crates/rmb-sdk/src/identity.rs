//! A twin's keys from one secret string: the signing key (ed25519/sr25519) and the
//! secp256k1 e2e key, plus a cache of the AES keys shared with other twins (an ECDH per
//! message would dominate the cost of small calls).

use dashmap::DashMap;
use rmb_core::e2e::{E2eError, PUBLIC_KEY_LEN};
use rmb_core::{E2eKey, IdentityError, KeyType, SharedKey, Signer};
use rmb_registrar_client::Twin;

/// Shared keys kept at most; the cache is cleared when it grows past this.
const SHARED_KEY_CACHE: usize = 10_000;

/// Signing and e2e keys of this twin.
pub(crate) struct Identity {
    signer: Signer,
    e2e: Option<E2eKey>,
    shared: DashMap<u32, ([u8; PUBLIC_KEY_LEN], SharedKey)>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("signer", &self.signer)
            .field("e2e", &self.e2e)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Keys from a mnemonic or `0x` seed (with optional derivation junctions). With
    /// `e2e`, the e2e key is derived too; a secret with junctions has none (the reference
    /// refuses them), which is logged and leaves encryption off.
    pub(crate) fn from_secret(
        secret: &str,
        key_type: KeyType,
        e2e: bool,
    ) -> Result<Self, IdentityError> {
        let signer = Signer::from_secret(secret, key_type)?;
        let e2e = if e2e {
            match E2eKey::from_secret(secret) {
                Ok(key) => Some(key),
                Err(e) => {
                    tracing::warn!("end-to-end encryption disabled: {e}");
                    None
                }
            }
        } else {
            None
        };
        Ok(Self::new(signer, e2e))
    }

    pub(crate) fn new(signer: Signer, e2e: Option<E2eKey>) -> Self {
        Identity {
            signer,
            e2e,
            shared: DashMap::new(),
        }
    }

    pub(crate) fn signer(&self) -> &Signer {
        &self.signer
    }

    /// The public e2e key to register, if encryption is on.
    pub(crate) fn e2e_public_key(&self) -> Option<[u8; PUBLIC_KEY_LEN]> {
        self.e2e.as_ref().map(E2eKey::public_key)
    }

    /// The AES key shared with `twin`, or `None` when either side has no e2e key (the
    /// payload then travels in plain text).
    pub(crate) fn shared_key(&self, twin: &Twin) -> Result<Option<SharedKey>, E2eError> {
        let (Some(ours), Some(theirs)) = (&self.e2e, twin.rmb_enc_key) else {
            return Ok(None);
        };
        if let Some(entry) = self.shared.get(&twin.twin_id) {
            if entry.0 == theirs {
                return Ok(Some(entry.1.clone()));
            }
        }
        let key = ours.shared_key(&theirs)?;
        if self.shared.len() >= SHARED_KEY_CACHE {
            self.shared.clear();
        }
        self.shared.insert(twin.twin_id, (theirs, key.clone()));
        Ok(Some(key))
    }
}

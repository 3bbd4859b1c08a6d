//! What a registrar client signs (PROTOCOL.md §5). The server's checks of the same texts
//! live in `rmb_registrar::auth`; both build them with these functions.
//!
//! - create: the ASCII text `<timestamp>:<public_key as sent>`;
//! - update: `X-Auth: <b64("<timestamp>:<twin_id>")>:<b64(signature over that text)>`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rmb_core::Signer;

/// The text an account creation signs: `<timestamp>:<public_key as sent>`.
pub fn create_challenge(timestamp: u64, public_key_text: &str) -> String {
    format!("{timestamp}:{public_key_text}")
}

/// The text an `X-Auth` header signs: `<timestamp>:<twin_id>`.
pub fn x_auth_challenge(timestamp: u64, twin_id: u32) -> String {
    format!("{timestamp}:{twin_id}")
}

/// A raw 64-byte signature (no type byte), as node-registrar and its Go client expect:
/// node-registrar tries ed25519, then sr25519. Our registrar accepts these and typed
/// 65-byte ones.
pub fn sign_raw(signer: &Signer, message: &[u8]) -> [u8; 64] {
    let typed = signer.sign(message);
    let mut raw = [0u8; 64];
    raw.copy_from_slice(&typed[1..]);
    raw
}

/// Builds the `X-Auth` header value for `twin_id` at `timestamp` (raw signature).
pub fn x_auth_header(signer: &Signer, twin_id: u32, timestamp: u64) -> String {
    let challenge = x_auth_challenge(timestamp, twin_id);
    let signature = sign_raw(signer, challenge.as_bytes());
    format!(
        "{}:{}",
        STANDARD.encode(challenge),
        STANDARD.encode(signature)
    )
}

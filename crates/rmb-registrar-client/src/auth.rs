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

/// Builds the `X-Auth` header value for `twin_id` at `timestamp` (typed signature).
pub fn x_auth_header(signer: &Signer, twin_id: u32, timestamp: u64) -> String {
    let challenge = x_auth_challenge(timestamp, twin_id);
    let signature = signer.sign(challenge.as_bytes());
    format!(
        "{}:{}",
        STANDARD.encode(challenge),
        STANDARD.encode(signature)
    )
}

//! What the fuzz targets share: a fixed clock, a fixed key, a fixed hash key.

use std::sync::OnceLock;

use rmb_core::rules::HashKey;

/// "Now" for every target, so runs are reproducible.
pub const NOW: u64 = 1_700_000_000;

/// The ed25519 key of the test vectors' mnemonic (test-vectors/ts-client.json).
pub const PUBLIC_KEY: [u8; 32] = [
    0x61, 0xc2, 0x43, 0x34, 0x62, 0x15, 0xf4, 0xdf, 0xa7, 0x0d, 0x33, 0xaf, 0xfc, 0x5e, 0x56, 0x8a,
    0x52, 0xfb, 0x37, 0x85, 0x9f, 0xf2, 0x12, 0x96, 0xa2, 0x8c, 0xdb, 0x75, 0xfc, 0xc2, 0xfb, 0x55,
];

/// One de-duplication hash key for the whole run.
pub fn hash_key() -> &'static HashKey {
    static KEY: OnceLock<HashKey> = OnceLock::new();
    KEY.get_or_init(|| HashKey::from_bytes(&[5; 64]))
}

/// The error JSON rmb-peer pushes back to the application for input it refused.
pub fn reply_to_app(bad: rmb_peer::translate::BadInput, now: u64) -> String {
    let error = bad.code.with_message(bad.message);
    rmb_peer::translate::error_reply(bad.reference, "7".into(), error, now)
}

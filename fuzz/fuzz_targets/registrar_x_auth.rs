//! An `X-Auth` header as an attacker sends it to the registrar: parse, verify against a
//! key, then the replay guard. Nothing may panic; a forged header never verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmb_registrar::auth::{admit, body_digest, parse_x_auth, ReplayGuard};

const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(x_auth) = parse_x_auth(header) else {
        return;
    };
    // No one holds the secret of this key's twin: nothing the fuzzer writes verifies.
    let verified = x_auth.verify(x_auth.twin_id, &[7u8; 32], NOW, 60, 300);
    assert!(verified.is_err(), "a forged X-Auth header verified");
    let guard = ReplayGuard {
        last_ts: NOW,
        digests: body_digest(b"{}"),
    };
    if let Ok(next) = admit(&guard, x_auth.timestamp, &body_digest(data)) {
        assert!(next.last_ts >= guard.last_ts);
        assert!(admit(&next, x_auth.timestamp, &body_digest(data)).is_err());
    }
});

//! An `X-Auth` header as an attacker sends it to the registrar's PATCH handler: the
//! same three steps `update_account` runs (`parse_x_auth`, `XAuth::verify` with `now`
//! passed in, then the replay guard `admit`). Nothing may panic; a forged header never
//! verifies.
//!
//! A fuzzer cannot forge a signature, so on its own it would never get past the
//! signature check into the time window. For that half, the parsed timestamp and twin id
//! (attacker-chosen, any u64/u32) are signed with a key we hold, by the client's own
//! `x_auth_header`, and verified: the verdict must be exactly the window rule.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rmb_core::{KeyType, Signer};
use rmb_fuzz::NOW;
use rmb_registrar::auth::{admit, body_digest, parse_x_auth, AuthError, ReplayGuard};
use rmb_registrar_client::auth::x_auth_header;

/// The registrar's defaults: `auth_max_age` 60 s, `time_window` 30 s.
const MAX_AGE: u64 = 60;
const SKEW: u64 = 30;

fn signer() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| Signer::from_seed(&[7; 32], KeyType::Ed25519).expect("a fixed seed"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(x_auth) = parse_x_auth(header) else {
        return;
    };
    let key = signer().public_key();
    // No one but us holds this key's secret, and we did not sign these bytes.
    let forged = x_auth.verify(x_auth.twin_id, &key, NOW, MAX_AGE, SKEW);
    assert!(forged.is_err(), "a forged X-Auth header verified");

    // The same timestamp and twin, honestly signed: only the clock decides now.
    let honest = parse_x_auth(&x_auth_header(signer(), x_auth.twin_id, x_auth.timestamp))
        .expect("the client's own header parses");
    assert_eq!(
        (honest.timestamp, honest.twin_id),
        (x_auth.timestamp, x_auth.twin_id)
    );
    let in_window = x_auth.timestamp <= NOW.saturating_add(SKEW)
        && x_auth.timestamp >= NOW.saturating_sub(MAX_AGE);
    match honest.verify(x_auth.twin_id, &key, NOW, MAX_AGE, SKEW) {
        Ok(()) => assert!(in_window, "a header outside the window verified"),
        Err(AuthError::StaleTimestamp { .. }) => assert!(!in_window),
        Err(other) => panic!("an honest header was refused for {other:?}"),
    }
    if let Some(other_twin) = x_auth.twin_id.checked_add(1) {
        assert!(honest.verify(other_twin, &key, NOW, MAX_AGE, SKEW).is_err());
    }

    // The replay guard on an account that accepted one update at NOW, as
    // `update_account` calls it (header digest, body digest, `now`, `max_age`).
    let guard = ReplayGuard {
        last_ts: NOW,
        digests: format!("{NOW}:{}:{}", "0".repeat(16), body_digest(b"{}")),
    };
    let header_digest = x_auth.digest();
    let body = body_digest(data);
    if let Ok(next) = admit(
        &guard,
        x_auth.timestamp,
        &header_digest,
        &body,
        NOW,
        MAX_AGE,
    ) {
        // Inside the window, the same header with the same body never goes through
        // twice (outside it, `verify` refuses the header before `admit` is asked).
        if x_auth.timestamp >= NOW - MAX_AGE {
            assert!(admit(&next, x_auth.timestamp, &header_digest, &body, NOW, MAX_AGE).is_err());
        }
    }
});

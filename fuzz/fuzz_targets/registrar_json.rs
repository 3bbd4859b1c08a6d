//! Registrar JSON as an attacker sends it (to our registrar) or answers it (to our
//! client): the first byte picks the decoder, the rest is the body or query string.
//!
//! - 0: a create body (`decode_create`: JSON, key, relays, e2e key), then its proof of
//!   possession (`verify_create_proof` at a fixed `now`), as `create_account` runs them;
//! - 1: a PATCH body (`decode_update`);
//! - 2: a lookup query string (`decode_lookup`);
//! - 3: an account as a registrar answers it, read as our client reads it (any of
//!   node-registrar's shapes; relays normalised leniently, the e2e key decoded).
//!
//! Nothing may panic, what is accepted must be in canonical form, and no proof the
//! fuzzer wrote may verify (it holds no key's secret).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmb_fuzz::NOW;
use rmb_registrar::api::{decode_create, decode_lookup, decode_update};
use rmb_registrar::auth::verify_create_proof;
use rmb_registrar_client::validate::{self, MAX_RELAYS};
use rmb_registrar_client::wire::AccountJson;

fn assert_canonical(relays: &[String]) {
    assert!(relays.len() <= MAX_RELAYS);
    for relay in relays {
        // A stored relay name reads back as itself.
        assert_eq!(validate::relay(relay).as_deref(), Ok(relay.as_str()));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => {
            if let Ok(create) = decode_create(body) {
                assert_canonical(&create.relays);
                // The registrar's default window, 30 s.
                let proof = verify_create_proof(
                    create.request.timestamp,
                    &create.request.public_key,
                    &create.public_key,
                    &create.request.signature,
                    NOW,
                    30,
                );
                assert!(proof.is_err(), "a proof the fuzzer wrote verified");
            }
        }
        1 => {
            if let Ok(update) = decode_update(body) {
                if let Some(relays) = &update.update.relays {
                    assert_canonical(relays);
                }
            }
        }
        2 => {
            if let Ok(query) = std::str::from_utf8(body) {
                let _ = decode_lookup(query);
            }
        }
        _ => {
            if let Ok(account) = serde_json::from_slice::<AccountJson>(body) {
                assert_canonical(&validate::relays_lenient(&account.relays));
                if let Some(key) = account.rmb_enc_key.as_deref() {
                    let _ = validate::e2e_key(key);
                }
            }
        }
    }
});

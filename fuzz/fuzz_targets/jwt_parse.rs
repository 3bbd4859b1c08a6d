//! Arbitrary text as the query string of a relay connection: parse and verify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmb_core::{jwt, JwtPolicy};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(token) = jwt::parse(text) {
            let _ = token.verify(&[7u8; 32], 1_700_000_000, &JwtPolicy::default());
        }
    }
});

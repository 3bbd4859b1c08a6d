//! Arbitrary bytes as a relay frame: decode, then verify against a fixed key.
//! Nothing may panic, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmb_core::prost::Message;
use rmb_core::{envelope, Envelope};

const PUBLIC_KEY: [u8; 32] = [
    0x61, 0xc2, 0x43, 0x34, 0x62, 0x15, 0xf4, 0xdf, 0xa7, 0x0d, 0x33, 0xaf, 0xfc, 0x5e, 0x56, 0x8a,
    0x52, 0xfb, 0x37, 0x85, 0x9f, 0xf2, 0x12, 0x96, 0xa2, 0x8c, 0xdb, 0x75, 0xfc, 0xc2, 0xfb, 0x55,
];

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::decode(data) {
        let _ = envelope::verify(&env, &PUBLIC_KEY);
        let _ = envelope::ttl(&env, 1_700_000_000);
        let _ = envelope::is_fail_fast(&env);
        if let Some(src) = &env.source {
            let _ = src.to_string().parse::<rmb_core::Address>();
        }
    }
});

//! Arbitrary bytes as a relay frame: decode, then verify against a fixed key, as a
//! receiver does. Nothing may panic, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmb_core::prost::Message;
use rmb_core::rules::Rules;
use rmb_core::{envelope, Envelope};
use rmb_fuzz::{NOW, PUBLIC_KEY};

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::decode(data) {
        let _ = Rules::default().check_envelope(&env, NOW);
        let _ = envelope::verify(&env, &PUBLIC_KEY);
        let _ = envelope::ttl(&env, NOW);
        let _ = envelope::is_fail_fast(&env);
        if let Some(src) = &env.source {
            let _ = src.to_string().parse::<rmb_core::Address>();
        }
    }
});

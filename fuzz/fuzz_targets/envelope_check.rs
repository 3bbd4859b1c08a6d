//! Arbitrary bytes as an envelope a receiver got, through the receiver's
//! checks: rules, destination, keys, challenge, and the SDK's classify/verify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmb_core::prost::Message;
use rmb_core::rules::{check_destination, message_key, signature_key, Rules};
use rmb_core::{envelope, Address, Envelope};
use rmb_fuzz::{hash_key, NOW, PUBLIC_KEY};

/// One cache for the whole run, as a client keeps one.
static KEYS: std::sync::LazyLock<rmb_core::identity::KeyCache> =
    std::sync::LazyLock::new(rmb_core::identity::KeyCache::default);

fuzz_target!(|data: &[u8]| {
    let Ok(env) = Envelope::decode(data) else {
        return;
    };
    let _ = Rules::default().check_envelope(&env, NOW);
    let _ = Rules {
        max_future_skew: u64::MAX,
        max_lifetime: u64::MAX,
        ..Rules::default()
    }
    .check_envelope(&env, u64::MAX);
    let _ = check_destination(&env, &Address::twin(9));
    let _ = message_key(hash_key(), &env);
    let _ = signature_key(hash_key(), &env);
    let _ = envelope::challenge_digest(&env);
    let _ = rmb_sdk::fuzzing::classify(&env);
    let _ = rmb_sdk::fuzzing::verify(&env, &PUBLIC_KEY, NOW, &KEYS);
    // A relay's re-encoding must decode to the same envelope.
    let again = Envelope::decode(&env.encode_to_vec()[..]).expect("re-encoded envelope decodes");
    assert_eq!(again, env);
});

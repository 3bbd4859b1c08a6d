//! Arbitrary bytes as a relay frame, read the way a relay reads every frame: the
//! zero-copy header, the rules, the two de-duplication keys. Where the same bytes also
//! decode as a full envelope, both views must get the same verdict and the same keys
//! (relays and receivers decide alike).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmb_core::prost::Message;
use rmb_core::proto::EnvelopeHeader;
use rmb_core::rules::{message_key, signature_key, Rules};
use rmb_core::Envelope;
use rmb_fuzz::{hash_key, NOW};

fuzz_target!(|data: &[u8]| {
    let Ok(header) = EnvelopeHeader::decode(bytes::Bytes::copy_from_slice(data)) else {
        return;
    };
    let rules = Rules::default();
    let verdict = rules.check_header(&header, NOW);
    let keys = (
        message_key(hash_key(), &header),
        signature_key(hash_key(), &header),
    );
    let _ = header.uid_text();
    let _ = header.tags_text();
    if let Ok(env) = Envelope::decode(data) {
        assert_eq!(verdict, rules.check_envelope(&env, NOW));
        assert_eq!(
            keys,
            (
                message_key(hash_key(), &env),
                signature_key(hash_key(), &env)
            )
        );
    }
});

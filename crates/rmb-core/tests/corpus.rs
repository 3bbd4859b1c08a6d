//! The malformed-envelope corpus (crates/rmb-relay/tests/corpus/protobuf) through every
//! decoder of untrusted bytes: nothing panics, `undecodable-*` inputs are refused by
//! the envelope decoder, and whatever decodes fails signature verification.
//! Crash inputs found by the fuzz targets (fuzz/) belong in that directory too.

use std::path::PathBuf;

#[path = "../../rmb-relay/tests/corpus/load.rs"]
mod load;

use rmb_core::prost::Message as _;
use rmb_core::proto::{Backlog, EnvelopeHeader};
use rmb_core::{envelope, jwt, Address, Envelope, JwtPolicy, KeyType, Signer};

fn corpus() -> Vec<(String, Vec<u8>)> {
    load::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../rmb-relay/tests/corpus/protobuf"),
        20,
    )
}

#[test]
fn malformed_envelopes_are_refused_without_panicking() {
    let signer = Signer::from_seed(&[7; 32], KeyType::Ed25519).unwrap();
    let keys = [signer.public_key(), [0u8; 32]];
    for (name, data) in corpus() {
        let decoded = Envelope::decode(&data[..]);
        if name.starts_with("undecodable-") {
            assert!(decoded.is_err(), "{name} decoded: {decoded:?}");
        } else {
            assert!(
                name.starts_with("unverifiable-"),
                "unexpected corpus file {name}"
            );
            let env = decoded.unwrap_or_else(|e| panic!("{name} should decode: {e}"));
            for key in &keys {
                assert!(envelope::verify(&env, key).is_err(), "{name} verified");
            }
            // The rest of what a receiver computes from it must not panic either.
            let _ = envelope::ttl(&env, u64::MAX);
            let _ = envelope::is_fail_fast(&env);
            let _ = envelope::challenge(&env);
            if let Some(source) = &env.source {
                let _ = source.to_string().parse::<Address>();
            }
        }
        // The relay's zero-copy header and the peer's backlog decoder.
        let _ = EnvelopeHeader::decode(bytes::Bytes::from(data.clone()));
        let _ = Backlog::decode(&data[..]);
        let _ = Address::decode(&data[..]);
        // The same bytes as a connection token.
        let token = String::from_utf8_lossy(&data);
        if let Ok(parsed) = jwt::parse(&token) {
            let verified = parsed.verify(&keys[0], 1_700_000_000, &JwtPolicy::default());
            assert!(verified.is_err(), "{name} verified as a JWT");
        }
    }
}

//! Arbitrary bytes as the body of a federation POST (PROTOCOL.md §3.3), through the
//! relay's pure steps: decode, header and rules, source and destination, deadline,
//! signature, routing classification, and the pong a relay would build for a ping.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmb_core::prost::Message;
use rmb_core::proto::EnvelopeHeader;
use rmb_core::rules::Rules;
use rmb_core::{envelope, Envelope};
use rmb_fuzz::{NOW, PUBLIC_KEY};
use rmb_relay::route;
use rmb_relay::session_key::SessionKey;

fuzz_target!(|data: &[u8]| {
    let body = bytes::Bytes::copy_from_slice(data);
    if let Ok(header) = EnvelopeHeader::decode(body.clone()) {
        let rules = Rules::default();
        let _ = rules.check_header(&header, NOW);
        // A federation post's source is proven by its signature, then forwarded.
        let _ = route::forward(&header, &rules, NOW);
        if let Some(source) = &header.source {
            let session = SessionKey::of(source);
            let _ = route::classify(&header, &session, &rules, NOW);
            let _ = SessionKey::parse(&session.to_string());
        }
        let _ = route::header_is_request(&header);
    }
    let Ok(env) = Envelope::decode(&body[..]) else {
        return;
    };
    let _ = Rules::default().check_envelope(&env, NOW);
    if let Some(destination) = &env.destination {
        let key = SessionKey::of(destination);
        let _ = SessionKey::parse(&key.to_string());
        let _ = route::pong(&env, &key);
        let _ = route::error_envelope(&env.uid, &key, "reason".into(), NOW);
    }
    let _ = env.timestamp.saturating_add(env.expiration);
    let _ = envelope::ttl(&env, NOW);
    let _ = envelope::verify(&env, &PUBLIC_KEY);
    let _ = envelope::is_fail_fast(&env);
});

//! Arbitrary bytes as an envelope a remote twin sent to an SDK or rmb-peer: classify,
//! verify, open (decrypting a cipher payload with a fixed shared key), then the JSON
//! rmb-peer pushes to `msgbus.<cmd>` or to the application's `ret` list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmb_core::identity::KeyCache;
use rmb_core::prost::Message;
use rmb_core::{Envelope, SharedKey};
use rmb_fuzz::{NOW, PUBLIC_KEY};
use rmb_peer::translate::{self, Tracked};
use rmb_sdk::fuzzing as incoming;

/// One cache for the whole run, as a client keeps one.
static KEYS: std::sync::LazyLock<KeyCache> = std::sync::LazyLock::new(KeyCache::default);

fuzz_target!(|data: &[u8]| {
    let Ok(env) = Envelope::decode(data) else {
        return;
    };
    let _ = incoming::classify(&env);
    let _ = incoming::verify(&env, &PUBLIC_KEY, NOW, &KEYS);
    let shared = SharedKey::from_bytes(&[9; 32]);
    for key in [None, Some(&shared)] {
        if let Ok(msg) = incoming::open(env.clone(), key) {
            let _ = translate::incoming_request(&msg);
            let request = Tracked {
                uid: msg.uid.clone(),
                reference: Some("ref".into()),
                reply_to: "app.ret".into(),
                command: "cmd".into(),
                destinations: vec![9],
                timestamp: NOW,
                deadline: NOW + 60,
            };
            let _ = translate::incoming_reply(&msg, &request);
        }
    }
});

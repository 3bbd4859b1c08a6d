//! Arbitrary text as a message a service pushed to `msgbus.system.reply` (an outgoing
//! response, PROTOCOL.md §4), through rmb-peer's translation, with and without a known
//! request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmb_core::Address;
use rmb_fuzz::{reply_to_app, NOW};
use rmb_peer::translate::{self, RequestInfo};

fuzz_target!(|data: &[u8]| {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    let me = Address::twin(7);
    let _ = translate::local_reply(json, &me, |_, _| None);
    for deadline in [0, NOW, u64::MAX] {
        let known = RequestInfo {
            schema: Some("application/json".into()),
            deadline,
        };
        if let Err(bad) = translate::local_reply(json, &me, |_, _| Some(known.clone())) {
            let _ = reply_to_app(bad, NOW);
        }
    }
});

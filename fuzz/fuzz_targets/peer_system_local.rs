//! Arbitrary text as a message an application pushed to `msgbus.system.local` (an
//! outgoing request, PROTOCOL.md §4), through rmb-peer's translation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmb_core::Address;
use rmb_fuzz::{reply_to_app, NOW};
use rmb_peer::translate::{self, LocalRequest};

fuzz_target!(|data: &[u8]| {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    for now in [NOW, 0, u64::MAX] {
        let result = translate::local_request(json, "u-1", &Address::twin(7), now);
        if let Err(bad) = &result {
            let _ = reply_to_app(bad.clone(), now);
        }
        if let Ok(LocalRequest::Send(prepared)) = result {
            for out in &prepared.envelopes {
                let _ = out.clone();
            }
        }
    }
});

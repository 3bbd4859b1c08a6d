//! Arbitrary bytes as an entry of the relay's Redis backend (an inbox message, a stream
//! id, or a queued frame): another instance, or anyone who can write to that Redis,
//! chose them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmb_relay::backend::redis::wire;
use rmb_relay::mailbox::StoredId;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = wire::InboxEntry::decode(text);
        if let Some(id) = wire::parse_id(text) {
            assert_eq!(wire::parse_id(&wire::format_id(id)), Some(id));
        }
    }
    let id = StoredId { ms: 1, seq: 1 };
    let _ = wire::decode_stored(id, bytes::Bytes::copy_from_slice(data));
});

//! Arbitrary bytes as an entry of the relay's Redis backend (an inbox message or a
//! queued frame): another instance, or anyone who can write to that Redis, chose them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rmb_relay::backend::redis::decode_entry_for_fuzzing(data);
});

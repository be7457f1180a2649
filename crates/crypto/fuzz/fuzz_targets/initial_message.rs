//! `InitialMessage::from_bytes`: no panics; accepted input round-trips exactly.
#![no_main]

use guardyn_crypto::InitialMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = InitialMessage::from_bytes(data) {
        assert_eq!(msg.to_bytes(), data);
    }
});

//! `Session::from_bytes` (the unsealed session encoding): no panics; accepted input
//! round-trips exactly.
#![no_main]

use guardyn_crypto::Session;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(session) = Session::from_bytes(data) {
        assert_eq!(&session.to_bytes()[..], data);
    }
});

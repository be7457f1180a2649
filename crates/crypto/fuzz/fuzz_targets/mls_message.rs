//! Server-side MLSMessage parser on untrusted bytes: must never panic.
#![no_main]

use guardyn_crypto::mls::parse_message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = parse_message(data) {
        let _ = parsed.check_guardyn_policy();
    }
});

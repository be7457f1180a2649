//! `IdentityKey::from_bytes` and `PublicKey::from_bytes` on arbitrary bytes: no panics, and
//! whatever parses re-serializes to the same bytes.
#![no_main]

use guardyn_crypto::{IdentityKey, PublicKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = IdentityKey::from_bytes(data) {
        assert_eq!(&key.to_bytes()[..], data);
    }
    if let Ok(key) = PublicKey::from_bytes(data) {
        assert_eq!(&key.to_bytes()[..], data);
    }
});

//! Private prekey record decoders (client storage).
#![no_main]

use guardyn_crypto::{KemPreKey, OneTimePreKey, SignedPreKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(k) = SignedPreKey::from_bytes(data) {
        assert_eq!(&k.to_bytes()[..], data);
    }
    if let Ok(k) = OneTimePreKey::from_bytes(data) {
        assert_eq!(&k.to_bytes()[..], data);
    }
    if let Ok(k) = KemPreKey::from_bytes(data) {
        assert_eq!(&k.to_bytes()[..], data);
    }
});

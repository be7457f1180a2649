//! The server's upload check: `KemPublicKey::from_bytes` and `verify_prekey_signature` with the
//! input split into identity key (33), signature (64) and prekey (rest).
#![no_main]

use guardyn_crypto::{KemPublicKey, verify_prekey_signature};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = KemPublicKey::from_bytes(data) {
        assert_eq!(key.to_bytes(), data);
    }
    if data.len() >= 33 + 64 {
        let (identity, rest) = data.split_at(33);
        let (signature, prekey) = rest.split_at(64);
        let _ = verify_prekey_signature(identity, prekey, signature);
    }
});

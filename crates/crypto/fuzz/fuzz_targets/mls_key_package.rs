//! Server-side KeyPackage validation on untrusted uploads: must never panic.
#![no_main]

use guardyn_crypto::mls::{KeyPackagePolicy, validate_key_package};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = validate_key_package(data, &KeyPackagePolicy::default());
});

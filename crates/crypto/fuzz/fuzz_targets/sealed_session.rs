//! `Session::unseal` under a fixed key: no panics on arbitrary sealed blobs.
#![no_main]

use guardyn_crypto::Session;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Session::unseal(data, &[0x42; 32]);
});

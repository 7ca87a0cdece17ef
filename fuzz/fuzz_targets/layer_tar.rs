//! Fuzz target: `rbuild_fuzz::checks::layer_tar`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rbuild_fuzz::checks::layer_tar(data));

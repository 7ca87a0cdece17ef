//! Fuzz target: `rbuild_fuzz::checks::registry_answer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rbuild_fuzz::checks::registry_answer(data));

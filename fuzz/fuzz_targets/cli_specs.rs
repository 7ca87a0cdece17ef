//! Fuzz target: `rbuild_fuzz::checks::cli_specs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rbuild_fuzz::checks::cli_specs(data));

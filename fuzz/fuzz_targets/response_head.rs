//! Fuzz target: see `checks::response_head` and fuzz/README.md.
#![no_main]

#[allow(dead_code)] // each target uses one of the checks
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|d: &[u8]| checks::response_head(d));

//! Fuzz target: see `checks_pp2::proxy_protocol` and fuzz/README.md.
#![no_main]

#[path = "../checks_pp2.rs"]
mod checks_pp2;

libfuzzer_sys::fuzz_target!(|d: &[u8]| checks_pp2::proxy_protocol(d));

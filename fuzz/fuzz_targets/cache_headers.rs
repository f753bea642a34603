#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzz::cache_headers(data));

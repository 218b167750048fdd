#![no_main]
//! Hook validation: any bytes as a hook written by a client.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hookbridge_core::properties::hook_validation(data);
});

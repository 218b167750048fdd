#![no_main]
//! Envelope parsing: any text from the bus.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        hookbridge_core::properties::envelope(text);
    }
});

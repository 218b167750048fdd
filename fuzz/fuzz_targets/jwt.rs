#![no_main]
//! The token check: any bearer token.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        subscription_api::properties::token(token);
    }
});

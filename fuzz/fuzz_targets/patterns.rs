#![no_main]
//! Event-type patterns: a pattern and an event type, separated by the first newline.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (pattern, event_type) = text.split_once('\n').unwrap_or((&text, ""));
    hookbridge_core::properties::pattern(pattern, event_type);
});

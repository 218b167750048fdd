//! Properties the fuzz targets (`fuzz/`) check on hostile input, kept here so every input a
//! fuzzer ever found (`fuzz/regressions/`) is checked again by `make test`.
//!
//! Each function panics when its property fails, which is what a fuzzer reports.

use crate::envelope::Envelope;
use crate::hook::{HookDraft, NetworkPolicy, ValidationContext};
use crate::pattern::EventTypePattern;

/// Parsing any text as a bus envelope never panics, and an envelope that parses
/// re-encodes to bytes that parse to the same envelope.
pub fn envelope(text: &str) {
    let Ok(env) = Envelope::from_bus_json(text, "000000000000", "local") else { return };
    let _ = env.routing();
    let body = env.to_body();
    let again =
        Envelope::from_bus_json(&body, "x", "y").unwrap_or_else(|e| panic!("re-encoded envelope does not parse: {e}"));
    assert_eq!(again.to_body(), body, "re-encoding is not stable");
}

/// The reference semantics of a glob: `*` any run, everything else literal. Exponential,
/// so only for short inputs.
fn reference_match(p: &[u8], t: &[u8]) -> bool {
    match p.split_first() {
        None => t.is_empty(),
        Some((b'*', rest)) => (0..=t.len()).any(|i| reference_match(rest, &t[i..])),
        Some((c, rest)) => t.first() == Some(c) && reference_match(rest, &t[1..]),
    }
}

/// Pattern matching never panics and, on short inputs, agrees with the reference.
pub fn pattern(pattern: &str, text: &str) {
    let Ok(p) = pattern.parse::<EventTypePattern>() else { return };
    let got = p.matches(text);
    if pattern.len() <= 12 && text.len() <= 24 && pattern.matches('*').count() <= 4 {
        assert_eq!(got, reference_match(pattern.as_bytes(), text.as_bytes()), "{pattern:?} vs {text:?}");
    }
}

/// Validating any JSON as a hook never panics; a valid hook's configuration round-trips
/// through its stored form, and holds no secret value.
pub fn hook_validation(json: &[u8]) {
    let Ok(draft) = serde_json::from_slice::<HookDraft>(json) else { return };
    let policy = NetworkPolicy::local();
    let ctx = ValidationContext { network: &policy };
    let Ok((config, secrets)) = draft.validate(ctx, None) else { return };
    let stored = serde_json::to_string(&config).unwrap_or_else(|e| panic!("config does not serialise: {e}"));
    let back: crate::hook::HookConfig =
        serde_json::from_str(&stored).unwrap_or_else(|e| panic!("stored config does not parse: {e}"));
    assert_eq!(back, config, "stored config round trip");
    for s in secrets.all_values() {
        assert!(s.len() < 4 || !stored.contains(s), "a secret value is in the stored configuration");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inputs kept for a fuzz target (`fuzz/regressions/<target>`): the ones a fuzzer
    /// found, and hand-made ones that reach each property's checks. A folder missing or
    /// empty is a failure, not a pass.
    fn regressions(target: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions").join(target);
        let inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap_or_else(|e| panic!("{}: {e}", dir.display())).path())
            .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
            .map(|p| std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            .collect();
        assert!(!inputs.is_empty(), "no inputs in {}", dir.display());
        inputs
    }

    /// Every input kept for each target, checked again; at least one of each reaches the
    /// property's round trip, so the check is not only "does not panic".
    #[test]
    fn fuzz_regressions_still_hold() {
        let envelopes = regressions("envelope");
        for input in &envelopes {
            envelope(&String::from_utf8_lossy(input));
        }
        assert!(
            envelopes.iter().any(|i| Envelope::from_bus_json(&String::from_utf8_lossy(i), "a", "r").is_ok()),
            "an envelope input parses"
        );
        for input in regressions("patterns") {
            let text = String::from_utf8_lossy(&input);
            let (p, t) = text.split_once('\n').unwrap_or((&text, ""));
            pattern(p, t);
        }
        let drafts = regressions("hook_validation");
        for input in &drafts {
            hook_validation(input);
        }
        let policy = NetworkPolicy::local();
        let valid = |i: &Vec<u8>| {
            serde_json::from_slice::<HookDraft>(i)
                .is_ok_and(|d| d.validate(ValidationContext { network: &policy }, None).is_ok())
        };
        assert!(drafts.iter().any(valid), "a hook input is valid");
    }

    #[test]
    fn reference_agrees_on_known_cases() {
        assert!(reference_match(b"admin.CLIENT-*", b"admin.CLIENT-CREATE"));
        assert!(!reference_match(b"a*b", b"ac"));
        pattern("a*b*c", "abbbc");
        pattern("*", "");
    }
}

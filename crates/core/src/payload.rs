//! The body of a delivery in a hook's payload format: the envelope as stored, its `detail`
//! alone, or the `detail` in a one-element array. The `detail` forms leave out the routing
//! keys the platform reads (`tenant`, `site`) and keep every other key, in order, byte for
//! byte, so a receiver gets the producer's event as its product defines it.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::hook::PayloadFormat;

/// The keys the platform routes by, which the `detail` forms leave out.
pub const ROUTING_KEYS: [&str; 2] = ["tenant", "site"];

/// Why a body could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the envelope has no JSON object `detail`: {0}")]
pub struct PayloadError(String);

/// The body of a delivery of `envelope` (the envelope's JSON) in `format`.
pub fn render(format: PayloadFormat, envelope: &str) -> Result<Cow<'_, str>, PayloadError> {
    if format == PayloadFormat::Envelope {
        return Ok(Cow::Borrowed(envelope));
    }
    #[derive(serde::Deserialize)]
    struct Detail<'a> {
        #[serde(borrow)]
        detail: &'a RawValue,
    }
    let d: Detail<'_> = serde_json::from_str(envelope).map_err(|e| PayloadError(e.to_string()))?;
    let detail = without_routing_keys(d.detail)?;
    Ok(Cow::Owned(match format {
        PayloadFormat::DetailArray => format!("[{detail}]"),
        _ => detail,
    }))
}

/// `detail` (a JSON object) without [`ROUTING_KEYS`], the rest as it was.
pub fn without_routing_keys(detail: &RawValue) -> Result<String, PayloadError> {
    let text = detail.get();
    let mut de = serde_json::Deserializer::from_str(text);
    let entries = de.deserialize_map(Entries).map_err(|e| PayloadError(e.to_string()))?;
    let mut out = String::with_capacity(text.len());
    out.push('{');
    // Where the text before each entry's value begins: after the previous value.
    let mut after_previous = 0;
    for (key, value) in &entries {
        let at = offset_in(text, value.get());
        let before = at.map(|at| &text[after_previous.min(at)..at]);
        after_previous = at.map_or(after_previous, |at| at + value.get().len());
        if ROUTING_KEYS.contains(&key.as_str()) {
            continue;
        }
        if out.len() > 1 {
            out.push(',');
        }
        match before.and_then(raw_key) {
            // The key as the producer spelled it (`"caf\u00e9"` stays so, not `"café"`).
            Some(raw) => out.push_str(raw),
            // A key read from JSON always serialises back.
            None => out.push_str(&serde_json::to_string(key).unwrap_or_default()),
        }
        out.push(':');
        out.push_str(value.get());
    }
    out.push('}');
    Ok(out)
}

/// Where `part`, a slice of `whole`, begins in it.
fn offset_in(whole: &str, part: &str) -> Option<usize> {
    let at = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (at + part.len() <= whole.len()).then_some(at)
}

/// The quoted key in the text between one entry's value and the next (`,"key":`): the only
/// string there, from its first quote to its last.
fn raw_key(between: &str) -> Option<&str> {
    let (first, last) = (between.find('"')?, between.rfind('"')?);
    (last > first).then(|| &between[first..=last])
}

/// An object's entries in order, values untouched.
struct Entries;

impl<'de> Visitor<'de> for Entries {
    type Value = Vec<(String, &'de RawValue)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
            out.push((k, v));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENVELOPE: &str = r#"{"version":"0","id":"e1","detail-type":"access.LOGIN","source":"keycloak","account":"1","time":"2026-11-30T00:00:00Z","region":"r","resources":[],"detail":{"tenant":"acme","site":"s1","type":"access.LOGIN","realmId":"acme","details":{"username":"ada","tenant":"kept inside"},"n":1.50}}"#;

    #[test]
    fn the_envelope_is_sent_as_it_is() {
        assert!(matches!(render(PayloadFormat::Envelope, ENVELOPE), Ok(Cow::Borrowed(b)) if b == ENVELOPE));
    }

    #[test]
    fn the_detail_forms_drop_only_the_top_level_routing_keys_and_keep_the_rest_byte_for_byte() {
        let detail =
            r#"{"type":"access.LOGIN","realmId":"acme","details":{"username":"ada","tenant":"kept inside"},"n":1.50}"#;
        assert_eq!(render(PayloadFormat::Detail, ENVELOPE).unwrap(), detail);
        assert_eq!(render(PayloadFormat::DetailArray, ENVELOPE).unwrap(), format!("[{detail}]"));
        let only_routing = r#"{"detail-type":"x","detail":{"tenant":"acme"}}"#;
        assert_eq!(render(PayloadFormat::Detail, only_routing).unwrap(), "{}");
        let escaped = r#"{"detail":{"tenant":"acme","say \"hi\"":"\u00e9"}}"#;
        assert_eq!(render(PayloadFormat::Detail, escaped).unwrap(), r#"{"say \"hi\"":"\u00e9"}"#);
        // Keys as the producer spelled them, escapes and spaces between tokens too; a routing
        // key spelled with an escape is still one.
        let spelled = r#"{"detail":{"caf\u00e9":1, "a\/b" : [ "x" ] ,"ten\u0061nt":"acme","z":{"k":"}"}}}"#;
        assert_eq!(render(PayloadFormat::Detail, spelled).unwrap(), r#"{"caf\u00e9":1,"a\/b":[ "x" ],"z":{"k":"}"}}"#);
    }

    #[test]
    fn an_envelope_without_an_object_detail_is_an_error() {
        assert!(render(PayloadFormat::Detail, r#"{"detail":[1]}"#).is_err());
        assert!(render(PayloadFormat::Detail, r#"{"id":"e"}"#).is_err());
    }
}

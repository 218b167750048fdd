//! A request body into bus entries: each event validated, every field at fault named, and
//! `detail` read once — for its routing keys — then compacted with the tenant (and site)
//! written in front, every other byte as the producer wrote it.

use chrono::{DateTime, Datelike, Timelike, Utc};
use hookbridge_core::envelope::{BusEntry, compact_json};
use hookbridge_core::ids::TenantId;
use hookbridge_core::message::PLATFORM_SOURCE;
use hookbridge_core::validation::{Errors, FieldError};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::ApiError;

/// Most events in one call, as PutEvents takes.
pub const MAX_EVENTS: usize = 10;

/// One event as a producer writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventIn {
    #[serde(rename = "detail-type")]
    detail_type: Option<String>,
    source: Option<String>,
    detail: Option<Box<RawValue>>,
    site: Option<String>,
    id: Option<String>,
    time: Option<String>,
    resources: Option<Vec<String>>,
}

/// The routing keys of a `detail`, read without building the rest of it. Parsed as ingest
/// parses routing (`hookbridge_core::envelope::Routing`): a `detail` that is not an object,
/// or names `tenant` twice, fails here, at the API, not later in ingest.
#[derive(Deserialize)]
struct RoutingKeys<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    tenant: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    site: Option<&'a RawValue>,
}

/// A key that is there, whatever its value: `null` too. Read as `Option`, a `null` was a
/// key left out, so the API wrote its own beside it, and ingest refused the `detail` that
/// named the key twice after the event had been accepted.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue as Deserialize>::deserialize(d).map(Some)
}

/// A validated event: the bus entry and the producer's id, if any.
pub(crate) struct Accepted {
    /// What goes on the bus.
    pub(crate) entry: BusEntry,
    /// The producer's `id`: a 24-hour de-duplication key for this event.
    pub(crate) producer_id: Option<String>,
    /// Its place in the request's array, when the body was one.
    pub(crate) index: Option<usize>,
}

/// What [`printable`] asks of a field, as its refusal says it.
fn text_rule(max: usize) -> String {
    format!("must be 1-{max} bytes without control characters, U+FFFE or U+FFFF")
}

/// Whether `s` is 1 to `max` bytes without control characters, and queueable.
pub(crate) fn printable(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.chars().all(|c| !c.is_control()) && queueable(s)
}

/// The two characters valid in JSON that SQS refuses in a message (it takes U+0009, U+000A,
/// U+000D, U+0020–U+D7FF, U+E000–U+FFFD and above): JSON escapes every other one it could
/// meet, but these two pass through as written, and on AWS their event's whole publish
/// failed with `500` on every try, while the embedded backend delivered it.
const UNQUEUEABLE: [char; 2] = ['\u{FFFE}', '\u{FFFF}'];

/// Whether `s` holds neither of [`UNQUEUEABLE`].
fn queueable(s: &str) -> bool {
    !s.contains(UNQUEUEABLE)
}

/// How deep `detail` may nest: EventBridge takes up to 1,000 levels, but every reader of
/// an envelope that parses it whole (a declared schema's check, a `detail` payload) stops
/// at 128, so a deeper event would be accepted here and then fail there.
const MAX_DETAIL_DEPTH: usize = 100;

/// Why `detail` is not what EventBridge's `PutEvents` takes (it refuses an entry nested
/// too deep, or with an integer outside 64 bits, and the API must refuse it first rather
/// than answer `500` on every try), if it is not. `detail` is valid JSON already: this
/// only walks its tokens, outside strings.
fn bus_shape(detail: &str) -> Option<String> {
    let bytes = detail.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'u') {
                        match unicode_escape(bytes, i) {
                            Ok(length) => {
                                i += length;
                                continue;
                            }
                            Err(why) => return Some(why),
                        }
                    }
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DETAIL_DEPTH {
                    return Some(format!("must nest at most {MAX_DETAIL_DEPTH} levels"));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i + 1 < bytes.len() && matches!(bytes[i + 1], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    i += 1;
                }
                let number = &detail[start..=i];
                if !number.contains(['.', 'e', 'E']) && number.parse::<i64>().is_err() {
                    return Some(format!("holds the integer {number}, outside the 64-bit range the bus takes"));
                }
                if number.parse::<f64>().map_or(true, |f| !f.is_finite()) {
                    return Some(format!("holds the number {number}, past what a 64-bit float holds"));
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// How many bytes the `\u` escape at `at` takes, with the low half that pairs it when it is
/// a high one; or why it stands for half a character (a surrogate not paired): valid JSON
/// text, but no reader that decodes it (ours, a receiver's) takes it. A pair is passed over
/// whole, so a low half the scan reaches has no high half before it: looking back instead
/// took the `\\` of an escaped backslash and the text after it for a high half.
fn unicode_escape(bytes: &[u8], at: usize) -> Result<usize, String> {
    let unit = |i: usize| {
        let hex = bytes.get(i + 2..i + 6)?;
        u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    };
    let is_escape = |i: usize| bytes.get(i) == Some(&b'\\') && bytes.get(i + 1) == Some(&b'u');
    let lone = || Err(r"holds a \u escape of half a character (a surrogate without its pair)".to_owned());
    match unit(at) {
        Some(0xD800..=0xDBFF) if is_escape(at + 6) && unit(at + 6).is_some_and(|u| (0xDC00..=0xDFFF).contains(&u)) => {
            Ok(12)
        }
        Some(0xD800..=0xDFFF) => lone(),
        Some(_) => Ok(6),
        // Not four hex digits: not valid JSON, which `detail` is by now; stepped over as
        // any escape.
        None => Ok(2),
    }
}

/// Splits the body into its events without re-encoding them (their `detail` must reach
/// receivers byte for byte); whether it was an array (field names then say `[i].`).
pub(crate) fn split(bytes: &[u8]) -> Result<(Vec<Box<RawValue>>, bool), ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if crate::body::more_items_than(bytes, MAX_EVENTS) {
        return Err(ApiError::field("body", format!("must hold 1-{MAX_EVENTS} events")));
    }
    let (parsed, array) = match first {
        Some(b'[') => (serde_json::from_slice::<Vec<Box<RawValue>>>(bytes), true),
        Some(b'{') => (serde_json::from_slice::<Box<RawValue>>(bytes).map(|one| vec![one]), false),
        _ => {
            return Err(ApiError::field("body", "must be an event object or an array of events"));
        }
    };
    let events = parsed.map_err(|e| ApiError::field("body", e.to_string()))?;
    if events.is_empty() || events.len() > MAX_EVENTS {
        return Err(ApiError::field("body", format!("must hold 1-{MAX_EVENTS} events")));
    }
    Ok((events, array))
}

/// Writes `tenant` (and `site`) at the front of the producer's `detail`, compacted as the
/// bus would store it so both backends deliver the same bytes, every other byte kept.
pub(crate) fn route_detail(
    detail: &RawValue,
    tenant: &TenantId,
    site: Option<&str>,
    keys: (bool, bool),
) -> Box<RawValue> {
    let (has_tenant, has_site) = keys;
    let compact = compact_json(detail.get());
    let text = compact.as_str();
    let inner = text.strip_prefix('{').unwrap_or(text);
    let mut out = String::with_capacity(text.len() + 64);
    out.push('{');
    let mut added = false;
    if !has_tenant {
        out.push_str(&format!("\"tenant\":{}", Value::String(tenant.to_string())));
        added = true;
    }
    if let (Some(site), false) = (site, has_site) {
        if added {
            out.push(',');
        }
        out.push_str(&format!("\"site\":{}", Value::String(site.to_owned())));
        added = true;
    }
    if added && !inner.starts_with('}') {
        out.push(',');
    }
    out.push_str(inner);
    RawValue::from_string(out).unwrap_or_else(|_| detail.to_owned())
}

/// Checks `detail` and makes its routed form; the errors name `detail.*` under `at`.
fn detail(
    raw: &RawValue,
    tenant: &TenantId,
    site: Option<&str>,
    at: &dyn Fn(&str) -> String,
    e: &mut Errors,
) -> Option<Box<RawValue>> {
    // A struct also reads from an array, by position: only an object will do.
    if !raw.get().trim_start().starts_with('{') {
        e.push(at("detail"), "must be a JSON object");
        return None;
    }
    if !queueable(raw.get()) {
        e.push(at("detail"), "holds U+FFFE or U+FFFF, which a queue cannot carry: write it escaped (\\uFFFE)");
        return None;
    }
    if let Some(why) = bus_shape(raw.get()) {
        e.push(at("detail"), why);
        return None;
    }
    let keys: RoutingKeys<'_> = match serde_json::from_str(raw.get()) {
        Ok(k) => k,
        Err(why) => {
            e.push(at("detail"), format!("cannot be routed: {why}"));
            return None;
        }
    };
    let has_tenant = match keys.tenant.map(|t| serde_json::from_str::<String>(t.get())) {
        None => false,
        Some(Ok(t)) if t == tenant.as_str() => true,
        Some(_) => {
            e.push(at("detail.tenant"), "must be left out or equal the token's tenant");
            true
        }
    };
    let has_site = match (keys.site.map(|s| serde_json::from_str::<String>(s.get())), site) {
        (None, _) => false,
        (Some(Ok(a)), Some(b)) if a != b => {
            e.push(at("detail.site"), "differs from site");
            true
        }
        // The event's site as much as a top-level `site` is: it routes the event and
        // scopes who sees it, so it is held to the same rule.
        (Some(Ok(a)), _) if !printable(&a, 128) => {
            e.push(at("detail.site"), text_rule(128));
            true
        }
        (Some(Ok(_)), _) => true,
        (Some(Err(_)), _) => {
            e.push(at("detail.site"), "must be a string");
            true
        }
    };
    Some(route_detail(raw, tenant, site, (has_tenant, has_site)))
}

/// Validates one event (`index` when the body was an array) for `tenant`.
pub(crate) fn validate(raw: &RawValue, index: Option<usize>, tenant: &TenantId) -> Result<Accepted, Vec<FieldError>> {
    let at = |f: &str| match index {
        Some(i) => format!("[{i}].{f}"),
        None => f.to_owned(),
    };
    let whole = || index.map_or_else(|| "body".to_owned(), |i| format!("[{i}]"));
    // serde reads a struct from an array too, by position: an event is an object, its
    // fields named, or unknown ones could not be refused.
    if !raw.get().trim_start().starts_with('{') {
        return Err(vec![FieldError::new(whole(), "must be a JSON object")]);
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let ev: EventIn = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let field = if path != "." {
            at(&path)
        } else if let Some((key, _)) = message.strip_prefix("duplicate field `").and_then(|r| r.split_once('`')) {
            // Found at the event's own level, but it is that key's fault.
            at(key)
        } else {
            whole()
        };
        vec![FieldError::new(field, message)]
    })?;
    let mut e = Errors::default();
    let detail_type = match ev.detail_type {
        // Not a space at either end, as a hook's pattern: no pattern could name such a type
        // exactly, and only a broad glob (`*`, `user.login*`) would have reached hooks.
        Some(d) if printable(&d, 128) && d.trim() == d => d,
        Some(_) => {
            e.push(at("detail-type"), format!("{}, nor a space at either end", text_rule(128)));
            String::new()
        }
        None => {
            e.push(at("detail-type"), "is required");
            String::new()
        }
    };
    let source = match ev.source {
        Some(s) if s == PLATFORM_SOURCE || s.starts_with("aws.") => {
            e.push(at("source"), "is reserved; use your product's own source name");
            String::new()
        }
        Some(s) if printable(&s, 256) => s,
        Some(_) => {
            e.push(at("source"), text_rule(256));
            String::new()
        }
        None => {
            e.push(at("source"), "is required");
            String::new()
        }
    };
    if let Some(site) = &ev.site
        && !printable(site, 128)
    {
        e.push(at("site"), text_rule(128));
    }
    let time = match ev.time.as_deref().map(DateTime::parse_from_rfc3339) {
        None => None,
        // The envelope carries the time in UTC, and RFC 3339 has four-digit years: a time
        // whose offset takes it past 9999 or before 0000 would be written as no reader
        // (ingest's, a receiver's) parses it, and the accepted event dead-lettered.
        // A second 60 (which chrono reads at any minute) would be written back as `:60`,
        // which most receivers' parsers refuse, and through the bus as `:59`.
        Some(Ok(t)) if t.nanosecond() >= 1_000_000_000 => {
            e.push(at("time"), "must name a second that exists (0-59)");
            None
        }
        Some(Ok(t)) if (0..=9999).contains(&t.with_timezone(&Utc).year()) => Some(t.with_timezone(&Utc)),
        Some(Ok(_)) => {
            e.push(at("time"), "must fall within the years 0000 to 9999 in UTC");
            None
        }
        Some(Err(_)) => {
            e.push(at("time"), "must be an RFC 3339 time");
            None
        }
    };
    let resources = ev.resources.unwrap_or_default();
    if resources.len() > 10 {
        e.push(at("resources"), "must list at most 10 strings");
    } else {
        for (i, _) in resources.iter().enumerate().filter(|(_, r)| !printable(r, 2048)) {
            e.push(at(&format!("resources[{i}]")), text_rule(2048));
        }
    }
    if let Some(id) = &ev.id
        && !printable(id, 128)
    {
        e.push(at("id"), text_rule(128));
    }
    let detail = match &ev.detail {
        None => {
            e.push(at("detail"), "is required");
            None
        }
        Some(d) => detail(d, tenant, ev.site.as_deref(), &at, &mut e),
    };
    e.finish(())?;
    let detail = detail.unwrap_or_else(|| raw.to_owned());
    let entry = BusEntry { detail_type, source, time, resources, detail };
    Ok(Accepted { entry, producer_id: ev.id, index })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn tenant_and_site_are_prepended_without_touching_the_rest() {
        let t: TenantId = "acme".parse().unwrap();
        assert_eq!(
            route_detail(&raw(r#"{"z":1,"a":{"b":2}}"#), &t, None, (false, false)).get(),
            r#"{"tenant":"acme","z":1,"a":{"b":2}}"#
        );
        assert_eq!(route_detail(&raw("{ }"), &t, Some("s1"), (false, false)).get(), r#"{"tenant":"acme","site":"s1"}"#);
        assert_eq!(route_detail(&raw(r#"{"tenant":"acme"}"#), &t, None, (true, false)).get(), r#"{"tenant":"acme"}"#);
    }

    /// An event written as an array (which serde reads by position) is refused as not an
    /// object, and so is a second 60, which chrono reads at any minute and would write
    /// back as `:60` (through the bus, as `:59`).
    #[test]
    fn an_event_is_an_object_and_its_time_a_second_that_exists() {
        let t: TenantId = "acme".parse().unwrap();
        let fields = |body: &str, index: Option<usize>| {
            validate(&raw(body), index, &t).err().unwrap_or_default().into_iter().map(|e| e.field).collect::<Vec<_>>()
        };
        assert_eq!(fields(r#"["x","src",{},null,null,null,null]"#, Some(0)), ["[0]"]);
        assert_eq!(fields(r#"["x","src",{},null,null,null,null]"#, None), ["body"]);
        let at =
            |time: &str| serde_json::json!({"detail-type": "x", "source": "s", "detail": {}, "time": time}).to_string();
        assert_eq!(fields(&at("2026-05-01T10:00:60Z"), None), ["time"]);
        assert_eq!(fields(&at("2026-05-01T10:00:59.999Z"), None), Vec::<String>::new());
        // The byte count is what the refusal names: 100 two-byte characters are 200 bytes.
        let long = serde_json::json!({"detail-type": "é".repeat(100), "source": "s", "detail": {}}).to_string();
        let refused = validate(&raw(&long), None, &t).err().unwrap();
        assert_eq!((refused[0].field.as_str(), refused[0].message.contains("1-128 bytes")), ("detail-type", true));
    }

    /// A `detail-type` with a space at either end is refused: no hook's pattern could name
    /// it. Spaces inside are fine.
    #[test]
    fn a_detail_type_with_a_space_at_either_end_is_refused() {
        let t: TenantId = "acme".parse().unwrap();
        let fields = |detail_type: &str| {
            let event = serde_json::json!({"detail-type": detail_type, "source": "idp", "detail": {}});
            validate(&raw(&event.to_string()), None, &t)
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|e| e.field)
                .collect::<Vec<_>>()
        };
        for bad in ["user.login ", " user.login", "user.login\u{a0}"] {
            assert_eq!(fields(bad), ["detail-type"], "{bad:?}");
        }
        assert!(fields("Order Created").is_empty());
        assert!("Order Created".parse::<hookbridge_core::pattern::EventTypePattern>().is_ok(), "a pattern names it");
    }

    /// Too many resources, and one resource too long or holding a control character, are
    /// told apart and named where they are: the message named the count for both.
    #[test]
    fn a_resource_at_fault_is_named_with_its_place_and_its_rule() {
        let t: TenantId = "acme".parse().unwrap();
        let errors = |resources: Vec<String>, index: Option<usize>| {
            let event = serde_json::json!({"detail-type": "x", "source": "idp", "detail": {}, "resources": resources});
            validate(&raw(&event.to_string()), index, &t)
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|e| (e.field, e.message))
                .collect::<Vec<_>>()
        };
        let eleven = vec!["r".to_owned(); 11];
        assert_eq!(errors(eleven, None), [("resources".to_owned(), "must list at most 10 strings".to_owned())]);
        let long = vec!["r".to_owned(), "x".repeat(2049)];
        let bad = [("[3].resources[1]".to_owned(), text_rule(2048))];
        assert_eq!(errors(long, Some(3)), bad);
        assert_eq!(errors(vec!["a\tb".to_owned(), "r".to_owned()], None)[0].0, "resources[0]");
        let named: Vec<String> =
            errors(vec![String::new(), "r".to_owned(), "\u{1}".to_owned()], None).into_iter().map(|e| e.0).collect();
        assert_eq!(named, ["resources[0]", "resources[2]"], "every one at fault at once");
        assert!(errors(vec!["x".repeat(2048); 10], None).is_empty());
    }

    /// What EventBridge's `PutEvents` refuses is refused here, naming `detail`: too deep
    /// a nesting, an integer outside 64 bits. Strings that look like either are data.
    #[test]
    fn a_detail_the_bus_would_refuse_is_refused_with_its_field() {
        let t: TenantId = "acme".parse().unwrap();
        let event = |detail: &str| raw(&format!(r#"{{"detail-type":"x","source":"idp","detail":{detail}}}"#));
        let fields = |detail: &str| {
            validate(&event(detail), None, &t)
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|e| e.field)
                .collect::<Vec<_>>()
        };
        let deep = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n - 1), "]".repeat(n - 1));
        assert!(fields(&deep(MAX_DETAIL_DEPTH)).is_empty());
        assert_eq!(fields(&deep(MAX_DETAIL_DEPTH + 1)), ["detail"]);
        assert_eq!(fields(r#"{"n":18446744073709551616}"#), ["detail"]);
        assert_eq!(fields(r#"{"n":[1,-9223372036854775809]}"#), ["detail"]);
        // Valid JSON no reader decodes: refused rather than checked against a schema as null.
        assert_eq!(fields(r#"{"n":1e400}"#), ["detail"]);
        assert_eq!(fields(r#"{"s":"\ud800"}"#), ["detail"]);
        assert_eq!(fields(r#"{"s":"a\udc00b"}"#), ["detail"]);
        assert!(fields(r#"{"s":"\ud83d\ude00 \\ud800"}"#).is_empty(), "a pair, and an escaped backslash");
        // An escaped backslash and the text `ud83d` are not a high half before a lone low one.
        assert_eq!(fields(r#"{"s":"\\ud83d\ude00"}"#), ["detail"]);
        assert_eq!(fields(r#"{"\\ud83d\ude00":1}"#), ["detail"], "keys are strings too");
        assert!(fields(r#"{"s":"\\\ud83d\ude00"}"#).is_empty(), "a backslash, then a pair");
        for fine in [
            r#"{"n":9223372036854775807,"m":-9223372036854775808,"f":1.8446744073709552e19,"g":-0.5}"#,
            r#"{"s":"18446744073709551616 [[[[ \" {{{{","t":"\\"}"#,
        ] {
            assert!(fields(fine).is_empty(), "{fine}");
        }
    }

    /// A key given twice at an event's own level is named, in a lone event as in an array
    /// (a lone event's was named `""`); other faults at that level name the event.
    #[test]
    fn a_duplicated_key_of_an_event_is_named() {
        let t: TenantId = "acme".parse().unwrap();
        let fields = |body: &str, index| {
            validate(&raw(body), index, &t).err().unwrap().into_iter().map(|e| e.field).collect::<Vec<_>>()
        };
        let twice = r#"{"detail-type":"a","source":"s","detail":{},"source":"t"}"#;
        assert_eq!(fields(twice, None), ["source"]);
        assert_eq!(fields(twice, Some(3)), ["[3].source"]);
        assert_eq!(fields("[]", None), ["body"]);
        assert_eq!(fields("[]", Some(1)), ["[1]"]);
    }

    /// U+FFFE and U+FFFF are valid JSON that SQS refuses: an event holding one, written
    /// as is, is refused with the field named, on both backends alike; written escaped it is
    /// six ASCII characters, and accepted.
    #[test]
    fn characters_a_queue_cannot_carry_are_refused_with_their_field() {
        let t: TenantId = "acme".parse().unwrap();
        let raw_char = raw("{\"detail-type\":\"x\",\"source\":\"idp\",\"detail\":{\"name\":\"a\u{FFFE}b\"}}");
        let errs = validate(&raw_char, None, &t).err().unwrap();
        assert_eq!(errs.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(), ["detail"]);
        let in_type = raw("{\"detail-type\":\"x\u{FFFF}\",\"source\":\"idp\",\"detail\":{}}");
        let errs = validate(&in_type, None, &t).err().unwrap();
        assert_eq!(errs.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(), ["detail-type"]);
        let escaped = raw(r#"{"detail-type":"x","source":"idp","detail":{"name":"a\uFFFEb"}}"#);
        assert!(validate(&escaped, None, &t).is_ok());
    }

    /// A time is accepted only when the envelope's UTC form of it reads back: one whose
    /// offset carries it past the year 9999 (or before 0000) was answered `202` and then
    /// dead-lettered by ingest, which could not read the year it was written with.
    #[test]
    fn a_time_is_accepted_only_when_its_utc_form_reads_back() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct At(#[serde(with = "hookbridge_core::envelope::bus_time")] DateTime<Utc>);
        let t: TenantId = "acme".parse().unwrap();
        let event = |time: &str| raw(&format!(r#"{{"detail-type":"x","source":"s","time":"{time}","detail":{{}}}}"#));
        for time in ["9999-12-31T23:59:59-01:00", "0000-01-01T00:00:00+01:00"] {
            let errs = validate(&event(time), None, &t).err().unwrap_or_else(|| panic!("{time} accepted"));
            assert_eq!(errs.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(), ["time"], "{time}");
        }
        for time in ["9999-12-31T22:59:59-01:00", "0000-01-01T00:00:00Z", "2026-12-02T10:00:00+05:30"] {
            let accepted = validate(&event(time), None, &t).unwrap_or_else(|e| panic!("{time}: {e:?}"));
            let written = serde_json::to_string(&At(accepted.entry.time.unwrap())).unwrap();
            let read: At =
                serde_json::from_str(&written).unwrap_or_else(|e| panic!("{time} written as {written}: {e}"));
            assert_eq!(read.0, DateTime::parse_from_rfc3339(time).unwrap(), "{time}");
        }
    }

    #[test]
    fn foreign_tenant_and_reserved_source_are_refused() {
        let t: TenantId = "acme".parse().unwrap();
        let r = raw(r#"{"detail-type":"x","source":"hookbridge","detail":{"tenant":"evil"}}"#);
        let errs = validate(&r, None, &t).err().unwrap();
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["source", "detail.tenant"]);
    }

    #[test]
    fn a_detail_that_could_not_be_routed_is_refused_at_once() {
        let t: TenantId = "acme".parse().unwrap();
        for detail in [r#"{"tenant":"acme","tenant":"acme"}"#, "[1]", r#""text""#] {
            let r = raw(&format!(r#"{{"detail-type":"x","source":"s","detail":{detail}}}"#));
            let errs = validate(&r, None, &t).err().unwrap_or_else(|| panic!("{detail} accepted"));
            assert_eq!(errs[0].field, "detail", "{detail}");
        }
        // A site in the detail is held to the rule a top-level one is.
        for site in [r#""""#, r#""\u0007""#, &format!(r#""{}""#, "s".repeat(129))] {
            let r = raw(&format!(r#"{{"detail-type":"x","source":"s","detail":{{"site":{site}}}}}"#));
            let errs = validate(&r, None, &t).err().unwrap_or_else(|| panic!("{site} accepted"));
            assert_eq!(errs[0].field, "detail.site", "{site}");
        }
        // A key given as null is a key given: refused, not doubled.
        for (detail, field) in [(r#"{"tenant":null}"#, "detail.tenant"), (r#"{"site":null}"#, "detail.site")] {
            let r = raw(&format!(r#"{{"detail-type":"x","source":"s","site":"hq","detail":{detail}}}"#));
            let errs = validate(&r, None, &t).err().unwrap_or_else(|| panic!("{detail} accepted"));
            assert_eq!(errs[0].field, field, "{detail}");
        }
    }

    #[test]
    fn every_accepted_detail_routes_as_ingest_reads_it() {
        let t: TenantId = "acme".parse().unwrap();
        for detail in [r#"{}"#, r#"{"tenant":"acme"}"#, r#"{"site":"hq","x":null}"#, r#"{"a":{"tenant":null}}"#] {
            let r = raw(&format!(r#"{{"detail-type":"x","source":"s","site":"hq","detail":{detail}}}"#));
            let accepted = validate(&r, None, &t).unwrap_or_else(|e| panic!("{detail}: {e:?}"));
            let routed: hookbridge_core::envelope::Routing =
                serde_json::from_str(accepted.entry.detail.get()).unwrap_or_else(|e| panic!("{detail}: {e}"));
            assert_eq!((routed.tenant.as_str(), routed.site.as_deref()), ("acme", Some("hq")), "{detail}");
        }
    }
}

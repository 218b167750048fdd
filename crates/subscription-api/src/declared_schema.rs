//! A declared event type's JSON Schema, compiled, and how a `detail` that fails it is
//! reported at a cost bounded by the schema's size.
//!
//! Whether a `detail` passes is cheap whatever the schema: the validator remembers what each
//! reference (`$ref`) decided for a part of the event. Listing *why* it fails is not: the
//! validator builds the failures of every branch of an `anyOf` (and `oneOf`, `allOf` ...),
//! through every reference, without remembering any. A recursive schema of 200 bytes with
//! two branches per level, against a `detail` nested 30 deep, builds 2^30 failures, and one
//! such publish held the API (on `hookbridge serve`, every tenant's) until it ran out of
//! memory. So failures are listed one by one only for a schema whose references, unfolded,
//! stay within [`MAX_UNFOLDED`] subschemas: there listing costs what checking a schema of
//! that size costs. Any other fails as a whole.

use serde_json::Value;

/// The most subschemas (JSON objects, references unfolded in place) a schema may come to
/// and still have its failures listed one by one.
pub(crate) const MAX_UNFOLDED: usize = 10_000;

/// One failure of a `detail`: where in it (a JSON Pointer, `""` for the whole), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The JSON Pointer of the failing part of the `detail`.
    pub(crate) pointer: String,
    /// Why it fails.
    pub(crate) message: String,
}

/// A declared schema, compiled.
pub(crate) struct DeclaredSchema {
    validator: jsonschema::Validator,
    /// Whether its failures are listed one by one (see the module's documentation).
    lists_failures: bool,
}

impl DeclaredSchema {
    /// Compiles `schema` as JSON Schema 2020-12; remote references are never fetched.
    pub(crate) fn compile(schema: &Value) -> Result<Self, String> {
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(schema)
            .map_err(|e| e.to_string())?;
        Ok(Self { validator, lists_failures: unfolded_size(schema, MAX_UNFOLDED).is_some() })
    }

    /// Why `detail` fails the schema: nothing when it passes.
    pub(crate) fn failures(&self, detail: &Value) -> Vec<Failure> {
        if self.validator.is_valid(detail) {
            return Vec::new();
        }
        if !self.lists_failures {
            return vec![Failure {
                pointer: String::new(),
                message: format!(
                    "does not match its declared schema (whose references unfold past {MAX_UNFOLDED} subschemas, so where it fails is not listed)"
                ),
            }];
        }
        self.validator
            .iter_errors(detail)
            .map(|e| Failure { pointer: e.instance_path().to_string(), message: e.to_string() })
            .collect()
    }
}

/// How many subschemas `schema` comes to with each reference unfolded in place, or `None`
/// past `cap`. A reference that is not a JSON Pointer into this document (an anchor, another
/// resource's `$id`, `$dynamicRef`), or that leads back into itself, unfolds without end.
fn unfolded_size(schema: &Value, cap: usize) -> Option<usize> {
    let mut count = 0;
    let mut unfolding = Vec::new();
    unfold(schema, schema, true, &mut unfolding, &mut count, cap).then_some(count)
}

/// Counts the objects in `v` into `count`, unfolding references; false once past `cap` or
/// at a reference that cannot be unfolded. `unfolding` holds the references being unfolded,
/// to find one that leads back into itself.
fn unfold(root: &Value, v: &Value, at_root: bool, unfolding: &mut Vec<String>, count: &mut usize, cap: usize) -> bool {
    match v {
        Value::Array(items) => items.iter().all(|i| unfold(root, i, false, unfolding, count, cap)),
        Value::Object(o) => {
            *count += 1;
            if *count > cap {
                return false;
            }
            // A nested `$id` starts a resource whose `#/...` references point into it, not
            // into the document: not followed here.
            let nested_resource = !at_root && o.contains_key("$id");
            if nested_resource || o.contains_key("$dynamicRef") || o.contains_key("$recursiveRef") {
                return false;
            }
            if let Some(reference) = o.get("$ref") {
                let Some(target) = reference.as_str().and_then(|r| local_target(root, r)) else {
                    return false;
                };
                let key = reference.as_str().unwrap_or_default().to_owned();
                if unfolding.contains(&key) {
                    return false;
                }
                unfolding.push(key);
                let unfolded = unfold(root, target, false, unfolding, count, cap);
                unfolding.pop();
                if !unfolded {
                    return false;
                }
            }
            o.iter().filter(|(k, _)| *k != "$ref").all(|(_, child)| unfold(root, child, false, unfolding, count, cap))
        }
        _ => true,
    }
}

/// The part of `root` a `#` or `#/…` reference names (its fragment percent-decoded, as a
/// URI's is), or `None` for any other kind.
fn local_target<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let fragment = reference.strip_prefix('#')?;
    if !fragment.is_empty() && !fragment.starts_with('/') {
        return None;
    }
    let pointer = percent_encoding::percent_decode_str(fragment).decode_utf8().ok()?;
    root.pointer(&pointer)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use serde_json::json;

    use super::*;

    /// Two branches per level through one reference: every level doubles the failures the
    /// validator would build.
    fn doubling() -> Value {
        json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/n"}},
               "$defs": {"n": {"anyOf": [{"type": "array", "items": {"$ref": "#/$defs/n"}},
                                         {"type": "array", "items": {"$ref": "#/$defs/n"}, "maxItems": 99}]}}})
    }

    fn nested(depth: usize) -> Value {
        let mut d = json!("x");
        for _ in 0..depth {
            d = json!([d]);
        }
        json!({ "a": d })
    }

    /// Listed one by one, the failures of this `detail` would be 2^60: it fails as a whole,
    /// at once.
    #[test]
    fn a_recursive_schema_with_branches_fails_as_a_whole() {
        let s = DeclaredSchema::compile(&doubling()).unwrap();
        let failures = s.failures(&nested(60));
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert_eq!(failures[0].pointer, "");
        assert!(failures[0].message.contains("does not match its declared schema"), "{failures:?}");
        assert!(s.failures(&json!({"a": [[[]]]})).is_empty(), "a detail that passes still passes");
    }

    /// References that unfold to a small schema (a definition used twice) keep their
    /// failures named.
    #[test]
    fn shared_definitions_keep_their_failures_named() {
        let schema = json!({"type": "object",
            "properties": {"from": {"$ref": "#/$defs/address"}, "to": {"$ref": "#/$defs/address"}},
            "$defs": {"address": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}}});
        let s = DeclaredSchema::compile(&schema).unwrap();
        let failures = s.failures(&json!({"from": {"city": "Oslo"}, "to": {"city": 7}}));
        assert_eq!(failures.iter().map(|f| f.pointer.as_str()).collect::<Vec<_>>(), ["/to/city"]);
    }

    #[test]
    fn what_unfolds_and_what_does_not() {
        assert_eq!(unfolded_size(&json!({"type": "string"}), 10), Some(1));
        let shared = json!({"properties": {"a": {"$ref": "#/$defs/x"}, "b": {"$ref": "#/$defs/x"}},
                            "$defs": {"x": {"type": "string"}}});
        // The root, `properties`, a, b, `$defs` and x, with x unfolded into a and b.
        assert_eq!(unfolded_size(&shared, 100), Some(8));
        assert_eq!(unfolded_size(&shared, 7), None, "past the cap");
        assert_eq!(unfolded_size(&doubling(), MAX_UNFOLDED), None, "recursive");
        assert_eq!(unfolded_size(&json!({"$ref": "#"}), 100), None, "the root, from itself");
        assert_eq!(unfolded_size(&json!({"$ref": "#thing"}), 100), None, "an anchor");
        assert_eq!(unfolded_size(&json!({"$ref": "https://example.com/s"}), 100), None, "another document");
        assert_eq!(unfolded_size(&json!({"$ref": "#/$defs/missing"}), 100), None);
        let escaped = json!({"properties": {"a": {"$ref": "#/$defs/a~1b%20c"}}, "$defs": {"a/b c": {}}});
        assert_eq!(unfolded_size(&escaped, 100), Some(6));
        // Two definitions, each using the one before twice: 2^20 subschemas unfolded.
        let mut defs = serde_json::Map::new();
        defs.insert("d0".into(), json!({"type": "string"}));
        for i in 1..=20 {
            let before = format!("#/$defs/d{}", i - 1);
            defs.insert(format!("d{i}"), json!({"anyOf": [{"$ref": before}, {"$ref": before}]}));
        }
        assert_eq!(unfolded_size(&json!({"$ref": "#/$defs/d20", "$defs": defs}), MAX_UNFOLDED), None, "acyclic");
    }
}

//! A declared event type's JSON Schema, compiled, and how a `detail` that fails it is
//! reported at a cost bounded by the schema's size.
//!
//! Whether a `detail` passes is checked only when the check's cost, walked first, is within
//! a budget ([`crate::schema_cost`]): the validator remembers few of its decisions, and a
//! schema may apply thousands of subschemas to each value. Listing *why* it fails costs
//! more again: the validator builds the failures of every branch of an `anyOf` (and `oneOf`, `allOf` ...),
//! through every reference, without remembering any. A recursive schema of 200 bytes with
//! two branches per level, against a `detail` nested 30 deep, builds 2^30 failures, and one
//! such publish held the API (on `hookbridge serve`, every tenant's) until it ran out of
//! memory. Without references, listing costs at most the schema's subschemas times the
//! `detail`'s values (each subschema checks each value at most once, and a failure is
//! built per check at most); 4,000 `allOf` branches against an array of 100,000 numbers
//! is still 4 × 10^8. So failures are listed one by one only when the schema, its
//! references unfolded, comes to a size whose product with the `detail`'s stays within
//! [`LISTING_BUDGET`]; any other `detail` that fails, fails as a whole, and so does one
//! of a schema whose references cannot be unfolded here (recursive, anchors, another
//! resource or draft nested inside).

use serde_json::Value;

use crate::schema_cost::{CHECK_BUDGET, steps_to_check};

/// The most subschemas (JSON objects, arrays and booleans, references unfolded in place) a
/// schema may come to and still have its failures listed one by one.
pub(crate) const MAX_UNFOLDED: usize = 10_000;
/// The most checks (subschemas times the `detail`'s values) listing a `detail`'s failures
/// may take; past it the `detail` fails as a whole. Each check may build one failure of a
/// few hundred bytes: this bounds that memory to tens of MB.
pub(crate) const LISTING_BUDGET: usize = 250_000;
/// The most failures answered for one `detail`.
pub(crate) const MOST_FAILURES: usize = 50;
/// The most steps a backtracking match of a kept schema's `pattern` may take (see
/// [`DeclaredSchema::compile_kept`]).
pub(crate) const BACKTRACK_LIMIT: usize = 10_000;
/// How deep a schema is followed, references included; deeper fails as a whole.
const MAX_DEPTH: usize = 128;

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
    /// Its size with references unfolded, when they can be (see the module's
    /// documentation).
    unfolded: Option<usize>,
    /// The schema as declared, to reckon a check by before it is done.
    schema: Value,
    /// Whether its patterns are matched by the backtracking engine.
    backtracking: bool,
}

impl DeclaredSchema {
    /// Compiles `schema` as JSON Schema 2020-12, as it is declared; remote references are
    /// never fetched. Its `pattern`s are matched in linear time (the `regex` crate's
    /// engine), so one needing look-around or back-references is refused, as the JSON
    /// Schema specification advises for patterns meant to work everywhere. With the
    /// validator's default engine, backtracking up to a million steps a match, a `pattern`
    /// like `^(?:a|(?=a)a)*$` took a minute of CPU over one 256 KiB `detail` of short
    /// strings: on `hookbridge serve`, every tenant's calls and deliveries waited.
    pub(crate) fn compile(schema: &Value) -> Result<Self, String> {
        let compiled = Self::linear(schema).map_err(|e| match Self::backtracking(schema) {
            Ok(_) => format!(
                "{e}: a pattern may not use look-around or back-references (patterns are matched in linear time)"
            ),
            Err(_) => e,
        })?;
        // What a check will cost is walked before each check; a reference the walk cannot
        // follow would leave it unbounded.
        match crate::schema_cost::unfollowable(schema) {
            Some(why) => Err(why),
            None => Ok(compiled),
        }
    }

    /// [`DeclaredSchema::compile`] for a schema kept from a release that took any
    /// `pattern`: one needing look-around or back-references is matched by a backtracking
    /// engine held to [`BACKTRACK_LIMIT`] steps a match, rather than the schema checking
    /// nothing.
    pub(crate) fn compile_kept(schema: &Value) -> Result<Self, String> {
        Self::linear(schema).or_else(|_| Self::backtracking(schema))
    }

    fn linear(schema: &Value) -> Result<Self, String> {
        Self::built(schema, jsonschema::options().with_pattern_options(jsonschema::PatternOptions::regex()))
    }

    fn backtracking(schema: &Value) -> Result<Self, String> {
        let patterns = jsonschema::PatternOptions::fancy_regex().backtrack_limit(BACKTRACK_LIMIT);
        let built = Self::built(schema, jsonschema::options().with_pattern_options(patterns))?;
        Ok(Self { backtracking: true, ..built })
    }

    fn built(schema: &Value, options: jsonschema::ValidationOptions) -> Result<Self, String> {
        let validator = options.with_draft(jsonschema::Draft::Draft202012).build(schema).map_err(|e| e.to_string())?;
        Ok(Self {
            validator,
            unfolded: unfolded_size(schema, MAX_UNFOLDED),
            schema: schema.clone(),
            backtracking: false,
        })
    }

    /// Why `detail` fails the schema: nothing when it passes. One whose check would take
    /// more than [`CHECK_BUDGET`] fails unchecked (see [`crate::schema_cost`]).
    pub(crate) fn failures(&self, detail: &Value) -> Vec<Failure> {
        if steps_to_check(&self.schema, detail, self.backtracking).is_none() {
            return vec![Failure {
                pointer: String::new(),
                message: format!(
                    "is too large to check against its declared schema: the check would take more than \
                     {CHECK_BUDGET} steps (a step is a subschema applied to a value; send fewer values, or \
                     declare a schema that applies fewer subschemas to each)"
                ),
            }];
        }
        if self.validator.is_valid(detail) {
            return Vec::new();
        }
        let checks = self.unfolded.map(|size| size.saturating_mul(values_in(detail)));
        if checks.is_none_or(|n| n > LISTING_BUDGET) {
            return vec![Failure {
                pointer: String::new(),
                message: "does not match its declared schema (too large a check, with this schema and this detail, to list where)".to_owned(),
            }];
        }
        self.validator
            .iter_errors(detail)
            .take(MOST_FAILURES)
            .map(|e| Failure { pointer: e.instance_path().to_string(), message: e.to_string() })
            .collect()
    }
}

/// How many values a `detail` holds, itself included.
fn values_in(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(values_in).sum::<usize>(),
        Value::Object(o) => 1 + o.values().map(values_in).sum::<usize>(),
        _ => 1,
    }
}

/// Keywords whose values are data, not subschemas: not walked, so a `$ref` or `$id` key
/// in an `enum` is not taken for one.
pub(crate) const DATA_KEYWORDS: [&str; 4] = ["const", "enum", "default", "examples"];
/// Keywords that start a resource or name a place by other means than a JSON Pointer into
/// the document (`$schema` another draft's rules, under which `id` starts a resource): a
/// schema holding one below its root is not unfolded here. (A property named so counts as
/// one too: such a schema fails as a whole, which is only less precise.)
const ELSEWHERE: [&str; 5] = ["$id", "$schema", "$anchor", "$dynamicAnchor", "$recursiveAnchor"];
/// The drafts whose `$schema`, at the root, leaves `$id` the only keyword to start a
/// resource.
const UNFOLDED_DRAFTS: [&str; 2] =
    ["https://json-schema.org/draft/2020-12/schema", "https://json-schema.org/draft/2019-09/schema"];

/// How many subschemas `schema` comes to with each reference unfolded in place, or `None`
/// past `cap` (or [`MAX_DEPTH`] deep). A reference that is not a JSON Pointer into this
/// document (an anchor, another resource, `$dynamicRef`), or that leads back into itself,
/// unfolds without end.
fn unfolded_size(schema: &Value, cap: usize) -> Option<usize> {
    if let Some(draft) = schema.get("$schema")
        && !draft.as_str().is_some_and(|d| UNFOLDED_DRAFTS.contains(&d.trim_end_matches('#')))
    {
        return None;
    }
    let mut count = 0;
    let mut unfolding = Vec::new();
    unfold(schema, schema, 0, &mut unfolding, &mut count, cap).then_some(count)
}

/// Counts the subschemas in `v` into `count`, unfolding references; false once past `cap`
/// or [`MAX_DEPTH`], or at a reference that cannot be unfolded. `unfolding` holds the
/// references being unfolded, to find one that leads back into itself.
fn unfold(root: &Value, v: &Value, depth: usize, unfolding: &mut Vec<String>, count: &mut usize, cap: usize) -> bool {
    *count += 1;
    if *count > cap || depth > MAX_DEPTH {
        return false;
    }
    match v {
        Value::Array(items) => items.iter().all(|i| unfold(root, i, depth + 1, unfolding, count, cap)),
        Value::Object(o) => {
            let keyword = |k: &str| o.get(k).is_some();
            if (depth > 0 && ELSEWHERE.iter().any(|k| keyword(k))) || keyword("$dynamicRef") || keyword("$recursiveRef")
            {
                return false;
            }
            if let Some(reference) = o.get("$ref") {
                let Some((key, target)) = reference.as_str().and_then(|r| Some((r, local_target(root, r)?))) else {
                    return false;
                };
                if unfolding.iter().any(|u| u == key) {
                    return false;
                }
                unfolding.push(key.to_owned());
                let unfolded = unfold(root, target, depth + 1, unfolding, count, cap);
                unfolding.pop();
                if !unfolded {
                    return false;
                }
            }
            o.iter()
                .filter(|(k, _)| *k != "$ref" && !DATA_KEYWORDS.contains(&k.as_str()))
                .all(|(_, child)| unfold(root, child, depth + 1, unfolding, count, cap))
        }
        // A boolean subschema is one; a string or number is a keyword's value, not one.
        Value::Bool(_) => true,
        _ => {
            *count -= 1;
            true
        }
    }
}

/// The part of `root` a `#` or `#/…` reference names (its fragment percent-decoded, as a
/// URI's is), or `None` for any other kind.
pub(crate) fn local_target<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
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
        // Refused before the check: the walk counts each branch where the validator
        // remembers a decision, so it takes the 2^60 at their word.
        assert!(failures[0].message.contains("too large to check"), "{failures:?}");
        // Within the walk's budget, it is checked; it fails, and is not listed.
        let failures = s.failures(&nested(12));
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(failures[0].message.contains("too large a check"), "{failures:?}");
        assert!(s.failures(&json!({"a": [[[]]]})).is_empty(), "a detail that passes still passes");
    }

    /// Many branches against a large `detail`, without a reference: listing would take
    /// branches × values checks; past the budget it fails as a whole. A small one lists at
    /// most [`MOST_FAILURES`].
    #[test]
    fn listing_is_bounded_by_the_schemas_size_times_the_details() {
        let branches: Vec<Value> = (0..100).map(|i| json!({"const": i})).collect();
        let s = DeclaredSchema::compile(&json!({"items": {"allOf": branches}})).unwrap();
        let large = Value::Array(vec![json!(9); 5_000]);
        let failures = s.failures(&large);
        assert_eq!(failures.len(), 1, "as a whole");
        assert!(failures[0].message.contains("too large a check"), "{failures:?}");
        assert!(!s.failures(&json!([9])).is_empty() && s.failures(&json!([9])).len() > 1, "a small one is listed");
        let numbers = DeclaredSchema::compile(&json!({"items": {"type": "number"}})).unwrap();
        let words = Value::Array(vec![json!("x"); 200]);
        assert_eq!(numbers.failures(&words).len(), MOST_FAILURES);
        let booleans: Vec<Value> = vec![json!(false); 300];
        let s = DeclaredSchema::compile(&json!({"items": {"allOf": booleans}})).unwrap();
        assert_eq!(s.failures(&Value::Array(vec![json!(1); 1_000])).len(), 1, "booleans count as subschemas");
    }

    /// A `pattern` is matched in linear time: one needing look-around is refused as
    /// declared. One kept from before is held to [`BACKTRACK_LIMIT`] steps a match, a value
    /// whose match would take more failing (here 2^17 steps, under the validator's default
    /// of a million, would have passed).
    #[test]
    fn patterns_are_matched_in_linear_time_or_held_to_a_limit() {
        let lookaround = json!({"items": {"type": "string", "not": {"pattern": "^(?:a|(?=a)a)*$"}}});
        let refused = DeclaredSchema::compile(&lookaround).err().expect("refused as declared");
        assert!(refused.contains("may not use look-around"), "{refused}");
        let kept = DeclaredSchema::compile_kept(&lookaround).unwrap();
        assert!(kept.failures(&json!(["ab"])).is_empty());
        assert!(!kept.failures(&json!(["aa"])).is_empty());
        let costly = format!("{}!", "a".repeat(17));
        let failures = kept.failures(&json!([costly]));
        assert!(!failures.is_empty(), "held to the limit");
        let linear = DeclaredSchema::compile(&json!({"items": {"pattern": "^(a+)+$"}})).unwrap();
        assert!(!linear.failures(&json!([format!("{}!", "a".repeat(10_000))])).is_empty());
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
        // `id` is a property here, not a resource.
        assert!(unfolded_size(&json!({"properties": {"id": {"type": "string"}}}), 10).is_some());
        let draft4 =
            json!({"properties": {"a": {"$schema": "http://json-schema.org/draft-04/schema#", "id": "urn:e"}}});
        assert_eq!(unfolded_size(&draft4, 100), None, "another draft inside");
        assert_eq!(unfolded_size(&json!({"$schema": "http://json-schema.org/draft-04/schema#"}), 100), None);
        let data = json!({"enum": [{"$ref": "#/nowhere"}], "const": {"$id": "x"}});
        assert!(unfolded_size(&data, 100).is_some(), "data is not a schema");
        let mut deep = json!({"type": "string"});
        for _ in 0..200 {
            deep = json!({"items": deep});
        }
        assert_eq!(unfolded_size(&deep, 10_000), None, "too deep to follow");
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

//! What checking a `detail` against a declared schema may cost, bounded before it is done.
//!
//! The validator checks each subschema against each value it applies to. Without a bound
//! the work is the schema's size times the `detail`'s: `{"items": {"allOf": [3,000
//! branches]}}` against 120,000 numbers took 2.5 s of CPU for one event (measured on a
//! 2-core AMD EPYC), and a tenant may publish a thousand a second. So the check is first
//! walked without being done: each subschema is taken to the values of the `detail` it
//! applies to (`properties` to the values under its names, `items` to every item, `allOf`
//! and a `$ref` to where their parent applies, and so on), and costs a step for each value
//! and keyword, more for what it reads whole (an `enum` of objects, a long string or key,
//! the items `uniqueItems` compares). The walk stops as soon as the steps pass
//! [`CHECK_BUDGET`], and counts its own work among them, so it costs at most about that
//! much itself. It follows the validator where it spends more:
//!
//! - a `$ref` is walked each time it is reached: the validator remembers few decisions
//!   (only inside a cycle, and only costly ones), so a chain of definitions each using the
//!   one before twice costs two to the power of its length. One reached again at the same
//!   value, within itself, is not walked again (the validator stops there too);
//! - below a schema with `unevaluatedProperties` or `unevaluatedItems` each level is
//!   checked again for each level above it, to find what was evaluated: its subschemas
//!   count once more for each level they lie below it, and twice over below another;
//! - a reference the walk cannot follow (an anchor, a `$dynamicRef`, one under a nested
//!   `$id`) is refused when a schema is declared ([`unfollowable`]); in a schema kept from
//!   before, it is taken as the whole schema applying to every value below.

use std::collections::HashSet;

use serde_json::Value;

use crate::declared_schema::{DATA_KEYWORDS, local_target};

/// The most steps checking one `detail` may take (about 15 ms of CPU at the rate measured
/// above); past it the event is refused, naming its `detail`.
pub(crate) const CHECK_BUDGET: usize = 2_000_000;
/// How deep the walk may go, references followed: deeper is past the budget. It recurses,
/// and must end well within a tokio worker's 2 MiB stack.
const MAX_NEST: usize = 256;
/// Bytes of a string or key that count as one more step, for a keyword that reads it whole.
const BYTES_A_STEP: usize = 64;
/// Bytes a `pattern` reads for a step: a linear match took 0.7 ms over 250 KB (measured on
/// the machine above), about 2.8 ns a byte, where a step is about 7 ns.
const PATTERN_BYTES_A_STEP: usize = 2;
/// Steps a `pattern` of a kept schema's backtracking engine may take on one string: up to
/// [`crate::declared_schema::BACKTRACK_LIMIT`] (10,000) steps of its own, a few ns each.
const BACKTRACKING_STEPS: usize = 5_000;

/// Keywords whose subschema applies to every item of an array.
const EACH_ITEM: [&str; 4] = ["items", "additionalItems", "contains", "unevaluatedItems"];
/// Keywords whose subschema applies to every value of an object.
const EACH_VALUE: [&str; 2] = ["additionalProperties", "unevaluatedProperties"];
/// Keywords whose subschema applies where their parent does.
const IN_PLACE: [&str; 4] = ["not", "if", "then", "else"];
/// Keywords whose list of subschemas applies where their parent does.
const IN_PLACE_LISTS: [&str; 3] = ["allOf", "anyOf", "oneOf"];
/// Keywords that read a string whole.
const READS_STRINGS: [&str; 3] = ["format", "minLength", "maxLength"];
/// Keywords that start a resource or name a place other than by a JSON Pointer into the
/// document: references the walk cannot follow.
const ELSEWHERE: [&str; 6] = ["$id", "$anchor", "$dynamicAnchor", "$recursiveAnchor", "$dynamicRef", "$recursiveRef"];

/// The steps checking `detail` against `schema` takes, or `None` past [`CHECK_BUDGET`];
/// `backtracking` when its patterns are matched by the backtracking engine.
pub(crate) fn steps_to_check(schema: &Value, detail: &Value, backtracking: bool) -> Option<usize> {
    let mut walk = Walk { root: schema, steps: 0, within: HashSet::new(), backtracking };
    walk.apply(schema, &[detail], 0, 1, false).then_some(walk.steps)
}

/// Why the walk could not follow `schema`'s references, if it could not: a `$ref` that is
/// not a `#` JSON Pointer to a part of it, or a keyword below its root that starts a
/// resource or an anchor.
pub(crate) fn unfollowable(schema: &Value) -> Option<String> {
    fn find(root: &Value, v: &Value, top: bool) -> Option<String> {
        match v {
            Value::Object(o) => {
                if let Some(k) = ELSEWHERE.iter().find(|k| o.contains_key(**k) && !(top && **k == "$id")) {
                    return Some(format!("`{k}` is not supported: name a part of the schema by a `#/…` JSON Pointer"));
                }
                if let Some(r) = o.get("$ref")
                    && r.as_str().and_then(|r| local_target(root, r)).is_none()
                {
                    return Some(format!("`$ref` {r} does not name a part of this schema by a `#/…` JSON Pointer"));
                }
                o.iter().filter(|(k, _)| !DATA_KEYWORDS.contains(&k.as_str())).find_map(|(k, c)| match c {
                    // Maps of names to subschemas: a property may be named `$id`.
                    Value::Object(named) if NAMED_SUBSCHEMAS.contains(&k.as_str()) => {
                        named.values().find_map(|s| find(root, s, false))
                    }
                    _ => find(root, c, false),
                })
            }
            Value::Array(items) => items.iter().find_map(|i| find(root, i, false)),
            _ => None,
        }
    }
    find(schema, schema, true)
}

/// Keywords whose value maps names (of properties, patterns, definitions) to subschemas.
const NAMED_SUBSCHEMAS: [&str; 5] = ["properties", "patternProperties", "dependentSchemas", "$defs", "definitions"];

/// One walk of a check.
struct Walk<'a> {
    root: &'a Value,
    steps: usize,
    backtracking: bool,
    /// The references being followed, with each value they were reached at: one reached
    /// again at the same value within itself leads round without end.
    within: HashSet<(*const Value, *const Value)>,
}

impl<'a> Walk<'a> {
    /// Counts `n` steps; false once past the budget.
    fn step(&mut self, n: usize) -> bool {
        self.steps = self.steps.saturating_add(n);
        self.steps <= CHECK_BUDGET
    }

    /// Walks `schema` applied to each of `values`, each step counting `times` (the times
    /// the validator checks it there); `marking` below an `unevaluated*` keyword. False
    /// once past the budget.
    fn apply<'v>(&mut self, schema: &'a Value, values: &[&'v Value], nest: usize, times: usize, marking: bool) -> bool {
        if values.is_empty() {
            return true;
        }
        if nest > MAX_NEST {
            return false;
        }
        let o = match schema {
            Value::Object(o) => o,
            Value::Bool(_) => return self.step(values.len().saturating_mul(times)),
            // Not a schema; the validator refuses it.
            _ => return true,
        };
        if !self.step(self.cost(o, values).saturating_mul(times)) {
            return false;
        }
        if o.contains_key("$dynamicRef") || o.contains_key("$recursiveRef") {
            return self.as_whole(values, times);
        }
        let unevaluated = o.contains_key("unevaluatedProperties") || o.contains_key("unevaluatedItems");
        let (times, marking) = match (unevaluated, marking) {
            (true, true) => (times.saturating_mul(2), true),
            (true, false) | (false, true) => (times.saturating_add(1), true),
            (false, false) => (times, false),
        };
        if let Some(reference) = o.get("$ref") {
            let Some(target) = reference.as_str().and_then(|r| local_target(self.root, r)) else {
                return self.as_whole(values, times);
            };
            let at: *const Value = target;
            let fresh: Vec<&Value> = values.iter().copied().filter(|v| !self.within.contains(&(at, *v))).collect();
            let entered: Vec<(*const Value, *const Value)> =
                fresh.iter().map(|v| (at, *v as *const Value)).filter(|k| self.within.insert(*k)).collect();
            let walked = self.apply(target, &fresh, nest + 1, times, marking);
            for k in &entered {
                self.within.remove(k);
            }
            if !walked {
                return false;
            }
        }
        let nest = nest + 1;
        let mut items: Option<Vec<&'v Value>> = None;
        let mut members: Option<Vec<&'v Value>> = None;
        for (key, child) in o {
            let walked = match (key.as_str(), child) {
                ("properties", Value::Object(named)) => named.iter().all(|(name, s)| {
                    let under: Vec<&Value> = values.iter().filter_map(|v| v.get(name)).collect();
                    self.apply(s, &under, nest, times, marking)
                }),
                ("prefixItems" | "items", Value::Array(list)) => list.iter().enumerate().all(|(i, s)| {
                    let at: Vec<&Value> = values.iter().filter_map(|v| v.get(i)).collect();
                    self.apply(s, &at, nest, times, marking)
                }),
                ("patternProperties", Value::Object(patterns)) if !patterns.is_empty() => {
                    let under = members.get_or_insert_with(|| members_of(values));
                    patterns.values().all(|s| self.apply(s, under, nest, times, marking))
                }
                (key, _) if EACH_ITEM.contains(&key) => {
                    let under = items.get_or_insert_with(|| items_of(values));
                    self.apply(child, under, nest, times, marking)
                }
                (key, _) if EACH_VALUE.contains(&key) => {
                    let under = members.get_or_insert_with(|| members_of(values));
                    self.apply(child, under, nest, times, marking)
                }
                ("propertyNames", _) => {
                    let keys: Vec<Value> = values
                        .iter()
                        .filter_map(|v| v.as_object())
                        .flat_map(|m| m.keys())
                        .map(|k| Value::String(k.clone()))
                        .collect();
                    let keys: Vec<&Value> = keys.iter().collect();
                    self.apply(child, &keys, nest, times, marking)
                }
                ("dependentSchemas", Value::Object(map)) => {
                    map.values().all(|s| self.apply(s, values, nest, times, marking))
                }
                (key, Value::Array(list)) if IN_PLACE_LISTS.contains(&key) => {
                    list.iter().all(|s| self.apply(s, values, nest, times, marking))
                }
                (key, _) if IN_PLACE.contains(&key) => self.apply(child, values, nest, times, marking),
                // Another keyword: an assertion costed above, or one the validator ignores.
                _ => true,
            };
            if !walked {
                return false;
            }
        }
        true
    }

    /// The steps of checking `o`'s own keywords (not its subschemas) at each of `values`:
    /// one a value, and one a keyword, name or item of a list it goes through; what it
    /// reads whole besides.
    fn cost(&self, o: &serde_json::Map<String, Value>, values: &[&Value]) -> usize {
        let width: usize = o
            .iter()
            .filter(|(k, _)| !DATA_KEYWORDS.contains(&k.as_str()))
            .map(|(_, v)| match v {
                Value::Array(a) => 1 + a.len(),
                Value::Object(m) => 1 + m.len(),
                _ => 1,
            })
            .sum();
        // An enum of strings or whole numbers is looked up; any other is gone through.
        let compared = |v: &Value| match v {
            Value::Array(a) if a.iter().all(Value::is_string) || a.iter().all(|x| x.is_i64() || x.is_u64()) => 1,
            v => nodes(v),
        };
        let data: usize =
            ["enum", "const", "required", "dependentRequired"].iter().filter_map(|k| o.get(*k)).map(compared).sum();
        let mut cost = values.len().saturating_mul(1 + width + data);
        let strings = || values.iter().filter_map(|v| v.as_str());
        if READS_STRINGS.iter().any(|k| o.contains_key(*k)) {
            cost = cost.saturating_add(strings().map(|s| s.len() / BYTES_A_STEP).sum());
        }
        if o.contains_key("pattern") {
            cost = cost.saturating_add(strings().map(|s| self.matching(s)).fold(0, usize::saturating_add));
        }
        if o.contains_key("uniqueItems") {
            // Compared pairwise when short, hashed whole when long.
            let compared = values
                .iter()
                .filter(|v| v.is_array())
                .map(|v| nodes(v).saturating_mul(v.as_array().map_or(0, Vec::len).min(15)));
            cost = cost.saturating_add(compared.fold(0, usize::saturating_add));
        }
        let key_patterns = o.get("patternProperties").and_then(Value::as_object).map_or(0, serde_json::Map::len);
        let key_readers = usize::from(o.contains_key("propertyNames")) + key_patterns;
        if key_readers > 0 {
            let keys = || values.iter().filter_map(|v| v.as_object()).flat_map(|m| m.keys());
            let read: usize = keys().map(|k| 1 + k.len() / BYTES_A_STEP).sum();
            let matched = keys().map(|k| self.matching(k)).fold(0, usize::saturating_add);
            cost = cost
                .saturating_add(read.saturating_mul(key_readers))
                .saturating_add(matched.saturating_mul(key_patterns));
        }
        cost
    }

    /// The steps of matching one `pattern` against `text`.
    fn matching(&self, text: &str) -> usize {
        if self.backtracking { BACKTRACKING_STEPS.max(text.len()) } else { 1 + text.len() / PATTERN_BYTES_A_STEP }
    }

    /// Takes the whole schema as applying to every value in `values` and below (a schema
    /// kept from before, whose references the walk cannot follow).
    fn as_whole(&mut self, values: &[&Value], times: usize) -> bool {
        let below: usize = values.iter().map(|v| nodes(v)).sum();
        self.step(nodes(self.root).saturating_mul(below).saturating_mul(times))
    }
}

/// The items of each array among `values`.
fn items_of<'v>(values: &[&'v Value]) -> Vec<&'v Value> {
    values.iter().filter_map(|v| v.as_array()).flatten().collect()
}

/// The values of each object among `values`.
fn members_of<'v>(values: &[&'v Value]) -> Vec<&'v Value> {
    values.iter().filter_map(|v| v.as_object()).flat_map(|m| m.values()).collect()
}

/// The JSON values in `v`, itself included, a string or key once more for each
/// [`BYTES_A_STEP`] bytes.
fn nodes(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(nodes).sum::<usize>(),
        Value::Object(o) => 1 + o.iter().map(|(k, v)| k.len() / BYTES_A_STEP + nodes(v)).sum::<usize>(),
        Value::String(s) => 1 + s.len() / BYTES_A_STEP,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use serde_json::json;

    use super::*;

    fn steps_to_check_linear(schema: &Value, detail: &Value) -> Option<usize> {
        steps_to_check(schema, detail, false)
    }

    /// Many branches applied to every item of a large array: the check that took 2.5 s.
    #[test]
    fn branches_applied_to_every_item_are_counted_for_every_item() {
        let branches = vec![json!({"minimum": 0}); 3_000];
        let numbers = Value::Array(vec![json!(1); 120_000]);
        assert_eq!(steps_to_check_linear(&json!({"items": {"allOf": branches.clone()}}), &numbers), None);
        let few = Value::Array(vec![json!(1); 100]);
        let steps = steps_to_check_linear(&json!({"items": {"allOf": branches.clone()}}), &few);
        assert!(steps.is_some_and(|w| w >= 300_000), "{steps:?}");
        // The same through a reference, or under `additionalProperties`.
        let by_ref = json!({"$defs": {"b": {"allOf": branches.clone()}}, "items": {"$ref": "#/$defs/b"}});
        assert_eq!(steps_to_check_linear(&by_ref, &Value::Array(vec![json!(1); 1_000])), None);
        let wide: serde_json::Map<String, Value> = (0..1_000).map(|i| (format!("k{i}"), json!(i))).collect();
        assert_eq!(
            steps_to_check_linear(&json!({"additionalProperties": {"allOf": branches}}), &Value::Object(wide)),
            None
        );
    }

    /// Many properties, each for its own field, of many objects: about the `detail`'s size;
    /// and a subschema under `items` counts only the items it applies to, not every value
    /// as deep elsewhere in the `detail`.
    #[test]
    fn a_subschema_counts_only_the_values_it_applies_to() {
        let properties: serde_json::Map<String, Value> =
            (0..200).map(|i| (format!("p{i}"), json!({"type": "string", "maxLength": 64}))).collect();
        let item = json!({"type": "object", "properties": properties, "required": ["p0", "p1"]});
        let fields: serde_json::Map<String, Value> = (0..200).map(|i| (format!("p{i}"), json!("v"))).collect();
        let detail = json!({"users": vec![Value::Object(fields); 250]});
        let schema = json!({"type": "object", "properties": {"users": {"type": "array", "items": item}}});
        let steps = steps_to_check_linear(&schema, &detail).unwrap();
        // 250 items of 200 fields: 50,000 values, each with its two keywords, and each
        // item's 200 names looked up: a tenth of the budget.
        assert!((150_000..=250_000).contains(&steps), "{steps}");
        let tags = json!({"properties": {"tags": {"items": {"enum": vec![json!("t"); 500]}}}});
        let steps = steps_to_check_linear(&tags, &json!({"tags": ["a"], "data": vec![1; 4_000]})).unwrap();
        assert!(steps < 1_000, "{steps}");
    }

    /// A chain of definitions each using the one before twice is walked as the validator
    /// checks it, each time it is reached: two to the power of its length.
    #[test]
    fn references_are_counted_each_time_they_are_reached() {
        let mut defs = serde_json::Map::new();
        defs.insert("d0".into(), json!({"items": {"minimum": 0}}));
        for i in 1..=17 {
            let before = format!("#/$defs/d{}", i - 1);
            defs.insert(format!("d{i}"), json!({"allOf": [{"$ref": before}, {"$ref": before}]}));
        }
        let chain = json!({"$defs": defs, "$ref": "#/$defs/d17"});
        assert_eq!(steps_to_check_linear(&chain, &Value::Array(vec![json!(1); 10_000])), None);
        assert!(steps_to_check_linear(&chain, &json!([1])).is_some(), "2^17 steps for one number");
        // A tree whose definition leads back into itself, one level down each time.
        let tree = json!({"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"});
        let nested = (0..50).fold(json!(1), |acc, _| json!([acc]));
        assert!(steps_to_check_linear(&tree, &nested).is_some_and(|s| s < 1_000));
        // A hundred branches each taking every item back to the root: each level of the
        // `detail` multiplies the work by a hundred, as the validator's does.
        let fan = json!({"allOf": vec![json!({"items": {"$ref": "#"}}); 100]});
        assert_eq!(steps_to_check_linear(&fan, &json!([vec![0; 5_000]])), None);
        // One leading back into itself in place is walked once at a value, and ends.
        assert!(steps_to_check_linear(&json!({"allOf": [{"$ref": "#"}]}), &json!(1)).is_some_and(|s| s < 20));
    }

    /// A chain of references deeper than the walk goes is past the budget, and the walk
    /// ends within half a tokio worker's stack (in a debug build; a release one takes less).
    #[test]
    fn a_chain_deeper_than_the_walk_goes_is_refused_within_the_stack() {
        let mut defs = serde_json::Map::new();
        defs.insert("d0".into(), json!({"minimum": 0}));
        for i in 1..=3_000 {
            defs.insert(format!("d{i}"), json!({"allOf": [{"$ref": format!("#/$defs/d{}", i - 1)}]}));
        }
        let chain = json!({"$defs": defs, "$ref": "#/$defs/d3000"});
        let walked =
            std::thread::Builder::new().stack_size(1 << 20).spawn(move || steps_to_check_linear(&chain, &json!(1)));
        assert_eq!(walked.unwrap().join().unwrap(), None);
    }

    /// References the walk cannot follow are found, so the schema can be refused as it is
    /// declared; a `$id` at the root only names the schema.
    #[test]
    fn references_the_walk_cannot_follow_are_found() {
        let anchored = json!({"items": {"$ref": "#node"}, "$defs": {"n": {"$anchor": "node"}}});
        assert!(unfollowable(&anchored).is_some_and(|why| why.contains("$anchor")));
        let nested = json!({"items": {"$id": "urn:i", "$defs": {"x": {}}, "$ref": "#/$defs/x"}, "$defs": {"x": {}}});
        assert!(unfollowable(&nested).is_some_and(|why| why.contains("$id")));
        let absolute = json!({"$id": "https://example.com/s", "items": {"$ref": "https://example.com/s#/$defs/a"}});
        assert!(unfollowable(&absolute).is_some_and(|why| why.contains("$ref")));
        let named = json!({"$id": "https://example.com/s", "items": {"$ref": "#/$defs/a"}, "$defs": {"a": {}}});
        assert_eq!(unfollowable(&named), None);
        assert_eq!(unfollowable(&json!({"enum": [{"$ref": "#nowhere"}], "const": {"$anchor": "x"}})), None, "data");
        let named = json!({"properties": {"$id": {"type": "string"}, "$anchor": {"$anchor": "a"}}});
        assert!(unfollowable(&named).is_some_and(|why| why.contains("$anchor")), "a property's schema is looked in");
        assert_eq!(unfollowable(&json!({"properties": {"$id": {"type": "string"}}})), None, "a property named `$id`");
    }

    /// `unevaluatedProperties` checks its applicators again: nested, it doubles each level.
    #[test]
    fn unevaluated_keywords_count_their_applicators_twice() {
        let nested = (0..20).fold(
            json!({"additionalProperties": {"type": "integer"}}),
            |inner, _| json!({"unevaluatedProperties": {}, "allOf": [inner]}),
        );
        let object: serde_json::Map<String, Value> = (0..1_000).map(|i| (format!("k{i}"), json!(i))).collect();
        assert_eq!(steps_to_check_linear(&nested, &Value::Object(object)), None);
    }

    /// Data a subschema compares each value with counts, and so do long strings and keys,
    /// and the items `uniqueItems` must tell apart.
    #[test]
    fn what_a_keyword_reads_whole_counts_for_its_size() {
        let objects = vec![json!({"a": 1}); 10_000];
        assert_eq!(
            steps_to_check_linear(&json!({"items": {"enum": objects}}), &Value::Array(vec![json!("y"); 300])),
            None
        );
        // An enum of strings is looked up, not gone through.
        let strings = vec![json!("x"); 10_000];
        assert!(
            steps_to_check_linear(&json!({"items": {"enum": strings}}), &Value::Array(vec![json!("y"); 300])).is_some()
        );
        let patterns = vec![json!({"pattern": "z$"}); 1_000];
        let long = "a".repeat(250_000);
        assert_eq!(
            steps_to_check_linear(&json!({"properties": {"s": {"allOf": patterns}}}), &json!({"s": long})),
            None
        );
        let names = vec![json!({"pattern": "z$"}); 1_000];
        let keyed = json!({long.clone(): 1});
        assert_eq!(steps_to_check_linear(&json!({"propertyNames": {"allOf": names}}), &keyed), None);
        // A pattern reads about two bytes a step: a hundred over 250 KB is 12.5 million.
        let few = vec![json!({"pattern": "^a"}); 100];
        assert_eq!(steps_to_check_linear(&json!({"properties": {"s": {"allOf": few}}}), &json!({"s": long})), None);
        // A kept schema's backtracking engine may take thousands of steps a string.
        let words = Value::Array(vec![json!("word"); 1_000]);
        let pattern = json!({"items": {"pattern": "^(?=w)word$"}});
        assert!(steps_to_check(&pattern, &words, false).is_some());
        assert_eq!(steps_to_check(&pattern, &words, true), None);
        let unique = vec![json!({"uniqueItems": true}); 3_000];
        let numbers: Vec<Value> = (0..1_000).map(|i| json!(i)).collect();
        assert_eq!(steps_to_check_linear(&json!({"allOf": unique}), &Value::Array(numbers)), None);
    }
}

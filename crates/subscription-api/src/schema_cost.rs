//! What checking a `detail` against a declared schema may cost, bounded before it is done.
//!
//! The validator checks each subschema against each value it applies to. Without a bound
//! the work is the schema's size times the `detail`'s: `{"items": {"allOf": [3,000
//! branches]}}` against 120,000 numbers took 2.5 s of CPU for one event (measured on a
//! 2-core AMD EPYC), and a tenant may publish a thousand a second. So the check is first
//! walked without being done: each subschema is taken to the values of the `detail` it
//! applies to (`properties` to the values under its names, `items` to every item, `allOf`
//! and a `$ref` to where their parent applies, and so on), and costs a step for each, more
//! for what it reads whole (an `enum`'s items, a long string or key, an array it must find
//! duplicates in). The walk stops as soon as the steps pass [`CHECK_BUDGET`], so it costs
//! at most that much itself. It follows the validator where it spends more:
//!
//! - a `$ref` is walked each time it is reached, but one that leads back into itself only
//!   once for each value (the validator remembers only such references' decisions, so a
//!   chain of definitions each using the one before twice costs two to the power of its
//!   length);
//! - a schema with `unevaluatedProperties` or `unevaluatedItems` walks its `allOf`,
//!   `anyOf`, `oneOf`, `if`, `then`, `else` and `dependentSchemas` twice, as the
//!   validator checks them again to find what they evaluated;
//! - a reference it cannot follow (an anchor, a `$dynamicRef`) is taken as the whole
//!   schema applying to every value below.

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

/// Keywords whose subschema applies to every item of an array.
const EACH_ITEM: [&str; 3] = ["items", "contains", "unevaluatedItems"];
/// Keywords whose subschema applies to every value of an object.
const EACH_VALUE: [&str; 2] = ["additionalProperties", "unevaluatedProperties"];
/// Keywords whose subschemas apply where their parent does, checked again by `unevaluated*`.
const IN_PLACE: [&str; 7] = ["allOf", "anyOf", "oneOf", "if", "then", "else", "dependentSchemas"];
/// Keywords that read a string whole.
const READS_STRINGS: [&str; 4] = ["pattern", "format", "minLength", "maxLength"];
/// Keywords holding subschemas applied only through a reference.
const DEFINITIONS: [&str; 2] = ["$defs", "definitions"];

/// The steps checking `detail` against `schema` takes, or `None` past [`CHECK_BUDGET`].
pub(crate) fn steps_to_check(schema: &Value, detail: &Value) -> Option<usize> {
    let mut walk = Walk { root: schema, steps: 0, refs: Vec::new(), cyclic: HashSet::new(), seen: HashSet::new() };
    walk.apply(schema, &[detail], 0).then_some(walk.steps)
}

/// One walk of a check.
struct Walk<'a> {
    root: &'a Value,
    steps: usize,
    /// The targets of the references being followed: one reached again leads back into
    /// itself.
    refs: Vec<*const Value>,
    /// The references found to lead back into themselves.
    cyclic: HashSet<*const Value>,
    /// The values such references were walked at, each walked once.
    seen: HashSet<(*const Value, *const Value)>,
}

impl<'a> Walk<'a> {
    /// Counts `n` steps; false once past the budget.
    fn step(&mut self, n: usize) -> bool {
        self.steps = self.steps.saturating_add(n);
        self.steps <= CHECK_BUDGET
    }

    /// Walks `schema` applied to each of `values`; false once past the budget.
    fn apply<'v>(&mut self, schema: &'a Value, values: &[&'v Value], nest: usize) -> bool {
        if values.is_empty() {
            return true;
        }
        if nest > MAX_NEST {
            return false;
        }
        let o = match schema {
            Value::Object(o) => o,
            Value::Bool(_) => return self.step(values.len()),
            // A keyword's value that is not a schema (a `type` list, a `required` name).
            _ => return true,
        };
        let data: usize =
            ["enum", "const", "required", "dependentRequired"].iter().filter_map(|k| o.get(*k)).map(nodes).sum();
        let mut cost = values.len().saturating_mul(1 + data);
        if READS_STRINGS.iter().any(|k| o.contains_key(*k)) {
            cost = cost.saturating_add(values.iter().filter_map(|v| v.as_str()).map(|s| s.len() / BYTES_A_STEP).sum());
        }
        if o.contains_key("uniqueItems") {
            cost = cost.saturating_add(values.iter().filter_map(|v| v.as_array()).map(Vec::len).sum());
        }
        let key_readers = o.get("patternProperties").and_then(Value::as_object).map_or(0, serde_json::Map::len);
        if key_readers > 0 {
            let keys: usize = values
                .iter()
                .filter_map(|v| v.as_object())
                .flat_map(|m| m.keys())
                .map(|k| 1 + k.len() / BYTES_A_STEP)
                .sum();
            cost = cost.saturating_add(keys.saturating_mul(key_readers));
        }
        if !self.step(cost) {
            return false;
        }
        if o.contains_key("$dynamicRef") || o.contains_key("$recursiveRef") {
            return self.as_whole(values);
        }
        if let Some(reference) = o.get("$ref") {
            let Some(target) = reference.as_str().and_then(|r| local_target(self.root, r)) else {
                return self.as_whole(values);
            };
            let target_at: *const Value = target;
            if self.refs.contains(&target_at) {
                self.cyclic.insert(target_at);
            }
            let fresh: Vec<&Value> = if self.cyclic.contains(&target_at) {
                values.iter().copied().filter(|v| self.seen.insert((target_at, *v))).collect()
            } else {
                values.to_vec()
            };
            self.refs.push(target_at);
            let walked = self.apply(target, &fresh, nest + 1);
            self.refs.pop();
            if !walked {
                return false;
            }
        }
        let again = o.contains_key("unevaluatedProperties") || o.contains_key("unevaluatedItems");
        let items = || values.iter().filter_map(|v| v.as_array()).flatten().collect::<Vec<_>>();
        let members = || values.iter().filter_map(|v| v.as_object()).flat_map(|m| m.values()).collect::<Vec<_>>();
        for (key, child) in o {
            let key = key.as_str();
            if key == "$ref" || DATA_KEYWORDS.contains(&key) || DEFINITIONS.contains(&key) {
                continue;
            }
            let walked = match (key, child) {
                ("properties", Value::Object(named)) => named.iter().all(|(name, s)| {
                    let under: Vec<&Value> = values.iter().filter_map(|v| v.get(name)).collect();
                    self.apply(s, &under, nest + 1)
                }),
                // `items` as a list is the older drafts' `prefixItems`.
                ("prefixItems" | "items", Value::Array(list)) => list.iter().enumerate().all(|(i, s)| {
                    let at: Vec<&Value> = values.iter().filter_map(|v| v.get(i)).collect();
                    self.apply(s, &at, nest + 1)
                }),
                ("patternProperties", Value::Object(patterns)) => {
                    let under = members();
                    patterns.values().all(|s| self.apply(s, &under, nest + 1))
                }
                _ if EACH_ITEM.contains(&key) || key == "additionalItems" => self.apply(child, &items(), nest + 1),
                _ if EACH_VALUE.contains(&key) => self.apply(child, &members(), nest + 1),
                ("propertyNames", _) => {
                    let keys: Vec<Value> = values
                        .iter()
                        .filter_map(|v| v.as_object())
                        .flat_map(|m| m.keys())
                        .map(|k| Value::String(k.clone()))
                        .collect();
                    self.apply(child, &keys.iter().collect::<Vec<_>>(), nest + 1)
                }
                ("dependentSchemas", Value::Object(map)) => {
                    (0..1 + usize::from(again)).all(|_| map.values().all(|s| self.apply(s, values, nest + 1)))
                }
                (_, Value::Array(list)) => {
                    let times = 1 + usize::from(again && IN_PLACE.contains(&key));
                    (0..times).all(|_| list.iter().all(|s| self.apply(s, values, nest + 1)))
                }
                (_, Value::Object(_) | Value::Bool(_)) => {
                    let times = 1 + usize::from(again && IN_PLACE.contains(&key));
                    (0..times).all(|_| self.apply(child, values, nest + 1))
                }
                // A keyword's value that is not a schema (a `type`, a `pattern`).
                _ => true,
            };
            if !walked {
                return false;
            }
        }
        true
    }

    /// Takes the whole schema as applying to every value in `values` and below.
    fn as_whole(&mut self, values: &[&Value]) -> bool {
        let below: usize = values.iter().map(|v| nodes(v)).sum();
        self.step(nodes(self.root).saturating_mul(below))
    }
}

/// The JSON values in `v`, itself included, a string once more for each
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

    /// Many branches applied to every item of a large array: the check that took 2.5 s.
    #[test]
    fn branches_applied_to_every_item_are_counted_for_every_item() {
        let branches = vec![json!({"minimum": 0}); 3_000];
        let numbers = Value::Array(vec![json!(1); 120_000]);
        assert_eq!(steps_to_check(&json!({"items": {"allOf": branches.clone()}}), &numbers), None);
        let few = Value::Array(vec![json!(1); 100]);
        let steps = steps_to_check(&json!({"items": {"allOf": branches.clone()}}), &few);
        assert!(steps.is_some_and(|w| w >= 300_000), "{steps:?}");
        // The same through a reference, or under `additionalProperties`.
        let by_ref = json!({"$defs": {"b": {"allOf": branches.clone()}}, "items": {"$ref": "#/$defs/b"}});
        assert_eq!(steps_to_check(&by_ref, &Value::Array(vec![json!(1); 1_000])), None);
        let wide: serde_json::Map<String, Value> = (0..1_000).map(|i| (format!("k{i}"), json!(i))).collect();
        assert_eq!(steps_to_check(&json!({"additionalProperties": {"allOf": branches}}), &Value::Object(wide)), None);
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
        let steps = steps_to_check(&schema, &detail).unwrap();
        // 250 items of 200 fields: 50,000 values; each item's schema and required list.
        assert!((50_000..=52_000).contains(&steps), "{steps}");
        let tags = json!({"properties": {"tags": {"items": {"enum": vec![json!("t"); 500]}}}});
        let steps = steps_to_check(&tags, &json!({"tags": ["a"], "data": vec![1; 4_000]})).unwrap();
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
        assert_eq!(steps_to_check(&chain, &Value::Array(vec![json!(1); 10_000])), None);
        assert!(steps_to_check(&chain, &json!([1])).is_some(), "2^17 steps for one number");
        // A tree whose definition leads back into itself, one level down each time.
        let tree = json!({"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"});
        let nested = (0..50).fold(json!(1), |acc, _| json!([acc]));
        assert!(steps_to_check(&tree, &nested).is_some_and(|s| s < 1_000));
        // One leading back into itself in place is walked once at a value, and ends.
        assert!(steps_to_check(&json!({"allOf": [{"$ref": "#"}]}), &json!(1)).is_some_and(|s| s < 10));
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
        let walked = std::thread::Builder::new().stack_size(1 << 20).spawn(move || steps_to_check(&chain, &json!(1)));
        assert_eq!(walked.unwrap().join().unwrap(), None);
    }

    /// `unevaluatedProperties` checks its applicators again: nested, it doubles each level.
    #[test]
    fn unevaluated_keywords_count_their_applicators_twice() {
        let nested = (0..20).fold(
            json!({"additionalProperties": {"type": "integer"}}),
            |inner, _| json!({"unevaluatedProperties": {}, "allOf": [inner]}),
        );
        let object: serde_json::Map<String, Value> = (0..1_000).map(|i| (format!("k{i}"), json!(i))).collect();
        assert_eq!(steps_to_check(&nested, &Value::Object(object)), None);
    }

    /// Data a subschema compares each value with counts, and so do long strings and keys,
    /// and the items `uniqueItems` must tell apart.
    #[test]
    fn what_a_keyword_reads_whole_counts_for_its_size() {
        let many = vec![json!("x"); 10_000];
        assert_eq!(steps_to_check(&json!({"items": {"enum": many}}), &Value::Array(vec![json!("y"); 300])), None);
        let patterns = vec![json!({"pattern": "z$"}); 1_000];
        let long = "a".repeat(250_000);
        assert_eq!(steps_to_check(&json!({"properties": {"s": {"allOf": patterns}}}), &json!({"s": long})), None);
        let names = vec![json!({"pattern": "z$"}); 1_000];
        let keyed = json!({long.clone(): 1});
        assert_eq!(steps_to_check(&json!({"propertyNames": {"allOf": names}}), &keyed), None);
        let unique = vec![json!({"uniqueItems": true}); 3_000];
        let numbers: Vec<Value> = (0..1_000).map(|i| json!(i)).collect();
        assert_eq!(steps_to_check(&json!({"allOf": unique}), &Value::Array(numbers)), None);
    }
}

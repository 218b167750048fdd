//! What checking a `detail` against a declared schema may cost, bounded before it is done.
//!
//! The validator checks each subschema against each value it applies to, once (it
//! remembers what a reference decided for a part of the event). Without a bound the work is
//! the schema's size times the `detail`'s: `{"items": {"allOf": [3,000 branches]}}` against
//! 120,000 numbers took 2.5 s of CPU for one event (measured on a 2-core AMD EPYC), and a
//! tenant may publish a thousand a second. So before an event is checked, the work is
//! reckoned from where in the `detail` each subschema applies:
//!
//! - a subschema reached through `items`, `additionalProperties`, `patternProperties`,
//!   `contains` and the like applies to every value one level down;
//! - one reached through `properties` or `prefixItems` applies to at most one child of each
//!   value its parent applies to;
//! - one reached through `allOf`, `anyOf`, `not`, `if`, a `$ref` (unfolded in place) and the
//!   like applies where its parent does.
//!
//! A subschema costs one check for each value it may apply to, plus the items of its
//! `enum`, `const` and `required`; a string counts once more for each 64 bytes. A schema
//! whose references cannot be unfolded (recursive, anchors) is reckoned as if every
//! subschema applied to every value. Ordinary schemas, many properties each for its own
//! field, come to about the `detail`'s size.

use std::collections::HashMap;

use serde_json::Value;

use crate::declared_schema::{DATA_KEYWORDS, ELSEWHERE, local_target};

/// The most work checking one `detail` may take (about 15 ms of CPU); past it the event is
/// refused, naming its `detail`.
pub(crate) const CHECK_BUDGET: usize = 2_000_000;
/// The most subschemas reckoned one by one (references unfolded); past it the schema is
/// reckoned as a whole.
const MAX_WEIGHED: usize = 100_000;
/// How deep a schema is followed; deeper is reckoned as a whole.
const MAX_DEPTH: usize = 128;

/// Keywords whose subschema applies to every child of a value.
const EACH_CHILD: [&str; 8] = [
    "items",
    "additionalItems",
    "unevaluatedItems",
    "contains",
    "additionalProperties",
    "unevaluatedProperties",
    "propertyNames",
    "patternProperties",
];
/// Keywords holding subschemas that each apply to at most one child of a value.
const ONE_CHILD: [&str; 2] = ["properties", "prefixItems"];
/// Keywords holding subschemas applied only through a reference, unfolded where it is.
const DEFINITIONS: [&str; 2] = ["$defs", "definitions"];

/// A schema's side of the reckoning.
#[derive(Debug)]
pub(crate) enum SchemaCost {
    /// Weights by where they apply: `(k, d)` is a subschema applying at depth `d` of the
    /// `detail`, to at most as many values as lie at depth `k` (the last level reached
    /// through a keyword that applies to every child; the root's is 1).
    Placed(HashMap<(usize, usize), usize>),
    /// The whole schema's weight (every value in it, as if each were a subschema),
    /// applying to every value.
    Whole(usize),
}

impl SchemaCost {
    /// Reckons `schema`'s side.
    pub(crate) fn of(schema: &Value) -> Self {
        let mut w = Weigher { root: schema, placed: HashMap::new(), weighed: 0, unfolding: Vec::new() };
        if w.weigh(schema, 0, 0, 0) { Self::Placed(w.placed) } else { Self::Whole(nodes(schema)) }
    }

    /// The work of checking `detail`: at most [`CHECK_BUDGET`], or `None` past it.
    pub(crate) fn of_checking(&self, detail: &Value) -> Option<usize> {
        let mut values = Vec::new();
        count_by_depth(detail, 0, &mut values);
        let at = |d: usize| if d == 0 { 1 } else { values.get(d).copied().unwrap_or(0) };
        let work = match self {
            Self::Placed(placed) => placed
                .iter()
                .map(|(&(k, d), &w)| w.saturating_mul(at(k).min(at(d))))
                .fold(0usize, usize::saturating_add),
            Self::Whole(w) => w.saturating_mul(values.iter().sum()),
        };
        (work <= CHECK_BUDGET).then_some(work)
    }
}

/// Walks a schema, placing each subschema's weight.
struct Weigher<'a> {
    root: &'a Value,
    placed: HashMap<(usize, usize), usize>,
    weighed: usize,
    unfolding: Vec<String>,
}

impl<'a> Weigher<'a> {
    /// Places `v`, a subschema applying at depth `d` to at most the values at depth `k`;
    /// false if it cannot be placed (see [`SchemaCost::Whole`]). `nest` is how deep in the
    /// schema, references followed.
    fn weigh(&mut self, v: &'a Value, k: usize, d: usize, nest: usize) -> bool {
        self.weighed += 1;
        if self.weighed > MAX_WEIGHED || nest > MAX_DEPTH {
            return false;
        }
        let o = match v {
            Value::Bool(_) => {
                *self.placed.entry((k, d)).or_default() += 1;
                return true;
            }
            Value::Object(o) => o,
            // Not a schema: a keyword's value (a `type` list, a `pattern`).
            _ => return true,
        };
        if (nest > 0 && ELSEWHERE.iter().any(|key| o.contains_key(*key)))
            || o.contains_key("$dynamicRef")
            || o.contains_key("$recursiveRef")
        {
            return false;
        }
        let data: usize =
            ["enum", "const", "required", "dependentRequired"].iter().filter_map(|key| o.get(*key)).map(nodes).sum();
        *self.placed.entry((k, d)).or_default() += 1 + data;
        if let Some(reference) = o.get("$ref") {
            let Some((key, target)) = reference.as_str().and_then(|r| Some((r, local_target(self.root, r)?))) else {
                return false;
            };
            if self.unfolding.iter().any(|u| u == key) {
                return false;
            }
            self.unfolding.push(key.to_owned());
            let placed = self.weigh(target, k, d, nest + 1);
            self.unfolding.pop();
            if !placed {
                return false;
            }
        }
        for (key, child) in o {
            let key = key.as_str();
            if key == "$ref" || DATA_KEYWORDS.contains(&key) || DEFINITIONS.contains(&key) {
                continue;
            }
            let placed = match child {
                // `items` as a list is the older drafts' `prefixItems`.
                Value::Array(list) if key == "items" || ONE_CHILD.contains(&key) => {
                    list.iter().all(|s| self.weigh(s, k, d + 1, nest + 1))
                }
                Value::Object(map) if ONE_CHILD.contains(&key) => {
                    map.values().all(|s| self.weigh(s, k, d + 1, nest + 1))
                }
                Value::Object(map) if key == "patternProperties" => {
                    map.values().all(|s| self.weigh(s, d + 1, d + 1, nest + 1))
                }
                _ if EACH_CHILD.contains(&key) => self.weigh(child, d + 1, d + 1, nest + 1),
                // `allOf`, `anyOf`, `oneOf`, `dependentSchemas` and any other keyword's
                // list or map of subschemas: applied where this one is.
                Value::Array(list) => list.iter().all(|s| self.weigh(s, k, d, nest + 1)),
                Value::Object(map) if key == "dependentSchemas" => map.values().all(|s| self.weigh(s, k, d, nest + 1)),
                _ => self.weigh(child, k, d, nest + 1),
            };
            if !placed {
                return false;
            }
        }
        true
    }
}

/// The JSON values in `v`, itself included.
fn nodes(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(nodes).sum::<usize>(),
        Value::Object(o) => 1 + o.values().map(nodes).sum::<usize>(),
        _ => 1,
    }
}

/// Counts the values at each depth of `v` into `values` (a string once more for each 64
/// bytes: a `pattern` or `maxLength` reads it whole).
fn count_by_depth(v: &Value, depth: usize, values: &mut Vec<usize>) {
    if values.len() <= depth {
        values.resize(depth + 1, 0);
    }
    values[depth] += match v {
        Value::String(s) => 1 + s.len() / 64,
        _ => 1,
    };
    match v {
        Value::Array(items) => items.iter().for_each(|i| count_by_depth(i, depth + 1, values)),
        Value::Object(o) => o.values().for_each(|i| count_by_depth(i, depth + 1, values)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

    use serde_json::json;

    use super::*;

    fn work(schema: Value, detail: Value) -> Option<usize> {
        SchemaCost::of(&schema).of_checking(&detail)
    }

    /// Many branches applied to every item of a large array: the work that took 2.5 s.
    #[test]
    fn branches_applied_to_every_item_are_counted_for_every_item() {
        let branches = vec![json!({"minimum": 0}); 3_000];
        let numbers = Value::Array(vec![json!(1); 120_000]);
        assert_eq!(work(json!({"items": {"allOf": branches.clone()}}), numbers), None);
        let few = Value::Array(vec![json!(1); 100]);
        assert!(work(json!({"items": {"allOf": branches.clone()}}), few).is_some_and(|w| w >= 300_000));
        // The same through a reference, or under `additionalProperties`.
        let by_ref = json!({"$defs": {"b": {"allOf": branches.clone()}}, "items": {"$ref": "#/$defs/b"}});
        assert_eq!(work(by_ref, Value::Array(vec![json!(1); 1_000])), None);
        let wide: serde_json::Map<String, Value> = (0..1_000).map(|i| (format!("k{i}"), json!(i))).collect();
        assert_eq!(work(json!({"additionalProperties": {"allOf": branches}}), Value::Object(wide)), None);
    }

    /// Many properties, each for its own field, of many objects: about the `detail`'s size.
    #[test]
    fn properties_each_for_its_own_field_cost_about_the_details_size() {
        let properties: serde_json::Map<String, Value> =
            (0..200).map(|i| (format!("p{i}"), json!({"type": "string", "maxLength": 64}))).collect();
        let item = json!({"type": "object", "properties": properties, "required": ["p0", "p1"]});
        let fields: serde_json::Map<String, Value> = (0..200).map(|i| (format!("p{i}"), json!("v"))).collect();
        let detail = json!({"users": vec![Value::Object(fields); 250]});
        let schema = json!({"type": "object", "properties": {"users": {"type": "array", "items": item}}});
        let w = work(schema, detail).unwrap();
        // 250 items of 200 fields: 50,000 values; each item's schema and required list.
        assert!((50_000..=60_000).contains(&w), "{w}");
    }

    /// A schema whose references cannot be unfolded is reckoned as a whole.
    #[test]
    fn a_recursive_schema_is_reckoned_as_a_whole() {
        let tree = json!({"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"});
        let cost = SchemaCost::of(&tree);
        assert!(matches!(cost, SchemaCost::Whole(_)), "{cost:?}");
        let nested = (0..50).fold(json!(1), |acc, _| json!([acc]));
        assert!(cost.of_checking(&nested).is_some());
    }

    /// Data a subschema compares each value with counts, and so does a long string.
    #[test]
    fn an_enum_and_a_long_string_count_for_their_size() {
        let many = vec![json!("x"); 10_000];
        assert_eq!(work(json!({"items": {"enum": many}}), Value::Array(vec![json!("y"); 300])), None);
        let patterns = vec![json!({"pattern": "z$"}); 1_000];
        let long = "a".repeat(250_000);
        assert_eq!(work(json!({"items": {"allOf": patterns}}), json!([long])), None);
    }
}

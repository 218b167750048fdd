//! HTML forms whose input names are the API's own field paths (`auth.password`,
//! `headers[2].name`), so a form becomes the API's JSON document, and the API's field errors
//! land on the input they name.

use serde_json::{Map, Value};

/// The form's fields in order.
pub fn parse(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// The first value of `name`.
pub fn value<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

enum Step {
    Key(String),
    Index(usize),
}

fn steps(path: &str) -> Vec<Step> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            out.push(Step::Key(key.to_owned()));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Step::Index(i));
            }
        }
    }
    out
}

fn slot<'a>(at: &'a mut Value, step: &Step) -> &'a mut Value {
    match step {
        Step::Key(k) => {
            if !at.is_object() {
                *at = Value::Object(Map::new());
            }
            // An object now: indexing inserts the key.
            &mut at[k.as_str()]
        }
        Step::Index(i) => {
            if !at.is_array() {
                *at = Value::Array(Vec::new());
            }
            if let Value::Array(items) = at {
                while items.len() <= *i {
                    items.push(Value::Null);
                }
            }
            // An array long enough now.
            &mut at[*i]
        }
    }
}

/// The most rows a form's list may have: more than any list of a hook (its sites, 100).
const MAX_ROWS: usize = 100;

/// The most steps of a path a form makes: `auth.body_params[0].key` has four.
const MAX_STEPS: usize = 6;

/// Sets `value` at `path` in `doc`, making the objects and arrays on the way. A path the
/// console's forms never make (a row past [`MAX_ROWS`], a list inside a list, more than
/// [`MAX_STEPS`] steps) is left out: the array up to a posted index is made whole, so
/// `headers[99999999999]` would have filled the memory of the process from a single field,
/// and the document is walked recursively, so `headers[0].a.a.a…` 300,000 deep would have
/// overflowed the stack and aborted the process.
pub fn set(doc: &mut Value, path: &str, value: Value) {
    let steps = steps(path);
    let indexes: Vec<usize> =
        steps.iter().filter_map(|s| if let Step::Index(i) = s { Some(*i) } else { None }).collect();
    if steps.len() > MAX_STEPS || indexes.len() > 1 || indexes.iter().any(|i| *i >= MAX_ROWS) {
        return;
    }
    let mut at = doc;
    for step in steps {
        at = slot(at, &step);
    }
    *at = value;
}

/// Rows of an array that are entirely empty (a form's spare rows) are dropped, and the
/// rest renumbered; arrays are then compacted so indexes match what the API will name.
pub fn compact(v: &mut Value) {
    match v {
        Value::Array(items) => {
            items.retain(|i| !is_blank(i));
            items.iter_mut().for_each(compact);
        }
        Value::Object(m) => m.values_mut().for_each(compact),
        _ => {}
    }
}

fn is_blank(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        // A row's Secret box says how to keep its value, not that the row is wanted: a
        // secret row emptied of its name and value is removed, not posted as
        // `{"secret": true}` (which the API refuses for want of a name).
        Value::Object(m) => m.iter().all(|(k, v)| k == "secret" || is_blank(v)),
        Value::Array(a) => a.iter().all(is_blank),
        Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_build_the_document_the_api_reads() {
        let mut doc = json!({});
        set(&mut doc, "name", json!("h"));
        set(&mut doc, "auth.type", json!("BASIC"));
        set(&mut doc, "headers[1].name", json!("X-B"));
        set(&mut doc, "headers[0].name", json!("X-A"));
        set(&mut doc, "headers[0].secret", json!(true));
        set(&mut doc, "auth.body_params[0].key", json!("k"));
        assert_eq!(
            doc,
            json!({"name": "h", "auth": {"type": "BASIC", "body_params": [{"key": "k"}]},
                   "headers": [{"name": "X-A", "secret": true}, {"name": "X-B"}]})
        );
    }

    #[test]
    fn paths_no_form_makes_are_left_out() {
        let mut doc = json!({});
        // Checked one by one, so that a regression fails here before the largest index
        // is tried.
        let deep = format!("headers[0].name{}", ".a".repeat(300_000));
        for path in ["headers[100].name", "headers[1][99].name", "headers[18446744073709551615].name", &deep] {
            set(&mut doc, path, json!("X"));
            assert_eq!(doc, json!({}), "{path} was set");
        }
        set(&mut doc, "headers[99].name", json!("X"));
        assert_eq!(doc["headers"].as_array().map(Vec::len), Some(100));
    }

    #[test]
    fn spare_rows_disappear() {
        let mut doc =
            json!({"headers": [{"name": "X-A", "value": "1"}, {"name": "", "value": ""}, null, {"name": "X-C"}]});
        compact(&mut doc);
        assert_eq!(doc, json!({"headers": [{"name": "X-A", "value": "1"}, {"name": "X-C"}]}));
    }

    #[test]
    fn a_url_encoded_body_reads_back_in_order() {
        let f = parse(b"name=a+b&headers%5B0%5D.name=X-A&x=%26");
        assert_eq!(value(&f, "name"), Some("a b"));
        assert_eq!(value(&f, "headers[0].name"), Some("X-A"));
        assert_eq!(value(&f, "x"), Some("&"));
    }
}

//! Every answer the e2e suite gets is checked against the OpenAPI document the service
//! publishes: the documented status for the operation, and a body valid under the
//! documented schema. The document cannot drift from what the service does.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::{Value, json};

/// The published document, with a cache of compiled response validators.
pub struct Spec {
    doc: Value,
    validators: Mutex<HashMap<String, std::sync::Arc<jsonschema::Validator>>>,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec").finish_non_exhaustive()
    }
}

impl Spec {
    /// The service's document (`GET /v1/openapi.json` serves the same bytes).
    pub fn get() -> &'static Spec {
        static SPEC: OnceLock<Spec> = OnceLock::new();
        SPEC.get_or_init(|| Spec {
            doc: serde_json::from_str(subscription_api::OPENAPI).expect("openapi.json is JSON"),
            validators: Mutex::new(HashMap::new()),
        })
    }

    /// The document.
    pub fn doc(&self) -> &Value {
        &self.doc
    }

    /// The path template a concrete path matches, if any.
    pub fn template_for(&self, path: &str) -> Option<String> {
        let path = path.split('?').next().unwrap_or(path);
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        self.doc["paths"]
            .as_object()?
            .keys()
            .find(|t| {
                let tsegs: Vec<&str> = t.trim_matches('/').split('/').collect();
                tsegs.len() == segs.len() && tsegs.iter().zip(&segs).all(|(t, s)| t.starts_with('{') || t == s)
            })
            .cloned()
    }

    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) {
            Some(pointer) => self.doc.pointer(pointer).unwrap_or(&Value::Null),
            None => v,
        }
    }

    /// Checks one answer; `Err` says how it departs from the document.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        status: u16,
        content_type: Option<&str>,
        body: &str,
    ) -> Result<(), String> {
        let Some(template) = self.template_for(path) else { return Ok(()) };
        let op = &self.doc["paths"][&template][method.to_ascii_lowercase()];
        if op.is_null() {
            return if status == 405 { Ok(()) } else { Err(format!("{method} {template} is not documented")) };
        }
        let responses = &op["responses"];
        let response = responses.get(status.to_string()).or_else(|| responses.get("default"));
        let Some(response) = response.map(|r| self.resolve(r)) else {
            return Err(format!("{method} {template} answered {status}, which is not documented"));
        };
        let Some(content) = response.get("content").and_then(Value::as_object) else {
            return if body.trim().is_empty() {
                Ok(())
            } else {
                Err(format!("{method} {template} {status}: documented without a body"))
            };
        };
        let media = content_type.unwrap_or("").split(';').next().unwrap_or("").trim().to_owned();
        let Some(media_doc) = content.get(&media) else {
            return Err(format!("{method} {template} {status}: content type {media:?} is not documented"));
        };
        let Some(schema) = media_doc.get("schema") else { return Ok(()) };
        let value: Value =
            serde_json::from_str(body).map_err(|e| format!("{method} {template} {status}: not JSON: {e}"))?;
        let key = format!("{method} {template} {status} {media}");
        let validator = {
            let mut cache = self.validators.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match cache.get(&key) {
                Some(v) => v.clone(),
                None => {
                    // The schema's `$ref`s point into the document's components; give them a root.
                    let root = json!({ "components": self.doc["components"], "allOf": [schema] });
                    let v = std::sync::Arc::new(
                        jsonschema::options()
                            .with_draft(jsonschema::Draft::Draft202012)
                            .build(&root)
                            .map_err(|e| format!("{key}: the documented schema does not compile: {e}"))?,
                    );
                    cache.insert(key.clone(), v.clone());
                    v
                }
            }
        };
        let errors: Vec<String> =
            validator.iter_errors(&value).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        if errors.is_empty() { Ok(()) } else { Err(format!("{key}: {}\nbody: {body}", errors.join("; "))) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn departures_from_the_document_are_caught() {
        let s = Spec::get();
        assert_eq!(s.check("GET", "/v1/health", 200, Some("application/json"), r#"{"status":"ok"}"#), Ok(()));
        assert!(s.check("GET", "/v1/health", 200, Some("application/json"), r#"{"status":5}"#).is_err());
        assert!(s.check("GET", "/v1/health", 418, Some("application/json"), "{}").is_err());
        assert!(s.check("GET", "/v1/hooks/01KAKSAMP4E000000000H00K01", 200, Some("application/json"), "{}").is_err());
        assert!(s.check("GET", "/v1/hooks", 401, Some("text/plain"), "no").is_err());
        assert_eq!(
            s.template_for("/v1/hooks/abc/deliveries/def/retry").as_deref(),
            Some("/v1/hooks/{id}/deliveries/{delivery_id}/retry")
        );
    }
}

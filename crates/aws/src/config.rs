//! Configuration from the environment, checked at cold start: a missing or bad variable
//! stops the function with an error naming it.

use hookbridge_core::settings::{Defaults, Settings, SettingsError};

use crate::init::Resources;

/// `HOOKBRIDGE_TABLE`: the DynamoDB table.
pub const TABLE: &str = "HOOKBRIDGE_TABLE";
/// `HOOKBRIDGE_BUS`: the EventBridge bus (name or ARN).
pub const BUS: &str = "HOOKBRIDGE_BUS";
/// `HOOKBRIDGE_INGEST_QUEUE_URL`: the ingest queue.
pub const INGEST_QUEUE_URL: &str = "HOOKBRIDGE_INGEST_QUEUE_URL";
/// `HOOKBRIDGE_DELIVERY_QUEUE_URL`: the delivery queue.
pub const DELIVERY_QUEUE_URL: &str = "HOOKBRIDGE_DELIVERY_QUEUE_URL";
/// `HOOKBRIDGE_SLOW_QUEUE_URL`: the delivery queue's slow lane.
pub const SLOW_QUEUE_URL: &str = "HOOKBRIDGE_SLOW_QUEUE_URL";
/// `HOOKBRIDGE_VERIFY_QUEUE_URL`: the verify queue.
pub const VERIFY_QUEUE_URL: &str = "HOOKBRIDGE_VERIFY_QUEUE_URL";
/// `HOOKBRIDGE_KMS_KEY`: the KMS key sealing hook secrets (id, ARN or alias).
pub const KMS_KEY: &str = "HOOKBRIDGE_KMS_KEY";

/// Where the AWS resources are, and the deployment settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Deployment settings shared with the embedded backend.
    pub settings: Settings,
    /// The resources the functions use.
    pub resources: Resources,
}

impl Config {
    /// Reads the Lambda functions' configuration from the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the configuration through `get`, with a cloud deployment's defaults.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let settings = Settings::from_lookup(&get, &Defaults::cloud())?;
        let required = |variable: &'static str| {
            get(variable).filter(|v| !v.trim().is_empty()).ok_or_else(|| SettingsError {
                variable,
                message: "is required (template.yaml sets it for every function)".to_owned(),
            })
        };
        let resources = Resources {
            table: required(TABLE)?,
            bus: required(BUS)?,
            ingest_queue_url: required(INGEST_QUEUE_URL)?,
            delivery_queue_url: required(DELIVERY_QUEUE_URL)?,
            slow_queue_url: required(SLOW_QUEUE_URL)?,
            verify_queue_url: required(VERIFY_QUEUE_URL)?,
            kms_key: required(KMS_KEY)?,
        };
        Ok(Self { settings, resources })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_variable_is_named() {
        // No token key among them: only the API checks tokens, and it says so itself.
        let all = [
            (TABLE, "t"),
            (BUS, "b"),
            (INGEST_QUEUE_URL, "i"),
            (DELIVERY_QUEUE_URL, "d"),
            (SLOW_QUEUE_URL, "s"),
            (VERIFY_QUEUE_URL, "v"),
            (KMS_KEY, "alias/k"),
        ];
        let lookup = |skip: &str| {
            let vars: Vec<(String, String)> =
                all.iter().filter(|(k, _)| *k != skip).map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        };
        assert!(Config::from_lookup(lookup("none")).is_ok());
        for (var, _) in all {
            let e = Config::from_lookup(lookup(var)).unwrap_err();
            assert_eq!(e.variable, var);
        }
    }
}

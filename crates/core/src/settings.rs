//! Deployment settings, read from environment variables by a lookup function the caller
//! passes in (so this stays pure and testable). Every variable is documented once, here
//! and in the README's configuration table; a bad value fails at start-up, naming the
//! variable.

use std::str::FromStr;
use std::time::Duration;

use crate::health::DisableRule;
use crate::hook::{Network, NetworkPolicy};
use crate::retry::{RetrySchedule, parse_duration};
use crate::secret::Secret;
use crate::topology::Topology;

/// `HOOKBRIDGE_JWT_SECRET`: the HS256 key API tokens are signed with.
pub const JWT_SECRET: &str = "HOOKBRIDGE_JWT_SECRET";
/// `HOOKBRIDGE_PREFIX`: the prefix of every resource name (default `hookbridge`).
pub const PREFIX: &str = "HOOKBRIDGE_PREFIX";
/// `HOOKBRIDGE_ACCOUNT`: the `account` written into envelopes that lack one.
pub const ACCOUNT: &str = "HOOKBRIDGE_ACCOUNT";
/// `AWS_REGION`: the `region` written into envelopes that lack one.
pub const REGION: &str = "AWS_REGION";
/// `HOOKBRIDGE_ALLOWED_NETWORKS`: comma-separated CIDRs hooks may reach although private.
pub const ALLOWED_NETWORKS: &str = "HOOKBRIDGE_ALLOWED_NETWORKS";
/// `HOOKBRIDGE_ALLOW_HTTP`: `true` to accept plain-http hook URLs.
pub const ALLOW_HTTP: &str = "HOOKBRIDGE_ALLOW_HTTP";
/// `HOOKBRIDGE_REQUEST_TIMEOUT`: outbound request timeout (default `10s`).
pub const REQUEST_TIMEOUT: &str = "HOOKBRIDGE_REQUEST_TIMEOUT";
/// `HOOKBRIDGE_RETRY_SCHEDULE`: delays between attempts (default `5s,5m,30m,2h,5h,10h,10h`).
pub const RETRY_SCHEDULE: &str = "HOOKBRIDGE_RETRY_SCHEDULE";
/// `HOOKBRIDGE_DISABLE_AFTER`: how long a hook must fail continuously before it is disabled (default `24h`).
pub const DISABLE_AFTER: &str = "HOOKBRIDGE_DISABLE_AFTER";
/// `HOOKBRIDGE_DISABLE_MIN_FAILURES`: and at least this many failed attempts in a row (default `10`).
pub const DISABLE_MIN_FAILURES: &str = "HOOKBRIDGE_DISABLE_MIN_FAILURES";
/// `HOOKBRIDGE_EVENT_RETENTION`: how long envelopes are kept for replay (default `14d`).
pub const EVENT_RETENTION: &str = "HOOKBRIDGE_EVENT_RETENTION";
/// `HOOKBRIDGE_FAST_LANE_PATIENCE`: how long a fast-lane request may wait for an answer
/// before its hook moves to the slow lane (default `2s`).
pub const FAST_LANE_PATIENCE: &str = "HOOKBRIDGE_FAST_LANE_PATIENCE";
/// `HOOKBRIDGE_MAX_HOOKS_PER_TENANT`: the most hooks one tenant may have (default `1000`).
pub const MAX_HOOKS_PER_TENANT: &str = "HOOKBRIDGE_MAX_HOOKS_PER_TENANT";
/// `HOOKBRIDGE_TENANT_PUBLISH_RATE`: events a second one tenant may publish through the
/// API (default `1000`).
pub const TENANT_PUBLISH_RATE: &str = "HOOKBRIDGE_TENANT_PUBLISH_RATE";
/// `HOOKBRIDGE_TENANT_PUBLISH_BURST`: events a tenant may publish at once above that rate
/// (default `5000`).
pub const TENANT_PUBLISH_BURST: &str = "HOOKBRIDGE_TENANT_PUBLISH_BURST";
/// `HOOKBRIDGE_VISIBILITY_TIMEOUT`: override of every queue's visibility timeout (tests use short ones).
pub const VISIBILITY_TIMEOUT: &str = "HOOKBRIDGE_VISIBILITY_TIMEOUT";

/// A setting that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct SettingsError {
    /// The variable.
    pub variable: &'static str,
    /// What is wrong and what would be accepted.
    pub message: String,
}

/// Defaults that differ between the local runner and a cloud deployment.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Used when `HOOKBRIDGE_JWT_SECRET` is unset; `None` makes it required.
    pub jwt_secret: Option<&'static str>,
    /// The outbound policy when neither network variable is set.
    pub network: NetworkPolicy,
}

impl Defaults {
    /// The local runner: `local-dev-secret`, plain http and loopback allowed.
    pub fn local() -> Self {
        Self { jwt_secret: Some("local-dev-secret"), network: NetworkPolicy::local() }
    }

    /// A cloud deployment: the JWT secret is required and nothing private is reachable.
    pub fn cloud() -> Self {
        Self { jwt_secret: None, network: NetworkPolicy::default() }
    }
}

/// Everything configurable about a deployment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Names of the resources.
    pub topology: Topology,
    /// The API's token key.
    pub jwt_secret: Secret,
    /// `account` for envelopes.
    pub account: String,
    /// `region` for envelopes.
    pub region: String,
    /// Outbound rules.
    pub network: NetworkPolicy,
    /// Outbound request timeout.
    pub request_timeout: Duration,
    /// Delays between attempts.
    pub schedule: RetrySchedule,
    /// The auto-disable rule.
    pub disable_rule: DisableRule,
    /// How long envelopes are kept.
    pub event_retention: Duration,
    /// How long a fast-lane request may wait before its hook moves to the slow lane.
    pub fast_lane_patience: Duration,
    /// Tenant limits.
    pub quotas: Quotas,
}

/// What one tenant may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Hooks per tenant.
    pub max_hooks: u32,
    /// Events a second through `POST /v1/events`.
    pub publish_rate: crate::rate::Rate,
    /// Events above the rate a tenant may publish at once.
    pub publish_burst: u32,
}

impl Default for Quotas {
    /// A thousand hooks (far above what any seed product's customers configure) and a
    /// thousand events a second with a burst of five thousand: generous for any one
    /// tenant, and well inside what one ingest consumer handles, so no tenant can queue
    /// up work that delays the others.
    fn default() -> Self {
        Self { max_hooks: 1000, publish_rate: crate::rate::Rate::per_second(1000), publish_burst: 5000 }
    }
}

fn whole(var: &'static str, text: &str, min: u32) -> Result<u32, SettingsError> {
    text.trim().parse::<u32>().ok().filter(|n| *n >= min).ok_or_else(|| SettingsError {
        variable: var,
        message: format!("{text:?} is not a whole number of at least {min}"),
    })
}

fn duration(var: &'static str, text: &str) -> Result<Duration, SettingsError> {
    parse_duration(text).ok_or_else(|| SettingsError {
        variable: var,
        message: format!("{text:?} is not a duration like 500ms, 10s, 5m, 2h or 14d"),
    })
}

impl Settings {
    /// Reads settings through `get` (normally `std::env::var`).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>, defaults: &Defaults) -> Result<Self, SettingsError> {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let jwt_secret = match (var(JWT_SECRET), defaults.jwt_secret) {
            (Some(s), _) => Secret::new(s),
            (None, Some(d)) => Secret::new(d),
            (None, None) => {
                return Err(SettingsError {
                    variable: JWT_SECRET,
                    message:
                        "is required: set it to the key your API tokens are signed with (at least 32 random bytes)"
                            .to_owned(),
                });
            }
        };
        let mut topology = Topology::named(var(PREFIX).as_deref().unwrap_or("hookbridge"));
        if let Some(v) = var(VISIBILITY_TIMEOUT) {
            let d = duration(VISIBILITY_TIMEOUT, &v)?;
            if d < Duration::from_secs(1) {
                return Err(SettingsError { variable: VISIBILITY_TIMEOUT, message: "must be at least 1s".to_owned() });
            }
            topology.ingest.visibility_timeout = d;
            topology.delivery.visibility_timeout = d;
            topology.delivery_slow.visibility_timeout = d;
            topology.verify.visibility_timeout = d;
        }
        let mut network = defaults.network.clone();
        if let Some(v) = var(ALLOW_HTTP) {
            network.allow_http = match v.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => {
                    return Err(SettingsError {
                        variable: ALLOW_HTTP,
                        message: format!("{other:?} is not true or false"),
                    });
                }
            };
        }
        if let Some(v) = get(ALLOWED_NETWORKS) {
            network.allowed_networks = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    Network::from_str(s).map_err(|_| SettingsError {
                        variable: ALLOWED_NETWORKS,
                        message: format!("{s:?} is not a CIDR block like 10.0.0.0/8"),
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        let schedule = match var(RETRY_SCHEDULE) {
            Some(v) => RetrySchedule::parse(&v)
                .map_err(|e| SettingsError { variable: RETRY_SCHEDULE, message: e.to_string() })?,
            None => RetrySchedule::default(),
        };
        let mut disable_rule = DisableRule::default();
        if let Some(v) = var(DISABLE_AFTER) {
            disable_rule.failing_for = duration(DISABLE_AFTER, &v)?;
        }
        if let Some(v) = var(DISABLE_MIN_FAILURES) {
            disable_rule.min_failures = v.trim().parse().map_err(|_| SettingsError {
                variable: DISABLE_MIN_FAILURES,
                message: format!("{v:?} is not a whole number"),
            })?;
        }
        let request_timeout = match var(REQUEST_TIMEOUT) {
            Some(v) => duration(REQUEST_TIMEOUT, &v)?,
            None => Duration::from_secs(10),
        };
        let event_retention = match var(EVENT_RETENTION) {
            Some(v) => duration(EVENT_RETENTION, &v)?,
            None => Duration::from_secs(14 * 86_400),
        };
        let fast_lane_patience = match var(FAST_LANE_PATIENCE) {
            Some(v) => duration(FAST_LANE_PATIENCE, &v)?,
            None => Duration::from_secs(2),
        };
        let mut quotas = Quotas::default();
        if let Some(v) = var(MAX_HOOKS_PER_TENANT) {
            quotas.max_hooks = whole(MAX_HOOKS_PER_TENANT, &v, 1)?;
        }
        if let Some(v) = var(TENANT_PUBLISH_RATE) {
            quotas.publish_rate = crate::rate::Rate::per_second(whole(TENANT_PUBLISH_RATE, &v, 1)?);
        }
        if let Some(v) = var(TENANT_PUBLISH_BURST) {
            quotas.publish_burst = whole(TENANT_PUBLISH_BURST, &v, 1)?;
        }
        Ok(Self {
            topology,
            jwt_secret,
            account: var(ACCOUNT).unwrap_or_else(|| "000000000000".to_owned()),
            region: var(REGION).unwrap_or_else(|| "local".to_owned()),
            network,
            request_timeout,
            schedule,
            disable_rule,
            event_retention,
            fast_lane_patience,
            quotas,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn cloud_requires_the_jwt_secret_and_names_it() {
        let e = Settings::from_lookup(lookup(&[]), &Defaults::cloud()).unwrap_err();
        assert_eq!(e.variable, JWT_SECRET);
        assert!(Settings::from_lookup(lookup(&[(JWT_SECRET, "k")]), &Defaults::cloud()).is_ok());
    }

    #[test]
    fn local_defaults_allow_loopback_and_http() {
        let s = Settings::from_lookup(lookup(&[]), &Defaults::local()).unwrap();
        assert!(s.network.allow_http);
        assert_eq!(s.jwt_secret.expose(), "local-dev-secret");
        assert_eq!(s.schedule, RetrySchedule::default());
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            (REQUEST_TIMEOUT, "soon"),
            (RETRY_SCHEDULE, "5x"),
            (ALLOWED_NETWORKS, "10.0.0.0/99"),
            (ALLOW_HTTP, "maybe"),
            (DISABLE_MIN_FAILURES, "-1"),
            (RETRY_SCHEDULE, "1s,1s,1s,1s,1s,1s,1s,1s,1s,1s,1s"),
            (FAST_LANE_PATIENCE, "quick"),
            (MAX_HOOKS_PER_TENANT, "0"),
            (TENANT_PUBLISH_RATE, "lots"),
        ] {
            let e = Settings::from_lookup(lookup(&[(var, value)]), &Defaults::local()).unwrap_err();
            assert_eq!(e.variable, var, "{value}");
        }
    }

    #[test]
    fn values_are_read() {
        let s = Settings::from_lookup(
            lookup(&[
                (RETRY_SCHEDULE, "1s,2s"),
                (ALLOWED_NETWORKS, "10.0.0.0/8"),
                (REQUEST_TIMEOUT, "500ms"),
                (EVENT_RETENTION, "7d"),
                (PREFIX, "hb-test"),
            ]),
            &Defaults::cloud().clone_with_secret(),
        )
        .unwrap();
        assert_eq!(s.schedule.max_attempts(), 3);
        assert_eq!(s.network.allowed_networks.len(), 1);
        assert_eq!(s.request_timeout, Duration::from_millis(500));
        assert_eq!(s.event_retention, Duration::from_secs(7 * 86_400));
        assert_eq!(s.topology.table, "hb-test-table");
    }

    impl Defaults {
        fn clone_with_secret(&self) -> Self {
            Self { jwt_secret: Some("x"), ..self.clone() }
        }
    }
}

//! The auto-disable rule: a hook that keeps failing stops receiving deliveries, with a
//! warning first, so its owner hears about it before events start being cancelled.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::hook::Health;

/// When a failing hook is warned about and then disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisableRule {
    /// Failing continuously for this long ...
    pub failing_for: Duration,
    /// ... and at least this many failed attempts in a row disables the hook.
    pub min_failures: u32,
}

impl Default for DisableRule {
    /// A full day of nothing but failures, at least ten of them: long enough that an
    /// overnight outage never disables a hook, short enough that a dead endpoint stops
    /// costing requests within the retry schedule of its first events.
    fn default() -> Self {
        Self { failing_for: Duration::from_secs(24 * 60 * 60), min_failures: 10 }
    }
}

/// What a failed attempt changes about the hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterFailure {
    /// The new health.
    pub health: Health,
    /// Emit `hook.failing` now (once per run of failures, at half of both thresholds).
    pub warn: bool,
    /// Disable the hook now.
    pub disable: bool,
}

impl DisableRule {
    /// The hook's health after another failed attempt at `now`.
    pub fn after_failure(&self, health: &Health, now: DateTime<Utc>) -> AfterFailure {
        let mut h = health.clone();
        h.consecutive_failures = h.consecutive_failures.saturating_add(1);
        let since = *h.failing_since.get_or_insert(now);
        let failing = (now - since).to_std().unwrap_or(Duration::ZERO);
        let disable = failing >= self.failing_for && h.consecutive_failures >= self.min_failures;
        let warn_due = failing >= self.failing_for / 2 && h.consecutive_failures >= self.min_failures.div_ceil(2);
        // The warning always precedes the disable, even when both are reached at once.
        let warn = !h.warned && (warn_due || disable);
        h.warned |= warn;
        AfterFailure { health: h, warn, disable }
    }
}

/// How stale `last_success_at` may get on a healthy hook. Refreshing it on every success
/// would cost a hook write per delivery; once a minute costs next to nothing.
pub const LAST_SUCCESS_RESOLUTION: Duration = Duration::from_secs(60);

/// The hook's health after a success at `now`, or `None` if nothing worth a write changes
/// (a healthy hook whose `last_success_at` is recent), keeping the happy path to one
/// write per attempt.
pub fn after_success(health: &Health, now: DateTime<Utc>) -> Option<Health> {
    let healthy = health.consecutive_failures == 0 && health.failing_since.is_none() && !health.warned;
    let fresh =
        health.last_success_at.is_some_and(|t| (now - t).to_std().unwrap_or(Duration::ZERO) < LAST_SUCCESS_RESOLUTION);
    if healthy && fresh {
        return None;
    }
    Some(Health { consecutive_failures: 0, failing_since: None, last_success_at: Some(now), warned: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn disables_only_after_both_time_and_count() {
        let rule = DisableRule { failing_for: Duration::from_secs(100), min_failures: 4 };
        let mut h = Health::default();
        let mut events = Vec::new();
        for (i, t) in [0, 10, 20, 30, 60, 200].into_iter().enumerate() {
            let r = rule.after_failure(&h, at(t));
            events.push((i, r.warn, r.disable));
            h = r.health;
        }
        assert_eq!(h.consecutive_failures, 6);
        assert_eq!(h.failing_since, Some(at(0)));
        // Warned once at 60 s (half the time, half the count), disabled at 200 s.
        assert_eq!(
            events,
            vec![
                (0, false, false),
                (1, false, false),
                (2, false, false),
                (3, false, false),
                (4, true, false),
                (5, false, true)
            ]
        );
    }

    #[test]
    fn warning_precedes_disable_when_reached_together() {
        let rule = DisableRule { failing_for: Duration::from_secs(10), min_failures: 2 };
        let h = rule.after_failure(&Health::default(), at(0)).health;
        let r = rule.after_failure(&h, at(20));
        assert!(r.warn && r.disable);
    }

    #[test]
    fn many_fast_failures_alone_do_not_disable() {
        let rule = DisableRule::default();
        let mut h = Health::default();
        for i in 0..1000 {
            let r = rule.after_failure(&h, at(i));
            assert!(!r.disable);
            h = r.health;
        }
    }

    #[test]
    fn success_resets_and_a_recent_healthy_success_writes_nothing() {
        let first = after_success(&Health::default(), at(0)).unwrap();
        assert_eq!(first.last_success_at, Some(at(0)));
        assert_eq!(after_success(&first, at(30)), None);
        assert_eq!(after_success(&first, at(61)).unwrap().last_success_at, Some(at(61)));
        let failing = DisableRule::default().after_failure(&Health::default(), at(0)).health;
        let healed = after_success(&failing, at(5)).unwrap();
        assert_eq!(healed.consecutive_failures, 0);
        assert_eq!(healed.failing_since, None);
        assert_eq!(healed.last_success_at, Some(at(5)));
    }
}

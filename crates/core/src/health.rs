//! A hook's delivery health: the auto-disable rule (a hook that keeps failing stops
//! receiving deliveries, with a warning first, so its owner hears about it before events
//! start being cancelled), its circuit breaker and its lane, folded from what its
//! attempts said.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::circuit::{Reachability, Transition};
use crate::hook::Health;
use crate::outcome::{Disposition, RetryRule, Sent, classify};

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

/// The shortest wait between two failures that ends a run of them: the longest wait any
/// schedule may have ([`crate::retry::MAX_QUEUE_DELAY`], 12 h, its jitter included) and
/// four hours to spare, so a dead endpoint's own retries never end its run.
pub const RUN_GAP_AT_LEAST: Duration = Duration::from_secs(crate::retry::MAX_QUEUE_DELAY.as_secs() + 4 * 3600);

impl DisableRule {
    /// The hook's health after another failed attempt at `now`.
    ///
    /// A failure longer than the rule's span (and at least [`RUN_GAP_AT_LEAST`]) after the
    /// one before starts a new run: nothing was tried in between, so the hook was not seen
    /// failing all that time, and one old failure and a burst two days later are not a
    /// day of failing.
    pub fn after_failure(&self, health: &Health, now: DateTime<Utc>) -> AfterFailure {
        let mut h = health.clone();
        let gap = h.last_failed_at.and_then(|t| (now - t).to_std().ok()).unwrap_or(Duration::ZERO);
        if gap > self.failing_for.max(RUN_GAP_AT_LEAST) {
            (h.consecutive_failures, h.failing_since, h.warned) = (0, None, false);
        }
        // Results of several workers may be judged out of their order: the latest stands.
        h.last_failed_at = h.last_failed_at.max(Some(now));
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
    Some(Health {
        consecutive_failures: 0,
        failing_since: None,
        last_failed_at: None,
        last_success_at: Some(now),
        warned: false,
        ..health.clone()
    })
}

/// How far a failing hook's written `last_failed_at`, and its count of failures, may lag
/// once the count has reached the disable rule's: a failure then changes no decision (the
/// rule's time, checked on every failure, does), so writing each one would cost a hook
/// write per failed attempt, and on DynamoDB would crowd out the tenant's own changes to
/// the hook (decision 0043). The failures a process does not write are added to its next
/// write of the hook.
pub const FAILURE_RESOLUTION: Duration = Duration::from_secs(60);

/// How long a hook that kept a request waiting past the fast lane's patience stays in
/// the slow lane. Renewed while it stays slow; long enough that a slow endpoint is not
/// tried on the fast lane again and again, short enough that a recovered one returns soon.
pub const SLOW_FOR: Duration = Duration::from_secs(10 * 60);

/// Answers in a row, each within a quarter of the fast lane's patience, that return a hook
/// found slow to the fast lane before [`SLOW_FOR`] runs out ([`Observation::Recovered`]).
pub const RECOVERED_AFTER: u32 = 32;

/// The least a hook stays on the slow lane after it was last found slow, however quickly
/// it answers there: an endpoint that is slow now and then is tried on the fast lane (and
/// given up on there, its request sent twice) at most about once a minute.
pub const SLOW_AT_LEAST: Duration = Duration::from_secs(60);

/// Until when a hook found slow at `found` stays slow ([`SLOW_FOR`]).
pub fn slow_until(found: DateTime<Utc>) -> DateTime<Utc> {
    found + chrono::Duration::from_std(SLOW_FOR).unwrap_or_default()
}

/// When a hook whose slow mark runs to `until` was found slow ([`slow_until`]'s inverse).
pub fn found_slow_at(until: DateTime<Utc>) -> DateTime<Utc> {
    until - chrono::Duration::from_std(SLOW_FOR).unwrap_or_default()
}

/// Whether a hook last found slow at `last` (if ever) may go back to the fast lane at `at`:
/// [`SLOW_AT_LEAST`] later or more.
pub fn may_recover(last: Option<DateTime<Utc>>, at: DateTime<Utc>) -> bool {
    last.is_none_or(|m| at - m >= chrono::Duration::from_std(SLOW_AT_LEAST).unwrap_or_default())
}

/// What one request told about its hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// An attempt ended with `sent`.
    Attempt {
        /// When it started.
        started: DateTime<Utc>,
        /// When it ended.
        ended: DateTime<Utc>,
        /// What came back.
        sent: Sent,
        /// It outlived the fast lane's patience (it is then slow, whatever it answered).
        slow: bool,
    },
    /// A fast-lane request was given up after the patience and moved to the slow lane. It
    /// says the endpoint is slow, not that it is down: the slow lane's full timeout decides that.
    Abandoned {
        /// When it was sent.
        started: DateTime<Utc>,
        /// When it was given up.
        at: DateTime<Utc>,
    },
    /// A hook found slow answered quickly [`RECOVERED_AFTER`] times in a row on the slow
    /// lane, at least [`SLOW_AT_LEAST`] after it was last found slow: it is back on the fast
    /// lane. One blip (a receiver's long pause) put a hook on the slow lane for ten
    /// minutes, where it may have 8 requests in flight rather than 96: a busy hook that
    /// answers in 50 ms could take 160 deliveries a second there, not 1,900.
    Recovered {
        /// When its last quick answer came.
        at: DateTime<Utc>,
    },
}

/// A hook's health after some observations, and what to tell the tenant about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthChange {
    /// The new health.
    pub health: Health,
    /// Emit `hook.failing`.
    pub warn: bool,
    /// Disable the hook, for this reason.
    pub disable: Option<String>,
    /// Each time the circuit opened or closed, in order (a group of results can open it
    /// and close it again).
    pub circuits: Vec<Transition>,
    /// Only the run's count and its last failure moved, less than [`FAILURE_RESOLUTION`]
    /// after the last failure written, on a run already past the rule's count: not worth a
    /// write of its own.
    pub quiet: bool,
}

/// Folds observations into a hook's health; `None` when nothing changed, and
/// [`HealthChange::quiet`] when nothing worth a write did (a healthy hook's recent
/// success, or a long-failing hook's next failure). Under `retry`'s [`RetryRule::Non2xx`]
/// (Keycloak's), a 410 is a failure like another, and disables nothing by itself.
pub fn observe(
    rule: &DisableRule,
    retry: RetryRule,
    start: &Health,
    observations: &[Observation],
) -> Option<HealthChange> {
    let mut h = start.clone();
    let (mut changed, mut warn, mut disable, mut circuits) = (false, false, None, Vec::new());
    let mut failed = false;
    let (mut slow_at, mut recovered_at) = (None, None);
    // In the order they happened: a group holds its batch's results in the batch's order,
    // and the last word on a hook is its latest result.
    let mut in_time: Vec<&Observation> = observations.iter().collect();
    in_time.sort_by_key(|o| match **o {
        Observation::Attempt { ended, .. } => ended,
        Observation::Abandoned { at, .. } | Observation::Recovered { at } => at,
    });
    // Begun before the account was started over: about the endpoint as it was.
    let before = |t: DateTime<Utc>| start.since.is_some_and(|since| t < since);
    for o in in_time {
        if before(match *o {
            Observation::Attempt { started, .. } | Observation::Abandoned { started, .. } => started,
            Observation::Recovered { at } => at,
        }) {
            continue;
        }
        match *o {
            Observation::Abandoned { at, .. } => slow_at = slow_at.max(Some(at)),
            Observation::Recovered { at } => recovered_at = recovered_at.max(Some(at)),
            Observation::Attempt { started, ended, sent, slow } => {
                if slow {
                    slow_at = slow_at.max(Some(ended));
                }
                // Results of several workers come in out of their order (on AWS a batch is
                // recorded after its slowest request): a success older than a failure
                // already recorded, or a failure older than a success already recorded,
                // says nothing of the endpoint now. It neither closes nor opens the circuit,
                // and ends or lengthens no run of failures.
                let disposition = classify(sent);
                let stale = match disposition {
                    Disposition::Delivered => h.last_failed_at.is_some_and(|f| ended < f),
                    _ => h.last_success_at.is_some_and(|s| ended < s),
                };
                if stale {
                    continue;
                }
                if let Some((c, t)) = h.circuit.after(Reachability::of(sent), started, ended) {
                    h.circuit = c;
                    circuits.extend(t);
                    changed = true;
                }
                match disposition {
                    Disposition::Delivered => {
                        // A later success ends the run of failures an earlier result of
                        // the group warned of or disabled for.
                        (warn, disable) = (false, None);
                        if let Some(next) = after_success(&h, ended) {
                            h = next;
                            changed = true;
                        }
                    }
                    d => {
                        let r = rule.after_failure(&h, ended);
                        warn |= r.warn;
                        if d == Disposition::Gone && retry == RetryRule::Transient {
                            disable = Some("the endpoint answered 410 Gone".to_owned());
                        } else if r.disable {
                            disable = Some(format!(
                                "failing since {} ({} failed attempts in a row)",
                                r.health.failing_since.map(|t| t.to_rfc3339()).unwrap_or_default(),
                                r.health.consecutive_failures
                            ));
                        }
                        h = r.health;
                        failed = true;
                    }
                }
            }
        }
    }
    // A recovery holds only if the hook was last found slow, as the table says or this
    // group does (before it, or after it in the same group), at least `SLOW_AT_LEAST`
    // before: the process that counted the quick answers may have read an older mark than
    // another process wrote since.
    let last_slow = h.slow_until.map(found_slow_at).max(slow_at);
    if h.slow_until.is_some() && recovered_at.is_some_and(|r| may_recover(last_slow, r)) {
        h.slow_until = None;
        changed = true;
    } else if let Some(at) = slow_at.filter(|s| recovered_at.is_none_or(|r| !may_recover(Some(*s), r))) {
        // (A slow result a minute or more before a recovery of the same group, with no mark
        // in the row to clear, leaves the hook as it is.)
        let until = slow_until(at);
        // Renewed only when the mark is a minute behind: one write a minute at most, and
        // the mark says within a minute when the hook was last found slow.
        let a_minute = chrono::Duration::from_std(SLOW_AT_LEAST).unwrap_or_default();
        if h.slow_until.is_none_or(|t| t < until - a_minute) {
            h.slow_until = Some(until);
            changed = true;
        }
    }
    let resolution = chrono::Duration::from_std(FAILURE_RESOLUTION).unwrap_or_default();
    let quiet = !changed
        && !warn
        && disable.is_none()
        && start.consecutive_failures >= rule.min_failures
        && (h.failing_since, h.warned) == (start.failing_since, start.warned)
        && h.last_failed_at.zip(start.last_failed_at).is_some_and(|(last, written)| last - written < resolution);
    (changed || failed).then_some(HealthChange { health: h, warn, disable, circuits, quiet })
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

    /// One failure, then nothing tried for two days, then a minute's outage: not a day of
    /// failing, so not disabled; the burst starts a run of its own (and may be warned of
    /// again). A dead endpoint whose retries come hours apart keeps its run.
    #[test]
    fn an_old_failure_and_a_burst_days_later_are_not_a_day_of_failing() {
        let rule = DisableRule::default();
        let h = rule.after_failure(&Health::default(), at(0)).health;
        let mut h = Health { warned: true, ..h };
        let days = 48 * 3600;
        for i in 0..9 {
            let r = rule.after_failure(&h, at(days + i));
            assert!(!r.disable, "failure {i} of the burst");
            h = r.health;
        }
        assert_eq!((h.consecutive_failures, h.failing_since, h.warned), (9, Some(at(days)), false));
        let mut dead = Health::default();
        let mut disabled = false;
        for (i, t) in (0..12).map(|i| (i, i * 12 * 3600)) {
            let r = rule.after_failure(&dead, at(t));
            disabled |= r.disable;
            assert_eq!(r.health.consecutive_failures, i as u32 + 1, "12 h apart, the longest wait: one run");
            dead = r.health;
        }
        assert!(disabled, "failing for days, ten times and more in a row");
        // A rule of an hour still keeps a run whose retries wait the longest a schedule may.
        let hourly = DisableRule { failing_for: Duration::from_secs(3600), min_failures: 3 };
        let mut dead = Health::default();
        for t in [0, 12 * 3600, 24 * 3600] {
            dead = hourly.after_failure(&dead, at(t)).health;
        }
        assert_eq!(dead.consecutive_failures, 3, "a schedule's own waits end no run");
        // Judged out of their order, results keep the latest failure.
        let later = hourly.after_failure(&dead, at(100)).health;
        assert_eq!(later.last_failed_at, dead.last_failed_at);
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

    fn attempt(t: i64, status: Option<u16>) -> Observation {
        let sent = match status {
            Some(status) => Sent::Response { status, retry_after: None },
            None => Sent::NoResponse(crate::delivery::ErrorClass::Timeout),
        };
        Observation::Attempt { started: at(t), ended: at(t), sent, slow: false }
    }

    #[test]
    fn timeouts_open_the_circuit_and_count_toward_disabling() {
        let rule = DisableRule::default();
        let obs: Vec<_> = (0..5).map(|t| attempt(t, None)).collect();
        let c = observe(&rule, RetryRule::Transient, &Health::default(), &obs).unwrap();
        assert_eq!(c.circuits, [Transition::Opened]);
        assert_eq!(c.health.consecutive_failures, 5);
        assert_eq!(c.health.lane(at(6)), crate::hook::Lane::Slow);
        let closed = observe(&rule, RetryRule::Transient, &c.health, &[attempt(100, Some(204))]).unwrap();
        assert_eq!(closed.circuits, [Transition::Closed]);
        assert_eq!(closed.health.consecutive_failures, 0);
        // Both in one group of results: both are told, in order.
        let mut obs: Vec<_> = (0..5).map(|t| attempt(t, None)).collect();
        obs.push(attempt(100, Some(204)));
        let both = observe(&rule, RetryRule::Transient, &Health::default(), &obs).unwrap();
        assert_eq!(both.circuits, [Transition::Opened, Transition::Closed]);
        assert!(both.health.circuit.is_closed());
    }

    #[test]
    fn results_recorded_after_newer_ones_change_neither_the_circuit_nor_the_run() {
        let rule = DisableRule::default();
        let obs: Vec<_> = (10..15).map(|t| attempt(t, None)).collect();
        let open = observe(&rule, RetryRule::Transient, &Health::default(), &obs).unwrap().health;
        assert!(!open.circuit.is_closed());
        // Another worker's success from before it opened, recorded late: the circuit stays
        // open, and the run of failures goes on.
        let late = observe(&rule, RetryRule::Transient, &open, &[attempt(5, Some(200))]);
        assert_eq!(late, None, "nothing changes");
        // A failure from before a success already recorded starts no run.
        let healthy =
            observe(&rule, RetryRule::Transient, &Health::default(), &[attempt(100, Some(200))]).unwrap().health;
        let stale = observe(&rule, RetryRule::Transient, &healthy, &[attempt(90, Some(410))]);
        let h = stale.as_ref().map_or(&healthy, |c| &c.health);
        assert_eq!((h.consecutive_failures, h.failing_since, h.last_failed_at), (0, None, None));
        assert_eq!(stale.and_then(|c| c.disable), None, "nor does an old 410 disable it");
        // Nor do five old timeouts open its circuit.
        let old: Vec<_> = (80..85).map(|t| attempt(t, None)).collect();
        assert_eq!(observe(&rule, RetryRule::Transient, &healthy, &old), None);
        // A circuit re-opened by a failed probe: a success from between is older than it.
        let probing = Health { circuit: open.circuit.claimed(at(20)), ..open.clone() };
        let reopened = observe(&rule, RetryRule::Transient, &probing, &[attempt(25, None)]).unwrap().health;
        assert!(!reopened.circuit.is_closed());
        assert_eq!(observe(&rule, RetryRule::Transient, &reopened, &[attempt(22, Some(200))]), None);
    }

    /// An account started over (the hook re-enabled, or moved) counts nothing begun before
    /// it: a 410 or timeouts recorded late neither disable the hook again nor open its
    /// circuit, nor slow it down; what begins after it counts as ever.
    #[test]
    fn results_begun_before_the_health_was_started_over_count_for_nothing() {
        let rule = DisableRule::default();
        let fresh = Health { since: Some(at(50)), ..Health::default() };
        let mut old: Vec<_> = (40..45).map(|t| attempt(t, None)).collect();
        old.push(Observation::Attempt {
            started: at(49),
            ended: at(55),
            sent: Sent::NoResponse(crate::delivery::ErrorClass::Timeout),
            slow: true,
        });
        old.push(attempt(49, Some(410)));
        old.push(Observation::Abandoned { started: at(45), at: at(46) });
        // Sent before, given up after: a request to the endpoint as it was.
        old.push(Observation::Abandoned { started: at(49), at: at(52) });
        assert_eq!(observe(&rule, RetryRule::Transient, &fresh, &old), None);
        let gone = observe(&rule, RetryRule::Transient, &fresh, &[attempt(50, Some(410))]).unwrap();
        assert_eq!(gone.disable.as_deref(), Some("the endpoint answered 410 Gone"));
        assert_eq!(gone.health.since, Some(at(50)), "kept");
    }

    #[test]
    fn a_later_success_in_the_group_undoes_its_warning_and_disable() {
        let rule = DisableRule { failing_for: Duration::from_secs(100), min_failures: 2 };
        let failing = Health { consecutive_failures: 5, failing_since: Some(at(0)), ..Health::default() };
        let alone = observe(&rule, RetryRule::Transient, &failing, &[attempt(200, Some(500))]).unwrap();
        assert!(alone.disable.is_some(), "the failure alone disables");
        let then_up =
            observe(&rule, RetryRule::Transient, &failing, &[attempt(200, Some(500)), attempt(201, Some(200))])
                .unwrap();
        assert_eq!((then_up.warn, then_up.disable, then_up.health.consecutive_failures), (false, None, 0));
        // A group holds results in its batch's order, not in time's: the same outcome.
        let told_first =
            observe(&rule, RetryRule::Transient, &failing, &[attempt(201, Some(200)), attempt(200, Some(500))])
                .unwrap();
        assert_eq!((told_first.warn, told_first.disable, told_first.health.consecutive_failures), (false, None, 0));
        // The latest result is a failure: disabled.
        let then_down =
            observe(&rule, RetryRule::Transient, &failing, &[attempt(201, Some(200)), attempt(300, Some(500))])
                .unwrap();
        assert_eq!(then_down.health.consecutive_failures, 1);
        let gone_then_up =
            observe(&rule, RetryRule::Transient, &Health::default(), &[attempt(0, Some(410)), attempt(1, Some(200))])
                .unwrap();
        assert_eq!(gone_then_up.disable, None, "an endpoint answering after a 410 is not gone");
        let rule = DisableRule { failing_for: Duration::from_secs(100), min_failures: 4 };
        let warned = Health { consecutive_failures: 1, failing_since: Some(at(0)), ..Health::default() };
        assert!(
            observe(&rule, RetryRule::Transient, &warned, &[attempt(60, Some(500))]).unwrap().warn,
            "half of both: warned"
        );
        assert!(
            !observe(&rule, RetryRule::Transient, &warned, &[attempt(60, Some(500)), attempt(61, Some(200))])
                .unwrap()
                .warn
        );
    }

    #[test]
    fn an_abandoned_request_makes_the_hook_slow_for_a_while_and_nothing_else() {
        let c = observe(
            &DisableRule::default(),
            RetryRule::Transient,
            &Health::default(),
            &[Observation::Abandoned { started: at(0), at: at(0) }],
        )
        .unwrap();
        assert_eq!(c.health.consecutive_failures, 0);
        assert!(c.health.circuit.is_closed());
        assert_eq!(c.health.lane(at(599)), crate::hook::Lane::Slow);
        assert_eq!(c.health.lane(at(600)), crate::hook::Lane::Fast);
        // Renewing a fresh mark is not worth a write; one a minute behind is renewed.
        assert_eq!(
            observe(
                &DisableRule::default(),
                RetryRule::Transient,
                &c.health,
                &[Observation::Abandoned { started: at(10), at: at(10) }]
            ),
            None
        );
        assert_eq!(
            observe(
                &DisableRule::default(),
                RetryRule::Transient,
                &c.health,
                &[Observation::Abandoned { started: at(59), at: at(59) }]
            ),
            None
        );
        let renewed = observe(
            &DisableRule::default(),
            RetryRule::Transient,
            &c.health,
            &[Observation::Abandoned { started: at(61), at: at(61) }],
        );
        assert_eq!(renewed.and_then(|c| c.health.slow_until), Some(at(661)));
        assert!(
            observe(
                &DisableRule::default(),
                RetryRule::Transient,
                &c.health,
                &[Observation::Abandoned { started: at(400), at: at(400) }]
            )
            .is_some()
        );
    }

    #[test]
    fn a_recovered_hook_leaves_the_slow_lane_unless_found_slow_within_a_minute_of_it() {
        use crate::hook::Lane;
        let observe =
            |start: &Health, o: &[Observation]| observe(&DisableRule::default(), RetryRule::Transient, start, o);
        let slow = observe(&Health::default(), &[Observation::Abandoned { started: at(0), at: at(0) }]).unwrap().health;
        let ok = Sent::Response { status: 200, retry_after: None };
        let quick = |t| Observation::Attempt { started: at(t), ended: at(t), sent: ok, slow: false };
        let back = observe(&slow, &[quick(90), Observation::Recovered { at: at(90) }]).unwrap();
        assert_eq!(back.health.slow_until, None);
        assert_eq!(back.health.lane(at(91)), Lane::Fast);
        // Found slow again after the quick answer that recovered it, in the same group: it
        // stays slow (the mark is renewed, being more than a minute old).
        let again = Observation::Attempt { started: at(91), ended: at(95), sent: ok, slow: true };
        let still = observe(&slow, &[quick(90), Observation::Recovered { at: at(90) }, again]).unwrap();
        assert_eq!(still.health.lane(at(96)), Lane::Slow);
        // Or before it, within a minute.
        let before = Observation::Attempt { started: at(60), ended: at(62), sent: ok, slow: true };
        let still = observe(&slow, &[before, Observation::Recovered { at: at(90) }]);
        assert!(still.is_none_or(|c| c.health.lane(at(96)) == Lane::Slow));
        // A slow result a minute or more before it: the recovery holds, with a mark in the
        // row to clear or without one.
        let long_before = Observation::Attempt { started: at(10), ended: at(20), sent: ok, slow: true };
        let back = observe(&slow, &[long_before, Observation::Recovered { at: at(90) }]).unwrap();
        assert_eq!(back.health.slow_until, None);
        let unmarked = observe(&Health::default(), &[long_before, Observation::Recovered { at: at(90) }]);
        assert_eq!(unmarked.and_then(|c| c.health.slow_until), None);
        // The table's mark less than a minute old (another process found it slow since the
        // one that counted read it): no recovery.
        assert_eq!(observe(&slow, &[Observation::Recovered { at: at(50) }]), None);
        // A hook not marked slow in the table has nothing to write.
        assert_eq!(observe(&Health::default(), &[Observation::Recovered { at: at(90) }]), None);
    }

    #[test]
    fn a_4xx_is_a_failure_for_the_disable_rule_but_the_endpoint_is_up() {
        let rule = DisableRule::default();
        let c = observe(&rule, RetryRule::Transient, &Health::default(), &[attempt(0, Some(400))]).unwrap();
        assert_eq!(c.health.consecutive_failures, 1);
        assert_eq!(c.health.circuit.down_streak, 0);
        let gone = observe(&rule, RetryRule::Transient, &Health::default(), &[attempt(0, Some(410))]).unwrap();
        assert!(gone.disable.is_some());
    }

    /// Past the rule's count, a failure is written only a minute after the last written
    /// one, or when it warns, disables, moves the circuit or starts a new run.
    #[test]
    fn a_long_failing_hooks_next_failures_are_written_once_a_minute() {
        let rule = DisableRule::default();
        let fold = |start: &Health, o: &[Observation]| observe(&rule, RetryRule::Transient, start, o).unwrap();
        let mut stored = Health::default();
        for t in 0..10 {
            let c = fold(&stored, &[attempt(t, Some(400))]);
            assert!(!c.quiet, "failure {t} counts toward the rule: written");
            stored = c.health;
        }
        assert_eq!(stored.consecutive_failures, 10);
        let quiet = fold(&stored, &[attempt(10, Some(400)), attempt(68, Some(400))]);
        assert!(quiet.quiet, "{quiet:?}");
        assert_eq!((quiet.health.consecutive_failures, quiet.health.last_failed_at), (12, Some(at(68))));
        assert!(!fold(&stored, &[attempt(69, Some(400))]).quiet, "a minute after the last written");
        // What still moves something is written at once.
        assert!(!fold(&stored, &[attempt(10, Some(500))]).quiet, "the circuit counts a 5xx");
        assert!(!fold(&stored, &[attempt(10, Some(410))]).quiet, "a 410 disables");
        assert!(fold(&stored, &[attempt(10, Some(400)), attempt(11, Some(200))]).health.failing_since.is_none());
        assert!(!fold(&stored, &[attempt(10, Some(400)), attempt(11, Some(200))]).quiet, "a success ends the run");
        let half_a_day = 12 * 3600;
        let warning = fold(
            &Health { last_failed_at: Some(at(half_a_day - 1)), ..stored.clone() },
            &[attempt(half_a_day, Some(400))],
        );
        assert!(warning.warn && !warning.quiet);
        let day = 24 * 3600;
        let warned = Health { warned: true, last_failed_at: Some(at(day - 1)), ..stored.clone() };
        let disabling = fold(&warned, &[attempt(day, Some(400))]);
        assert!(disabling.disable.is_some() && !disabling.quiet);
        // Below the rule's count every failure is written.
        let nine = Health { consecutive_failures: 9, ..stored.clone() };
        assert!(!fold(&nine, &[attempt(10, Some(400))]).quiet);
    }

    /// Keycloak's rule tries a 410 again like any answer that is not 2xx: it is a failure
    /// toward the disable rule, and disables nothing by itself. It disabled the hook, so the
    /// retry just scheduled, and every later delivery, was cancelled.
    #[test]
    fn under_keycloaks_rule_a_410_disables_nothing_by_itself() {
        let gone = observe(&DisableRule::default(), RetryRule::Non2xx, &Health::default(), &[attempt(0, Some(410))]);
        let gone = gone.unwrap();
        assert_eq!((gone.disable, gone.health.consecutive_failures), (None, 1));
    }
}

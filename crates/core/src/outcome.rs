//! Outcome classification: what one attempt's result means for the delivery and the hook.
//! One pure function decides; the worker only carries it out.

use std::time::Duration;

use crate::delivery::ErrorClass;
use crate::retry::RetrySchedule;

/// What came back from one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The receiver answered.
    Response {
        /// The status code.
        status: u16,
        /// Its `Retry-After`, parsed.
        retry_after: Option<Duration>,
    },
    /// No answer: the request failed before or during sending.
    NoResponse(ErrorClass),
}

/// What the result says, before the schedule is consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// 2xx.
    Delivered,
    /// Worth trying again later.
    Retryable(ErrorClass),
    /// Trying again will not help.
    Permanent(ErrorClass),
    /// 410 Gone: the receiver says this endpoint is gone for good.
    Gone,
}

/// Classifies one result: 2xx succeeds; 408, 429, 5xx and network failures retry;
/// 3xx fails (redirects are never followed, so a moved endpoint is a configuration
/// problem); other 4xx fail at once; 410 also disables the hook.
pub fn classify(sent: Sent) -> Disposition {
    match sent {
        Sent::Response { status, .. } => match status {
            200..=299 => Disposition::Delivered,
            300..=399 => Disposition::Permanent(ErrorClass::Redirect),
            408 | 429 => Disposition::Retryable(ErrorClass::Http429),
            410 => Disposition::Gone,
            400..=499 => Disposition::Permanent(ErrorClass::Http4xx),
            // 1xx cannot end an exchange and anything above 599 is not HTTP: treat both
            // as a broken server, which may recover.
            _ => Disposition::Retryable(ErrorClass::Http5xx),
        },
        Sent::NoResponse(class) => match class {
            ErrorClass::SsrfBlocked | ErrorClass::Redirect | ErrorClass::Http4xx => Disposition::Permanent(class),
            ErrorClass::Dns
            | ErrorClass::Connect
            | ErrorClass::Tls
            | ErrorClass::Timeout
            | ErrorClass::Http429
            | ErrorClass::Http5xx
            | ErrorClass::Auth => Disposition::Retryable(class),
        },
    }
}

/// What the worker does with the delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Record `SUCCEEDED` and acknowledge the message.
    Succeeded,
    /// Record `RETRYING` and have the queue hand the message back after the delay.
    RetryIn(Duration),
    /// Record `FAILED` and acknowledge; `exhausted` when the schedule ran out (which
    /// emits `delivery.exhausted`), not when the failure was permanent.
    Failed {
        /// Whether it failed because the schedule ran out.
        exhausted: bool,
    },
    /// Record `FAILED`, acknowledge, and disable the hook (410 Gone).
    FailedAndDisable,
}

/// Which failures are tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetryRule {
    /// Those [`classify`] says may pass: no answer, 408, 429, 5xx.
    #[default]
    Transient,
    /// Every answer that is not 2xx too (Keycloak's rule); a 410 then disables nothing.
    /// A request the platform refused to send (a blocked address) still fails at once.
    Non2xx,
}

impl RetryRule {
    /// The rule a hook asks for.
    pub fn of(config: &crate::hook::HookConfig) -> Self {
        if config.retry_non_2xx { Self::Non2xx } else { Self::Transient }
    }
}

/// Combines an attempt's disposition with the schedule. `attempt` is 1-based within the
/// current round (a retry or replay starts a new round); `jitter` is uniform in [-1, 1].
pub fn decide(sent: Sent, attempt: u32, schedule: &RetrySchedule, jitter: f64, rule: RetryRule) -> Decision {
    let disposition = match (classify(sent), rule, sent) {
        (Disposition::Permanent(class), RetryRule::Non2xx, Sent::Response { .. }) => Disposition::Retryable(class),
        (Disposition::Gone, RetryRule::Non2xx, _) => Disposition::Retryable(ErrorClass::Http4xx),
        (d, _, _) => d,
    };
    match disposition {
        Disposition::Delivered => Decision::Succeeded,
        Disposition::Gone => Decision::FailedAndDisable,
        Disposition::Permanent(_) => Decision::Failed { exhausted: false },
        Disposition::Retryable(_) => {
            let retry_after = match sent {
                Sent::Response { retry_after, .. } => retry_after,
                Sent::NoResponse(_) => None,
            };
            match schedule.delay_after(attempt, jitter, retry_after) {
                Some(d) => Decision::RetryIn(d),
                None => Decision::Failed { exhausted: true },
            }
        }
    }
}

/// The error class recorded for a result, if it failed.
pub fn error_class(sent: Sent) -> Option<ErrorClass> {
    match classify(sent) {
        Disposition::Delivered => None,
        Disposition::Gone => Some(ErrorClass::Http4xx),
        Disposition::Retryable(c) | Disposition::Permanent(c) => Some(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16) -> Sent {
        Sent::Response { status: s, retry_after: None }
    }

    #[test]
    fn success_is_2xx_only() {
        for s in [200, 201, 202, 204, 299] {
            assert_eq!(classify(status(s)), Disposition::Delivered, "{s}");
        }
    }

    #[test]
    fn redirects_fail_without_retry() {
        for s in [301, 302, 307, 308] {
            assert_eq!(classify(status(s)), Disposition::Permanent(ErrorClass::Redirect));
        }
    }

    #[test]
    fn throttling_and_server_errors_retry() {
        assert_eq!(classify(status(408)), Disposition::Retryable(ErrorClass::Http429));
        assert_eq!(classify(status(429)), Disposition::Retryable(ErrorClass::Http429));
        for s in [500, 502, 503, 504, 599] {
            assert_eq!(classify(status(s)), Disposition::Retryable(ErrorClass::Http5xx));
        }
    }

    #[test]
    fn other_4xx_fail_at_once_and_410_disables() {
        for s in [400, 401, 403, 404, 409, 413, 422] {
            assert_eq!(classify(status(s)), Disposition::Permanent(ErrorClass::Http4xx));
        }
        assert_eq!(classify(status(410)), Disposition::Gone);
        assert_eq!(
            decide(status(410), 1, &RetrySchedule::default(), 0.0, RetryRule::Transient),
            Decision::FailedAndDisable
        );
        assert_eq!(error_class(status(410)), Some(ErrorClass::Http4xx));
    }

    #[test]
    fn network_failures_retry_and_blocked_addresses_do_not() {
        for c in [ErrorClass::Dns, ErrorClass::Connect, ErrorClass::Tls, ErrorClass::Timeout, ErrorClass::Auth] {
            assert_eq!(classify(Sent::NoResponse(c)), Disposition::Retryable(c));
        }
        assert_eq!(
            classify(Sent::NoResponse(ErrorClass::SsrfBlocked)),
            Disposition::Permanent(ErrorClass::SsrfBlocked)
        );
    }

    #[test]
    fn schedule_runs_out_into_exhausted_failure() {
        let s = RetrySchedule::parse("1s,2s").unwrap();
        let fail = status(503);
        assert_eq!(decide(fail, 1, &s, 0.0, RetryRule::Transient), Decision::RetryIn(Duration::from_secs(1)));
        assert_eq!(decide(fail, 2, &s, 0.0, RetryRule::Transient), Decision::RetryIn(Duration::from_secs(2)));
        assert_eq!(decide(fail, 3, &s, 0.0, RetryRule::Transient), Decision::Failed { exhausted: true });
        assert_eq!(decide(status(400), 1, &s, 0.0, RetryRule::Transient), Decision::Failed { exhausted: false });
        assert_eq!(decide(status(204), 3, &s, 0.0, RetryRule::Transient), Decision::Succeeded);
    }

    /// Keycloak retries whatever is not 2xx: a 4xx, a 3xx and a 410 are tried again on
    /// the schedule (a 410 disabling nothing), a 2xx still succeeds, and a request the
    /// platform would not send still fails at once.
    #[test]
    fn a_hook_that_retries_every_non_2xx_answer_retries_4xx_3xx_and_410() {
        let s = RetrySchedule::parse("1s").unwrap();
        let rule = RetryRule::Non2xx;
        for code in [400, 401, 404, 301, 410, 503] {
            assert_eq!(decide(status(code), 1, &s, 0.0, rule), Decision::RetryIn(Duration::from_secs(1)), "{code}");
            assert_eq!(decide(status(code), 2, &s, 0.0, rule), Decision::Failed { exhausted: true }, "{code}");
        }
        assert_eq!(decide(status(200), 1, &s, 0.0, rule), Decision::Succeeded);
        let blocked = Sent::NoResponse(ErrorClass::SsrfBlocked);
        assert_eq!(decide(blocked, 1, &s, 0.0, rule), Decision::Failed { exhausted: false });
    }

    #[test]
    fn retry_after_is_honoured_through_decide() {
        let s = RetrySchedule::parse("10s").unwrap();
        let sent = Sent::Response { status: 429, retry_after: Some(Duration::from_secs(15)) };
        assert_eq!(decide(sent, 1, &s, 0.0, RetryRule::Transient), Decision::RetryIn(Duration::from_secs(15)));
        assert_eq!(decide(sent, 1, &s, -0.5, RetryRule::Transient), Decision::RetryIn(Duration::from_millis(16_500)));
    }
}

//! When to try a failed delivery again.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// How far each delay may stray from the schedule, either way. Spreads the retries of
/// many deliveries that failed together (an endpoint outage) so they do not return as
/// one burst.
pub const JITTER_FRACTION: f64 = 0.2;

/// The longest a queue can hold a message back: SQS's 12-hour visibility-timeout limit.
/// A longer `Retry-After` is cut to this.
pub const MAX_QUEUE_DELAY: Duration = Duration::from_secs(12 * 60 * 60);

/// The delays between attempts. Attempt `n` (1-based) failing waits `delays[n-1]`; after
/// the last delay's attempt fails, the delivery is `FAILED`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

impl Default for RetrySchedule {
    /// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts over about 28 hours,
    /// enough to ride out a day-long outage, quick enough to cover a blip.
    fn default() -> Self {
        const MIN: u64 = 60;
        const HOUR: u64 = 60 * MIN;
        Self {
            delays: [5, 5 * MIN, 30 * MIN, 2 * HOUR, 5 * HOUR, 10 * HOUR, 10 * HOUR]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        }
    }
}

/// The most delays a schedule may have: eleven attempts already span days at the
/// default's later delays; more would only keep a dead endpoint busy.
pub const MAX_DELAYS: usize = 10;

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("retry schedule must be a comma-separated list of at most 10 durations like 5s,5m,2h, each at most 12h: {0}")]
pub struct InvalidSchedule(String);

impl RetrySchedule {
    /// A schedule of these delays.
    pub fn new(delays: Vec<Duration>) -> Result<Self, InvalidSchedule> {
        if delays.iter().any(|d| *d > MAX_QUEUE_DELAY) {
            return Err(InvalidSchedule("a delay is longer than 12h".to_owned()));
        }
        if delays.len() > MAX_DELAYS {
            return Err(InvalidSchedule(format!("{} delays", delays.len())));
        }
        Ok(Self { delays })
    }

    /// Parses `5s,5m,30m,2h`; a bare number is seconds, and `ms` is allowed for tests.
    pub fn parse(text: &str) -> Result<Self, InvalidSchedule> {
        let text = text.trim();
        if text.is_empty() {
            return Self::new(Vec::new());
        }
        text.split(',')
            .map(|part| parse_duration(part.trim()).ok_or_else(|| InvalidSchedule(part.to_owned())))
            .collect::<Result<Vec<_>, _>>()
            .and_then(Self::new)
    }

    /// How many attempts a delivery gets in all.
    pub fn max_attempts(&self) -> u32 {
        self.delays.len() as u32 + 1
    }

    /// The delays.
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// The wait after attempt `attempt` (1-based) failed, or `None` when it was the last.
    ///
    /// `jitter` is a random number in [-1, 1] supplied by the caller. A `Retry-After`
    /// from the receiver replaces the scheduled delay but is held within
    /// [scheduled, 2 × scheduled] (a receiver may slow us down, not stall a delivery for
    /// days or make us hammer it), then spread up to 20 % later, never earlier: the
    /// deliveries of one burst of `429`s all told the same wait would otherwise come back
    /// together, and be refused together again.
    ///
    /// No wait passes [`MAX_QUEUE_DELAY`]. A spread that would pass it ends there instead,
    /// moved earlier as a whole: cut at the limit, every delivery told 12 hours or more (or
    /// scheduled near 12 hours) came back at the same moment.
    pub fn delay_after(&self, attempt: u32, jitter: f64, retry_after: Option<Duration>) -> Option<Duration> {
        let base = *self.delays.get(attempt.checked_sub(1)? as usize)?;
        let jitter = jitter.clamp(-1.0, 1.0);
        // The window the wait is spread over, from its start, and where in it this one falls.
        let (start, width, at) = match retry_after {
            Some(ra) => {
                let told = ra.clamp(base, base.saturating_mul(2));
                (told, told.min(MAX_QUEUE_DELAY).mul_f64(JITTER_FRACTION), jitter.abs())
            }
            None => (base.mul_f64(1.0 - JITTER_FRACTION), base.mul_f64(2.0 * JITTER_FRACTION), (jitter + 1.0) / 2.0),
        };
        let start = start.min(MAX_QUEUE_DELAY.saturating_sub(width));
        Some(start + width.mul_f64(at))
    }
}

/// `250ms`, `5s`, `5m`, `2h`, `14d`, or bare seconds; `None` for anything else, or for a
/// value too large to represent.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        "d" => Duration::from_secs(n.checked_mul(86_400)?),
        _ => return None,
    })
}

/// Parses a `Retry-After` header: delay-seconds or an HTTP-date (RFC 9110).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    // Delay-seconds is digits only (no sign); more of them than a u64 holds is still a
    // wait, the longest there is (it is held to twice the scheduled delay anyway).
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX)));
    }
    // The HTTP-date's preferred form, then the two obsolete ones a recipient must still
    // read (RFC 9110, 5.6.7): RFC 850's and asctime's, both in GMT.
    let at = DateTime::parse_from_rfc2822(value).map(|t| t.with_timezone(&Utc)).ok().or_else(|| {
        ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(value, f).ok())
            .map(|t| t.and_utc())
    })?;
    (at - now).to_std().ok().or(Some(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_is_seven_delays_eight_attempts() {
        let s = RetrySchedule::default();
        assert_eq!(s.max_attempts(), 8);
        assert_eq!(s.delay_after(1, 0.0, None), Some(Duration::from_secs(5)));
        assert_eq!(s.delay_after(7, 0.0, None), Some(Duration::from_secs(36_000)));
        assert_eq!(s.delay_after(8, 0.0, None), None);
        assert_eq!(s.delay_after(0, 0.0, None), None);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let s = RetrySchedule::default();
        assert_eq!(s.delay_after(2, 1.0, None), Some(Duration::from_secs(360)));
        assert_eq!(s.delay_after(2, -1.0, None), Some(Duration::from_secs(240)));
        assert_eq!(s.delay_after(2, 9.0, None), Some(Duration::from_secs(360)));
    }

    #[test]
    fn retries_429_no_sooner_than_retry_after_and_no_later_than_twice_the_schedule() {
        let s = RetrySchedule::default();
        let five_min = Duration::from_secs(300);
        assert_eq!(s.delay_after(2, 0.0, Some(Duration::from_secs(400))), Some(Duration::from_secs(400)));
        assert_eq!(s.delay_after(2, 0.0, Some(Duration::from_secs(1))), Some(five_min));
        assert_eq!(s.delay_after(2, 0.0, Some(Duration::from_secs(99_999))), Some(five_min * 2));
        // Twice the scheduled 10 h passes what a queue can hold: spread over its last fifth.
        assert_eq!(s.delay_after(7, 0.0, Some(Duration::from_secs(99_999))), Some(MAX_QUEUE_DELAY.mul_f64(0.8)));
        assert_eq!(s.delay_after(7, 1.0, Some(Duration::from_secs(99_999))), Some(MAX_QUEUE_DELAY));
    }

    /// Near the longest wait a queue holds, deliveries told the same long wait (or on a
    /// schedule of long delays) are still spread: the window ends at the limit rather than
    /// being cut there, where every one of them would come back at the same moment.
    #[test]
    fn a_spread_that_would_pass_the_queues_limit_ends_at_it() {
        let jitters = [-0.9, -0.3, 0.0, 0.25, 0.6, 1.0];
        let s = RetrySchedule::default();
        let told = Some(Duration::from_secs(86_400));
        let spread: std::collections::BTreeSet<_> = jitters.iter().filter_map(|&j| s.delay_after(6, j, told)).collect();
        assert_eq!(spread.len(), 6, "{spread:?}");
        let last_fifth = MAX_QUEUE_DELAY.mul_f64(0.8)..=MAX_QUEUE_DELAY;
        assert!(spread.iter().all(|d| last_fifth.contains(d)), "{spread:?}");
        let long = RetrySchedule::parse("12h").unwrap();
        let spread: std::collections::BTreeSet<_> =
            jitters.iter().filter_map(|&j| long.delay_after(1, j, None)).collect();
        assert_eq!(spread.len(), 6, "{spread:?}");
        assert!(spread.iter().all(|d| *d <= MAX_QUEUE_DELAY), "{spread:?}");
    }

    /// Deliveries told the same `Retry-After` are spread over the 20 % after it, as the
    /// schedule's own delays are, rather than all coming back at the same moment.
    #[test]
    fn a_retry_after_is_spread_later_never_earlier() {
        let s = RetrySchedule::default();
        let told = Some(Duration::from_secs(400));
        assert_eq!(s.delay_after(2, 1.0, told), Some(Duration::from_secs(480)));
        assert_eq!(s.delay_after(2, -1.0, told), Some(Duration::from_secs(480)));
        assert_eq!(s.delay_after(2, 0.5, told), Some(Duration::from_secs(440)));
        let spread: std::collections::BTreeSet<_> =
            [-0.9, -0.3, 0.0, 0.25, 0.6, 1.0].into_iter().filter_map(|j| s.delay_after(2, j, told)).collect();
        assert_eq!(spread.len(), 6, "{spread:?}");
        assert!(spread.iter().all(|d| *d >= Duration::from_secs(400)));
    }

    #[test]
    fn schedules_parse() {
        let s = RetrySchedule::parse("100ms, 2s,1m,1h").unwrap();
        assert_eq!(
            s.delays(),
            &[Duration::from_millis(100), Duration::from_secs(2), Duration::from_secs(60), Duration::from_secs(3600)]
        );
        assert!(RetrySchedule::parse("5x").is_err());
        assert!(RetrySchedule::parse("13h").is_err());
        assert_eq!(RetrySchedule::parse("").unwrap().max_attempts(), 1);
    }

    #[test]
    fn retry_after_forms() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        // Past what a u64 holds: the longest wait, not none (which fell back to the schedule).
        assert_eq!(parse_retry_after("99999999999999999999", now), Some(Duration::from_secs(u64::MAX)));
        assert_eq!(parse_retry_after("+120", now), None, "delay-seconds has no sign");
        // The obsolete forms a recipient must still read: RFC 850's and asctime's.
        assert_eq!(parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Wed Oct 21 07:29:00 2015", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Thu Oct  1 07:29:00 2015", now), Some(Duration::ZERO));
    }
}

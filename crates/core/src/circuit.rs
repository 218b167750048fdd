//! The circuit breaker each hook carries, as pure state transitions.
//!
//! Closed: deliveries are sent. After [`OPEN_AFTER`] consecutive attempts that say the
//! endpoint is down (no answer, or a 5xx), it opens: nothing is sent, deliveries wait for
//! the next probe without spending an attempt. At `next_probe_at` one delivery is let
//! through as the probe (half-open); an answer closes the circuit, another failure opens
//! it again for twice as long, up to [`MAX_COOLDOWN`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::delivery::ErrorClass;
use crate::outcome::Sent;

/// Consecutive down attempts that open the circuit. Five rules out a one-off blip (a
/// deploy, a dropped connection) yet stops a dead endpoint within its first few seconds.
pub const OPEN_AFTER: u32 = 5;
/// The first cool-down: short, because most outages that trip a breaker are restarts.
pub const FIRST_COOLDOWN: Duration = Duration::from_secs(5);
/// The longest cool-down. Fifteen minutes is also the longest an SQS message can be
/// delayed, so a deferred delivery comes back at the next probe in one hop.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(15 * 60);

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Deliveries are sent.
    #[default]
    Closed,
    /// The endpoint is down; deliveries wait for the next probe.
    Open,
    /// One probe delivery is under way.
    HalfOpen,
}

/// A hook's breaker.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Circuit {
    /// Where it stands.
    #[serde(default)]
    pub state: CircuitState,
    /// Down attempts in a row while closed.
    #[serde(default)]
    pub down_streak: u32,
    /// When it last opened (kept while open and half-open).
    #[serde(default)]
    pub opened_at: Option<DateTime<Utc>>,
    /// When the next probe may go (open), or went (half-open).
    #[serde(default)]
    pub next_probe_at: Option<DateTime<Utc>>,
    /// The current cool-down, in milliseconds.
    #[serde(default)]
    pub cooldown_ms: u64,
    /// When the probe under way started (half-open).
    #[serde(default)]
    pub probe_started_at: Option<DateTime<Utc>>,
    /// Fields a newer release wrote, kept as they were (decision 0044).
    #[serde(flatten)]
    pub newer: crate::newer::NewerFields,
}

/// What one attempt says about the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    /// It answered: the endpoint is up, whatever it thought of the request.
    Up,
    /// No answer, or a 5xx: the endpoint is down.
    Down,
    /// Says nothing about the endpoint (a 429, or a failure before the request left).
    Neither,
}

impl Reachability {
    /// Reads an attempt's result: timeouts, connect, TLS and DNS failures and 5xx are down;
    /// any other answer is up (a 4xx is the receiver's opinion of the request, not an
    /// outage); a 429, a blocked address or a failed token fetch says nothing about it.
    pub fn of(sent: Sent) -> Self {
        match sent {
            Sent::Response { status: 429, .. } => Self::Neither,
            Sent::Response { status, .. } if !(200..500).contains(&status) => Self::Down,
            Sent::Response { .. } => Self::Up,
            Sent::NoResponse(c) => match c {
                ErrorClass::Timeout | ErrorClass::Connect | ErrorClass::Tls | ErrorClass::Dns => Self::Down,
                ErrorClass::Http5xx => Self::Down,
                ErrorClass::SsrfBlocked
                | ErrorClass::Auth
                | ErrorClass::Http429
                | ErrorClass::Http4xx
                | ErrorClass::Redirect => Self::Neither,
            },
        }
    }
}

/// A change of state worth telling the tenant about (`hook.circuit.opened` / `.closed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// It opened (or re-opened after a failed probe).
    Opened,
    /// It closed.
    Closed,
}

/// What the breaker says about sending a delivery now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Send it.
    Send,
    /// Send it as the probe, once the probe is claimed (a conditional write).
    Probe,
    /// Do not send it before this time; it is not an attempt.
    WaitUntil(DateTime<Utc>),
}

fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Circuit {
    /// Whether deliveries flow normally.
    pub fn is_closed(&self) -> bool {
        self.state == CircuitState::Closed
    }

    /// Whether a delivery may go now. `probe_budget` is how long a probe may take (the
    /// request timeout): a half-open circuit whose probe started longer ago than that
    /// lost its prober (a crash) and lets another one through.
    pub fn gate(&self, now: DateTime<Utc>, probe_budget: Duration) -> Gate {
        match self.state {
            CircuitState::Closed => Gate::Send,
            CircuitState::Open => match self.next_probe_at {
                Some(at) if at > now => Gate::WaitUntil(at),
                _ => Gate::Probe,
            },
            // One stored without its probe's start (written by hand, or by an older
            // version) has lost its prober as surely as one past its budget: taken as
            // started now, it was waited on for ever, each delivery told to come back later.
            CircuitState::HalfOpen => match self.probe_started_at.map(|t| add(t, probe_budget.saturating_mul(2))) {
                Some(ends) if ends > now => Gate::WaitUntil(ends),
                _ => Gate::Probe,
            },
        }
    }

    /// The circuit once this delivery has claimed the probe.
    pub fn claimed(&self, now: DateTime<Utc>) -> Self {
        Self { state: CircuitState::HalfOpen, probe_started_at: Some(now), ..self.clone() }
    }

    /// The circuit once a claimed probe was handed back unsent: open, its probe due now.
    pub fn released(&self, now: DateTime<Utc>) -> Self {
        Self { state: CircuitState::Open, next_probe_at: Some(now), probe_started_at: None, ..self.clone() }
    }

    /// The circuit after an attempt that started at `started` ended saying `reach`.
    /// `None` when nothing changed.
    pub fn after(
        &self,
        reach: Reachability,
        started: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<(Self, Option<Transition>)> {
        match (self.state, reach) {
            (_, Reachability::Neither) => None,
            (CircuitState::Closed, Reachability::Up) => {
                (self.down_streak > 0).then(|| (Self { down_streak: 0, ..self.clone() }, None))
            }
            (CircuitState::Closed, Reachability::Down) => {
                let streak = self.down_streak.saturating_add(1);
                if streak >= OPEN_AFTER {
                    Some((Self::open_for(FIRST_COOLDOWN, now, now), Some(Transition::Opened)))
                } else {
                    Some((Self { down_streak: streak, ..self.clone() }, None))
                }
            }
            // Any answer since it opened means the endpoint is reachable again, the probe's or
            // a straggler's. One that came before (another worker's batch, recorded after its
            // slowest request) says nothing new: it closed a circuit just opened on a dead
            // endpoint, which then took requests again until it opened once more.
            (CircuitState::Open | CircuitState::HalfOpen, Reachability::Up)
                if self.opened_at.is_none_or(|o| now >= o) =>
            {
                Some((Self::default(), Some(Transition::Closed)))
            }
            (CircuitState::Open | CircuitState::HalfOpen, Reachability::Up) => None,
            (CircuitState::HalfOpen, Reachability::Down) if self.probe_started_at.is_none_or(|p| started >= p) => {
                let cooldown =
                    Duration::from_millis(self.cooldown_ms).saturating_mul(2).clamp(FIRST_COOLDOWN, MAX_COOLDOWN);
                let opened = self.opened_at.unwrap_or(now);
                Some((Self::open_for(cooldown, opened, now), Some(Transition::Opened)))
            }
            // A request that left before the circuit opened (or before the probe) failing
            // tells nothing new.
            (CircuitState::Open | CircuitState::HalfOpen, Reachability::Down) => None,
        }
    }

    fn open_for(cooldown: Duration, opened_at: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        Self {
            newer: Default::default(),
            state: CircuitState::Open,
            down_streak: 0,
            opened_at: Some(opened_at),
            next_probe_at: Some(add(now, cooldown)),
            cooldown_ms: cooldown.as_millis() as u64,
            probe_started_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    const BUDGET: Duration = Duration::from_secs(10);

    fn down(c: &Circuit, t: i64) -> (Circuit, Option<Transition>) {
        c.after(Reachability::Down, at(t), at(t)).unwrap()
    }

    #[test]
    fn opens_after_consecutive_down_attempts_only() {
        let mut c = Circuit::default();
        for t in 0..4 {
            let (next, tr) = down(&c, t);
            assert_eq!(tr, None);
            c = next;
        }
        // An answer in between starts the count again.
        c = c.after(Reachability::Up, at(4), at(4)).unwrap().0;
        assert_eq!(c.down_streak, 0);
        for t in 5..9 {
            c = down(&c, t).0;
        }
        let (open, tr) = down(&c, 9);
        assert_eq!(tr, Some(Transition::Opened));
        assert_eq!(open.state, CircuitState::Open);
        assert_eq!(open.opened_at, Some(at(9)));
        assert_eq!(open.next_probe_at, Some(at(14)));
    }

    #[test]
    fn open_defers_until_the_probe_time_then_lets_one_probe_through() {
        let open = Circuit::open_for(FIRST_COOLDOWN, at(0), at(0));
        assert_eq!(open.gate(at(1), BUDGET), Gate::WaitUntil(at(5)));
        assert_eq!(open.gate(at(5), BUDGET), Gate::Probe);
        let probing = open.claimed(at(6));
        assert_eq!(probing.state, CircuitState::HalfOpen);
        assert_eq!(probing.gate(at(7), BUDGET), Gate::WaitUntil(at(26)));
        // A prober that never reported (a crash) does not hold the circuit forever.
        assert_eq!(probing.gate(at(26), BUDGET), Gate::Probe);
        // Nor one whose start is not known.
        let unknown = Circuit { probe_started_at: None, ..probing };
        assert_eq!(unknown.gate(at(7), BUDGET), Gate::Probe);
    }

    #[test]
    fn a_failed_probe_doubles_the_cooldown_up_to_the_cap_and_an_answer_closes() {
        let mut c = Circuit::open_for(FIRST_COOLDOWN, at(0), at(0));
        let mut cooldowns = Vec::new();
        let mut t = 0;
        for _ in 0..10 {
            t += 1000;
            c = c.claimed(at(t));
            let (next, tr) = c.after(Reachability::Down, at(t), at(t + 1)).unwrap();
            assert_eq!(tr, Some(Transition::Opened));
            assert_eq!(next.opened_at, Some(at(0)), "opened_at stays the first opening");
            cooldowns.push(next.cooldown_ms / 1000);
            c = next;
        }
        assert_eq!(cooldowns, vec![10, 20, 40, 80, 160, 320, 640, 900, 900, 900]);
        let (closed, tr) = c.claimed(at(t + 2000)).after(Reachability::Up, at(t + 2000), at(t + 2001)).unwrap();
        assert_eq!(tr, Some(Transition::Closed));
        assert_eq!(closed, Circuit::default());
    }

    #[test]
    fn stragglers_failing_after_the_circuit_opened_change_nothing() {
        let open = Circuit::open_for(FIRST_COOLDOWN, at(10), at(10));
        assert_eq!(open.after(Reachability::Down, at(0), at(11)), None);
        let probing = open.claimed(at(20));
        assert_eq!(probing.after(Reachability::Down, at(5), at(21)), None, "started before the probe");
        assert_eq!(open.after(Reachability::Neither, at(0), at(11)), None);
    }

    #[test]
    fn an_answer_from_before_the_circuit_opened_does_not_close_it() {
        let open = Circuit::open_for(FIRST_COOLDOWN, at(10), at(10));
        assert_eq!(open.after(Reachability::Up, at(0), at(9)), None, "answered before it opened");
        assert_eq!(open.after(Reachability::Up, at(0), at(11)).map(|(_, t)| t), Some(Some(Transition::Closed)));
        let probing = open.claimed(at(20));
        assert_eq!(probing.after(Reachability::Up, at(1), at(9)), None);
    }

    #[test]
    fn what_counts_as_down() {
        let resp = |status| Sent::Response { status, retry_after: None };
        assert_eq!(Reachability::of(resp(200)), Reachability::Up);
        assert_eq!(Reachability::of(resp(404)), Reachability::Up);
        assert_eq!(Reachability::of(resp(301)), Reachability::Up);
        assert_eq!(Reachability::of(resp(503)), Reachability::Down);
        assert_eq!(Reachability::of(resp(429)), Reachability::Neither);
        for c in [ErrorClass::Timeout, ErrorClass::Connect, ErrorClass::Tls, ErrorClass::Dns] {
            assert_eq!(Reachability::of(Sent::NoResponse(c)), Reachability::Down, "{c:?}");
        }
        for c in [ErrorClass::SsrfBlocked, ErrorClass::Auth] {
            assert_eq!(Reachability::of(Sent::NoResponse(c)), Reachability::Neither, "{c:?}");
        }
    }
}

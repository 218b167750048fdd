//! Rates as virtual schedules (the generic cell rate algorithm): a key's state is one
//! number, the time its next unit may go. Pacing hands out slots and never refuses;
//! admission refuses what would run ahead of the rate by more than a burst.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// `per_second` units a second, evenly spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    per_second: u32,
}

/// The fastest rate: one unit a microsecond, the unit rate state is kept in. A faster one
/// would space its units 0 µs apart, which is no limit at all. (Between 100,000 and
/// 1,000,000 a second the spacing is rounded down to whole microseconds, so such a rate
/// admits somewhat more than it says.)
pub const MAX_PER_SECOND: u32 = 1_000_000;

impl Rate {
    /// A rate of `per_second`, held to 1 ..= [`MAX_PER_SECOND`].
    pub fn per_second(per_second: u32) -> Self {
        Self { per_second: per_second.clamp(1, MAX_PER_SECOND) }
    }

    /// Units a second.
    pub fn get(self) -> u32 {
        self.per_second
    }

    /// The time between two units, in whole microseconds (at least 1).
    pub fn interval_us(self) -> i64 {
        1_000_000 / i64::from(self.per_second)
    }
}

/// How long rate state is kept once its key's next unit is due: forgotten then, the key
/// starts afresh, which is the same as idle (unused time is not banked).
pub const STATE_KEPT: Duration = Duration::from_secs(3600);

/// Which schedule paces `hook` under its present limit: the time its limit was last set,
/// in microseconds (0 for a limit it was created with).
pub fn schedule_of(hook: &crate::hook::Hook) -> i64 {
    hook.state.paced_since.map_or(0, micros)
}

/// The key of a hook's delivery pace in the shared rate state, for the schedule that
/// began at `schedule` ([`schedule_of`]). Each setting of the limit has a schedule of its
/// own: a changed limit (or one set back to an earlier value) starts afresh, not behind
/// the turns the old one gave out, perhaps hours of them, which the deliveries holding
/// them give up as they come up. The schedule of a limit the hook was created with keeps
/// the key every limit shared before (`hook:{id}`), so that a release before this one,
/// running beside it in a deploy or after a rollback, paces such a hook in the same one.
pub fn hook_key(hook: crate::ids::HookId, schedule: i64) -> String {
    if schedule == 0 { format!("hook:{hook}") } else { format!("hook:{hook}:{schedule}") }
}

/// Microseconds since the Unix epoch, the unit rate state is kept in.
pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The time of a microsecond count.
pub fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// Reserves `count` consecutive slots after `next` (the stored state; `None` for a key
/// never used): returns the first slot and the new state. Slot `i` is `first + i ×
/// interval`. An idle key starts at `now`: unused time is not banked, so a burst never
/// exceeds the rate.
pub fn pace(next: Option<i64>, now: i64, rate: Rate, count: u32) -> (i64, i64) {
    let first = next.map_or(now, |n| n.max(now));
    (first, first + rate.interval_us() * i64::from(count))
}

/// Reserves one slot after `next` for each unit of `deadlines`, in order, but only for a
/// unit whose slot would come before its deadline: returns each unit's slot (`None` for
/// one it would not, which takes none, so the units after it lose no time) and the new
/// state (`None` when no unit took a slot, the state then left as it is). Slots are spaced
/// as [`pace`] spaces them.
pub fn pace_before(next: Option<i64>, now: i64, rate: Rate, deadlines: &[i64]) -> (Vec<Option<i64>>, Option<i64>) {
    let mut slot = next.map_or(now, |n| n.max(now));
    let mut taken = false;
    let slots = deadlines
        .iter()
        .map(|&deadline| {
            (slot < deadline).then(|| {
                let mine = slot;
                slot += rate.interval_us();
                taken = true;
                mine
            })
        })
        .collect();
    (slots, taken.then_some(slot))
}

/// How far past where any admission could have left it a key's state may lie before it
/// is taken for the work of a clock since stepped back, and forgotten.
const STEPPED_BACK_US: i64 = 60_000_000;

/// Admits `count` units under `rate`, letting the key run up to `burst` units ahead:
/// `Ok(new state)`, or `Err(wait)` with how long until they would be admitted (the state
/// is then unchanged).
///
/// An admission leaves the state at most a burst's worth of slots after its `now`. One
/// more than a minute past that was written before the clock was stepped back (an NTP
/// correction, a fixed RTC): kept, it refused every call for as long as the step, so a
/// tenant that had published just before a step of an hour was answered `429` for an
/// hour. It is forgotten instead. (A minute leaves the small skews between processes'
/// clocks on AWS to the rate as written.)
pub fn admit(next: Option<i64>, now: i64, rate: Rate, burst: u32, count: u32) -> Result<i64, Duration> {
    let allowed = now + rate.interval_us() * i64::from(burst.max(count));
    let next = next.filter(|n| *n <= allowed.saturating_add(STEPPED_BACK_US));
    let (_, new) = pace(next, now, rate, count);
    if new <= allowed { Ok(new) } else { Err(Duration::from_micros((new - allowed).unsigned_abs())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_past_one_a_microsecond_is_held_to_it_not_made_unlimited() {
        let r = Rate::per_second(u32::MAX);
        assert_eq!((r.get(), r.interval_us()), (MAX_PER_SECOND, 1));
        let mut next = None;
        for _ in 0..10 {
            next = Some(admit(next, 0, r, 10, 1).unwrap());
        }
        assert!(admit(next, 0, r, 10, 1).is_err(), "the burst is held to");
    }

    #[test]
    fn pacing_spaces_slots_evenly_and_does_not_bank_idle_time() {
        let r = Rate::per_second(4);
        assert_eq!(pace(None, 1_000_000, r, 3), (1_000_000, 1_750_000));
        assert_eq!(pace(Some(1_750_000), 1_000_000, r, 1), (1_750_000, 2_000_000));
        // Idle since long ago: starts now, no burst of saved-up slots.
        assert_eq!(pace(Some(10), 5_000_000, r, 2), (5_000_000, 5_500_000));
    }

    /// A unit whose slot would come at or after its deadline takes none: the units after
    /// it are not pushed back by it, and a reservation in which none fits stores nothing.
    #[test]
    fn a_unit_whose_slot_would_miss_its_deadline_takes_none() {
        let r = Rate::per_second(4);
        let never = i64::MAX;
        let (slots, next) = pace_before(Some(2_000_000), 1_000_000, r, &[never, 2_100_000, never, 2_500_000]);
        assert_eq!(slots, [Some(2_000_000), None, Some(2_250_000), None]);
        assert_eq!(next, Some(2_500_000));
        assert_eq!(pace_before(Some(2_000_000), 1_000_000, r, &[2_000_000]), (vec![None], None), "at its deadline");
        assert_eq!(pace_before(None, 1_000_000, r, &[never, never]), pace_before(Some(10), 1_000_000, r, &[never; 2]));
        let (first, next) = pace(None, 1_000_000, r, 2);
        assert_eq!(
            pace_before(None, 1_000_000, r, &[never; 2]),
            (vec![Some(first), Some(first + 250_000)], Some(next))
        );
    }

    #[test]
    fn admission_allows_a_burst_then_refuses_with_the_wait() {
        let r = Rate::per_second(10);
        let mut next = None;
        for _ in 0..20 {
            next = Some(admit(next, 0, r, 20, 1).unwrap());
        }
        let wait = admit(next, 0, r, 20, 1).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // A tenth of a second later there is room for one more.
        assert!(admit(next, 100_000, r, 20, 1).is_ok());
        // A call larger than the burst is judged as a burst of its own size.
        assert!(admit(None, 0, r, 5, 10).is_ok());
    }

    /// A state written before the clock was stepped back an hour does not refuse every
    /// call for that hour; one within a minute of its bound (a skew between processes) is
    /// kept.
    #[test]
    fn a_state_from_before_the_clock_stepped_back_is_forgotten() {
        let r = Rate::per_second(1000);
        let hour = 3_600_000_000;
        let before_the_step = admit(None, hour, r, 5000, 10).unwrap();
        assert!(admit(Some(before_the_step), 0, r, 5000, 10).is_ok());
        let full = admit(None, 0, r, 5000, 5000).unwrap();
        let skewed = 30_000_000;
        assert!(admit(Some(full + skewed), 0, r, 5000, 1).is_err(), "a small skew is kept");
    }
}

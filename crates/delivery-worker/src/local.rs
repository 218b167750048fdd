//! What one worker process knows before the table does: how many requests each hook has
//! in flight here, how long they have taken lately, and which hooks it just found slow.
//! All are acted on at once; the slow mark also reaches the table (and so other processes
//! and ingest) with the hook's next health write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hookbridge_core::health::{RECOVERED_AFTER, found_slow_at, may_recover};
use hookbridge_core::hook::{Hook, Lane};
use hookbridge_core::ids::HookId;
use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Entry {
    fast: u32,
    slow: u32,
    slow_until: Option<DateTime<Utc>>,
    /// When it was last found slow.
    slow_marked_at: Option<DateTime<Utc>>,
    /// The URL found slow: a hook moved to another since is not slow for it.
    slow_url: String,
    /// A moving average of the hook's recent request times, in milliseconds, and when the
    /// last of them ended.
    lately: Option<(f64, tokio::time::Instant)>,
    /// When the hook's places here went from none taken to one: until one of its requests
    /// ends having reached the receiver (what `took` is told of), the least any of them
    /// takes.
    began: Option<tokio::time::Instant>,
    /// Its deliveries that have a turn to wait for one of its places ([`Turn`]).
    turns: u32,
    /// Its slow-lane answers in a row, while found slow, that came quickly, and until when
    /// it is found slow: the count keeps the entry until then, so that a hook whose
    /// requests here all end between batches does not start it over each time
    /// ([`Local::answered_on_slow_lane`]).
    quick_in_a_row: (u32, Option<DateTime<Utc>>),
    /// When the last of its overflow booked to come back is due ([`Local::book`]).
    booked_until: Option<tokio::time::Instant>,
    /// Told each time one of the hook's places is given back; whoever waits for a place
    /// holds a clone.
    freed: Arc<Notify>,
}

impl Entry {
    fn idle(&self, now: DateTime<Utc>) -> bool {
        self.fast == 0
            && self.slow == 0
            && self.turns == 0
            && self.slow_until.is_none_or(|t| t <= now)
            && (self.quick_in_a_row.0 == 0 || self.quick_in_a_row.1.is_none_or(|t| t <= now))
            && Arc::strong_count(&self.freed) == 1
    }

    /// How long its requests have taken lately, and when the last of them ended.
    fn typical(&self) -> Option<(Duration, tokio::time::Instant)> {
        self.lately.map(|(ms, last_ended)| (Duration::from_secs_f64(ms / 1e3), last_ended))
    }

    /// See [`Local::pace`].
    fn pace(&self) -> Option<Duration> {
        let (typical, last_ended) = self.typical()?;
        Some(typical.max(last_ended.elapsed()))
    }

    /// See [`Local::unanswered_for`].
    fn unanswered_for(&self) -> Option<Duration> {
        if self.lately.is_some() || self.fast + self.slow == 0 {
            return None;
        }
        self.began.map(|t| t.elapsed())
    }
}

/// The places on the fast lane a hook may still take once three quarters of the lane are
/// taken: a hook with fewer in flight here (a tenant's usual traffic, a healthy tenant's
/// one event in a while) does not wait behind other hooks' requests for a place. The share
/// halves each time the lane's free places do ([`share`]), down to one place.
pub(crate) const FAST_SHARE_ALWAYS: u32 = 8;

/// [`FAST_SHARE_ALWAYS`] for the slow lane: half a hook's cap there (8), so that hooks at
/// their caps are held back too. Eight slow hooks at their caps took all of the local
/// runner's 64 slow-lane places, and a hook found slow once, answering at once since, got
/// none.
pub(crate) const SLOW_SHARE_ALWAYS: u32 = 4;

/// The places a hook may still take on a lane of `places` with `taken` taken, if it is
/// crowded ([`Local::crowded`]): none while more than a quarter is free, then `first`,
/// halved each time the free places halve again (a half of it once an eighth is free, a
/// quarter at a sixteenth, and so on), down to 1. A fixed share bounds few hooks, not
/// many: forty hooks with seven requests each held open took all of the local runner's
/// 256 fast-lane places, each below the share of 8. With the share halving, hooks that
/// have places stop taking more while some are still free, and a hook with none always
/// finds one.
fn share(places: u32, taken: u32, first: u32) -> Option<u32> {
    let (places, free) = (u64::from(places), u64::from(places.saturating_sub(taken)));
    if free * 4 > places {
        return None;
    }
    let (mut share, mut over) = (first, 8);
    while share > 1 && free * over <= places {
        share /= 2;
        over *= 2;
    }
    Some(share)
}

/// One lane's places in this process, when its consumer has a fixed number (the local
/// runner's); `None` for a Lambda invocation, which takes one batch at a time.
#[derive(Debug, Default)]
struct LanePlaces {
    places: Option<u32>,
    /// Requests in flight on the lane here, all hooks together. Changed only under the
    /// hooks' lock, with the hook's own count.
    taken: AtomicU32,
}

/// A hook whose requests take at most this (its [`Local::pace`]) gives each place back
/// within moments, so it is never what crowds the fast lane, and is never crowded out of
/// it: the pace at which its overflow waits in hand for its places (decision 0012).
pub(crate) const BRIEF: Duration = Duration::from_millis(25);

/// Per-hook state of this process.
#[derive(Debug, Default)]
pub(crate) struct Local {
    hooks: Mutex<HashMap<HookId, Entry>>,
    fast: LanePlaces,
    slow: LanePlaces,
    /// The revision each hook was at after this process last wrote its health or claimed
    /// its probe: a batch holding an older copy reads the hook again before judging its
    /// results against it.
    written: Mutex<HashMap<HookId, u64>>,
    /// Failures of a long-failing hook's run that this process judged not worth a write of
    /// their own ([`hookbridge_core::health::HealthChange::quiet`]): added to its next write.
    unwritten: Mutex<HashMap<HookId, Unwritten>>,
}

/// Failures counted here and not yet written, of the run that began at `since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unwritten {
    /// When the run they belong to began (a run written since, after a success, is another).
    pub(crate) since: DateTime<Utc>,
    /// How many more failures the run had than the hook's row says.
    pub(crate) failures: u32,
    /// When the oldest of them was held back.
    pub(crate) held_since: DateTime<Utc>,
}

/// Revisions remembered before the memory starts over (a stale copy then goes unnoticed
/// only until the hook's next health write).
const WRITTEN_KEPT: usize = 10_000;

impl Local {
    /// A process whose lanes have `fast` and `slow` places, if a fixed number.
    pub(crate) fn with_places(fast: Option<u32>, slow: Option<u32>) -> Self {
        Self {
            fast: LanePlaces { places: fast, ..LanePlaces::default() },
            slow: LanePlaces { places: slow, ..LanePlaces::default() },
            ..Self::default()
        }
    }

    fn lane(&self, lane: Lane) -> &LanePlaces {
        match lane {
            Lane::Fast => &self.fast,
            Lane::Slow => &self.slow,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<HookId, Entry>> {
        self.hooks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the hook of `e` must leave `lane`'s last places to others: once three
    /// quarters of the lane's places here are taken, a hook with its share ([`share`]:
    /// [`FAST_SHARE_ALWAYS`] or [`SLOW_SHARE_ALWAYS`], less as the lane fills) or more in
    /// flight takes no more, unless it is [`BRIEF`]. Each hook's cap (96 fast, 8 slow)
    /// bounds one slow hook; this bounds several. Three hooks answering in a second, or
    /// never, each at its cap took more fast-lane places than the local runner has (256),
    /// and every other tenant's deliveries waited for their requests to end: a second, or
    /// the patience. The lane's own count includes the hook's, so a lane smaller than a
    /// hook's cap holds even a lone slow hook to three quarters of it.
    fn crowded(&self, e: &Entry, lane: Lane) -> bool {
        let (places, first, held) = match lane {
            Lane::Fast => (&self.fast, FAST_SHARE_ALWAYS, e.fast),
            Lane::Slow => (&self.slow, SLOW_SHARE_ALWAYS, e.slow),
        };
        let Some(n) = places.places else { return false };
        let Some(share) = share(n, places.taken.load(Ordering::Relaxed), first) else { return false };
        // The pace last: it reads the clock, on every place a busy hook takes.
        held >= share && e.pace().is_none_or(|pace| pace > BRIEF)
    }

    /// Whether `hook` may take no more of the fast lane's places here for now because the
    /// lane is crowded ([`Self::crowded`]), whatever its own cap.
    pub(crate) fn crowded_for(&self, hook: HookId) -> bool {
        self.lock().get(&hook).is_some_and(|e| self.crowded(e, Lane::Fast))
    }

    /// Whether this process found the hook slow at its URL and the mark has not run out.
    /// A mark older than the hook's last change, which left it not slow, no longer holds:
    /// its owner re-enabled it or gave it new health since (the API starts its health over).
    pub(crate) fn is_slow(&self, hook: &Hook, now: DateTime<Utc>) -> bool {
        let reset_since = |marked: DateTime<Utc>| hook.state.health.slow_until.is_none() && hook.updated_at > marked;
        self.lock()
            .get(&hook.id)
            .filter(|e| e.slow_url == hook.config.url && !e.slow_marked_at.is_some_and(reset_since))
            .and_then(|e| e.slow_until)
            .is_some_and(|t| t > now)
    }

    /// Sends the hook's deliveries to the slow lane until `until`, while it is at `url`.
    pub(crate) fn mark_slow(&self, hook: HookId, url: &str, until: DateTime<Utc>) {
        let mut hooks = self.lock();
        // A mark outlives the hook's last request, so an entry whose mark ran out while
        // the hook had no traffic here was never forgotten (a deleted or quiet hook's).
        // Marks are what leave such entries, so a mark is when to clear them.
        let now = Utc::now();
        hooks.retain(|_, e| !e.idle(now));
        let e = hooks.entry(hook).or_default();
        // What was booked comes back to find it slow and goes on to the slow lane; once the
        // mark runs out, its overflow is booked from the clock, not behind those.
        e.booked_until = None;
        if e.slow_url != url {
            url.clone_into(&mut e.slow_url);
            e.slow_until = None;
        }
        e.slow_until = e.slow_until.max(Some(until));
        e.slow_marked_at = Some(now);
        e.quick_in_a_row = (0, None);
    }

    /// Counts an answer of `hook` on the slow lane while it is found slow (`quick`: within a
    /// quarter of the fast lane's patience), and whether it makes [`RECOVERED_AFTER`] quick
    /// answers in a row, the hook last found slow (here, or as the table's mark says: it
    /// runs to `slow_in_table`) at least [`SLOW_AT_LEAST`](hookbridge_core::health::SLOW_AT_LEAST) ago. Then the hook's mark here
    /// is lifted and the count starts over; the caller tells the table
    /// ([`hookbridge_core::health::Observation::Recovered`]).
    pub(crate) fn answered_on_slow_lane(
        &self,
        hook: HookId,
        quick: bool,
        slow_in_table: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> bool {
        let mut hooks = self.lock();
        let e = hooks.entry(hook).or_default();
        if !quick {
            e.quick_in_a_row = (0, None);
            return false;
        }
        e.quick_in_a_row = (e.quick_in_a_row.0.saturating_add(1), e.slow_until.max(slow_in_table));
        let marked = e.slow_marked_at.max(slow_in_table.map(found_slow_at));
        if e.quick_in_a_row.0 < RECOVERED_AFTER || !may_recover(marked, now) {
            return false;
        }
        e.quick_in_a_row = (0, None);
        e.slow_until = None;
        true
    }

    /// Notes how long a request to `hook` took.
    pub(crate) fn took(&self, hook: HookId, d: Duration) {
        // Kept only while the hook has requests here: the estimate is for the moments a
        // hook's places are all taken, which is when it has.
        if let Some(e) = self.lock().get_mut(&hook) {
            let ms = d.as_secs_f64() * 1e3;
            let typical = e.lately.map_or(ms, |(t, _)| t + (ms - t) * 0.2);
            e.lately = Some((typical, tokio::time::Instant::now()));
        }
    }

    /// How long the hook's requests have taken lately, if this process has seen some.
    #[cfg(test)]
    pub(crate) fn typical(&self, hook: HookId) -> Option<Duration> {
        self.lock().get(&hook).and_then(Entry::typical).map(|(typical, _)| typical)
    }

    /// How long until one of the hook's requests ends, as far as this process can tell:
    /// how long they took lately, or how long since one last ended when that is longer.
    /// A hook that stops answering stops looking fast at once, not when its first
    /// unanswered request reaches the patience.
    pub(crate) fn pace(&self, hook: HookId) -> Option<Duration> {
        self.lock().get(&hook)?.pace()
    }

    /// How long ago the first of the hook's requests here began, while none of them has
    /// ended having reached its receiver (so it has no [`Self::pace`] yet): the least its
    /// requests take.
    #[cfg(test)]
    pub(crate) fn unanswered_for(&self, hook: HookId) -> Option<Duration> {
        self.lock().get(&hook)?.unanswered_for()
    }

    /// The hook's [`Self::pace`], or, while it has none, how long its first request has
    /// gone unanswered ([`Self::unanswered_for`]) and `true`: read together, so an answer
    /// arriving between the two reads leaves the hook neither.
    pub(crate) fn request_time(&self, hook: HookId) -> Option<(Duration, bool)> {
        let hooks = self.lock();
        let e = hooks.get(&hook)?;
        e.pace().map(|pace| (pace, false)).or_else(|| e.unanswered_for().map(|silent| (silent, true)))
    }

    /// A turn to wait for one of the hook's places, or `None` when `most` of its
    /// deliveries (if bounded) have one already.
    pub(crate) fn turn_to_wait(self: &Arc<Self>, hook: HookId, most: Option<u32>) -> Option<Turn> {
        let mut hooks = self.lock();
        let e = hooks.entry(hook).or_default();
        if most.is_some_and(|most| e.turns >= most) {
            return None;
        }
        e.turns += 1;
        Some(Turn { local: self.clone(), hook })
    }

    /// How long until one more of the hook's overflow comes back, judged by how long the
    /// hook's requests take: their typical time lately, while one ended within twice that
    /// (with its places all taken, one ends every few milliseconds; a hook silent for longer
    /// may have gone dark); or, while none of them has ended yet, how long the first has
    /// gone unanswered. `None` when that is longer than `most`, or the hook is quiet. The
    /// delivery comes back a place's worth of that time (over `places`) after the last one
    /// booked, or after now once that one is due. Booked one after another, a backlog comes
    /// back about as fast as the hook's places free up, most deliveries once or twice,
    /// rather than all of it at once or on a lane that drains it a few at a time. A hook yet
    /// to answer has its overflow booked no sooner than its silence so far, so one of its
    /// deliveries that comes back to it still silent waits at least twice as long the next
    /// time: a few bookings until `most`, however small its backlog. Forgotten with the
    /// hook's entry: by then its places are all free, and nothing booked needs pacing.
    pub(crate) fn book(&self, hook: HookId, places: u32, most: Duration) -> Option<Duration> {
        let mut hooks = self.lock();
        let e = hooks.get_mut(&hook)?;
        // On a crowded lane, the places it holds: the lane holds it below its cap.
        let places = if self.crowded(e, Lane::Fast) { places.min(e.fast.max(1)) } else { places };
        let (typical, unanswered) = match e.typical() {
            Some((typical, last_ended)) => ((last_ended.elapsed() <= typical * 2).then_some(typical)?, false),
            None => (e.unanswered_for()?, true),
        };
        if typical > most {
            return None;
        }
        let now = tokio::time::Instant::now();
        let mut at = e.booked_until.filter(|t| *t > now).unwrap_or(now) + typical / places.max(1);
        if unanswered {
            at = at.max(now + typical);
        }
        e.booked_until = Some(at);
        Some(at - now)
    }

    /// A place for one more request to `hook` on `lane`, or `None` when it has `cap` already,
    /// or the lane is crowded for it ([`Self::crowded`]).
    pub(crate) fn acquire(self: &Arc<Self>, hook: HookId, lane: Lane, cap: u32) -> Option<InFlight> {
        let mut hooks = self.lock();
        let e = hooks.entry(hook).or_default();
        let none_taken = e.fast + e.slow == 0;
        if self.crowded(e, lane) {
            return None;
        }
        let n = match lane {
            Lane::Fast => &mut e.fast,
            Lane::Slow => &mut e.slow,
        };
        if *n >= cap {
            return None;
        }
        *n += 1;
        self.lane(lane).taken.fetch_add(1, Ordering::Relaxed);
        if none_taken {
            e.began = Some(tokio::time::Instant::now());
        }
        Some(InFlight { local: self.clone(), hook, lane })
    }

    /// A place for one more request to `hook` on `lane`, waited for up to `within` while
    /// the hook's requests end; `None` when none was given back in time.
    pub(crate) async fn wait_for_place(
        self: &Arc<Self>,
        hook: HookId,
        lane: Lane,
        cap: u32,
        within: Duration,
    ) -> Option<InFlight> {
        let deadline = tokio::time::Instant::now() + within;
        let place = loop {
            // A clone of the entry's notifier also keeps the entry while it is waited on.
            let freed = self.lock().entry(hook).or_default().freed.clone();
            let notified = freed.notified();
            tokio::pin!(notified);
            // Listening before looking, so a place given back in between is not missed.
            notified.as_mut().enable();
            if let Some(place) = self.acquire(hook, lane, cap) {
                break Some(place);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break None;
            }
        };
        if place.is_none() {
            self.forget_if_idle(hook);
        }
        place
    }

    /// How many deliveries wait for one of the hook's places.
    #[cfg(test)]
    pub(crate) fn waiters(&self, hook: HookId) -> usize {
        self.lock().get(&hook).map_or(0, |e| Arc::strong_count(&e.freed) - 1)
    }

    /// Notes that this process left `hook` at `revision`.
    pub(crate) fn wrote(&self, hook: HookId, revision: u64) {
        let mut written = self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if written.len() >= WRITTEN_KEPT {
            written.clear();
        }
        let at = written.entry(hook).or_default();
        *at = (*at).max(revision);
    }

    /// Takes the failures of `hook` this process has counted and not written.
    pub(crate) fn take_unwritten(&self, hook: HookId) -> Option<Unwritten> {
        self.unwritten.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&hook)
    }

    /// Holds `failures` of `hook` back, beside any another batch put back meanwhile: added to
    /// them if of the same run, in place of them if of a later one.
    pub(crate) fn put_unwritten(&self, hook: HookId, failures: Option<Unwritten>) {
        let Some(u) = failures else { return };
        let mut unwritten = self.unwritten.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if unwritten.len() >= WRITTEN_KEPT && !unwritten.contains_key(&hook) {
            unwritten.clear();
        }
        let held = unwritten.entry(hook).or_insert(Unwritten { failures: 0, ..u });
        if u.since > held.since {
            *held = u;
        } else if u.since == held.since {
            held.failures = held.failures.saturating_add(u.failures);
            held.held_since = held.held_since.min(u.held_since);
        }
    }

    /// Whether a copy of `hook` at `revision` is older than what this process wrote.
    pub(crate) fn behind(&self, hook: HookId, revision: u64) -> bool {
        let written = self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        written.get(&hook).is_some_and(|&at| at > revision)
    }

    /// Forgets the hook when nothing of it is left here.
    fn forget_if_idle(&self, hook: HookId) {
        let mut hooks = self.lock();
        if hooks.get(&hook).is_some_and(|e| e.idle(Utc::now())) {
            hooks.remove(&hook);
        }
    }
}

/// A delivery's turn among those waiting for one of its hook's places; given back when
/// dropped.
#[derive(Debug)]
pub(crate) struct Turn {
    local: Arc<Local>,
    hook: HookId,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut hooks = self.local.lock();
        if let Some(e) = hooks.get_mut(&self.hook) {
            e.turns = e.turns.saturating_sub(1);
            if e.idle(Utc::now()) {
                hooks.remove(&self.hook);
            }
        }
    }
}

/// One request's place among its hook's in-flight requests; given back when dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    local: Arc<Local>,
    hook: HookId,
    lane: Lane,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut hooks = self.local.lock();
        if let Some(e) = hooks.get_mut(&self.hook) {
            match self.lane {
                Lane::Fast => e.fast = e.fast.saturating_sub(1),
                Lane::Slow => e.slow = e.slow.saturating_sub(1),
            }
            let taken = &self.local.lane(self.lane).taken;
            let _ = taken.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            e.freed.notify_one();
            if e.idle(Utc::now()) {
                hooks.remove(&self.hook);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crowded_fast_lane_keeps_its_last_quarter_for_hooks_with_few_in_flight() {
        let local = Arc::new(Local::with_places(Some(256), Some(64)));
        let heavy: Vec<HookId> = (0..4).map(|_| HookId::generate()).collect();
        let mut held = Vec::new();
        for &h in &heavy {
            while let Some(place) = local.acquire(h, Lane::Fast, 96) {
                held.push(place);
            }
        }
        // Two at their cap make three quarters; the other two take only their own few.
        assert_eq!(held.len(), 96 + 96 + 2 * FAST_SHARE_ALWAYS as usize);
        assert!(local.crowded_for(heavy[0]) && local.crowded_for(heavy[3]));
        let light = HookId::generate();
        assert!(!local.crowded_for(light));
        let few: Vec<_> = (0..FAST_SHARE_ALWAYS).map(|_| local.acquire(light, Lane::Fast, 96).unwrap()).collect();
        assert!(local.acquire(light, Lane::Fast, 96).is_none(), "past its few, the light hook is crowded out too");
        // With one count for both lanes (216 taken) the slow lane would leave it one place.
        let slow: Vec<_> = (0..5).map_while(|_| local.acquire(heavy[3], Lane::Slow, 8)).collect();
        assert_eq!(slow.len(), 5, "the slow lane counts apart");
        // Its overflow is booked a place's worth of its request time apart, by the places
        // the lane leaves it rather than its cap.
        local.took(heavy[3], Duration::from_millis(800));
        assert_eq!(local.book(heavy[3], 96, Duration::from_secs(2)), Some(Duration::from_millis(100)));
        // A hook whose requests end within moments is never what crowds the lane.
        let brief = HookId::generate();
        let mut brief_held: Vec<_> =
            (0..FAST_SHARE_ALWAYS).map(|_| local.acquire(brief, Lane::Fast, 96).unwrap()).collect();
        local.took(brief, Duration::from_millis(5));
        brief_held
            .extend((0..16).map(|_| local.acquire(brief, Lane::Fast, 96).expect("a brief hook takes its places")));
        assert!(!local.crowded_for(brief));
        drop(held);
        assert!(local.acquire(heavy[3], Lane::Fast, 96).is_some(), "places given back make room again");
        drop((few, brief_held));

        // A Lambda invocation's worker has no fixed number of places: only the caps hold.
        let lambda = Arc::new(Local::default());
        let all: Vec<_> =
            heavy.iter().flat_map(|&h| (0..96).map(move |_| h)).map(|h| lambda.acquire(h, Lane::Fast, 96)).collect();
        assert!(all.iter().all(Option::is_some));
    }

    #[test]
    fn the_share_a_crowded_fast_lane_leaves_each_hook_halves_as_its_free_places_do() {
        let shares: Vec<_> = [0, 191, 192, 223, 224, 239, 240, 247, 248, 256, 300]
            .into_iter()
            .map(|taken| share(256, taken, FAST_SHARE_ALWAYS))
            .collect();
        let expected = [None, None, Some(8), Some(8), Some(4), Some(4), Some(2), Some(2), Some(1), Some(1), Some(1)];
        assert_eq!(shares, expected);

        // Forty hooks whose requests never end, each with seven wanted: below a fixed share
        // of 8 every one of them, they took all 256 places. Taking turns, they stop where the
        // share falls below what each holds, and a hook with none still finds places.
        let local = Arc::new(Local::with_places(Some(256), None));
        let dark: Vec<HookId> = (0..40).map(|_| HookId::generate()).collect();
        let mut held = Vec::new();
        for _ in 0..7 {
            held.extend(dark.iter().filter_map(|&h| local.acquire(h, Lane::Fast, 96)));
        }
        assert_eq!(held.len(), 224, "the dark hooks stop once an eighth of the lane is free");
        let fresh = HookId::generate();
        let got: Vec<_> = (0..8).map_while(|_| local.acquire(fresh, Lane::Fast, 96)).collect();
        assert_eq!(got.len(), 4, "a hook with none takes the share the lane leaves");
        assert!(local.acquire(HookId::generate(), Lane::Fast, 96).is_some());
    }

    #[test]
    fn slow_hooks_at_their_caps_leave_the_slow_lanes_last_quarter_to_others() {
        let local = Arc::new(Local::with_places(Some(64), Some(64)));
        let slow: Vec<HookId> = (0..8).map(|_| HookId::generate()).collect();
        let mut held = Vec::new();
        for _ in 0..8 {
            held.extend(slow.iter().filter_map(|&h| local.acquire(h, Lane::Slow, 8)));
        }
        // Eight at their caps were all 64; taking turns, they stop at six each.
        assert_eq!(held.len(), 48);
        let recovered = HookId::generate();
        let got: Vec<_> = (0..8).map_while(|_| local.acquire(recovered, Lane::Slow, 8)).collect();
        assert_eq!(got.len(), SLOW_SHARE_ALWAYS as usize);
        // One whose requests end at once is never held back.
        local.took(recovered, Duration::from_millis(3));
        assert!(local.acquire(recovered, Lane::Slow, 8).is_some());
        // With one count for both lanes (53 taken) the fast lane would leave it 8 places.
        let fast: Vec<_> = (0..9).map_while(|_| local.acquire(slow[0], Lane::Fast, 96)).collect();
        assert_eq!(fast.len(), 9, "the fast lane counts apart");
    }

    #[test]
    fn a_hook_found_slow_recovers_after_quick_answers_in_a_row_and_a_minute() {
        use hookbridge_core::health::{RECOVERED_AFTER, SLOW_AT_LEAST, SLOW_FOR};
        let local = Arc::new(Local::default());
        let h = HookId::generate();
        let place = local.acquire(h, Lane::Slow, 8).unwrap();
        let now = Utc::now();
        local.mark_slow(h, "https://example.com/", now + chrono::Duration::minutes(10));
        let later = now + chrono::Duration::from_std(SLOW_AT_LEAST).unwrap() + chrono::Duration::seconds(1);
        let answers =
            |quick: bool, n: u32, at| (0..n).fold(None, |_, _| Some(local.answered_on_slow_lane(h, quick, None, at)));
        // A slow answer starts the count over.
        assert_eq!(answers(true, RECOVERED_AFTER - 1, later), Some(false));
        assert_eq!(answers(false, 1, later), Some(false));
        assert_eq!(answers(true, RECOVERED_AFTER - 1, later), Some(false));
        // Within a minute of the mark, however many quick answers: still slow.
        assert_eq!(answers(true, 1, now), Some(false));
        // The table's mark counts as this process's does.
        let in_table = Some(later + chrono::Duration::from_std(SLOW_FOR).unwrap());
        assert!(!local.answered_on_slow_lane(h, true, in_table, later));
        assert!(local.answered_on_slow_lane(h, true, None, later));
        assert_eq!(local.lock()[&h].slow_until, None, "its mark here is lifted");
        assert!(!local.answered_on_slow_lane(h, true, in_table, later), "and the count starts over");
        // The count keeps the entry while the hook is found slow, its places all given back.
        drop(place);
        local.forget_if_idle(h);
        assert_eq!(local.lock()[&h].quick_in_a_row.0, 1);
    }

    #[test]
    fn places_are_capped_per_hook_and_lane_and_given_back() {
        let local = Arc::new(Local::default());
        let (a, b) = (HookId::generate(), HookId::generate());
        let held: Vec<_> = (0..2).map(|_| local.acquire(a, Lane::Fast, 2).unwrap()).collect();
        assert!(local.acquire(a, Lane::Fast, 2).is_none());
        assert!(local.acquire(a, Lane::Slow, 2).is_some(), "the other lane counts apart");
        assert!(local.acquire(b, Lane::Fast, 2).is_some(), "other hooks are not affected");
        drop(held);
        assert!(local.acquire(a, Lane::Fast, 2).is_some());
        assert_eq!(local.lock().len(), 0, "idle hooks are forgotten");
    }

    #[test]
    fn request_times_are_averaged_while_the_hook_has_requests() {
        let local = Arc::new(Local::default());
        let h = HookId::generate();
        local.took(h, Duration::from_millis(100));
        assert_eq!(local.typical(h), None, "nothing is kept for a hook with no requests here");
        let place = local.acquire(h, Lane::Fast, 1).unwrap();
        local.took(h, Duration::from_millis(100));
        assert_eq!(local.typical(h), Some(Duration::from_millis(100)));
        for _ in 0..50 {
            local.took(h, Duration::from_millis(10));
        }
        let t = local.typical(h).unwrap();
        assert!(t < Duration::from_millis(11) && t >= Duration::from_millis(10), "follows the recent ones: {t:?}");
        drop(place);
        assert_eq!(local.typical(h), None, "forgotten with the idle hook");
    }

    #[tokio::test]
    async fn a_hook_that_stops_answering_stops_looking_fast() {
        let local = Arc::new(Local::default());
        let h = HookId::generate();
        let _place = local.acquire(h, Lane::Fast, 1).unwrap();
        assert_eq!(local.pace(h), None, "nothing measured yet");
        local.took(h, Duration::from_millis(2));
        assert!(local.pace(h).unwrap() < Duration::from_millis(200), "fast while it answers");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(local.typical(h), Some(Duration::from_millis(2)), "the average is the same");
        assert!(local.pace(h).unwrap() >= Duration::from_millis(300), "slow once silent: {:?}", local.pace(h));
        local.took(h, Duration::from_millis(2));
        assert!(local.pace(h).unwrap() < Duration::from_millis(200), "fast again once it answers");
    }

    /// Before any of its requests has ended, a hook has no pace, and how long its first has
    /// gone unanswered is the least its requests take.
    #[tokio::test]
    async fn a_hook_yet_to_answer_is_known_by_how_long_its_first_request_has_gone_unanswered() {
        let local = Arc::new(Local::default());
        let h = HookId::generate();
        assert_eq!(local.unanswered_for(h), None, "no requests here");
        let first = local.acquire(h, Lane::Fast, 2).unwrap();
        assert_eq!(local.pace(h), None, "nothing measured yet");
        let at_first = local.unanswered_for(h).unwrap();
        assert_eq!(local.request_time(h).map(|(_, unanswered)| unanswered), Some(true));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let second = local.acquire(h, Lane::Slow, 1).unwrap();
        let since = local.unanswered_for(h).unwrap();
        assert!(since >= at_first + Duration::from_millis(400), "from the first, not the last: {since:?}");
        local.took(h, Duration::from_millis(2));
        assert_eq!(local.unanswered_for(h), None, "answered once one ends");
        assert!(local.pace(h).unwrap() < Duration::from_millis(400), "and measured");
        assert_eq!(local.request_time(h).map(|(_, unanswered)| unanswered), Some(false));
        drop((first, second));
        let again = local.acquire(h, Lane::Fast, 1).unwrap();
        assert!(local.unanswered_for(h).unwrap() < since, "counted afresh after a quiet spell");
        drop(again);
        assert_eq!(local.unanswered_for(h), None, "nothing kept once its requests have ended");
    }

    #[test]
    fn turns_to_wait_are_bounded_per_hook_and_given_back() {
        let local = Arc::new(Local::default());
        let (a, b) = (HookId::generate(), HookId::generate());
        let turns: Vec<_> = (0..2).map(|_| local.turn_to_wait(a, Some(2)).unwrap()).collect();
        assert!(local.turn_to_wait(a, Some(2)).is_none(), "no third turn");
        assert!(local.turn_to_wait(a, Some(3)).is_some(), "the bound is the caller's");
        assert!(local.turn_to_wait(b, Some(2)).is_some(), "other hooks are not affected");
        drop(turns);
        assert!(local.turn_to_wait(a, Some(2)).is_some());
        assert_eq!(local.lock().len(), 0, "forgotten once no turn is held");
    }

    #[tokio::test]
    async fn a_place_given_back_goes_to_whoever_waits_for_one() {
        let local = Arc::new(Local::default());
        let h = HookId::generate();
        let mut held: Vec<_> = (0..2).map(|_| local.acquire(h, Lane::Fast, 2).unwrap()).collect();
        let waiting = {
            let local = local.clone();
            tokio::spawn(async move { local.wait_for_place(h, Lane::Fast, 2, Duration::from_secs(30)).await })
        };
        while local.waiters(h) == 0 {
            tokio::task::yield_now().await;
        }
        held.pop();
        let place = waiting.await.unwrap();
        assert!(place.is_some(), "the place given back was taken");
        assert!(local.acquire(h, Lane::Fast, 2).is_none(), "the cap still holds");
    }

    /// A hook's overflow is booked to come back one after another, a place's worth of its
    /// typical request time apart, each hook on its own; once the last booked is due,
    /// booking starts from the clock again. Only a hook that answers as usual is booked.
    #[tokio::test]
    async fn overflow_is_booked_one_after_another_and_afresh_once_due() {
        let local = Arc::new(Local::default());
        let (a, b) = (HookId::generate(), HookId::generate());
        let _held = (local.acquire(a, Lane::Fast, 1).unwrap(), local.acquire(b, Lane::Fast, 1).unwrap());
        let (typical, most) = (Duration::from_secs(4), Duration::from_secs(10));
        local.took(a, typical);
        local.took(b, typical);
        let every = typical / 4;
        assert_eq!(local.book(a, 4, most), Some(every), "the first, from the clock");
        // Each counted from the last booked, so the clock's run since only shortens it.
        let (second, third) = (local.book(a, 4, most).unwrap(), local.book(a, 4, most).unwrap());
        assert!(second > every && second <= 2 * every, "{second:?}: behind the first");
        assert!(third > 2 * every && third <= 3 * every, "{third:?}: behind the second");
        assert_eq!(local.book(b, 4, most), Some(every), "other hooks are booked apart");
        assert_eq!(local.book(b, 4, typical / 2), None, "slower than `most`: not booked");

        // Due after 100 ms; quiet after 800 ms: a pause of the test between the two does
        // not turn one into the other.
        let (c, soon) = (HookId::generate(), Duration::from_millis(400));
        let _c_held = local.acquire(c, Lane::Fast, 1).unwrap();
        local.took(c, soon);
        assert_eq!(local.book(c, 4, most), Some(soon / 4));
        tokio::time::sleep(soon / 4 + Duration::from_millis(50)).await;
        assert_eq!(local.book(c, 4, most), Some(soon / 4), "from the clock again once all booked are due");
        tokio::time::sleep(2 * soon).await;
        assert_eq!(local.book(c, 4, most), None, "silent for twice its typical time: not booked");
        // A slow mark (its requests outlived the patience) starts its bookings over: those
        // booked before go on to the slow lane as they come back, and once the mark runs out
        // its overflow is not booked behind them.
        let e = HookId::generate();
        let _e_held = local.acquire(e, Lane::Fast, 1).unwrap();
        local.took(e, typical);
        assert_eq!(local.book(e, 4, most), Some(every));
        local.mark_slow(e, "https://a.example/", Utc::now());
        local.took(e, typical);
        assert_eq!(local.book(e, 4, most), Some(every), "booked afresh after a slow mark");

        // Yet to answer: judged by how long its first request has gone unanswered.
        let d = HookId::generate();
        let _d_held = local.acquire(d, Lane::Fast, 1).unwrap();
        tokio::time::sleep(soon).await;
        let booked = local.book(d, 4, most).unwrap();
        assert!(booked >= soon && booked < most, "{booked:?}: no sooner than its silence so far");
        let behind = local.book(d, 4, most).unwrap();
        assert!(behind > booked && behind <= booked + booked / 4, "{behind:?}: behind the first, by a quarter of it");
        assert_eq!(local.book(d, 4, soon / 2), None, "silent for longer than `most`: not booked");
    }

    #[tokio::test]
    async fn a_wait_for_a_place_ends_empty_when_none_is_given_back() {
        let local = Arc::new(Local::default());
        let h = HookId::generate();
        let held = local.acquire(h, Lane::Fast, 1).unwrap();
        assert!(local.wait_for_place(h, Lane::Fast, 1, Duration::from_millis(20)).await.is_none());
        drop(held);
        assert!(local.lock().is_empty(), "the hook is forgotten once nothing of it is left");
        assert!(local.wait_for_place(h, Lane::Fast, 1, Duration::from_millis(20)).await.is_some(), "free at once");
    }

    #[test]
    fn slow_marks_run_out() {
        let local = Local::default();
        let (mut hook, _) = hookbridge_testkit::contract::unsealed_hook(
            "acme",
            HookId::generate(),
            serde_json::json!({"name": "h", "url": "https://a.example/"}),
        );
        hook.updated_at = Utc::now() - chrono::Duration::seconds(1);
        let now = Utc::now();
        local.mark_slow(hook.id, "https://a.example/", now + chrono::Duration::seconds(10));
        assert!(local.is_slow(&hook, now));
        assert!(!local.is_slow(&hook, now + chrono::Duration::seconds(10)));
        // A hook moved to another URL is not slow there for what its old one did.
        let moved = Hook {
            config: hookbridge_core::hook::HookConfig { url: "https://b.example/".into(), ..hook.config.clone() },
            ..hook.clone()
        };
        assert!(!local.is_slow(&moved, now));
        // Its own health write, saying it slow, keeps the mark; its owner's re-enable,
        // which starts its health over, ends it: it went on to the slow lane for ten minutes.
        let mut written = hook.clone();
        written.state.health.slow_until = Some(now + chrono::Duration::seconds(10));
        written.updated_at = Utc::now() + chrono::Duration::milliseconds(1);
        assert!(local.is_slow(&written, now));
        let reset = Hook { updated_at: written.updated_at, ..hook.clone() };
        assert!(!local.is_slow(&reset, now));
    }

    /// A hook marked slow whose traffic here then stopped (deleted, disabled, quiet) is not
    /// kept for the life of the process once its mark has run out.
    #[test]
    fn run_out_marks_of_hooks_without_requests_are_forgotten() {
        let local = Arc::new(Local::default());
        let (quiet, busy, next) = (HookId::generate(), HookId::generate(), HookId::generate());
        let ran_out = Utc::now() - chrono::Duration::seconds(1);
        let url = "https://a.example/";
        local.mark_slow(quiet, url, ran_out);
        let _place = local.acquire(busy, Lane::Slow, 1).unwrap();
        local.mark_slow(busy, url, ran_out);
        local.mark_slow(next, url, Utc::now() + chrono::Duration::minutes(10));
        let mut kept: Vec<HookId> = local.lock().keys().copied().collect();
        kept.sort_unstable();
        let mut want = vec![busy, next];
        want.sort_unstable();
        assert_eq!(kept, want, "a quiet hook's run-out mark was kept, or a live entry dropped");
    }

    /// Batches of one process put back what they held at once: failures of the same run
    /// add up, and a later run's replace an earlier one's (which are not added to it).
    #[test]
    fn failures_held_back_by_concurrent_batches_add_up_within_a_run() {
        let local = Local::default();
        let hook = HookId::generate();
        let at = |s: i64| DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap();
        let held = |since, failures, held_since| Unwritten { since: at(since), failures, held_since: at(held_since) };
        assert_eq!(local.take_unwritten(hook), None);
        local.put_unwritten(hook, Some(held(0, 3, 20)));
        local.put_unwritten(hook, Some(held(0, 2, 10)));
        local.put_unwritten(hook, None);
        assert_eq!(local.take_unwritten(hook), Some(held(0, 5, 10)));
        assert_eq!(local.take_unwritten(hook), None, "taken");
        local.put_unwritten(hook, Some(held(0, 3, 20)));
        local.put_unwritten(hook, Some(held(100, 1, 120)));
        local.put_unwritten(hook, Some(held(0, 4, 30)));
        assert_eq!(local.take_unwritten(hook), Some(held(100, 1, 120)), "the later run's only");
    }
}

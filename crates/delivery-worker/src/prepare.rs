//! Phase one: for each message, decide whether it is sent now and, if not, what becomes
//! of it. Loads each distinct hook once (one batch read), opens its secrets once, and
//! reads an envelope from the event store only when it was too large to ride in the
//! message. Every "not now" is handed back to the queue as a new message, never counted
//! as an attempt and never held in flight.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use hookbridge_core::circuit::{CircuitState, Gate};
use hookbridge_core::delivery::{NOT_SENT_NO_LONGER_WANTED, NOT_SENT_PAST_RETENTION, expires_at, past_retention};
use hookbridge_core::hook::{Hook, HookSecrets, Lane, Modified, SecretsOwner, UPDATE_ROUNDS, Undeliverable, modify};
use hookbridge_core::ids::{EventId, HookId, TenantId};
use hookbridge_core::message::{Routed, SLOT_EARLY, Task};
use hookbridge_core::ports::ReceivedMessage;
use hookbridge_core::rate::{Rate, hook_key, schedule_of};

use crate::local::{InFlight, Turn};
use crate::record::Done;
use crate::{BatchContext, Worker, hook_cap};

/// A message that arrives this early is sent anyway: queues deliver late, never early,
/// and a hop for a few milliseconds costs more than it saves.
const EARLY_OK: chrono::Duration = chrono::Duration::milliseconds(50);
/// Time left over after the longest request, before a Lambda invocation's deadline, for
/// recording the results.
pub(crate) const DEADLINE_MARGIN: Duration = Duration::from_secs(2);
/// A rate-limit slot this close is waited for in place rather than handed back.
const PACE_IN_PLACE: chrono::Duration = chrono::Duration::milliseconds(250);

/// How far ahead a slot a delivery already holds is waited for in place: it was handed
/// back to come in the second before its slot ([`SLOT_EARLY`], as SQS rounds delays to
/// whole seconds), and handed back again it would come after the slot, and lose it. On
/// SQS, rounding up past the slot lost about a third of a paced hook's slots.
fn held_in_place() -> chrono::Duration {
    chrono::Duration::from_std(SLOT_EARLY).unwrap_or_default() + EARLY_OK
}

/// A rate-limit slot further in the past than this is void, and its delivery takes a new
/// one. Queues bring a waiting delivery back at its slot (SQS, counting delays in whole
/// seconds, in the second before it), and a little after it while the worker keeps up;
/// one that comes back later than this was held up (a busy or stopped worker), and
/// sending every such delivery at once would spend together the slots that passed while
/// nothing was sent, a burst over the hook's rate.
const SLOT_KEPT_FOR: chrono::Duration = chrono::Duration::seconds(1);
/// The longest a delivery waits in the worker's hands for a place among its hook's
/// fast-lane requests, and so the longest request time (a quarter of it) of a hook whose
/// deliveries wait so. A busy fast hook gives places back every few milliseconds; sent on
/// to the slow lane instead, its overflow waited there for one of eight places, in steps of
/// 100 ms, and a replay of 20,000 deliveries took 24 s to arrive where 3 s queued them.
/// A hook that has not answered for a quarter of this is not waited for: one that went
/// dark, or a new one whose first request began that long ago and has not ended (a black
/// hole, at first).
pub(crate) const PLACE_IN_PLACE: Duration = Duration::from_millis(100);
/// Why a delivery over its hook's cap is handed on or back.
pub(crate) const AT_CAP: &str = "its hook has as many requests in flight as it may";
/// The most a wave of deferred deliveries is spread over, so they do not all come back
/// in the same instant.
const MAX_SPREAD: Duration = Duration::from_secs(60);

/// What to do with one message.
pub(crate) enum Plan<'a> {
    /// Decided without a request.
    Done(Done<'a>),
    /// Send it.
    Send(Box<Ready<'a>>),
}

/// A delivery about to be sent.
pub(crate) struct Ready<'a> {
    pub(crate) message: &'a ReceivedMessage,
    pub(crate) task: Task,
    pub(crate) hook: Arc<Hook>,
    pub(crate) secrets: Arc<HookSecrets>,
    pub(crate) body: Arc<str>,
    /// It is the probe of a half-open circuit.
    pub(crate) probe: bool,
    /// Its rate-limit slot, when it is a little ahead.
    pub(crate) at: Option<DateTime<Utc>>,
    /// Its place among the hook's in-flight requests.
    pub(crate) place: Place,
}

/// A delivery's place among its hook's in-flight requests.
pub(crate) enum Place {
    /// Taken; given back when dropped, with the delivery.
    Held(#[allow(dead_code)] InFlight), // read by no one: held for its drop
    /// To be waited for when it is sent, for at most [`PLACE_IN_PLACE`], with the turn
    /// that lets it.
    Awaited(#[allow(dead_code)] Turn), // read by no one: held for its drop
}

/// A message that passed the checks that need no I/O.
struct Candidate<'a> {
    message: &'a ReceivedMessage,
    task: Task,
    hook: Arc<Hook>,
    probe: bool,
    place: Place,
}

/// Uniform in [0, 1).
fn unit() -> f64 {
    rand::random::<f64>()
}

fn later(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// When a delivery handed back [`Wait::Later`] comes back on the fast lane: 100–150 ms
/// after `now`, spread so the overflow does not all come back in one instant.
pub(crate) fn back_shortly(now: DateTime<Utc>) -> DateTime<Utc> {
    later(now, PLACE_IN_PLACE.mul_f64(1.0 + unit() / 2.0))
}

fn hand_back<'a>(message: &'a ReceivedMessage, task: Task, lane: Lane, why: &'static str, hook: &Hook) -> Plan<'a> {
    Plan::Done(Done::Requeue { message, task: Box::new(task), lane, why, hook_version: hook.version })
}

fn deferred(mut task: Task, until: DateTime<Utc>) -> Task {
    task.not_before = Some(until);
    task.slot = false;
    task.slot_schedule = None;
    task
}

pub(crate) async fn prepare<'a>(
    w: &Worker,
    messages: &'a [ReceivedMessage],
    ctx: &BatchContext<'_>,
) -> hookbridge_core::Result<Vec<Plan<'a>>> {
    let now = Utc::now();
    let tasks: Vec<(&ReceivedMessage, Option<Task>)> =
        messages.iter().map(|m| (m, Task::parse(&m.body, m.receive_count))).collect();

    let mut wanted: Vec<(TenantId, HookId)> =
        tasks.iter().filter_map(|(_, t)| t.as_ref().map(|t| (t.delivery.tenant.clone(), t.delivery.hook_id))).collect();
    wanted.sort();
    wanted.dedup();
    let (hooks, unreadable) = read_hooks(w, wanted).await?;

    let mut plans = Vec::with_capacity(tasks.len());
    let mut candidates = Vec::new();
    for (message, task) in tasks {
        let Some(task) = task else {
            plans.push(Plan::Done(Done::Poison(message)));
            continue;
        };
        if unreadable.contains(&task.delivery.hook_id) {
            plans.push(Plan::Done(Done::Later {
                message,
                task: Box::new(task),
                why: "its hook could not be read",
                hook_version: None,
            }));
            continue;
        }
        match check(w, ctx, now, message, task, &hooks) {
            Ok(c) => candidates.push(c),
            Err(plan) => plans.push(*plan),
        }
    }
    let candidates = pace(w, now, candidates, &mut plans).await;
    // The probe is claimed last, once nothing but the request is left: a claim whose
    // delivery was then turned away (its slot ahead, its event gone, its secrets not
    // openable now) would hold the hook's circuit half-open, every delivery waiting for a
    // probe that never went, for twice the request timeout.
    let loaded = load(w, candidates).await;
    plans.extend(claim_probes(w, now, loaded).await);
    Ok(plans)
}

/// The batch's hooks, read together; and, when that read fails, one by one, so that a
/// hook that cannot be read (a document this version cannot decode, written by a newer
/// one mid-deploy) holds back only its own deliveries, which come back later, and not the
/// batch's other hooks'. A missing hook is absent from both.
async fn read_hooks(
    w: &Worker,
    wanted: Vec<(TenantId, HookId)>,
) -> hookbridge_core::Result<(HashMap<HookId, Arc<Hook>>, HashSet<HookId>)> {
    let together = match w.ports.hooks.get_many(&wanted).await {
        Ok(found) => return Ok((found.into_iter().map(|h| (h.id, h)).collect(), HashSet::new())),
        Err(e) => e,
    };
    let asked = wanted.len();
    let one_by_one: Vec<(HookId, hookbridge_core::Result<Option<Hook>>)> = futures::stream::iter(wanted)
        .map(|(tenant, id)| async move { (id, w.ports.hooks.get(&tenant, id).await) })
        .buffer_unordered(HOOK_READS_IN_FLIGHT)
        .collect()
        .await;
    let (mut hooks, mut unreadable) = (HashMap::new(), HashSet::new());
    let mut store_failing = false;
    for (id, read) in one_by_one {
        match read {
            Ok(Some(h)) => {
                hooks.insert(id, Arc::new(h));
            }
            Ok(None) => {}
            Err(e) => {
                store_failing |= !matches!(e, hookbridge_core::Error::Corrupt { .. });
                tracing::warn!(hook_id = %id, error = %e, "a hook could not be read; its deliveries come back later");
                unreadable.insert(id);
            }
        }
    }
    if unreadable.len() == asked && store_failing {
        // Not one could be read, and not for its document: the store is failing, not a
        // hook. The batch comes back. (A batch of one unreadable hook's deliveries, as a
        // slow-lane batch of tasks ingest could not route often is, is that hook's trouble.)
        return Err(together);
    }
    Ok((hooks, unreadable))
}

/// Hooks read at once when the batch's hooks are read one by one.
const HOOK_READS_IN_FLIGHT: usize = 8;

/// Why a delivery is handed back unsent near the end of an invocation.
pub(crate) const TOO_LATE: &str = "too little time left in this invocation";

/// Whether a request of up to `budget` started now could not end, and be recorded, before
/// the invocation's `deadline`. Asked when the batch is planned, and again just before
/// each request: what comes between (claiming a probe, pacing, opening secrets, reading
/// the envelope, waiting for a place or a rate-limit slot) takes time too, and a request
/// that outlives the invocation brings the whole batch back.
pub(crate) fn too_late(deadline: Option<tokio::time::Instant>, budget: Duration) -> bool {
    deadline.is_some_and(|d| tokio::time::Instant::now() + budget + DEADLINE_MARGIN > d)
}

/// The decisions that need no I/O, in the order that costs least: a deleted or disabled
/// hook, a message early for its time, the wrong lane, an open circuit, the deadline,
/// the hook's in-flight limit.
fn check<'a>(
    w: &Worker,
    ctx: &BatchContext<'_>,
    now: DateTime<Utc>,
    message: &'a ReceivedMessage,
    mut task: Task,
    hooks: &HashMap<HookId, Arc<Hook>>,
) -> Result<Candidate<'a>, Box<Plan<'a>>> {
    let hook = hooks.get(&task.delivery.hook_id).filter(|h| h.tenant == task.delivery.tenant);
    if let Some(unrouted) = task.unrouted.take() {
        // Queued by an ingest that could not read the hook: routed here, as ingest would
        // have, and from here on a delivery like any other.
        let wanted = hook.is_some_and(|h| h.config.wants(&task.delivery.event_type, unrouted.site.as_deref()));
        if !wanted {
            return Err(Box::new(Plan::Done(Done::Unwanted { message, task: Box::new(task) })));
        }
        // Its follow-ups are matched again when they come due, as ingest's tasks are.
        task.routed = Some(Routed { site: unrouted.site });
    }
    let key = &task.delivery;
    let Some(hook) = hook else {
        return Err(Box::new(Plan::Done(Done::Cancel {
            message,
            task: Box::new(task),
            reason: Undeliverable::Deleted.to_string(),
        })));
    };
    if let Err(why) = hook.deliverable() {
        return Err(Box::new(Plan::Done(Done::Cancel { message, task: Box::new(task), reason: why.to_string() })));
    }
    // Routed when the hook wanted it; the hook may have changed since (a site moved to
    // another customer, a type it no longer takes).
    if let Some(routed) = &task.routed
        && !hook.config.wants(&key.event_type, routed.site.as_deref())
    {
        let reason = NOT_SENT_NO_LONGER_WANTED.to_owned();
        return Err(Box::new(Plan::Done(Done::Cancel { message, task: Box::new(task), reason })));
    }
    // Come due once its records were dropped (queued in its last moments, behind a rate
    // limit or an open circuit): Read no longer shows it, so its receiver gets nothing.
    if past_retention(key.delivery_id, now) {
        let reason = NOT_SENT_PAST_RETENTION.to_owned();
        return Err(Box::new(Plan::Done(Done::Cancel { message, task: Box::new(task), reason })));
    }
    let health = &hook.state.health;
    let lane = if w.local.is_slow(hook, now) { Lane::Slow } else { health.lane(now) };
    if task.slot && !slot_holds(&task, hook) {
        task.slot = false;
        task.slot_schedule = None;
        task.not_before = None;
    }
    // A delivery back for its rate-limit slot may come a second early (`SLOT_EARLY`) and
    // waits for it here (in `pace`), rather than be handed back to come late.
    let early_ok = if task.slot { held_in_place() } else { EARLY_OK };
    if let Some(t) = task.not_before.filter(|t| *t > now + early_ok) {
        let why = if task.slot { "waiting for its rate-limit slot" } else { "not due yet" };
        return Err(Box::new(hand_back(message, deferred_keep_slot(task, t), lane, why, hook)));
    }
    if ctx.lane == Lane::Fast && lane == Lane::Slow {
        return Err(Box::new(hand_back(message, task, Lane::Slow, "its endpoint was slow or down lately", hook)));
    }
    let mut probe = false;
    match health.circuit.gate(now, w.settings.timeout) {
        Gate::Send => {}
        Gate::Probe => probe = true,
        Gate::WaitUntil(t) => {
            // Spread over part of the cool-down, so the wave of waiting deliveries does not
            // all come back in the same instant as the probe.
            let spread = Duration::from_millis(health.circuit.cooldown_ms / 2).min(MAX_SPREAD).mul_f64(unit());
            return Err(Box::new(hand_back(
                message,
                deferred(task, later(t, spread)),
                Lane::Slow,
                "its circuit is open",
                hook,
            )));
        }
    }
    let budget = w.settings.budget(ctx.lane);
    if too_late(ctx.deadline, budget) {
        return Err(Box::new(hand_back(message, task, ctx.lane, TOO_LATE, hook)));
    }
    let Some(place) = w.local.acquire(hook.id, ctx.lane, hook_cap(ctx.lane)) else {
        let wait = if ctx.lane == Lane::Fast { fast_overflow(w, hook) } else { Wait::No };
        return match wait {
            Wait::Turn(turn) => Ok(Candidate { message, task, hook: hook.clone(), probe, place: Place::Awaited(turn) }),
            // Back when the hook's first answers will have said what it is (spread, so the
            // overflow does not all come back in one instant).
            Wait::Later => {
                Err(Box::new(hand_back(message, deferred(task, back_shortly(now)), Lane::Fast, AT_CAP, hook)))
            }
            Wait::Booked(after) => {
                Err(Box::new(hand_back(message, deferred(task, later(now, after)), Lane::Fast, AT_CAP, hook)))
            }
            Wait::No => Err(Box::new(match ctx.lane {
                Lane::Fast => hand_back(message, task, Lane::Slow, AT_CAP, hook),
                // About when one of the hook's requests will have ended.
                Lane::Slow => {
                    let until =
                        later(now, spread_place_wait(place_free_in(w.local.pace(hook.id), budget), budget, unit()));
                    hand_back(message, deferred(task, until), Lane::Slow, AT_CAP, hook)
                }
            })),
        };
    };
    Ok(Candidate { message, task, hook: hook.clone(), probe, place: Place::Held(place) })
}

/// Whether a delivery that finds its hook's fast-lane places all taken may wait for one in
/// place: when its `request_time` is at most a quarter of [`PLACE_IN_PLACE`], so one of
/// its requests ends well within the wait, and the hook has no rate limit (whose slot,
/// taken for the delivery, a wait in vain would waste). The request time is the hook's
/// pace (`Local::pace`: how long its requests took lately here, or how long since one
/// ended when that is longer), or, while none has ended yet, how long the first has gone
/// unanswered (`Local::unanswered_for`). A hook that stops answering, or has not answered
/// yet, is waited for no more once it has been silent for a quarter of the wait.
fn waits_in_place(hook: &Hook, request_time: Duration) -> bool {
    hook.config.rate_limit.is_none() && request_time * 4 <= PLACE_IN_PLACE
}

/// Whether a delivery that finds its hook's fast-lane places all taken, and may not wait
/// in place for one, may be booked to come back on the fast lane ([`Wait::Booked`]): when
/// the hook has no rate limit (whose slots pace it already). Then
/// [`Local::book`](crate::local::Local::book) books it if the hook answers as usual, more
/// slowly than a wait in place allows but within the lane's patience, or has yet to answer
/// and its first request has gone unanswered no longer than the patience. Such a hook is
/// healthy, as most endpoints across the internet are at 50-500 ms. Its overflow went on
/// to the slow lane, where it has 8 places, not 96: a burst or a replay of thousands to a
/// 75 ms endpoint drained at about a hundred a second, its fast-lane places idle. A hook
/// that has gone quiet, or stays silent past the patience, goes on as before.
fn books_overflow(hook: &Hook) -> bool {
    hook.config.rate_limit.is_none()
}

/// How many of a hook's deliveries may wait in place at once while none of its requests
/// here has ended yet. The first moments of a burst to a hook nothing is known of are
/// judged as a fast hook's silence is (how long its first request has gone unanswered),
/// so a healthy hook's overflow is not sent to wait out the whole timeout on the slow lane
/// while its first answers come. But a hook whose requests end slowly, or never, looks
/// just as new at the start of each of its bursts, so its waiting deliveries, which hold
/// places of the lane, are held to a few: with its 96 in flight, half the local runner's
/// 256 fast-lane places stay free for every other hook. The bound is per hook; several
/// such hooks together are bounded by the lane's crowding (`Local::crowded_for`): none
/// begins a wait in place once three quarters of the lane's places are taken (it is over
/// any share the lane leaves it), and a wait begun that the crowding ends comes back on
/// the fast lane.
pub(crate) const WAITING_UNANSWERED: u32 = 32;

/// What a fast-lane delivery over its hook's cap does.
#[derive(Debug)]
enum Wait {
    /// Waits in place for the next place the hook gives back.
    Turn(Turn),
    /// Comes back on the fast lane in 100–150 ms, holding no place meanwhile: the hook has
    /// not answered yet, its first request began less than 25 ms ago, and as many of its
    /// deliveries wait in place as may. By then its first answers have said whether it is
    /// fast, and it is judged again: a fast hook's wait in place; a slower hook's, or one
    /// still unanswered, are booked ([`Wait::Booked`]); a hook whose requests have all ended
    /// meanwhile starts a new burst with it.
    Later,
    /// Comes back on the fast lane after this long, holding no place meanwhile: booked
    /// behind the hook's other overflow ([`Local::book`](crate::local::Local::book)), a
    /// place's worth of its request time apart, and for a hook yet to answer no sooner than
    /// its silence so far.
    Booked(Duration),
    /// Goes on to the slow lane, as any delivery over its hook's cap did before.
    No,
}

/// What a fast-lane delivery over its hook's cap does: it waits in place when the hook is
/// fast enough ([`waits_in_place`], by its pace), or, while none of the hook's requests
/// has ended here, when the first began no longer ago than a fast pace would allow, and
/// then only while fewer than [`WAITING_UNANSWERED`] of its deliveries wait already; past
/// that bound it comes back [`Wait::Later`]. A hook that answers, but too slowly to be
/// waited for in place, has it booked to come back ([`books_overflow`]). On a crowded
/// lane (`Local::crowded_for`) none waits in place, holding one of the lane's places: it
/// comes back [`Wait::Later`], so the places left are for hooks with few in flight.
fn fast_overflow(w: &Worker, hook: &Hook) -> Wait {
    let Some((request_time, unanswered)) = w.local.request_time(hook.id) else {
        return Wait::No;
    };
    let most = unanswered.then_some(WAITING_UNANSWERED);
    if !waits_in_place(hook, request_time) {
        let booked =
            books_overflow(hook).then(|| w.local.book(hook.id, hook_cap(Lane::Fast), w.settings.patience)).flatten();
        return booked.map_or(Wait::No, Wait::Booked);
    }
    if w.local.crowded_for(hook.id) {
        return Wait::Later;
    }
    match w.local.turn_to_wait(hook.id, most) {
        Some(turn) => Wait::Turn(turn),
        None => Wait::Later,
    }
}

/// The least wait for a place among a hook's slow-lane requests. It keeps the deliveries
/// waiting for places from coming back many times a second when the hook is fast.
const MIN_PLACE_WAIT: Duration = Duration::from_millis(100);

/// About how long until one of a hook's requests ends, from its pace (how long they took
/// lately, or how long since one ended when that is longer): four of them, so a full lane
/// has ended some. A hook with nothing measured here (or one that times out) waits the
/// lane's whole budget, as its requests may. A hook that stops answering is waited for
/// longer each time its deliveries come back, not every 100 ms until a request ends.
fn place_free_in(pace: Option<Duration>, budget: Duration) -> Duration {
    pace.map_or(budget, |t| (t * 4).clamp(MIN_PLACE_WAIT.min(budget), budget))
}

/// A slow-lane wait for a place, spread by `unit` (0 to 1) over half to one and a half of
/// `wait` so a full lane's overflow does not all come back at once, held to the bounds the
/// wait itself keeps (at least [`MIN_PLACE_WAIT`], at most `budget`).
fn spread_place_wait(wait: Duration, budget: Duration, unit: f64) -> Duration {
    wait.mul_f64(0.5 + unit).clamp(MIN_PLACE_WAIT.min(budget), budget)
}

/// Whether a delivery's rate-limit slot still paces its hook: only a slot of the schedule
/// the hook's limit has now ([`schedule_of`]). Once the limit is removed the delivery
/// goes; once it is set again (changed, or back to an earlier value), it takes a slot in
/// the new schedule. A slot that does not say its schedule was reserved by an older
/// version on the key all limits shared then, the schedule (0) of a limit the hook was
/// created with.
fn slot_holds(task: &Task, hook: &Hook) -> bool {
    hook.config.rate_limit.is_some() && task.slot_schedule.unwrap_or(0) == schedule_of(hook)
}

/// A task held until `until`, keeping a rate-limit slot it has.
fn deferred_keep_slot(mut task: Task, until: DateTime<Utc>) -> Task {
    task.not_before = Some(until);
    task
}

/// Lets one delivery per half-open circuit through as its probe: the first claims it with
/// a conditional write; whoever loses (here or in another process) waits for the probe.
/// When the claim finds the circuit closed meanwhile, the hook's deliveries go as usual.
async fn claim_probes<'a>(w: &Worker, now: DateTime<Utc>, plans: Vec<Plan<'a>>) -> Vec<Plan<'a>> {
    let mut claimed: HashMap<HookId, Claim> = HashMap::new();
    let mut out = Vec::with_capacity(plans.len());
    for plan in plans {
        let mut ready = match plan {
            Plan::Send(ready) if ready.probe => ready,
            other => {
                out.push(other);
                continue;
            }
        };
        let claim = match claimed.get(&ready.hook.id) {
            // One probe per circuit: the batch's other deliveries to it wait for it.
            Some(Claim::Won) => Claim::Lost,
            Some(other) => *other,
            None => {
                // Claimed as of now: backdated to the batch's start, a claim would lapse
                // early, letting a second probe through.
                let (claim, claimed_hook) = claim(w, &ready.hook, Utc::now()).await;
                if let Some(hook) = claimed_hook {
                    // The hook as the claim left it (half-open, at its new revision): what
                    // gives the probe back if it goes unsent, and what its outcome is
                    // written over. The batch's copy still said open, so giving it back
                    // found nothing to do and left the circuit claimed for twice the timeout.
                    ready.hook = Arc::new(hook);
                }
                claimed.insert(ready.hook.id, claim);
                claim
            }
        };
        match claim {
            Claim::Won => {
                tracing::info!(hook_id = %ready.hook.id, tenant = %ready.hook.tenant, "circuit half-open: sending a probe");
                out.push(Plan::Send(ready));
            }
            Claim::Closed => {
                ready.probe = false;
                out.push(Plan::Send(ready));
            }
            Claim::Lost => {
                let Ready { message, task, hook, .. } = *ready;
                out.push(wait_for_probe(w, now, message, task, &hook));
            }
        }
    }
    out
}

/// A delivery to a half-open circuit that is not its probe, handed back until the probe
/// will have been answered.
fn wait_for_probe<'a>(
    w: &Worker,
    now: DateTime<Utc>,
    message: &'a ReceivedMessage,
    task: Task,
    hook: &Hook,
) -> Plan<'a> {
    let until = later(now, w.settings.timeout.mul_f64(1.0 + unit()));
    hand_back(message, deferred(task, until), Lane::Slow, "its circuit's probe is under way", hook)
}

/// What claiming a circuit's probe came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// This process sends the probe.
    Won,
    /// Another probe succeeded meanwhile: send as usual.
    Closed,
    /// Another process's probe is under way, or the claim could not be written.
    Lost,
}

/// Claims the probe of `hook`'s circuit; a won claim comes with the hook as written.
async fn claim(w: &Worker, hook: &Hook, now: DateTime<Utc>) -> (Claim, Option<Hook>) {
    let timeout = w.settings.timeout;
    let r = modify(w.ports.hooks.as_ref(), hook.clone(), UPDATE_ROUNDS, |mut h: Hook| async move {
        Ok::<_, hookbridge_core::Error>(match h.state.health.circuit.gate(now, timeout) {
            Gate::Probe => {
                h.state.health.circuit = h.state.health.circuit.claimed(now);
                Some((h, ()))
            }
            Gate::Send | Gate::WaitUntil(_) => None,
        })
    })
    .await;
    match r {
        Ok(Modified::Written(h, ())) => {
            w.local.wrote(h.id, h.revision);
            (Claim::Won, Some(h))
        }
        Ok(Modified::Unchanged(h)) if h.state.health.circuit.is_closed() => (Claim::Closed, None),
        Ok(Modified::Unchanged(_)) | Ok(Modified::Deleted) => (Claim::Lost, None),
        Err(e) => {
            tracing::warn!(hook_id = %hook.id, error = %e, "could not claim the circuit's probe");
            (Claim::Lost, None)
        }
    }
}

/// Gives back the probe `ready` claimed when it is handed back unsent after all (no place
/// among its hook's requests came free, or the invocation's time ran out): the next
/// delivery may probe at once, rather than every one waiting out twice the request
/// timeout for a probe that never went. On Lambda it waits no longer than the requests
/// may, leaving recording its time before the invocation's `deadline`: given up, the
/// write may still land, or the claim runs out by itself.
pub(crate) async fn release_probe(w: &Worker, ready: &Ready<'_>, deadline: Option<tokio::time::Instant>) {
    if !ready.probe {
        return;
    }
    let now = Utc::now();
    let release = modify(w.ports.hooks.as_ref(), (*ready.hook).clone(), UPDATE_ROUNDS, |mut h: Hook| async move {
        Ok::<_, hookbridge_core::Error>(if h.state.health.circuit.state == CircuitState::HalfOpen {
            h.state.health.circuit = h.state.health.circuit.released(now);
            Some((h, ()))
        } else {
            None
        })
    });
    let stop = deadline.map(|d| d.checked_sub(DEADLINE_MARGIN).unwrap_or(d));
    // Either way the claim runs out by itself, after twice the request timeout.
    match crate::record::by(stop, release).await {
        Some(Ok(_)) => {}
        Some(Err(e)) => tracing::warn!(hook_id = %ready.hook.id, error = %e, "could not give back the circuit's probe"),
        None => {
            tracing::warn!(hook_id = %ready.hook.id, "no time left in the invocation to give back the circuit's probe")
        }
    }
}

/// The longest a batch waits for one hook's rate-limit reservation. Past it, that hook's
/// deliveries come back later, as when the reservation fails, and the rest of the batch
/// goes on without them. A reservation given up on may still be stored (on SQLite it
/// always is); its slots then go unused, so the hook is sent to below its rate for a
/// while, never above it. Longer than the DynamoDB limiter's own sixteen rounds take
/// (about 2 s of backoff), so contention alone ends in its answer or its error; a key
/// whose writes are throttled or stuck is what this bounds. At 1 s, the emulator under a
/// full test run was slow enough that paced deliveries went round their visibility
/// timeout instead of waiting.
pub(crate) const RESERVE_PATIENCE: Duration = Duration::from_secs(3);
/// Hooks whose rate-limit slots are reserved at once.
const RESERVATIONS_IN_FLIGHT: usize = 16;

/// Reserves rate-limit slots for hooks that have a limit: one reservation per hook per
/// batch, all at once, each bounded by [`RESERVE_PATIENCE`]. A delivery whose slot lies
/// further ahead is handed back to go at its slot; one that comes back more than
/// [`SLOT_KEPT_FOR`] after its slot takes a new one.
async fn pace<'a>(
    w: &Worker,
    now: DateTime<Utc>,
    candidates: Vec<Candidate<'a>>,
    plans: &mut Vec<Plan<'a>>,
) -> Vec<(Candidate<'a>, Option<DateTime<Utc>>)> {
    // A half-open circuit sends one probe, so a rate-limited hook's other candidates to be
    // it wait for it now, holding no slot: each slot booked for one would go unused, the
    // hook sent to below its rate while the slots booked meanwhile pass. (Should the
    // probe not go after all, they come back after it would have been answered.)
    // The probe is one already holding a slot, if any (it goes at once), else the first.
    let held_at =
        |c: &Candidate<'_>, t: DateTime<Utc>| c.task.not_before.filter(|at| c.task.slot && *at + SLOT_KEPT_FOR >= t);
    let held = |c: &Candidate<'_>| held_at(c, now);
    let mut probe_of: HashMap<HookId, usize> = HashMap::new();
    for (i, c) in candidates.iter().enumerate().filter(|(_, c)| c.probe && c.hook.config.rate_limit.is_some()) {
        let chosen = probe_of.entry(c.hook.id).or_insert(i);
        if held(&candidates[*chosen]).is_none() && held(c).is_some() {
            *chosen = i;
        }
    }
    let candidates: Vec<Candidate<'a>> = candidates
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| {
            if probe_of.get(&c.hook.id).is_some_and(|&p| p != i) && c.probe {
                plans.push(wait_for_probe(w, now, c.message, c.task, &c.hook));
                return None;
            }
            Some(c)
        })
        .collect();
    // Each delivery takes a slot only if it comes before the delivery's records are
    // dropped: one that would miss it is failed, and a slot it kept would leave the hook
    // idle for that turn, pushing back every delivery after it (a replay of deliveries near
    // their end, behind a long backlog, would push back the backlog by one turn each).
    let mut wanting: HashMap<HookId, (u32, i64, Vec<DateTime<Utc>>)> = HashMap::new();
    let needs_slot = |c: &Candidate<'_>| c.hook.config.rate_limit.is_some() && held(c).is_none();
    for c in candidates.iter().filter(|c| needs_slot(c)) {
        if let Some(limit) = c.hook.config.rate_limit {
            let wants = wanting.entry(c.hook.id).or_insert((limit.per_second, schedule_of(&c.hook), Vec::new()));
            wants.2.push(expires_at(c.task.delivery.delivery_id));
        }
    }
    // Every hook's reservation at once, each bounded: one after another, a hook whose key
    // is contended (many workers pacing it at once, each conditional write lost and tried
    // again) held up every other hook's deliveries in the batch.
    let reserved = futures::stream::iter(wanting)
        .map(|(hook, (per_second, schedule, deadlines))| async move {
            let (key, rate) = (hook_key(hook, schedule), Rate::per_second(per_second));
            let reservation = w.ports.limiter.pace_before(&key, rate, &deadlines, now);
            (hook, tokio::time::timeout(RESERVE_PATIENCE, reservation).await)
        })
        .buffer_unordered(RESERVATIONS_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
    // Each hook's slots, one for each of its deliveries that needs one, in their order.
    let mut slots: HashMap<HookId, std::vec::IntoIter<Option<DateTime<Utc>>>> = HashMap::new();
    let mut unpaced: HashSet<HookId> = HashSet::new();
    for (hook, reservation) in reserved {
        match reservation {
            Ok(Ok(reserved)) => {
                slots.insert(hook, reserved.into_iter());
            }
            Ok(Err(e)) => {
                tracing::error!(hook_id = %hook, error = %e, "cannot reserve the hook's rate-limit slots; its deliveries will be retried");
                unpaced.insert(hook);
            }
            Err(_) => {
                tracing::warn!(hook_id = %hook, patience = ?RESERVE_PATIENCE, "the hook's rate-limit slots took too long to reserve; its deliveries will be retried");
                unpaced.insert(hook);
            }
        }
    }
    // The slots were reserved against the clock as they were (`RateLimiter::pace`); they
    // are judged against it too, not against the batch's start.
    let now = Utc::now();
    let mut out = Vec::with_capacity(candidates.len());
    for c in candidates {
        // (`held` judges against the batch's start.)
        if c.hook.config.rate_limit.is_some() && held(&c).is_some() && held_at(&c, now).is_none() {
            // Its slot went by (more than `SLOT_KEPT_FOR` ago) while the others' were
            // reserved: it takes a new turn, as one that came back that late would. Sent
            // at once, judged against the batch's start, it went in the same second as
            // the slot after it, past the hook's rate.
            let task = Task { slot: false, slot_schedule: None, not_before: None, ..c.task };
            let lane = c.hook.state.health.lane(now);
            plans.push(hand_back(c.message, task, lane, "its rate-limit slot went by", &c.hook));
            continue;
        }
        if unpaced.contains(&c.hook.id) && needs_slot(&c) {
            // Back after the visibility timeout, a receive used up: a hook whose slots
            // cannot be had on any of its receives has its delivery recorded `FAILED`
            // with why, and a reservation given up on is not tried again every second.
            let why = "its hook's rate-limit slot could not be reserved";
            plans.push(Plan::Done(Done::Later {
                message: c.message,
                task: Box::new(c.task),
                why,
                hook_version: Some(c.hook.version),
            }));
            continue;
        }
        let (slot, in_place) = match slots.get_mut(&c.hook.id).filter(|_| needs_slot(&c)).and_then(Iterator::next) {
            Some(Some(mine)) => (Some(mine), PACE_IN_PLACE),
            Some(None) => {
                // No slot before its records are dropped: ended as out of time, as a
                // delivery whose wait ends after then is (`record`), holding no turn.
                let end = expires_at(c.task.delivery.delivery_id);
                let task = deferred(c.task, end);
                let lane = c.hook.state.health.lane(now);
                plans.push(hand_back(
                    c.message,
                    task,
                    lane,
                    "no rate-limit slot before its records are dropped",
                    &c.hook,
                ));
                continue;
            }
            None => (held(&c), held_in_place()),
        };
        match slot {
            Some(at) if at > now + in_place => {
                let mut task = c.task;
                task.not_before = Some(at);
                task.slot = true;
                task.slot_schedule = Some(schedule_of(&c.hook));
                let lane = c.hook.state.health.lane(now);
                plans.push(hand_back(c.message, task, lane, "waiting for its rate-limit slot", &c.hook));
            }
            at => out.push((c, at.filter(|t| *t > now))),
        }
    }
    out
}

/// A hook's secrets as `load` found them.
#[derive(Clone)]
enum Opened {
    Yes(Arc<HookSecrets>),
    /// They will never open (a damaged or misplaced blob): its deliveries are cancelled.
    Never,
    /// They could not be opened this time (the key service failed or refused): its
    /// deliveries come back later.
    NotNow,
}

/// Opens each hook's secrets once and finds each envelope; a hook whose secrets cannot be
/// opened, or an event no longer kept, cancels only its own deliveries, and one whose
/// secrets or envelope cannot be had this time holds back only its own.
async fn load<'a>(w: &Worker, candidates: Vec<(Candidate<'a>, Option<DateTime<Utc>>)>) -> Vec<Plan<'a>> {
    let mut secrets: HashMap<HookId, Opened> = HashMap::new();
    let mut bodies: HashMap<EventId, Option<Arc<str>>> = HashMap::new();
    let mut plans = Vec::with_capacity(candidates.len());
    for (c, at) in candidates {
        let opened = match secrets.get(&c.hook.id) {
            Some(s) => s.clone(),
            None => {
                let s = match w.ports.sealer.open(SecretsOwner::of(&c.hook), &c.hook.sealed).await {
                    Ok(s) => Opened::Yes(Arc::new(s)),
                    Err(e @ hookbridge_core::Error::Corrupt { .. }) => {
                        let why = std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default();
                        tracing::error!(hook_id = %c.hook.id, tenant = %c.hook.tenant, why, "the hook's secrets cannot be opened");
                        Opened::Never
                    }
                    Err(e) => {
                        tracing::error!(hook_id = %c.hook.id, tenant = %c.hook.tenant, error = %e, "cannot open the hook's secrets now; its deliveries will be retried");
                        Opened::NotNow
                    }
                };
                secrets.insert(c.hook.id, s.clone());
                s
            }
        };
        let opened = match opened {
            Opened::Yes(s) => s,
            Opened::Never => {
                let reason = "the hook's secrets cannot be opened".to_owned();
                plans.push(Plan::Done(Done::Cancel { message: c.message, task: Box::new(c.task), reason }));
                continue;
            }
            Opened::NotNow => {
                let why = "its hook's secrets could not be opened";
                plans.push(Plan::Done(Done::Later {
                    message: c.message,
                    task: Box::new(c.task),
                    why,
                    hook_version: Some(c.hook.version),
                }));
                continue;
            }
        };
        let body: Option<Arc<str>> = match &c.task.envelope {
            Some(e) => Some(e.get().into()),
            None => {
                let id = &c.task.delivery.event_id;
                match bodies.get(id) {
                    Some(b) => b.clone(),
                    None => match w.ports.events.get(&c.task.delivery.tenant, id).await {
                        Ok(found) => {
                            let b: Option<Arc<str>> = found.map(|env| env.to_body().into());
                            bodies.insert(id.clone(), b.clone());
                            b
                        }
                        Err(e) => {
                            tracing::error!(hook_id = %c.hook.id, event_id = %id, error = %e, "cannot read the delivery's envelope now; it will be retried");
                            let why = "its envelope could not be read";
                            plans.push(Plan::Done(Done::Later {
                                message: c.message,
                                task: Box::new(c.task),
                                why,
                                hook_version: Some(c.hook.version),
                            }));
                            continue;
                        }
                    },
                }
            }
        };
        let Some(body) = body else {
            let reason = "event no longer kept".to_owned();
            plans.push(Plan::Done(Done::Cancel { message: c.message, task: Box::new(c.task), reason }));
            continue;
        };
        // The hook's payload format: the envelope itself (shared by every hook of the
        // event), or its detail made into a body of this hook's own.
        let body: Arc<str> = match hookbridge_core::payload::render(c.hook.config.payload, &body) {
            Ok(std::borrow::Cow::Borrowed(_)) => body,
            Ok(std::borrow::Cow::Owned(own)) => own.into(),
            Err(e) => {
                let reason = format!("the event cannot be sent as {}: {e}", c.hook.config.payload.as_str());
                plans.push(Plan::Done(Done::Cancel { message: c.message, task: Box::new(c.task), reason }));
                continue;
            }
        };
        plans.push(Plan::Send(Box::new(Ready {
            message: c.message,
            task: c.task,
            hook: c.hook,
            secrets: opened,
            body,
            probe: c.probe,
            at,
            place: c.place,
        })));
    }
    plans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_hook_waits_for_a_place_about_its_request_time_not_the_timeout() {
        let budget = Duration::from_secs(10);
        assert_eq!(place_free_in(None, budget), budget, "nothing measured: the whole budget");
        assert_eq!(place_free_in(Some(Duration::from_millis(5)), budget), MIN_PLACE_WAIT);
        assert_eq!(place_free_in(Some(Duration::from_millis(300)), budget), Duration::from_millis(1_200));
        assert_eq!(place_free_in(Some(Duration::from_secs(10)), budget), budget, "a black hole waits it all");
        assert_eq!(place_free_in(Some(Duration::from_millis(5)), Duration::from_millis(50)), Duration::from_millis(50));
    }

    /// Spread, the wait keeps its bounds: a fast hook's overflow came back after 50 ms
    /// (half the least), a black hole's after one and a half times the timeout.
    #[test]
    fn a_spread_place_wait_keeps_its_bounds() {
        let budget = Duration::from_secs(10);
        for unit in [0.0, 0.25, 0.5, 0.999] {
            for wait in [MIN_PLACE_WAIT, Duration::from_millis(1_200), budget] {
                let spread = spread_place_wait(wait, budget, unit);
                assert!((MIN_PLACE_WAIT..=budget).contains(&spread), "{wait:?} spread by {unit}: {spread:?}");
            }
        }
        assert_eq!(
            spread_place_wait(Duration::from_millis(1_200), budget, 0.0),
            Duration::from_millis(600),
            "still spread"
        );
    }

    use hookbridge_core::circuit::Circuit;
    use hookbridge_core::delivery::DeliveryKey;
    use hookbridge_core::ids::DeliveryId;
    use hookbridge_core::ports::Receipt;
    use hookbridge_testkit::{EmbeddedHarness, Harness};

    /// An open circuit whose probe was due a second before `now`.
    fn probe_due(now: DateTime<Utc>, cooldown_ms: u64) -> Circuit {
        Circuit {
            state: CircuitState::Open,
            next_probe_at: Some(now - chrono::Duration::seconds(1)),
            cooldown_ms,
            ..Circuit::default()
        }
    }

    /// A worker over `h`'s ports, with the default settings.
    fn worker_over(h: &EmbeddedHarness) -> Worker {
        let outbound =
            hookbridge_outbound::Outbound::new(hookbridge_outbound::OutboundSettings::default()).expect("client");
        Worker::new(crate::WorkerPorts::of(h.backend()), outbound, crate::WorkerSettings::default())
    }

    /// Message `i` of a batch received at `now`.
    fn message(i: usize, now: DateTime<Utc>) -> ReceivedMessage {
        ReceivedMessage {
            id: format!("m{i}"),
            body: String::new(),
            receipt: Receipt(format!("r{i}")),
            receive_count: 1,
            sent_at: now,
        }
    }

    /// The key of a delivery of `hook`, the `n`-th of the millisecond `now`.
    fn key_of(hook: &Hook, n: u128, now: DateTime<Utc>) -> DeliveryKey {
        DeliveryKey {
            tenant: hook.tenant.clone(),
            hook_id: hook.id,
            delivery_id: DeliveryId::from_parts(now.timestamp_millis() as u64, n),
            event_id: EventId::generate(),
            event_type: "user.login".into(),
        }
    }

    /// A worker whose fast lane has 32 places, and places for three other hooks' 8 each and
    /// `hook`'s 4: seven eighths of the lane taken, where each hook's share is 4, so the
    /// lane is crowded for `hook`. The places are held while the second is.
    fn crowded_for(h: &EmbeddedHarness, hook: HookId) -> (Worker, Vec<InFlight>) {
        let outbound =
            hookbridge_outbound::Outbound::new(hookbridge_outbound::OutboundSettings::default()).expect("client");
        let settings = crate::WorkerSettings { fast_lane_places: Some(32), ..crate::WorkerSettings::default() };
        let w = Worker::new(crate::WorkerPorts::of(h.backend()), outbound, settings);
        let held: Vec<_> = (0..3)
            .flat_map(|_| std::iter::repeat_n(HookId::generate(), 8))
            .chain(std::iter::repeat_n(hook, 4))
            .map(|h| w.local.acquire(h, Lane::Fast, crate::FAST_LANE_HOOK_CAP).expect("a place"))
            .collect();
        assert!(w.local.crowded_for(hook));
        (w, held)
    }

    /// A delivery of `hook` (the `n`-th of the millisecond `now`) ready to go on `message`.
    fn ready<'m>(
        message: &'m ReceivedMessage,
        hook: &Arc<Hook>,
        secrets: &Arc<HookSecrets>,
        n: u128,
        probe: bool,
        now: DateTime<Utc>,
    ) -> Ready<'m> {
        Ready {
            message,
            task: Task::new(key_of(hook, n, now), 0, "{}"),
            hook: hook.clone(),
            secrets: secrets.clone(),
            body: "{}".into(),
            probe,
            at: None,
            place: Place::Awaited(Arc::new(crate::local::Local::default()).turn_to_wait(hook.id, None).unwrap()),
        }
    }

    /// A burst to a hook none of whose requests has ended: in its first moments, 32 of its
    /// overflow wait in place and the next comes back later on the fast lane; once its
    /// first request has gone unanswered for a quarter of the wait, none waits, and the
    /// overflow is booked back on the fast lane, no sooner than that silence again.
    #[tokio::test]
    async fn a_new_hooks_overflow_waits_a_few_in_place_then_comes_back_then_is_booked() {
        let h = EmbeddedHarness::start().await;
        let w = worker_over(&h);
        let (hook, _) = hookbridge_testkit::contract::make_hook(&h, "acme", "new").await;
        let cap = crate::FAST_LANE_HOOK_CAP;
        // Decided without a pause (nothing here awaits), so within the first 25 ms unless
        // the machine stops the test that long; then it tries again.
        for _ in 0..5 {
            let began = std::time::Instant::now();
            let held: Vec<_> = (0..cap).map(|_| w.local.acquire(hook.id, Lane::Fast, cap).unwrap()).collect();
            let decided: Vec<Wait> = (0..=WAITING_UNANSWERED).map(|_| fast_overflow(&w, &hook)).collect();
            if began.elapsed() * 4 > PLACE_IN_PLACE {
                continue;
            }
            let (waiting, last) = decided.split_at(WAITING_UNANSWERED as usize);
            assert!(waiting.iter().all(|d| matches!(d, Wait::Turn(_))), "{waiting:?}");
            assert!(matches!(last, [Wait::Later]), "past the bound: {last:?}");
            drop(decided);
            tokio::time::sleep(PLACE_IN_PLACE / 4 + Duration::from_millis(5)).await;
            let booked = fast_overflow(&w, &hook);
            assert!(
                matches!(booked, Wait::Booked(after) if after >= PLACE_IN_PLACE / 4 && after < w.settings.patience),
                "unanswered past its first moments: {booked:?}"
            );
            drop(held);
            return;
        }
        panic!("the machine never left the test 25 ms to decide in");
    }

    /// On a crowded fast lane (three quarters of its places taken, or more) a hook with its
    /// share in flight that is not known to be brief waits in no place: its overflow comes back
    /// on the fast lane, holding none. A delivery already waiting in place when the lane
    /// became crowded, kept out by it, comes back on the fast lane too, not the slow one.
    #[tokio::test]
    async fn on_a_crowded_lane_overflow_waits_in_no_place_and_comes_back_on_the_fast_lane() {
        let h = EmbeddedHarness::start().await;
        let (hook, secrets) = hookbridge_testkit::contract::make_hook(&h, "acme", "crowded").await;
        let (w, held) = crowded_for(&h, hook.id);
        let now = Utc::now();
        // A delivery waiting in place, as it was before the crowding.
        let message = message(0, now);
        let mut waiting = ready(&message, &Arc::new(hook.clone()), &Arc::new(secrets), 1, false, now);
        waiting.place = Place::Awaited(w.local.turn_to_wait(hook.id, None).expect("a turn"));
        let overflow = fast_overflow(&w, &hook);
        assert!(matches!(overflow, Wait::Later | Wait::Booked(_)), "no wait in place: {overflow:?}");

        match crate::send::send(&w, Box::new(waiting), Lane::Fast, None).await {
            Done::Requeue { lane, task, why, .. } => {
                assert_eq!((lane, why), (Lane::Fast, AT_CAP));
                assert!(task.not_before.is_some_and(|t| t > now), "back in a moment: {:?}", task.not_before);
            }
            _ => panic!("not handed back"),
        }
        drop(held);
    }

    /// A rate-limited hook crowded out of the fast lane (over the share it leaves) sends its
    /// delivery on to the slow lane with the rate-limit slot it was given, as at its cap: a
    /// booking or a wait would pace it a second time, and the slot is its place in the
    /// hook's schedule.
    #[tokio::test]
    async fn a_rate_limited_hook_crowded_out_goes_to_the_slow_lane_with_its_slot() {
        let h = EmbeddedHarness::start().await;
        let (mut hook, _) = hookbridge_testkit::contract::make_hook(&h, "acme", "limited").await;
        hook.config.rate_limit = Some(hookbridge_core::hook::RateLimit { per_second: 10 });
        let (w, held) = crowded_for(&h, hook.id);
        let now = Utc::now();
        let mut task = Task::new(key_of(&hook, 1, now), 0, "{}");
        (task.slot, task.slot_schedule, task.not_before) = (true, Some(schedule_of(&hook)), Some(now));
        let message = message(0, now);
        let hooks = HashMap::from([(hook.id, Arc::new(hook.clone()))]);
        match check(&w, &BatchContext::lane(Lane::Fast), now, &message, task, &hooks).map(|_| ()).map_err(|p| *p) {
            Err(Plan::Done(Done::Requeue { lane, task, why, .. })) => {
                assert_eq!((lane, why), (Lane::Slow, AT_CAP));
                assert!(task.slot && task.slot_schedule == Some(schedule_of(&hook)), "its slot kept");
                assert_eq!(task.not_before, Some(now));
            }
            _ => panic!("not sent on to the slow lane"),
        }
        drop(held);
    }

    /// The batch read the hook while its circuit was open; by the claim, another process's
    /// probe had closed it. Every delivery of the hook goes, none waits for a probe.
    #[tokio::test]
    async fn a_claim_that_finds_the_circuit_closed_lets_every_delivery_go() {
        let h = EmbeddedHarness::start().await;
        let (mut read, secrets) = hookbridge_testkit::contract::make_hook(&h, "acme", "closed").await;
        let now = Utc::now();
        read.state.health.circuit = probe_due(now, 0);
        h.backend().hooks.create(&read, 1000).await.expect("create");
        let mut closed = read.clone();
        closed.state.health.circuit = Circuit::default();
        closed.revision += 1;
        h.backend().hooks.replace(&closed, read.revision).await.expect("closed by another probe");
        let worker = worker_over(&h);
        let (read, secrets) = (Arc::new(read), Arc::new(secrets));
        let messages: Vec<ReceivedMessage> = (0..3).map(|i| message(i, now)).collect();
        let plans = messages
            .iter()
            .enumerate()
            .map(|(i, m)| Plan::Send(Box::new(ready(m, &read, &secrets, i as u128 + 1, true, now))))
            .collect();
        let out = claim_probes(&worker, now, plans).await;
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|p| matches!(p, Plan::Send(r) if !r.probe)), "every one sent, none as a probe");
    }

    /// A hook of `h` stored with its circuit's probe claimed at `now` (5 s of cooldown).
    async fn claimed_probe(h: &EmbeddedHarness, name: &str, now: DateTime<Utc>) -> (Hook, HookSecrets) {
        let (mut hook, secrets) = hookbridge_testkit::contract::make_hook(h, "acme", name).await;
        hook.state.health.circuit = probe_due(now, 5_000).claimed(now);
        h.backend().hooks.create(&hook, 1000).await.expect("create");
        (hook, secrets)
    }

    /// A claimed probe handed back unsent (no place came free, the invocation's time ran
    /// out) gives the probe back: the next delivery may probe at once.
    #[tokio::test]
    async fn a_probe_handed_back_unsent_gives_the_probe_back() {
        let h = EmbeddedHarness::start().await;
        let now = Utc::now();
        let (hook, secrets) = claimed_probe(&h, "released", now).await;
        let worker = worker_over(&h);
        let message = message(0, now);
        let stored = || async { h.backend().hooks.get(&hook.tenant, hook.id).await.expect("get").expect("hook") };
        let mut ready = ready(&message, &Arc::new(hook.clone()), &Arc::new(secrets), 1, false, now);
        release_probe(&worker, &ready, None).await;
        assert_eq!(
            stored().await.state.health.circuit.state,
            CircuitState::HalfOpen,
            "not a probe: nothing given back"
        );
        ready.probe = true;
        release_probe(&worker, &ready, None).await;
        let circuit = stored().await.state.health.circuit;
        assert_eq!(circuit.gate(Utc::now(), Duration::from_secs(10)), Gate::Probe, "{circuit:?}");
        assert_eq!((circuit.state, circuit.cooldown_ms), (CircuitState::Open, 5_000));
    }

    /// On Lambda, giving a probe back waits no longer than requests may: a store that does
    /// not answer (SQLite's writer held) does not hold the delivery into the time recording
    /// needs, or past the invocation's deadline.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_probe_given_back_while_the_store_stalls_is_given_up_before_recording() {
        let h = EmbeddedHarness::start().await;
        let now = Utc::now();
        let (hook, secrets) = claimed_probe(&h, "stalled", now).await;
        let worker = worker_over(&h);
        let message = message(0, now);
        let ready = ready(&message, &Arc::new(hook.clone()), &Arc::new(secrets), 1, true, now);
        let held = h.hold_the_writer(Duration::from_secs(10));
        // The hold has the writer before the release asks for it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let deadline = tokio::time::Instant::now() + DEADLINE_MARGIN + Duration::from_millis(300);
        release_probe(&worker, &ready, Some(deadline)).await;
        assert!(!held.is_finished(), "given up while the writer was held, not after");
        held.await.expect("the hold ends");
    }

    /// The probe this batch claimed, from its copy of the hook that still said open, is
    /// given back when it goes unsent: the copy was the one compared, and finding it open it
    /// gave nothing back, so every delivery waited twice the request timeout.
    #[tokio::test]
    async fn a_probe_claimed_here_and_handed_back_unsent_is_given_back() {
        let h = EmbeddedHarness::start().await;
        let (mut hook, secrets) = hookbridge_testkit::contract::make_hook(&h, "acme", "claimed").await;
        let now = Utc::now();
        hook.state.health.circuit = probe_due(now, 5_000);
        h.backend().hooks.create(&hook, 1000).await.expect("create");
        let worker = worker_over(&h);
        let message = message(0, now);
        let plan = Plan::Send(Box::new(ready(&message, &Arc::new(hook.clone()), &Arc::new(secrets), 1, true, now)));
        let mut out = claim_probes(&worker, now, vec![plan]).await;
        let Some(Plan::Send(ready)) = out.pop() else { panic!("the probe is sent") };
        assert!(ready.probe);
        let stored = || async { h.backend().hooks.get(&hook.tenant, hook.id).await.expect("get").expect("hook") };
        assert_eq!(stored().await.state.health.circuit.state, CircuitState::HalfOpen, "claimed");
        release_probe(&worker, &ready, None).await;
        let circuit = stored().await.state.health.circuit;
        assert_eq!(circuit.gate(Utc::now(), Duration::from_secs(10)), Gate::Probe, "{circuit:?}");
    }
}

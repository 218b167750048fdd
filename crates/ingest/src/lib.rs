//! The ingest stage. For each event from the ingest queue: find the tenant's hooks that
//! want it and enqueue one delivery per hook that may be sent, each on its hook's lane.
//! Hooks that may not receive it now (disabled, inactive, unverified) get a `CANCELLED`
//! delivery with the reason, so a replay after re-enabling recovers it.
//!
//! A delivery it enqueues is not written down here: the worker's first record of it
//! makes it, and keeps the envelope with it when the event went to that hook alone, so a
//! delivery sent once costs one write (decision 0021). Envelopes several hooks share, and
//! ones too large to ride in a message, are kept once in the event store instead.
//!
//! A hook whose document this version cannot read (a newer version's, mid-deploy) holds
//! up none of its tenant's events: each event goes to it as an `unrouted` task, which the
//! worker routes once it can read the hook (decision 0026).
//!
//! Idempotent per event: delivery ids are derived from the event and the hook, so a
//! redelivered ingest message, or the same event delivered twice by the bus, records the
//! same deliveries and the receiver sees the same `webhook-id` on any duplicate.
//!
//! A large fan-out is written and enqueued in chunks of [`CHUNK`], so ingest's memory per
//! batch stays bounded whatever the number of matching hooks.
//!
//! The ingest queue also carries replay jobs' pokes: each makes ingest re-send one page of
//! the job's window ([`replay`]), so a replay of any size runs without an API request
//! held open, and resumes where it was after a crash.

pub mod replay;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use hookbridge_core::delivery::{DeliveryKey, DeliveryUpdate, Opening};
use hookbridge_core::envelope::Envelope;
use hookbridge_core::hook::{Hook, Lane};
use hookbridge_core::ids::{DeliveryId, HookId, TenantId};
use hookbridge_core::message::{INLINE_BODY_MAX, Task};
use hookbridge_core::ports::{
    Backend, BatchOutcome, DeliveryStore, EventStore, HookStore, Lanes, MAX_MESSAGE_BYTES, OutgoingMessage, Queue,
    ReceivedMessage, ReplayStore, Resource, RoutingList,
};
use hookbridge_core::replay::ReplayPoke;
use hookbridge_core::topology::INGEST_RECEIVES;
use sha2::{Digest, Sha256};
use tracing::Instrument;

/// Deliveries written and enqueued at a time: 500 tasks of at most 16 KiB each keep a
/// tenant's part of a batch within about 8 MB however widely one event fans out.
pub const CHUNK: usize = 500;

/// Tenants of one batch handled at once. With one replay page at a time beside them (a
/// page holds up to 500 envelopes of at most 16 KiB), a batch stays within about 40 MB.
pub const TENANTS_AT_ONCE: usize = 4;

/// How far an event's own `time` may be from the moment ingest handles it and still date
/// its deliveries. The bus sets it, and a duplicate of the event carries the same one, so
/// duplicates get the same delivery ids; a producer's far-off `time` would misplace the
/// delivery in "the last N hours", so then the time the bus handed it on is used.
pub const EVENT_TIME_TRUSTED: chrono::Duration = chrono::Duration::hours(1);

/// How far ahead of the message's send time an event's own `time` may be and still date
/// its deliveries: clocks differ a little. Further ahead, its delivery ids would lie in
/// the future, and Read and replays (which end now) would not show them until then.
pub const EVENT_TIME_AHEAD: chrono::Duration = chrono::Duration::seconds(5);

/// How far ahead of the moment its event was published a delivery id may be dated:
/// [`EVENT_TIME_AHEAD`], and the second within which the event's own id may place it
/// ([`dated`]). Read's window ends this far after now, or a delivery recorded and
/// answered a moment ago was on no page of a Read until its date came.
pub const DATED_AHEAD_AT_MOST: chrono::Duration = chrono::Duration::seconds(6);

/// The most hooks of a tenant this version cannot read whose events ingest queues to them
/// unrouted (decision 0026). Each costs a message per event whether the hook wants it or
/// not; a tenant with more (its documents rewritten by a newer version, a deploy under way)
/// has its events fail and come back, as they all did before, until a version that reads
/// them routes them.
pub const UNROUTED_HOOKS_MOST: usize = 16;

/// What ingest needs besides the ports.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// The `account` filled into envelopes that lack one (the emulator leaves it out).
    pub account: String,
    /// The `region` filled into envelopes that lack one.
    pub region: String,
    /// How long envelopes are kept for replay.
    pub event_retention: Duration,
    /// The most a tenant's hooks may take stored when read to route its events
    /// ([`hookbridge_core::settings::Quotas::routing_most_bytes`]); a tenant past it has its
    /// events fail and come back, alone.
    pub routing_most_bytes: usize,
}

impl IngestSettings {
    /// Ingest's part of the deployment settings.
    pub fn from_settings(s: &hookbridge_core::settings::Settings) -> Self {
        Self {
            account: s.account.clone(),
            region: s.region.clone(),
            event_retention: s.event_retention,
            routing_most_bytes: s.quotas.routing_most_bytes(),
        }
    }
}

/// The ports ingest uses, and no others.
#[derive(Clone)]
pub struct IngestPorts {
    /// The tenant's hooks, read per batch.
    pub hooks: Arc<dyn HookStore>,
    /// New deliveries.
    pub deliveries: Arc<dyn DeliveryStore>,
    /// Envelopes kept for replay.
    pub events: Arc<dyn EventStore>,
    /// Where its events come from (to reject malformed ones), and replay pokes go.
    pub ingest: Arc<dyn Queue>,
    /// Replay jobs.
    pub replays: Arc<dyn ReplayStore>,
    /// Where deliveries go.
    pub lanes: Lanes,
}

impl IngestPorts {
    /// What these ports reach (the template's permissions for the function are held to it).
    pub const RESOURCES: &'static [Resource] =
        &[Resource::Table, Resource::IngestQueue, Resource::DeliveryQueue, Resource::SlowQueue];

    /// Ingest's ports of a backend.
    ///
    /// The deployed function makes the same ports one at a time
    /// (`crates/ingest/src/main.rs`), so that its binary carries no other
    /// port's code: a port added here goes there too.
    pub fn of(b: &Backend) -> Self {
        Self {
            hooks: b.hooks.clone(),
            deliveries: b.deliveries.clone(),
            events: b.events.clone(),
            ingest: b.ingest_queue.clone(),
            replays: b.replays.clone(),
            lanes: b.lanes(),
        }
    }
}

impl IngestPorts {
    /// What a replay job's page uses.
    pub fn job_ports(&self) -> replay::JobPorts<'_> {
        replay::JobPorts {
            hooks: self.hooks.as_ref(),
            deliveries: self.deliveries.as_ref(),
            events: self.events.as_ref(),
            replays: self.replays.as_ref(),
            ingest: self.ingest.as_ref(),
            lanes: &self.lanes,
            page: hookbridge_core::replay::PAGE,
            first_page: hookbridge_core::replay::PAGE,
        }
    }
}

impl std::fmt::Debug for IngestPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestPorts").finish_non_exhaustive()
    }
}

/// The ingest stage's dependencies.
#[derive(Debug, Clone)]
pub struct Ingest {
    /// What it reads and writes.
    pub ports: IngestPorts,
    /// What it fills into envelopes and how long it keeps them.
    pub settings: IngestSettings,
}

/// The delivery id of `event_id` to `hook`, the same whenever the event is handled: the
/// ULID's time is `at_ms`, its randomness a hash of the event and hook ids.
pub fn delivery_id(at_ms: u64, event_id: &str, hook: HookId) -> DeliveryId {
    let digest = Sha256::new().chain_update(event_id).chain_update([0u8]).chain_update(hook.to_string()).finalize();
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&digest[..10]);
    DeliveryId::from_parts(at_ms, u128::from_be_bytes(random))
}

/// The time an event's delivery ids carry: its own `time` when that is near `sent_at`, when
/// the bus handed it on (always, for events the bus timed), else `sent_at`. Both are the
/// same on every receive of the message, so a message handled again (after a failure, an
/// hour later) makes the same ids; judged against the time of handling, it did not.
///
/// An event's `time` names a second. Within it, the event is dated to the millisecond its
/// id was made, when the id says ([`EventId::made_at_ms`]: the API's ids do) and that
/// falls in the second: still a function of the event alone, so copies of it date alike.
/// Dated by the second, the deliveries of a second's events sorted at random (their ids'
/// other bits are a digest), and each delivery record went into a page of the index of
/// its own: a fifth of the bytes the embedded backend wrote (BENCHMARKS.md).
///
/// [`EventId::made_at_ms`]: hookbridge_core::ids::EventId::made_at_ms
pub fn dated(envelope: &Envelope, sent_at: DateTime<Utc>) -> u64 {
    let t = envelope.time;
    let trusted = time_trusted(t, sent_at);
    let at = if trusted { t } else { sent_at };
    let at_ms = at.timestamp_millis().max(0) as u64;
    match envelope.id.made_at_ms() {
        Some(made) if trusted && (at_ms..at_ms + 1_000).contains(&made) => made,
        _ => at_ms,
    }
}

/// Whether an event's own `time` dates its deliveries ([`dated`]) when its message was
/// sent at `sent_at`, rather than `sent_at` itself.
pub fn time_trusted(time: DateTime<Utc>, sent_at: DateTime<Utc>) -> bool {
    time >= sent_at - EVENT_TIME_TRUSTED && time <= sent_at + EVENT_TIME_AHEAD
}

struct Parsed<'a> {
    message: &'a ReceivedMessage,
    envelope: Envelope,
    site: Option<String>,
}

/// The least time an invocation must have left to start a tenant's events, each of them
/// after its first, or a replay page. Started later, the work could be cut off by Lambda's
/// timeout, which fails the whole batch: every tenant's events in it, finished or not,
/// would come back and be fanned out again, each using up one of its five receives. Work
/// once started is not stopped half way: an event's fan-out that takes most of the
/// invocation still finishes, where stopping it would start it again from the top next
/// time and never let it finish. (One begun in time that needs longer than is left still
/// meets the timeout, and its whole batch comes back.) Checked only per tenant, a batch of
/// ten events to a tenant of 10,000 hooks (100,000 deliveries) outlasted every invocation
/// it was given, and went to the dead-letter queue fanned out five times.
pub const TIME_TO_START: Duration = Duration::from_secs(5);

/// Why work was not started: [`TIME_TO_START`] was not left.
const TOO_LATE: &str = "too little time left in this invocation";

/// How long before the invocation's deadline a replay page still under way is given up.
/// Its poke then comes back, as after a crash, on the receive's own schedule (and fails the
/// job on the last receive the queue allows). Cut off by Lambda's timeout instead, the
/// page's poke reached the dead-letter queue on its last receive with no one to fail the
/// job, which read `RUNNING` for ever.
pub const PAGE_MARGIN: Duration = Duration::from_secs(1);

/// On a poke's last receive, the time its page leaves, besides [`PAGE_MARGIN`], to mark
/// the job failed should the page not be done: the table the page found slow is the one
/// the job is saved in.
pub const GIVE_UP_TIME: Duration = Duration::from_secs(3);

/// How long before the deadline the writes that end a poke (handing it on, failing its
/// job) are given up, so that the invocation still answers.
const ANSWER_MARGIN: Duration = Duration::from_millis(250);

/// `work`, given up `margin` before `deadline` (if there is one) as a failure of `what`.
async fn before<T>(
    deadline: Option<Instant>,
    margin: Duration,
    what: &'static str,
    work: impl std::future::Future<Output = hookbridge_core::Result<T>>,
) -> hookbridge_core::Result<T> {
    let Some(d) = deadline else {
        return work.await;
    };
    let stop = tokio::time::Instant::from_std(d.checked_sub(margin).unwrap_or(d));
    tokio::time::timeout_at(stop, work).await.unwrap_or_else(|_| {
        Err(hookbridge_core::Error::backend(what, "the invocation's time ran out before it was done"))
    })
}

fn too_late(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() + TIME_TO_START > d)
}

/// [`handle_within`] with no deadline (the local runner's consumers have none).
pub async fn handle(deps: &Ingest, messages: &[ReceivedMessage]) -> BatchOutcome {
    handle_within(deps, messages, None).await
}

/// Handles a batch from the ingest queue. Its replay pages (one after another) and its
/// tenants' events ([`TENANTS_AT_ONCE`] tenants at a time) are handled side by side: one
/// tenant's wide fan-out or replay page does not hold up another tenant's events that came
/// in the same batch.
///
/// Near the invocation's `deadline` nothing more is started: a tenant's events not begun
/// come back alone, and a replay page not begun is handed on in a new poke, using up none
/// of the job's receives.
pub async fn handle_within(deps: &Ingest, messages: &[ReceivedMessage], deadline: Option<Instant>) -> BatchOutcome {
    let mut outcome = BatchOutcome::default();
    let mut by_tenant: BTreeMap<TenantId, Vec<Parsed<'_>>> = BTreeMap::new();
    let mut pokes: Vec<(&ReceivedMessage, ReplayPoke)> = Vec::new();
    for m in messages {
        if let Some(poked) = ReplayPoke::parse(&m.body) {
            // Two pokes of one job (a queue's duplicate) would both re-send the page the
            // job is at before either saved it. One does the page and sends the next poke;
            // the other is done with. The one kept is the one with more receives left: a
            // page failing on a poke's last receive fails its job.
            match pokes.iter_mut().find(|(_, p)| p.replay_id == poked.replay_id) {
                Some(kept) if m.receive_count < kept.0.receive_count => *kept = (m, poked),
                Some(_) => {}
                None => pokes.push((m, poked)),
            }
            continue;
        }
        if m.body.len() > MAX_MESSAGE_BYTES {
            // Past any event the API lets through: only a producer's own `PutEvents` makes
            // one (the bus takes 1 MiB). Its envelope, kept apart, was past what an item of
            // the event store holds (400 KB on DynamoDB), and the refused write failed the
            // tenant's other events with it, batch after batch.
            tracing::error!(message_id = %m.id, bytes = m.body.len(), most = MAX_MESSAGE_BYTES, "event too large to route; it will reach the dead-letter queue");
            deps.ports.ingest.reject(m).await;
            outcome.failed.push(m.id.clone());
            continue;
        }
        let read = Envelope::from_bus_json(&m.body, &deps.settings.account, &deps.settings.region);
        by_routing(deps, m, read, &mut by_tenant, &mut outcome).await;
    }
    route_batch(deps, by_tenant, pokes, outcome, deadline).await
}

/// [`handle`] for events already read from their messages (`read`, in the same order):
/// the embedded backend's publishing reads each to decide whether to route it in the
/// request, and each is read once, not again here.
pub async fn handle_read(deps: &Ingest, messages: &[ReceivedMessage], read: Vec<Envelope>) -> BatchOutcome {
    let mut outcome = BatchOutcome::default();
    let mut by_tenant: BTreeMap<TenantId, Vec<Parsed<'_>>> = BTreeMap::new();
    for (m, envelope) in messages.iter().zip(read) {
        by_routing(deps, m, Ok(envelope), &mut by_tenant, &mut outcome).await;
    }
    route_batch(deps, by_tenant, Vec::new(), outcome, None).await
}

/// Files the event `read` from `m` under its tenant; one that cannot be read or routed is
/// rejected and fails.
async fn by_routing<'a>(
    deps: &Ingest,
    m: &'a ReceivedMessage,
    read: Result<Envelope, hookbridge_core::envelope::EnvelopeError>,
    by_tenant: &mut BTreeMap<TenantId, Vec<Parsed<'a>>>,
    outcome: &mut BatchOutcome,
) {
    match read.and_then(|envelope| envelope.routing().map(|r| (envelope, r))) {
        Ok((envelope, routing)) => {
            by_tenant.entry(routing.tenant).or_default().push(Parsed { message: m, envelope, site: routing.site })
        }
        Err(e) => {
            // Never acknowledged unread: it fails until the queue moves it to the DLQ.
            tracing::error!(message_id = %m.id, error = %e, "malformed event; it will reach the dead-letter queue");
            deps.ports.ingest.reject(m).await;
            outcome.failed.push(m.id.clone());
        }
    }
}

/// Works through a batch's replay pages and its tenants' events, side by side
/// ([`handle_within`]).
async fn route_batch(
    deps: &Ingest,
    by_tenant: BTreeMap<TenantId, Vec<Parsed<'_>>>,
    pokes: Vec<(&ReceivedMessage, ReplayPoke)>,
    mut outcome: BatchOutcome,
    deadline: Option<Instant>,
) -> BatchOutcome {
    use futures::StreamExt as _;
    let pages = async {
        let mut failed = Vec::new();
        for (m, poked) in &pokes {
            let page = if too_late(deadline) {
                hand_on(deps, m, poked, deadline).await
            } else {
                replay_page(deps, m, poked, deadline).await
            };
            failed.extend(page.err());
        }
        failed
    };
    // Futures made in a loop, not by a closure, so the batch's future stays `Send`. The
    // tenants are begun from a random one on: in name order, the same tenants would be the
    // ones left when time runs short, batch after batch.
    let mut per_tenant = Vec::with_capacity(by_tenant.len());
    let first = rand::random::<u32>() as usize % by_tenant.len().max(1);
    for (tenant, events) in by_tenant.iter().cycle().skip(first).take(by_tenant.len()) {
        per_tenant.push(ingest_events(deps, tenant, events, deadline));
    }
    let tenants = futures::stream::iter(per_tenant);
    let tenants = tenants.buffer_unordered(TENANTS_AT_ONCE).collect::<Vec<Vec<String>>>();
    let (pages, tenants) = futures::join!(pages, tenants);
    outcome.failed.extend(pages);
    outcome.failed.extend(tenants.into_iter().flatten());
    outcome
}

/// Routes one tenant's events; the ids of its messages that must come back.
async fn ingest_events(
    deps: &Ingest,
    tenant: &TenantId,
    events: &[Parsed<'_>],
    deadline: Option<Instant>,
) -> Vec<String> {
    if too_late(deadline) {
        tracing::info!(tenant = %tenant, events = events.len(), why = TOO_LATE, "events not begun; they come back");
        return come_back(deps, tenant, events.iter().collect(), deadline).await;
    }
    let span = tracing::info_span!("ingest", tenant = %tenant);
    match ingest_tenant(deps, tenant, events, deadline).instrument(span).await {
        Ok(not_begun) if not_begun.is_empty() => Vec::new(),
        Ok(not_begun) => {
            let rest: Vec<&Parsed<'_>> = events.iter().filter(|p| not_begun.contains(p.envelope.id.as_str())).collect();
            tracing::info!(tenant = %tenant, events = rest.len(), why = TOO_LATE, "the tenant's events not begun; they come back");
            come_back(deps, tenant, rest, deadline).await
        }
        Err(e) => {
            tracing::error!(tenant = %tenant, error = %e, "ingest failed; the events will be retried");
            events.iter().map(|p| p.message.id.clone()).collect()
        }
    }
}

/// Sends the events not begun back to the queue, handed on ([`hand_on_unseen`]) or
/// receivable again at once, one copy of each; the ids of the messages that must come back.
async fn come_back(
    deps: &Ingest,
    tenant: &TenantId,
    events: Vec<&Parsed<'_>>,
    deadline: Option<Instant>,
) -> Vec<String> {
    // A queue may deliver an event twice in one batch: handed on twice, the copies could
    // land in two batches and be fanned out twice. The other copies are done with.
    let mut once = HashSet::new();
    let events = events.into_iter().filter(|p| once.insert(p.envelope.id.as_str())).collect();
    let returning = hand_on_unseen(deps, tenant, events, deadline).await;
    // At once, not after the queue's visibility timeout: nothing failed, this invocation
    // only had no time for them.
    let back = futures::future::join_all(
        returning.iter().map(|p| deps.ports.ingest.retry_after(&p.message.receipt, Duration::ZERO)),
    );
    if let Err(e) = before(deadline, ANSWER_MARGIN, "ingest.retry_after", async {
        back.await.into_iter().collect::<hookbridge_core::Result<Vec<()>>>()
    })
    .await
    {
        tracing::warn!(tenant = %tenant, error = %e, "events not begun could not be made receivable at once");
    }
    returning.iter().map(|p| p.message.id.clone()).collect()
}

/// Hands on, as new messages, the events not begun that are on their first receive and
/// whose delivery ids the new message dates as the old one does; the others, to come back
/// as they are. Came back, each would use up a receive, and an event reached late in five
/// invocations went to the dead-letter queue unrouted. An event received before may have
/// been fanned out part way; and the original may come back after its copy was sent (the
/// invocation failing after all, or the send's answer not come in time), so both are
/// fanned out: that is harmless only where both date the ids by the event's own `time`
/// ([`dated`]), not by their send times, which would send receivers one event under two
/// sets of ids.
async fn hand_on_unseen<'p, 'm>(
    deps: &Ingest,
    tenant: &TenantId,
    events: Vec<&'p Parsed<'m>>,
    deadline: Option<Instant>,
) -> Vec<&'p Parsed<'m>> {
    // The copy is sent a moment after `now`: a minute's margin for its send time.
    let now = Utc::now();
    let same_ids = |p: &Parsed<'_>| {
        let own = dated(&p.envelope, p.message.sent_at);
        [now, now + chrono::Duration::minutes(1)].iter().all(|at| dated(&p.envelope, *at) == own)
    };
    let (unseen, mut back): (Vec<_>, Vec<_>) =
        events.into_iter().partition(|p| p.message.receive_count <= 1 && same_ids(p));
    if unseen.is_empty() {
        return back;
    }
    let again: Vec<_> =
        unseen.iter().map(|p| OutgoingMessage::now(p.message.body.clone()).in_group(tenant.to_string())).collect();
    let sent = async { Ok(deps.ports.ingest.send_each(&again).await) };
    let unsent = match before(deadline, ANSWER_MARGIN, "ingest.hand_on", sent).await {
        Ok(Ok(())) => Vec::new(),
        Ok(Err(unsent)) => {
            tracing::warn!(tenant = %tenant, error = %unsent.error, "events not begun could not all be handed on; they come back");
            unsent.indices
        }
        // Perhaps sent, perhaps not: back as well, at least once.
        Err(e) => {
            tracing::warn!(tenant = %tenant, error = %e, "events not begun could not be handed on; they come back");
            (0..unseen.len()).collect()
        }
    };
    back.extend(unsent.into_iter().filter_map(|i| unseen.get(i).copied()));
    back
}

/// Re-sends the page a replay poke asks for, given up [`PAGE_MARGIN`] before the
/// invocation's `deadline` (and [`GIVE_UP_TIME`] more on the poke's last receive); the
/// poke's id if it must come back. A poke back after a failed page reads a smaller one
/// ([`replay::page_on_receive`]).
async fn replay_page(
    deps: &Ingest,
    m: &ReceivedMessage,
    poked: &ReplayPoke,
    deadline: Option<Instant>,
) -> Result<(), String> {
    let span = tracing::info_span!("replay", tenant = %poked.tenant, replay_id = %poked.replay_id);
    let mut ports = deps.ports.job_ports();
    ports.page = replay::page_on_receive(ports.page, m.receive_count);
    let margin = if m.receive_count >= INGEST_RECEIVES { PAGE_MARGIN + GIVE_UP_TIME } else { PAGE_MARGIN };
    let page = replay::step(ports, poked, Utc::now()).instrument(span.clone());
    let Err(e) = before(deadline, margin, "replay.page", page).await else {
        return Ok(());
    };
    poke_failed(deps, m, poked, "replay page failed", &e, deadline).instrument(span).await
}

/// A replay page not begun for want of time: its poke is sent again as a new message and
/// this one is done with, so the job goes on in the next invocation with all its receives.
/// (Failed instead, the poke would use one up each time, and a job reached late in every
/// invocation would fail after five.)
async fn hand_on(
    deps: &Ingest,
    m: &ReceivedMessage,
    poked: &ReplayPoke,
    deadline: Option<Instant>,
) -> Result<(), String> {
    let span = tracing::info_span!("replay", tenant = %poked.tenant, replay_id = %poked.replay_id);
    tracing::info!(parent: &span, why = TOO_LATE, "replay page handed on to the next invocation");
    let again = OutgoingMessage::now(poked.to_body()).in_group(poked.tenant.to_string());
    let sent = deps.ports.ingest.send_batch(std::slice::from_ref(&again)).instrument(span.clone());
    let Err(e) = before(deadline, ANSWER_MARGIN, "replay.hand_on", sent).await else {
        return Ok(());
    };
    poke_failed(deps, m, poked, "could not hand the replay page on", &e, deadline).instrument(span).await
}

/// A poke that failed comes back; on the last receive the queue allows, it goes to the
/// dead-letter queue instead, so its job is failed: it must not read `RUNNING` for ever
/// with nothing left to move it.
async fn poke_failed(
    deps: &Ingest,
    m: &ReceivedMessage,
    poked: &ReplayPoke,
    what: &str,
    e: &hookbridge_core::Error,
    deadline: Option<Instant>,
) -> Result<(), String> {
    if m.receive_count >= INGEST_RECEIVES {
        tracing::error!(replay_id = %poked.replay_id, error = %e, "{what} for the last time; the job has failed");
        let failed = replay::give_up(deps.ports.job_ports(), poked, Utc::now());
        if let Err(e) = before(deadline, ANSWER_MARGIN, "replay.give_up", failed).await {
            tracing::error!(replay_id = %poked.replay_id, error = %e, "could not mark the replay job failed");
        }
    } else {
        tracing::error!(replay_id = %poked.replay_id, error = %e, "{what}; it will be retried");
    }
    Err(m.id.clone())
}

/// Deliveries on their way to the store and the lanes, written a chunk at a time.
#[derive(Default)]
struct Chunk {
    cancelled: Vec<DeliveryUpdate>,
    fast: Vec<OutgoingMessage>,
    slow: Vec<OutgoingMessage>,
    sent: usize,
    cancelled_total: usize,
}

impl Chunk {
    fn len(&self) -> usize {
        self.cancelled.len() + self.fast.len() + self.slow.len()
    }

    async fn flush(&mut self, p: &IngestPorts) -> hookbridge_core::Result<()> {
        if !self.cancelled.is_empty() {
            p.deliveries.record(&self.cancelled).await?;
        }
        if !self.fast.is_empty() {
            p.lanes.fast.send_batch(&self.fast).await?;
        }
        if !self.slow.is_empty() {
            p.lanes.slow.send_batch(&self.slow).await?;
        }
        self.sent += self.fast.len() + self.slow.len();
        self.cancelled_total += self.cancelled.len();
        self.cancelled.clear();
        self.fast.clear();
        self.slow.clear();
        Ok(())
    }
}

/// Whether an event's envelope is kept in the event store rather than with its delivery:
/// when several hooks share it (one copy, not one per delivery), or when it is too large
/// to ride in the delivery's message (the worker reads it from the store). One no hook
/// wants is not kept at all: nothing would ever read it.
fn kept_apart(envelope_len: usize, hooks: usize) -> bool {
    hooks > 1 || (hooks == 1 && envelope_len > INLINE_BODY_MAX)
}

/// Fans out one tenant's events; the ids of those not begun, for want of time (every event
/// after the first is begun only with [`TIME_TO_START`] left).
async fn ingest_tenant(
    deps: &Ingest,
    tenant: &TenantId,
    events: &[Parsed<'_>],
    deadline: Option<Instant>,
) -> hookbridge_core::Result<HashSet<String>> {
    let p = &deps.ports;
    // A queue's at-least-once delivery can put two copies of one event in one batch. Once
    // is enough (the copies' deliveries would share their ids anyway), and DynamoDB
    // refuses a batch write that names one envelope twice.
    let mut seen = HashSet::new();
    let events: Vec<&Parsed<'_>> = events.iter().filter(|e| seen.insert(e.envelope.id.as_str())).collect();
    let RoutingList { hooks, unreadable } = p.hooks.list_for_routing(tenant, deps.settings.routing_most_bytes).await?;
    if unreadable.len() > UNROUTED_HOOKS_MOST {
        return Err(hookbridge_core::Error::backend(
            "ingest.route",
            format!("{} of the tenant's hooks cannot be read by this version", unreadable.len()),
        ));
    }
    let now = Utc::now();
    let routed: Vec<(&Parsed<'_>, String, Vec<&Hook>)> = events
        .iter()
        .copied()
        .map(|e| {
            let wanted = hooks
                .iter()
                .map(AsRef::as_ref)
                .filter(|h: &&Hook| h.config.wants(&e.envelope.detail_type, e.site.as_deref()))
                .collect();
            (e, e.envelope.to_body(), wanted)
        })
        .collect();
    let retention = chrono::Duration::from_std(deps.settings.event_retention).unwrap_or(chrono::Duration::days(14));
    // A hook this version cannot read may want any event: each goes to it, and the worker,
    // once it can read the hook, sends only what it wants (decision 0026).
    let reach = |wanted: &[&Hook]| wanted.len() + unreadable.len();
    // Kept before any delivery is enqueued: a worker reading a large envelope finds it.
    let apart: Vec<Envelope> = routed
        .iter()
        .filter(|(_, body, wanted)| kept_apart(body.len(), reach(wanted)))
        .map(|(e, _, _)| e.envelope.clone())
        .collect();
    if !apart.is_empty() {
        p.events.put(tenant, &apart, now + retention).await?;
    }
    let types: Vec<&str> = events.iter().map(|e| e.envelope.detail_type.as_str()).collect();
    // Bookkeeping for the event-type listing's `last_seen_at`: a failure to write it (a
    // throttled partition) must not hold up the deliveries, and it is written again later.
    if let Err(e) = p.events.record_seen(tenant, &types).await {
        tracing::warn!(tenant = %tenant, error = %e, "could not record the event types seen; deliveries go on");
    }
    let mut chunk = Chunk::default();
    let mut not_begun = HashSet::new();
    for (i, (e, body, wanted)) in routed.iter().enumerate() {
        if i > 0 && too_late(deadline) {
            not_begun = routed[i..].iter().map(|(e, _, _)| e.envelope.id.to_string()).collect();
            break;
        }
        let at = dated(&e.envelope, e.message.sent_at);
        let with_delivery = !kept_apart(body.len(), reach(wanted));
        let key = |hook_id: HookId| DeliveryKey {
            tenant: tenant.clone(),
            hook_id,
            delivery_id: delivery_id(at, e.envelope.id.as_str(), hook_id),
            event_id: e.envelope.id.clone(),
            event_type: e.envelope.detail_type.clone(),
        };
        for &hook_id in &unreadable {
            // On the slow lane: its message comes back until a worker can read the hook.
            let task = Task::new(key(hook_id), 0, body).unrecorded(now, with_delivery).unrouted(e.site.clone());
            chunk.slow.push(task.message(now));
            if chunk.len() >= CHUNK {
                chunk.flush(p).await?;
            }
        }
        for hook in wanted {
            let key = key(hook.id);
            match deliverable(hook) {
                Ok(()) => {
                    // Nothing is written for it here: the worker's first record makes it.
                    let task = Task::new(key, 0, body).unrecorded(now, with_delivery).routed(e.site.clone());
                    let message = task.message(now);
                    match hook.state.health.lane(now) {
                        Lane::Fast => chunk.fast.push(message),
                        Lane::Slow => chunk.slow.push(message),
                    }
                }
                Err(reason) => {
                    let mut update = DeliveryUpdate::cancelled(key, 0, reason, now);
                    update.opening = Some(Opening { created_at: now, envelope: with_delivery.then(|| body.clone()) });
                    chunk.cancelled.push(update);
                }
            }
            if chunk.len() >= CHUNK {
                chunk.flush(p).await?;
            }
        }
    }
    chunk.flush(p).await?;
    tracing::info!(
        tenant = %tenant,
        events = events.len() - not_begun.len(),
        deliveries = chunk.sent,
        unreadable_hooks = unreadable.len(),
        cancelled = chunk.cancelled_total,
        "events ingested"
    );
    Ok(not_begun)
}

fn deliverable(hook: &Hook) -> Result<(), String> {
    hook.deliverable().map_err(|why| why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_are_stable_and_distinct() {
        let h1 = HookId::generate();
        let h2 = HookId::generate();
        assert_eq!(delivery_id(1_000, "e1", h1), delivery_id(1_000, "e1", h1));
        assert_ne!(delivery_id(1_000, "e1", h1), delivery_id(1_000, "e1", h2));
        assert_ne!(delivery_id(1_000, "e1", h1), delivery_id(1_000, "e2", h1));
        assert_eq!(delivery_id(1_000, "e1", h1).timestamp_ms(), 1_000);
    }

    #[test]
    fn an_events_own_time_dates_its_deliveries_only_when_near_its_sending_and_not_ahead() {
        let sent = Utc::now();
        let at = |offset: chrono::Duration| {
            let body = format!(
                r#"{{"version":"0","id":"e","detail-type":"x","source":"s","account":"1","time":"{}","region":"r","resources":[],"detail":{{}}}}"#,
                (sent + offset).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            let envelope = Envelope::from_bus_json(&body, "1", "r").unwrap();
            (dated(&envelope, sent), envelope.time.timestamp_millis() as u64)
        };
        for trusted in [chrono::Duration::minutes(-59), chrono::Duration::zero(), chrono::Duration::seconds(3)] {
            let (dated, own) = at(trusted);
            assert_eq!(dated, own, "{trusted}");
        }
        for distrusted in [chrono::Duration::minutes(-61), chrono::Duration::minutes(30)] {
            assert_eq!(at(distrusted).0, sent.timestamp_millis() as u64, "{distrusted}");
        }
    }

    /// An event whose id says when it was made, within the second its `time` names, is
    /// dated to that millisecond, however its message was sent (copies date alike); any
    /// other id, or one made outside that second, leaves the event dated by its `time`.
    #[test]
    fn within_its_second_an_event_is_dated_by_when_its_id_was_made() {
        let second = chrono::DateTime::parse_from_rfc3339("2026-12-05T10:00:07Z").unwrap().with_timezone(&Utc);
        let ms = second.timestamp_millis() as u64;
        let v7 = |made: u64| format!("{:08x}-{:04x}-7abc-9def-0123456789ab", made >> 16, made & 0xffff);
        let dated_as = |id: &str, sent_at: DateTime<Utc>| {
            let body = format!(
                r#"{{"version":"0","id":"{id}","detail-type":"x","source":"s","account":"1","time":"2026-12-05T10:00:07Z","region":"r","resources":[],"detail":{{}}}}"#
            );
            dated(&Envelope::from_bus_json(&body, "1", "r").unwrap(), sent_at)
        };
        let sent = second + chrono::Duration::milliseconds(480);
        for made in [ms, ms + 417, ms + 999] {
            assert_eq!(dated_as(&v7(made), sent), made);
            // A copy sent later (a bus duplicate) dates alike.
            assert_eq!(dated_as(&v7(made), sent + chrono::Duration::seconds(2)), made);
        }
        for (id, why) in [
            (v7(ms - 1), "made before the event's second"),
            (v7(ms + 1_000), "made after it"),
            ("01936f3b-1d40-4abc-9def-0123456789ab".to_owned(), "a version 4 UUID"),
            ("order-7".to_owned(), "a producer's own id"),
        ] {
            assert_eq!(dated_as(&id, sent), ms, "{why}");
        }
        // An event whose time is not trusted is dated by its sending, as before.
        let late = second + chrono::Duration::hours(2);
        assert_eq!(dated_as(&v7(ms + 417), late), late.timestamp_millis() as u64);
        // The furthest ahead a delivery can be dated: its time as far ahead of its sending
        // as trusted, its id made at the end of that second; no further than
        // `DATED_AHEAD_AT_MOST`, which Read's window and a site-held history allow for.
        let sent = second - EVENT_TIME_AHEAD;
        let furthest = dated_as(&v7(ms + 999), sent);
        assert_eq!(furthest, ms + 999, "trusted, and dated by its id");
        assert!(furthest as i64 <= (sent + DATED_AHEAD_AT_MOST).timestamp_millis());
    }
}

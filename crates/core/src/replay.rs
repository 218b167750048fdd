//! Replay jobs: re-sending a window of a hook's deliveries, however many, without holding
//! an API request open. The request stores a job and puts a [`ReplayPoke`] on the ingest
//! queue; ingest then works through the window a page at a time, oldest first, saving the
//! job's cursor after each page and poking itself for the next.
//!
//! The job record is the state machine; a poke only says "do the next page". Each page is
//! saved with a check that no one else saved it first (`step`), and the next poke is sent
//! only after that save, before the current one is acknowledged. So a crash at any point
//! leaves either the current poke to come back (and the job resumes from its saved
//! cursor) or two pokes of which the second to save gives way; either way every matching
//! delivery is re-sent at least once, as everything the platform sends is.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::delivery::{Delivery, DeliveryStatus};
use crate::ids::{HookId, ReplayId, TenantId};

/// Deliveries read per page of a job.
pub const PAGE: usize = 500;
/// How long a job stays readable after it last moved: after it stopped, or, while it runs,
/// after its last page.
pub const JOB_KEPT: Duration = Duration::days(7);

/// How long a running job may go with no page saved before it counts as stalled: its poke
/// lost (the API stopped between storing the job and poking it, or a poke failed and so
/// did the save that would have failed the job). A page takes seconds, and a poke that
/// keeps failing fails its job on its last receive, within five receives of the ingest
/// queue's three-minute visibility: half an hour is well past either.
pub const STALLED_AFTER: Duration = Duration::minutes(30);

/// A job a listing of `hook_id`'s jobs read as `id`, or `None` (logged) when this version
/// cannot read it (a newer release wrote it): one such job made the hook's listing, and
/// every replay request (which counts the running jobs), an error. Both stores' listings
/// leave it out so ([`crate::ports::Page::cut_readable`]).
pub fn listed_job<E: std::fmt::Display>(hook_id: &HookId, id: &str, read: Result<ReplayJob, E>) -> Option<ReplayJob> {
    read.inspect_err(|e| {
        tracing::error!(%hook_id, replay_id = id, error = %e, "cannot read this replay job (a newer version wrote it?); it is left out");
    })
    .ok()
}

/// The job a listing of a hook's jobs (newest first) continues below: the `cursor` it
/// was given, which is the last job id of the page before.
pub fn listed_after(cursor: Option<&str>) -> crate::Result<Option<ReplayId>> {
    cursor.map(|c| c.parse::<ReplayId>().map_err(|_| crate::Error::InvalidCursor)).transpose()
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReplayState {
    /// Pages are still being re-sent.
    Running,
    /// Every matching delivery of the window was re-sent.
    Succeeded,
    /// Cancelled by request; what was re-sent before stays sent.
    Cancelled,
    /// The hook was deleted, or stopped receiving, while it ran; or a page failed on every
    /// try; or the job could not be started.
    Failed,
}

impl ReplayState {
    /// Whether the job will do no more.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Running)
    }
}

/// A replay job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayJob {
    /// Its id.
    pub id: ReplayId,
    /// Whose hook.
    pub tenant: TenantId,
    /// Which hook.
    pub hook_id: HookId,
    /// The window's inclusive start.
    pub since: DateTime<Utc>,
    /// The window's exclusive end.
    pub until: DateTime<Utc>,
    /// Which statuses it re-sends; `None` for all (deliveries under way are always left
    /// to their own schedule).
    pub statuses: Option<Vec<DeliveryStatus>>,
    /// Where it is.
    pub state: ReplayState,
    /// The last delivery id handled, once a page is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Pages saved so far; a save names the step it read, so two workers cannot both save
    /// the same page.
    pub step: u64,
    /// Deliveries re-sent.
    pub queued: u64,
    /// Matching deliveries not re-sent: their event is no longer kept, or the hook no
    /// longer subscribes to it (its `event_types` or `sites` changed since).
    pub skipped: u64,
    /// When it was asked for.
    pub created_at: DateTime<Utc>,
    /// When it last moved.
    pub updated_at: DateTime<Utc>,
    /// When it stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Fields a newer release wrote, kept as they were (decision 0044).
    #[serde(flatten)]
    pub newer: crate::newer::NewerFields,
}

impl ReplayJob {
    /// A new running job.
    pub fn new(
        tenant: TenantId,
        hook_id: HookId,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        statuses: Option<Vec<DeliveryStatus>>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            newer: Default::default(),
            id: ReplayId::generate(),
            tenant,
            hook_id,
            since,
            until,
            statuses,
            state: ReplayState::Running,
            cursor: None,
            step: 0,
            queued: 0,
            skipped: 0,
            created_at: now,
            updated_at: now,
            finished_at: None,
        }
    }

    /// Whether the job re-sends `d`: finished deliveries of the statuses it asks for, made
    /// before the job was asked for. A delivery's id is dated by its event's own `time`,
    /// which a producer may set up to an hour back, so a delivery made after the request
    /// can have an id inside the window; re-sent, its receiver would get a new event twice.
    pub fn wants(&self, d: &Delivery) -> bool {
        d.status.is_final()
            && d.created_at < self.created_at
            && self.statuses.as_ref().is_none_or(|w| w.contains(&d.status))
    }

    /// The note its re-sends leave on a delivery (the API shows it as the delivery's
    /// `reason`), by which a page read again knows what this job re-sent already.
    pub fn note(&self) -> String {
        format!("replayed by {}", self.id)
    }

    /// Whether this job re-sent `d` already: its page is read again after its save was
    /// lost (a crash between the re-send and the save, or another poke saving first), and
    /// what it re-sent is counted, not sent a second time. Such a delivery is `PENDING`
    /// again or under way, which [`ReplayJob::wants`] alone would pass over uncounted.
    pub fn resent(&self, d: &Delivery) -> bool {
        d.round > 0 && d.note.as_deref() == Some(self.note().as_str())
    }

    /// The job after one more page: `next` is where the following page starts, `None`
    /// when the window is done.
    pub fn advanced(&self, next: Option<String>, queued: u64, skipped: u64, now: DateTime<Utc>) -> Self {
        let mut job = self.clone();
        job.step += 1;
        job.queued += queued;
        job.skipped += skipped;
        job.updated_at = now;
        if next.is_none() {
            job.state = ReplayState::Succeeded;
            job.finished_at = Some(now);
        }
        job.cursor = next;
        job
    }

    /// The job stopped in `state` (cancelled, or failed).
    pub fn stopped(&self, state: ReplayState, now: DateTime<Utc>) -> Self {
        let mut job = self.clone();
        job.step += 1;
        job.state = state;
        job.updated_at = now;
        job.finished_at = Some(now);
        job
    }

    /// Whether it is running with no page saved for [`STALLED_AFTER`]: nothing is
    /// working on it, and it must be poked again.
    pub fn stalled(&self, now: DateTime<Utc>) -> bool {
        self.state == ReplayState::Running && now - self.updated_at > STALLED_AFTER
    }

    /// When its record may be dropped: [`JOB_KEPT`] after it last moved. Counted from when
    /// it was asked for, a job that was still working through a long window a week later
    /// vanished mid-way: its next page found no job, and the rest was never sent.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.finished_at.unwrap_or(self.updated_at).max(self.created_at) + JOB_KEPT
    }
}

/// The message on the ingest queue that makes ingest do a job's next page:
/// `{"type": "replay.v1", "tenant": …, "hook_id": …, "replay_id": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayPoke {
    /// Always `replay.v1`.
    #[serde(rename = "type")]
    pub format: PokeFormat,
    /// Whose hook.
    pub tenant: TenantId,
    /// Which hook.
    pub hook_id: HookId,
    /// Which job.
    pub replay_id: ReplayId,
}

/// The tag of [`ReplayPoke`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PokeFormat {
    /// The only format.
    #[serde(rename = "replay.v1")]
    V1,
}

impl ReplayPoke {
    /// The poke for `job`.
    pub fn of(job: &ReplayJob) -> Self {
        Self { format: PokeFormat::V1, tenant: job.tenant.clone(), hook_id: job.hook_id, replay_id: job.id }
    }

    /// The message body.
    pub fn to_body(&self) -> String {
        // A struct of strings always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A poke, if `body` is one. Events from the bus never carry a top-level `type`.
    pub fn parse(body: &str) -> Option<Self> {
        if !body.contains("\"replay.v1\"") {
            return None;
        }
        serde_json::from_str(body).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> ReplayJob {
        let now = Utc::now();
        ReplayJob::new("acme".parse().unwrap(), HookId::generate(), now - Duration::hours(1), now, None, now)
    }

    #[test]
    fn a_job_counts_its_pages_and_ends_when_the_window_does() {
        let j = job();
        let a = j.advanced(Some("01J".into()), 3, 1, Utc::now());
        assert_eq!((a.step, a.queued, a.skipped, a.state), (1, 3, 1, ReplayState::Running));
        let b = a.advanced(None, 2, 0, Utc::now());
        assert_eq!((b.step, b.queued, b.state), (2, 5, ReplayState::Succeeded));
        assert!(b.finished_at.is_some() && b.cursor.is_none());
        let c = a.stopped(ReplayState::Cancelled, Utc::now());
        assert_eq!((c.step, c.queued, c.state), (2, 3, ReplayState::Cancelled));
    }

    #[test]
    fn a_poke_round_trips_and_an_event_is_not_one() {
        let j = job();
        let poke = ReplayPoke::of(&j);
        assert_eq!(ReplayPoke::parse(&poke.to_body()), Some(poke));
        let event = r#"{"version":"0","id":"1","detail-type":"replay.v1","source":"x","detail":{}}"#;
        assert_eq!(ReplayPoke::parse(event), None);
    }
}

//! Deliveries (one event to one hook) and their attempts.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{DeliveryId, EventId, HookId, TenantId};

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryStatus {
    /// Queued, not yet attempted.
    Pending,
    /// Attempted, failed, and scheduled again.
    Retrying,
    /// The receiver answered 2xx.
    Succeeded,
    /// Gave up: a permanent failure or the schedule ran out.
    Failed,
    /// Not sent: the hook was deleted, disabled, inactive or unverified.
    Cancelled,
}

impl DeliveryStatus {
    /// Whether nothing more will happen to it without a retry or replay.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// Why an attempt failed, as API.md names the classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The name did not resolve.
    Dns,
    /// The connection was refused or reset.
    Connect,
    /// The TLS handshake failed.
    Tls,
    /// No answer within the timeout.
    Timeout,
    /// A 4xx other than 408 and 429.
    #[serde(rename = "http_4xx")]
    Http4xx,
    /// 429 Too Many Requests (and 408, which means the same to us: try later).
    #[serde(rename = "http_429")]
    Http429,
    /// A 5xx.
    #[serde(rename = "http_5xx")]
    Http5xx,
    /// A 3xx; redirects are never followed.
    Redirect,
    /// The address is one hooks may not reach.
    SsrfBlocked,
    /// Credentials could not be obtained (the OAuth token endpoint failed).
    Auth,
}

impl ErrorClass {
    /// The name API.md uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Timeout => "timeout",
            Self::Http4xx => "http_4xx",
            Self::Http429 => "http_429",
            Self::Http5xx => "http_5xx",
            Self::Redirect => "redirect",
            Self::SsrfBlocked => "ssrf_blocked",
            Self::Auth => "auth",
        }
    }
}

/// How long a delivery and its attempts are kept after the delivery was created (at least
/// the 7 days a tenant may want to look back, with room for a retry schedule to finish).
pub const DELIVERY_RETENTION_DAYS: i64 = 14;

/// When every record of the delivery `id` is dropped: [`DELIVERY_RETENTION_DAYS`] after
/// its id's time, all of them alike. Dated from each record instead, DynamoDB dropped a
/// delivery's first records (its opening, envelope and first attempts) days before its
/// last, while SQLite kept the whole row: the two showed different deliveries.
pub fn expires_at(id: DeliveryId) -> DateTime<Utc> {
    let created = DateTime::<Utc>::from_timestamp_millis(i64::try_from(id.timestamp_ms()).unwrap_or(i64::MAX))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    created.checked_add_signed(chrono::Duration::days(DELIVERY_RETENTION_DAYS)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Whether an attempt at `at` would come once the delivery `id`'s records are dropped
/// ([`expires_at`]): such an attempt is not made, for its receiver would get a request
/// its tenant could no longer see (a delivery re-sent in its last day, say).
pub fn past_retention(id: DeliveryId, at: DateTime<Utc>) -> bool {
    at >= expires_at(id)
}

/// The note on a delivery whose next attempt would have come after its records are dropped.
pub const NOT_RETRIED_PAST_RETENTION: &str =
    "not tried again: its next attempt was due after its records are dropped, 14 days after it was made";

/// The note a delivery ended for [`NOT_RETRIED_PAST_RETENTION`] is left with: that reason
/// on its first round. A later round keeps the note that opened it ("retry requested",
/// "replayed by …"): a replay's page read again goes by that note to count what it re-sent
/// instead of sending it twice. The reason then goes with `delivery.exhausted`.
pub fn past_retention_note(round: u32) -> Option<String> {
    (round == 0).then(|| NOT_RETRIED_PAST_RETENTION.to_owned())
}

/// The note on a delivery that came due once its records were dropped.
pub const NOT_SENT_PAST_RETENTION: &str = "not sent: its 14 days were over, and its records with them";

/// The note on a delivery whose hook stopped wanting its event (its `event_types` or
/// `sites` changed) while the delivery waited.
pub const NOT_SENT_NO_LONGER_WANTED: &str = "hook no longer subscribed: its event_types or sites changed";

/// The most of a response body kept on an attempt.
pub const RESPONSE_EXCERPT_BYTES: usize = 2048;

/// One try at sending a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first attempt of this delivery, counting every retry and replay.
    pub attempt: u32,
    /// When it started.
    pub at: DateTime<Utc>,
    /// How long it took, to the end of the response or the error.
    pub duration_ms: u64,
    /// The response status, when one came.
    pub status_code: Option<u16>,
    /// Why it failed, when it did.
    pub error_class: Option<ErrorClass>,
    /// The first 2 KiB of the response body (or the error, when there was no response).
    pub response_excerpt: Option<String>,
}

/// Cuts `text` to at most [`RESPONSE_EXCERPT_BYTES`] on a character boundary.
pub fn excerpt(text: &str) -> String {
    if text.len() <= RESPONSE_EXCERPT_BYTES {
        return text.to_owned();
    }
    let mut end = RESPONSE_EXCERPT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The most attempts a delivery keeps: the latest, its first ones dropped as more are
/// made. Every retry and replay opens a round of up to the schedule's attempts, so a
/// delivery sent again by request thousands of times held thousands of attempts (each with
/// up to 2 KiB of the answer), past what one response can carry.
pub const KEPT_ATTEMPTS: usize = 100;

/// One event on its way to one hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Also the `webhook-id`.
    pub id: DeliveryId,
    /// The hook's tenant.
    pub tenant: TenantId,
    /// The hook.
    pub hook_id: HookId,
    /// The event.
    pub event_id: EventId,
    /// The event's type.
    pub event_type: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// The latest attempts (at most [`KEPT_ATTEMPTS`]), oldest first, each numbered among
    /// all the delivery's attempts.
    pub attempts: Vec<Attempt>,
    /// When the next attempt is due, while `RETRYING` or `PENDING`.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Why it was cancelled or failed without an attempt.
    pub note: Option<String>,
    /// How many times it was sent again by request (retry, replay); see [`Delivery::apply`].
    #[serde(default)]
    pub round: u32,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The envelope, when it is kept with the delivery instead of in the event store
    /// (decision 0021); never shown as a delivery's field, only as its envelope. Written as
    /// a string of its JSON, and read either so or as the JSON itself ([`kept_envelope`]).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "kept_envelope")]
    pub envelope: Option<String>,
}

/// Reads a delivery's kept envelope written as a string of its JSON (as a delivery writes
/// itself) or as the JSON itself (as the embedded store's next release writes it, which
/// spares escaping each of its quotes: decision 0036), to the same text.
fn kept_envelope<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let Some(raw) = Option::<Box<serde_json::value::RawValue>>::deserialize(d)? else {
        return Ok(None);
    };
    if raw.get().starts_with('"') {
        serde_json::from_str(raw.get()).map(Some).map_err(serde::de::Error::custom)
    } else {
        Ok(Some(raw.get().to_owned()))
    }
}

impl Delivery {
    /// A new delivery, queued now.
    pub fn pending(
        id: DeliveryId,
        tenant: TenantId,
        hook_id: HookId,
        event_id: EventId,
        event_type: String,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id,
            tenant,
            hook_id,
            event_id,
            event_type,
            status: DeliveryStatus::Pending,
            attempts: Vec::new(),
            next_attempt_at: Some(now),
            note: None,
            round: 0,
            created_at: now,
            updated_at: now,
            envelope: None,
        }
    }

    /// The delivery `u` is the first record of (no record of it exists): created when its
    /// opening says, else when `u` happened, and not yet changed by `u`.
    pub fn opened_by(u: &DeliveryUpdate) -> Self {
        let created_at = u.opening.as_ref().map_or(u.at, |o| o.created_at);
        Self::pending_for(&u.delivery, created_at)
    }

    /// A new delivery for `key`, queued now.
    pub fn pending_for(key: &DeliveryKey, now: DateTime<Utc>) -> Self {
        Self::pending(
            key.delivery_id,
            key.tenant.clone(),
            key.hook_id,
            key.event_id.clone(),
            key.event_type.clone(),
            now,
        )
    }

    /// The latest attempt.
    pub fn last_attempt(&self) -> Option<&Attempt> {
        self.attempts.last()
    }

    /// How many attempts were made, those no longer kept included.
    pub fn attempts_made(&self) -> u32 {
        self.attempts.last().map_or(0, |a| a.attempt)
    }

    /// Applies an update as every store must: append the attempt, and set the status
    /// unless the update belongs to an older round than the delivery is in.
    ///
    /// Rounds make the outcome independent of the order in which two processes' writes
    /// land: the API's `PENDING` for round 2 and the worker's `SUCCEEDED` for round 2 fold
    /// to `SUCCEEDED` whichever is stored last, and nothing from round 1 can overwrite
    /// round 2.
    pub fn apply(&mut self, u: &DeliveryUpdate) {
        self.take_attempt(u);
        if u.round < self.round {
            self.updated_at = self.updated_at.max(u.at);
            return;
        }
        if u.round == self.round && u.status == DeliveryStatus::Pending && self.status != DeliveryStatus::Pending {
            // The request that opened this round, stored after the worker already recorded
            // what the round's attempt did. Its note still says what opened the round (a
            // replay finds what it re-sent by it), unless the outcome gave a reason of its own.
            if u.note.is_some()
                && (self.note.is_none() || matches!(self.status, DeliveryStatus::Retrying | DeliveryStatus::Succeeded))
            {
                self.note.clone_from(&u.note);
            }
            return;
        }
        if u.round == self.round && self.status == DeliveryStatus::Succeeded && u.status != DeliveryStatus::Succeeded {
            // Delivered in this round. A second chain of the same round (two retry requests
            // at once, a replay page sent again after a crash) may record a failure later,
            // the receiver having refused the copy it had already; the delivery stays
            // delivered, its attempt kept.
            self.updated_at = self.updated_at.max(u.at);
            return;
        }
        if u.round > self.round || u.note.is_some() {
            // A new round's note is its own: the last round's reason (a cancellation, say)
            // does not describe it, and left in place it would hide the note of the request
            // that opened this round when that lands after the outcome.
            self.note.clone_from(&u.note);
        } else if u.round == 0 && u.status != self.status {
            // No request opened the first round, so each of its notes is the reason for the
            // status it came with (a cancellation, a give-up) and goes with that status: a
            // copy of the event routed again after its hook was re-enabled, delivered, is
            // not "hook disabled".
            self.note = None;
        }
        self.round = u.round;
        self.status = u.status;
        self.next_attempt_at = u.next_attempt_at;
        self.updated_at = u.at;
    }
}

impl Delivery {
    /// Keeps the attempt `u` tells of, and leaves the status to another: the record of a
    /// holder whose message was received again by a second one (its visibility timeout ran
    /// out). The second carries the delivery on and records where it stands; the first
    /// sends no retry, so its `RETRYING` would say a retry is coming when none is, over the
    /// second's `FAILED` or `CANCELLED`.
    pub fn keep_attempt(&mut self, u: &DeliveryUpdate) {
        self.take_attempt(u);
        // Its round stands, so an older round's record landing later does not change it.
        self.round = self.round.max(u.round);
        self.updated_at = self.updated_at.max(u.at);
    }

    /// The envelope `u` opened the delivery with, if none is kept, and its attempt.
    fn take_attempt(&mut self, u: &DeliveryUpdate) {
        if self.envelope.is_none()
            && let Some(envelope) = u.opening.as_ref().and_then(|o| o.envelope.as_ref())
        {
            self.envelope = Some(envelope.clone());
        }
        if let Some(a) = &u.attempt {
            let mut a = a.clone();
            a.attempt = self.attempts_made() + 1;
            self.attempts.push(a);
            let over = self.attempts.len().saturating_sub(KEPT_ATTEMPTS);
            self.attempts.drain(..over);
        }
    }
}

/// What a stage records about a delivery: an attempt and/or a new status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryUpdate {
    /// The delivery, as created by ingest (it is recreated from these if missing).
    pub delivery: DeliveryKey,
    /// The attempt made, if one was.
    pub attempt: Option<Attempt>,
    /// The new status.
    pub status: DeliveryStatus,
    /// When the next attempt is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Why it was cancelled or failed.
    pub note: Option<String>,
    /// The round it belongs to (see [`Delivery::apply`]).
    pub round: u32,
    /// When this happened.
    pub at: DateTime<Utc>,
    /// Set on the first record of a delivery ingest queued without recording it.
    pub opening: Option<Opening>,
}

/// What the first record of a delivery carries when ingest queued the delivery without
/// writing it down (decision 0021): with it, that record alone is the whole delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opening {
    /// When ingest queued it: the delivery's `created_at`.
    pub created_at: DateTime<Utc>,
    /// The envelope, when it is kept with the delivery rather than in the event store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<String>,
}

impl DeliveryUpdate {
    /// The platform gave the delivery up unsent, for `reason` (what it needed could not be
    /// had on any receive of its message): `FAILED`, so a retry or replay sends it again.
    pub fn given_up(delivery: DeliveryKey, round: u32, reason: String, at: DateTime<Utc>) -> Self {
        Self { status: DeliveryStatus::Failed, ..Self::cancelled(delivery, round, reason, at) }
    }

    /// The delivery was not sent, for `reason`.
    pub fn cancelled(delivery: DeliveryKey, round: u32, reason: String, at: DateTime<Utc>) -> Self {
        Self {
            delivery,
            attempt: None,
            status: DeliveryStatus::Cancelled,
            next_attempt_at: None,
            note: Some(reason),
            round,
            at,
            opening: None,
        }
    }
}

/// Everything needed to find a delivery, or recreate it if its record is missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryKey {
    /// The tenant.
    pub tenant: TenantId,
    /// The hook.
    pub hook_id: HookId,
    /// The delivery.
    pub delivery_id: DeliveryId,
    /// The event.
    pub event_id: EventId,
    /// The event's type.
    pub event_type: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kept envelope reads back as the same text whether it was written as a string of
    /// its JSON (as a delivery serializes itself, and as every record was written before
    /// the embedded store wrote it as JSON) or as the JSON itself, spaces and escapes and
    /// all: it is what a replay sends and signs again.
    #[test]
    fn a_kept_envelope_reads_the_same_from_a_string_or_from_its_json() {
        let envelope = r#"{"id": "e-1", "detail":{"say":"a \"quoted\" word","name":"Jos\u00e9"}}"#;
        let mut d = Delivery::pending(
            DeliveryId::generate(),
            "t".parse().unwrap(),
            HookId::generate(),
            "e".parse().unwrap(),
            "x".into(),
            Utc::now(),
        );
        d.envelope = Some(envelope.to_owned());
        let as_string = serde_json::to_string(&d).unwrap();
        assert!(as_string.contains(r#""envelope":"{\"id\""#), "{as_string}");
        let as_json = format!(
            r#"{},"envelope":{envelope}}}"#,
            serde_json::to_string(&Delivery { envelope: None, ..d.clone() }).unwrap().trim_end_matches('}')
        );
        for doc in [&as_string, &as_json] {
            let back: Delivery = serde_json::from_str(doc).unwrap();
            assert_eq!(back, d, "{doc}");
        }
        let without: Delivery =
            serde_json::from_str(&serde_json::to_string(&Delivery { envelope: None, ..d.clone() }).unwrap()).unwrap();
        assert_eq!(without.envelope, None);
        let null = as_string.replace(&serde_json::to_string(envelope).unwrap(), "null");
        assert_eq!(serde_json::from_str::<Delivery>(&null).unwrap().envelope, None);
    }

    fn key() -> DeliveryKey {
        DeliveryKey {
            tenant: "t".parse().unwrap(),
            hook_id: HookId::generate(),
            delivery_id: DeliveryId::generate(),
            event_id: "e".parse().unwrap(),
            event_type: "x".into(),
        }
    }

    fn update(k: &DeliveryKey, status: DeliveryStatus, round: u32, attempt: bool) -> DeliveryUpdate {
        let now = Utc::now();
        DeliveryUpdate {
            delivery: k.clone(),
            attempt: attempt.then_some(Attempt {
                attempt: 0,
                at: now,
                duration_ms: 1,
                status_code: Some(200),
                error_class: None,
                response_excerpt: None,
            }),
            status,
            next_attempt_at: None,
            note: None,
            round,
            at: now,
            opening: None,
        }
    }

    #[test]
    fn a_delivery_keeps_its_latest_attempts_numbered_among_all() {
        let k = key();
        let mut d = Delivery::pending_for(&k, Utc::now());
        for round in 0..30 {
            for _ in 0..5 {
                d.apply(&update(&k, DeliveryStatus::Retrying, round, true));
            }
        }
        assert_eq!(d.attempts.len(), KEPT_ATTEMPTS);
        assert_eq!(d.attempts_made(), 150);
        let numbers: Vec<u32> = d.attempts.iter().map(|a| a.attempt).collect();
        assert_eq!(numbers, (51..=150).collect::<Vec<_>>());
        d.apply(&update(&k, DeliveryStatus::Succeeded, 30, true));
        assert_eq!((d.attempts[0].attempt, d.attempts_made()), (52, 151));
    }

    #[test]
    fn a_resend_recorded_after_its_own_outcome_does_not_reopen_the_delivery() {
        let k = key();
        let requeued = update(&k, DeliveryStatus::Pending, 1, false);
        let succeeded = update(&k, DeliveryStatus::Succeeded, 1, true);
        for order in [[&requeued, &succeeded], [&succeeded, &requeued]] {
            let mut d = Delivery::pending_for(&k, Utc::now());
            d.apply(&update(&k, DeliveryStatus::Failed, 0, true));
            for u in order {
                d.apply(u);
            }
            assert_eq!(d.status, DeliveryStatus::Succeeded);
            assert_eq!(d.round, 1);
            assert_eq!(d.attempts.len(), 2);
        }
    }

    #[test]
    fn a_first_rounds_reason_goes_with_the_status_it_came_with() {
        let k = key();
        let cancelled = DeliveryUpdate::cancelled(k.clone(), 0, "hook disabled".into(), Utc::now());
        let given_up = DeliveryUpdate::given_up(k.clone(), 0, "not sent: no secrets".into(), Utc::now());
        for reason in [&cancelled, &given_up] {
            for then in [DeliveryStatus::Succeeded, DeliveryStatus::Retrying] {
                let mut d = Delivery::pending_for(&k, Utc::now());
                d.apply(reason);
                d.apply(&update(&k, then, 0, true));
                assert_eq!((d.status, d.note.as_deref()), (then, None), "{:?}", reason.note);
            }
            // A record of the same status keeps it.
            let mut d = Delivery::pending_for(&k, Utc::now());
            d.apply(reason);
            d.apply(&update(&k, reason.status, 0, false));
            assert_eq!(d.note, reason.note);
        }
    }

    #[test]
    fn the_note_that_opened_a_round_stays_whichever_record_lands_first() {
        let k = key();
        let mut requeued = update(&k, DeliveryStatus::Pending, 1, false);
        requeued.note = Some("replayed by x".into());
        let retrying = update(&k, DeliveryStatus::Retrying, 1, true);
        for order in [[&requeued, &retrying], [&retrying, &requeued]] {
            let mut d = Delivery::pending_for(&k, Utc::now());
            d.apply(&update(&k, DeliveryStatus::Failed, 0, true));
            for u in order {
                d.apply(u);
            }
            assert_eq!((d.status, d.note.as_deref()), (DeliveryStatus::Retrying, Some("replayed by x")));
        }
    }

    /// A replayed delivery that fails again: the worker's `FAILED` for the new round often
    /// lands before the replay's `PENDING` (a page queues its tasks before recording them).
    /// The note is the replay's either way, so a page read again knows it re-sent it; and an
    /// outcome with a reason of its own keeps that reason either way.
    #[test]
    fn a_replayed_delivery_that_fails_again_keeps_the_replays_note_whichever_record_lands_first() {
        let k = key();
        let mut requeued = update(&k, DeliveryStatus::Pending, 1, false);
        requeued.note = Some("replayed by x".into());
        let failed = update(&k, DeliveryStatus::Failed, 1, true);
        let given_up = DeliveryUpdate::given_up(k.clone(), 1, "not sent: no secrets".into(), Utc::now());
        for (outcome, note) in [(&failed, "replayed by x"), (&given_up, "not sent: no secrets")] {
            for order in [[&requeued, outcome], [outcome, &requeued]] {
                let mut d = Delivery::pending_for(&k, Utc::now());
                d.apply(&DeliveryUpdate::cancelled(k.clone(), 0, "hook disabled".into(), Utc::now()));
                for u in order {
                    d.apply(u);
                }
                assert_eq!((d.status, d.round, d.note.as_deref()), (DeliveryStatus::Failed, 1, Some(note)));
            }
        }
    }

    /// A replayed delivery whose next attempt would come after its records are dropped
    /// ends `FAILED` after the attempt it made, and keeps the replay's note whichever record
    /// lands first: a page read again counts it instead of sending it a second time. Its
    /// first round, which no request opened, carries the reason itself.
    #[test]
    fn a_replayed_delivery_out_of_time_keeps_the_replays_note_whichever_record_lands_first() {
        let k = key();
        let mut requeued = update(&k, DeliveryStatus::Pending, 1, false);
        requeued.note = Some("replayed by x".into());
        let mut out_of_time = update(&k, DeliveryStatus::Failed, 1, true);
        out_of_time.note = past_retention_note(1);
        for order in [[&requeued, &out_of_time], [&out_of_time, &requeued]] {
            let mut d = Delivery::pending_for(&k, Utc::now());
            d.apply(&update(&k, DeliveryStatus::Failed, 0, true));
            for u in order {
                d.apply(u);
            }
            assert_eq!((d.status, d.round, d.note.as_deref()), (DeliveryStatus::Failed, 1, Some("replayed by x")));
        }
        assert_eq!(past_retention_note(0).as_deref(), Some(NOT_RETRIED_PAST_RETENTION));
    }

    #[test]
    fn an_older_round_never_overwrites_a_newer_one() {
        let k = key();
        let mut d = Delivery::pending_for(&k, Utc::now());
        d.apply(&update(&k, DeliveryStatus::Pending, 2, false));
        d.apply(&update(&k, DeliveryStatus::Failed, 1, true));
        assert_eq!(d.status, DeliveryStatus::Pending);
        assert_eq!(d.attempts.len(), 1, "the attempt is kept");
        d.apply(&update(&k, DeliveryStatus::Succeeded, 2, true));
        assert_eq!(d.status, DeliveryStatus::Succeeded);
    }

    #[test]
    fn a_round_that_succeeded_stays_succeeded_whatever_a_second_chain_records() {
        let k = key();
        for later in [DeliveryStatus::Retrying, DeliveryStatus::Failed, DeliveryStatus::Cancelled] {
            let mut d = Delivery::pending_for(&k, Utc::now());
            d.apply(&update(&k, DeliveryStatus::Failed, 0, true));
            d.apply(&update(&k, DeliveryStatus::Succeeded, 1, true));
            d.apply(&update(&k, later, 1, true));
            assert_eq!(d.status, DeliveryStatus::Succeeded, "{later:?}");
            assert_eq!(d.attempts.len(), 3, "every attempt is kept");
            d.apply(&update(&k, later, 2, true));
            assert_eq!(d.status, later, "a new round is a new outcome");
        }
    }

    #[test]
    fn excerpt_cuts_on_a_char_boundary() {
        let s = "é".repeat(2000);
        let e = excerpt(&s);
        assert!(e.len() <= RESPONSE_EXCERPT_BYTES);
        assert!(e.len() >= RESPONSE_EXCERPT_BYTES - 1);
    }

    #[test]
    fn error_classes_serialise_as_api_md_names() {
        for c in [
            ErrorClass::Dns,
            ErrorClass::Connect,
            ErrorClass::Tls,
            ErrorClass::Timeout,
            ErrorClass::Http4xx,
            ErrorClass::Http429,
            ErrorClass::Http5xx,
            ErrorClass::Redirect,
            ErrorClass::SsrfBlocked,
            ErrorClass::Auth,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }
}

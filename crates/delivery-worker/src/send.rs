//! Phase two: every request of the batch at once, each within its lane's budget, each
//! result handed to the recorder the moment it is known. A fast-lane request that
//! outlives the patience is given up and its hook moved to the slow lane, so a slow
//! endpoint holds a fast-lane place for no longer than that. A delivery of a fast hook
//! whose places were all taken waits here, briefly, for one; the others do not wait.

use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use hookbridge_core::delivery::ErrorClass;
use hookbridge_core::health::slow_until;
use hookbridge_core::hook::Lane;
use hookbridge_core::outcome::Sent;
use hookbridge_outbound::DeliveryRequest;
use tokio::sync::mpsc::UnboundedSender;
use tracing::Instrument;

use crate::prepare::{AT_CAP, PLACE_IN_PLACE, Place, Plan, Ready, TOO_LATE, back_shortly, release_probe, too_late};
use crate::record::Done;
use crate::{Worker, hook_cap};

pub(crate) async fn send_all<'a>(
    w: &Worker,
    plans: Vec<Plan<'a>>,
    lane: Lane,
    deadline: Option<tokio::time::Instant>,
    results: UnboundedSender<Done<'a>>,
) {
    let mut sends = Vec::new();
    for plan in plans {
        match plan {
            // Decided already: recorded with the first results.
            Plan::Done(done) => {
                let _ = results.send(done);
            }
            Plan::Send(ready) => sends.push(ready),
        }
    }
    join_all(sends.into_iter().map(|ready| {
        let results = results.clone();
        async move {
            let done = send(w, ready, lane, deadline).await;
            // The recorder outlives every send (both run to completion in `handle`).
            let _ = results.send(done);
        }
    }))
    .await;
}

pub(crate) async fn send<'a>(
    w: &Worker,
    mut ready: Box<Ready<'a>>,
    lane: Lane,
    deadline: Option<tokio::time::Instant>,
) -> Done<'a> {
    if matches!(ready.place, Place::Awaited(_)) {
        match w.local.wait_for_place(ready.hook.id, lane, hook_cap(lane), PLACE_IN_PLACE).await {
            Some(place) => ready.place = Place::Held(place),
            None => {
                release_probe(w, &ready, deadline).await;
                // Kept out by a crowded lane rather than by its own places: back on the
                // fast lane in a moment, holding no place, as planning would have done.
                let crowded = w.local.crowded_for(ready.hook.id);
                let Ready { message, mut task, hook, .. } = *ready;
                let hook_version = hook.version;
                let lane = if crowded {
                    task.not_before = Some(back_shortly(Utc::now()));
                    Lane::Fast
                } else {
                    Lane::Slow
                };
                return Done::Requeue { message, task: Box::new(task), lane, why: AT_CAP, hook_version };
            }
        }
    }
    if let Some(at) = ready.at
        && let Ok(wait) = (at - Utc::now()).to_std()
    {
        tokio::time::sleep(wait).await;
    }
    let budget = w.settings.budget(lane);
    if too_late(deadline, budget) {
        // The waits above took the time: handed back as planning would have, unsent.
        release_probe(w, &ready, deadline).await;
        let Ready { message, task, hook, .. } = *ready;
        return Done::Requeue { message, task: Box::new(task), lane, why: TOO_LATE, hook_version: hook.version };
    }
    // The ids on every line the HTTP client logs while sending. A `debug` span (on with
    // `delivery_worker::send=debug`, README): at `info` nothing is logged inside it, and an
    // `info` span's three ids were formatted, for the JSON lines, for every request all
    // the same.
    let span = tracing::debug_span!(
        "delivery",
        tenant = %ready.task.delivery.tenant,
        hook_id = %ready.task.delivery.hook_id,
        delivery_id = %ready.task.delivery.delivery_id
    );
    let req = DeliveryRequest {
        hook: &ready.hook,
        secrets: &ready.secrets,
        delivery_id: ready.task.delivery.delivery_id,
        body: &ready.body,
    };
    let mut report = w.outbound.deliver_within(req, budget).instrument(span).await;
    let timed_out = report.sent == Sent::NoResponse(ErrorClass::Timeout);
    // Given up for the lane's sake, not the endpoint's: the slow lane tries again at once
    // with the whole timeout.
    let abandoned = lane == Lane::Fast && timed_out && w.settings.patience < w.settings.timeout;
    if report.timed_out_waiting_for_its_token() {
        // The whole budget went on the token: an attempt without one, not the receiver's
        // timeout (which would open its circuit though it was never asked). Recorded so
        // on the fast lane too, where it is given up and sent again on the slow lane.
        report = report.counted_as_tokenless();
    }
    // An attempt that ended before a request to the receiver began (its token still being
    // fetched, or refused) says nothing of the receiver's pace, and the time one spent
    // getting its token is not the receiver's: a slow identity provider in front of a
    // fast receiver put the hook on the slow lane for ten minutes.
    let patience = w.settings.patience.as_millis() as u64;
    let slow = report.reached && if abandoned { report.receiver_ms >= patience } else { report.receiver_ms > patience };
    if report.reached {
        w.local.took(ready.hook.id, Duration::from_millis(report.receiver_ms));
    }
    if slow {
        let until = slow_until(Utc::now());
        w.local.mark_slow(ready.hook.id, &ready.hook.config.url, until);
    }
    let recovered = lane == Lane::Slow && report.reached && !slow && {
        let now = Utc::now();
        let health = &ready.hook.state.health;
        let in_table = health.slow_until.filter(|t| *t > now);
        let quick = matches!(report.sent, Sent::Response { .. }) && report.receiver_ms.saturating_mul(4) <= patience;
        // Only a hook found slow counts; one here only because its circuit is open has no
        // mark to lift.
        (in_table.is_some() || w.local.is_slow(&ready.hook, now))
            && w.local.answered_on_slow_lane(ready.hook.id, quick, in_table, now)
    };
    Done::Attempted { ready, report, abandoned, slow, recovered }
}

//! One event matched against 10,000 hooks of a tenant, on each backend: how long ingest
//! takes and, on AWS, which requests it makes.

use std::time::{Duration, Instant};

use chrono::Utc;
use hookbridge_aws::RequestCounter;
use hookbridge_core::hook::{Hook, HookDraft, HookState, NetworkPolicy, SecretsOwner, ValidationContext};
use hookbridge_core::ids::{HookId, TenantId};
use hookbridge_core::ports::{Backend, Receipt, ReceivedMessage};
use hookbridge_testkit::{AwsHarness, EmbeddedHarness, Harness};
use ingest::{Ingest, IngestPorts, IngestSettings};

/// One backend's result.
#[derive(Debug, Clone)]
pub struct Figures {
    pub hooks: usize,
    pub ingest: Duration,
    pub requests: Option<std::collections::BTreeMap<String, u64>>,
}

async fn hooks(backend: &Backend, tenant: &TenantId, n: usize) -> anyhow::Result<Vec<Hook>> {
    let draft: HookDraft =
        serde_json::from_value(serde_json::json!({"name": "x", "url": "https://receiver.example/h"}))?;
    let policy = NetworkPolicy::default();
    let (config, secrets) =
        draft.validate(ValidationContext { network: &policy }, None).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let now = Utc::now();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut config = config.clone();
        config.name = format!("fan-{i}").parse().unwrap_or_else(|_| config.name.clone());
        let id = HookId::generate();
        // Each blob is bound to its hook, so each hook's secrets are sealed on their own.
        let sealed = backend.sealer.seal(SecretsOwner { tenant, hook: id }, &secrets).await?;
        out.push(Hook {
            newer: Default::default(),
            id,
            tenant: tenant.clone(),
            state: HookState::new_for(&config),
            config,
            sealed,
            created_by: "bench".into(),
            created_at: now,
            updated_at: now,
            version: 1,
            revision: 1,
        });
    }
    Ok(out)
}

fn message(tenant: &TenantId) -> ReceivedMessage {
    let body = format!(
        r#"{{"version":"0","id":"9b1c2d3e-0000-4000-8000-00000000f00d","detail-type":"user.login","source":"idp","account":"1","time":"2026-11-23T10:00:00Z","region":"r","resources":[],"detail":{{"tenant":"{tenant}","n":1}}}}"#
    );
    ReceivedMessage { id: "m1".into(), body, receipt: Receipt("r1".into()), receive_count: 1, sent_at: Utc::now() }
}

async fn measure(backend: &Backend, tenant: &TenantId) -> anyhow::Result<Duration> {
    let deps = Ingest {
        ports: IngestPorts::of(backend),
        settings: IngestSettings {
            account: "1".into(),
            region: "r".into(),
            event_retention: Duration::from_secs(3600),
            routing_most_bytes: hookbridge_core::settings::Quotas::default().routing_most_bytes(),
        },
    };
    let started = Instant::now();
    let out = ingest::handle(&deps, &[message(tenant)]).await;
    anyhow::ensure!(out.failed.is_empty(), "ingest failed");
    Ok(started.elapsed())
}

/// On the embedded backend.
pub async fn embedded(n: usize) -> anyhow::Result<Figures> {
    let h = EmbeddedHarness::start().await;
    let tenant: TenantId = "fanout".parse()?;
    for hook in hooks(h.backend(), &tenant, n).await? {
        h.backend().hooks.create(&hook, u32::MAX).await?;
    }
    let ingest = measure(h.backend(), &tenant).await?;
    let queued = h.backend().delivery_queue.depth().await?.total();
    anyhow::ensure!(queued as usize == n, "{queued} deliveries queued, not {n}");
    Ok(Figures { hooks: n, ingest, requests: None })
}

/// How often the emulator's delivery queue is emptied while ingest fills it.
const PURGE_EVERY: Duration = Duration::from_millis(200);

/// Empties the delivery queue every [`PURGE_EVERY`] until `done` is set, as the worker's
/// event source mapping keeps it short on AWS. The emulator's SQS reads every message of a
/// queue on every send (it recomputes the queue's attributes for each), so a queue left to
/// fill to 10,000 makes the fan-out quadratic there; receiving and deleting at that pace
/// is slower still on the emulator, so the queue is purged (the testkit's emulator lifts
/// SQS's once-a-minute purge limit).
async fn purge(sqs: aws_sdk_sqs::Client, url: String, done: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
    while !*done.borrow() {
        sqs.purge_queue().queue_url(&url).send().await?;
        tokio::time::sleep(PURGE_EVERY).await;
    }
    Ok(())
}

/// On the AWS backend (the emulator): its time is the emulator's, so the requests matter more.
/// The delivery queue is emptied while ingest runs (by an uncounted client), as on AWS.
pub async fn aws(n: usize) -> anyhow::Result<Figures> {
    let counter = RequestCounter::default();
    let h = AwsHarness::start_counted(Some(&counter)).await;
    let tenant: TenantId = "fanout".parse()?;
    let table = hookbridge_aws::Table::new(h.clients().dynamodb.clone(), h.resources().table.clone());
    hookbridge_aws::bulk_load_hooks(&table, &hooks(h.backend(), &tenant, n).await?).await?;
    let uncounted = hookbridge_aws::Clients::new(&hookbridge_testkit::Emulator::shared().sdk_config().await);
    let (done, watched) = tokio::sync::watch::channel(false);
    let purger = tokio::spawn(purge(uncounted.sqs, h.resources().delivery_queue_url.clone(), watched));
    counter.reset();
    let ingest = measure(h.backend(), &tenant).await;
    let requests: std::collections::BTreeMap<String, u64> =
        counter.snapshot().into_iter().map(|((s, o), c)| (format!("{s}.{o}"), c)).collect();
    let _ = done.send(true);
    purger.await??;
    let ingest = ingest?;
    // Ingest succeeds only when every send was accepted; the sends carry ten each.
    let sent = requests.get("SQS.SendMessageBatch").copied().unwrap_or(0) as usize;
    anyhow::ensure!(sent == n.div_ceil(10), "{sent} sends for {n} deliveries");
    Ok(Figures { hooks: n, ingest, requests: Some(requests) })
}

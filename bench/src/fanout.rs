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
    /// For the emulator: the requests the same code makes for 10,000 hooks, derived from the
    /// measured run (every count is linear in the hooks: 25 per write batch, 10 per send
    /// batch, 1 MB query pages).
    pub requests_at_10k: Option<std::collections::BTreeMap<String, u64>>,
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
    Ok(Figures { hooks: n, ingest, requests: None, requests_at_10k: None })
}

/// On the AWS backend (the emulator): its time is the emulator's, so the requests matter more.
pub async fn aws(n: usize) -> anyhow::Result<Figures> {
    let counter = RequestCounter::default();
    let h = AwsHarness::start_counted(Some(&counter)).await;
    let tenant: TenantId = "fanout".parse()?;
    let table = hookbridge_aws::Table::new(h.clients().dynamodb.clone(), h.resources().table.clone());
    hookbridge_aws::bulk_load_hooks(&table, &hooks(h.backend(), &tenant, n).await?).await?;
    counter.reset();
    let ingest = measure(h.backend(), &tenant).await?;
    let requests: std::collections::BTreeMap<String, u64> =
        counter.snapshot().into_iter().map(|((s, o), c)| (format!("{s}.{o}"), c)).collect();
    // Ingest writes the event's envelope once whatever the fan-out (decision 0021), sends
    // carry 10 messages, and a hooks query returns up to 1 MB a page.
    let at_10k = std::collections::BTreeMap::from([
        ("DynamoDB.BatchWriteItem".to_owned(), requests.get("DynamoDB.BatchWriteItem").copied().unwrap_or(1)),
        ("DynamoDB.Query".to_owned(), requests.get("DynamoDB.Query").copied().unwrap_or(1) * 10_000 / n as u64),
        ("SQS.SendMessageBatch".to_owned(), 10_000u64.div_ceil(10)),
    ]);
    Ok(Figures { hooks: n, ingest, requests: Some(requests), requests_at_10k: Some(at_10k) })
}

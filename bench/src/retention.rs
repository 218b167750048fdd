//! The embedded database's size under steady traffic with retention enforced: simulated
//! days of deliveries and idempotency keys written through the ports as the API and the
//! worker write them (each delivery recorded with its first attempt and, as every envelope
//! under 16 KiB is, its envelope inline), the sweep run every simulated hour. The size
//! should grow for one retention period and then stay flat.

use chrono::{DateTime, Duration, Utc};
use hookbridge_core::delivery::{Attempt, DeliveryKey, DeliveryStatus, DeliveryUpdate, Opening};
use hookbridge_core::envelope::Envelope;
use hookbridge_core::ids::{DeliveryId, HookId, TenantId};
use hookbridge_embedded::EmbeddedConfig;
use hookbridge_embedded::retention::sweep;

/// The run's shape and what it measured.
#[derive(Debug, Clone)]
pub struct Figures {
    /// Events (and as many deliveries and idempotency keys) written per simulated hour.
    pub per_hour: usize,
    /// The database file's size (WAL checkpointed) at the end of each simulated week.
    pub weekly_bytes: Vec<(u32, u64)>,
    /// Rows the sweeps deleted in all.
    pub swept: usize,
}

fn envelope(tenant: &TenantId, n: u64, at: DateTime<Utc>) -> anyhow::Result<Envelope> {
    let body = format!(
        r#"{{"version":"0","id":"retention-{n}","detail-type":"user.login","source":"idp","account":"1","time":"{}","region":"r","resources":[],"detail":{{"tenant":"{tenant}","user":"u-{n}","ip":"203.0.113.7"}}}}"#,
        at.to_rfc3339()
    );
    Ok(Envelope::from_bus_json(&body, "1", "r")?)
}

fn size(config: &EmbeddedConfig) -> anyhow::Result<u64> {
    let c = rusqlite::Connection::open(&config.database)?;
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(std::fs::metadata(&config.database)?.len())
}

/// `weeks` simulated weeks at `per_hour` events an hour.
pub async fn run(per_hour: usize, weeks: u32) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let config = EmbeddedConfig::at(dir.path().join("retention.db"));
    let backend = hookbridge_embedded::init(&config).await?;
    let db = hookbridge_embedded::Db::open(&config.database)?;
    let tenant: TenantId = "acme".parse()?;
    let hook = HookId::generate();
    let start = Utc::now();
    let mut n = 0u64;
    let mut out = Figures { per_hour, weekly_bytes: Vec::new(), swept: 0 };
    for hour in 0..(weeks as i64 * 7 * 24) {
        let t = start + Duration::hours(hour);
        let mut deliveries = Vec::with_capacity(per_hour);
        for _ in 0..per_hour {
            n += 1;
            let e = envelope(&tenant, n, t)?;
            deliveries.push(DeliveryUpdate {
                delivery: DeliveryKey {
                    tenant: tenant.clone(),
                    hook_id: hook,
                    delivery_id: DeliveryId::generate(),
                    event_id: e.id.clone(),
                    event_type: "user.login".into(),
                },
                attempt: Some(Attempt {
                    attempt: 1,
                    at: t,
                    duration_ms: 12,
                    status_code: Some(200),
                    error_class: None,
                    response_excerpt: Some("{}".into()),
                }),
                status: DeliveryStatus::Succeeded,
                next_attempt_at: None,
                note: None,
                round: 0,
                at: t,
                opening: Some(Opening { created_at: t, envelope: Some(e.to_body()) }),
            });
            let key = format!("event:{}", e.id);
            backend.idempotency.claim(&tenant, &key, "fp", t, t + Duration::hours(24)).await?;
        }
        for chunk in deliveries.chunks(500) {
            backend.deliveries.record(chunk).await?;
        }
        out.swept += sweep(&db, t).await?.total();
        if (hour + 1) % (7 * 24) == 0 {
            out.weekly_bytes.push(((hour + 1) as u32 / (7 * 24), size(&config)?));
        }
    }
    Ok(out)
}

//! Creating the template's resources (for `hookbridge init --backend aws` and tests), and
//! finding them again (for `hookbridge serve --backend aws`). Every step is idempotent.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, PointInTimeRecoverySpecification, ScalarAttributeType,
    SseSpecification, TimeToLiveSpecification,
};
use aws_sdk_eventbridge::types::{DeadLetterConfig, RetryPolicy, RuleState, Target};
use aws_sdk_sqs::types::QueueAttributeName;
use hookbridge_core::topology::{QUEUE_RETENTION, QueueSpec, RULE_EVENT_AGE, RULE_RETRY_ATTEMPTS, Topology};
use hookbridge_core::{Error, Result};
use serde_json::json;

use crate::Clients;
use crate::keys::{EXPIRES_AT, PK, SK};

/// Where the created resources are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// The table's name.
    pub table: String,
    /// The bus's name.
    pub bus: String,
    /// The ingest queue's URL.
    pub ingest_queue_url: String,
    /// The delivery queue's URL (the fast lane).
    pub delivery_queue_url: String,
    /// The slow lane's URL.
    pub slow_queue_url: String,
    /// The verify queue's URL.
    pub verify_queue_url: String,
    /// The KMS key's alias.
    pub kms_key: String,
}

/// The alias of the key that seals hook secrets.
pub fn key_alias(topology: &Topology) -> String {
    format!("alias/{}-secrets", topology.table.trim_end_matches("-table"))
}

fn build<E: std::error::Error + Send + Sync + 'static>(e: E) -> Error {
    Error::backend("init.build", e)
}

/// Creates every resource of `topology` that does not exist yet.
pub async fn create(clients: &Clients, topology: &Topology) -> Result<Resources> {
    create_table(clients, &topology.table).await?;
    let mut urls = HashMap::new();
    for q in topology.queues() {
        urls.insert(q.name.clone(), create_queue(clients, q).await?);
    }
    create_bus(clients, &topology.bus).await?;
    let rules_dlq = create_rules_dlq(clients, &topology.rules_dlq).await?;
    let mut rule_arns = Vec::new();
    for rule in topology.rules() {
        let url = urls
            .get(&rule.target_queue)
            .ok_or_else(|| Error::backend("init", format!("rule targets unknown queue {}", rule.target_queue)))?;
        rule_arns.push(put_rule(clients, &topology.bus, &rule, url, Some(&rules_dlq.arn)).await?);
    }
    allow_rules(clients, &rules_dlq, &rule_arns).await?;
    let kms_key = create_key(clients, &key_alias(topology)).await?;
    let url = |q: &QueueSpec| urls.get(&q.name).cloned().unwrap_or_default();
    Ok(Resources {
        table: topology.table.clone(),
        bus: topology.bus.clone(),
        ingest_queue_url: url(&topology.ingest),
        delivery_queue_url: url(&topology.delivery),
        slow_queue_url: url(&topology.delivery_slow),
        verify_queue_url: url(&topology.verify),
        kms_key,
    })
}

/// Finds the resources of `topology` without creating anything.
pub async fn find(clients: &Clients, topology: &Topology) -> Result<Resources> {
    Ok(Resources {
        table: topology.table.clone(),
        bus: topology.bus.clone(),
        ingest_queue_url: queue_url(clients, &topology.ingest.name).await?,
        delivery_queue_url: queue_url(clients, &topology.delivery.name).await?,
        slow_queue_url: queue_url(clients, &topology.delivery_slow.name).await?,
        verify_queue_url: queue_url(clients, &topology.verify.name).await?,
        kms_key: key_alias(topology),
    })
}

/// `found`, with the table and the key a stack adopted instead of making its own, when
/// `get` (the environment) names them as the functions' configuration does
/// (`HOOKBRIDGE_TABLE`, `HOOKBRIDGE_KMS_KEY`): a stack deployed with `ExistingTableName`
/// and `ExistingKeyArn` has neither under its own prefix.
pub fn adopted(mut found: Resources, get: impl Fn(&str) -> Option<String>) -> Resources {
    let named = |var: &str| get(var).filter(|v| !v.trim().is_empty());
    if let Some(table) = named(crate::config::TABLE) {
        found.table = table;
    }
    if let Some(key) = named(crate::config::KMS_KEY) {
        found.kms_key = key;
    }
    found
}

/// A queue's URL by name.
pub async fn queue_url(clients: &Clients, name: &str) -> Result<String> {
    clients
        .sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| Error::backend("sqs.GetQueueUrl", e))?
        .queue_url
        .ok_or_else(|| Error::backend("sqs.GetQueueUrl", format!("no URL for queue {name}")))
}

async fn create_table(clients: &Clients, name: &str) -> Result<()> {
    let attr = |n: &str| {
        AttributeDefinition::builder().attribute_name(n).attribute_type(ScalarAttributeType::S).build().map_err(build)
    };
    let key = |n: &str, t: KeyType| KeySchemaElement::builder().attribute_name(n).key_type(t).build().map_err(build);
    let r = clients
        .dynamodb
        .create_table()
        .table_name(name)
        .attribute_definitions(attr(PK)?)
        .attribute_definitions(attr(SK)?)
        .key_schema(key(PK, KeyType::Hash)?)
        .key_schema(key(SK, KeyType::Range)?)
        .billing_mode(BillingMode::PayPerRequest)
        .sse_specification(SseSpecification::builder().enabled(true).build())
        .send()
        .await;
    match r {
        Ok(_) => {}
        // Made by an earlier run, which may have stopped before the settings below.
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {}
        Err(e) => return Err(Error::backend("dynamodb.CreateTable", e)),
    }
    // A new table is CREATING for a while, and refuses its settings until it is ACTIVE.
    let deadline = tokio::time::Instant::now() + TABLE_CREATION;
    wait_while_creating(clients, name, deadline).await?;
    let ttl = clients
        .dynamodb
        .describe_time_to_live()
        .table_name(name)
        .send()
        .await
        .map_err(|e| Error::backend("dynamodb.DescribeTimeToLive", e))?;
    let ttl_on = ttl.time_to_live_description().and_then(|d| d.time_to_live_status()).is_some_and(|s| {
        matches!(
            s,
            aws_sdk_dynamodb::types::TimeToLiveStatus::Enabled | aws_sdk_dynamodb::types::TimeToLiveStatus::Enabling
        )
    });
    // Turning it on again is refused, so only when it is off.
    if !ttl_on {
        clients
            .dynamodb
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder().attribute_name(EXPIRES_AT).enabled(true).build().map_err(build)?,
            )
            .send()
            .await
            .map_err(|e| Error::backend("dynamodb.UpdateTimeToLive", e))?;
    }
    // A table just made ACTIVE may still refuse this for a while ("backups are being
    // enabled"): asked again until the deadline.
    loop {
        let r = clients
            .dynamodb
            .update_continuous_backups()
            .table_name(name)
            .point_in_time_recovery_specification(
                PointInTimeRecoverySpecification::builder()
                    .point_in_time_recovery_enabled(true)
                    .build()
                    .map_err(build)?,
            )
            .send()
            .await;
        match r {
            Ok(_) => return Ok(()),
            Err(e)
                if e.as_service_error().is_some_and(|s| s.is_continuous_backups_unavailable_exception())
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            Err(e) => return Err(Error::backend("dynamodb.UpdateContinuousBackups", e)),
        }
    }
}

/// How long a new table may take to become usable.
const TABLE_CREATION: std::time::Duration = std::time::Duration::from_secs(120);

/// Waits while the table is being created. Only `CREATING` is waited for: a table being
/// updated (an index, its class) takes its settings as it is. A table just created may not
/// be found for a moment (DynamoDB's lookup is eventually consistent), which is waited
/// for too.
async fn wait_while_creating(clients: &Clients, name: &str, deadline: tokio::time::Instant) -> Result<()> {
    loop {
        let status = match clients.dynamodb.describe_table().table_name(name).send().await {
            Ok(t) => t.table().and_then(|t| t.table_status().cloned()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => {
                Some(aws_sdk_dynamodb::types::TableStatus::Creating)
            }
            Err(e) => return Err(Error::backend("dynamodb.DescribeTable", e)),
        };
        if status != Some(aws_sdk_dynamodb::types::TableStatus::Creating) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::backend(
                "dynamodb.DescribeTable",
                format!("the table {name} is still being created after 2 minutes"),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

async fn queue_arn(clients: &Clients, url: &str) -> Result<String> {
    clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| Error::backend("sqs.GetQueueAttributes", e))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| Error::backend("sqs.GetQueueAttributes", "no QueueArn"))
}

async fn ensure_queue(clients: &Clients, name: &str, attrs: HashMap<QueueAttributeName, String>) -> Result<String> {
    let r = clients.sqs.create_queue().queue_name(name).set_attributes(Some(attrs.clone())).send().await;
    match r {
        Ok(out) => out.queue_url.ok_or_else(|| Error::backend("sqs.CreateQueue", "no queue URL")),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_queue_name_exists()) => {
            let url = queue_url(clients, name).await?;
            clients
                .sqs
                .set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(attrs))
                .send()
                .await
                .map_err(|e| Error::backend("sqs.SetQueueAttributes", e))?;
            Ok(url)
        }
        Err(e) => Err(Error::backend("sqs.CreateQueue", e)),
    }
}

/// Creates a queue and its DLQ (with the redrive policy), returning the queue's URL.
pub async fn create_queue(clients: &Clients, q: &QueueSpec) -> Result<String> {
    let retention = QUEUE_RETENTION.as_secs().to_string();
    let dlq_url = ensure_queue(
        clients,
        &q.dlq,
        HashMap::from([
            (QueueAttributeName::MessageRetentionPeriod, retention.clone()),
            (QueueAttributeName::SqsManagedSseEnabled, "true".to_owned()),
        ]),
    )
    .await?;
    let dlq_arn = queue_arn(clients, &dlq_url).await?;
    let redrive = json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": q.max_receive_count }).to_string();
    ensure_queue(
        clients,
        &q.name,
        HashMap::from([
            (QueueAttributeName::VisibilityTimeout, q.visibility_timeout.as_secs().max(1).to_string()),
            (QueueAttributeName::MessageRetentionPeriod, retention),
            (QueueAttributeName::RedrivePolicy, redrive),
            (QueueAttributeName::SqsManagedSseEnabled, "true".to_owned()),
        ]),
    )
    .await
}

async fn create_bus(clients: &Clients, name: &str) -> Result<()> {
    match clients.eventbridge.create_event_bus().name(name).send().await {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_already_exists_exception()) => Ok(()),
        Err(e) => Err(Error::backend("eventbridge.CreateEventBus", e)),
    }
}

/// A queue by its URL and ARN.
struct QueueRef {
    url: String,
    arn: String,
}

/// The rules' dead-letter queue, as the template declares it.
async fn create_rules_dlq(clients: &Clients, name: &str) -> Result<QueueRef> {
    let attributes = HashMap::from([
        (QueueAttributeName::MessageRetentionPeriod, QUEUE_RETENTION.as_secs().to_string()),
        (QueueAttributeName::SqsManagedSseEnabled, "true".to_owned()),
    ]);
    let url = ensure_queue(clients, name, attributes).await?;
    let arn = queue_arn(clients, &url).await?;
    Ok(QueueRef { url, arn })
}

/// Lets the rules put what they could not deliver on their dead-letter queue.
async fn allow_rules(clients: &Clients, dlq: &QueueRef, rule_arns: &[String]) -> Result<()> {
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "rules-to-dlq",
            "Effect": "Allow",
            "Principal": { "Service": "events.amazonaws.com" },
            "Action": "sqs:SendMessage",
            "Resource": dlq.arn,
            "Condition": { "ArnEquals": { "aws:SourceArn": rule_arns } }
        }]
    });
    clients
        .sqs
        .set_queue_attributes()
        .queue_url(&dlq.url)
        .attributes(QueueAttributeName::Policy, policy.to_string())
        .send()
        .await
        .map_err(|e| Error::backend("sqs.SetQueueAttributes", e))?;
    Ok(())
}

/// Adds a rule sending matching events to a queue, with the queue policy AWS requires
/// (the emulator does not check it), and answers its ARN. With `dead_letters` (a queue's
/// ARN), the rule tries as long as EventBridge allows, then puts the event there.
pub async fn put_rule(
    clients: &Clients,
    bus: &str,
    rule: &hookbridge_core::ports::Rule,
    queue_url: &str,
    dead_letters: Option<&str>,
) -> Result<String> {
    let rule_arn = clients
        .eventbridge
        .put_rule()
        .name(&rule.name)
        .event_bus_name(bus)
        .event_pattern(rule.pattern.to_event_pattern())
        .state(RuleState::Enabled)
        .send()
        .await
        .map_err(|e| Error::backend("eventbridge.PutRule", e))?
        .rule_arn
        .unwrap_or_default();
    let arn = queue_arn(clients, queue_url).await?;
    let out = clients
        .eventbridge
        .put_targets()
        .rule(&rule.name)
        .event_bus_name(bus)
        .targets(target(&arn, dead_letters)?)
        .send()
        .await
        .map_err(|e| Error::backend("eventbridge.PutTargets", e))?;
    if out.failed_entry_count > 0 {
        return Err(Error::backend("eventbridge.PutTargets", "the queue target was refused"));
    }
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": format!("{}-to-queue", rule.name),
            "Effect": "Allow",
            "Principal": { "Service": "events.amazonaws.com" },
            "Action": "sqs:SendMessage",
            "Resource": arn,
            "Condition": { "ArnEquals": { "aws:SourceArn": rule_arn } }
        }]
    });
    clients
        .sqs
        .set_queue_attributes()
        .queue_url(queue_url)
        .attributes(QueueAttributeName::Policy, policy.to_string())
        .send()
        .await
        .map_err(|e| Error::backend("sqs.SetQueueAttributes", e))?;
    Ok(rule_arn)
}

/// A rule's target: the queue, and with `dead_letters`, the template's retry policy and
/// dead-letter queue (without them, an event the queue refused was dropped after 24 hours).
fn target(queue_arn: &str, dead_letters: Option<&str>) -> Result<Target> {
    let mut t = Target::builder().id("queue").arn(queue_arn);
    if let Some(dlq) = dead_letters {
        t = t
            .retry_policy(
                RetryPolicy::builder()
                    .maximum_retry_attempts(RULE_RETRY_ATTEMPTS)
                    .maximum_event_age_in_seconds(RULE_EVENT_AGE.as_secs() as i32)
                    .build(),
            )
            .dead_letter_config(DeadLetterConfig::builder().arn(dlq).build());
    }
    t.build().map_err(build)
}

async fn create_key(clients: &Clients, alias: &str) -> Result<String> {
    match clients.kms.describe_key().key_id(alias).send().await {
        Ok(_) => return Ok(alias.to_owned()),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found_exception()) => {}
        Err(e) => return Err(Error::backend("kms.DescribeKey", e)),
    }
    let key_id = clients
        .kms
        .create_key()
        .description("Hookbridge: seals hook secrets (envelope encryption)")
        .send()
        .await
        .map_err(|e| Error::backend("kms.CreateKey", e))?
        .key_metadata
        .map(|m| m.key_id)
        .ok_or_else(|| Error::backend("kms.CreateKey", "no key id"))?;
    clients
        .kms
        .create_alias()
        .alias_name(alias)
        .target_key_id(key_id)
        .send()
        .await
        .map_err(|e| Error::backend("kms.CreateAlias", e))?;
    Ok(alias.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adopted_table_and_key_are_taken_from_the_functions_settings() {
        let found = Resources {
            table: "new-table".into(),
            bus: "new-bus".into(),
            ingest_queue_url: "i".into(),
            delivery_queue_url: "d".into(),
            slow_queue_url: "s".into(),
            verify_queue_url: "v".into(),
            kms_key: "alias/new-secrets".into(),
        };
        let env = |var: &str| match var {
            crate::config::TABLE => Some("old-table".to_owned()),
            crate::config::KMS_KEY => Some("arn:aws:kms:us-east-1:123456789012:key/k".to_owned()),
            _ => None,
        };
        let r = adopted(found.clone(), env);
        assert_eq!((r.table.as_str(), r.kms_key.as_str()), ("old-table", "arn:aws:kms:us-east-1:123456789012:key/k"));
        assert_eq!(r.bus, "new-bus");
        let r = adopted(found, |_| Some(" ".to_owned()));
        assert_eq!((r.table.as_str(), r.kms_key.as_str()), ("new-table", "alias/new-secrets"), "blank is unset");
    }
}

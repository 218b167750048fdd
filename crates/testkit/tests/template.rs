//! `template.yaml` and `hookbridge init --backend aws` describe the same resources: both are
//! held here to the one source of truth, `Topology`, and init's result on the emulator is
//! compared with the template's settings.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use hookbridge_core::topology::{QUEUE_RETENTION, RULE_EVENT_AGE, RULE_RETRY_ATTEMPTS, Topology};
use hookbridge_testkit::Emulator;
use serde_json::{Value, json};

use hookbridge_testkit::template::{load as template, root};

/// `{"Fn::Sub": "${Prefix}-x"}` with the prefix substituted; plain strings as they are.
fn name(v: &Value, prefix: &str) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other["Fn::Sub"].as_str().unwrap().replace("${Prefix}", prefix),
    }
}

fn resources_of_type<'a>(t: &'a Value, ty: &str) -> Vec<(&'a String, &'a Value)> {
    t["Resources"].as_object().unwrap().iter().filter(|(_, r)| r["Type"] == ty).collect()
}

fn queue_named<'a>(t: &'a Value, queue: &str, prefix: &str) -> (&'a String, &'a Value) {
    resources_of_type(t, "AWS::SQS::Queue")
        .into_iter()
        .find(|(_, r)| name(&r["Properties"]["QueueName"], prefix) == queue)
        .unwrap_or_else(|| panic!("template has no queue {queue}"))
}

#[test]
fn template_names_and_settings_match_the_topology_init_creates() {
    let t = template();
    let prefix = t["Parameters"]["Prefix"]["Default"].as_str().unwrap();
    let topo = Topology::named(prefix);

    let table = &resources_of_type(&t, "AWS::DynamoDB::Table")[0].1["Properties"];
    assert_eq!(name(&table["TableName"], prefix), topo.table);
    assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(table["TimeToLiveSpecification"], json!({"AttributeName": "expires_at", "Enabled": true}));
    assert_eq!(table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], true);
    assert_eq!(
        table["KeySchema"],
        json!([{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}])
    );

    let bus = &resources_of_type(&t, "AWS::Events::EventBus")[0].1["Properties"];
    assert_eq!(name(&bus["Name"], prefix), topo.bus);

    for q in topo.queues() {
        let (_, queue) = queue_named(&t, &q.name, prefix);
        let p = &queue["Properties"];
        assert_eq!(p["VisibilityTimeout"], q.visibility_timeout.as_secs(), "{}", q.name);
        assert_eq!(p["MessageRetentionPeriod"], QUEUE_RETENTION.as_secs(), "{}", q.name);
        assert_eq!(p["SqsManagedSseEnabled"], true);
        assert_eq!(p["RedrivePolicy"]["maxReceiveCount"], q.max_receive_count, "{}", q.name);
        let dlq_id = p["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0].as_str().unwrap();
        let dlq = &t["Resources"][dlq_id]["Properties"];
        assert_eq!(name(&dlq["QueueName"], prefix), q.dlq);
        assert_eq!(dlq["MessageRetentionPeriod"], QUEUE_RETENTION.as_secs());
        // Every DLQ has an alarm.
        let alarmed = resources_of_type(&t, "AWS::CloudWatch::Alarm")
            .iter()
            .any(|(_, a)| a["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0] == dlq_id);
        assert!(alarmed, "no alarm on {}", q.dlq);
    }

    for rule in topo.rules() {
        let (_, r) = resources_of_type(&t, "AWS::Events::Rule")
            .into_iter()
            .find(|(_, r)| name(&r["Properties"]["Name"], prefix) == rule.name)
            .unwrap_or_else(|| panic!("template has no rule {}", rule.name));
        let p = &r["Properties"];
        let expected: Value = serde_json::from_str(&rule.pattern.to_event_pattern()).unwrap();
        assert_eq!(p["EventPattern"], expected, "{}", rule.name);
        let target = p["Targets"][0]["Arn"]["Fn::GetAtt"][0].as_str().unwrap();
        assert_eq!(name(&t["Resources"][target]["Properties"]["QueueName"], prefix), rule.target_queue);
        // What the bus could not hand on waits in the rules' DLQ, after as many tries as
        // init's rules make.
        let retry = &p["Targets"][0]["RetryPolicy"];
        assert_eq!(
            (&retry["MaximumRetryAttempts"], &retry["MaximumEventAgeInSeconds"]),
            (&json!(RULE_RETRY_ATTEMPTS), &json!(RULE_EVENT_AGE.as_secs())),
            "{}",
            rule.name
        );
        let dlq = p["Targets"][0]["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0].as_str().unwrap();
        assert_eq!(name(&t["Resources"][dlq]["Properties"]["QueueName"], prefix), topo.rules_dlq);
        // AWS requires a queue policy letting the rule send; the emulator does not check it.
        let allowed = resources_of_type(&t, "AWS::SQS::QueuePolicy").iter().any(|(_, pol)| {
            pol["Properties"]["Queues"][0]["Ref"] == target
                && pol["Properties"]["PolicyDocument"]["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"]
                    ["Fn::GetAtt"][0]
                    .is_string()
        });
        assert!(allowed, "no queue policy lets {} send to {target}", rule.name);
    }

    let alias = &resources_of_type(&t, "AWS::KMS::Alias")[0].1["Properties"]["AliasName"];
    assert_eq!(name(alias, prefix), hookbridge_aws::init::key_alias(&topo));
}

#[test]
fn functions_are_wired_as_designed_with_least_privilege() {
    let t = template();
    let globals = &t["Globals"]["Function"];
    assert_eq!(globals["Runtime"], "provided.al2023");
    assert_eq!(globals["Handler"], "bootstrap");
    assert_eq!(globals["Tracing"], "Active");
    let env = globals["Environment"]["Variables"].as_object().unwrap();
    for var in [
        hookbridge_aws::config::TABLE,
        hookbridge_aws::config::BUS,
        hookbridge_aws::config::INGEST_QUEUE_URL,
        hookbridge_aws::config::DELIVERY_QUEUE_URL,
        hookbridge_aws::config::SLOW_QUEUE_URL,
        hookbridge_aws::config::VERIFY_QUEUE_URL,
        hookbridge_aws::config::KMS_KEY,
        hookbridge_core::settings::RETRY_SCHEDULE,
    ] {
        assert!(env.contains_key(var), "functions lack {var}, which Config::from_env requires");
    }
    assert!(!t.to_string().contains("resolve:secretsmanager"), "a secret is resolved into some environment");
    let timeout = globals["Timeout"].as_u64().unwrap();
    let functions: HashMap<&str, &str> = HashMap::from([
        ("SubscriptionApiFunction", "subscription-api"),
        ("IngestFunction", "ingest"),
        ("DeliveryWorkerFunction", "delivery-worker"),
        ("VerifierFunction", "verifier"),
    ]);
    for (id, f) in resources_of_type(&t, "AWS::Serverless::Function") {
        let bin = functions.get(id.as_str()).unwrap_or_else(|| panic!("unexpected function {id}"));
        let p = &f["Properties"];
        // `sam build` builds it from the workspace; `make build` fills the same .aws-sam layout.
        assert_eq!(p["CodeUri"], ".");
        assert_eq!(f["Metadata"]["BuildMethod"], "rust-cargolambda", "{id}");
        assert_eq!(f["Metadata"]["BuildProperties"]["Binary"], *bin, "{id}");
        let log_group =
            p["LoggingConfig"]["LogGroup"]["Ref"].as_str().unwrap_or_else(|| panic!("{id} has no log group"));
        assert_eq!(t["Resources"][log_group]["Properties"]["RetentionInDays"]["Ref"], "LogRetentionDays", "{id}");
        // SAM's `Events: SQS` attaches AWSLambdaSQSQueueExecutionRole, receive and delete on
        // every queue in the account: the consumers are mappings of their own (below).
        for (name, ev) in p["Events"].as_object().into_iter().flatten() {
            assert_ne!(ev["Type"], "SQS", "{id}'s event {name} gives its role every queue");
        }
        for st in p["Policies"][0]["Statement"].as_array().unwrap() {
            let text = st.to_string();
            assert!(!text.contains("\"*\"") && !text.contains(":*\""), "{id} has a wildcard: {text}");
        }
    }
    assert_eq!(resources_of_type(&t, "AWS::Serverless::Function").len(), 4);

    // Each queue's consumer, and what its function's own policy grants the mapping.
    let mut consumed = Vec::new();
    for (id, m) in resources_of_type(&t, "AWS::Lambda::EventSourceMapping") {
        let m = &m["Properties"];
        let function = m["FunctionName"]["Ref"].as_str().unwrap_or_else(|| panic!("{id} names no function"));
        let queue = m["EventSourceArn"]["Fn::GetAtt"][0].as_str().unwrap();
        consumed.push((id.clone(), function.to_owned(), queue.to_owned()));
        assert_eq!(m["FunctionResponseTypes"], json!(["ReportBatchItemFailures"]), "{id}");
        // A flood never scales a consumer into the account's whole concurrency.
        assert!(m["ScalingConfig"]["MaximumConcurrency"]["Ref"].is_string(), "{id} is unbounded");
        let vis = t["Resources"][queue]["Properties"]["VisibilityTimeout"].as_u64().unwrap();
        let fn_timeout = t["Resources"][function]["Properties"]["Timeout"].as_u64().unwrap_or(timeout);
        assert!(vis >= 6 * fn_timeout, "{queue}'s visibility timeout is under six times {function}'s timeout");
        let statements = t["Resources"][function]["Properties"]["Policies"][0]["Statement"].as_array().unwrap();
        let grants = |action: &str| {
            statements.iter().any(|st| {
                st["Action"].as_array().is_some_and(|a| a.iter().any(|x| x == action))
                    && st["Resource"].to_string().contains(&format!("\"{queue}\""))
            })
        };
        for action in ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"] {
            assert!(grants(action), "{function} is not granted {action} on {queue}, which {id} needs");
        }
    }
    consumed.sort();
    // Named as SAM named the mappings it made from `Events` (function, then event): renamed,
    // an existing stack's upgrade would create a second mapping of a queue and function,
    // which Lambda refuses, and roll back.
    assert_eq!(
        consumed,
        [
            ("DeliveryWorkerFunctionQueue", "DeliveryWorkerFunction", "DeliveryQueue"),
            ("DeliveryWorkerFunctionSlowQueue", "DeliveryWorkerFunction", "SlowDeliveryQueue"),
            ("IngestFunctionQueue", "IngestFunction", "IngestQueue"),
            ("VerifierFunctionQueue", "VerifierFunction", "VerifyQueue"),
        ]
        .map(|(m, f, q)| (m.to_owned(), f.to_owned(), q.to_owned()))
    );
}

#[test]
fn only_the_api_knows_how_tokens_are_checked_and_no_key_sits_in_any_environment() {
    use hookbridge_core::settings::{JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET, JWT_SECRET_NAME, TENANT_CLAIM};
    let t = template();
    let globals = t["Globals"]["Function"]["Environment"]["Variables"].as_object().unwrap();
    for (id, f) in resources_of_type(&t, "AWS::Serverless::Function") {
        let own = f["Properties"]["Environment"]["Variables"].as_object().cloned().unwrap_or_default();
        let env: Vec<&String> = globals.keys().chain(own.keys()).collect();
        // GetFunctionConfiguration shows the environment: a key there is a key anyone may read.
        assert!(!env.iter().any(|k| *k == JWT_SECRET), "{id} has the token key in its environment");
        let knows = [JWT_SECRET_NAME, JWT_ISSUER, JWT_AUDIENCE, TENANT_CLAIM].map(|v| env.iter().any(|k| *k == v));
        let api = id == "SubscriptionApiFunction";
        assert_eq!(knows, [api; 4], "{id}: token settings belong to the API alone");
        let reads_secret = f["Properties"]["Policies"][0]["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .any(|st| st["Action"].to_string().contains("secretsmanager:GetSecretValue"));
        assert_eq!(reads_secret, api, "{id}: only the API may read the token key");
    }
}

#[test]
fn the_jwt_authorizer_guards_every_route_but_health_and_the_console_given_an_issuer_an_audience_and_no_hs256_key() {
    let t = template();
    let cond = &t["Conditions"]["HasJwtAuthorizer"]["Fn::And"];
    assert_eq!(cond[0]["Fn::Not"][0]["Fn::Equals"][0]["Ref"], "JwtIssuer");
    assert_eq!(cond[1]["Fn::Not"][0]["Fn::Equals"][0]["Ref"], "JwtAudience");
    // API Gateway's JWT authorizer passes RSA-signed issuer tokens only: in front of an API
    // that also takes HS256 tokens (`hookbridge token`), or an issuer signing with ES256 or
    // EdDSA, it refused every token the function was set up to accept.
    assert_eq!(cond[2]["Fn::Equals"], json!([{"Ref": "JwtSecretName"}, ""]));
    assert_eq!(cond[3]["Fn::Equals"], json!([{"Ref": "GatewayTokenCheck"}, "true"]));
    assert_eq!(cond.as_array().map(Vec::len), Some(4));
    let authorizer = &t["Resources"]["ApiJwtAuthorizer"];
    assert_eq!(authorizer["Condition"], "HasJwtAuthorizer");
    let jwt = &authorizer["Properties"]["JwtConfiguration"];
    assert_eq!(
        (jwt["Issuer"]["Ref"].as_str(), jwt["Audience"][0]["Ref"].as_str()),
        (Some("JwtIssuer"), Some("JwtAudience"))
    );
    let routes = resources_of_type(&t, "AWS::ApiGatewayV2::Route");
    let keys: Vec<&str> = routes.iter().map(|(_, r)| r["Properties"]["RouteKey"].as_str().unwrap()).collect();
    // docs/api.md: health and the OpenAPI document need no token, whoever issues tokens.
    assert!(keys.contains(&"GET /v1/health") && keys.contains(&"GET /v1/openapi.json"), "{keys:?}");
    assert_eq!(routes.len(), 5);
    for (_, r) in routes {
        let p = &r["Properties"];
        match p["RouteKey"].as_str().unwrap() {
            // The console's pages check their own session cookie.
            "GET /v1/health" | "GET /v1/openapi.json" | "GET /console" | "ANY /console/{proxy+}" => {
                assert_eq!(p["AuthorizationType"], "NONE")
            }
            "ANY /{proxy+}" => {
                assert_eq!(p["AuthorizationType"]["Fn::If"], json!(["HasJwtAuthorizer", "JWT", "NONE"]));
                assert_eq!(p["AuthorizerId"]["Fn::If"][1]["Ref"], "ApiJwtAuthorizer");
            }
            other => panic!("unexpected route {other}"),
        }
    }
}

/// `init` run again on a table an earlier run made but did not finish setting up (it
/// stopped, or DynamoDB refused the settings while the new table was still `CREATING`):
/// expiry and point-in-time recovery are turned on. The second run returned as soon as it
/// found the table, and the table kept every item for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_finishes_setting_up_a_table_an_earlier_run_only_made() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TimeToLiveStatus,
    };
    let prefix = format!("half{}", hookbridge_core::ids::DeliveryId::generate().to_string().to_lowercase());
    let topo = Topology::named(&prefix);
    let clients = hookbridge_aws::Clients::new(&Emulator::shared().sdk_config().await);
    let attr = |n: &str| {
        AttributeDefinition::builder().attribute_name(n).attribute_type(ScalarAttributeType::S).build().unwrap()
    };
    let key = |n: &str, t| KeySchemaElement::builder().attribute_name(n).key_type(t).build().unwrap();
    clients
        .dynamodb
        .create_table()
        .table_name(&topo.table)
        .attribute_definitions(attr("PK"))
        .attribute_definitions(attr("SK"))
        .key_schema(key("PK", KeyType::Hash))
        .key_schema(key("SK", KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    hookbridge_aws::init::create(&clients, &topo).await.unwrap();
    let ttl = clients.dynamodb.describe_time_to_live().table_name(&topo.table).send().await.unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
    assert_eq!(ttl.attribute_name(), Some("expires_at"));
    let backups = clients.dynamodb.describe_continuous_backups().table_name(&topo.table).send().await.unwrap();
    let pitr = backups.continuous_backups_description().and_then(|d| d.point_in_time_recovery_description());
    assert_eq!(
        pitr.and_then(|p| p.point_in_time_recovery_status()),
        Some(&aws_sdk_dynamodb::types::PointInTimeRecoveryStatus::Enabled)
    );
    // And again: nothing to change, nothing refused.
    hookbridge_aws::init::create(&clients, &topo).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_on_the_emulator_creates_what_the_template_declares() {
    let t = template();
    let prefix = format!("tpl{}", hookbridge_core::ids::DeliveryId::generate().to_string().to_lowercase());
    let topo = Topology::named(&prefix);
    let clients = hookbridge_aws::Clients::new(&Emulator::shared().sdk_config().await);
    let created = hookbridge_aws::init::create(&clients, &topo).await.unwrap();
    // Idempotent: a second run finds everything and changes nothing.
    assert_eq!(hookbridge_aws::init::create(&clients, &topo).await.unwrap(), created);
    for q in topo.queues() {
        let (_, declared) = queue_named(&t, &q.name, &prefix);
        let url = hookbridge_aws::init::queue_url(&clients, &q.name).await.unwrap();
        let attrs = clients
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .unwrap();
        let attrs = attrs.attributes.unwrap();
        let get = |a: QueueAttributeName| attrs.get(&a).cloned().unwrap_or_default();
        assert_eq!(get(QueueAttributeName::VisibilityTimeout), declared["Properties"]["VisibilityTimeout"].to_string());
        assert_eq!(
            get(QueueAttributeName::MessageRetentionPeriod),
            declared["Properties"]["MessageRetentionPeriod"].to_string()
        );
        let redrive: Value = serde_json::from_str(&get(QueueAttributeName::RedrivePolicy)).unwrap();
        assert_eq!(
            redrive["maxReceiveCount"].to_string(),
            declared["Properties"]["RedrivePolicy"]["maxReceiveCount"].to_string()
        );
        assert!(redrive["deadLetterTargetArn"].as_str().unwrap().ends_with(&format!(":{}", q.dlq)));
    }
    // The rules put what their queue refused on the rules' DLQ, as the template's do: run
    // against a deployed stack, init replaces the template's targets with its own.
    hookbridge_aws::init::queue_url(&clients, &topo.rules_dlq).await.expect("the rules' DLQ");
    for rule in topo.rules() {
        let targets =
            clients.eventbridge.list_targets_by_rule().rule(&rule.name).event_bus_name(&topo.bus).send().await;
        let targets = targets.unwrap().targets.unwrap_or_default();
        assert_eq!(targets.len(), 1, "{}", rule.name);
        let dlq = targets[0].dead_letter_config().and_then(|d| d.arn()).unwrap_or_default();
        assert!(dlq.ends_with(&format!(":{}", topo.rules_dlq)), "{}: {dlq:?}", rule.name);
        let retry = targets[0].retry_policy().expect("a retry policy");
        assert_eq!(
            (retry.maximum_retry_attempts(), retry.maximum_event_age_in_seconds()),
            (Some(RULE_RETRY_ATTEMPTS), Some(RULE_EVENT_AGE.as_secs() as i32))
        );
    }
}

/// The function URL is opt-in, public only because the API checks tokens itself, and
/// reaches the API function alone.
#[test]
fn the_api_function_url_is_opt_in_and_reaches_the_api_alone() {
    let t = template();
    let param = &t["Parameters"]["ApiFunctionUrl"];
    assert_eq!((param["Default"].as_str(), &param["AllowedValues"]), (Some("false"), &json!(["true", "false"])));
    assert_eq!(t["Conditions"]["HasApiFunctionUrl"]["Fn::Equals"], json!([{"Ref": "ApiFunctionUrl"}, "true"]));
    let urls = resources_of_type(&t, "AWS::Lambda::Url");
    assert_eq!(urls.len(), 1, "one function URL");
    let (_, url) = urls[0];
    assert_eq!(url["Condition"], "HasApiFunctionUrl");
    assert_eq!(url["Properties"]["AuthType"], "NONE");
    assert_eq!(url["Properties"]["TargetFunctionArn"]["Fn::GetAtt"][0], "SubscriptionApiFunction");
    let public: Vec<_> = resources_of_type(&t, "AWS::Lambda::Permission")
        .into_iter()
        .filter(|(_, p)| p["Properties"]["Principal"] == "*")
        .collect();
    let mut actions: Vec<&str> = public.iter().map(|(_, p)| p["Properties"]["Action"].as_str().unwrap()).collect();
    actions.sort_unstable();
    assert_eq!(actions, ["lambda:InvokeFunction", "lambda:InvokeFunctionUrl"]);
    for (id, p) in public {
        assert_eq!(p["Condition"], "HasApiFunctionUrl", "{id}");
        assert_eq!(p["Properties"]["FunctionName"]["Ref"], "SubscriptionApiFunction", "{id}");
        let props = &p["Properties"];
        assert!(
            props["FunctionUrlAuthType"] == "NONE" || props["InvokedViaFunctionUrl"] == true,
            "{id} grants more than calls through the URL"
        );
    }
    assert_eq!(t["Outputs"]["FunctionUrl"]["Condition"], "HasApiFunctionUrl");
    // Nothing but the function's reserved concurrency bounds it: required with it.
    let bounded = &t["Rules"]["FunctionUrlIsBounded"]["Assertions"][0]["Assert"]["Fn::Or"];
    assert_eq!(bounded[0]["Fn::Equals"], json!([{"Ref": "ApiFunctionUrl"}, "false"]));
    assert_eq!(bounded[1]["Fn::Not"][0]["Fn::Equals"], json!([{"Ref": "ApiReservedConcurrency"}, 0]));
}

#[test]
fn sample_events_name_the_queues_their_function_reads() {
    let topo = Topology::named("hookbridge");
    let reads: HashMap<&str, Vec<&str>> = HashMap::from([
        ("ingest", vec![topo.ingest.name.as_str()]),
        ("delivery-worker", vec![topo.delivery.name.as_str(), topo.delivery_slow.name.as_str()]),
        ("verifier", vec![topo.verify.name.as_str()]),
    ]);
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("events")).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some((function, queues)) = reads.iter().find(|(f, _)| file.starts_with(&format!("{f}-"))) else {
            continue;
        };
        let event: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for record in event["Records"].as_array().unwrap() {
            let arn = record["eventSourceARN"].as_str().unwrap();
            let queue = arn.rsplit(':').next().unwrap();
            assert!(queues.contains(&queue), "{file}: {function} reads {queues:?}, not {queue}");
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} records checked");
}

/// The resources a function's policy statements name, as the ports see them.
fn policy_resources(t: &Value, function: &str) -> std::collections::BTreeSet<hookbridge_core::ports::Resource> {
    use hookbridge_core::ports::Resource;
    let logical = |id: &str| match id {
        "Table" => Resource::Table,
        "Bus" => Resource::Bus,
        "IngestQueue" => Resource::IngestQueue,
        "DeliveryQueue" => Resource::DeliveryQueue,
        "SlowDeliveryQueue" => Resource::SlowQueue,
        "VerifyQueue" => Resource::VerifyQueue,
        "SecretsKey" => Resource::Key,
        "TokenKeySecret" => Resource::TokenKey,
        other => panic!("{function}'s policy names {other}, which no port stands for"),
    };
    let mut out = std::collections::BTreeSet::new();
    for st in t["Resources"][function]["Properties"]["Policies"][0]["Statement"].as_array().unwrap() {
        let targets = match &st["Resource"] {
            Value::Array(a) => a.clone(),
            one => vec![one.clone()],
        };
        for r in targets {
            // An adopted table or key: the created one is the If's first branch.
            let r = if r["Fn::If"].is_array() { r["Fn::If"][1].clone() } else { r };
            // The token key's secret is named by a parameter, so its ARN is built with Fn::Sub.
            let secret = r["Fn::Sub"].as_str().is_some_and(|a| a.contains(":secretsmanager:"));
            let id = if secret {
                "TokenKeySecret"
            } else {
                r["Fn::GetAtt"][0].as_str().or_else(|| r["Ref"].as_str()).unwrap()
            };
            out.insert(logical(id));
        }
    }
    out
}

#[test]
fn each_functions_permissions_are_exactly_what_its_ports_reach() {
    let t = template();
    for (function, resources) in [
        ("SubscriptionApiFunction", subscription_api::ApiPorts::RESOURCES),
        ("IngestFunction", ingest::IngestPorts::RESOURCES),
        ("DeliveryWorkerFunction", delivery_worker::WorkerPorts::RESOURCES),
        ("VerifierFunction", verifier::VerifierPorts::RESOURCES),
    ] {
        let declared: std::collections::BTreeSet<_> = resources.iter().copied().collect();
        assert_eq!(policy_resources(&t, function), declared, "{function}");
    }
}

/// Every function that writes a hook (a replace writes the tenant's hooks marker too) or
/// reads a tenant's hooks for routing (it gives an old counter item a marker) may update
/// an item: the emulator checks no permission, so nothing else would show it missing.
#[test]
fn the_functions_that_write_hooks_markers_may_update_items() {
    let t = template();
    for function in ["SubscriptionApiFunction", "IngestFunction", "DeliveryWorkerFunction", "VerifierFunction"] {
        let statements = t["Resources"][function]["Properties"]["Policies"][0]["Statement"].as_array().unwrap();
        let may = statements
            .iter()
            .any(|st| st["Action"].as_array().is_some_and(|a| a.contains(&json!("dynamodb:UpdateItem"))));
        assert!(may, "{function} cannot update an item");
    }
}

#[test]
fn every_alarm_reaches_someone_and_every_failure_mode_has_one() {
    let t = template();
    // CloudWatch cannot publish to a topic under the AWS-managed SNS key.
    let topic = &t["Resources"]["AlarmTopic"]["Properties"];
    assert!(
        !topic["KmsMasterKeyId"].as_str().is_some_and(|k| k.starts_with("alias/aws/")),
        "the alarm topic is encrypted with an AWS-managed key"
    );
    let alarms = resources_of_type(&t, "AWS::CloudWatch::Alarm");
    let topic = json!([{"Fn::If": ["CreateAlarmTopic", {"Ref": "AlarmTopic"}, {"Ref": "AlarmTopicArn"}]}]);
    for (id, a) in &alarms {
        assert_eq!(a["Properties"]["AlarmActions"], topic, "{id} notifies nobody");
        assert_eq!(a["Properties"]["OKActions"], topic, "{id}");
    }
    let watched = |namespace: &str, metric: &str, dimension: &str| -> Vec<String> {
        alarms
            .iter()
            .filter(|(_, a)| a["Properties"]["Namespace"] == namespace && a["Properties"]["MetricName"] == metric)
            .flat_map(|(_, a)| a["Properties"]["Dimensions"].as_array().cloned().unwrap_or_default())
            .filter(|d| d["Name"] == dimension)
            .map(|d| d["Value"].to_string())
            .collect()
    };
    for f in resources_of_type(&t, "AWS::Serverless::Function").iter().map(|(id, _)| id.as_str()) {
        let r = json!({"Ref": f}).to_string();
        assert!(watched("AWS/Lambda", "Errors", "FunctionName").contains(&r), "no errors alarm on {f}");
        assert!(watched("AWS/Lambda", "Throttles", "FunctionName").contains(&r), "no throttles alarm on {f}");
    }
    let ages = watched("AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName");
    // A queue trigger at its maximum concurrency throttles nothing, so only its queue's age
    // shows a backlog; the slow lane and the verifier have the smallest caps.
    for q in ["IngestQueue", "DeliveryQueue", "SlowDeliveryQueue", "VerifyQueue"] {
        assert!(ages.iter().any(|v| v.contains(q)), "no age alarm on {q}");
    }
    assert_eq!(watched("AWS/Events", "FailedInvocations", "RuleName").len(), 2);
    assert_eq!(watched("AWS/ApiGateway", "5xx", "ApiId").len(), 1);
    let emf = watched("Hookbridge", "DeliveriesFailed", "Stack");
    assert_eq!(emf, [json!({"Ref": "Prefix"}).to_string()], "two stacks in one account would share the alarm");
    // Rules retry, then keep what they could not deliver.
    for (id, r) in resources_of_type(&t, "AWS::Events::Rule") {
        let target = &r["Properties"]["Targets"][0];
        assert_eq!(target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0], "RuleDeadLetterQueue", "{id}");
        assert!(target["RetryPolicy"]["MaximumRetryAttempts"].as_u64().unwrap() > 0, "{id}");
    }
}

#[test]
fn logs_expire_parameters_cannot_break_a_stack_and_a_failed_create_can_be_retried() {
    let t = template();
    for (id, g) in resources_of_type(&t, "AWS::Logs::LogGroup") {
        assert_eq!(g["Properties"]["RetentionInDays"]["Ref"], "LogRetentionDays", "{id}");
    }
    // A flood of requests is refused at the stage, before it takes the account's Lambda
    // concurrency from the queue consumers.
    let throttled = &resources_of_type(&t, "AWS::ApiGatewayV2::Stage")[0].1["Properties"]["DefaultRouteSettings"];
    assert_eq!(throttled["ThrottlingRateLimit"]["Ref"], "ApiThrottleRate");
    assert_eq!(throttled["ThrottlingBurstLimit"]["Ref"], "ApiThrottleBurst");
    let stage = &resources_of_type(&t, "AWS::ApiGatewayV2::Stage")[0].1["Properties"]["AccessLogSettings"];
    let format = stage["Format"].as_str().unwrap();
    assert!(serde_json::from_str::<Value>(format).is_ok(), "access logs are JSON lines");
    assert!(!format.contains("authorization") && !format.contains("$context.requestBody"));
    for (name, p) in t["Parameters"].as_object().unwrap() {
        let constrained = p.get("AllowedPattern").is_some()
            || p.get("AllowedValues").is_some()
            || (p["Type"] == "Number" && p.get("MinValue").is_some() && p.get("MaxValue").is_some());
        assert!(constrained, "parameter {name} takes any value");
    }
    for id in ["Table", "SecretsKey"] {
        let r = &t["Resources"][id];
        assert_eq!(r["DeletionPolicy"], "RetainExceptOnCreate", "{id}");
        assert!(r["Condition"].is_string(), "{id} cannot be adopted from an earlier stack");
    }
    let outputs = t["Outputs"].as_object().unwrap();
    for o in [
        "IngestDeadLetterQueueArn",
        "DeliveryDeadLetterQueueArn",
        "SlowDeliveryDeadLetterQueueArn",
        "VerifyDeadLetterQueueArn",
        "RuleDeadLetterQueueArn",
        "TableName",
        "SecretsKeyArn",
        "EgressIps",
    ] {
        assert!(outputs.contains_key(o), "no output {o}");
    }
    // Static egress: only the functions that call receivers go into the VPC.
    for (id, f) in resources_of_type(&t, "AWS::Serverless::Function") {
        let in_vpc = f["Properties"]["VpcConfig"]["Fn::If"][0] == "UseStaticEgress";
        assert_eq!(in_vpc, id == "DeliveryWorkerFunction" || id == "VerifierFunction", "{id}");
    }
}

#[test]
fn make_builds_bootstraps_are_laid_out_as_sam_build_lays_them_out() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::copy(root().join("scripts/sam-build-layout.py"), dir.path().join("scripts/sam-build-layout.py")).unwrap();
    std::fs::copy(root().join("template.yaml"), dir.path().join("template.yaml")).unwrap();
    let functions = [
        ("SubscriptionApiFunction", "subscription-api"),
        ("IngestFunction", "ingest"),
        ("DeliveryWorkerFunction", "delivery-worker"),
        ("VerifierFunction", "verifier"),
    ];
    for (_, bin) in functions {
        let d = dir.path().join("target/lambda").join(bin);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("bootstrap"), bin).unwrap();
    }
    let out =
        std::process::Command::new("python3").arg(dir.path().join("scripts/sam-build-layout.py")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let built = std::fs::read_to_string(dir.path().join(".aws-sam/build/template.yaml")).unwrap();
    for (logical, bin) in functions {
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".aws-sam/build").join(logical).join("bootstrap")).unwrap(),
            bin
        );
        assert_eq!(built.matches(&format!("CodeUri: {logical}\n")).count(), 1, "{logical}");
    }
    assert!(!built.contains("CodeUri: .\n"));
}

/// A request's timeout (or the fast lane's patience) longer than a worker invocation can
/// give it would have every delivery that needs it handed back unattempted, for ever: the
/// template takes none over 25 s (the worker's 30 s, less its 2 s margin and its own work).
/// Whether `value` matches a template parameter's `pattern`, as Python's `re` reads it
/// (what cfn-lint uses; CloudFormation's own engine agrees on these plain patterns).
fn matches(pattern: &str, value: &str) -> bool {
    let out = std::process::Command::new(root().join(".venv/bin/python"))
        .args(["-c", "import re,sys; print(bool(re.fullmatch(sys.argv[1], sys.argv[2])))", pattern, value])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "True"
}

/// Every value a parameter's pattern lets through is one the functions accept: a value
/// they refuse would stop them at start-up, every batch failing until the queues drained
/// into their DLQs (a retry delay of `13h`, a network `10.0.0.0/99` got through before).
#[test]
fn every_value_a_parameter_lets_through_is_one_the_functions_accept() {
    use hookbridge_core::settings::{CONSOLE_CLIENT_ID, Defaults, JWT_AUDIENCE, JWT_ISSUER, JWT_SECRET, Settings};
    let t = template();
    // What every function reads, and what the API reads alone (its token settings).
    let mut env = t["Globals"]["Function"]["Environment"]["Variables"].as_object().unwrap().clone();
    let api = &t["Resources"]["SubscriptionApiFunction"]["Properties"]["Environment"]["Variables"];
    env.extend(api.as_object().unwrap().clone());
    let candidates = [
        "",
        "0s",
        "1ms",
        "5s,5m",
        "12h",
        "13h",
        "1d",
        "720m",
        "721m",
        "43200s",
        "43201s",
        "43200000ms",
        "43200001ms",
        "25s",
        "26s",
        "24h",
        "3d",
        "99999999999999999999d",
        "999999d",
        "abc",
        "10",
        "10.0.0.0/8",
        "10.0.0.1/8",
        "10.0.0.0/99",
        "1.2.3/8",
        "999.0.0.0/8",
        "fd00::/8",
        "::1/128",
        ":::/64",
        "fd00::/129",
        "10.0.0.0/8,::1/128",
        "1s,1s,1s,1s,1s,1s,1s,1s,1s,1s",
        "0",
        "1",
        "10.5",
        "1.0",
        "1e3",
        "100000",
        "1000000",
        "1000001",
        "10000000",
        "99999999999",
        "https://idp.example.com/realms/acme",
        "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123",
        "https://idp.example.com:8443/",
        "https://a:b",
        "https:///",
        "https://a:99999",
        "https://a b",
    ];
    let mut checked = 0;
    for (variable, value) in &env {
        // Parameters only: a resource's name or a pseudo parameter is no one's to type.
        let Some(param) = value["Ref"].as_str().filter(|p| t["Parameters"][p].is_object()) else { continue };
        // A Number lets `10.5` through; a list of values is checked where it is written.
        assert_ne!(
            t["Parameters"][param]["Type"], "Number",
            "{param}: the functions read it, so a String with a pattern"
        );
        let Some(pattern) = t["Parameters"][param]["AllowedPattern"].as_str() else {
            assert!(t["Parameters"][param]["AllowedValues"].is_array(), "{param} lets anything through");
            continue;
        };
        for candidate in candidates.iter().filter(|c| matches(pattern, c)) {
            let lookup = |name: &str| match name {
                n if n == variable => Some((*candidate).to_owned()),
                n if n == JWT_SECRET => Some("a-key-long-enough-for-hs256-0123456789abcdef".to_owned()),
                // The template's rules ask for an audience with an issuer, and an issuer with
                // a console client.
                n if n == JWT_AUDIENCE && [JWT_ISSUER, CONSOLE_CLIENT_ID].contains(&variable.as_str()) => {
                    Some("hookbridge".to_owned())
                }
                n if n == JWT_ISSUER && variable == CONSOLE_CLIENT_ID => {
                    Some("https://idp.example.com/realms/acme".to_owned())
                }
                _ => None,
            };
            let read = Settings::from_lookup(lookup, &Defaults::cloud());
            assert!(read.is_ok(), "{param} lets {candidate:?} through; the functions refuse it: {:?}", read.err());
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} values checked");
}

#[test]
fn request_timeouts_fit_in_one_worker_invocation() {
    let t = template();
    let worker = &t["Resources"]["DeliveryWorkerFunction"]["Properties"];
    let timeout = worker.get("Timeout").unwrap_or(&t["Globals"]["Function"]["Timeout"]);
    assert_eq!(timeout, 30, "the worker's timeout changed: change the parameters' limit with it");
    for name in ["RequestTimeout", "FastLanePatience"] {
        let pattern = t["Parameters"][name]["AllowedPattern"].as_str().unwrap().to_owned();
        let check = |value: &str| matches(&pattern, value);
        for ok in ["10s", "2s", "25s", "1500ms", "25000ms", "1ms"] {
            assert!(check(ok), "{name} refuses {ok}");
        }
        for too_long in ["26s", "28s", "30s", "1m", "25001ms", "99999ms", "0s", "0ms", "10"] {
            assert!(!check(too_long), "{name} takes {too_long}");
        }
    }
    // The verifier begins a round of checks only if it can end in the invocation (the
    // challenge, then the OAuth token fetch, at the longest RequestTimeout allowed): a
    // shorter timeout would check nothing, handing every check back.
    let verifier = &t["Resources"]["VerifierFunction"]["Properties"]["Timeout"];
    let longest = hookbridge_outbound::OutboundSettings { timeout: Duration::from_secs(25), ..Default::default() };
    let round = verifier::round_time(&longest).as_secs() + 1;
    assert!(
        verifier.as_u64().is_some_and(|s| s >= round + 2),
        "the verifier's timeout is {verifier}, a round {round} s"
    );
    // An API request reads at most four of the issuer's documents in a row (the console's
    // sign-in callback on a fresh process), each bounded by DOCUMENT_TIMEOUT, and must
    // answer before Lambda ends it (a timeout also discards what the process knew of the
    // issuer's keys).
    let api = &t["Resources"]["SubscriptionApiFunction"]["Properties"]["Timeout"];
    let documents = 4 * hookbridge_outbound::DOCUMENT_TIMEOUT.as_secs();
    assert!(api.as_u64().is_some_and(|s| s >= documents + 2), "the API's timeout is {api}");
    // The API's AWS calls are bounded to fit in it (subscription-api's `hung_call` test runs
    // a request within this timeout).
    assert_eq!(api.as_u64(), Some(hookbridge_aws::API_FUNCTION_TIMEOUT.as_secs()), "the API's timeout is {api}");
}

/// A tenant's hooks are all read, and an event sent to each, within one ingest invocation:
/// the template may not allow more hooks per tenant than the largest fan-out the benchmark
/// measured (one event to 10,000 hooks). It allowed a million, far past what one invocation can hold
/// in memory or send in its time, and a batch that outlives its invocation is sent again
/// from the start.
#[test]
fn a_tenants_hooks_are_bounded_by_the_largest_fan_out_measured() {
    let t = template();
    let pattern = t["Parameters"]["MaxHooksPerTenant"]["AllowedPattern"].as_str().unwrap().to_owned();
    assert!(matches(&pattern, "10000"), "MaxHooksPerTenant refuses the fan-out measured");
    for past in ["10001", "20000", "100000", "1000000"] {
        assert!(!matches(&pattern, past), "MaxHooksPerTenant allows {past}");
    }
    let ingest = &t["Resources"]["IngestFunction"]["Properties"];
    let memory = ingest.get("MemorySize").unwrap_or(&t["Globals"]["Function"]["MemorySize"]);
    let timeout = ingest.get("Timeout").unwrap_or(&t["Globals"]["Function"]["Timeout"]);
    assert_eq!((memory, timeout), (&json!(256), &json!(30)), "ingest's size changed: measure the fan-out again");
}

/// A rule's condition over the parameters' values (`Fn::Or`, `Fn::And`, `Fn::Not`,
/// `Fn::Equals` and `Ref`, what the template's rules use).
fn holds(c: &Value, params: &HashMap<&str, String>) -> bool {
    let all = |k: &str| c[k].as_array().unwrap().iter().map(|x| holds(x, params)).collect::<Vec<_>>();
    if c.get("Fn::Or").is_some() {
        all("Fn::Or").into_iter().any(|b| b)
    } else if c.get("Fn::And").is_some() {
        all("Fn::And").into_iter().all(|b| b)
    } else if c.get("Fn::Not").is_some() {
        !all("Fn::Not")[0]
    } else {
        // CloudFormation compares as strings: a number parameter's `0` equals `0`.
        let value = |v: &Value| match v.get("Ref") {
            Some(r) => params.get(r.as_str().unwrap()).cloned().unwrap_or_default(),
            None => v.as_str().map_or_else(|| v.to_string(), str::to_owned),
        };
        let eq = c["Fn::Equals"].as_array().unwrap_or_else(|| panic!("a condition the test cannot read: {c}"));
        value(&eq[0]) == value(&eq[1])
    }
}

/// Parameter combinations the functions cannot run with are refused at deploy: no way to
/// check tokens (the API answering every request with an error), an adopted table with a
/// new key (its hooks' secrets unreadable), a domain without its certificate, a function
/// URL with nothing to bound it, an issuer without an audience (the API refuses to start).
#[test]
fn parameters_the_functions_cannot_run_with_together_are_refused() {
    let t = template();
    let rules = t["Rules"].as_object().expect("the template has rules");
    let refused = |set: &[(&str, &str)]| {
        let mut params: HashMap<&str, String> = HashMap::new();
        for (name, p) in t["Parameters"].as_object().unwrap() {
            let default = match &p["Default"] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                number => number.to_string(),
            };
            params.insert(name.as_str(), default);
        }
        params.extend(set.iter().map(|(k, v)| (*k, (*v).to_owned())));
        rules
            .iter()
            .filter(|(_, r)| r["Assertions"].as_array().unwrap().iter().any(|a| !holds(&a["Assert"], &params)))
            .map(|(name, _)| name.clone())
            .collect::<Vec<_>>()
    };
    let key = "arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-0000-0000-000000000000";
    let cert = "arn:aws:acm:eu-west-1:123456789012:certificate/00000000-0000-0000-0000-000000000000";
    assert_eq!(refused(&[]), Vec::<String>::new(), "the defaults deploy");
    assert_eq!(refused(&[("JwtSecretName", "")]), ["TokensCanBeChecked"]);
    let issuer = ("JwtIssuer", "https://idp.example.com");
    assert_eq!(refused(&[("JwtSecretName", ""), issuer]), ["IssuerTokensNameTheirAudience"]);
    assert_eq!(refused(&[issuer]), ["IssuerTokensNameTheirAudience"], "beside a secret too");
    assert!(refused(&[("JwtSecretName", ""), issuer, ("JwtAudience", "hookbridge")]).is_empty());
    let client = ("ConsoleClientId", "hookbridge-console");
    assert_eq!(refused(&[client]), ["ConsoleSignsInThroughTheIssuer"]);
    assert!(refused(&[client, issuer, ("JwtAudience", "hookbridge")]).is_empty());
    assert_eq!(refused(&[("ExistingTableName", "hookbridge")]), ["AdoptedTableKeepsItsKey"]);
    assert!(refused(&[("ExistingKeyArn", key)]).is_empty(), "a new table sealed with a key of old");
    assert!(refused(&[("ExistingTableName", "hookbridge"), ("ExistingKeyArn", key)]).is_empty());
    assert_eq!(refused(&[("DomainName", "hooks.example.com")]), ["DomainHasItsCertificate"]);
    assert_eq!(refused(&[("CertificateArn", cert)]), ["DomainHasItsCertificate"]);
    assert!(refused(&[("DomainName", "hooks.example.com"), ("CertificateArn", cert)]).is_empty());
    assert_eq!(refused(&[("ApiFunctionUrl", "true")]), ["FunctionUrlIsBounded"]);
    assert!(refused(&[("ApiFunctionUrl", "true"), ("ApiReservedConcurrency", "50")]).is_empty());
}

/// The functions on the egress subnets wait for those subnets' default routes and their
/// route tables: switched on in a live stack, they were moved onto the subnets as soon as
/// the subnets existed, minutes before the NAT gateways the routes need, and reached no
/// receiver meanwhile.
#[test]
fn functions_on_the_egress_subnets_wait_for_their_way_out() {
    let t = template();
    let mut on_subnets = Vec::new();
    for (id, f) in resources_of_type(&t, "AWS::Serverless::Function") {
        if f["Properties"]["VpcConfig"].is_null() {
            continue;
        }
        on_subnets.push(id.as_str());
        let waits = &f["Properties"]["Environment"]["Variables"]["EGRESS_ROUTES"]["Fn::If"];
        assert_eq!(waits[0], "UseStaticEgress", "{id}");
        let refs: Vec<&str> =
            waits[1]["Fn::Join"][1].as_array().unwrap().iter().map(|r| r["Ref"].as_str().unwrap()).collect();
        for needed in [
            "EgressPrivateDefaultRouteA",
            "EgressPrivateDefaultRouteB",
            "EgressPrivateSubnetARoutes",
            "EgressPrivateSubnetBRoutes",
            "EgressPublicDefaultRoute",
            "EgressPublicSubnetARoutes",
            "EgressPublicSubnetBRoutes",
        ] {
            assert!(refs.contains(&needed), "{id} does not wait for {needed}");
        }
    }
    on_subnets.sort_unstable();
    assert_eq!(on_subnets, ["DeliveryWorkerFunction", "VerifierFunction"]);
}

//! The AWS backend: every port on DynamoDB (one table), SQS, EventBridge and KMS through
//! the AWS SDK. The endpoint is overridden only by the SDK's standard `AWS_ENDPOINT_URL`,
//! so the same code runs in a real account and against the emulator.

mod adapters;
pub mod config;
mod deliveries;
mod dynamo;
mod event_types;
mod eventbridge;
mod events;
mod hook_lists;
mod hooks;
mod idempotency;
pub mod init;
mod keys;
mod kms;
pub mod lambda;
mod limiter;
mod portal;
mod replays;
mod requests;
mod sqs;
pub mod telemetry;
mod token_key;

use hookbridge_core::ports::Backend;

pub use adapters::Adapters;
pub use config::Config;
pub use dynamo::Table;
pub use eventbridge::EventBridgeBus;
pub use hooks::{bulk_load_hooks, raw_hook_item};
pub use idempotency::ClaimPlace;
pub use init::Resources;
pub use kms::KmsSealer;
pub use requests::RequestCounter;
pub use sqs::SqsQueue;
pub use token_key::{REREAD_AFTER, SecretsManagerKey};

/// The most requests one call (a large send, a batch write, a publish) keeps under way at
/// once. Sending every chunk at once made a 10,000-delivery replay open about 1,000
/// connections (Lambda allows 1,024 open files); eight keep such a send to a few seconds.
pub const REQUESTS_IN_FLIGHT: usize = 8;

/// The SDK clients, built once per process (per Lambda cold start) and shared.
#[derive(Debug, Clone)]
pub struct Clients {
    /// DynamoDB.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    /// EventBridge.
    pub eventbridge: aws_sdk_eventbridge::Client,
    /// KMS.
    pub kms: aws_sdk_kms::Client,
    /// Secrets Manager (the API's token key).
    pub secretsmanager: aws_sdk_secretsmanager::Client,
}

impl Clients {
    /// Clients from an SDK configuration.
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
            eventbridge: aws_sdk_eventbridge::Client::new(sdk),
            kms: aws_sdk_kms::Client::new(sdk),
            secretsmanager: aws_sdk_secretsmanager::Client::new(sdk),
        }
    }

    /// Clients from the environment's standard AWS configuration (region, credentials,
    /// `AWS_ENDPOINT_URL`).
    pub async fn from_env() -> Self {
        Self::new(&aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await)
    }
}

/// The ports over these resources.
pub fn backend(clients: &Clients, r: &Resources) -> Backend {
    Adapters::of_clients(clients, r).backend()
}

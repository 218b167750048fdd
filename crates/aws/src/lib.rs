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

use std::time::Duration;

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

/// The longest one try of an AWS call may take. The SDK bounds only the connection: a call
/// whose request was taken and never answered (a half-open connection) waited until the
/// Lambda invocation timed out, and its whole batch came back, deliveries already sent
/// included. DynamoDB, SQS, KMS and EventBridge answer in milliseconds; past this the
/// SDK tries again on another connection.
pub const CALL_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest an AWS call may take with the SDK's retries.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(12);
/// The SDK's own connect timeout, kept (a timeout configuration replaces it).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

/// The API function's timeout, as `template.yaml` sets it (a test holds them equal).
pub const API_FUNCTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one try of an AWS call may take while a caller waits on the API.
pub const REQUEST_CALL_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest an AWS call may take, with the SDK's retries, while a caller waits on the
/// API. A request's calls come one after another, and after one that fails the request
/// still frees what it claimed (its `Idempotency-Key`, its events' ids): both must end
/// within [`API_FUNCTION_TIMEOUT`]. Held to [`CALL_TIMEOUT`], a request whose call hung was
/// ended by Lambda: the caller got the gateway's own `500`, and its claims turned every
/// retry away with `409` for five minutes.
pub const REQUEST_CALL_TIMEOUT: Duration = Duration::from_secs(4);

/// Every call's bounds in the functions that work through queues: [`CALL_ATTEMPT_TIMEOUT`],
/// [`CALL_TIMEOUT`].
pub fn call_timeouts() -> aws_config::timeout::TimeoutConfig {
    bounds(CALL_ATTEMPT_TIMEOUT, CALL_TIMEOUT)
}

/// Every call's bounds in the API function: [`REQUEST_CALL_ATTEMPT_TIMEOUT`],
/// [`REQUEST_CALL_TIMEOUT`].
pub fn request_call_timeouts() -> aws_config::timeout::TimeoutConfig {
    bounds(REQUEST_CALL_ATTEMPT_TIMEOUT, REQUEST_CALL_TIMEOUT)
}

fn bounds(attempt: Duration, whole: Duration) -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(attempt)
        .operation_timeout(whole)
        .build()
}

/// The SDK's configuration loader as every client here is made with: the environment's
/// standard settings (region, credentials, `AWS_ENDPOINT_URL`), every call bounded
/// ([`call_timeouts`]).
pub fn sdk_loader() -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).timeout_config(call_timeouts())
}

/// The configuration [`sdk_loader`] loads.
pub async fn sdk_config_from_env() -> aws_config::SdkConfig {
    sdk_loader().load().await
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
    /// `AWS_ENDPOINT_URL`), every call bounded.
    pub async fn from_env() -> Self {
        Self::new(&sdk_config_from_env().await)
    }

    /// The API function's clients: as [`Clients::from_env`], every call held to
    /// [`request_call_timeouts`].
    pub async fn for_requests_from_env() -> Self {
        Self::new(&sdk_loader().timeout_config(request_call_timeouts()).load().await)
    }
}

/// The ports over these resources.
pub fn backend(clients: &Clients, r: &Resources) -> Backend {
    Adapters::of_clients(clients, r).backend()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The API function's clients hold each call to the request bounds, which leave a
    /// request that met a hung call time to free its claims and answer inside the function
    /// (subscription-api's `hung_call` test runs one); not the queue functions' bounds.
    #[tokio::test]
    async fn the_api_functions_calls_end_well_within_its_timeout() {
        assert!(2 * REQUEST_CALL_TIMEOUT < API_FUNCTION_TIMEOUT, "a hung call and the release after it");
        let clients = Clients::for_requests_from_env().await;
        let bounds = |t: Option<&aws_config::timeout::TimeoutConfig>| {
            t.map(|t| (t.operation_attempt_timeout(), t.operation_timeout()))
        };
        let wanted = Some((Some(REQUEST_CALL_ATTEMPT_TIMEOUT), Some(REQUEST_CALL_TIMEOUT)));
        assert_eq!(bounds(clients.dynamodb.config().timeout_config()), wanted);
        assert_eq!(bounds(clients.sqs.config().timeout_config()), wanted);
        assert_eq!(bounds(clients.kms.config().timeout_config()), wanted);
    }
}

//! Counting the AWS requests the platform makes, by service and operation, with an SDK
//! interceptor: the measure behind the cost model (requests per delivery).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::client::orchestrator::Metadata;

/// Counts every request sent (retries included), by `(service, operation)`, and the most
/// that were under way at once.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    counts: Arc<Mutex<BTreeMap<(String, String), u64>>>,
    in_flight: Arc<AtomicUsize>,
    most_in_flight: Arc<AtomicUsize>,
    eventually_consistent: Arc<Mutex<Vec<String>>>,
    items_queried: Arc<AtomicUsize>,
}

impl RequestCounter {
    /// The counts so far.
    pub fn snapshot(&self) -> BTreeMap<(String, String), u64> {
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Forgets the counts so far.
    pub fn reset(&self) {
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        self.most_in_flight.store(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The DynamoDB reads sent without `ConsistentRead` (by operation), ever. Every stage
    /// reads what another stage just wrote, so there should be none.
    pub fn eventually_consistent_reads(&self) -> Vec<String> {
        self.eventually_consistent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The items DynamoDB queries read (their `ScannedCount`), ever: what a listing costs
    /// in read units and holds in memory.
    pub fn items_queried(&self) -> usize {
        self.items_queried.load(Ordering::Relaxed)
    }

    /// The most requests that were under way at once since the last reset.
    pub fn most_in_flight(&self) -> usize {
        self.most_in_flight.load(Ordering::Relaxed)
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "hookbridge.RequestCounter"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.most_in_flight.fetch_max(now, Ordering::Relaxed);
        Ok(())
    }

    fn read_after_attempt(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        if let Ok(out) = context.output_or_error()
            && let Some(q) = out.downcast_ref::<aws_sdk_dynamodb::operation::query::QueryOutput>()
        {
            self.items_queried.fetch_add(q.scanned_count().max(0) as usize, Ordering::Relaxed);
        }
        Ok(())
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let (service, operation) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().to_owned(), m.name().to_owned()))
            .unwrap_or_else(|| ("unknown".to_owned(), "unknown".to_owned()));
        if matches!(operation.as_str(), "GetItem" | "BatchGetItem" | "Query" | "Scan") {
            let body = context.request().body().bytes().unwrap_or_default();
            if !String::from_utf8_lossy(body).contains("\"ConsistentRead\":true") {
                self.eventually_consistent
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(operation.clone());
            }
        }
        *self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((service, operation))
            .or_default() += 1;
        Ok(())
    }
}

impl crate::Clients {
    /// Clients whose every request is counted by `counter`.
    pub fn counted(sdk: &aws_config::SdkConfig, counter: &RequestCounter) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(sdk).interceptor(counter.clone()).build(),
            ),
            sqs: aws_sdk_sqs::Client::from_conf(
                aws_sdk_sqs::config::Builder::from(sdk).interceptor(counter.clone()).build(),
            ),
            eventbridge: aws_sdk_eventbridge::Client::from_conf(
                aws_sdk_eventbridge::config::Builder::from(sdk).interceptor(counter.clone()).build(),
            ),
            kms: aws_sdk_kms::Client::from_conf(
                aws_sdk_kms::config::Builder::from(sdk).interceptor(counter.clone()).build(),
            ),
            secretsmanager: aws_sdk_secretsmanager::Client::from_conf(
                aws_sdk_secretsmanager::config::Builder::from(sdk).interceptor(counter.clone()).build(),
            ),
        }
    }
}

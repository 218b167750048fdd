use delivery_worker::{BatchContext, Worker, WorkerPorts, WorkerSettings};
use hookbridge_aws::{Adapters, Config};
use hookbridge_core::hook::Lane;
use hookbridge_outbound::{Outbound, OutboundSettings};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hookbridge_aws::telemetry::init(hookbridge_aws::telemetry::Output::Stdout)?;
    let config = Config::from_env()?;
    // Only the ports it uses: a whole backend would bring every store's code.
    let aws = Adapters::from_env(config.resources.clone()).await;
    let ports = WorkerPorts {
        hooks: aws.hook_access(),
        deliveries: aws.deliveries(),
        events: aws.events(),
        lanes: aws.lanes(),
        bus: aws.bus(),
        sealer: aws.sealer(),
        limiter: aws.limiter(),
        // DynamoDB and SQS share no transaction: the worker writes in turn.
        settlement: None,
    };
    let worker = Worker::new(
        ports,
        Outbound::new(OutboundSettings::from_settings(&config.settings))?,
        WorkerSettings {
            emf_stack: Some(config.settings.topology.prefix.clone()),
            ..WorkerSettings::from_settings(&config.settings)
        },
    );
    let slow_queue = config.resources.slow_queue_url.rsplit('/').next().unwrap_or_default().to_owned();
    hookbridge_aws::lambda::run_sqs(|batch, deadline| {
        let worker = &worker;
        let lane = if batch.queue.as_deref() == Some(slow_queue.as_str()) { Lane::Slow } else { Lane::Fast };
        async move {
            let ctx = BatchContext { lane, deadline: Some(deadline), settle: None };
            delivery_worker::handle(worker, &batch.messages, ctx).await
        }
    })
    .await
}

use delivery_worker::{BatchContext, Worker, WorkerPorts, WorkerSettings};
use hookbridge_aws::{Clients, Config};
use hookbridge_core::hook::Lane;
use hookbridge_outbound::{Outbound, OutboundSettings};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hookbridge_aws::telemetry::init(hookbridge_aws::telemetry::Output::Stdout)?;
    let config = Config::from_env()?;
    let clients = Clients::from_env().await;
    let worker = Worker::new(
        WorkerPorts::of(&hookbridge_aws::backend(&clients, &config.resources)),
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

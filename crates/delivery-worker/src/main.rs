use delivery_worker::{Worker, WorkerSettings};
use hookbridge_aws::{Clients, Config};
use hookbridge_outbound::{Outbound, OutboundSettings};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hookbridge_aws::telemetry::init();
    let config = Config::from_env()?;
    let clients = Clients::from_env().await;
    let worker = Worker {
        backend: hookbridge_aws::backend(&clients, &config.resources),
        outbound: Outbound::new(OutboundSettings::from_settings(&config.settings))?,
        settings: WorkerSettings { emf_metrics: true, ..WorkerSettings::from_settings(&config.settings) },
    };
    hookbridge_aws::lambda::run_sqs(|records| {
        let deps = &worker;
        async move { delivery_worker::handle(deps, &records).await }
    })
    .await
}

use hookbridge_aws::{Clients, Config};
use ingest::{Ingest, IngestPorts, IngestSettings};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hookbridge_aws::telemetry::init(hookbridge_aws::telemetry::Output::Stdout)?;
    let config = Config::from_env()?;
    let clients = Clients::from_env().await;
    let deps = Ingest {
        ports: IngestPorts::of(&hookbridge_aws::backend(&clients, &config.resources)),
        settings: IngestSettings::from_settings(&config.settings),
    };
    hookbridge_aws::lambda::run_sqs(|records, deadline| {
        let deps = &deps;
        async move { ingest::handle_within(deps, &records.messages, Some(deadline.into_std())).await }
    })
    .await
}

use hookbridge_aws::{Adapters, Config};
use ingest::{Ingest, IngestPorts, IngestSettings};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hookbridge_aws::telemetry::init(hookbridge_aws::telemetry::Output::Stdout)?;
    let config = Config::from_env()?;
    // Only the ports it uses: a whole backend would bring every store's code.
    let aws = Adapters::from_env(config.resources.clone()).await;
    let deps = Ingest {
        ports: IngestPorts {
            hooks: aws.hooks(),
            deliveries: aws.deliveries(),
            events: aws.events(),
            ingest: aws.ingest_queue(),
            replays: aws.replays(),
            lanes: aws.lanes(),
        },
        settings: IngestSettings::from_settings(&config.settings),
    };
    hookbridge_aws::lambda::run_sqs(|records, deadline| {
        let deps = &deps;
        async move { ingest::handle_within(deps, &records.messages, Some(deadline.into_std())).await }
    })
    .await
}

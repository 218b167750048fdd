use hookbridge_aws::{Clients, Config};
use hookbridge_outbound::{Outbound, OutboundSettings};
use verifier::{Verifier, VerifierPorts};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hookbridge_aws::telemetry::init(hookbridge_aws::telemetry::Output::Stdout)?;
    let config = Config::from_env()?;
    let clients = Clients::from_env().await;
    let verifier = Verifier {
        ports: VerifierPorts::of(&hookbridge_aws::backend(&clients, &config.resources)),
        outbound: Outbound::new(OutboundSettings::from_settings(&config.settings))?,
        account: config.settings.account.clone(),
        region: config.settings.region.clone(),
    };
    hookbridge_aws::lambda::run_sqs(|records, _deadline| {
        let deps = &verifier;
        async move { verifier::handle(deps, &records.messages).await }
    })
    .await
}

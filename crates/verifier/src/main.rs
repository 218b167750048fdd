use hookbridge_aws::{Adapters, Config};
use hookbridge_outbound::{Outbound, OutboundSettings};
use verifier::{Verifier, VerifierPorts};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hookbridge_aws::telemetry::init(hookbridge_aws::telemetry::Output::Stdout)?;
    let config = Config::from_env()?;
    // Only the ports it uses: a whole backend would bring every store's code.
    let aws = Adapters::from_env(config.resources.clone()).await;
    let verifier = Verifier {
        ports: VerifierPorts {
            hooks: aws.hook_access(),
            sealer: aws.sealer(),
            bus: aws.bus(),
            verify: aws.verify_queue(),
        },
        outbound: Outbound::new(OutboundSettings::from_settings(&config.settings))?,
        account: config.settings.account.clone(),
        region: config.settings.region.clone(),
    };
    hookbridge_aws::lambda::run_sqs(|records, deadline| {
        let deps = &verifier;
        async move { verifier::handle_within(deps, &records.messages, Some(deadline.into_std())).await }
    })
    .await
}

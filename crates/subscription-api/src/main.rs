use std::sync::Arc;

use hookbridge_aws::{Clients, Config, SecretsManagerKey};
use hookbridge_core::ports::KeySource;
use hookbridge_outbound::{Outbound, OutboundSettings};
use subscription_api::{Api, ApiPorts, ApiSettings, Tokens, router};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    hookbridge_aws::telemetry::init(hookbridge_aws::telemetry::Output::Stdout)?;
    let config = Config::from_env()?;
    let clients = Clients::for_requests_from_env().await;
    let s = &config.settings;
    let key = s
        .tokens
        .hs256_secret_name
        .as_ref()
        .map(|name| Arc::new(SecretsManagerKey::new(clients.secretsmanager.clone(), name)) as Arc<dyn KeySource>);
    // Read at cold start: a missing or unreadable secret fails the start, not every request.
    if let Some(k) = &key {
        k.key().await?;
    }
    let tokens = Tokens::from_settings(&s.tokens, key, &Outbound::new(OutboundSettings::from_settings(s))?)?;
    let ports = ApiPorts::of(&hookbridge_aws::backend(&clients, &config.resources));
    lambda_http::run(router(Api::new(ports, ApiSettings::from_settings(s, tokens)))).await
}

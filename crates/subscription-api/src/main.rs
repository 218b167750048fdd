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
    // Read at cold start, so that the first requests do not wait on it. Unreadable (not
    // made, its permission taken away, Secrets Manager out), it is said here and the function
    // starts anyway: a failed start answered every request 500, `/v1/health` and issuer
    // tokens too, where only an HS256 token needs the key, and is answered 503 until the key
    // can be read.
    if let (Some(k), Some(name)) = (&key, s.tokens.hs256_secret_name.as_deref())
        && let Err(e) = k.key().await
    {
        tracing::error!(secret = name, error = %e, "the HS256 token key could not be read; HS256 tokens are answered 503 until it can be");
    }
    let tokens = Tokens::from_settings(&s.tokens, key, &Outbound::new(OutboundSettings::from_settings(s))?)?;
    let ports = ApiPorts::of(&hookbridge_aws::backend(&clients, &config.resources));
    lambda_http::run(router(Api::new(ports, ApiSettings::from_settings(s, tokens)))).await
}

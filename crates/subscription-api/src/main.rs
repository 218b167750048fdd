use hookbridge_aws::{Clients, Config};
use subscription_api::{Api, ApiPorts, ApiSettings, router};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    hookbridge_aws::telemetry::init(hookbridge_aws::telemetry::Output::Stdout)?;
    let config = Config::from_env()?;
    let clients = Clients::from_env().await;
    let ports = ApiPorts::of(&hookbridge_aws::backend(&clients, &config.resources));
    let api = Api::new(ports, ApiSettings::from_settings(&config.settings));
    lambda_http::run(router(api)).await
}

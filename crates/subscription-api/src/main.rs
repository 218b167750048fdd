use hookbridge_aws::{Clients, Config};
use subscription_api::{Api, ApiSettings, router};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    hookbridge_aws::telemetry::init();
    let config = Config::from_env()?;
    let clients = Clients::from_env().await;
    let api =
        Api::new(hookbridge_aws::backend(&clients, &config.resources), ApiSettings::from_settings(&config.settings));
    lambda_http::run(router(api)).await
}

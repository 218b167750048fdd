use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    hookbridge_aws::telemetry::init(hookbridge_aws::telemetry::Output::Stderr)?;
    hookbridge_local::cli::run(hookbridge_local::cli::Cli::parse()).await
}

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = hookbridge_local::cli::Cli::parse();
    hookbridge_local::runtime::for_command(&cli)?.block_on(async {
        hookbridge_aws::telemetry::init(hookbridge_aws::telemetry::Output::Stderr)?;
        hookbridge_local::cli::run(cli).await
    })
}

//! `make run-lambda`: the platform as Lambda runs it, on this machine — the four compiled
//! function binaries behind a local Runtime API, SQS event sources and an HTTP API front,
//! against the emulator.

use std::net::SocketAddr;

use hookbridge_testkit::lambda::{LambdaOptions, LambdaStack};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut opts = LambdaOptions::local();
    if let Some(listen) = arg("--listen") {
        opts.listen = listen.parse::<SocketAddr>()?;
    }
    if let Some(dir) = arg("--bin-dir") {
        opts.bin_dir = dir.into();
    }
    opts.prefix = arg("--prefix").unwrap_or_else(|| "hookbridge-lambda".to_owned());
    let stack = LambdaStack::start(opts).await?;
    let claims = serde_json::json!({
        "sub": "local-operator",
        "tenant": "demo",
        "scope": "hooks:read hooks:write events:publish",
        "exp": chrono::Utc::now().timestamp() + 30 * 86_400,
    });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(stack.token_key().as_bytes()),
    )?;
    println!(
        "\nHookbridge as Lambda runs it: the four function binaries, the emulator at {}\n\nAPI        http://{}\nToken      tenant \"demo\", all scopes, valid 30 days:\n\n  export HB_TOKEN={token}\n\nTry        curl -s http://{}/v1/hooks -H \"Authorization: Bearer $HB_TOKEN\"\nLogs       HOOKBRIDGE_LAMBDA_ECHO=1 prints every function's output here\n",
        hookbridge_testkit::Emulator::shared().endpoint(),
        stack.addr(),
        stack.addr()
    );
    tokio::signal::ctrl_c().await?;
    eprintln!("hookbridge-lambda: stopping");
    Ok(())
}

//! `webhooks` alone, as Cloud Run runs it.

use clap::Parser;

#[derive(Parser)]
#[command(name = "webhooks")]
struct Cli {
    #[command(flatten)]
    settings: stockroom_runtime::Settings,
    #[command(flatten)]
    webhooks: stockroom_webhooks::WebhookSettings,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let cli = Cli::parse();
    let webhooks = cli.webhooks;
    stockroom_runtime::serve_function(
        "webhooks",
        cli.settings,
        move |s| stockroom_webhooks::router(s, &webhooks),
        stockroom_runtime::Background::default(),
        stockroom_gcp::with_pubsub,
    )
    .await
}

//! `stock-updates` alone, as Cloud Run runs it.

use clap::Parser;

#[derive(Parser)]
#[command(name = "stock-updates")]
struct Cli {
    #[command(flatten)]
    settings: stockroom_runtime::Settings,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let cli = Cli::parse();
    // Its own outbox, and the commands the webhooks function queued (locally; in the cloud they come by push).
    let background = stockroom_runtime::Background {
        relay: true,
        commands: Some(stockroom_stock_updates::queued_handler()),
        ..Default::default()
    };
    stockroom_runtime::serve_function(
        "stock-updates",
        cli.settings,
        stockroom_stock_updates::router,
        background,
        stockroom_gcp::with_pubsub,
    )
    .await
}

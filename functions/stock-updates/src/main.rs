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
    let handler = Some(stockroom_stock_updates::queued_handler());
    stockroom_runtime::serve_function(
        "stock-updates",
        cli.settings,
        stockroom_stock_updates::router,
        handler,
        stockroom_gcp::with_pubsub,
    )
    .await
}

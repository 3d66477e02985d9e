//! `aggregator` alone, as Cloud Run runs it: an Eventarc / push subscriber of `inventory-events`.

use clap::Parser;

#[derive(Parser)]
#[command(name = "aggregator")]
struct Cli {
    #[command(flatten)]
    settings: stockroom_runtime::Settings,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let cli = Cli::parse();
    stockroom_runtime::serve_function(
        "aggregator",
        cli.settings,
        |services| stockroom_aggregator::router(stockroom_aggregator::Aggregator::new(services)),
        stockroom_runtime::Background { relay: true, ..Default::default() },
        stockroom_aggregator::wire,
    )
    .await
}

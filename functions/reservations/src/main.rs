//! `reservations` alone, as Cloud Run runs it.

use clap::Parser;

#[derive(Parser)]
#[command(name = "reservations")]
struct Cli {
    #[command(flatten)]
    settings: stockroom_runtime::Settings,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let cli = Cli::parse();
    stockroom_runtime::serve_function(
        "reservations",
        cli.settings,
        stockroom_reservations::router,
        stockroom_runtime::Background { relay: true, expiry: true, ..Default::default() },
        stockroom_gcp::with_pubsub,
    )
    .await
}

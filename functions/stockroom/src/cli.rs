//! The command line: `stockroom serve`. Lives in the library so that the end-to-end tests can run the very same
//! entry point as a child process (and kill it).

use clap::{Parser, Subcommand};
use stockroom_runtime::{Settings, logging, shutdown_signal};

#[derive(Parser)]
#[command(name = "stockroom", version, about = "Real-time inventory, in one process")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Serve every function's routes over one store, on PORT, until SIGTERM or Ctrl-C.
    Serve {
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        webhooks: stockroom_webhooks::WebhookSettings,
    },
}

pub async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    match Cli::parse().command {
        Commands::Serve { settings, webhooks } => {
            logging::init(settings.project.clone());
            let listener = tokio::net::TcpListener::bind((settings.bind.as_str(), settings.port)).await?;
            crate::serve(listener, settings, webhooks, shutdown_signal()).await
        }
    }
}

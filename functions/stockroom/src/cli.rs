//! The command line: `stockroom serve` and `stockroom demo`. Lives in the library so that the end-to-end tests can
//! run the very same entry point as a child process (and kill it).

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
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
    /// `serve` plus a seeded shop placing, paying, shipping, returning and abandoning orders over the HTTP API, so
    /// the dashboard at `/` moves at once. Without a database named, it uses `sqlite://stockroom-demo.db`.
    Demo {
        #[command(flatten)]
        settings: Settings,
        #[command(flatten)]
        webhooks: stockroom_webhooks::WebhookSettings,
        #[command(flatten)]
        demo: crate::demo::DemoSettings,
    },
}

pub async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    stockroom_runtime::memory::bound_arenas();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Commands::Serve { settings, webhooks } => {
            logging::init(settings.project.clone());
            let listener = settings.listen().await?;
            crate::serve(listener, settings, webhooks, shutdown_signal()).await
        }
        Commands::Demo { mut settings, webhooks, demo } => {
            // Neither `--database-url` nor STOCKROOM_DATABASE_URL given: clap says the URL is its default, and the
            // demo takes its own file instead of `stockroom.db`.
            let named = matches.subcommand_matches("demo").and_then(|m| m.value_source("database_url"));
            if named == Some(ValueSource::DefaultValue) {
                settings.database_url = crate::demo::DATABASE_URL_DEFAULT.into();
            }
            logging::init(settings.project.clone());
            let listener = settings.listen().await?;
            crate::demo::run(listener, settings, webhooks, demo, shutdown_signal()).await
        }
    }
}

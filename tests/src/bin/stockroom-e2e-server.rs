//! `stockroom`, exactly: the same `cli::main` the shipped binary runs.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    stockroom::cli::main().await
}

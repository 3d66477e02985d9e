//! `stockroom`: the suite in one process.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    stockroom::cli::main().await
}

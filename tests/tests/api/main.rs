//! End-to-end tests: the assembled suite over real HTTP, each test on a fresh database of each store: a SQLite
//! file, a PostgreSQL database, and a Spanner database on Google's emulator. One test binary (one link, one
//! process) for all of them.

/// Runs an `async fn(Backend)` test once per store: `mod name { sqlite, postgres, spanner }`.
macro_rules! on_every_store {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    super::$name(stockroom_e2e::Backend::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    super::$name(stockroom_e2e::Backend::Postgres).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn spanner() {
                    let _turn = stockroom_e2e::spanner_turn().await;
                    super::$name(stockroom_e2e::Backend::Spanner).await
                }
            }
        )+
    };
}

mod analytics;
mod concurrency;
mod connections;
mod contract_adjustments;
mod contract_bad_input;
mod contract_locations_stock;
mod contract_operations;
mod contract_reservations;
mod crash;
mod dashboard;
mod demo;
mod error_codes;
mod events_auth;
mod events_chain;
mod events_outbox;
mod events_redelivery;
mod histories;
mod lapsed_lookup;
mod lifecycle;
mod migrations;
mod openapi;
mod outbox;
mod readme_tour;

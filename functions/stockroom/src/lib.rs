//! The whole Stockroom suite in one process: every function's router over one store. This is local mode (the
//! embedded SQLite store by default) and the long-running service on GKE.

use axum::Router;
use axum::routing::get;
use stockroom_runtime::Services;
use stockroom_runtime::{Settings, run, with_edges};
use stockroom_webhooks::WebhookSettings;
use tokio::net::TcpListener;
use utoipa::OpenApi;

pub mod cli;
pub mod dashboard;
pub mod demo;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Stockroom",
        description = "Real-time inventory: stock per SKU and location, holds, sales, shipments. Every error is \
            `{\"error\": \"<snake_case_code>\", \"message\": \"...\", ...details}`."
    ),
    paths(openapi_json)
)]
struct Suite;

/// Each function's description, in the order they are merged.
fn parts() -> Vec<utoipa::openapi::OpenApi> {
    vec![
        stockroom_stock_updates::ApiDoc::openapi(),
        stockroom_reservations::ApiDoc::openapi(),
        stockroom_webhooks::ApiDoc::openapi(),
        stockroom_aggregator::ApiDoc::openapi(),
        stockroom_runtime::openapi::ApiDoc::openapi(),
    ]
}

/// OpenAPI 3.1 of every route the suite serves, generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = Suite::openapi();
    for part in parts() {
        doc.merge(part);
    }
    doc
}

/// This description: OpenAPI 3.1 of every route the suite serves.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1", body = Object),
              (status = 503, response = inline(stockroom_runtime::openapi::Unavailable))))]
async fn openapi_json(
    axum::extract::State(spec): axum::extract::State<std::sync::Arc<serde_json::Value>>,
) -> axum::response::Response {
    stockroom_runtime::ok(axum::http::StatusCode::OK, spec.as_ref())
}

/// Every function's routes over one set of services, with the shared edges.
pub fn app(services: Services, settings: &Settings, webhooks: &WebhookSettings) -> Router {
    // Rendered once: the description does not change while the process runs.
    let spec = std::sync::Arc::new(serde_json::to_value(openapi()).unwrap_or_default());
    let routes = Router::new()
        .merge(stockroom_stock_updates::router(services.clone()))
        .merge(stockroom_reservations::router(services.clone()))
        .merge(stockroom_webhooks::router(services.clone(), webhooks))
        .merge(stockroom_aggregator::api_router(services.clone()))
        .merge(stockroom_runtime::stream::router(services.clone()))
        .merge(stockroom_runtime::health::router(services.ping()))
        .merge(dashboard::router())
        .merge(Router::new().route("/openapi.json", get(openapi_json)).with_state(spec));
    with_edges(stockroom_runtime::access::guard_api(routes, services.api_oidc.clone()), &settings.limits())
}

/// Serves the suite on `listener` until `shutdown` completes (the caller picks the signal: SIGTERM in `main`,
/// a channel in tests).
pub async fn serve(
    listener: TcpListener,
    settings: Settings,
    webhooks: WebhookSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let services = stockroom_aggregator::wire(settings.services().await?, &settings)?;
    // The chain, in-process as in the cloud: webhooks queue commands, stock-updates' handler applies them,
    // the ledger's outbox is relayed through the aggregator (analytics) to the live feed.
    let services = stockroom_aggregator::aggregate_locally(services);
    settings.start_background(&services, stockroom_runtime::Background::all(stockroom_stock_updates::queued_handler()));
    let app = app(services, &settings, &webhooks);
    tracing::info!(address = %listener.local_addr()?, database = %redact(secrecy::ExposeSecret::expose_secret(&settings.database_url)), "stockroom serving");
    run(listener, app, shutdown, &settings.limits()).await?;
    tracing::info!("stockroom stopped");
    Ok(())
}

/// The database URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme && url[scheme + 3..at].contains(':') => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(super::redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(super::redact("sqlite://stockroom.db"), "sqlite://stockroom.db");
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn the_spec_lists_every_contract_route() {
        let doc = serde_json::to_value(super::openapi()).unwrap_or_default();
        let paths = doc["paths"].as_object().map(|p| p.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        for p in [
            "/v1/locations/{location}",
            "/v1/locations",
            "/v1/adjustments",
            "/v1/stock/{sku}",
            "/v1/stock",
            "/v1/reservations",
            "/v1/reservations/{id}",
            "/v1/reservations/{id}/commit",
            "/v1/reservations/{id}/fulfil",
            "/v1/reservations/{id}/release",
            "/v1/movements",
            "/v1/skus/{sku}/policy",
            "/v1/analytics/stock-health",
            "/v1/analytics/skus/{sku}/sales",
            "/v1/analytics/top-sellers",
        ] {
            assert!(paths.iter().any(|k| k == p), "{p} missing from {paths:?}");
        }
        assert!(doc["openapi"].as_str().unwrap_or_default().starts_with("3.1"));
    }

    /// `OpenApi::merge` keeps the first schema of a name: two functions naming different schemas alike would
    /// leave one of them described by the other's (as `LocationBody` once was for the Shopify mapping).
    #[test]
    fn no_two_functions_name_different_schemas_alike() {
        let mut seen: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
        for part in super::parts() {
            let schemas = part.components.map(|c| c.schemas).unwrap_or_default();
            for (name, schema) in schemas {
                let schema = serde_json::to_value(schema).unwrap_or_default();
                if let Some(earlier) = seen.get(&name) {
                    assert_eq!(earlier, &schema, "two different schemas are named {name}");
                }
                seen.insert(name, schema);
            }
        }
    }
}

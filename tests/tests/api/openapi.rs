//! The OpenAPI description served at `/openapi.json` says what the code does: parameters sit where the handlers
//! read them, every operation has an id of its own, the failures the edges answer (400, 413, 415, 503) are
//! documented with the JSON error body, the request schemas refuse what the handlers refuse, and the events-in,
//! webhook, job and event-stream routes are described too. Generated clients and fuzzers (`scripts/schemathesis`)
//! are only as good as this document.
//!
//! On SQLite only: the document is built from the handlers, whatever the store.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use stockroom_e2e::{Backend, TestApp};

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];

/// The query parameters each handler reads, and whether it refuses a request without them.
const QUERY_PARAMETERS: &[(&str, &str, &str, bool)] = &[
    ("get", "/v1/movements", "sku", false),
    ("get", "/v1/movements", "location", false),
    ("get", "/v1/movements", "after", false),
    ("get", "/v1/movements", "limit", false),
    // `GET /v1/stock` without skus is 422 invalid_skus.
    ("get", "/v1/stock", "skus", true),
    ("get", "/v1/analytics/stock-health", "location", false),
    ("get", "/v1/analytics/stock-health", "status", false),
    ("get", "/v1/analytics/skus/{sku}/sales", "bucket", false),
    ("get", "/v1/analytics/skus/{sku}/sales", "from", false),
    ("get", "/v1/analytics/skus/{sku}/sales", "to", false),
    ("get", "/v1/analytics/top-sellers", "window", false),
    ("get", "/v1/analytics/top-sellers", "limit", false),
    ("post", "/jobs/expire-reservations", "limit", false),
    ("get", "/v1/events/stream", "types", false),
];

/// Operations whose body goes through the JSON extractor, which answers 415 to any other content type; and
/// `/events`, which answers 415 to a CloudEvents format it does not take (batches, non-JSON structured modes).
const JSON_ONLY: &[(&str, &str)] = &[
    ("put", "/v1/locations/{location}"),
    ("post", "/v1/adjustments"),
    ("post", "/v1/reservations"),
    ("put", "/v1/skus/{sku}/policy"),
    ("put", "/v1/shopify/items/{inventory_item_id}"),
    ("put", "/v1/shopify/locations/{location_id}"),
    ("post", "/events"),
];

async fn served() -> (TestApp, Value) {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let r = app.get("/openapi.json").await;
    assert_eq!(r.status, 200, "{r:?}");
    (app, r.body)
}

/// Every operation: (method, path, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                out.push((method.to_owned(), path.clone(), op.clone()));
            }
        }
    }
    assert!(!out.is_empty(), "no operations at all: {doc}");
    out
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not described; paths: {}", keys(&doc["paths"]));
    op
}

fn keys(v: &Value) -> String {
    v.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>().join(", ")).unwrap_or_default()
}

/// Follows `$ref`s within the document.
fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    for _ in 0..16 {
        match v.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) {
            Some(pointer) => v = doc.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref #{pointer}")),
            None => return v,
        }
    }
    panic!("a $ref cycle at {v}")
}

/// The operation's parameters, `$ref`s resolved.
fn parameters<'a>(doc: &'a Value, op: &'a Value) -> Vec<&'a Value> {
    op["parameters"].as_array().into_iter().flatten().map(|p| resolve(doc, p)).collect()
}

/// A validator for `schema`, which may `$ref` the document's components.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut root = schema.clone();
    if let Value::Object(map) = &mut root {
        map.insert("components".into(), doc["components"].clone());
    } else {
        root = json!({ "allOf": [schema], "components": doc["components"] });
    }
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&root)
        .unwrap_or_else(|e| panic!("not a usable schema: {e}\n{schema}"))
}

/// The JSON request body schema of an operation.
fn body_schema<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let body = resolve(doc, &operation(doc, method, path)["requestBody"]);
    let schema = &body["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{method} {path} has no application/json body schema: {body}");
    schema
}

fn parameter_schema<'a>(doc: &'a Value, method: &str, path: &str, name: &str) -> &'a Value {
    let op = operation(doc, method, path);
    let p = parameters(doc, op).into_iter().find(|p| p["name"] == name);
    &p.unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))["schema"]
}

fn assert_takes(doc: &Value, schema: &Value, what: &str, good: &[Value], bad: &[Value]) {
    let v = validator(doc, schema);
    for g in good {
        assert!(v.is_valid(g), "{what}: the schema refuses {g}, which the code takes\n{schema}");
    }
    for b in bad {
        assert!(!v.is_valid(b), "{what}: the schema takes {b}, which the code refuses\n{schema}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_parameter_is_named_in_its_template_and_every_name_in_a_template_is_a_required_path_parameter() {
    let (_app, doc) = served().await;

    let mut wrong = Vec::new();
    for (method, path, op) in operations(&doc) {
        let named: BTreeSet<String> =
            path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).map(str::to_owned).collect();
        let declared: BTreeSet<String> = parameters(&doc, &op)
            .into_iter()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                if p["required"] != true {
                    wrong.push(format!("{method} {path}: path parameter {} is not required", p["name"]));
                }
                p["name"].as_str().unwrap_or_default().to_owned()
            })
            .collect();
        if named != declared {
            wrong.push(format!("{method} {path}: the template names {named:?}, the path parameters are {declared:?}"));
        }
    }

    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_parameters_are_in_the_query_and_required_only_where_the_code_requires_them() {
    let (_app, doc) = served().await;

    let mut wrong = Vec::new();
    for &(method, path, name, required) in QUERY_PARAMETERS {
        let op = &doc["paths"][path][method];
        if !op.is_object() {
            wrong.push(format!("{method} {path} is not described"));
            continue;
        }
        let found: Vec<&Value> = parameters(&doc, op).into_iter().filter(|p| p["name"] == name).collect();
        match found.as_slice() {
            [p] if p["in"] == "query" && p["required"].as_bool().unwrap_or(false) == required => {}
            [p] => wrong.push(format!(
                "{method} {path}: {name} is in {} with required {}, not in query with required {required}",
                p["in"], p["required"]
            )),
            _ => wrong.push(format!("{method} {path}: {name} is declared {} times", found.len())),
        }
    }

    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_has_an_operation_id_of_its_own() {
    let (_app, doc) = served().await;

    let mut ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (method, path, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap_or_default().to_owned();
        ids.entry(id).or_default().push(format!("{method} {path}"));
    }

    let shared: Vec<_> = ids.iter().filter(|(id, ops)| id.is_empty() || ops.len() > 1).collect();
    assert!(shared.is_empty(), "operationIds missing or shared: {shared:?}");
}

/// The error statuses `op` documents, each with the JSON error body `{"error", "message"}`.
fn documented_errors(doc: &Value, method: &str, path: &str, op: &Value, wrong: &mut Vec<String>) -> BTreeSet<String> {
    let mut statuses = BTreeSet::new();
    for (status, response) in op["responses"].as_object().into_iter().flatten() {
        if !status.starts_with('4') && !status.starts_with('5') {
            continue;
        }
        statuses.insert(status.clone());
        let schema = &resolve(doc, response)["content"]["application/json"]["schema"];
        if !schema.is_object() {
            wrong.push(format!("{method} {path}: {status} has no application/json body"));
            continue;
        }
        let body = validator(doc, schema);
        let sample = json!({ "error": "some_code", "message": "what went wrong", "detail": 1 });
        if !body.is_valid(&sample) || body.is_valid(&json!({ "message": "no code" })) {
            wrong.push(format!("{method} {path}: {status} is not the JSON error body: {schema}"));
        }
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_documents_503_with_retry_after_and_every_error_with_the_json_error_body() {
    let (_app, doc) = served().await;

    let mut wrong = Vec::new();
    for (method, path, op) in operations(&doc) {
        let errors = documented_errors(&doc, &method, &path, &op, &mut wrong);
        if !errors.contains("503") {
            wrong.push(format!("{method} {path}: 503 (request timeout, store unavailable) is not documented"));
            continue;
        }
        let headers = &resolve(&doc, &op["responses"]["503"])["headers"];
        let retry_after =
            headers.as_object().into_iter().flatten().find(|(k, _)| k.eq_ignore_ascii_case("retry-after"));
        if retry_after.is_none() {
            wrong.push(format!("{method} {path}: 503 does not document Retry-After"));
        }
    }

    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_with_a_body_or_parameters_document_400_and_413_and_json_bodies_415() {
    let (_app, doc) = served().await;

    let mut wrong = Vec::new();
    for (method, path, op) in operations(&doc) {
        let errors = documented_errors(&doc, &method, &path, &op, &mut wrong);
        let has_body = op.get("requestBody").is_some();
        let has_parameters = !parameters(&doc, &op).is_empty();
        let json_only = JSON_ONLY.contains(&(method.as_str(), path.as_str()));
        let mut expected = Vec::new();
        if has_body || has_parameters {
            expected.push("400");
        }
        if has_body {
            expected.push("413");
        }
        if json_only {
            expected.push("415");
            if !has_body {
                wrong.push(format!("{method} {path}: takes a JSON body, but no requestBody is described"));
            }
        }
        for status in expected {
            if !errors.contains(status) {
                wrong.push(format!("{method} {path}: {status} is not documented (documented: {errors:?})"));
            }
        }
    }

    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_behind_a_token_when_authentication_is_on_document_401() {
    let (_app, doc) = served().await;

    let mut wrong = Vec::new();
    for (method, path, op) in operations(&doc) {
        let verb = axum::http::Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method");
        // STOCKROOM_API_AUDIENCE guards these; STOCKROOM_OIDC_AUDIENCE the events in and the jobs.
        let guarded = stockroom_runtime::access::needs_token(&verb, &path)
            || ["/events", "/pubsub/push"].contains(&path.as_str())
            || path.starts_with("/jobs/");
        if guarded && !op["responses"]["401"].is_object() {
            wrong.push(format!("{method} {path}: 401 is not documented"));
        }
    }

    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_in_webhooks_jobs_and_the_event_stream_are_described() {
    let (_app, doc) = served().await;

    for path in ["/events", "/pubsub/push", "/webhooks/shopify"] {
        let body = resolve(&doc, &operation(&doc, "post", path)["requestBody"]);
        assert!(body["content"].as_object().is_some_and(|c| !c.is_empty()), "post {path}: no request body: {body}");
    }
    let structured = &resolve(&doc, &operation(&doc, "post", "/events")["requestBody"])["content"];
    assert!(
        structured["application/cloudevents+json"]["schema"].is_object(),
        "/events describes structured mode: {structured}"
    );
    let push = body_schema(&doc, "post", "/pubsub/push");
    assert_takes(
        &doc,
        push,
        "a Pub/Sub push envelope",
        &[json!({ "message": { "data": "e30=", "messageId": "1" }, "subscription": "projects/p/subscriptions/s" })],
        &[json!({ "subscription": "projects/p/subscriptions/s" })],
    );
    let webhook = operation(&doc, "post", "/webhooks/shopify");
    let signature = parameters(&doc, webhook).into_iter().find(|p| p["name"] == "X-Shopify-Hmac-Sha256");
    assert!(signature.is_some_and(|p| p["in"] == "header"), "the webhook's signature header: {webhook}");
    assert!(webhook["responses"]["401"].is_object(), "a bad signature is 401: {webhook}");
    for path in ["/jobs/expire-reservations", "/jobs/relay-outbox"] {
        let job = operation(&doc, "post", path);
        assert!(job["responses"]["200"]["content"]["application/json"].is_object(), "{path} answers a summary");
        assert!(job["responses"]["401"].is_object(), "{path} without a valid OIDC token (when configured) is 401");
    }
    let stream = operation(&doc, "get", "/v1/events/stream");
    assert!(
        stream["responses"]["200"]["content"]["text/event-stream"].is_object(),
        "the event stream is text/event-stream: {stream}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapping_a_shopify_location_takes_a_location_and_creating_a_location_takes_a_priority() {
    let (_app, doc) = served().await;

    let shopify = body_schema(&doc, "put", "/v1/shopify/locations/{location_id}");
    let ours = body_schema(&doc, "put", "/v1/locations/{location}");

    assert_takes(
        &doc,
        shopify,
        "PUT /v1/shopify/locations",
        &[json!({ "location": "main" })],
        &[json!({ "priority": 1 }), json!({ "name": "Main", "priority": 1 })],
    );
    assert_takes(
        &doc,
        ours,
        "PUT /v1/locations",
        &[json!({ "priority": 1 }), json!({ "name": "Main", "priority": 0 })],
        &[json!({ "location": "main" })],
    );
    assert_takes(
        &doc,
        body_schema(&doc, "put", "/v1/shopify/items/{inventory_item_id}"),
        "PUT /v1/shopify/items",
        &[json!({ "sku": "TSHIRT-M" })],
        &[json!({ "location": "main" })],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_schemas_refuse_what_the_code_refuses() {
    let (_app, doc) = served().await;
    let change = |fields: Value| {
        let mut c = json!({ "sku": "TSHIRT-M", "location": "main", "reason": "received" });
        c.as_object_mut().into_iter().for_each(|m| m.extend(fields.as_object().cloned().unwrap_or_default()));
        json!({ "changes": [c] })
    };
    let line = |sku: &str, quantity: i64| json!({ "lines": [{ "sku": sku, "quantity": quantity }] });
    let long_sku = "x".repeat(129);

    assert_takes(
        &doc,
        body_schema(&doc, "post", "/v1/adjustments"),
        "adjustments: sku alphabet, non-zero delta, 1 to 500 changes",
        &[
            change(json!({ "delta": 3 })),
            change(json!({ "delta": -3 })),
            change(json!({ "set": 0 })),
            change(json!({
                "sku": "AZaz09._-:/",
                "delta": 1
            })),
        ],
        &[
            change(json!({ "delta": 0 })),
            change(json!({ "sku": "a b", "delta": 1 })),
            change(json!({ "sku": "", "delta": 1 })),
            change(json!({ "sku": "é", "delta": 1 })),
            change(json!({ "sku": long_sku, "delta": 1 })),
            change(json!({ "location": "x".repeat(65), "delta": 1 })),
            change(json!({ "set": -1 })),
            change(json!({ "delta": 1_000_000_000_001_i64 })),
            json!({ "changes": [] }),
        ],
    );
    assert_takes(
        &doc,
        body_schema(&doc, "put", "/v1/locations/{location}"),
        "locations: priority 0 to 1,000,000",
        &[json!({ "priority": 0 }), json!({ "priority": 1_000_000 })],
        &[json!({ "priority": -1 }), json!({ "priority": 1_000_001 })],
    );
    assert_takes(
        &doc,
        body_schema(&doc, "post", "/v1/reservations"),
        "reservations: 1 to 100 lines, positive quantities, ttl 1 to 86400",
        &[line("TSHIRT-M", 1), json!({ "lines": [{ "sku": "TSHIRT-M", "quantity": 2 }], "ttl_seconds": 86_400 })],
        &[
            json!({ "lines": [] }),
            line("TSHIRT-M", 0),
            line("a b", 1),
            json!({ "lines": [{ "sku": "TSHIRT-M", "quantity": 2 }], "ttl_seconds": 0 }),
            json!({ "lines": [{ "sku": "TSHIRT-M", "quantity": 2 }], "ttl_seconds": 86_401 }),
        ],
    );
    assert_takes(
        &doc,
        body_schema(&doc, "post", "/v1/reservations/{id}/commit"),
        "commit: no lines, or 1 to 100 of them",
        &[json!({}), line("TSHIRT-M", 1)],
        &[json!({ "lines": [] }), line("TSHIRT-M", 0), line("a b", 1)],
    );
    assert_takes(
        &doc,
        parameter_schema(&doc, "get", "/v1/stock/{sku}", "sku"),
        "the sku in GET /v1/stock/{sku}",
        &[json!("TSHIRT-M"), json!("AZaz09._-:/")],
        &[json!(""), json!("a b"), json!("é"), json!(long_sku)],
    );
}

//! Events in, with authentication on: `/events`, `/pubsub/push` and `/jobs/*` take a command only with a
//! Google-signed OIDC token for the configured audience and service account. Anything else is 401 with a JSON
//! error and applies nothing: no movement, no level changed, no outgoing event. The ordinary API needs no token
//! unless `STOCKROOM_API_AUDIENCE` is set, and then its writes and live feed need one of their own.
//!
//! Google's certificate URL is stood in for by a JWKS served on loopback from an RSA key minted here.

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::RsaPrivateKey;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use stockroom_e2e::{Backend, Reply, TestApp, TestDb, count_rows};

on_every_store!(
    a_valid_google_token_lets_commands_through_events_and_pubsub_push,
    an_expired_foreign_unverified_or_missing_token_is_401_with_a_json_error_and_applies_nothing,
    the_scheduler_jobs_need_a_token_and_the_stock_api_does_not,
);

const AUDIENCE: &str = "https://stockroom.test/events";
const PUSHER: &str = "pusher@proj.iam.gserviceaccount.com";
const ADJUST: &str = "dev.stockroom.command.adjust.v1";
const HOLD: &str = "dev.stockroom.command.hold.v1";
const SKU: &str = "AUTH-MUG";

/// Google's signing key for these tests, minted once per test binary (RSA key generation is slow).
fn google_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("an RSA key pair"))
}

/// A stand-in for `https://www.googleapis.com/oauth2/v3/certs` on 127.0.0.1; its URL.
async fn serve_jwks() -> String {
    let key = google_key();
    let jwks = json!({ "keys": [{
        "kty": "RSA",
        "alg": "RS256",
        "use": "sig",
        "kid": "k1",
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
    }]});
    let app = Router::new().route("/oauth2/v3/certs", get(move || std::future::ready(axum::Json(jwks.clone()))));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port on loopback");
    let url = format!("http://{}/oauth2/v3/certs", listener.local_addr().expect("the bound address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// The suite with authentication on, and a location holding 10 units of `SKU`.
async fn suite_with_oidc(b: Backend, relay_interval_ms: u64) -> TestApp {
    let jwks_url = serve_jwks().await;
    let app = TestApp::spawn_configured(TestDb::new(b).await, |s| {
        s.oidc_audience = Some(AUDIENCE.to_owned());
        s.oidc_emails = PUSHER.to_owned();
        s.oidc_jwks_url = jwks_url;
        s.relay_interval_ms = relay_interval_ms;
    })
    .await;
    app.location("shop", 1).await;
    app.receive(SKU, "shop", 10).await;
    app
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The claims Pub/Sub or Eventarc would send for the configured service account: everything right.
fn pusher_claims() -> Value {
    json!({
        "iss": "https://accounts.google.com",
        "aud": AUDIENCE,
        "azp": "110338389328948264391",
        "sub": "110338389328948264391",
        "email": PUSHER,
        "email_verified": true,
        "iat": now(),
        "exp": now() + 3600,
    })
}

fn pusher_claims_with(changes: &[(&str, Value)]) -> Value {
    let mut claims = pusher_claims();
    for (field, value) in changes {
        claims[*field] = value.clone();
    }
    claims
}

/// `Bearer <token>` for `claims`, signed by Google's key.
fn bearer(claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("k1".to_owned());
    let der = google_key().to_pkcs1_der().expect("the key as PKCS#1 DER");
    let token = jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(der.as_bytes())).expect("a token");
    format!("Bearer {token}")
}

fn valid_token() -> String {
    bearer(&pusher_claims())
}

/// A Stockroom command as a binary-mode CloudEvent on `/events`, with `authorization` if any.
async fn post_event(app: &TestApp, authorization: Option<&str>, ty: &str, id: &str, data: &Value) -> Reply {
    let mut headers = vec![
        ("content-type", "application/json"),
        ("ce-specversion", "1.0"),
        ("ce-type", ty),
        ("ce-source", "//tests/events-auth"),
        ("ce-id", id),
    ];
    if let Some(value) = authorization {
        headers.push(("authorization", value));
    }
    app.send("POST", "/events", &headers, Some(data.to_string().into_bytes())).await
}

/// A Stockroom command as Pub/Sub pushes it: CloudEvents attributes, the command as the message data.
async fn post_push(app: &TestApp, authorization: Option<&str>, ty: &str, message_id: &str, data: &Value) -> Reply {
    let envelope = json!({
        "message": {
            "data": STANDARD.encode(data.to_string()),
            "attributes": { "ce-specversion": "1.0", "ce-type": ty, "ce-source": "//tests/push", "ce-id": message_id },
            "messageId": message_id,
            "publishTime": "2025-03-01T12:00:00.000Z",
        },
        "subscription": "projects/stockroom-test/subscriptions/inventory-commands-push",
    });
    let mut headers = vec![("content-type", "application/json")];
    if let Some(value) = authorization {
        headers.push(("authorization", value));
    }
    app.send("POST", "/pubsub/push", &headers, Some(envelope.to_string().into_bytes())).await
}

fn adjustment(delta: i64) -> Value {
    json!({ "changes": [{ "sku": SKU, "location": "shop", "delta": delta, "reason": "received" }] })
}

fn hold(reservation_id: &str, quantity: i64) -> Value {
    json!({ "reservation_id": reservation_id, "lines": [{ "sku": SKU, "quantity": quantity }], "ttl_seconds": 3600 })
}

/// `(on_hand, reserved, available)` of `SKU` in total.
async fn levels(app: &TestApp) -> (i64, i64, i64) {
    let total = &app.stock(SKU).await["total"];
    let figure = |name: &str| total[name].as_i64().unwrap_or(i64::MIN);
    (figure("on_hand"), figure("reserved"), figure("available"))
}

fn assert_applied(r: &Reply, what: &str) {
    assert_eq!((r.status, r.body["outcome"].as_str()), (200, Some("applied")), "{what}: {r:?}");
}

/// A 401 with the JSON error the contract describes, naming why the token was refused.
fn assert_refused(r: &Reply, reason: &str, what: &str) {
    assert_eq!(r.status, 401, "{what}: {r:?}");
    assert_eq!(r.error_code(), "unauthorized", "{what}: {r:?}");
    assert_eq!(r.body["reason"].as_str(), Some(reason), "{what}: {r:?}");
    assert!(r.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: a message: {r:?}");
    let content_type = r.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("application/json"), "{what}: a JSON error, not {content_type:?}");
}

/// Everything a command could have changed: the levels, the ledger, the outbox and the command queue.
#[derive(Debug, PartialEq)]
struct Snapshot {
    stock: Value,
    movements: Vec<Value>,
    outbox: i64,
    queued: i64,
}

async fn snapshot(app: &TestApp) -> Snapshot {
    Snapshot {
        stock: app.stock(SKU).await,
        movements: app.all_movements("").await,
        outbox: count_rows(&app.db.url, "SELECT COUNT(*) FROM outbox").await,
        queued: count_rows(&app.db.url, "SELECT COUNT(*) FROM command_inbox").await,
    }
}

async fn a_valid_google_token_lets_commands_through_events_and_pubsub_push(b: Backend) {
    let app = suite_with_oidc(b, 20).await;
    let token = valid_token();
    assert_eq!(levels(&app).await, (10, 0, 10));

    let r = post_event(&app, Some(&token), ADJUST, "events-adjust-1", &adjustment(5)).await;
    assert_applied(&r, "an adjustment on /events");
    assert_eq!(levels(&app).await, (15, 0, 15));
    let r = post_event(&app, Some(&token), HOLD, "events-hold-1", &hold("auth-events-1", 3)).await;
    assert_applied(&r, "a hold on /events");
    assert_eq!(levels(&app).await, (15, 3, 12));

    let r = post_push(&app, Some(&token), ADJUST, "push-adjust-1", &adjustment(2)).await;
    assert_applied(&r, "an adjustment on /pubsub/push");
    assert_eq!(levels(&app).await, (17, 3, 14));
    let r = post_push(&app, Some(&token), HOLD, "push-hold-1", &hold("auth-push-1", 4)).await;
    assert_applied(&r, "a hold on /pubsub/push");
    assert_eq!(levels(&app).await, (17, 7, 10));

    // The token does not make a redelivery count twice.
    let r = post_event(&app, Some(&token), ADJUST, "events-adjust-1", &adjustment(5)).await;
    assert_eq!((r.status, r.body["outcome"].as_str()), (200, Some("duplicate")), "{r:?}");
    assert_eq!(levels(&app).await, (17, 7, 10));

    let kinds: Vec<String> =
        app.all_movements("").await.iter().map(|m| m["kind"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(kinds, ["adjustment", "adjustment", "hold", "adjustment", "hold"]);
    assert_eq!(count_rows(&app.db.url, "SELECT COUNT(*) FROM outbox").await, 5, "one outgoing event per movement");
}

async fn an_expired_foreign_unverified_or_missing_token_is_401_with_a_json_error_and_applies_nothing(b: Backend) {
    let app = suite_with_oidc(b, 20).await;
    let before = snapshot(&app).await;
    assert_eq!(levels(&app).await, (10, 0, 10));

    let refused = [
        ("expired", Some(bearer(&pusher_claims_with(&[("iat", json!(now() - 7200)), ("exp", json!(now() - 3600))])))),
        ("wrong_audience", Some(bearer(&pusher_claims_with(&[("aud", json!("https://elsewhere.test/events"))])))),
        (
            "email_not_allowed",
            Some(bearer(&pusher_claims_with(&[("email", json!("intruder@other-proj.iam.gserviceaccount.com"))]))),
        ),
        ("email_not_verified", Some(bearer(&pusher_claims_with(&[("email_verified", json!(false))])))),
        ("missing", None),
    ];
    for (reason, token) in &refused {
        let token = token.as_deref();
        let r = post_event(&app, token, ADJUST, &format!("adjust-{reason}"), &adjustment(100)).await;
        assert_refused(&r, reason, &format!("an adjustment on /events, token {reason}"));
        let r = post_event(&app, token, HOLD, &format!("hold-{reason}"), &hold(&format!("events-{reason}"), 2)).await;
        assert_refused(&r, reason, &format!("a hold on /events, token {reason}"));
        let r = post_push(&app, token, ADJUST, &format!("push-adjust-{reason}"), &adjustment(100)).await;
        assert_refused(&r, reason, &format!("an adjustment on /pubsub/push, token {reason}"));
        let r = post_push(&app, token, HOLD, &format!("push-hold-{reason}"), &hold(&format!("push-{reason}"), 2)).await;
        assert_refused(&r, reason, &format!("a hold on /pubsub/push, token {reason}"));
    }
    // The token is checked before the body is even read: without one, not even a broken event gets a 400.
    let garbage = [("content-type", "application/json")];
    let r = app.send("POST", "/events", &garbage, Some(b"{not a cloudevent".to_vec())).await;
    assert_refused(&r, "missing", "a broken event without a token");
    let r = app.send("POST", "/pubsub/push", &garbage, Some(b"{}".to_vec())).await;
    assert_refused(&r, "missing", "a broken push without a token");

    // Nothing was applied, nothing queued for later, nothing waits to go out.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(snapshot(&app).await, before, "a refused request changed something");
    assert_eq!(levels(&app).await, (10, 0, 10));

    // Nor was anything remembered: the same commands, with a valid token, are new, not duplicates.
    let token = valid_token();
    let r = post_event(&app, Some(&token), ADJUST, "adjust-expired", &adjustment(1)).await;
    assert_applied(&r, "the same event after 401");
    let r = post_push(&app, Some(&token), HOLD, "push-hold-missing", &hold("push-missing", 2)).await;
    assert_applied(&r, "the same push after 401");
    assert_eq!(levels(&app).await, (11, 2, 9));
    assert_eq!(app.all_movements("").await.len(), before.movements.len() + 2);
}

async fn the_scheduler_jobs_need_a_token_and_the_stock_api_does_not(b: Backend) {
    // The background relay is off, so what waits in the outbox shows whether a refused relay job ran.
    let app = suite_with_oidc(b, 0).await;
    let pending = "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL";
    assert_eq!(count_rows(&app.db.url, pending).await, 1, "the receipt's event waits");

    let scheduler = [("x-cloudscheduler", "true"), ("x-cloudscheduler-scheduletime", "2025-03-01T12:00:00Z")];
    let expired = bearer(&pusher_claims_with(&[("iat", json!(now() - 7200)), ("exp", json!(now() - 3600))]));
    for job in ["/jobs/relay-outbox", "/jobs/expire-reservations"] {
        let r = app.send("POST", job, &scheduler, None).await;
        assert_refused(&r, "missing", &format!("{job} without a token"));
        let with_expired = [scheduler[0], scheduler[1], ("authorization", expired.as_str())];
        assert_refused(&app.send("POST", job, &with_expired, None).await, "expired", &format!("{job}, expired"));
    }
    assert_eq!(count_rows(&app.db.url, pending).await, 1, "a refused relay job published nothing");

    let token = valid_token();
    let with_token = [scheduler[0], scheduler[1], ("authorization", token.as_str())];
    let r = app.send("POST", "/jobs/relay-outbox", &with_token, None).await;
    assert_eq!((r.status, r.body["published"].as_i64()), (200, Some(1)), "{r:?}");
    assert_eq!(count_rows(&app.db.url, pending).await, 0);
    let r = app.send("POST", "/jobs/expire-reservations", &with_token, None).await;
    assert_eq!(r.status, 200, "{r:?}");

    // The ordinary API is for storefronts and people: no token, as before.
    let mut stream = app.subscribe("").await;
    app.location("backroom", 2).await;
    app.receive(SKU, "backroom", 4).await;
    assert_eq!(app.get("/v1/locations").await.status, 200);
    let held = app.hold(SKU, 3).await;
    assert_eq!(held.status, 201, "{held:?}");
    let id = held.body["reservation_id"].as_str().expect("a reservation id").to_owned();
    assert_eq!(app.get(&format!("/v1/reservations/{id}")).await.status, 200);
    let r = app.send("POST", &format!("/v1/reservations/{id}/commit"), &[], None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = app.get(&format!("/v1/stock/{SKU}")).await;
    assert_eq!((r.status, r.body["total"]["on_hand"].as_i64()), (200, Some(14)), "{r:?}");
    let r = app.get(&format!("/v1/stock?skus={SKU}")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(app.get("/v1/movements").await.status, 200);
    assert_eq!(app.get("/healthz").await.status, 200);
    assert_eq!(levels(&app).await, (14, 0, 11));
    // The stream is open to anyone too; it carries what the relay job (with its token) publishes.
    let r = app.send("POST", "/jobs/relay-outbox", &with_token, None).await;
    assert_eq!((r.status, r.body["published"].as_i64()), (200, Some(3)), "a receipt, a hold, a sale: {r:?}");
    let seen: Vec<String> = stream.until_quiet(Duration::from_millis(500)).await.into_iter().map(|e| e.event).collect();
    assert_eq!(
        seen,
        [
            "dev.stockroom.stock.changed.v1",
            "dev.stockroom.reservation.held.v1",
            "dev.stockroom.reservation.committed.v1"
        ]
    );
}

const API_AUDIENCE: &str = "https://stockroom.test/api";
const CHECKOUT: &str = "checkout@shop.iam.gserviceaccount.com";

/// A `/v1` write, sent with and without a token.
struct Write {
    method: &'static str,
    path: &'static str,
    body: Value,
}

/// `w`, with `auth` as its `Authorization` if any, under an idempotency key of its own.
async fn send(app: &TestApp, w: &Write, auth: Option<&str>) -> Reply {
    let key = format!("key{}", w.path.replace('/', "-"));
    let mut headers = vec![("content-type", "application/json"), ("idempotency-key", key.as_str())];
    headers.extend(auth.map(|a| ("authorization", a)));
    app.send(w.method, w.path, &headers, Some(w.body.to_string().into_bytes())).await
}

/// A storefront back end's token for the API: its own audience and account.
fn checkout_token(changes: &[(&str, Value)]) -> String {
    let mut claims = pusher_claims_with(&[("aud", json!(API_AUDIENCE)), ("email", json!(CHECKOUT))]);
    for (field, value) in changes {
        claims[*field] = value.clone();
    }
    bearer(&claims)
}

/// Issue 9: the long-running piece has no Cloud Run IAM before it. With `STOCKROOM_API_AUDIENCE` set, every `/v1`
/// write and the live feed need a token for that audience from an allowed account; reads stay open (the dashboard
/// behind IAP, product pages). A refused write changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_api_audience_set_every_v1_write_and_the_live_feed_need_a_token_and_reads_do_not() {
    let jwks_url = serve_jwks().await;
    let app = TestApp::spawn_configured(TestDb::new(Backend::Sqlite).await, |s| {
        s.api_audience = Some(API_AUDIENCE.to_owned());
        s.api_emails = CHECKOUT.to_owned();
        s.oidc_jwks_url = jwks_url;
    })
    .await;
    let writes = [
        Write { method: "PUT", path: "/v1/locations/wh", body: json!({ "name": "Warehouse", "priority": 1 }) },
        Write {
            method: "POST",
            path: "/v1/adjustments",
            body: json!({ "changes": [{ "sku": SKU, "location": "wh", "delta": 5, "reason": "received" }] }),
        },
        Write {
            method: "POST",
            path: "/v1/reservations",
            body: json!({ "reservation_id": "cart-1", "lines": [{ "sku": SKU, "quantity": 1 }] }),
        },
    ];
    // No token, the Pub/Sub audience's token, another account's, an expired one: 401 with the reason.
    let refusals = [
        (None, "missing"),
        (Some(valid_token()), "wrong_audience"),
        (Some(checkout_token(&[("email", json!("intruder@elsewhere.iam.gserviceaccount.com"))])), "email_not_allowed"),
        (Some(checkout_token(&[("iat", json!(now() - 7200)), ("exp", json!(now() - 3600))])), "expired"),
    ];
    for (auth, reason) in &refusals {
        for w in &writes {
            let r = send(&app, w, auth.as_deref()).await;
            assert_eq!(
                (r.status, r.error_code(), r.body["reason"].as_str()),
                (401, "unauthorized", Some(*reason)),
                "{} {}: {r:?}",
                w.method,
                w.path
            );
            assert!(r.headers.contains_key("www-authenticate"), "{r:?}");
        }
        let r = app.send("GET", "/v1/events/stream", &[], None).await;
        assert_eq!(
            (r.status, r.body["reason"].as_str()),
            (401, Some("missing")),
            "the live feed without a token: {r:?}"
        );
    }
    // Nothing was applied, and reads need no token.
    assert_eq!(app.get("/v1/locations").await.body["locations"], json!([]));
    assert_eq!(app.get(&format!("/v1/stock/{SKU}")).await.status, 404);

    // With the storefront's token each write goes through.
    let token = checkout_token(&[]);
    let mut statuses = Vec::new();
    for w in &writes {
        statuses.push(send(&app, w, Some(&token)).await.status);
    }
    assert!(statuses[0] == 200 || statuses[0] == 201, "{statuses:?}");
    assert_eq!(&statuses[1..], [200, 201], "adjustment and hold with a token");
    assert_eq!(app.get(&format!("/v1/stock/{SKU}")).await.body["total"]["reserved"], 1);
    let stream = app
        .http
        .get(format!("{}/v1/events/stream", app.base))
        .header("authorization", &token)
        .send()
        .await
        .expect("the live feed answers");
    assert_eq!(stream.status(), 200, "the live feed with a token");
}

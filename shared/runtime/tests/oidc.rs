//! Google-signed OIDC tokens, checked over the wire: a stand-in for Google's certificate URL serves a JWKS made from
//! RSA keys minted here, and tokens are signed with them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::RsaPrivateKey;
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use stockroom_runtime::oidc::{Claims, OidcConfig, OidcError, OidcVerifier, require_token};
use tower::ServiceExt;

const AUDIENCE: &str = "https://stockroom-events-abc123-ew.a.run.app/pubsub/push";
const PUSHER: &str = "pubsub-push@stockroom-prod.iam.gserviceaccount.com";

/// Two RSA 2048 key pairs, minted once per test binary (slow in a debug build): Google's, and an impostor's.
struct Keys {
    google: RsaPrivateKey,
    impostor: RsaPrivateKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mint = || RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("an RSA key pair");
        std::thread::scope(|s| {
            let impostor = s.spawn(mint);
            let google = mint();
            Keys { google, impostor: impostor.join().expect("the impostor's key") }
        })
    })
}

/// The public half of `key` as a JWK under `kid`, as Google publishes it.
fn jwk(key: &RsaPrivateKey, kid: &str) -> Value {
    json!({
        "kty": "RSA",
        "alg": "RS256",
        "use": "sig",
        "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
    })
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// The claims of a token Pub/Sub push would send: everything right.
fn push_claims() -> Value {
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

fn push_claims_with(field: &str, value: Value) -> Value {
    let mut claims = push_claims();
    claims[field] = value;
    claims
}

fn signed(key: &RsaPrivateKey, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let der = key.to_pkcs1_der().expect("the key as PKCS#1 DER");
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(der.as_bytes())).expect("a signed token")
}

fn signed_by_google(claims: &Value) -> String {
    signed(&keys().google, "k1", claims)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A stand-in for `https://www.googleapis.com/oauth2/v3/certs` on 127.0.0.1 that counts its fetches.
struct Google {
    url: String,
    published: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Published {
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    failing: bool,
}

async fn certs(State(published): State<Published>) -> Response {
    published.fetches.fetch_add(1, Ordering::SeqCst);
    if published.failing {
        return (StatusCode::INTERNAL_SERVER_ERROR, "backend error").into_response();
    }
    let keys = published.keys.lock().expect("the published keys").clone();
    (
        [(header::CACHE_CONTROL, "public, max-age=19723, must-revalidate, no-transform")],
        axum::Json(json!({ "keys": keys })),
    )
        .into_response()
}

impl Google {
    async fn publishing(keys: Vec<Value>) -> Self {
        Self::serve(keys, false).await
    }

    async fn failing() -> Self {
        Self::serve(Vec::new(), true).await
    }

    async fn serve(keys: Vec<Value>, failing: bool) -> Self {
        let published = Published { keys: Arc::new(Mutex::new(keys)), fetches: Arc::new(AtomicUsize::new(0)), failing };
        let app = Router::new().route("/oauth2/v3/certs", get(certs)).with_state(published.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port on loopback");
        let url = format!("http://{}/oauth2/v3/certs", listener.local_addr().expect("the bound address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, published: published.keys, fetches: published.fetches }
    }

    async fn with_googles_key() -> Self {
        Self::publishing(vec![jwk(&keys().google, "k1")]).await
    }

    fn publish(&self, key: Value) {
        self.published.lock().expect("the published keys").push(key);
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn config(&self) -> OidcConfig {
        OidcConfig { jwks_url: self.url.clone(), ..OidcConfig::new(AUDIENCE, vec![PUSHER.to_owned()]) }
    }

    fn verifier(&self) -> OidcVerifier {
        OidcVerifier::new(self.config(), reqwest::Client::new())
    }
}

async fn verdict(verifier: &OidcVerifier, claims: &Value) -> Result<Claims, OidcError> {
    verifier.verify(Some(&bearer(&signed_by_google(claims)))).await
}

#[tokio::test]
async fn a_token_google_signed_for_the_push_service_account_passes() {
    let google = Google::with_googles_key().await;
    let claims = verdict(&google.verifier(), &push_claims()).await.expect("the token passes");
    assert_eq!(claims.email, PUSHER);
    assert_eq!(claims.sub, "110338389328948264391");
    assert_eq!(claims.aud, AUDIENCE);
    assert_eq!(claims.iss, "https://accounts.google.com");
    assert!(claims.exp > now());
}

#[tokio::test]
async fn the_issuer_may_be_written_without_its_scheme() {
    let google = Google::with_googles_key().await;
    let claims = push_claims_with("iss", json!("accounts.google.com"));
    assert!(verdict(&google.verifier(), &claims).await.is_ok());
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let google = Google::with_googles_key().await;
    let mut claims = push_claims_with("exp", json!(now() - 120));
    claims["iat"] = json!(now() - 3720);
    assert_eq!(verdict(&google.verifier(), &claims).await, Err(OidcError::Expired));
}

#[tokio::test]
async fn a_token_expired_within_the_leeway_still_passes() {
    let google = Google::with_googles_key().await;
    let mut claims = push_claims_with("exp", json!(now() - 10));
    claims["iat"] = json!(now() - 3610);
    assert!(verdict(&google.verifier(), &claims).await.is_ok());
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let google = Google::with_googles_key().await;
    let claims = push_claims_with("aud", json!("https://someone-else.example/push"));
    assert_eq!(verdict(&google.verifier(), &claims).await, Err(OidcError::WrongAudience));
}

#[tokio::test]
async fn a_token_without_an_audience_is_refused() {
    let google = Google::with_googles_key().await;
    let mut claims = push_claims();
    claims.as_object_mut().expect("an object").remove("aud");
    assert_eq!(verdict(&google.verifier(), &claims).await, Err(OidcError::WrongAudience));
}

#[tokio::test]
async fn a_token_from_another_issuer_is_refused() {
    let google = Google::with_googles_key().await;
    let claims = push_claims_with("iss", json!("https://login.example.com"));
    assert_eq!(verdict(&google.verifier(), &claims).await, Err(OidcError::WrongIssuer));
}

#[tokio::test]
async fn a_token_for_an_email_not_on_the_list_is_refused() {
    let google = Google::with_googles_key().await;
    let claims = push_claims_with("email", json!("intruder@other-project.iam.gserviceaccount.com"));
    assert_eq!(verdict(&google.verifier(), &claims).await, Err(OidcError::EmailNotAllowed));
}

#[tokio::test]
async fn any_verified_email_passes_when_the_list_is_empty() {
    let google = Google::with_googles_key().await;
    let verifier = OidcVerifier::new(OidcConfig { emails: Vec::new(), ..google.config() }, reqwest::Client::new());
    let claims = push_claims_with("email", json!("anyone@other-project.iam.gserviceaccount.com"));
    assert!(verdict(&verifier, &claims).await.is_ok());
}

#[tokio::test]
async fn a_token_whose_email_is_not_verified_is_refused() {
    let google = Google::with_googles_key().await;
    let verifier = google.verifier();
    let unverified = push_claims_with("email_verified", json!(false));
    assert_eq!(verdict(&verifier, &unverified).await, Err(OidcError::EmailNotVerified));
    let said_as_text = push_claims_with("email_verified", json!("false"));
    assert_eq!(verdict(&verifier, &said_as_text).await, Err(OidcError::EmailNotVerified));
    let mut unsaid = push_claims();
    unsaid.as_object_mut().expect("an object").remove("email_verified");
    assert_eq!(verdict(&verifier, &unsaid).await, Err(OidcError::EmailNotVerified));
}

#[tokio::test]
async fn a_token_issued_in_the_future_or_not_yet_valid_is_refused() {
    let google = Google::with_googles_key().await;
    let verifier = google.verifier();
    let issued_later = push_claims_with("iat", json!(now() + 600));
    assert_eq!(verdict(&verifier, &issued_later).await, Err(OidcError::Malformed));
    let not_yet = push_claims_with("nbf", json!(now() + 600));
    assert_eq!(verdict(&verifier, &not_yet).await, Err(OidcError::Malformed));
}

#[tokio::test]
async fn a_token_signed_by_another_key_under_googles_kid_has_a_bad_signature() {
    let google = Google::with_googles_key().await;
    let forged = signed(&keys().impostor, "k1", &push_claims());
    assert_eq!(google.verifier().verify(Some(&bearer(&forged))).await, Err(OidcError::BadSignature));
}

#[tokio::test]
async fn a_token_with_altered_claims_has_a_bad_signature() {
    let google = Google::with_googles_key().await;
    let token = signed_by_google(&push_claims());
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let other = push_claims_with("email", json!("intruder@other-project.iam.gserviceaccount.com"));
    parts[1] = URL_SAFE_NO_PAD.encode(other.to_string());
    let tampered = parts.join(".");
    assert_eq!(google.verifier().verify(Some(&bearer(&tampered))).await, Err(OidcError::BadSignature));
}

#[tokio::test]
async fn an_unknown_kid_refetches_the_keys_once_then_is_refused() {
    let google = Google::with_googles_key().await;
    let verifier = google.verifier();
    assert!(verdict(&verifier, &push_claims()).await.is_ok());
    assert_eq!(google.fetches(), 1);

    let unknown = signed(&keys().impostor, "k-unknown", &push_claims());
    assert_eq!(verifier.verify(Some(&bearer(&unknown))).await, Err(OidcError::UnknownKey));
    assert_eq!(google.fetches(), 2, "one refetch for the unknown kid");

    for i in 0..20 {
        let forged = signed(&keys().impostor, &format!("forged-{i}"), &push_claims());
        assert_eq!(verifier.verify(Some(&bearer(&forged))).await, Err(OidcError::UnknownKey));
    }
    assert_eq!(google.fetches(), 2, "a flood of forged kids makes no further fetch");
    assert!(verdict(&verifier, &push_claims()).await.is_ok(), "the known key still works");
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_by_the_refetch() {
    let google = Google::with_googles_key().await;
    let verifier = google.verifier();
    assert!(verdict(&verifier, &push_claims()).await.is_ok());

    google.publish(jwk(&keys().impostor, "k2"));
    let after_rotation = signed(&keys().impostor, "k2", &push_claims());
    let claims = verifier.verify(Some(&bearer(&after_rotation))).await.expect("the new key is found");
    assert_eq!(claims.email, PUSHER);
    assert_eq!(google.fetches(), 2);
    assert!(verdict(&verifier, &push_claims()).await.is_ok(), "the old key is still published");
    assert_eq!(google.fetches(), 2);
}

#[tokio::test]
async fn alg_none_is_refused_without_looking_for_a_key() {
    let google = Google::with_googles_key().await;
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": "k1"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(push_claims().to_string());
    for unsigned in [format!("{header}.{payload}."), format!("{header}.{payload}")] {
        assert_eq!(google.verifier().verify(Some(&bearer(&unsigned))).await, Err(OidcError::Malformed));
    }
    assert_eq!(google.fetches(), 0);
}

#[tokio::test]
async fn hs256_is_refused_even_with_the_public_key_as_its_secret() {
    let google = Google::with_googles_key().await;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".to_owned());
    let public_n = keys().google.n().to_bytes_be();
    let token = jsonwebtoken::encode(&header, &push_claims(), &EncodingKey::from_secret(&public_n)).expect("a token");
    assert_eq!(google.verifier().verify(Some(&bearer(&token))).await, Err(OidcError::Malformed));
    assert_eq!(google.fetches(), 0);
}

#[tokio::test]
async fn other_rsa_algorithms_are_refused_too() {
    let google = Google::with_googles_key().await;
    let mut header = Header::new(Algorithm::RS512);
    header.kid = Some("k1".to_owned());
    let der = keys().google.to_pkcs1_der().expect("DER");
    let token =
        jsonwebtoken::encode(&header, &push_claims(), &EncodingKey::from_rsa_der(der.as_bytes())).expect("a token");
    assert_eq!(google.verifier().verify(Some(&bearer(&token))).await, Err(OidcError::Malformed));
}

#[tokio::test]
async fn a_missing_or_garbled_authorization_header_is_refused() {
    let google = Google::with_googles_key().await;
    let verifier = google.verifier();
    let token = signed_by_google(&push_claims());
    assert_eq!(verifier.verify(None).await, Err(OidcError::Missing));
    assert_eq!(verifier.verify(Some("")).await, Err(OidcError::Missing));
    for garbled in [
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        "Bearer not-a-jwt".to_owned(),
        "Bearer a.b.c".to_owned(),
        "Basic dXNlcjpwYXNz".to_owned(),
        token.clone(),
        format!("Token {token}"),
    ] {
        assert_eq!(verifier.verify(Some(&garbled)).await, Err(OidcError::Malformed), "{garbled}");
    }
    assert_eq!(google.fetches(), 0);
}

#[tokio::test]
async fn the_keys_are_fetched_once_for_many_verifications() {
    let google = Google::with_googles_key().await;
    let verifier = Arc::new(google.verifier());
    let token = bearer(&signed_by_google(&push_claims()));
    let mut at_once = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (verifier, token) = (verifier.clone(), token.clone());
        at_once.spawn(async move { verifier.verify(Some(&token)).await });
    }
    while let Some(verdict) = at_once.join_next().await {
        assert!(verdict.expect("the task ran").is_ok());
    }
    for _ in 0..16 {
        assert!(verifier.verify(Some(&token)).await.is_ok());
    }
    assert_eq!(google.fetches(), 1);
}

#[tokio::test]
async fn keys_that_cannot_be_fetched_make_the_token_uncheckable_not_wrong() {
    let google = Google::failing().await;
    let verifier = google.verifier();
    assert_eq!(verdict(&verifier, &push_claims()).await, Err(OidcError::JwksUnavailable));
    assert_eq!(verdict(&verifier, &push_claims()).await, Err(OidcError::JwksUnavailable));
    assert_eq!(google.fetches(), 1, "a failed fetch is not retried at once");
}

#[test]
fn error_codes_are_snake_case() {
    let codes = [
        OidcError::Missing,
        OidcError::Malformed,
        OidcError::UnknownKey,
        OidcError::BadSignature,
        OidcError::Expired,
        OidcError::WrongAudience,
        OidcError::WrongIssuer,
        OidcError::EmailNotAllowed,
        OidcError::EmailNotVerified,
        OidcError::JwksUnavailable,
    ]
    .map(|e| e.code());
    assert_eq!(codes[2], "unknown_key");
    assert_eq!(codes[8], "email_not_verified");
    assert!(codes.iter().all(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
}

#[test]
fn a_verifier_can_be_shared_across_tasks() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<OidcVerifier>();
}

// Through the middleware.

/// `POST /events` behind `require_token`, with a handler that counts its calls and echoes the caller's email.
fn events_app(verifier: Option<Arc<OidcVerifier>>, calls: Arc<AtomicUsize>) -> Router {
    let handler = move |claims: Option<axum::Extension<Claims>>| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            claims.map(|axum::Extension(c)| c.email).unwrap_or_default()
        }
    };
    Router::new().route("/events", post(handler)).layer(axum::middleware::from_fn_with_state(verifier, require_token))
}

fn event_request(authorization: Option<&str>) -> Request<Body> {
    let mut request = Request::post("/events").header(header::CONTENT_TYPE, "application/json");
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    request.body(Body::from(r#"{"message":{"data":"e30=","messageId":"1"}}"#)).expect("a request")
}

async fn body_json(response: Response) -> Value {
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024).await.expect("the body");
    serde_json::from_slice(&bytes).expect("a JSON body")
}

#[tokio::test]
async fn the_middleware_answers_401_json_to_a_bad_token_and_the_handler_never_runs() {
    let google = Google::with_googles_key().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let app = events_app(Some(Arc::new(google.verifier())), calls.clone());

    let forged = signed(&keys().impostor, "k1", &push_claims());
    let response = app.clone().oneshot(event_request(Some(&bearer(&forged)))).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
    let body = body_json(response).await;
    assert_eq!(body["error"], "unauthorized");
    assert_eq!(body["reason"], "bad_signature");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));

    let response = app.oneshot(event_request(None)).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body_json(response).await["reason"], "missing");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_middleware_lets_a_valid_token_through_with_its_claims() {
    let google = Google::with_googles_key().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let app = events_app(Some(Arc::new(google.verifier())), calls.clone());
    let token = bearer(&signed_by_google(&push_claims()));
    let response = app.oneshot(event_request(Some(&token))).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), 1024).await.expect("the body");
    assert_eq!(bytes, PUSHER.as_bytes());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_middleware_answers_503_when_the_keys_cannot_be_fetched() {
    let google = Google::failing().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let app = events_app(Some(Arc::new(google.verifier())), calls.clone());
    let token = bearer(&signed_by_google(&push_claims()));
    let response = app.oneshot(event_request(Some(&token))).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key(header::RETRY_AFTER));
    assert_eq!(body_json(response).await["error"], "unavailable");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn without_a_verifier_the_middleware_lets_everything_through() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = events_app(None, calls.clone());
    let response = app.oneshot(event_request(None)).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

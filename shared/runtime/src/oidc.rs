//! Google-signed OIDC tokens on push, Eventarc and Cloud Scheduler requests.
//!
//! Pub/Sub push, Eventarc and Cloud Scheduler can each attach `Authorization: Bearer <id token>` signed by Google
//! for a service account. [`OidcVerifier`] checks one: RS256 only, the signing key found by `kid` in Google's JWKS
//! (cached; refetched once on an unknown `kid`, and never more often than [`REFETCH_MIN_INTERVAL`]), issuer,
//! audience, the caller's `email` and `email_verified`, and the token's times. [`require_token`] is the axum
//! middleware in front of the routes that need it: a request without a valid token is 401 and reaches no handler.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Mutex, RwLock};

use crate::http::{ApiError, Fault};

/// Where Google publishes the keys that sign its ID tokens.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";

/// The issuers Google's ID tokens carry.
pub const GOOGLE_ISSUERS: [&str; 2] = ["accounts.google.com", "https://accounts.google.com"];

/// The least time between two fetches of the JWKS beyond the scheduled ones (an unknown `kid`, or a retry after a
/// failed fetch), so that a flood of tokens with forged `kid`s cannot turn into a flood of requests to Google.
pub const REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(5);

/// How long one JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest JWKS document read (Google's is about 2 KiB).
const JWKS_BYTES_MAX: usize = 256 * 1024;

/// What a token must say to be let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// The `aud` the token must carry exactly (Pub/Sub push: the push endpoint's URL unless set otherwise).
    pub audience: String,
    /// The service accounts allowed to call; empty lets any verified email in.
    pub emails: Vec<String>,
    /// Where the signing keys are published.
    pub jwks_url: String,
    /// The accepted `iss` values.
    pub issuers: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway_seconds: u64,
    /// How long fetched keys are kept when the response has no `Cache-Control: max-age`.
    pub jwks_ttl_seconds: u64,
}

impl OidcConfig {
    /// Google's keys and issuers, 60 s of leeway and keys kept an hour.
    pub fn new(audience: impl Into<String>, emails: Vec<String>) -> Self {
        Self {
            audience: audience.into(),
            emails,
            jwks_url: GOOGLE_JWKS_URL.to_owned(),
            issuers: GOOGLE_ISSUERS.iter().map(|s| (*s).to_owned()).collect(),
            leeway_seconds: 60,
            jwks_ttl_seconds: 3600,
        }
    }

    /// `STOCKROOM_OIDC_EMAILS`: comma-separated, blanks ignored.
    pub fn parse_emails(list: &str) -> Vec<String> {
        list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
    }
}

/// What a verified token says about its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub email: String,
    pub sub: String,
    pub aud: String,
    pub iss: String,
    pub exp: u64,
}

/// Why a request's token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error("the request has no bearer token")]
    Missing,
    #[error("the bearer token is malformed, not RS256, or its times are not sane")]
    Malformed,
    #[error("the token was signed with a key that is not published")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is for another audience")]
    WrongAudience,
    #[error("the token was not issued by an accepted issuer")]
    WrongIssuer,
    #[error("the token's email is not allowed to call this service")]
    EmailNotAllowed,
    #[error("the token's email is not verified")]
    EmailNotVerified,
    #[error("the signing keys cannot be fetched right now")]
    JwksUnavailable,
}

impl OidcError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::WrongAudience => "wrong_audience",
            Self::WrongIssuer => "wrong_issuer",
            Self::EmailNotAllowed => "email_not_allowed",
            Self::EmailNotVerified => "email_not_verified",
            Self::JwksUnavailable => "jwks_unavailable",
        }
    }
}

/// 401 `unauthorized` (with the reason and a `WWW-Authenticate` challenge), or 503 `unavailable` when the keys
/// cannot be had, so that the sender retries.
impl IntoResponse for OidcError {
    fn into_response(self) -> Response {
        if self == Self::JwksUnavailable {
            return ApiError::new(Fault::Unavailable, "unavailable", "cannot check the token right now; retry")
                .into_response();
        }
        let mut response = ApiError::new(Fault::Unauthorized, "unauthorized", self.to_string())
            .with_details(json!({ "reason": self.code() }))
            .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
        response
    }
}

/// The fetched keys and when to fetch again.
#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, Arc<DecodingKey>>,
    /// Until when the keys are current; `None` before the first successful fetch.
    fresh_until: Option<Instant>,
    /// The last fetch attempted, successful or not.
    last_attempt: Option<Instant>,
    /// The last fetch made because of an unknown `kid`.
    last_kid_refetch: Option<Instant>,
}

/// Checks bearer tokens against one [`OidcConfig`]. Share one per process (it is `Send + Sync`): it caches the keys.
pub struct OidcVerifier {
    config: OidcConfig,
    http: reqwest::Client,
    validation: Validation,
    cache: RwLock<KeyCache>,
    /// Held while fetching, so that concurrent requests wait for one fetch rather than each making their own.
    fetching: Mutex<()>,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier").field("config", &self.config).finish_non_exhaustive()
    }
}

/// The claims as they come, before they are judged.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<Value>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    iat: Option<u64>,
}

#[derive(Deserialize)]
struct JwksDocument {
    keys: Vec<Value>,
}

impl OidcVerifier {
    pub fn new(config: OidcConfig, http: reqwest::Client) -> Self {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = config.leeway_seconds;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_audience(&[config.audience.as_str()]);
        validation.set_issuer(&config.issuers);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Self { config, http, validation, cache: RwLock::new(KeyCache::default()), fetching: Mutex::new(()) }
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// `Authorization: Bearer <jwt>` → the verified claims, or why not.
    pub async fn verify(&self, authorization: Option<&str>) -> Result<Claims, OidcError> {
        let (token, kid) = token_and_kid(authorization)?;
        let key = self.key(&kid).await?;
        self.verify_signed(token, &key)
    }

    /// [`verify`](Self::verify) with the signing key looked up by `kid` in `keys` instead of Google's JWKS: no I/O.
    /// The entry point of the `oidc_token` fuzz target (`fuzz/`).
    #[doc(hidden)]
    pub fn verify_with_keys(
        &self,
        authorization: Option<&str>,
        keys: impl FnOnce(&str) -> Option<Arc<DecodingKey>>,
    ) -> Result<Claims, OidcError> {
        let (token, kid) = token_and_kid(authorization)?;
        let key = keys(&kid).ok_or(OidcError::UnknownKey)?;
        self.verify_signed(token, &key)
    }

    /// The signature and the claims of `token`, once its signing key is known.
    fn verify_signed(&self, token: &str, key: &DecodingKey) -> Result<Claims, OidcError> {
        let data = jsonwebtoken::decode::<RawClaims>(token, key, &self.validation).map_err(classify)?;
        self.judge(data.claims)
    }

    /// What is left once the signature, issuer, audience, `exp` and `nbf` are known good.
    fn judge(&self, claims: RawClaims) -> Result<Claims, OidcError> {
        let (Some(exp), Some(iss), Some(sub)) = (claims.exp, claims.iss, claims.sub) else {
            return Err(OidcError::Malformed);
        };
        if let Some(iat) = claims.iat {
            let now = jsonwebtoken::get_current_timestamp();
            if iat > now.saturating_add(self.config.leeway_seconds) || iat > exp {
                return Err(OidcError::Malformed);
            }
        }
        let email = claims.email.unwrap_or_default();
        if !self.config.emails.is_empty()
            && !self.config.emails.iter().any(|allowed| allowed.eq_ignore_ascii_case(&email))
        {
            return Err(OidcError::EmailNotAllowed);
        }
        if email.is_empty() || claims.email_verified != Some(Value::Bool(true)) {
            return Err(OidcError::EmailNotVerified);
        }
        Ok(Claims { email, sub, aud: self.config.audience.clone(), iss, exp })
    }

    /// The key for `kid`: from the cache while it is current, else after one fetch.
    async fn key(&self, kid: &str) -> Result<Arc<DecodingKey>, OidcError> {
        {
            let cache = self.cache.read().await;
            if cache.fresh_until.is_some_and(|until| Instant::now() < until)
                && let Some(key) = cache.keys.get(kid)
            {
                return Ok(key.clone());
            }
        }
        let _fetching = self.fetching.lock().await;
        // Another request may have fetched while this one waited; judge again from what is there now.
        let now = Instant::now();
        let (fresh, known, recently_attempted, recently_refetched, have_keys) = {
            let cache = self.cache.read().await;
            (
                cache.fresh_until.is_some_and(|until| now < until),
                cache.keys.get(kid).cloned(),
                cache.last_attempt.is_some_and(|at| now.duration_since(at) < REFETCH_MIN_INTERVAL),
                cache.last_kid_refetch.is_some_and(|at| now.duration_since(at) < REFETCH_MIN_INTERVAL),
                cache.fresh_until.is_some(),
            )
        };
        if fresh {
            if let Some(key) = known {
                return Ok(key);
            }
            // An unknown `kid` while the keys are current: Google may have rotated. Look once, not often.
            if recently_refetched {
                return Err(OidcError::UnknownKey);
            }
            self.cache.write().await.last_kid_refetch = Some(now);
        } else if recently_attempted {
            // The keys are due but the last fetch failed moments ago: make do with what is there.
            return match known {
                Some(key) => Ok(key),
                None if have_keys => Err(OidcError::UnknownKey),
                None => Err(OidcError::JwksUnavailable),
            };
        }
        match self.refresh(now).await {
            Ok(()) => self.cache.read().await.keys.get(kid).cloned().ok_or(OidcError::UnknownKey),
            Err(reason) => {
                tracing::warn!(url = %self.config.jwks_url, error = %reason, "cannot fetch the OIDC signing keys");
                // Keys past their time are better than none while Google cannot be reached.
                match known {
                    Some(key) => Ok(key),
                    None => Err(OidcError::JwksUnavailable),
                }
            }
        }
    }

    /// Fetches the JWKS and replaces the cached keys with it.
    async fn refresh(&self, now: Instant) -> Result<(), String> {
        self.cache.write().await.last_attempt = Some(now);
        let (keys, max_age) = self.fetch().await?;
        let ttl = Duration::from_secs(max_age.unwrap_or(self.config.jwks_ttl_seconds)).max(REFETCH_MIN_INTERVAL);
        tracing::debug!(keys = keys.len(), ttl_seconds = ttl.as_secs(), "fetched the OIDC signing keys");
        let mut cache = self.cache.write().await;
        cache.keys = keys;
        cache.fresh_until = Some(Instant::now() + ttl);
        Ok(())
    }

    async fn fetch(&self) -> Result<(HashMap<String, Arc<DecodingKey>>, Option<u64>), String> {
        let mut response = self
            .http
            .get(&self.config.jwks_url)
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let max_age = response.headers().get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(max_age);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("reading the body failed: {e}"))? {
            if body.len() + chunk.len() > JWKS_BYTES_MAX {
                return Err(format!("the document is larger than {JWKS_BYTES_MAX} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((signing_keys(&body)?, max_age))
    }
}

/// The RS256 signing keys of a JWKS document, by `kid`. Public (hidden) for the `oidc_jwks` fuzz target.
#[doc(hidden)]
pub fn signing_keys(jwks: &[u8]) -> Result<HashMap<String, Arc<DecodingKey>>, String> {
    let document: JwksDocument = serde_json::from_slice(jwks).map_err(|e| format!("not a JWKS: {e}"))?;
    let keys: HashMap<_, _> = document.keys.iter().filter_map(rsa_signing_key).collect();
    if keys.is_empty() {
        return Err("the JWKS has no RS256 signing key".to_owned());
    }
    Ok(keys)
}

/// The token from `Authorization` and the `kid` of its key, from a header that says RS256.
fn token_and_kid(authorization: Option<&str>) -> Result<(&str, String), OidcError> {
    let token = bearer_token(authorization)?;
    let header = jsonwebtoken::decode_header(token).map_err(|_| OidcError::Malformed)?;
    // Checked before any key is looked up, so that `none`, HS256 (a "secret" that is really the public key)
    // and the rest never reach the cache or the network.
    if header.alg != Algorithm::RS256 {
        return Err(OidcError::Malformed);
    }
    let kid = header.kid.filter(|k| !k.is_empty()).ok_or(OidcError::Malformed)?;
    Ok((token, kid))
}

/// The token from `Bearer <token>` (the scheme in any case, as RFC 7235 has it).
fn bearer_token(authorization: Option<&str>) -> Result<&str, OidcError> {
    let value = authorization.map(str::trim).filter(|v| !v.is_empty()).ok_or(OidcError::Missing)?;
    let (scheme, token) = value.split_once(' ').ok_or(OidcError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(OidcError::Malformed);
    }
    Ok(token)
}

/// `(kid, key)` from one JWK, when it is an RSA key for RS256 signatures; anything else in the set is skipped.
fn rsa_signing_key(jwk: &Value) -> Option<(String, Arc<DecodingKey>)> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    if field("kty") != Some("RSA")
        || field("alg").is_some_and(|a| a != "RS256")
        || field("use").is_some_and(|u| u != "sig")
    {
        return None;
    }
    // JWKs are base64url without padding; some publishers pad anyway.
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let kid = field("kid").filter(|k| !k.is_empty())?;
    let n = LENIENT.decode(field("n")?).ok().filter(|n| !n.is_empty())?;
    let e = LENIENT.decode(field("e")?).ok().filter(|e| !e.is_empty())?;
    Some((kid.to_owned(), Arc::new(DecodingKey::from_rsa_raw_components(&n, &e))))
}

/// `max-age` from a `Cache-Control` value. Public (hidden) for the `oidc_jwks` fuzz target.
#[doc(hidden)]
pub fn max_age(cache_control: &str) -> Option<u64> {
    cache_control.split(',').find_map(|directive| {
        let (name, value) = directive.trim().split_once('=')?;
        if name.trim().eq_ignore_ascii_case("max-age") { value.trim().trim_matches('"').parse().ok() } else { None }
    })
}

/// The verdict of `jsonwebtoken` on signature and registered claims, in this module's words.
fn classify(error: jsonwebtoken::errors::Error) -> OidcError {
    match error.kind() {
        ErrorKind::InvalidSignature | ErrorKind::InvalidRsaKey(_) => OidcError::BadSignature,
        ErrorKind::ExpiredSignature => OidcError::Expired,
        ErrorKind::InvalidAudience => OidcError::WrongAudience,
        ErrorKind::InvalidIssuer => OidcError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => OidcError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => OidcError::WrongIssuer,
        _ => OidcError::Malformed,
    }
}

/// axum middleware: with `Some(verifier)` a request needs a valid token (else 401, or 503 when the keys cannot be
/// fetched at all, and the handler never runs); the verified [`Claims`] go into the request's extensions. With
/// `None` (authentication off) every request goes through.
pub async fn require_token(
    State(verifier): State<Option<Arc<OidcVerifier>>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(verifier) = verifier else {
        return next.run(request).await;
    };
    let verdict = match request.headers().get(header::AUTHORIZATION).map(HeaderValue::to_str) {
        None => verifier.verify(None).await,
        Some(Ok(value)) => verifier.verify(Some(value)).await,
        Some(Err(_)) => Err(OidcError::Malformed),
    };
    match verdict {
        Ok(claims) => {
            tracing::debug!(email = %claims.email, "caller authenticated");
            request.extensions_mut().insert(claims);
            next.run(request).await
        }
        Err(reason) => {
            tracing::info!(reason = reason.code(), path = %request.uri().path(), "request refused: no valid OIDC token");
            reason.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_token_is_taken_from_its_header_whatever_the_scheme_case() {
        assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Ok("abc"));
        assert_eq!(bearer_token(None), Err(OidcError::Missing));
        assert_eq!(bearer_token(Some("  ")), Err(OidcError::Missing));
        assert_eq!(bearer_token(Some("Basic abc")), Err(OidcError::Malformed));
        assert_eq!(bearer_token(Some("Bearer")), Err(OidcError::Malformed));
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(max_age("public, max-age=19970, must-revalidate, no-transform"), Some(19970));
        assert_eq!(max_age("no-cache"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }

    #[test]
    fn emails_are_a_comma_separated_list() {
        assert_eq!(
            OidcConfig::parse_emails(" a@x.iam.gserviceaccount.com, ,b@y "),
            vec!["a@x.iam.gserviceaccount.com", "b@y"]
        );
    }

    #[test]
    fn a_token_that_is_not_rs256_with_a_kid_is_refused_before_any_key_is_looked_up() {
        let verifier = OidcVerifier::new(OidcConfig::new("aud", vec![]), reqwest::Client::new());
        let segment = |value: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
        for header in [json!({"alg": "none", "kid": "k"}), json!({"alg": "HS256", "kid": "k"}), json!({"alg": "RS256"})]
        {
            let authorization = format!("Bearer {}.{}.c2ln", segment(header), segment(json!({"sub": "s"})));
            let looked_up = std::cell::Cell::new(false);
            let verdict = verifier.verify_with_keys(Some(&authorization), |_| {
                looked_up.set(true);
                None
            });
            assert_eq!(verdict, Err(OidcError::Malformed));
            assert!(!looked_up.get(), "{authorization}");
        }
    }

    #[test]
    fn a_jwks_gives_its_rsa_signing_keys_or_says_why_not() {
        let one = json!({"keys": [{"kty": "RSA", "kid": "k", "n": "AQAB", "e": "AQAB"}, {"kty": "EC", "kid": "e"}]});
        assert_eq!(signing_keys(one.to_string().as_bytes()).map(|keys| keys.len()), Ok(1));
        assert!(signing_keys(br#"{"keys": []}"#).is_err());
        assert!(signing_keys(b"<html>").is_err());
    }

    #[test]
    fn only_rsa_signing_keys_are_kept() {
        let rsa = json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "k", "n": "AQAB", "e": "AQAB"});
        let ec = json!({"kty": "EC", "kid": "e", "crv": "P-256", "x": "AQAB", "y": "AQAB"});
        let enc = json!({"kty": "RSA", "use": "enc", "kid": "x", "n": "AQAB", "e": "AQAB"});
        assert!(rsa_signing_key(&rsa).is_some());
        assert!(rsa_signing_key(&ec).is_none());
        assert!(rsa_signing_key(&enc).is_none());
    }
}

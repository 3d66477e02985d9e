//! What Stockroom's Google adapters share (Spanner in the store; Pub/Sub and BigQuery in `stockroom-gcp`), all
//! speaking Google's REST APIs over `reqwest`: how a request is sent and authorised (nothing for an emulator, else the metadata server's access token, cached), how a failed
//! one is put into words, and how long to wait before trying again. What a failure means (retry, refuse, stop) is
//! each API's own, in its module.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;
use tokio::sync::Mutex;

/// The metadata server's access token for the instance's default service account.
pub const METADATA_TOKEN_URL: &str =
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token";

/// A cached token is replaced this long before it expires.
const TOKEN_REFRESH_EARLY: Duration = Duration::from_secs(300);
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How much of an error answer goes into a reason.
const ERROR_BODY_CHARS: usize = 400;

/// How requests are authorised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// Nothing (an emulator).
    None,
    /// A bearer token from the metadata server at this URL, sent with `Metadata-Flavor: Google`.
    Metadata { token_url: String },
}

impl Auth {
    /// None when the endpoint is plain `http://` (an emulator: Google serves only HTTPS), else metadata-server
    /// tokens.
    pub fn for_endpoint(endpoint: &str) -> Self {
        if endpoint.starts_with("http://") {
            Self::None
        } else {
            Self::Metadata { token_url: METADATA_TOKEN_URL.to_owned() }
        }
    }
}

/// The endpoint of the emulator an environment variable names (`PUBSUB_EMULATOR_HOST`, `BIGQUERY_EMULATOR_HOST`)
/// when it is set, as `host:port` (Google's clients' convention) or a whole `http://host:port`; else `google`.
pub fn emulator_endpoint(var: &str, google: &str) -> String {
    let host = std::env::var(var).unwrap_or_default();
    let host = host.trim();
    if host.is_empty() {
        google.to_owned()
    } else if host.contains("://") {
        host.to_owned()
    } else {
        format!("http://{host}")
    }
}

/// One Google REST API as an adapter calls it: where (the endpoint), with what (the HTTP client, built once by the
/// caller), as whom (the token the [`Auth`] calls for), and how long a request may take (token fetches included).
pub struct Api {
    /// Without a trailing `/`: paths are appended to it.
    endpoint: String,
    http: reqwest::Client,
    token: MetadataToken,
    timeout: Duration,
}

/// Why a request got no 2xx answer.
#[derive(Debug)]
pub enum Refusal {
    /// Worth another try: no answer (timed out, could not connect), no token yet, or the token was refused (it is
    /// forgotten, so the next try fetches a fresh one).
    Transient(String),
    /// The metadata server refused a token: nothing can succeed until someone acts.
    Fatal(String),
    /// Any other answer outside 2xx, for the API's own rules. `reason` is `METHOD url: HTTP status: body…`.
    Status {
        status: StatusCode,
        reason: String,
        /// The whole answer (BigQuery's error reasons are in it; Pub/Sub goes by the status alone).
        body: String,
        retry_after: Option<Duration>,
    },
}

impl Api {
    /// No auth when the endpoint is plain `http://` (an emulator: Google serves only HTTPS), else metadata-server
    /// tokens.
    pub fn new(http: reqwest::Client, endpoint: &str, timeout_ms: u64) -> Self {
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let token = MetadataToken::new(Auth::for_endpoint(&endpoint));
        Self { endpoint, http, token, timeout: Duration::from_millis(timeout_ms.max(1)) }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn with_auth(self, auth: Auth) -> Self {
        Self { token: MetadataToken::new(auth), ..self }
    }

    /// Sends one request, with a JSON body if there is one; the answer when it is 2xx, to be read by the caller.
    pub async fn send(&self, method: Method, url: &str, json: Option<Vec<u8>>) -> Result<Response, Refusal> {
        let token = self.token.bearer(&self.http, self.timeout).await?;
        let mut request = self.http.request(method.clone(), url).timeout(self.timeout);
        if let Some(body) = json {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| Refusal::Transient(describe(url, &e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry_after(response.headers());
        let body = response.text().await.unwrap_or_default();
        let reason = format!("{method} {url}: HTTP {status}: {}", truncate(&body, ERROR_BODY_CHARS));
        if status == StatusCode::UNAUTHORIZED && token.is_some() {
            self.token.forget().await;
            return Err(Refusal::Transient(reason));
        }
        Err(Refusal::Status { status, reason, body, retry_after })
    }
}

/// The bearer token an [`Auth`] calls for: none, or the metadata server's, cached until shortly before it expires.
struct MetadataToken {
    auth: Auth,
    cached: Mutex<Option<CachedToken>>,
}

struct CachedToken {
    value: String,
    refresh_at: Instant,
}

impl MetadataToken {
    fn new(auth: Auth) -> Self {
        Self { auth, cached: Mutex::new(None) }
    }

    /// The token to send, if any: the cached one, or a fresh one when it is missing or about to expire.
    async fn bearer(&self, http: &reqwest::Client, timeout: Duration) -> Result<Option<String>, Refusal> {
        let Auth::Metadata { token_url } = &self.auth else {
            return Ok(None);
        };
        // Held across the fetch: concurrent callers wait for one fetch instead of each making one.
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.refresh_at
        {
            return Ok(Some(token.value.clone()));
        }
        let failed = |e: reqwest::Error| Refusal::Transient(format!("access token: {}", describe(token_url, &e)));
        let response =
            http.get(token_url).header("Metadata-Flavor", "Google").timeout(timeout).send().await.map_err(failed)?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let reason = format!("access token: GET {token_url}: HTTP {status}: {}", truncate(&text, ERROR_BODY_CHARS));
            return Err(if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                Refusal::Transient(reason)
            } else {
                Refusal::Fatal(reason)
            });
        }
        let token: Value = response.json().await.map_err(failed)?;
        let (Some(value), Some(expires_in)) = (token["access_token"].as_str(), token["expires_in"].as_u64()) else {
            return Err(Refusal::Transient(format!("access token: GET {token_url}: no access_token/expires_in")));
        };
        let lifetime = Duration::from_secs(expires_in);
        let early = TOKEN_REFRESH_EARLY.min(lifetime / 2);
        *cached = Some(CachedToken { value: value.to_owned(), refresh_at: Instant::now() + lifetime - early });
        Ok(Some(value.to_owned()))
    }

    /// Drops the cached token (the server refused it): the next request fetches a fresh one.
    async fn forget(&self) {
        *self.cached.lock().await = None;
    }
}

/// Exponential from [`BACKOFF_FIRST`], at most [`BACKOFF_MAX`], with up to 25 % jitter; the server's
/// `Retry-After` when longer (capped too).
pub fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let exp = BACKOFF_FIRST.saturating_mul(2u32.saturating_pow(attempt.min(16))).min(BACKOFF_MAX);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or_default();
    let jitter = exp.mul_f64(f64::from(nanos % 1000) / 4000.0);
    (exp + jitter).max(retry_after.unwrap_or_default().min(BACKOFF_MAX))
}

/// An answer's `Retry-After`, when it gives one in seconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A failed request in words: what went wrong and why, the whole cause chain.
pub fn describe(url: &str, e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    // reqwest's Display stops at the outermost error; the cause (refused, reset, ...) is in the sources.
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    format!("{url}: {what}: {detail}")
}

/// The first `max_chars` characters of `s`, with `…` when there were more.
pub fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0, None) >= BACKOFF_FIRST && backoff(0, None) < BACKOFF_FIRST * 2);
        assert!(backoff(3, None) >= BACKOFF_FIRST * 8);
        assert!(backoff(30, None) <= BACKOFF_MAX + BACKOFF_MAX / 4);
        assert_eq!(backoff(0, Some(Duration::from_secs(3))), Duration::from_secs(3));
    }

    #[test]
    fn an_emulator_gets_no_auth_and_google_gets_metadata_tokens() {
        assert_eq!(Auth::for_endpoint("http://127.0.0.1:8085"), Auth::None);
        let google = Auth::Metadata { token_url: METADATA_TOKEN_URL.to_owned() };
        assert_eq!(Auth::for_endpoint("https://pubsub.googleapis.com"), google);
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate("ääää", 2), "ää…");
        assert_eq!(truncate("ab", 2), "ab");
    }
}

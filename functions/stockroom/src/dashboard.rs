//! The dashboard at `/`: one HTML page, its script and its stylesheet, compiled into the binary so that
//! `stockroom serve` needs no files beside it. The page reads the public API (`/v1/analytics/*`,
//! `/v1/locations`, `/v1/events/stream`) like any other client; nothing here touches the store.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
/// Small enough to live here rather than as a file; without an icon the browser asks for `/favicon.ico` and
/// logs the 404 as an error.
const FAVICON_SVG: &str = concat!(
    r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">"##,
    r##"<rect width="32" height="32" rx="7" fill="#1f2937"/>"##,
    r##"<rect x="7" y="17" width="5" height="8" rx="1" fill="#34d399"/>"##,
    r##"<rect x="14" y="11" width="5" height="14" rx="1" fill="#fbbf24"/>"##,
    r##"<rect x="21" y="7" width="5" height="18" rx="1" fill="#f87171"/>"##,
    "</svg>"
);

/// Everything comes from this origin; no inline script or style, no frames, no plugins. The page builds its DOM
/// with `textContent` and `createElementNS`, which this policy allows.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// `GET /`, `GET /assets/app.js`, `GET /assets/app.css` and the icon.
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/assets/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/assets/favicon.svg", get(|| async { asset("image/svg+xml", FAVICON_SVG) }))
}

/// The assets change with the binary, so the browser revalidates instead of keeping an old script.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY")),
    ];
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn get(path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let request = Request::get(path).body(Body::empty()).expect("request");
        let response = super::router().oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn header<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> &'a str {
        headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    #[tokio::test]
    async fn the_page_is_html_that_loads_only_its_own_assets() {
        let (status, headers, body) = get("/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
        assert_eq!(header(&headers, "cache-control"), "no-cache");
        let csp = header(&headers, "content-security-policy");
        assert!(csp.contains("default-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
        assert!(body.contains(r#"<script src="/assets/app.js""#), "the page loads its script");
        assert!(body.contains(r#"href="/assets/app.css""#), "the page loads its stylesheet");
        assert!(!body.contains("<script>") && !body.contains("http://") && !body.contains("https://"));
    }

    #[tokio::test]
    async fn each_asset_answers_with_its_content_type() {
        for (path, content_type, sample) in [
            ("/assets/app.js", "text/javascript; charset=utf-8", "EventSource"),
            ("/assets/app.css", "text/css; charset=utf-8", ".badge"),
            ("/assets/favicon.svg", "image/svg+xml", "<svg"),
        ] {
            let (status, headers, body) = get(path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(header(&headers, "content-type"), content_type, "{path}");
            assert_eq!(header(&headers, "cache-control"), "no-cache", "{path}");
            assert!(body.contains(sample), "{path} serves its file");
        }
    }

    #[test]
    fn the_script_never_inserts_markup() {
        // Server strings reach the DOM through textContent only.
        assert!(!super::APP_JS.contains("innerHTML") && !super::APP_JS.contains("insertAdjacentHTML"));
    }
}

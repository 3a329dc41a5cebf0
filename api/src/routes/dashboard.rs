//! The dashboard: `/` and `/assets/{file}`, plain HTML, CSS and JavaScript
//! compiled into the binary (`api/assets/dashboard/`), so the page works from
//! any API instance and loads nothing from another host.
//!
//! The page itself needs no token: it asks for one and sends it on every `/v1`
//! call (and as the WebSocket subprotocol). Every response carries a strict
//! Content-Security-Policy: scripts, styles and connections to this origin
//! only, no inline script, no framing.
//!
//! Caching: `index.html` is revalidated on every load (`no-cache` + `ETag`) and
//! links each asset as `/assets/<file>?v=<digest of every asset>`, so an asset
//! asked for with the current digest can be cached for a year; a new binary
//! changes the digest, and browsers fetch the new files.

use std::sync::LazyLock;

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// What every dashboard response allows the browser to do. `connect-src 'self'`
/// covers `ws:`/`wss:` to this same host and port (CSP level 3).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// The files under `/assets/`: name, content type, bytes.
const ASSETS: [(&str, &str, &[u8]); 2] = [
    ("app.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/dashboard/app.js")),
    ("app.css", "text/css; charset=utf-8", include_bytes!("../../assets/dashboard/app.css")),
];

/// `index.html` as written; `{{version}}` marks where the asset digest goes.
const INDEX_TEMPLATE: &str = include_str!("../../assets/dashboard/index.html");

/// Cache for an asset asked for with the current digest: it never changes.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Cache for the page and for assets asked for without the digest: revalidate.
const REVALIDATE: &str = "no-cache";

/// The page with the asset digest filled in, and the digest.
struct Page {
    html: String,
    version: String,
}

static PAGE: LazyLock<Page> = LazyLock::new(|| {
    let mut digest = Sha256::new();
    for (name, _, bytes) in ASSETS {
        digest.update(name.as_bytes());
        digest.update(bytes);
    }
    let version = hex::encode(&digest.finalize()[..8]);
    Page { html: INDEX_TEMPLATE.replace("{{version}}", &version), version }
});

#[derive(Debug, Deserialize)]
pub struct AssetQuery {
    v: Option<String>,
}

/// `GET /` — the dashboard page.
pub async fn get_dashboard(headers: HeaderMap) -> Response {
    let page = &*PAGE;
    respond(&headers, "text/html; charset=utf-8", page.html.as_bytes(), REVALIDATE)
}

/// `GET /assets/{file}` — the page's script or style sheet.
pub async fn get_asset(
    headers: HeaderMap,
    Path(file): Path<String>,
    Query(query): Query<AssetQuery>,
) -> Result<Response, ApiError> {
    let (_, content_type, bytes) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| ApiError::RouteNotFound(format!("/assets/{file}")))?;
    let cache = if query.v.as_deref() == Some(PAGE.version.as_str()) { IMMUTABLE } else { REVALIDATE };
    Ok(respond(&headers, content_type, bytes, cache))
}

/// 200 with the body, or 304 when the client already holds this exact body.
fn respond(request: &HeaderMap, content_type: &'static str, body: &'static [u8], cache: &'static str) -> Response {
    let etag = format!("\"{}\"", hex::encode(&Sha256::digest(body)[..12]));
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

//! The dashboard at `/`: served by the API itself with a strict CSP and assets
//! that name no other host; and driven in a real browser (Debian's chromium,
//! headless, by playwright-core in `tests/browser/dashboard.mjs`) against the
//! real API and a worker: sign in, submit a job and watch it go `queued →
//! running → succeeded` live, retry a failed one, open a job's history.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reqwest::{StatusCode, header};
use support::System;

/// The browser run's own budget (`TIMEOUT_MS`); the test waits a little longer.
const BROWSER_BUDGET: Duration = Duration::from_secs(120);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the worker crate sits in the workspace").to_owned()
}

/// Where test artifacts go: `$CARGO_TARGET_DIR/test-artifacts`, or the workspace's `target/`.
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| if dir.is_relative() { workspace_root().join(dir) } else { dir })
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("test-artifacts")
}

/// Every `http://` or `https://` URL in `text` whose host is not this machine.
fn foreign_urls(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for scheme in ["http://", "https://"] {
        for (at, _) in text.match_indices(scheme) {
            let rest = &text[at + scheme.len()..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || ".-:[]".contains(c))).unwrap_or(rest.len());
            let authority = &rest[..end];
            let host = authority.rsplit_once(':').map_or(authority, |(host, _)| host);
            if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
                found.push(format!("{scheme}{authority}"));
            }
        }
    }
    found
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_csp_and_its_assets_name_no_other_host() {
    let system = System::start().await;
    // The page itself needs no token: it asks for one.
    let anonymous = reqwest::Client::new();
    let page = anonymous.get(system.url("/")).send().await.expect("request sent");
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().expect("ascii");
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.split(';').any(|d| d.trim() == directive), "CSP lacks `{directive}`: {csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    let html = page.text().await.expect("body");
    assert!(html.starts_with("<!doctype html>"), "{}", &html[..60.min(html.len())]);
    // No inline script (the CSP would block it anyway): every <script> has a src, no handler attributes.
    for tag in html.split("<script").skip(1) {
        let open = &tag[..tag.find('>').unwrap_or(tag.len())];
        assert!(open.contains(" src="), "inline <script{open}>");
    }
    for handler in ["onclick=", "onload=", "onerror=", "onsubmit=", "onchange=", "javascript:"] {
        assert!(!html.contains(handler), "index.html has `{handler}`");
    }
    assert!(!html.contains("{{version}}"), "the asset version was not filled in");
    assert_eq!(foreign_urls(&html), Vec::<String>::new(), "index.html names another host");

    // The same body again is a 304.
    let etag = headers[header::ETAG].clone();
    let again = anonymous.get(system.url("/")).header(header::IF_NONE_MATCH, etag).send().await.expect("sent");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    // Every asset the page links is served here, typed, cacheable for good under its version.
    let assets: Vec<&str> = html.split(['"', '\'']).filter(|part| part.starts_with("/assets/")).collect();
    assert_eq!(assets.len(), 2, "the page links app.css and app.js: {assets:?}");
    for asset in assets {
        let response = anonymous.get(system.url(asset)).send().await.expect("request sent");
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        let content_type = response.headers()[header::CONTENT_TYPE].to_str().expect("ascii").to_owned();
        let expected =
            if asset.contains(".js?") { "text/javascript; charset=utf-8" } else { "text/css; charset=utf-8" };
        assert_eq!(content_type, expected, "{asset}");
        assert_eq!(response.headers()[header::CACHE_CONTROL], "public, max-age=31536000, immutable", "{asset}");
        let body = response.text().await.expect("body");
        assert_eq!(foreign_urls(&body), Vec::<String>::new(), "{asset} names another host");
        assert!(!body.contains("@import") && !body.contains("@font-face"), "{asset} loads more");
    }

    // Without the current version an asset is revalidated; an unknown one is a JSON 404.
    let stale = anonymous.get(system.url("/assets/app.js?v=old")).send().await.expect("sent");
    assert_eq!(stale.headers()[header::CACHE_CONTROL], "no-cache");
    let missing = anonymous.get(system.url("/assets/secrets.txt")).send().await.expect("sent");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let traversal = anonymous.get(system.url("/assets/..%2FCargo.toml")).send().await.expect("sent");
    assert_eq!(traversal.status(), StatusCode::NOT_FOUND);
}

#[test]
fn foreign_urls_finds_other_hosts_only() {
    let text =
        "fetch('/v1/jobs'); a='http://127.0.0.1:8080/x'; b=\"https://cdn.example.com/lib.js\"; c=http://localhost";
    assert_eq!(foreign_urls(text), vec!["https://cdn.example.com".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_real_browser_a_job_goes_queued_running_succeeded_live_and_a_failed_one_is_retried() {
    let root = workspace_root();
    let browser_dir = root.join("tests/browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run `npm ci` in tests/browser (.ci/run does)"
    );
    let chromium = std::env::var_os("CHROMIUM").unwrap_or_else(|| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no browser at {chromium:?}: install Debian's chromium (.ci/run does) or set CHROMIUM"
    );

    let system = System::start().await;
    let worker = system.spawn_worker();
    let token = support::token(support::TENANT, "jobs:write jobs:read", Duration::from_secs(600));
    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let screenshot = artifacts.join("dashboard.png");
    for stale in ["dashboard.png", "dashboard-detail.png", "dashboard-failure.png"] {
        let _ = std::fs::remove_file(artifacts.join(stale));
    }

    let run = tokio::process::Command::new("node")
        .arg(browser_dir.join("dashboard.mjs"))
        .current_dir(&browser_dir)
        .env("BASE_URL", &system.base)
        .env("TOKEN", &token)
        .env("TENANT", support::TENANT)
        .env("SCREENSHOT", &screenshot)
        .env("CHROMIUM", &chromium)
        .env("TIMEOUT_MS", BROWSER_BUDGET.as_millis().to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(BROWSER_BUDGET + Duration::from_secs(30), run)
        .await
        .expect("the browser test finished in time")
        .expect("node runs (is Node.js installed?)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(output.status.success(), "the browser test failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("PASS"), "{stdout}");
    let size = std::fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "no screenshot at {} ({size} bytes)", screenshot.display());
    worker.shutdown().await.expect("worker stops");
}

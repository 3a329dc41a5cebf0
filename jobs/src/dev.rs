//! `jobs dev`: the whole system in one process, for trying it out locally —
//! the API on BIND_ADDR and one worker, sharing one shutdown signal. When no
//! Redis answers at REDIS_URL and `redis-server` is installed, a local one is
//! started with its append-only file under `./data`, and stopped on exit.
//! Without JWT_SECRET, a random one is made for this run, and a ready-to-use
//! token for tenant `dev` is printed. Without SMTP_URL, mail goes to a built-in
//! catcher (`mailcatcher.rs`), whose messages an operator token reads at
//! `GET /dev/mail` (the dashboard's Mail panel).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use worker::config::WorkerConfig;

pub async fn run(mut config: WorkerConfig) -> anyhow::Result<()> {
    config.dev = true;
    let mut api_config = api::config::ApiConfig::defaults();
    api_config.dev = true;
    api_config.auth.admin_tenant.get_or_insert_with(|| "dev".to_owned());
    if api_config.auth.jwt_secret.is_none() {
        let secret: [u8; 32] = rand::random();
        api_config.auth.jwt_secret = Some(hex::encode(secret).into());
    }
    let token = api::auth::mint(
        &api_config.auth,
        &api::auth::TokenRequest {
            tenant: "dev",
            subject: "dev",
            scope: "jobs:write jobs:read admin",
            ttl: Duration::from_secs(24 * 3600),
            private_key_file: None,
        },
    )?;
    let _local_redis = ensure_redis(&config.redis.redis_url).await?;
    let mut router = api::build(&api_config).await?;
    if std::env::var_os("SMTP_URL").is_none() {
        let (url, mailbox) = crate::mailcatcher::start().await.context("cannot start the mail catcher")?;
        config.smtp_url = url.clone().into();
        let auth = std::sync::Arc::new(api::auth::Authenticator::from_config(&api_config.auth)?);
        router = router.merge(mail_routes(mailbox, auth));
        println!("No SMTP_URL: mail goes to the built-in catcher at {url}; the dashboard shows it (GET /dev/mail)");
    }
    let listener = tokio::net::TcpListener::bind(api_config.bind_addr)
        .await
        .with_context(|| format!("cannot listen on BIND_ADDR={}", api_config.bind_addr))?;
    let addr = listener.local_addr()?;
    println!("API listening on http://{addr}  (dashboard: http://{addr}/)");
    println!("Dev token (tenant `dev`, all scopes, valid 24 h):\n\nexport TOKEN={token}\n");
    println!(
        "try: curl -X POST http://{addr}/v1/jobs -H \"authorization: Bearer $TOKEN\" -H 'content-type: application/json' -d '{{\"type\":\"noop\"}}'"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shared::shutdown::signal().await;
        stop_tx.send_replace(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let (served, worked) =
        tokio::join!(api::serve(listener, router, stopped(stop_rx.clone())), worker::run(config, stopped(stop_rx)),);
    served?;
    worked
}

/// `GET /dev/mail`: the caught messages, newest first, for an operator token.
fn mail_routes(mailbox: crate::mailcatcher::Mailbox, auth: std::sync::Arc<api::auth::Authenticator>) -> axum::Router {
    use axum::http::{HeaderMap, header};
    use axum::response::IntoResponse;

    let caught = move |headers: HeaderMap| async move {
        let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        let token = bearer.strip_prefix("Bearer ").unwrap_or("");
        let allowed = auth.verify(token).and_then(|caller| caller.require_operator());
        match allowed {
            Ok(()) => {
                let mut messages = mailbox.messages();
                messages.reverse();
                axum::Json(serde_json::json!({ "messages": messages })).into_response()
            }
            Err(err) => err.into_response(),
        }
    };
    axum::Router::new().route("/dev/mail", axum::routing::get(caught))
}

/// Checks that Redis answers at `url`; if not, starts a local `redis-server`.
/// The returned child (if any) is killed when dropped.
async fn ensure_redis(url: &str) -> anyhow::Result<Option<Child>> {
    if answers(url).await {
        return Ok(None);
    }
    let info = redis::Client::open(url).context("REDIS_URL is not a Redis URL")?.get_connection_info().clone();
    let (host, port) = match info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
        other => bail!("no Redis answers at REDIS_URL ({other}) and only a local TCP one can be started"),
    };
    if !matches!(host.as_str(), "127.0.0.1" | "localhost" | "::1") {
        bail!("no Redis answers at REDIS_URL ({host}:{port})");
    }
    let data = Path::new("data");
    std::fs::create_dir_all(data).context("cannot create ./data for the local Redis")?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "yes", "--appendfsync", "everysec", "--dir"])
        .arg(data)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("no Redis answers at REDIS_URL and redis-server could not be started (is it installed?)")?;
    for _ in 0..100 {
        if answers(url).await {
            println!("started a local redis-server on 127.0.0.1:{port} (append-only file in ./data)");
            return Ok(Some(child));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("started redis-server on port {port}, but it did not answer within 10 s")
}

async fn answers(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else { return false };
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), ping).await, Ok(Ok(_)))
}

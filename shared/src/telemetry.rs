//! Logging set-up shared by both binaries: `tracing` to stderr, as text or JSON,
//! filtered by RUST_LOG (default `info`).

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Safe to call twice (the second call is a no-op),
/// which tests that start several components in one process rely on.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
}

/// Installs the Prometheus recorder. With `listen`, the exporter serves
/// `GET /metrics` on that address itself (the worker has no other HTTP server);
/// without, the caller renders the returned handle (the API's own `/metrics`).
/// Only one recorder can exist per process; a second install returns `None`.
pub fn install_metrics(listen: Option<std::net::SocketAddr>) -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    let builder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0])
        .ok()?;
    match listen {
        Some(addr) => match builder.with_http_listener(addr).install() {
            Ok(()) => {
                tracing::info!(%addr, "metrics on http://{addr}/metrics");
                None
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot install the metrics exporter");
                None
            }
        },
        None => match builder.install_recorder() {
            Ok(handle) => Some(handle),
            Err(err) => {
                tracing::debug!(error = %err, "a metrics recorder is already installed");
                None
            }
        },
    }
}

//! The worker binary's command line: configuration errors fail fast and name the variable.

use std::process::Command;

#[test]
fn a_bad_environment_value_stops_the_worker_naming_the_variable() {
    for (variable, value) in [("CONCURRENCY", "lots"), ("LEASE_SECS", "0"), ("MAIL_FROM", "not an address")] {
        let output = Command::new(env!("CARGO_BIN_EXE_worker")).env(variable, value).output().unwrap();
        assert!(!output.status.success(), "{variable}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(variable), "{variable}: {stderr}");
    }
}

#[test]
fn help_lists_every_setting_with_its_environment_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_worker")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in [
        "REDIS_URL",
        "REDIS_PREFIX",
        "QUEUES",
        "CONCURRENCY",
        "LEASE_SECS",
        "SHUTDOWN_GRACE_SECS",
        "SMTP_URL",
        "MAIL_FROM",
        "DEMO_JOBS",
        "METRICS_ADDR",
    ] {
        assert!(help.contains(&format!("[env: {variable}")), "--help lacks {variable}:\n{help}");
    }
}

/// The deployable worker carries nothing of the HTTP API: `jobs dev` is where
/// both halves run together.
#[test]
fn the_worker_binary_links_nothing_of_the_http_api() {
    let binary = std::fs::read(env!("CARGO_BIN_EXE_worker")).unwrap();
    // Its symbols name every crate it links.
    let text = String::from_utf8_lossy(&binary);
    for library in ["axum", "utoipa_swagger_ui", "tokio_tungstenite", "governor"] {
        assert!(!text.contains(library), "the worker binary contains {library}");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_worker")).arg("dev").output().unwrap();
    assert!(!output.status.success(), "`worker dev` is gone: `jobs dev` runs both halves");
}

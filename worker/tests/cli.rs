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

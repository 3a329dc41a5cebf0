//! Test harness for integration tests: a real `redis-server` process and a real
//! in-process SMTP server, each on a free `127.0.0.1` port. Nothing is mocked —
//! the point is to exercise the same wire protocols production uses, including
//! crashes (SIGKILL + AOF reload) and SMTP 4xx/5xx replies.
//!
//! Compiled only with the `testkit` cargo feature, so production builds carry
//! none of it. Harness failures (no `redis-server`, no free port) panic with a
//! message saying what to fix: a test that cannot set up must fail loudly,
//! never pass vacuously.
//!
//! # Layout
//! - [`RedisServer`] — spawns and controls a `redis-server` child process.
//! - [`SmtpServer`] — an SMTP sink recording [`ReceivedMail`], with a
//!   switchable [`SmtpMode`] to inject temporary and permanent failures.
//! - [`free_port`] — a port nobody listens on right now.

mod redis_server;
mod smtp_server;

pub use redis_server::RedisServer;
pub use smtp_server::{ReceivedMail, SmtpMode, SmtpServer};

use std::net::TcpListener;

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is released before returning, so another process may grab it in
/// between; callers that spawn a server on it should retry with a new port if
/// binding fails (as [`RedisServer::start`] does).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("testkit: cannot bind 127.0.0.1:0 to find a free port: {e}"));
    listener.local_addr().unwrap_or_else(|e| panic!("testkit: bound socket has no local address: {e}")).port()
}

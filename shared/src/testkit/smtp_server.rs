//! An SMTP sink on a free port, served in-process by `mailin-embedded` on a
//! background thread. It records every accepted message and can be switched to
//! answer RCPT with 451 or 550, so tests drive the mailer's retry and give-up
//! paths through a real SMTP conversation rather than a mocked transport.

use std::io;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use mailin_embedded::{Handler, Response, Server, response};

/// Sessions served at once. mailin-embedded holds a pool thread for a
/// connection's whole life, and a pooled SMTP client keeps idle connections
/// open, so a small pool would queue new connections behind idle ones.
const SESSION_THREADS: u32 = 128;
/// How often [`SmtpServer::wait_for_messages`] looks at the mailbox.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How the server answers `RCPT TO`; change it at any time with [`SmtpServer::set_mode`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SmtpMode {
    /// 250 to every recipient: messages are delivered to the mailbox.
    #[default]
    Accept,
    /// 451 to every recipient: a transient failure the sender should retry.
    TempFail,
    /// 550 to every recipient: a permanent failure the sender must not retry.
    PermFail,
    /// 451 to the next n recipients (counted across connections), then 250.
    TempFailTimes(u32),
}

/// One message the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`), without angle brackets.
    pub from: String,
    /// The accepted envelope recipients (`RCPT TO`), without angle brackets.
    pub to: Vec<String>,
    /// The raw RFC 5322 message, dot-unstuffed, without the final `.` line.
    pub data: String,
}

impl ReceivedMail {
    /// The first header field called `name` (case-insensitive), unfolded and
    /// trimmed; RFC 2047 encoded words are left as they are.
    pub fn header(&self, name: &str) -> Option<String> {
        let (head, _) = split_message(&self.data);
        let mut found: Option<String> = None;
        for line in head.lines() {
            if let Some(value) = found.as_mut() {
                // Unfolding is removing the line break before whitespace (RFC 5322 §2.2.3).
                if line.starts_with([' ', '\t']) {
                    value.push_str(line);
                    continue;
                }
                break;
            }
            if let Some((field, value)) = line.split_once(':')
                && field.trim_end().eq_ignore_ascii_case(name)
            {
                found = Some(value.to_owned());
            }
        }
        found.map(|value| value.trim().to_owned())
    }

    /// The body: everything after the blank line ending the header section,
    /// still in its transfer encoding (e.g. quoted-printable).
    pub fn body(&self) -> &str {
        split_message(&self.data).1
    }
}

/// Splits a message at the first empty line into (header section, body).
fn split_message(data: &str) -> (&str, &str) {
    let mut offset = 0;
    for line in data.split_inclusive('\n') {
        if line == "\r\n" || line == "\n" {
            return (&data[..offset], &data[offset + line.len()..]);
        }
        offset += line.len();
    }
    (data, "")
}

/// What the handler shares with the test: the mode it obeys and what it received.
#[derive(Debug, Default)]
struct Shared {
    mode: SmtpMode,
    /// How long the answer to a message's final `.` is held back.
    reply_delay: Duration,
    mailbox: Vec<ReceivedMail>,
    rcpt_attempts: usize,
}

/// Locks `shared` even if a panicking thread poisoned it: the data stays
/// consistent (every update is a single push or assignment), and one failing
/// test should not turn every later call into a second, confusing panic.
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A real SMTP server on `127.0.0.1:<port>`, without TLS or authentication.
///
/// mailin-embedded cannot be stopped, so the serving thread lives until the
/// test process exits; that is harmless because each test runs in its own
/// process under nextest, and the port is never reused while it lives.
pub struct SmtpServer {
    port: u16,
    shared: Arc<Mutex<Shared>>,
}

impl SmtpServer {
    /// Binds a free port and starts serving in [`SmtpMode::Accept`]. The
    /// listener is bound before this returns, so clients may connect at once.
    ///
    /// # Panics
    /// If no port can be bound or the serving thread cannot be spawned.
    pub fn start() -> Self {
        let listener =
            TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("testkit: cannot bind the SMTP server: {e}"));
        let port =
            listener.local_addr().unwrap_or_else(|e| panic!("testkit: SMTP listener has no address: {e}")).port();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut server = Server::new(Recorder { shared: Arc::clone(&shared), open: None });
        server.with_name("testkit.invalid").with_num_threads(SESSION_THREADS).with_tcp_listener(listener);
        thread::Builder::new()
            .name(format!("testkit-smtp-{port}"))
            .spawn(move || {
                if let Err(e) = server.serve() {
                    eprintln!("testkit: SMTP server on port {port} stopped: {e}");
                }
            })
            .unwrap_or_else(|e| panic!("testkit: cannot spawn the SMTP server thread: {e}"));
        Self { port, shared }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smtp://127.0.0.1:<port>` (plain SMTP, as lettre's `from_url` reads it).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Changes how the following `RCPT TO` commands are answered.
    pub fn set_mode(&self, mode: SmtpMode) {
        lock(&self.shared).mode = mode;
    }

    /// Holds back the answer to each message's final `.` for `delay`: the message
    /// is already in the mailbox, but its sender does not know yet, as with a
    /// slow or overloaded mail server.
    pub fn set_reply_delay(&self, delay: Duration) {
        lock(&self.shared).reply_delay = delay;
    }

    /// The current mode; `TempFailTimes(n)` counts down as failures are served.
    pub fn mode(&self) -> SmtpMode {
        lock(&self.shared).mode
    }

    /// `RCPT TO` commands received so far, accepted or not: shows how often a
    /// sender retried against a failing server.
    pub fn rcpt_attempts(&self) -> usize {
        lock(&self.shared).rcpt_attempts
    }

    /// Every message accepted so far, in arrival order.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        lock(&self.shared).mailbox.clone()
    }

    /// Waits until at least `n` messages arrived or `timeout` passed, polling
    /// every 20 ms, and returns the messages received by then (maybe fewer).
    pub async fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n || Instant::now() >= deadline {
                return messages;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// The mailin handler. mailin-embedded clones it for each connection, so the
/// shared part sits behind the `Arc` and only the message in progress is local.
#[derive(Clone)]
struct Recorder {
    shared: Arc<Mutex<Shared>>,
    /// The message between `DATA` and the final `.`.
    open: Option<OpenMessage>,
}

#[derive(Clone)]
struct OpenMessage {
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Handler for Recorder {
    fn rcpt(&mut self, _to: &str) -> Response {
        let mut shared = lock(&self.shared);
        shared.rcpt_attempts += 1;
        match shared.mode {
            SmtpMode::Accept | SmtpMode::TempFailTimes(0) => response::OK,
            SmtpMode::TempFail => temp_fail(),
            SmtpMode::PermFail => Response::custom(550, "5.1.1 Mailbox unavailable (testkit)".into()),
            SmtpMode::TempFailTimes(n) => {
                shared.mode = SmtpMode::TempFailTimes(n - 1);
                temp_fail()
            }
        }
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.open = Some(OpenMessage { from: from.to_owned(), to: to.to_vec(), data: Vec::new() });
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        if let Some(message) = self.open.as_mut() {
            message.data.extend_from_slice(buf);
        }
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mut delay = Duration::ZERO;
        if let Some(message) = self.open.take() {
            let mut shared = lock(&self.shared);
            shared.mailbox.push(ReceivedMail {
                from: message.from,
                to: message.to,
                data: String::from_utf8_lossy(&message.data).into_owned(),
            });
            delay = shared.reply_delay;
        }
        // Each session has its own thread: holding this one back delays only this sender.
        thread::sleep(delay);
        response::OK
    }
}

fn temp_fail() -> Response {
    Response::custom(451, "4.3.0 Temporary failure (testkit)".into())
}

#[cfg(test)]
mod tests {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

    use super::*;

    fn mail(data: &str) -> ReceivedMail {
        ReceivedMail { from: "a@example.com".into(), to: vec!["b@example.com".into()], data: data.into() }
    }

    fn message(subject: &str) -> Message {
        Message::builder()
            .from("Jobs <jobs@example.com>".parse().expect("from"))
            .to("someone@example.com".parse().expect("to"))
            .subject(subject)
            .body(String::from("hello\r\n.starts with a dot"))
            .expect("message")
    }

    #[test]
    fn header_lookup_is_case_insensitive_unfolded_and_stops_at_the_body() {
        let m = mail("Subject: a long\r\n\tsubject\r\nX-Id: 1\r\nx-id: 2\r\n\r\nX-Body: no\r\n");
        assert_eq!(m.header("subject").as_deref(), Some("a long\tsubject"));
        assert_eq!(m.header("X-ID").as_deref(), Some("1"));
        assert_eq!(m.header("X-Body"), None);
        assert_eq!(m.body(), "X-Body: no\r\n");
    }

    #[tokio::test]
    async fn a_sent_message_is_recorded_with_its_envelope_and_headers() {
        let smtp = SmtpServer::start();
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&smtp.url()).expect("url").build();
        transport.send(message("Hi there")).await.expect("send");

        let received = smtp.wait_for_messages(1, Duration::from_secs(5)).await;
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].from, "jobs@example.com");
        assert_eq!(received[0].to, vec!["someone@example.com".to_owned()]);
        assert_eq!(received[0].header("Subject").as_deref(), Some("Hi there"));
        assert!(received[0].body().contains(".starts with a dot"));
    }

    #[tokio::test]
    async fn failure_modes_answer_rcpt_with_451_or_550() {
        let smtp = SmtpServer::start();
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&smtp.url()).expect("url").build();

        smtp.set_mode(SmtpMode::TempFailTimes(1));
        let first = transport.send(message("one")).await.expect_err("first RCPT gets 451");
        assert!(first.is_transient(), "{first}");
        transport.send(message("one")).await.expect("second attempt is accepted");
        assert_eq!(smtp.mode(), SmtpMode::TempFailTimes(0));

        smtp.set_mode(SmtpMode::PermFail);
        let permanent = transport.send(message("two")).await.expect_err("RCPT gets 550");
        assert!(permanent.is_permanent(), "{permanent}");

        assert_eq!(smtp.rcpt_attempts(), 3);
        assert_eq!(smtp.messages().len(), 1);
    }
}

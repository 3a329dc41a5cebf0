//! The mail catcher `jobs dev` runs when no `SMTP_URL` is set: an SMTP server on
//! loopback that accepts every message and keeps the last [`KEPT`] in memory,
//! so `email.send` jobs succeed out of the box and the dashboard can show what
//! they sent (`GET /dev/mail`).
//!
//! It speaks just enough SMTP for a client such as lettre: `EHLO`/`HELO`, `MAIL`,
//! `RCPT`, `DATA`, `RSET`, `NOOP`, `QUIT`; no TLS and no authentication, which
//! is why it listens on 127.0.0.1 only.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Messages kept; older ones are dropped.
const KEPT: usize = 200;
/// Largest message accepted (the SMTP `SIZE` it advertises).
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// One caught message.
#[derive(Debug, Clone, Serialize)]
pub struct CaughtMail {
    /// When it arrived (RFC 3339).
    pub received_at: String,
    pub from: String,
    /// The envelope's recipients (Bcc included).
    pub to: Vec<String>,
    pub subject: String,
    /// The message as sent: headers and body.
    pub raw: String,
}

/// The caught messages, newest last. Cheap to clone.
#[derive(Clone, Default)]
pub struct Mailbox {
    messages: Arc<Mutex<VecDeque<CaughtMail>>>,
}

impl Mailbox {
    pub fn messages(&self) -> Vec<CaughtMail> {
        self.messages.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    fn keep(&self, mail: CaughtMail) {
        let mut messages = self.messages.lock().unwrap_or_else(|p| p.into_inner());
        if messages.len() == KEPT {
            messages.pop_front();
        }
        messages.push_back(mail);
    }
}

/// Starts the catcher on a free loopback port; returns its `smtp://` URL and the mailbox.
pub async fn start() -> std::io::Result<(String, Mailbox)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("smtp://{}", listener.local_addr()?);
    let mailbox = Mailbox::default();
    let kept = mailbox.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let mailbox = kept.clone();
            tokio::spawn(async move {
                if let Err(err) = session(stream, &mailbox).await {
                    tracing::debug!(error = %err, "mail catcher session ended");
                }
            });
        }
    });
    Ok((url, mailbox))
}

/// One SMTP session: any number of messages, until `QUIT` or the client leaves.
async fn session(stream: TcpStream, mailbox: &Mailbox) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 localhost jobs dev mail catcher\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let verb = command.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-localhost\r\n250-8BITMIME\r\n250 SIZE 4194304\r\n",
            "HELO" | "NOOP" => b"250 ok\r\n",
            "RSET" => {
                (from, to) = (String::new(), Vec::new());
                b"250 ok\r\n"
            }
            "MAIL" => {
                from = address(&command);
                b"250 ok\r\n"
            }
            "RCPT" => {
                to.push(address(&command));
                b"250 ok\r\n"
            }
            "DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                match read_data(&mut lines).await? {
                    Some(raw) => {
                        let subject = header(&raw, "subject").unwrap_or_default();
                        let received_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                        let to = std::mem::take(&mut to);
                        mailbox.keep(CaughtMail { received_at, from: std::mem::take(&mut from), to, subject, raw });
                        b"250 ok: caught\r\n"
                    }
                    None => b"552 message too large\r\n",
                }
            }
            "QUIT" => {
                write.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
}

/// The message after `DATA`, up to the lone dot (dot-stuffing undone);
/// `None` when it is over [`MAX_MESSAGE_BYTES`] (the rest is read and dropped).
async fn read_data(lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> std::io::Result<Option<String>> {
    let (mut raw, mut too_big) = (String::new(), false);
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == ".\r\n" || line == ".\n" {
            return Ok((!too_big).then_some(raw));
        }
        let unstuffed = line.strip_prefix('.').unwrap_or(&line);
        too_big |= raw.len() + unstuffed.len() > MAX_MESSAGE_BYTES;
        if !too_big {
            raw.push_str(unstuffed);
        }
    }
}

/// The address in `MAIL FROM:<a@b>` or `RCPT TO:<a@b>`.
fn address(command: &str) -> String {
    let start = command.find('<').map_or(0, |i| i + 1);
    let end = command[start..].find('>').map_or(command.len(), |i| start + i);
    command[start..end].to_owned()
}

/// A header's value (first occurrence, unfolded), by case-insensitive name.
fn header(raw: &str, name: &str) -> Option<String> {
    let head = raw.split("\r\n\r\n").next().unwrap_or(raw);
    let mut value: Option<String> = None;
    for line in head.lines() {
        match &mut value {
            Some(folded) if line.starts_with([' ', '\t']) => folded.push_str(line.trim_end()),
            Some(_) => break,
            None => {
                if let Some((key, rest)) = line.split_once(':')
                    && key.eq_ignore_ascii_case(name)
                {
                    value = Some(rest.trim().to_owned());
                }
            }
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_headers_are_read_from_the_conversation() {
        assert_eq!(address("MAIL FROM:<jobs@localhost> SIZE=100"), "jobs@localhost");
        assert_eq!(address("RCPT TO:<ada@example.org>"), "ada@example.org");
        let raw = "From: a@b\r\nSubject: Hello\r\n there\r\nTo: c@d\r\n\r\nSubject: not a header";
        assert_eq!(header(raw, "subject").as_deref(), Some("Hello there"));
        assert_eq!(header(raw, "x-missing"), None);
    }
}

//! `email.send` — one email over SMTP with lettre.
//!
//! Addresses are checked at enqueue. The `Message-ID` is derived from the job id,
//! so a mail delivered twice (at-least-once) is recognisable as the same mail;
//! `X-Job-Id` and `X-Job-Run` say which job and which run of it sent it, and
//! `X-Job-Tenant` which tenant, for abuse handling. A job with several
//! recipients sends one message with all of them in `Bcc`, so none sees the
//! others and a retry never delivers to some twice and to others once.
//! SMTP 4xx replies and connection errors are retried; 5xx replies fail the job.

use std::time::Duration;

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::Error as SmtpError;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Deserializer};

use super::{JobContext, JobDefaults, JobError, JobType, Needs};
use crate::backoff::Backoff;

/// Most recipients one job may address.
const MAX_RECIPIENTS: usize = 50;

/// `email.send` payload: `{"to": "a@x" | ["a@x", …], "subject", "text", "html"?}`.
#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailSend {
    /// One address, or a list of 1–50 (they go in Bcc and do not see each other).
    #[serde(deserialize_with = "one_or_many")]
    #[garde(length(min = 1, max = MAX_RECIPIENTS), inner(custom(valid_address)))]
    #[schema(schema_with = recipients_schema)]
    pub to: Vec<String>,
    #[garde(length(min = 1, max = 998))]
    #[schema(min_length = 1, max_length = 998)]
    pub subject: String,
    /// The plain-text body.
    #[garde(length(max = 1_000_000))]
    #[schema(max_length = 1_000_000)]
    pub text: String,
    /// An HTML body, sent with the text as `multipart/alternative`.
    #[serde(default)]
    #[garde(inner(length(max = 1_000_000)))]
    #[schema(max_length = 1_000_000, nullable = false)]
    pub html: Option<String>,
}

/// `to`: an address, or 1–50 of them.
fn recipients_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    let address = || {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Email)))
    };
    OneOfBuilder::new()
        .item(address())
        .item(ArrayBuilder::new().items(address()).min_items(Some(1)).max_items(Some(MAX_RECIPIENTS)))
        .into()
}

impl EmailSend {
    /// The recipients of an `email.send` payload (already validated): `to` as
    /// one address or a list.
    pub fn recipients(payload: &serde_json::Value) -> Vec<&str> {
        match &payload["to"] {
            serde_json::Value::String(address) => vec![address.as_str()],
            serde_json::Value::Array(addresses) => addresses.iter().filter_map(serde_json::Value::as_str).collect(),
            _ => Vec::new(),
        }
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(address) => vec![address],
        OneOrMany::Many(addresses) => addresses,
    })
}

fn valid_address(value: &str, _: &()) -> garde::Result {
    value.parse::<Address>().map(|_| ()).map_err(|err| garde::Error::new(format!("not a valid email address: {err}")))
}

/// Masks an address for logs: `j***@example.com`.
pub fn mask(address: &str) -> String {
    match address.split_once('@') {
        Some((user, domain)) => {
            let first: String = user.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

/// Masks every address in free text (SMTP replies often echo the recipient).
pub fn mask_addresses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        if token.contains('@') {
            out.push_str(&mask(token));
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() || matches!(c, '<' | '>' | ',' | ';' | '"' | '\'' | '(' | ')' | '[' | ']') {
            flush(&mut token, &mut out);
            out.push(c);
        } else {
            token.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

/// Where and how mail is sent.
#[derive(Debug, Clone)]
pub struct MailerConfig {
    /// lettre's URL form: `smtp://host:port` (plain), `smtps://…`, or `?tls=required`.
    pub smtp_url: String,
    pub from: Mailbox,
    pub timeout: Duration,
}

/// `X-Job-Id` / `X-Job-Run`: which job, and which run of it, sent a message.
macro_rules! job_header {
    ($type:ident, $name:literal) => {
        #[derive(Debug, Clone)]
        struct $type(String);

        impl Header for $type {
            fn name() -> HeaderName {
                HeaderName::new_from_ascii_str($name)
            }

            fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
                Ok(Self(s.to_owned()))
            }

            fn display(&self) -> HeaderValue {
                HeaderValue::new(Self::name(), self.0.clone())
            }
        }
    };
}

job_header!(JobIdHeader, "X-Job-Id");
job_header!(JobRunHeader, "X-Job-Run");
job_header!(JobTenantHeader, "X-Job-Tenant");

/// A pooled SMTP client shared by the handlers of one worker.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(config: &MailerConfig) -> Result<Self, SmtpError> {
        let transport =
            AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.smtp_url)?.timeout(Some(config.timeout)).build();
        Ok(Self { transport, from: config.from.clone() })
    }

    fn message_id(&self, job_id: &str) -> String {
        format!("<{job_id}@{}>", self.from.email.domain())
    }
}

impl JobType for EmailSend {
    const NAME: &'static str = "email.send";

    fn defaults() -> JobDefaults {
        JobDefaults {
            queue: "email",
            max_attempts: 8,
            timeout: Duration::from_secs(60),
            backoff: Backoff { base: Duration::from_secs(5), cap: Duration::from_secs(600) },
        }
    }

    fn needs(needs: &mut Needs) {
        needs.service::<Mailer>();
    }

    async fn run(self, ctx: JobContext) -> Result<serde_json::Value, JobError> {
        let mailer = ctx.get::<Mailer>()?;
        let mut builder = Message::builder()
            .from(mailer.from.clone())
            .subject(self.subject)
            .message_id(Some(mailer.message_id(&ctx.id)))
            .header(JobIdHeader(ctx.id.clone()))
            .header(JobRunHeader(ctx.run.to_string()))
            .header(JobTenantHeader(ctx.tenant.clone()));
        let alone = self.to.len() == 1;
        for address in &self.to {
            let mailbox = address
                .parse::<Mailbox>()
                .map_err(|err| JobError::Permanent(format!("bad recipient {}: {err}", mask(address))))?;
            // lettre leaves `Bcc` out of the message it sends, keeping it in the envelope.
            builder = if alone { builder.to(mailbox) } else { builder.bcc(mailbox) };
        }
        let message = match self.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(self.text, html)),
            None => builder.header(ContentType::TEXT_PLAIN).body(self.text),
        }
        .map_err(|err| JobError::Permanent(format!("cannot build the message: {err}")))?;

        let masked: Vec<String> = self.to.iter().map(|a| mask(a)).collect();
        match mailer.transport.send(message).await {
            Ok(response) => {
                tracing::info!(to = ?masked, code = %response.code(), "email sent");
                Ok(serde_json::json!({
                    "message_id": mailer.message_id(&ctx.id),
                    "smtp_code": response.code().to_string(),
                    "run": ctx.run,
                }))
            }
            Err(err) if err.is_permanent() => {
                let error = mask_addresses(&err.to_string());
                tracing::warn!(to = ?masked, %error, "smtp refused the email permanently");
                Err(JobError::Permanent(format!("smtp permanent failure: {error}")))
            }
            Err(err) => {
                let error = mask_addresses(&err.to_string());
                tracing::warn!(to = ?masked, %error, "smtp failed, will retry");
                Err(JobError::Retryable(format!("smtp transient failure: {error}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use garde::Validate;

    fn payload(to: serde_json::Value) -> Result<EmailSend, String> {
        let job: EmailSend = serde_json::from_value(serde_json::json!({"to": to, "subject": "s", "text": "t"}))
            .map_err(|e| e.to_string())?;
        job.validate().map_err(|e| e.to_string())?;
        Ok(job)
    }

    #[test]
    fn to_accepts_one_address_or_a_list() {
        assert_eq!(payload("a@example.com".into()).unwrap().to, vec!["a@example.com"]);
        assert_eq!(payload(serde_json::json!(["a@x.org", "b@y.org"])).unwrap().to.len(), 2);
    }

    #[test]
    fn bad_addresses_and_empty_lists_are_refused() {
        assert!(payload("not-an-address".into()).unwrap_err().contains("to[0]"));
        assert!(payload(serde_json::json!(["a@x.org", "nope"])).unwrap_err().contains("to[1]"));
        assert!(payload(serde_json::json!([])).is_err());
    }

    #[test]
    fn addresses_in_smtp_replies_are_masked() {
        assert_eq!(
            mask_addresses("550 5.1.1 <jane.doe@example.com>: Recipient rejected, bob@x.org"),
            "550 5.1.1 <j***@example.com>: Recipient rejected, b***@x.org"
        );
        assert_eq!(mask_addresses("no address here"), "no address here");
    }

    #[test]
    fn mask_hides_the_local_part() {
        assert_eq!(mask("jane.doe@example.com"), "j***@example.com");
        assert_eq!(mask("nonsense"), "***");
    }
}

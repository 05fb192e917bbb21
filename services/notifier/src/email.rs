//! Email over SMTP (lettre, rustls, pooled connections): HTML and plain-text bodies from
//! `templates/`, a `Message-ID` derived from the delivery id (stable across retries, so a
//! mail system can drop a repeat), and RFC 8058 one-click unsubscribe headers on every email
//! the recipient may opt out of.

use std::time::Instant;

use folio_domain::Currency;
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{
        Mailbox, MultiPart,
        header::{HeaderName, HeaderValue},
    },
    transport::smtp::PoolConfig,
};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    config::Config,
    error::Error,
    fanout::{Audience, is_mandatory},
    store::{AttemptLog, Delivery},
    transitions::ProposalSnapshot,
    unsubscribe::UnsubscribeTokens,
};

const TEXT_TEMPLATE: &str = include_str!("../templates/email.txt");
const HTML_TEMPLATE: &str = include_str!("../templates/email.html");

/// A PDF an email carries (the signed copy of an acceptance).
#[derive(Debug, Clone)]
pub struct PdfAttachment {
    pub filename: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct RenderedEmail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// `List-Unsubscribe` URL, absent on mandatory emails.
    pub unsubscribe_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the delivery payload is not an email payload")]
    Payload(#[from] serde_json::Error),
    #[error("the recipient address {0:?} is invalid")]
    Address(String),
    #[error("failed to build the message")]
    Build(#[from] lettre::error::Error),
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Payload {
    Proposal {
        audience: Audience,
        user_id: Option<Uuid>,
        to_name: String,
        agency_name: String,
        client_name: String,
        owner_name: String,
        // Boxed: the largest variant by far.
        proposal: Box<ProposalSnapshot>,
        /// The client's link (issue 20), for a client's email of a send through the API.
        #[serde(default)]
        link_id: Option<Uuid>,
        /// What the client wrote when declining on their page (issue 20).
        #[serde(default)]
        decline_reason: Option<String>,
        /// The acceptance whose signed copy this email carries (issue 20).
        #[serde(default)]
        signed_copy: Option<Uuid>,
    },
    EndpointDisabled {
        user_id: Option<Uuid>,
        to_name: String,
        agency_name: String,
        url: String,
        failing_since: String,
    },
}

/// The parts of the email that differ per event.
struct Wording {
    subject: String,
    heading: String,
    body: String,
    link: String,
    link_label: &'static str,
}

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    message_id_domain: String,
    public_base_url: String,
    notifier_public_url: String,
    tokens: UnsubscribeTokens,
    client_links: folio_auth::client_link::ClientLinkKey,
}

impl Mailer {
    pub fn new(config: &Config) -> Result<Self, Error> {
        let from: Mailbox = config.mail_from.parse().map_err(|_| Error::MailFrom(config.mail_from.clone()))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.smtp_url)
            .map_err(Error::Smtp)?
            .timeout(Some(config.smtp_timeout))
            .pool_config(PoolConfig::new().max_size(16))
            .build();
        Ok(Self {
            message_id_domain: from.email.domain().to_owned(),
            from,
            transport,
            public_base_url: config.public_base_url.trim_end_matches('/').to_owned(),
            notifier_public_url: config.notifier_public_url.trim_end_matches('/').to_owned(),
            tokens: UnsubscribeTokens::new(config.unsubscribe_secret.as_bytes()),
            client_links: config.client_link.key(),
        })
    }

    /// The email a delivery stands for.
    pub fn render(&self, delivery: &Delivery) -> Result<RenderedEmail, RenderError> {
        let payload: Payload = serde_json::from_value(delivery.payload.0.clone())?;
        let event_type = delivery.event_type.as_str();
        let (wording, to_name, agency_name, user_id, audience) = match payload {
            Payload::Proposal {
                audience,
                user_id,
                to_name,
                agency_name,
                client_name,
                owner_name,
                proposal,
                link_id,
                decline_reason,
                signed_copy,
            } => {
                let mut w =
                    self.proposal_wording(event_type, audience, &proposal, &client_name, &owner_name, &agency_name);
                if signed_copy.is_some() {
                    w.body.push_str(if audience == Audience::Client {
                        " Your signed copy is attached: the proposal exactly as you signed it, with its signature certificate."
                    } else {
                        " The signed copy is attached: the proposal exactly as the client signed it, with its signature certificate."
                    });
                }
                if let (Audience::Client, Some(link)) = (audience, link_id) {
                    w.link = crate::client_links::url(&self.public_base_url, &self.client_links, link);
                }
                if let Some(reason) = decline_reason.filter(|_| event_type == "proposal.declined") {
                    w.body.push_str(&format!(" Their reason: “{reason}”"));
                }
                (w, to_name, agency_name, user_id, audience)
            }
            Payload::EndpointDisabled { user_id, to_name, agency_name, url, failing_since } => {
                let w = Wording {
                    subject: "A webhook endpoint was disabled".into(),
                    heading: "A webhook endpoint was disabled".into(),
                    body: format!(
                        "The webhook endpoint {url} has failed every delivery since {failing_since} and has been \
                         disabled. Fix the endpoint, then enable it again to resume deliveries."
                    ),
                    link: format!("{}/settings/webhooks", self.public_base_url),
                    link_label: "Open webhook settings",
                };
                (w, to_name, agency_name, user_id, Audience::Admin)
            }
        };
        let unsubscribe_url = match user_id {
            Some(user) if !is_mandatory(event_type, audience) => Some(format!(
                "{}/v1/unsubscribe?token={}",
                self.notifier_public_url,
                self.tokens.issue(user, event_type)
            )),
            _ => None,
        };
        let footer = match &unsubscribe_url {
            Some(url) => format!("Unsubscribe from these emails: {url}"),
            None => "You receive this email because of your role on this proposal.".into(),
        };
        let footer_html = match &unsubscribe_url {
            Some(url) => {
                format!("<a href=\"{}\" style=\"color:#6a737d\">Unsubscribe from these emails</a>.", escape_html(url))
            }
            None => "You receive this email because of your role on this proposal.".into(),
        };
        let vars = [
            ("heading", wording.heading.as_str()),
            ("to_name", to_name.as_str()),
            ("body", wording.body.as_str()),
            ("link_label", wording.link_label),
            ("link", wording.link.as_str()),
            ("agency_name", agency_name.as_str()),
            ("footer", footer.as_str()),
        ];
        let text = fill(TEXT_TEMPLATE, &vars, &[], false);
        let html = fill(HTML_TEMPLATE, &vars, &[("footer_html", footer_html.as_str())], true);
        Ok(RenderedEmail { to: delivery.recipient.clone(), subject: wording.subject, text, html, unsubscribe_url })
    }

    fn proposal_wording(
        &self,
        event_type: &str,
        audience: Audience,
        p: &ProposalSnapshot,
        client: &str,
        owner: &str,
        agency: &str,
    ) -> Wording {
        let total = match Currency::parse(&p.currency) {
            Ok(c) => format!("{} {}", c.format_minor(p.total_minor), c.code()),
            Err(_) => format!("{} (minor units) {}", p.total_minor, p.currency),
        };
        let until = p.valid_until.map(|d| d.to_string()).unwrap_or_else(|| "further notice".into());
        let title = &p.title;
        let internal = format!("{}/proposals/{}", self.public_base_url, p.id);
        let (subject, heading, body) = match (event_type, audience) {
            ("proposal.sent", _) => (
                format!("{agency} sent you a proposal: {title}"),
                format!("A proposal from {agency}"),
                format!("{owner} at {agency} sent you the proposal “{title}” for {total}. It is valid until {until}."),
            ),
            ("proposal.viewed", _) => (
                format!("{client} opened “{title}”"),
                "Your proposal was opened".into(),
                format!("{client} opened the proposal “{title}” ({total})."),
            ),
            ("proposal.accepted", Audience::Client) => (
                format!("You accepted “{title}”"),
                format!("Thank you, {client}"),
                format!("You accepted the proposal “{title}” from {agency} for {total}."),
            ),
            ("proposal.accepted", _) => (
                format!("“{title}” was accepted"),
                "Proposal accepted".into(),
                format!("{client} accepted the proposal “{title}” for {total}."),
            ),
            ("proposal.declined", _) => (
                format!("“{title}” was declined"),
                "Proposal declined".into(),
                format!("{client} declined the proposal “{title}” ({total})."),
            ),
            ("proposal.expiring", _) => (
                format!("“{title}” expires on {until}"),
                "A proposal expires soon".into(),
                format!(
                    "The proposal “{title}” sent to {client} ({total}) is valid until {until} and has not been answered yet."
                ),
            ),
            (other, _) => (
                format!("{title}: {other}"),
                format!("Proposal {}", p.status),
                format!("“{title}” is now {}.", p.status),
            ),
        };
        let (link, link_label) = match audience {
            Audience::Client => (format!("{}/p/{}", self.public_base_url, p.id), "View the proposal"),
            _ => (internal, "Open in Folio"),
        };
        Wording { subject, heading, body, link, link_label }
    }

    fn message(
        &self,
        delivery: &Delivery,
        email: &RenderedEmail,
        attachment: Option<&PdfAttachment>,
    ) -> Result<Message, RenderError> {
        let to: Mailbox = email.to.parse().map_err(|_| RenderError::Address(email.to.clone()))?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(&email.subject)
            .message_id(Some(format!("<{}@{}>", delivery.id, self.message_id_domain)))
            .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("X-Folio-Event"), delivery.event_type.clone()));
        if let Some(url) = &email.unsubscribe_url {
            // RFC 8058: a POST of `List-Unsubscribe=One-Click` to this URL unsubscribes.
            builder = builder
                .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("List-Unsubscribe"), format!("<{url}>")))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".to_owned(),
                ));
        }
        let body = MultiPart::alternative_plain_html(email.text.clone(), email.html.clone());
        Ok(match attachment {
            None => builder.multipart(body)?,
            Some(pdf) => builder.multipart(
                MultiPart::mixed().multipart(body).singlepart(
                    lettre::message::Attachment::new(pdf.filename.clone())
                        .body(pdf.bytes.clone(), "application/pdf".parse().expect("a valid content type")),
                ),
            )?,
        })
    }

    /// One SMTP attempt; `permanent` when the server refused for good (5xx) or the email
    /// cannot be built.
    pub async fn send(&self, delivery: &Delivery, attachment: Option<&PdfAttachment>) -> (AttemptLog, bool) {
        let message = match self.render(delivery).and_then(|e| self.message(delivery, &e, attachment)) {
            Ok(m) => m,
            Err(e) => return (AttemptLog { error: Some(crate::chain(&e)), ..Default::default() }, true),
        };
        let started = Instant::now();
        let result = self.transport.send(message).await;
        let latency_ms = Some(i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX));
        match result {
            Ok(response) => {
                let code = response.code();
                let text: Vec<&str> = response.message().collect();
                let log = AttemptLog {
                    succeeded: true,
                    response_code: Some(smtp_code(&code.to_string())),
                    latency_ms,
                    response_body: Some(text.join("\n")),
                    error: None,
                };
                (log, false)
            }
            Err(e) => {
                let code = e.status().map(|c| smtp_code(&c.to_string()));
                let log = AttemptLog {
                    succeeded: false,
                    response_code: code,
                    latency_ms,
                    response_body: None,
                    error: Some(crate::chain(&e)),
                };
                (log, e.is_permanent())
            }
        }
    }
}

fn smtp_code(s: &str) -> i32 {
    s.parse().unwrap_or(0)
}

/// Replaces `{{name}}` with its value (HTML-escaped for the HTML template); `raw` values are
/// inserted as they are (markup this module wrote).
fn fill(template: &str, vars: &[(&str, &str)], raw: &[(&str, &str)], html: bool) -> String {
    let mut out = template.to_owned();
    for (name, value) in raw {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    for (name, value) in vars {
        let value = if html { escape_html(value) } else { (*value).to_owned() };
        out = out.replace(&format!("{{{{{name}}}}}"), &value);
    }
    out
}

pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_escapes_html_but_not_text() {
        let vars = [("heading", "<b>&</b>")];
        assert_eq!(fill("{{heading}}", &vars, &[], true), "&lt;b&gt;&amp;&lt;/b&gt;");
        assert_eq!(fill("{{heading}}", &vars, &[], false), "<b>&</b>");
        assert!(!HTML_TEMPLATE.contains("{{unknown}}"));
    }
}

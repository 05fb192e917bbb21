//! Webhook URLs (the protocol's rules on top of Folio's SSRF policy) and signed delivery
//! through Folio's one outbound-webhook client (`folio-webhook`): every address a host name
//! resolves to is checked when the request connects, so a name resolving to a private or
//! loopback address is refused like the literal address unless `FOLIO_WEBHOOK_ALLOWED_SUBNETS`
//! allows its subnet.

use std::time::Duration;

use bytes::Bytes;
use folio_webhook::{UrlError, WebhookClient};

/// Receivers answer with a small JSON object; more than this is refused unread.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A webhook target that passed the checks possible before resolution: https (or, when allowed
/// for development, plain http to a loopback host), no credentials, no refused literal address,
/// no internal host name.
#[derive(Debug, Clone)]
pub struct WebhookUrl {
    raw: String,
    url: folio_webhook::WebhookUrl,
}

/// Why a webhook URL was refused; the body's message is this error's text.
#[derive(Debug, thiserror::Error)]
pub enum WebhookUrlRejected {
    /// Folio's SSRF policy or the URL's syntax refused it.
    #[error("webhook URL rejected: {}", url_reason(.0))]
    Url(#[source] UrlError),
    /// One of the protocol's own rules refused it.
    #[error("webhook URL rejected: {0}")]
    Rule(&'static str),
}

fn url_reason(e: &UrlError) -> String {
    match e {
        UrlError::Syntax(_) => "not a URL".into(),
        UrlError::Scheme(_) => "unsupported scheme".into(),
        UrlError::NoHost => "no host".into(),
        UrlError::Credentials => "credentials in the URL".into(),
        UrlError::Refused(r) => r.to_string(),
    }
}

impl WebhookUrl {
    pub fn parse(raw: &str, allow_loopback_http: bool, client: &WebhookClient) -> Result<Self, WebhookUrlRejected> {
        let url = client.parse_url(raw).map_err(WebhookUrlRejected::Url)?;
        let parsed = url.as_url();
        let host = parsed.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let host = host.to_ascii_lowercase();
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        match parsed.scheme() {
            "https" => {}
            "http" if loopback && allow_loopback_http => {}
            _ => return Err(WebhookUrlRejected::Rule("webhooks must use https")),
        }
        if loopback && !allow_loopback_http {
            return Err(WebhookUrlRejected::Rule("loopback address"));
        }
        if host.ends_with(".internal") || host.ends_with(".local") {
            return Err(WebhookUrlRejected::Rule("internal host name"));
        }
        Ok(WebhookUrl { raw: raw.to_owned(), url })
    }

    /// The URL as the subscriber gave it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

/// What the receiver answered.
pub struct Delivered {
    pub status: u16,
    pub body: Bytes,
}

/// A failed delivery; the cause chain is kept for the log.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("webhook request failed")]
    Request(#[source] folio_webhook::HttpError),
    #[error("webhook response larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
}

/// The client webhook wakes go out through: 10 s per request, 5 s to connect.
pub fn client(policy: folio_webhook::AddressPolicy) -> Result<WebhookClient, folio_webhook::HttpError> {
    WebhookClient::new(policy, Duration::from_secs(10), Duration::from_secs(5))
}

pub async fn post(
    client: &WebhookClient,
    url: &WebhookUrl,
    signature: &str,
    body: Bytes,
) -> Result<Delivered, DeliveryError> {
    let mut res = client
        .post(&url.url)
        .header("content-type", "application/json")
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
        .map_err(DeliveryError::Request)?;
    let status = res.status().as_u16();
    let mut kept = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(DeliveryError::Request)? {
        if kept.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(DeliveryError::TooLarge);
        }
        kept.extend_from_slice(&chunk);
    }
    Ok(Delivered { status, body: kept.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssrf_rules() {
        let open = client(folio_webhook::AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()])).unwrap();
        let closed = client(folio_webhook::AddressPolicy::default()).unwrap();
        let parse = |raw: &str, loopback: bool, c: &WebhookClient| WebhookUrl::parse(raw, loopback, c);
        assert!(parse("http://10.0.0.1/hook", true, &open).is_err());
        assert!(parse("https://10.0.0.1/hook", true, &open).is_err());
        assert!(parse("https://169.254.169.254/latest", true, &open).is_err());
        assert!(parse("https://[::1]/x", false, &open).is_err());
        assert!(parse("http://127.0.0.1:9/hook", false, &open).is_err());
        assert!(parse("http://127.0.0.1:9/hook", true, &open).is_ok());
        assert!(parse("http://127.0.0.1:9/hook", true, &closed).is_err(), "not allow-listed");
        assert!(parse("http://0x7f000001:9/hook", true, &closed).is_err(), "loopback in disguise");
        assert!(parse("http://example.com/hook", true, &open).is_err());
        assert!(parse("https://example.com/hook", false, &open).is_ok());
        assert!(parse("https://user:pw@example.com/hook", false, &open).is_err());
        assert!(parse("https://metadata.google.internal/x", false, &open).is_err());
        let refused = parse("https://user:pw@example.com/hook", false, &open).unwrap_err();
        assert_eq!(refused.to_string(), "webhook URL rejected: credentials in the URL");
        assert!(std::error::Error::source(&refused).is_some());
    }
}

//! One webhook attempt: sign, POST with a timeout through the SSRF-checking resolver, keep
//! the first 20 kB of the answer. 2xx is success; anything else (redirects included, which
//! are not followed) is a failure, retried unless it can never succeed.

use std::time::{Duration, Instant, SystemTime};

use folio_webhook::{AddressPolicy, WebhookClient, refused_name};

use time::OffsetDateTime;

use crate::{
    config::Config,
    error::Error,
    retry::parse_retry_after,
    store::{AttemptLog, Endpoint, MAX_RESPONSE_BODY},
    webhook::sign::{Secret, signature_header},
};

#[derive(Debug, Clone)]
pub struct WebhookAttempt {
    pub log: AttemptLog,
    pub retry_after: Option<Duration>,
    /// Retrying cannot help (refused address, malformed URL or secret).
    pub permanent: bool,
}

impl WebhookAttempt {
    fn refused(error: String) -> Self {
        Self { log: AttemptLog { error: Some(error), ..Default::default() }, retry_after: None, permanent: true }
    }
}

/// Signs and sends through Folio's one outbound-webhook client (SSRF policy at resolution
/// time, timeouts, no redirects).
#[derive(Clone)]
pub struct WebhookSender {
    client: WebhookClient,
}

impl WebhookSender {
    pub fn new(config: &Config) -> Result<Self, Error> {
        let timeout = config.webhook_timeout;
        let client = WebhookClient::new(config.address_policy(), timeout, timeout.min(Duration::from_secs(10)))
            .map_err(Error::HttpClient)?;
        Ok(Self { client })
    }

    pub fn policy(&self) -> &AddressPolicy {
        self.client.policy()
    }

    /// Sends `body` to `endpoint` as message `msg_id` (stable across retries, so a consumer
    /// can drop a repeat).
    pub async fn send(&self, endpoint: &Endpoint, msg_id: &str, body: &[u8]) -> WebhookAttempt {
        let url = match self.client.parse_url(&endpoint.url) {
            Ok(u) => u,
            Err(e) => return WebhookAttempt::refused(format!("refused url: {e}")),
        };
        let secret = match Secret::parse(&endpoint.secret) {
            Ok(s) => s,
            Err(e) => return WebhookAttempt::refused(format!("endpoint secret unusable: {e}")),
        };
        // The old secret signs too until its grace period ends.
        let previous = match (&endpoint.previous_secret, endpoint.previous_secret_expires_at) {
            (Some(p), Some(until)) if until > OffsetDateTime::now_utc() => Secret::parse(p).ok(),
            _ => None,
        };
        let timestamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
        let signature = signature_header(&secret, previous.as_ref(), msg_id, timestamp, body);
        let started = Instant::now();
        let result = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await;
        let mut response = match result {
            Ok(r) => r,
            Err(e) => {
                let latency = started.elapsed();
                let refused = refused_name(&e);
                let error = match &refused {
                    Some(r) => format!("refused: {r}"),
                    None => crate::chain(&e),
                };
                return WebhookAttempt {
                    log: AttemptLog { error: Some(error), latency_ms: Some(millis(latency)), ..Default::default() },
                    retry_after: None,
                    permanent: refused.is_some(),
                };
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        // Only the first 20 kB is kept; the rest is not even read.
        let mut kept = Vec::new();
        let mut body_error = None;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_RESPONSE_BODY - kept.len();
                    kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if kept.len() >= MAX_RESPONSE_BODY {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    body_error = Some(format!("reading the response failed: {}", crate::chain(&e)));
                    break;
                }
            }
        }
        let latency = started.elapsed();
        let succeeded = status.is_success();
        WebhookAttempt {
            log: AttemptLog {
                succeeded,
                response_code: Some(i32::from(status.as_u16())),
                latency_ms: Some(millis(latency)),
                response_body: Some(String::from_utf8_lossy(&kept).into_owned()),
                error: if succeeded {
                    None
                } else {
                    Some(body_error.unwrap_or_else(|| format!("endpoint answered {status}")))
                },
            },
            retry_after: if succeeded { None } else { retry_after },
            permanent: false,
        }
    }
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

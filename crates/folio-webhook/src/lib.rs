//! Folio's one outbound-webhook client, used by the notifier's Standard Webhooks and the
//! edge's Durable Streams webhook subscriptions.
//!
//! [`ssrf`] holds the address policy: private, loopback, link-local, reserved, … addresses are
//! refused unless an operator allow-listed their subnet (`FOLIO_WEBHOOK_ALLOWED_SUBNETS`, for
//! development and tests). [`WebhookClient`] applies it twice: to literal IPs when a URL is
//! parsed, and to every address a host name resolves to, inside its resolver, so a name that
//! resolves to `127.0.0.1` is refused like the literal. It follows no redirects (they would
//! skip the URL check) and uses no proxy (it would resolve on our behalf).

pub mod events;
pub mod sign;
pub mod ssrf;

use std::{sync::Arc, time::Duration};

/// The HTTP client's error (requests, responses, building the client).
pub use ipnet;
pub use reqwest::Error as HttpError;
pub use ssrf::{AddressPolicy, PolicyResolver, Refused, RefusedName, UrlError, WebhookUrl};

/// Parses one allow-list entry: a CIDR (`127.0.0.0/8`) or a single address (`::1`).
pub fn parse_subnet(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{s:?} is not a subnet (CIDR like 127.0.0.0/8) or an address"))
}

/// Why [`check_url`] refused a URL.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error(transparent)]
    Name(RefusedName),
}

/// Checks a URL an admin registers: what [`WebhookUrl::parse`] checks, then, for a host name,
/// every address it resolves to now. A name resolving only to refused addresses is refused
/// like the literal; one that does not resolve (yet) passes, since delivery checks again at
/// every connection.
pub async fn check_url(raw: &str, policy: &AddressPolicy) -> Result<WebhookUrl, CheckError> {
    let url = WebhookUrl::parse(raw, policy)?;
    if let Some(url::Host::Domain(host)) = url.as_url().host() {
        let port = url.as_url().port_or_known_default().unwrap_or(443);
        if let Ok(addrs) = tokio::net::lookup_host((host, port)).await {
            let addrs: Vec<_> = addrs.collect();
            let refused: Vec<String> =
                addrs.iter().filter_map(|a| policy.check(a.ip()).err()).map(|e| e.to_string()).collect();
            if !addrs.is_empty() && refused.len() == addrs.len() {
                return Err(CheckError::Name(RefusedName { host: host.to_owned(), refused: refused.join("; ") }));
            }
        }
    }
    Ok(url)
}

/// An HTTP client whose every connection passed the address policy.
#[derive(Clone, Debug)]
pub struct WebhookClient {
    http: reqwest::Client,
    policy: Arc<AddressPolicy>,
}

impl WebhookClient {
    /// `timeout` bounds a whole request (connect, send, response), `connect_timeout` the
    /// connection alone.
    pub fn new(policy: AddressPolicy, timeout: Duration, connect_timeout: Duration) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(policy);
        let http = reqwest::Client::builder()
            .user_agent(concat!("Folio-Webhooks/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(connect_timeout)
            // Every address comes from the checking resolver; a proxy would connect on our
            // behalf to whatever it resolves, and a redirect would skip the URL check.
            .dns_resolver(Arc::new(PolicyResolver::new(policy.clone())))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { http, policy })
    }

    pub fn policy(&self) -> &AddressPolicy {
        &self.policy
    }

    /// Checks `raw` as far as possible before resolution (scheme, credentials, literal IPs).
    pub fn parse_url(&self, raw: &str) -> Result<WebhookUrl, UrlError> {
        WebhookUrl::parse(raw, &self.policy)
    }

    /// A POST to `url`; add headers and a body, then `send()`.
    pub fn post(&self, url: &WebhookUrl) -> reqwest::RequestBuilder {
        self.http.post(url.as_url().clone())
    }
}

/// The refusal behind a failed request, when its host resolved only to refused addresses.
pub fn refused_name<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a RefusedName> {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(r) = err.downcast_ref::<RefusedName>() {
            return Some(r);
        }
        source = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_as_cidrs_or_addresses() {
        assert_eq!(parse_subnet("127.0.0.0/8").unwrap().to_string(), "127.0.0.0/8");
        assert_eq!(parse_subnet(" ::1 ").unwrap().to_string(), "::1/128");
        assert!(parse_subnet("localhost").is_err());
    }

    #[tokio::test]
    async fn registered_urls_are_checked_by_name_too() {
        let open = AddressPolicy::new(vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]);
        let strict = AddressPolicy::default();
        assert!(matches!(check_url("http://localhost:9/x", &strict).await, Err(CheckError::Name(_))));
        assert!(matches!(check_url("http://127.0.0.1:9/x", &strict).await, Err(CheckError::Url(UrlError::Refused(_)))));
        assert!(check_url("http://localhost:9/x", &open).await.is_ok());
        assert!(check_url("https://no-such-host.invalid/x", &strict).await.is_ok(), "delivery checks it later");
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_never_connected() {
        // Nothing listens on port 9 (discard); a refused name fails before connecting at all.
        let client =
            WebhookClient::new(AddressPolicy::default(), Duration::from_secs(5), Duration::from_secs(5)).unwrap();
        let url = client.parse_url("http://localhost:9/hook").expect("names pass the parse");
        let err = client.post(&url).send().await.expect_err("refused");
        let refused = refused_name(&err).expect("refused by the policy, not by the connection");
        assert!(refused.to_string().contains("loopback"), "{refused}");
    }
}

//! Webhook URLs (parsed with the SSRF rules) and signed delivery.

use std::{net::IpAddr, time::Duration};

use axum::http::{Method, Request, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

/// A webhook target that passed the SSRF checks: https to a public host, or (when allowed for
/// development) plain http to loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(String);

#[derive(Debug, thiserror::Error)]
#[error("webhook URL rejected: {0}")]
pub struct WebhookUrlRejected(pub &'static str);

impl WebhookUrl {
    pub fn parse(raw: &str, allow_loopback_http: bool) -> Result<Self, WebhookUrlRejected> {
        let uri: Uri = raw.parse().map_err(|_| WebhookUrlRejected("not a URL"))?;
        let host = uri.host().ok_or(WebhookUrlRejected("no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if loopback && allow_loopback_http => return Ok(WebhookUrl(raw.to_owned())),
            Some("http") => return Err(WebhookUrlRejected("webhooks must use https")),
            _ => return Err(WebhookUrlRejected("unsupported scheme")),
        }
        if uri.userinfo_present() {
            return Err(WebhookUrlRejected("credentials in the URL"));
        }
        if loopback && !allow_loopback_http {
            return Err(WebhookUrlRejected("loopback address"));
        }
        if let Ok(ip) = host.parse::<IpAddr>()
            && !loopback
            && !is_public(ip)
        {
            return Err(WebhookUrlRejected("private or reserved address"));
        }
        if host.ends_with(".internal") || host.ends_with(".local") || host == "metadata.google.internal" {
            return Err(WebhookUrlRejected("internal host name"));
        }
        Ok(WebhookUrl(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

trait UserInfo {
    fn userinfo_present(&self) -> bool;
}

impl UserInfo for Uri {
    fn userinfo_present(&self) -> bool {
        self.authority().is_some_and(|a| a.as_str().contains('@'))
    }
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] >= 224)
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            !(v6.is_loopback() || v6.is_unspecified() || (seg[0] & 0xfe00) == 0xfc00 || (seg[0] & 0xffc0) == 0xfe80)
        }
    }
}

#[derive(Clone)]
pub struct WebhookClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// What the receiver answered.
pub struct Delivered {
    pub status: u16,
    pub body: Bytes,
}

impl WebhookClient {
    pub fn new() -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        // An explicit provider: in a workspace build rustls may have both ring and aws-lc-rs
        // enabled (pgwire-replication turns on rustls' defaults), and then cannot pick one.
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .expect("ring supports rustls' default protocol versions")
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        WebhookClient { client: Client::builder(TokioExecutor::new()).build(https) }
    }

    pub async fn post(&self, url: &WebhookUrl, signature: &str, body: Bytes) -> Result<Delivered, String> {
        let req = Request::builder()
            .method(Method::POST)
            .uri(url.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header("webhook-signature", signature)
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let send = async {
            let res = self.client.request(req).await.map_err(|e| format!("{e:#}"))?;
            let status = res.status().as_u16();
            // Receivers answer with a small JSON object; cap what we are willing to buffer.
            let limited = http_body_util::Limited::new(res.into_body(), 64 * 1024);
            let body = limited.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok(Delivered { status, body })
        };
        tokio::time::timeout(Duration::from_secs(10), send).await.map_err(|_| "timed out".to_owned())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssrf_rules() {
        assert!(WebhookUrl::parse("http://10.0.0.1/hook", true).is_err());
        assert!(WebhookUrl::parse("https://10.0.0.1/hook", true).is_err());
        assert!(WebhookUrl::parse("https://169.254.169.254/latest", true).is_err());
        assert!(WebhookUrl::parse("https://[::1]/x", false).is_err());
        assert!(WebhookUrl::parse("http://127.0.0.1:9/hook", false).is_err());
        assert!(WebhookUrl::parse("http://127.0.0.1:9/hook", true).is_ok());
        assert!(WebhookUrl::parse("http://example.com/hook", true).is_err());
        assert!(WebhookUrl::parse("https://example.com/hook", false).is_ok());
        assert!(WebhookUrl::parse("https://user:pw@example.com/hook", false).is_err());
    }
}

//! A subscription as stored (KV key `sub.<id>`), and its JSON views.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use folio_bus::StreamSeq;
use folio_domain::AgencyId;

use crate::{offset::Offset, path::namespace_of};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Webhook,
    PullWake,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkType {
    Glob,
    Explicit,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Link {
    pub link_type: LinkType,
    pub acked_seq: u64,
}

/// One stream in a wake: where the consumer stands and where the stream is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WakeStream {
    pub path: String,
    pub link_type: LinkType,
    pub acked_seq: u64,
    pub tail_seq: u64,
}

/// The outstanding wake. Its generation fences every older wake's callbacks and leases.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Wake {
    pub wake_id: String,
    pub generation: u64,
    pub token: String,
    pub holder: Option<String>,
    /// Unclaimed pull wakes never lapse; webhook wakes and claims lapse here.
    pub lease_expires_ms: Option<i64>,
    pub streams: Vec<WakeStream>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    /// The agency whose id space holds it and whose namespace confines what it watches;
    /// `None` for shared subscriptions (service tokens, open mode, and earlier releases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agency: Option<AgencyId>,
    pub kind: Kind,
    pub pattern: Option<String>,
    pub webhook_url: Option<String>,
    pub wake_stream: Option<String>,
    pub lease_ttl_ms: u64,
    pub description: Option<String>,
    pub created_at: String,
    /// Public base URL the subscription was created through (callback and JWKS links).
    pub base_url: String,
    pub config_hash: String,
    pub links: BTreeMap<String, Link>,
    pub generation: u64,
    pub wake: Option<Wake>,
}

/// The create request body.
#[derive(Debug, Deserialize)]
pub struct CreateBody {
    #[serde(rename = "type")]
    pub kind: Kind,
    pub pattern: Option<String>,
    #[serde(default)]
    pub streams: Vec<String>,
    pub webhook: Option<WebhookBody>,
    pub wake_stream: Option<String>,
    pub lease_ttl_ms: Option<u64>,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct WebhookBody {
    pub url: String,
}

#[derive(Debug, Deserialize)]
pub struct AckBody {
    pub wake_id: String,
    pub generation: u64,
    #[serde(default)]
    pub acks: Vec<StreamAck>,
    #[serde(default)]
    pub done: bool,
}

#[derive(Debug, Deserialize)]
pub struct StreamAck {
    pub stream: String,
    pub offset: String,
}

#[derive(Debug, Deserialize)]
pub struct ClaimBody {
    pub worker: String,
}

#[derive(Debug, Deserialize)]
pub struct ReleaseBody {
    pub wake_id: String,
    pub generation: u64,
}

#[derive(Debug, Deserialize)]
pub struct StreamsBody {
    pub streams: Vec<String>,
}

/// Hash of the normalized configuration: a repeated PUT with the same one is a confirmation.
pub fn config_hash(
    kind: Kind,
    pattern: &Option<String>,
    explicit: &[String],
    url: &Option<String>,
    wake_stream: &Option<String>,
    lease_ttl_ms: u64,
    description: &Option<String>,
) -> String {
    let mut explicit = explicit.to_vec();
    explicit.sort();
    explicit.dedup();
    let normalized = serde_json::json!([kind, pattern, explicit, url, wake_stream, lease_ttl_ms, description]);
    let digest = Sha256::digest(normalized.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `*` matches within one path segment, `**` across segments.
pub fn glob_matches(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => (0..=s.len()).any(|i| go(&p[2..], &s[i..])),
            Some(b'*') => (0..=s.len()).take_while(|i| *i == 0 || s[i - 1] != b'/').any(|i| go(&p[1..], &s[i..])),
            Some(c) => s.first() == Some(c) && go(&p[1..], &s[1..]),
        }
    }
    go(pattern.as_bytes(), path.as_bytes())
}

/// A subscription's key in the cache and, after `sub.`, in the KV bucket. A shared id has no
/// `.`, so an agency's `<agency>.<id>` never collides with it.
pub fn key_of(agency: Option<AgencyId>, id: &str) -> String {
    match agency {
        Some(agency) => format!("{agency}.{id}"),
        None => id.to_owned(),
    }
}

impl Subscription {
    pub fn key(&self) -> String {
        key_of(self.agency, &self.id)
    }

    pub fn matches(&self, path: &str) -> Option<LinkType> {
        // Whatever its links and pattern say (they were checked when given), an agency's
        // subscription never sees a stream outside the agency's namespace.
        if let Some(agency) = self.agency
            && namespace_of(path) != Some(agency)
        {
            return None;
        }
        if let Some(link) = self.links.get(path) {
            return Some(link.link_type);
        }
        self.pattern.as_deref().filter(|p| glob_matches(p, path)).map(|_| LinkType::Glob)
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/v1/stream/__ds/jwks.json", self.base_url)
    }

    pub fn callback_url(&self) -> String {
        format!("{}/v1/stream/__ds/subscriptions/{}/callback", self.base_url, self.id)
    }

    pub fn view(&self, kid: &str) -> serde_json::Value {
        let streams: Vec<_> = self
            .links
            .iter()
            .map(|(path, l)| serde_json::json!({ "path": path, "link_type": l.link_type, "acked_offset": Offset::at_seq(StreamSeq::new(l.acked_seq)).to_string() }))
            .collect();
        let kind = match self.kind {
            Kind::Webhook => "webhook",
            Kind::PullWake => "pull-wake",
        };
        let mut v = serde_json::json!({
            "id": self.id,
            "subscription_id": self.id,
            "type": kind,
            "pattern": self.pattern,
            "streams": streams,
            "lease_ttl_ms": self.lease_ttl_ms,
            "created_at": self.created_at,
            "status": "active",
            "description": self.description,
        });
        if let Some(url) = &self.webhook_url {
            v["webhook"] = serde_json::json!({
                "url": url,
                "signing": { "alg": "ed25519", "kid": kid, "jwks_url": self.jwks_url() },
            });
        }
        if let Some(ws) = &self.wake_stream {
            v["wake_stream"] = ws.clone().into();
        }
        if let Some(agency) = self.agency {
            v["agency_id"] = agency.to_string().into();
        }
        v
    }
}

pub fn wake_streams_json(streams: &[WakeStream]) -> Vec<serde_json::Value> {
    streams
        .iter()
        .map(|s| {
            serde_json::json!({
                "path": s.path,
                "link_type": s.link_type,
                "acked_offset": Offset::at_seq(StreamSeq::new(s.acked_seq)).to_string(),
                "tail_offset": Offset::at_seq(StreamSeq::new(s.tail_seq)).to_string(),
                "has_pending": s.tail_seq > s.acked_seq,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    #[test]
    fn globs() {
        assert!(glob_matches("events/*", "events/a"));
        assert!(!glob_matches("events/*", "events/a/b"));
        assert!(glob_matches("events/**", "events/a/b"));
        assert!(!glob_matches("events/*", "other/a"));
        assert!(glob_matches("*", "x"));
    }
}

//! HTTP handlers of the reserved APIs under `/v1/stream/__ds/`.

use std::sync::Arc;

use axum::{
    extract::Request,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::de::DeserializeOwned;

use super::{
    model::{
        self, AckBody, ClaimBody, CreateBody, Kind, Link, LinkType, ReleaseBody, StreamsBody, Subscription, Wake,
        wake_streams_json,
    },
    random_token,
    webhook::WebhookUrl,
};
use crate::{
    Streams,
    body::read_limited,
    error::{Result, StreamError, SubscriptionError},
    lifecycle::Lookup,
    meta::now_ms,
    offset::Offset,
};

const MIN_LEASE_MS: u64 = 1_000;
const MAX_LEASE_MS: u64 = 600_000;
const DEFAULT_LEASE_MS: u64 = 30_000;
const MAX_BODY: usize = 64 * 1024;

async fn json_body<T: DeserializeOwned>(req: Request) -> Result<T> {
    let bytes = read_limited(req.into_body(), MAX_BODY).await?;
    serde_json::from_slice(&bytes).map_err(|e| SubscriptionError::InvalidJson(e).into())
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

pub async fn handle(streams: &Arc<Streams>, rest: String, req: Request) -> Result<Response> {
    let parts: Vec<&str> = rest.splitn(4, '/').collect();
    let method = req.method().clone();
    if method == Method::OPTIONS {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    match (parts.as_slice(), method) {
        (["jwks.json"], Method::GET) => {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/jwk-set+json"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
            Ok((headers, streams.subscriptions.signer.jwks().to_string()).into_response())
        }
        (["subscriptions", id, ..], _) if !valid_id(id) => {
            Err(StreamError::bad("subscription ids use letters, digits, `_` and `-`"))
        }
        (["subscriptions", id], Method::PUT) => {
            let base = base_url(streams, req.headers());
            let body = json_body(req).await?;
            streams.put_subscription(id, body, base).await
        }
        (["subscriptions", id], Method::GET) => {
            let (sub, _) = streams.subscriptions.load(id).await?.ok_or(StreamError::NotFound)?;
            Ok(axum::Json(sub.view(streams.subscriptions.signer.kid())).into_response())
        }
        (["subscriptions", id], Method::DELETE) => {
            let (_, revision) = streams.subscriptions.load(id).await?.ok_or(StreamError::NotFound)?;
            streams
                .subscriptions
                .kv
                .purge_expect_revision(super::key(id), Some(revision))
                .await
                .map_err(|e| crate::StorageError::new("delete a subscription", e))?;
            streams.subscriptions.cache.write().remove(*id);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (["subscriptions", id, "streams"], Method::POST) => {
            let body: StreamsBody = json_body(req).await?;
            streams
                .subscriptions
                .modify(id, |s| {
                    for p in &body.streams {
                        s.links
                            .entry(normalize_path(p))
                            .or_insert(Link { link_type: LinkType::Explicit, acked_seq: 0 })
                            .link_type = LinkType::Explicit;
                    }
                    Ok(())
                })
                .await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (["subscriptions", id, "streams", path], Method::DELETE) => {
            let path = normalize_path(&percent_decode(path));
            streams
                .subscriptions
                .modify(id, |s| {
                    s.links.remove(&path);
                    Ok(())
                })
                .await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (["subscriptions", id, "callback" | "ack"], Method::POST) => {
            let token = bearer(req.headers())
                .map(str::to_owned)
                .ok_or(SubscriptionError::Unauthorized("a Bearer token is required"))?;
            let body: AckBody = json_body(req).await?;
            streams.ack(id, &token, body).await
        }
        (["subscriptions", id, "claim"], Method::POST) => {
            streams.authorize_claim(req.headers())?;
            let body: ClaimBody = json_body(req).await?;
            streams.claim(id, body.worker).await
        }
        (["subscriptions", id, "release"], Method::POST) => {
            let token = bearer(req.headers())
                .map(str::to_owned)
                .ok_or(SubscriptionError::Unauthorized("a Bearer token is required"))?;
            let body: ReleaseBody = json_body(req).await?;
            streams.release(id, &token, body).await
        }
        (["subscriptions", ..], _) | (["jwks.json"], _) => Err(StreamError::MethodNotAllowed),
        _ => Err(StreamError::NotFound),
    }
}

fn normalize_path(p: &str) -> String {
    crate::stream_name_from_path(p).to_owned()
}

fn base_url(streams: &Streams, headers: &HeaderMap) -> String {
    if let Some(url) = &streams.config.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    format!("http://{host}")
}

impl Streams {
    async fn put_subscription(self: &Arc<Self>, id: &str, body: CreateBody, base_url: String) -> Result<Response> {
        let engine = &self.subscriptions;
        let lease_ttl_ms = body.lease_ttl_ms.unwrap_or(DEFAULT_LEASE_MS);
        if !(MIN_LEASE_MS..=MAX_LEASE_MS).contains(&lease_ttl_ms) {
            return Err(SubscriptionError::InvalidRequest("lease_ttl_ms must be between 1000 and 600000").into());
        }
        if body.pattern.is_none() && body.streams.is_empty() {
            return Err(SubscriptionError::InvalidRequest("give a pattern or streams").into());
        }
        let webhook_url = match (body.kind, &body.webhook) {
            (Kind::Webhook, Some(w)) => Some(
                WebhookUrl::parse(&w.url, engine.allow_loopback, &engine.http)
                    .map_err(SubscriptionError::from)?
                    .as_str()
                    .to_owned(),
            ),
            (Kind::Webhook, None) => {
                return Err(SubscriptionError::InvalidRequest("webhook subscriptions need webhook.url").into());
            }
            (Kind::PullWake, _) => None,
        };
        let wake_stream = match (body.kind, &body.wake_stream) {
            (Kind::PullWake, Some(ws)) => {
                let ws = normalize_path(ws);
                match self.lookup(&ws).await? {
                    Lookup::Live(v) if v.meta.is_json() => Some(ws),
                    _ => {
                        return Err(
                            SubscriptionError::InvalidRequest("wake_stream must be an existing JSON stream").into()
                        );
                    }
                }
            }
            (Kind::PullWake, None) => {
                return Err(SubscriptionError::InvalidRequest("pull-wake subscriptions need wake_stream").into());
            }
            (Kind::Webhook, _) => None,
        };
        let explicit: Vec<String> = body.streams.iter().map(|p| normalize_path(p)).collect();
        let hash = model::config_hash(
            body.kind,
            &body.pattern,
            &explicit,
            &webhook_url,
            &wake_stream,
            lease_ttl_ms,
            &body.description,
        );
        if let Some((existing, _)) = engine.load(id).await? {
            if existing.config_hash != hash {
                return Err(SubscriptionError::Exists("subscription exists with a different configuration").into());
            }
            return Ok((StatusCode::OK, axum::Json(existing.view(engine.signer.kid()))).into_response());
        }
        let created_at =
            time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let sub = Subscription {
            id: id.to_owned(),
            kind: body.kind,
            pattern: body.pattern,
            webhook_url,
            wake_stream,
            lease_ttl_ms,
            description: body.description,
            created_at,
            base_url,
            config_hash: hash,
            links: explicit.into_iter().map(|p| (p, Link { link_type: LinkType::Explicit, acked_seq: 0 })).collect(),
            generation: 0,
            wake: None,
        };
        if !engine.save(&sub, 0).await? {
            return Err(SubscriptionError::Exists("subscription was created concurrently").into());
        }
        Ok((StatusCode::CREATED, axum::Json(sub.view(engine.signer.kid()))).into_response())
    }

    async fn ack(self: &Arc<Self>, id: &str, token: &str, body: AckBody) -> Result<Response> {
        let mut acks = Vec::with_capacity(body.acks.len());
        for a in &body.acks {
            let seq = Offset::parse(&a.offset)
                .ok()
                .and_then(Offset::seq)
                .ok_or_else(|| StreamError::bad("malformed ack offset"))?;
            acks.push((normalize_path(&a.stream), seq));
        }
        if self.subscriptions.load(id).await?.is_none() {
            return Err(StreamError::NotFound);
        }
        if !self.finish_wake(id, &body.wake_id, body.generation, Some(token), &acks, body.done).await? {
            return Err(SubscriptionError::Fenced.into());
        }
        let next_wake = body.done && self.has_pending(id).await?;
        if next_wake {
            self.maybe_wake(id).await?;
        }
        Ok(axum::Json(serde_json::json!({ "ok": true, "next_wake": next_wake })).into_response())
    }

    fn authorize_claim(&self, headers: &HeaderMap) -> Result<()> {
        let engine = &self.subscriptions;
        if engine.allow_unauthenticated_claims {
            return Ok(());
        }
        match (&engine.claim_token, bearer(headers)) {
            (Some(expected), Some(given)) if super::constant_time_eq(expected, given) => Ok(()),
            (None, _) => {
                Err(SubscriptionError::Unauthorized("claims need a service token; none is configured on this edge")
                    .into())
            }
            _ => Err(SubscriptionError::Unauthorized("invalid or missing service token").into()),
        }
    }

    async fn claim(self: &Arc<Self>, id: &str, worker: String) -> Result<Response> {
        let engine = &self.subscriptions;
        let (sub, _) = engine.load(id).await?.ok_or(StreamError::NotFound)?;
        if sub.kind != Kind::PullWake {
            return Err(SubscriptionError::InvalidRequest("only pull-wake subscriptions are claimed").into());
        }
        let streams = self.snapshot(&sub).await?;
        let pending = streams.iter().any(|s| s.tail_seq > s.acked_seq);
        let (claimed, sub) = engine
            .modify(id, |s| {
                let now = now_ms();
                if let Some(w) = &s.wake
                    && let Some(holder) = &w.holder
                    && w.lease_expires_ms.is_some_and(|at| at > now)
                {
                    return Err(SubscriptionError::AlreadyClaimed { holder: holder.clone() }.into());
                }
                // A lapsed claim is fenced by a new generation; an unclaimed wake is taken as is.
                let reuse = s.wake.as_ref().is_some_and(|w| w.holder.is_none());
                if !reuse {
                    if !pending {
                        s.wake = None;
                        return Ok(None);
                    }
                    s.generation += 1;
                    s.wake = Some(Wake {
                        wake_id: format!("w_{}", uuid::Uuid::new_v4().simple()),
                        generation: s.generation,
                        token: String::new(),
                        holder: None,
                        lease_expires_ms: None,
                        streams: streams.clone(),
                    });
                }
                let w = s.wake.as_mut().expect("wake set above");
                w.holder = Some(worker.clone());
                w.token = random_token();
                w.lease_expires_ms = Some(now + s.lease_ttl_ms as i64);
                Ok(Some(w.clone()))
            })
            .await?;
        let Some(wake) = claimed else { return Ok(StatusCode::NO_CONTENT.into_response()) };
        Ok(axum::Json(serde_json::json!({
            "subscription_id": sub.id,
            "wake_id": wake.wake_id,
            "generation": wake.generation,
            "token": wake.token,
            "lease_ttl_ms": sub.lease_ttl_ms,
            "streams": wake_streams_json(&wake.streams),
        }))
        .into_response())
    }

    async fn release(self: &Arc<Self>, id: &str, token: &str, body: ReleaseBody) -> Result<Response> {
        let (released, _) = self
            .subscriptions
            .modify(id, |s| {
                let Some(w) = s.wake.as_mut() else { return Ok(false) };
                if w.generation != body.generation
                    || w.wake_id != body.wake_id
                    || !super::constant_time_eq(&w.token, token)
                {
                    return Ok(false);
                }
                w.holder = None;
                w.token = random_token();
                w.lease_expires_ms = None;
                Ok(true)
            })
            .await?;
        if !released {
            return Err(SubscriptionError::Fenced.into());
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

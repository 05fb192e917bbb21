//! HTTP handlers of the reserved APIs under `/v1/stream/__ds/`.
//!
//! Managing subscriptions needs a caller token (access.rs): an agency's members see and
//! change only their agency's subscriptions (its own id space), whose patterns, links and wake
//! streams stay inside the agency's namespace; a service token manages the shared ones. The
//! calls a wake's holder makes (callback, ack, release) carry the wake's token instead.

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
        key_of, wake_streams_json,
    },
    random_token,
    webhook::WebhookUrl,
};
use crate::{
    Streams,
    access::{Action, Principal, outside_namespace},
    body::read_limited,
    error::{Result, StreamError, SubscriptionError},
    lifecycle::Lookup,
    meta::now_ms,
    offset::Offset,
    path::{Pattern, StreamPath},
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

/// The wake token a callback, ack or release presents.
fn wake_token(headers: &HeaderMap) -> Result<String> {
    crate::access::bearer(headers)
        .map(str::to_owned)
        .map_err(|_| SubscriptionError::Unauthorized("a Bearer token is required").into())
}

pub async fn handle(streams: &Arc<Streams>, rest: String, req: Request) -> Result<Response> {
    let parts: Vec<&str> = rest.splitn(4, '/').collect();
    let method = req.method().clone();
    // What needs no caller token: the public key wakes are signed with (webhook receivers
    // fetch it), and the calls a wake's holder makes with the wake's own token.
    match (parts.as_slice(), &method) {
        (["jwks.json"], &Method::GET) => {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/jwk-set+json"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
            return Ok((headers, streams.subscriptions.signer.jwks().to_string()).into_response());
        }
        (["jwks.json"], _) => return Err(StreamError::MethodNotAllowed),
        (["subscriptions", id, ..], _) if !valid_id(id) => {
            return Err(StreamError::bad("subscription ids use letters, digits, `_` and `-`"));
        }
        (["subscriptions", id, "callback" | "ack"], &Method::POST) => {
            let token = wake_token(req.headers())?;
            let body: AckBody = json_body(req).await?;
            return streams.ack(id, &token, body).await;
        }
        (["subscriptions", id, "release"], &Method::POST) => {
            let token = wake_token(req.headers())?;
            let body: ReleaseBody = json_body(req).await?;
            return streams.release(id, &token, body).await;
        }
        _ => {}
    }
    let principal = streams.gate.authenticate(req.headers())?;
    // An agency's subscriptions live in its own id space: another agency's id names nothing.
    let key = |id: &str| key_of(principal.agency(), id);
    match (parts.as_slice(), method) {
        (["subscriptions"], Method::GET) => {
            principal.require(Action::Read)?;
            Ok(streams.list_subscriptions(&principal))
        }
        (["subscriptions", id], Method::PUT) => {
            principal.require(Action::Write)?;
            let base = base_url(streams, req.headers());
            let body = json_body(req).await?;
            streams.put_subscription(&principal, id, body, base).await
        }
        (["subscriptions", id], Method::GET) => {
            principal.require(Action::Read)?;
            let (sub, _) = streams.subscriptions.load(&key(id)).await?.ok_or(StreamError::NotFound)?;
            Ok(axum::Json(sub.view(streams.subscriptions.signer.kid())).into_response())
        }
        (["subscriptions", id], Method::DELETE) => {
            principal.require(Action::Delete)?;
            let key = key(id);
            let (_, revision) = streams.subscriptions.load(&key).await?.ok_or(StreamError::NotFound)?;
            streams
                .subscriptions
                .kv
                .purge_expect_revision(super::kv_key(&key), Some(revision))
                .await
                .map_err(|e| crate::StorageError::new("delete a subscription", e))?;
            streams.subscriptions.cache.write().remove(&key);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (["subscriptions", id, "streams"], Method::POST) => {
            principal.require(Action::Write)?;
            let body: StreamsBody = json_body(req).await?;
            let paths = body.streams.iter().map(|p| watched_path(&principal, p)).collect::<Result<Vec<_>>>()?;
            streams
                .subscriptions
                .modify(&key(id), |s| {
                    for p in &paths {
                        s.links
                            .entry(p.as_str().to_owned())
                            .or_insert(Link { link_type: LinkType::Explicit, acked_seq: 0 })
                            .link_type = LinkType::Explicit;
                    }
                    Ok(())
                })
                .await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (["subscriptions", id, "streams", path], Method::DELETE) => {
            principal.require(Action::Write)?;
            let path = StreamPath::from_encoded_segment(path)?;
            confine(&principal, &path)?;
            streams
                .subscriptions
                .modify(&key(id), |s| {
                    s.links.remove(path.as_str());
                    Ok(())
                })
                .await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (["subscriptions", id, "claim"], Method::POST) => {
            // Pull wakes of a shared subscription are claimed by services (and anyone when
            // open); an agency's, by the agency's editors and admins.
            match principal {
                Principal::Anyone | Principal::Service(_) | Principal::ClaimWorker => {}
                Principal::Member(_) => principal.require(Action::Write)?,
            }
            let body: ClaimBody = json_body(req).await?;
            streams.claim(&key(id), body.worker).await
        }
        (["subscriptions", ..], _) => Err(StreamError::MethodNotAllowed),
        _ => Err(StreamError::NotFound),
    }
}

/// A stream a subscription names (link, wake stream): canonical, and inside the caller's
/// namespace when the caller is an agency's.
fn watched_path(principal: &Principal, reference: &str) -> Result<StreamPath> {
    let path = StreamPath::from_reference(reference)?;
    confine(principal, &path)?;
    Ok(path)
}

fn confine(principal: &Principal, path: &StreamPath) -> Result<()> {
    match principal.agency() {
        Some(agency) if path.namespace() != Some(agency) => Err(outside_namespace(agency)),
        _ => Ok(()),
    }
}

fn base_url(streams: &Streams, headers: &HeaderMap) -> String {
    if let Some(url) = &streams.config.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    format!("http://{host}")
}

impl Streams {
    async fn put_subscription(
        self: &Arc<Self>,
        principal: &Principal,
        id: &str,
        body: CreateBody,
        base_url: String,
    ) -> Result<Response> {
        let engine = &self.subscriptions;
        let lease_ttl_ms = body.lease_ttl_ms.unwrap_or(DEFAULT_LEASE_MS);
        if !(MIN_LEASE_MS..=MAX_LEASE_MS).contains(&lease_ttl_ms) {
            return Err(SubscriptionError::InvalidRequest("lease_ttl_ms must be between 1000 and 600000").into());
        }
        if body.pattern.is_none() && body.streams.is_empty() {
            return Err(SubscriptionError::InvalidRequest("give a pattern or streams").into());
        }
        // What it watches and where it wakes are checked before anything is looked up, so a
        // refusal never tells whether another agency's stream exists.
        if let Some(pattern) = &body.pattern {
            let pattern = Pattern::parse(pattern)?;
            if let Some(agency) = principal.agency()
                && pattern.confined_to() != Some(agency)
            {
                return Err(StreamError::Forbidden(format!(
                    "a pattern must lie inside your namespace: start it with agencies/{agency}/"
                )));
            }
        }
        let explicit = body.streams.iter().map(|p| watched_path(principal, p)).collect::<Result<Vec<_>>>()?;
        let wake_stream = body.wake_stream.as_deref().map(|ws| watched_path(principal, ws)).transpose()?;
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
        let wake_stream = match (body.kind, wake_stream) {
            (Kind::PullWake, Some(ws)) => match self.lookup(ws.as_str()).await? {
                Lookup::Live(v) if v.meta.is_json() => Some(ws.as_str().to_owned()),
                _ => {
                    return Err(SubscriptionError::InvalidRequest("wake_stream must be an existing JSON stream").into());
                }
            },
            (Kind::PullWake, None) => {
                return Err(SubscriptionError::InvalidRequest("pull-wake subscriptions need wake_stream").into());
            }
            (Kind::Webhook, _) => None,
        };
        let explicit: Vec<String> = explicit.iter().map(|p| p.as_str().to_owned()).collect();
        let hash = model::config_hash(
            body.kind,
            &body.pattern,
            &explicit,
            &webhook_url,
            &wake_stream,
            lease_ttl_ms,
            &body.description,
        );
        if let Some((existing, _)) = engine.load(&key_of(principal.agency(), id)).await? {
            if existing.config_hash != hash {
                return Err(SubscriptionError::Exists("subscription exists with a different configuration").into());
            }
            return Ok((StatusCode::OK, axum::Json(existing.view(engine.signer.kid()))).into_response());
        }
        let created_at =
            time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        let sub = Subscription {
            id: id.to_owned(),
            agency: principal.agency(),
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

    /// Every list of the caller's scope: an agency's own, or all of them for a service (and
    /// anyone, when open).
    fn list_subscriptions(&self, principal: &Principal) -> Response {
        let engine = &self.subscriptions;
        let mut subs: Vec<Subscription> = {
            let cache = engine.cache.read();
            cache.values().filter(|s| principal.agency().is_none_or(|a| s.agency == Some(a))).cloned().collect()
        };
        subs.sort_by(|a, b| (a.agency, &a.id).cmp(&(b.agency, &b.id)));
        let views: Vec<_> = subs.iter().map(|s| s.view(engine.signer.kid())).collect();
        axum::Json(serde_json::json!({ "subscriptions": views })).into_response()
    }

    /// The keys a wake-token call for `id` may mean: the wake's token says which one it is,
    /// and it is checked against each. A shared id is always tried (from the store), so a
    /// subscription this edge's cache has not seen yet is still found.
    fn keys_for_id(&self, id: &str) -> Vec<String> {
        let cache = self.subscriptions.cache.read();
        let mut keys: Vec<String> = cache.values().filter(|s| s.id == id).map(Subscription::key).collect();
        if !keys.iter().any(|k| k == id) {
            keys.push(id.to_owned());
        }
        keys
    }

    async fn ack(self: &Arc<Self>, id: &str, token: &str, body: AckBody) -> Result<Response> {
        let mut acks = Vec::with_capacity(body.acks.len());
        for a in &body.acks {
            let seq = Offset::parse(&a.offset)
                .ok()
                .and_then(Offset::seq)
                .ok_or_else(|| StreamError::bad("malformed ack offset"))?;
            acks.push((StreamPath::from_reference(&a.stream)?.as_str().to_owned(), seq));
        }
        let mut exists = false;
        for key in self.keys_for_id(id) {
            if self.subscriptions.load(&key).await?.is_none() {
                continue;
            }
            exists = true;
            if !self.finish_wake(&key, &body.wake_id, body.generation, Some(token), &acks, body.done).await? {
                continue;
            }
            let next_wake = body.done && self.has_pending(&key).await?;
            if next_wake {
                self.maybe_wake(&key).await?;
            }
            return Ok(axum::Json(serde_json::json!({ "ok": true, "next_wake": next_wake })).into_response());
        }
        Err(if exists { SubscriptionError::Fenced.into() } else { StreamError::NotFound })
    }

    async fn claim(self: &Arc<Self>, key: &str, worker: String) -> Result<Response> {
        let engine = &self.subscriptions;
        let (sub, _) = engine.load(key).await?.ok_or(StreamError::NotFound)?;
        if sub.kind != Kind::PullWake {
            return Err(SubscriptionError::InvalidRequest("only pull-wake subscriptions are claimed").into());
        }
        let streams = self.snapshot(&sub).await?;
        let pending = streams.iter().any(|s| s.tail_seq > s.acked_seq);
        let (claimed, sub) = engine
            .modify(key, |s| {
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
        let mut exists = false;
        for key in self.keys_for_id(id) {
            let released = self
                .subscriptions
                .modify(&key, |s| {
                    let Some(w) = s.wake.as_mut() else { return Ok(false) };
                    if w.generation != body.generation
                        || w.wake_id != body.wake_id
                        || !crate::access::constant_time_eq(w.token.as_bytes(), token.as_bytes())
                    {
                        return Ok(false);
                    }
                    w.holder = None;
                    w.token = random_token();
                    w.lease_expires_ms = None;
                    Ok(true)
                })
                .await;
            match released {
                Ok((true, _)) => return Ok(StatusCode::NO_CONTENT.into_response()),
                Ok((false, _)) => exists = true,
                Err(StreamError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Err(if exists { SubscriptionError::Fenced.into() } else { StreamError::NotFound })
    }
}

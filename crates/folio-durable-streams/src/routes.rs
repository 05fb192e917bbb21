//! The `/v1/stream/*` router: canonical paths, who may do what, method dispatch, query
//! parsing, HEAD, DELETE and the headers of every response (security, CORS, caching).

use std::sync::Arc;

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::any,
};
use tracing::Instrument;

use super::{
    Streams,
    access::{Action, Principal},
    body::read_limited,
    create::fork_source,
    error::{Result, StreamError},
    headers::{self as h, value},
    lifecycle::Lookup,
    offset::Offset,
    path::{Route, StreamPath},
    query::parse_read_query,
    store,
};

pub fn router(streams: Arc<Streams>) -> Router {
    Router::new()
        .route("/v1/stream/{*path}", any(dispatch))
        .layer(middleware::from_fn_with_state(streams.clone(), common_headers))
        .with_state(streams)
}

/// Adds the security, CORS and caching headers to every response and opens the request's span.
/// Public so protocols layered on the streams (the Yjs route) answer with the same headers.
pub async fn common_headers(State(streams): State<Arc<Streams>>, req: Request, next: Next) -> Response {
    let span = tracing::info_span!("stream_request", method = %req.method(), path = %req.uri().path(), status = tracing::field::Empty);
    let origin = req.headers().get(header::ORIGIN).cloned();
    let mut res = next.run(req).instrument(span.clone()).await;
    span.record("status", res.status().as_u16());
    h::add_common(res.headers_mut());
    streams.cors.apply(origin.as_ref(), res.headers_mut());
    if !streams.gate.is_open() {
        // Every answer depends on the caller's token: a shared cache must not hand one
        // caller's response to another.
        res.headers_mut().append(header::VARY, HeaderValue::from_static("authorization"));
    }
    res
}

async fn dispatch(State(streams): State<Arc<Streams>>, req: Request) -> Response {
    // A CORS preflight carries no credentials; it learns nothing but the allowed headers.
    if req.method() == Method::OPTIONS {
        return StatusCode::NO_CONTENT.into_response();
    }
    // Still percent-encoded: the route is decided on the bytes as sent, never on a decoding.
    let raw = req.uri().path().strip_prefix("/v1/stream/").unwrap_or_default().to_owned();
    let result = match Route::parse(&raw) {
        Err(e) => Err(e.into()),
        Ok(Route::ReservedApis(rest)) => super::subscriptions::handle(&streams, rest.to_owned(), req).await,
        Ok(Route::Activity(rest)) => streams.activity_request(rest, req).await,
        Ok(Route::Stream(path)) => handle(&streams, path, req).await,
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn handle(streams: &Arc<Streams>, path: StreamPath, req: Request) -> Result<Response> {
    let principal = streams.gate.authenticate(req.headers())?;
    streams.serve(&principal, &path, req).await
}

impl Streams {
    /// The caller of a request, by the rules of `/v1/stream/*` (`access`).
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal> {
        self.gate.authenticate(headers)
    }

    /// Serves one request on the stream at `path` in process, exactly as `/v1/stream/<path>`
    /// would for `principal`: authorization, quotas, create, append, reads (catch-up,
    /// long-poll, SSE), HEAD and DELETE. Only the method, headers, query and body of `req` are
    /// used. Protocols layered on the streams (the Yjs route) call this instead of proxying.
    pub async fn serve(self: &Arc<Self>, principal: &Principal, path: &StreamPath, req: Request) -> Result<Response> {
        let action = match *req.method() {
            Method::GET | Method::HEAD => Action::Read,
            Method::PUT | Method::POST => Action::Write,
            Method::DELETE => Action::Delete,
            _ => return Err(StreamError::MethodNotAllowed),
        };
        principal.authorize(action, path)?;
        let (parts, body) = req.into_parts();
        let streams = self;
        let path = path.as_str();
        match parts.method {
            Method::PUT => {
                // A fork reads its source: the source must be the caller's to read.
                if let Some(source) = fork_source(&parts.headers)? {
                    principal.authorize(Action::Read, &source)?;
                }
                let body = read_limited(body, streams.max_append).await?;
                streams.create(path, &parts.headers, body).await
            }
            Method::POST => {
                // Before the body is read: a refused flood costs neither the upload nor NATS.
                let decision = match &streams.quotas {
                    Some(quotas) => quotas.admit_append(principal, path).await?,
                    None => None,
                };
                let body = read_limited(body, streams.max_append).await?;
                let mut res = streams.append(path, &parts.headers, body).await?;
                if let Some(decision) = decision {
                    decision.add_headers(res.headers_mut());
                }
                Ok(res)
            }
            Method::GET => {
                let query = parse_read_query(parts.uri.query())?;
                streams.get(path, query, &parts.headers).await
            }
            Method::HEAD => streams.head(path).await,
            _ => streams.delete(path).await,
        }
    }

    /// Largest body one append may carry (`--ds-max-append-bytes`, capped by NATS).
    pub fn max_append_bytes(&self) -> usize {
        self.max_append
    }

    /// The JetStream mapping (metadata bucket, data subjects) for layered protocols.
    pub fn store(&self) -> &store::Store {
        &self.store
    }

    async fn head(&self, path: &str) -> Result<Response> {
        // HEAD reports but does not count as access: it must not keep a stream alive.
        let meta = self.live(path).await?.meta;
        let tail = self.store.tail(&meta).await?;
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, value(&meta.content_type));
        headers.insert(h::STREAM_NEXT_OFFSET, value(Offset::at_seq(tail)));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::ETAG,
            value(format!("\"{}:{}{}\"", meta.incarnation, Offset::at_seq(tail), if meta.closed { ":c" } else { "" })),
        );
        if let Some(ttl) = meta.ttl_secs {
            headers.insert(h::STREAM_TTL, value(ttl));
        }
        if let Some(at) = &meta.expires_at {
            headers.insert(h::STREAM_EXPIRES_AT, value(at));
        }
        if meta.closed {
            headers.insert(h::STREAM_CLOSED, HeaderValue::from_static("true"));
        }
        Ok((StatusCode::OK, headers).into_response())
    }

    async fn delete(&self, path: &str) -> Result<Response> {
        let _guard = self.hub.write_lock(path).await;
        for _ in 0..8 {
            match self.lookup(path).await? {
                Lookup::Missing => return Err(StreamError::NotFound),
                Lookup::SoftDeleted(_) => return Err(StreamError::Gone),
                Lookup::Live(v) => {
                    if self.retire(v).await? {
                        return Ok(StatusCode::NO_CONTENT.into_response());
                    }
                }
            }
        }
        Err(StreamError::conflict("stream metadata is changing too fast, retry"))
    }
}

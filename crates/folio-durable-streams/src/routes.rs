//! The `/v1/stream/*` router: method dispatch, query parsing, HEAD, DELETE and CORS.

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
    body::read_limited,
    error::{Result, StreamError},
    headers::{self as h, value},
    lifecycle::Lookup,
    offset::Offset,
    query::parse_read_query,
};

pub fn router(streams: Arc<Streams>) -> Router {
    Router::new()
        .route("/v1/stream/{*path}", any(dispatch))
        .layer(middleware::from_fn(common_headers))
        .with_state(streams)
}

/// Adds the security and CORS headers to every response and opens the request's span.
async fn common_headers(req: Request, next: Next) -> Response {
    let span = tracing::info_span!("stream_request", method = %req.method(), path = %req.uri().path(), status = tracing::field::Empty);
    let mut res = next.run(req).instrument(span.clone()).await;
    span.record("status", res.status().as_u16());
    h::add_common(res.headers_mut());
    res
}

async fn dispatch(State(streams): State<Arc<Streams>>, req: Request) -> Response {
    let path = req.uri().path().strip_prefix("/v1/stream/").unwrap_or_default().to_owned();
    let result = if let Some(rest) = path.strip_prefix("__ds/") {
        super::subscriptions::handle(&streams, rest.to_owned(), req).await
    } else if let Some(proposal) = super::activity::proposal_of(&path) {
        let proposal = proposal.to_owned();
        streams.activity_request(&proposal, req).await
    } else {
        handle(&streams, path, req).await
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn handle(streams: &Arc<Streams>, path: String, req: Request) -> Result<Response> {
    if path.is_empty() {
        return Err(StreamError::NotFound);
    }
    let (parts, body) = req.into_parts();
    match parts.method {
        Method::PUT => {
            let body = read_limited(body, streams.max_append).await?;
            streams.create(&path, &parts.headers, body).await
        }
        Method::POST => {
            let body = read_limited(body, streams.max_append).await?;
            streams.append(&path, &parts.headers, body).await
        }
        Method::GET => {
            let query = parse_read_query(parts.uri.query())?;
            streams.get(&path, query, &parts.headers).await
        }
        Method::HEAD => streams.head(&path).await,
        Method::DELETE => streams.delete(&path).await,
        Method::OPTIONS => Ok(StatusCode::NO_CONTENT.into_response()),
        _ => Err(StreamError::MethodNotAllowed),
    }
}

impl Streams {
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

//! The `/v1/yjs/*` router: method check (405 before any lookup), path and name checks (400),
//! the caller's token (the streams' rules), then one handler per operation. Every stream
//! operation goes through `Streams::serve`, so reads (catch-up, long-poll, SSE), appends,
//! creates and deletes behave, and are authorized, exactly as on `/v1/stream/*`.

use std::sync::Arc;

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
    routing::any,
};
use folio_durable_streams::{
    StreamError, Streams, access::Action, access::Principal, common_headers, offset::Offset, path::StreamPath,
};

use super::{
    Yjs,
    error::YjsError,
    frames,
    path::{DEFAULT_AWARENESS, DocAddress, check_awareness_name, percent_decode},
    record::{Change, Stale},
};

type Result<T, E = YjsError> = std::result::Result<T, E>;

const OCTET_STREAM: &str = "application/octet-stream";
const PRODUCER_ID: &str = "producer-id";
const PRODUCER_EPOCH: &str = "producer-epoch";
const PRODUCER_SEQ: &str = "producer-seq";

pub fn router(yjs: Arc<Yjs>) -> Router {
    let streams = yjs.streams.clone();
    Router::new()
        .route("/v1/yjs/{*rest}", any(dispatch))
        // The streams' security, CORS and caching headers on every answer.
        .layer(middleware::from_fn_with_state(streams, common_headers))
        .with_state(yjs)
}

/// One request: which document, which awareness stream, which offset.
struct Target {
    doc: DocAddress,
    awareness: Option<String>,
    offset: Option<String>,
}

async fn dispatch(State(yjs): State<Arc<Yjs>>, req: Request) -> Response {
    match handle(&yjs, req).await {
        Ok(res) => res,
        Err(e) => e.into_response(),
    }
}

async fn handle(yjs: &Arc<Yjs>, req: Request) -> Result<Response> {
    let action = match *req.method() {
        // A CORS preflight carries no credentials; it learns nothing but the allowed headers.
        Method::OPTIONS => return Ok(StatusCode::NO_CONTENT.into_response()),
        Method::GET | Method::HEAD => Action::Read,
        Method::PUT | Method::POST => Action::Write,
        Method::DELETE => Action::Delete,
        _ => return Err(YjsError::MethodNotAllowed),
    };
    let target = parse_target(&req)?;
    let principal = yjs.streams.authenticate(req.headers())?;
    // Before any lookup, so the answer never says whether someone else's document exists.
    let principal = match target.doc.proposal() {
        // A proposal's document: every member of the agency opens it (PUT creates it from the
        // proposal), reads it and shows presence; writing updates and deleting keep their
        // roles, checked here, after which the edge acts for the caller as (at least) an editor.
        Some(_) => {
            let needs = match (&target.awareness, req.method()) {
                (None, &Method::POST) => Action::Write,
                (_, &Method::DELETE) => Action::Delete,
                _ => Action::Read,
            };
            principal.authorize(needs, &target.doc.updates())?;
            if yjs.proposals().is_none() {
                return Err(YjsError::ProposalsUnavailable(None));
            }
            at_least_editor(principal)
        }
        None => {
            principal.authorize(action, &target.doc.updates())?;
            principal
        }
    };
    let ctx = Ctx { yjs, principal, target };
    match (ctx.target.awareness.clone(), req.method().clone()) {
        (None, Method::PUT) => ctx.put_doc(req).await,
        (None, Method::POST) => ctx.post_doc(req).await,
        (None, Method::GET) => ctx.get_doc(req).await,
        (None, Method::HEAD) => ctx.serve(&ctx.target.doc.updates(), req).await.map_err(doc_not_found),
        (None, _) => ctx.delete_doc().await,
        (Some(name), Method::PUT) => ctx.put_awareness(&name).await,
        (Some(name), Method::POST) => ctx.post_awareness(&name, req).await,
        (Some(name), Method::DELETE) => ctx.delete_awareness(&name).await,
        (Some(name), _) => ctx.serve(&ctx.target.doc.awareness(&name), req).await.map_err(awareness_not_found),
    }
}

fn at_least_editor(principal: Principal) -> Principal {
    match principal {
        Principal::Member(caller) if caller.role == folio_auth::Role::Viewer => {
            Principal::Member(folio_auth::Caller { role: folio_auth::Role::Editor, ..caller })
        }
        other => other,
    }
}

fn parse_target(req: &Request) -> Result<Target> {
    let doc = DocAddress::parse(req.uri().path())?;
    let mut awareness = None;
    let mut offset = None;
    for (k, v) in query_pairs(req.uri().query()) {
        match k.as_str() {
            "awareness" => awareness = Some(v),
            "offset" => offset = Some(v),
            _ => {}
        }
    }
    if let Some(name) = &awareness {
        check_awareness_name(name)?;
    }
    Ok(Target { doc, awareness, offset })
}

fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    query.unwrap_or("").split('&').filter(|p| !p.is_empty()).filter_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        Some((percent_decode(k)?, percent_decode(v)?))
    })
}

fn doc_not_found(e: YjsError) -> YjsError {
    match e {
        YjsError::Stream(StreamError::NotFound | StreamError::Gone) => YjsError::DocumentNotFound,
        other => other,
    }
}

fn awareness_not_found(e: YjsError) -> YjsError {
    match e {
        YjsError::Stream(StreamError::NotFound | StreamError::Gone) => YjsError::AwarenessNotFound,
        other => other,
    }
}

/// A request to the streams layer, built here (method, headers, body; the path is `serve`'s).
pub(crate) fn stream_request(method: Method, headers: HeaderMap, query: Option<&str>, body: Bytes) -> Request {
    let uri = match query {
        Some(q) => format!("/?{q}"),
        None => "/".to_owned(),
    };
    let mut req = Request::new(Body::from(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri.parse().unwrap_or_default();
    *req.headers_mut() = headers;
    req
}

pub(crate) fn octet_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(OCTET_STREAM));
    headers
}

struct Ctx<'a> {
    yjs: &'a Arc<Yjs>,
    principal: Principal,
    target: Target,
}

impl Ctx<'_> {
    fn streams(&self) -> &Arc<Streams> {
        &self.yjs.streams
    }

    async fn serve(&self, path: &StreamPath, req: Request) -> Result<Response> {
        Ok(self.streams().serve(&self.principal, path, req).await?)
    }

    /// Reads a request body up to `limit`, answering 413 beyond it.
    async fn body(req: Request, limit: usize) -> Result<Bytes> {
        axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| YjsError::Stream(StreamError::TooLarge { limit }))
    }

    /// The proposal of a proposal's document, in the caller's agency, or 404.
    async fn proposal_row(&self) -> Result<crate::proposal::ProposalRow> {
        let (Some((agency, id)), Some(proposals)) = (self.target.doc.proposal(), self.yjs.proposals()) else {
            return Err(YjsError::ProposalsUnavailable(None));
        };
        proposals
            .load(agency, id)
            .await
            .map_err(|e| YjsError::ProposalsUnavailable(Some(e)))?
            .ok_or(YjsError::ProposalNotFound)
    }

    /// The update log's metadata, or 404 `DOCUMENT_NOT_FOUND`.
    async fn live_doc(&self) -> Result<folio_durable_streams::meta::StreamMeta> {
        match self.streams().live(self.target.doc.updates().as_str()).await {
            Ok(v) => Ok(v.meta),
            Err(StreamError::NotFound | StreamError::Gone) => Err(YjsError::DocumentNotFound),
            Err(e) => Err(e.into()),
        }
    }

    /// PUT: the update log (DS create semantics: 201, 200, 409) and the default awareness stream.
    async fn put_doc(&self, req: Request) -> Result<Response> {
        let path = req.uri().path().to_owned();
        // A proposal's document is created holding the proposal's content, in the same append
        // as the creation (a body on an existing stream is ignored).
        let (req, proposal) = match self.target.doc.proposal() {
            Some(_) => {
                let row = self.proposal_row().await?;
                let (mut parts, _) = req.into_parts();
                parts.headers.remove(header::CONTENT_LENGTH);
                let body = Yjs::creation_body(&row);
                (stream_request(Method::PUT, parts.headers, None, body.into()), Some(row))
            }
            None => (req, None),
        };
        let mut res = self.serve(&self.target.doc.updates(), req).await?;
        if let Some(row) = proposal {
            if res.status() == StatusCode::CREATED {
                self.yjs.created(&self.target.doc, &row.content).await;
            } else {
                // Opened again: an edge may have died before persisting the last updates, or
                // the proposal changed through the API; the persist sets either right.
                self.yjs.schedule_persist(&self.target.doc, None);
            }
        }
        // Also on 200: a re-PUT brings back an expired default awareness stream.
        if let Err(e) = self.create_awareness(DEFAULT_AWARENESS).await {
            tracing::warn!(error = %folio_runtime::error_chain(&e), "failed to create the default awareness stream");
        }
        if res.status() == StatusCode::CREATED {
            self.yjs.pending.lock().remove(self.target.doc.updates().as_str());
            // The document's URL, never the internal stream's.
            match HeaderValue::from_str(&path) {
                Ok(v) => res.headers_mut().insert(header::LOCATION, v),
                Err(_) => res.headers_mut().remove(header::LOCATION),
            };
        }
        Ok(res)
    }

    /// POST: lib0-framed updates, stored as sent. Producer headers are advisory (spec §3.2):
    /// the provider starts a new producer at epoch 0, seq 0 on every reconnect, and Yjs updates
    /// are idempotent, so deduplicating would only drop edits.
    async fn post_doc(&self, req: Request) -> Result<Response> {
        // Existence first: a missing document is 404 whatever the body.
        self.live_doc().await?;
        if let Some((_, id)) = self.target.doc.proposal() {
            let row = self.proposal_row().await?;
            if !row.accepts_updates() {
                return Err(YjsError::ReadOnly(row.read_only_reason(id)));
            }
        }
        let producer = [PRODUCER_EPOCH, PRODUCER_SEQ].map(|h| req.headers().get(h).cloned());
        let has_producer = req.headers().contains_key(PRODUCER_ID);
        let body = Self::body(req, self.yjs.config.max_post_bytes).await?;
        if body.is_empty() {
            return Err(YjsError::InvalidRequest("empty update"));
        }
        let total = body.len() as u64;
        let pieces = frames::split(body, self.streams().max_append_bytes())?;
        let mut last = None;
        for piece in pieces {
            let req = stream_request(Method::POST, octet_headers(), None, piece);
            last = Some(self.serve(&self.target.doc.updates(), req).await.map_err(doc_not_found)?);
        }
        let mut res = last.expect("a non-empty body has at least one frame");
        self.yjs.appended(&self.target.doc, total);
        if self.target.doc.proposal().is_some() {
            let writer = match self.principal {
                Principal::Member(caller) => Some(caller.user_id),
                _ => None,
            };
            self.yjs.schedule_persist(&self.target.doc, writer);
        }
        if has_producer {
            *res.status_mut() = StatusCode::OK;
            for (name, value) in [PRODUCER_EPOCH, PRODUCER_SEQ].into_iter().zip(producer) {
                if let Some(v) = value {
                    res.headers_mut().insert(HeaderName::from_static(name), v);
                }
            }
        }
        Ok(res)
    }

    async fn get_doc(&self, req: Request) -> Result<Response> {
        match self.target.offset.as_deref() {
            Some("snapshot") => self.discover(req.uri().clone()).await,
            Some(o) if o.ends_with("_snapshot") => self.read_snapshot(o.trim_end_matches("_snapshot")).await,
            _ => self.serve(&self.target.doc.updates(), req).await.map_err(doc_not_found),
        }
    }

    /// `?offset=snapshot`: 307 to the current snapshot, or to `-1` when there is none.
    async fn discover(&self, uri: axum::http::Uri) -> Result<Response> {
        let meta = self.live_doc().await?;
        let record = self.yjs.records.load(self.target.doc.updates().as_str(), &meta.incarnation).await?;
        let offset = match record.and_then(|r| r.snapshot) {
            Some(pointer) => format!("{}_snapshot", pointer.label),
            None => "-1".to_owned(),
        };
        // The request's own URL with `offset` replaced; other parameters kept as sent.
        let query: Vec<String> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some(("offset", _)) => format!("offset={offset}"),
                _ => p.to_owned(),
            })
            .collect();
        let location = format!("{}?{}", uri.path(), query.join("&"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::LOCATION,
            HeaderValue::from_str(&location).map_err(|_| YjsError::InvalidRequest("unusable request URL"))?,
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=5"));
        Ok((StatusCode::TEMPORARY_REDIRECT, headers).into_response())
    }

    /// `?offset=<label>_snapshot`: the whole snapshot, and the offset to read updates from.
    async fn read_snapshot(&self, label: &str) -> Result<Response> {
        if label.is_empty() {
            return Err(YjsError::InvalidRequest("Invalid snapshot offset"));
        }
        let meta = self.live_doc().await.map_err(|e| match e {
            YjsError::DocumentNotFound => YjsError::SnapshotNotFound,
            other => other,
        })?;
        let record = self.yjs.records.load(self.target.doc.updates().as_str(), &meta.incarnation).await?;
        let pointer = record.and_then(|r| r.snapshot).filter(|p| p.label == label).ok_or(YjsError::SnapshotNotFound)?;
        let bytes = self.yjs.snapshots.get(&pointer.object).await?.ok_or(YjsError::SnapshotNotFound)?;
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(OCTET_STREAM));
        let next = Offset::at_seq(folio_bus::StreamSeq::new(pointer.next));
        headers.insert("stream-next-offset", HeaderValue::from_str(&next.to_string()).expect("offsets are ASCII"));
        Ok((StatusCode::OK, headers, bytes).into_response())
    }

    /// DELETE: the update log, then everything that belongs to it.
    async fn delete_doc(&self) -> Result<Response> {
        let updates = self.target.doc.updates();
        let req = stream_request(Method::DELETE, HeaderMap::new(), None, Bytes::new());
        self.serve(&updates, req).await.map_err(doc_not_found)?;
        self.yjs.pending.lock().remove(updates.as_str());
        let record = self.yjs.records.remove(updates.as_str()).await?;
        let mut names = vec![DEFAULT_AWARENESS.to_owned()];
        if let Some(record) = record {
            names.extend(record.awareness.into_iter().filter(|n| n != DEFAULT_AWARENESS));
            self.yjs.delete_orphan(record.snapshot.map(|s| s.object)).await;
        }
        for name in names {
            let req = stream_request(Method::DELETE, HeaderMap::new(), None, Bytes::new());
            match self.serve(&self.target.doc.awareness(&name), req).await {
                Ok(_) | Err(YjsError::Stream(StreamError::NotFound | StreamError::Gone)) => {}
                Err(e) => tracing::warn!(error = %e, awareness = %name, "failed to delete an awareness stream"),
            }
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    /// Creates an awareness stream if missing (201/200; a concurrent create counts as done) and
    /// records its name for the cascade.
    async fn create_awareness(&self, name: &str) -> Result<StatusCode> {
        let mut headers = octet_headers();
        headers.insert("stream-ttl", HeaderValue::from(self.yjs.config.awareness_ttl.as_secs()));
        let req = stream_request(Method::PUT, headers, None, Bytes::new());
        let status = match self.serve(&self.target.doc.awareness(name), req).await {
            Ok(res) => res.status(),
            // Created by another request meanwhile, or with other settings by an earlier
            // release: either way it exists.
            Err(YjsError::Stream(StreamError::Conflict(_))) => StatusCode::OK,
            Err(e) => return Err(e),
        };
        if name != DEFAULT_AWARENESS {
            self.remember_awareness(name).await?;
        }
        Ok(status)
    }

    async fn remember_awareness(&self, name: &str) -> Result<()> {
        let meta = self.live_doc().await?;
        let modified = self
            .yjs
            .records
            .modify(self.target.doc.updates().as_str(), &meta.incarnation, Stale::Replace, |r| {
                if r.awareness.insert(name.to_owned()) { Change::Write } else { Change::Keep }
            })
            .await?;
        self.yjs.delete_orphan(modified.orphaned_object).await;
        Ok(())
    }

    async fn put_awareness(&self, name: &str) -> Result<Response> {
        self.live_doc().await?;
        let status = self.create_awareness(name).await?;
        Ok((status, [(header::CONTENT_TYPE, "application/json")]).into_response())
    }

    /// POST: opaque bytes (awareness updates are not checked); a missing stream of an existing
    /// document is created (expired after its TTL, or never created), never of a deleted one.
    async fn post_awareness(&self, name: &str, req: Request) -> Result<Response> {
        let body = Self::body(req, self.streams().max_append_bytes()).await?;
        let path = self.target.doc.awareness(name);
        let append = || stream_request(Method::POST, octet_headers(), None, body.clone());
        let appended = match self.serve(&path, append()).await {
            Err(YjsError::Stream(StreamError::NotFound | StreamError::Gone)) => {
                self.live_doc().await?;
                self.create_awareness(name).await?;
                self.serve(&path, append()).await
            }
            other => other,
        };
        if appended.as_ref().is_ok_and(|r| r.status().is_success()) {
            self.yjs.awareness_appended(&path);
        }
        appended
    }

    async fn delete_awareness(&self, name: &str) -> Result<Response> {
        let req = stream_request(Method::DELETE, HeaderMap::new(), None, Bytes::new());
        self.serve(&self.target.doc.awareness(name), req).await.map_err(awareness_not_found)
    }
}

//! `/v1/shape` and `/v1/health` over HTTP: Electric's headers, status codes, caching rules,
//! long-poll and SSE.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;
use folio_bus::StreamSeq;
use folio_live::CursorScale;
use tracing::Instrument;

use super::{
    Shapes,
    error::{Result, ShapeError},
    messages::up_to_date_json,
    request::{RequestOffset, ShapeRequest, log_offset, parse_relation},
    shape::{Rendered, Shape, ShapeDef},
    subset::{self, Subset, SubsetParams},
};

const EXPOSE: &str = "electric-cursor,electric-handle,electric-has-data,electric-offset,electric-schema,electric-snapshot,electric-up-to-date,electric-internal-known-error,retry-after";
const INITIAL_CACHE: &str = "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746";
const CATCH_UP_CACHE: &str = "public, max-age=60, stale-while-revalidate=300";
const LIVE_CACHE: &str = "public, max-age=5, stale-while-revalidate=5";
const SSE_KEEPALIVE: Duration = Duration::from_secs(21);

pub fn router(shapes: Arc<Shapes>) -> Router {
    Router::new()
        .route("/v1/shape", get(get_shape).post(post_shape).delete(delete_shape).options(preflight))
        .route("/v1/health", get(health))
        .layer(middleware::from_fn_with_state(Arc::clone(&shapes), cors))
        .with_state(shapes)
}

async fn cors(State(shapes): State<Arc<Shapes>>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let is_shape = req.uri().path() == "/v1/shape";
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    if origin.is_some() {
        // The allowed origin is the caller's own: a shared cache must not hand this response
        // to a page of another origin (issue 13, finding 12).
        let vary = match h.get(header::VARY).and_then(|v| v.to_str().ok()) {
            Some(existing) if !existing.is_empty() => format!("{existing}, origin"),
            _ => "origin".to_owned(),
        };
        h.insert(header::VARY, HeaderValue::from_str(&vary).unwrap_or(HeaderValue::from_static("origin")));
    }
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.unwrap_or(HeaderValue::from_static("*")));
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        // Only what is served: POST for subset snapshots, DELETE only when enabled.
        HeaderValue::from_static(match (is_shape, shapes.policy.enable_delete()) {
            (true, true) => "GET, POST, HEAD, DELETE, OPTIONS",
            (true, false) => "GET, POST, HEAD, OPTIONS",
            (false, _) => "GET, HEAD",
        }),
    );
    h.insert("electric-server", HeaderValue::from_static(concat!("folio-shape-edge/", env!("CARGO_PKG_VERSION"))));
    res
}

async fn preflight() -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    let h = res.headers_mut();
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    // Browsers send the token themselves (no same-origin proxy needed), so authorization is
    // allowed beside Electric's two.
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, if-none-match, traceparent"),
    );
    res
}

async fn health(State(shapes): State<Arc<Shapes>>) -> Response {
    let (status, state) =
        if shapes.catalog.healthy().await { (StatusCode::OK, "active") } else { (StatusCode::ACCEPTED, "waiting") };
    let mut res = (status, axum::Json(serde_json::json!({ "status": state }))).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store, must-revalidate"));
    res
}

/// `POST /v1/shape`: the shape is the URL's; a JSON body with subset keys asks for a subset
/// snapshot of it (a body without them is an ordinary log request, as in Electric).
async fn post_shape(State(shapes): State<Arc<Shapes>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let request = async {
        let mut request = ShapeRequest::from_query(parts.uri.query().unwrap_or(""))?;
        let body = axum::body::to_bytes(body, subset::MAX_BODY_BYTES)
            .await
            .map_err(|_| ShapeError::TooLarge("Request body too large".into()))?;
        request.subset = SubsetParams::from_body(&body, request.subset.take())?;
        Ok(request)
    }
    .await;
    traced(shapes, request, &parts.headers).await
}

async fn delete_shape(State(shapes): State<Arc<Shapes>>, req: Request) -> Response {
    let query = req.uri().query().unwrap_or("").to_owned();
    let result: Result<Response> = async {
        if !shapes.policy.enable_delete() {
            return Err(ShapeError::MethodNotAllowed("DELETE not allowed".into()));
        }
        let mut handle = None;
        let mut table = None;
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "handle" => handle = Some(v.into_owned()),
                "table" => table = Some(parse_relation(&v).map_err(|m| ShapeError::invalid("table", m))?),
                _ => {}
            }
        }
        if handle.is_none() && table.is_none() {
            return Err(ShapeError::invalid("handle", "can't be blank when table is blank"));
        }
        if shapes.delete(handle.as_deref(), table.as_ref()).await? {
            let mut res = StatusCode::ACCEPTED.into_response();
            res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            Ok(res)
        } else {
            Err(ShapeError::NotFound("No existing shape found".into()))
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn get_shape(State(shapes): State<Arc<Shapes>>, req: Request) -> Response {
    let request = ShapeRequest::from_query(req.uri().query().unwrap_or(""));
    traced(shapes, request, req.headers()).await
}

/// Serves one request in its span, counted by status.
async fn traced(shapes: Arc<Shapes>, request: Result<ShapeRequest>, headers: &HeaderMap) -> Response {
    let span = tracing::info_span!(
        "shape_request",
        table = tracing::field::Empty,
        handle = tracing::field::Empty,
        offset = tracing::field::Empty,
        status = tracing::field::Empty
    );
    folio_runtime::trace_context::set_parent_from_http(&span, headers);
    let res = match request {
        Ok(request) => serve(shapes, request, headers).instrument(span.clone()).await,
        Err(e) => Err(e),
    }
    .unwrap_or_else(IntoResponse::into_response);
    span.record("status", res.status().as_u16());
    metrics::counter!("folio_edge_shape_responses_total", "status" => res.status().as_str().to_owned()).increment(1);
    res
}

/// What every successful response to one request shares.
struct Responder<'a> {
    shape: &'a Shape,
    req: &'a ShapeRequest,
    /// The long-poll timeout: the cursor's interval.
    interval: Duration,
    /// The request carried a bearer token: what it returns is that caller's (their agency's
    /// rows, or at least rows only callers with a token may read), so shared caches must not
    /// keep it. Only unauthenticated (insecure-mode) responses are `public`, as in Electric.
    private: bool,
    if_none_match: Option<&'a str>,
}

/// One response's own facts.
struct Reply {
    offset: String,
    up_to_date: bool,
    has_data: bool,
    cache: &'static str,
}

impl Responder<'_> {
    /// The response headers, and whether `If-None-Match` already names this response.
    fn headers(&self, reply: &Reply) -> (HeaderMap, bool) {
        let mut h = HeaderMap::new();
        let put = |h: &mut HeaderMap, k: &'static str, v: &str| {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(k, v);
            }
        };
        put(&mut h, "electric-handle", &self.shape.handle);
        put(&mut h, "electric-offset", &reply.offset);
        put(&mut h, "electric-has-data", if reply.has_data { "true" } else { "false" });
        if self.req.live {
            put(&mut h, "electric-cursor", &next_cursor(self.req.cursor.as_deref(), self.interval));
        } else {
            put(&mut h, "electric-schema", &self.shape.def.schema_header);
        }
        if reply.up_to_date {
            h.insert("electric-up-to-date", HeaderValue::from_static(""));
        }
        if self.private {
            put(&mut h, "cache-control", &reply.cache.replacen("public", "private", 1).replace(", s-maxage=3600", ""));
            h.insert(header::VARY, HeaderValue::from_static("authorization"));
        } else {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static(reply.cache));
        }
        let mut etag = format!("\"{}:{}:{}", self.shape.handle, self.req.offset_text, reply.offset);
        if !reply.has_data {
            // An empty answer must never revalidate: the next one may not be empty.
            etag.push_str(&format!(
                ":{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default()
            ));
        }
        etag.push('"');
        let not_modified = reply.has_data
            && self.if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim().trim_start_matches("W/") == etag));
        put(&mut h, "etag", &etag);
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        (h, not_modified)
    }

    fn respond(&self, reply: Reply, body: Bytes) -> Response {
        let (headers, not_modified) = self.headers(&reply);
        let mut res = if not_modified {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            (StatusCode::OK, Body::from(body)).into_response()
        };
        res.headers_mut().extend(headers);
        res
    }
}

/// What a request's offset asks for, once its shape is known.
enum Answer {
    /// A snapshot chunk, with the offset after it and its caching.
    Chunk(Bytes, String, &'static str),
    /// `offset=now`: nothing, up to date at the head.
    Head,
    /// The log after this stream sequence.
    Log(StreamSeq),
}

/// Electric's `electric-cursor`: the end of the current long-poll-timeout interval since its
/// epoch, or (if the client already has that) the client's plus a random step, so live URLs
/// never repeat (see [`folio_live::next_cursor`], shared with Durable Streams).
fn next_cursor(previous: Option<&str>, interval: Duration) -> String {
    folio_live::next_cursor(folio_live::unix_now(), interval, CursorScale::Seconds, previous)
}

// The big steps are boxed: a waiting live request holds only what its wait needs (memory per
// waiting client), not room for the largest step it passed through.
async fn serve(shapes: Arc<Shapes>, request: ShapeRequest, req_headers: &HeaderMap) -> Result<Response> {
    let span = tracing::Span::current();
    span.record("table", tracing::field::display(&request.table));
    span.record("offset", request.offset_text.as_str());
    // Whatever the path looked like to get here, this handler authenticates: authorization is
    // decided by the handler a request reaches, never by the text of its path.
    let authorization = req_headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let caller = shapes.policy.authenticate(authorization)?;
    let if_none_match = req_headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (def, feed) = Box::pin(shapes.resolve(&request, caller.as_ref())).await?;
    if let Some(params) = &request.subset {
        return Box::pin(serve_subset(&shapes, &request, params, def, &feed, caller.is_some())).await;
    }
    let handle = request.handle.as_deref().unwrap_or_default();
    let (shape, answer) = match request.offset {
        RequestOffset::BeforeAll => {
            let shape = Box::pin(shapes.get_or_create(Arc::clone(&def), &feed)).await?;
            // Dropped for memory between creation and now: the client starts over.
            let chunks = shape.snapshot().ok_or_else(|| shapes.refetch(&def, "snapshot dropped"))?;
            let first = chunks[0].clone();
            (shape, Answer::Chunk(first, "0_0".into(), INITIAL_CACHE))
        }
        RequestOffset::Now => (Box::pin(shapes.get_or_create(Arc::clone(&def), &feed)).await?, Answer::Head),
        RequestOffset::SnapshotChunk(k) => {
            let shape = Box::pin(shapes.lookup(handle, Arc::clone(&def), &feed)).await?;
            let next = usize::try_from(k).unwrap_or(usize::MAX).saturating_add(1);
            let answer = match shape.snapshot() {
                Some(chunks) if next < chunks.len() => {
                    Answer::Chunk(chunks[next].clone(), format!("0_{next}"), CATCH_UP_CACHE)
                }
                Some(chunks) if next > chunks.len() => {
                    return Err(ShapeError::invalid("offset", "out of bounds for this shape"));
                }
                // Past the last chunk: the log, which any edge serves (the chunk count comes
                // with the handle, so an edge without the snapshot knows it too).
                Some(_) => Answer::Log(shape.stitch.seq0),
                None if next == shape.chunk_count => Answer::Log(shape.stitch.seq0),
                // Mid-snapshot on an edge that does not hold it (another edge's, or dropped):
                // start over.
                None => return Err(shapes.refetch(&def, "snapshot not held by this edge")),
            };
            (shape, answer)
        }
        RequestOffset::SnapshotEnd => {
            let shape = Box::pin(shapes.lookup(handle, Arc::clone(&def), &feed)).await?;
            let seq0 = shape.stitch.seq0;
            (shape, Answer::Log(seq0))
        }
        RequestOffset::After(seq) => {
            let shape = Box::pin(shapes.lookup(handle, Arc::clone(&def), &feed)).await?;
            if seq > shape.head() && seq > Box::pin(shapes.changes.last_sequence()).await? {
                // No edge ever handed out this offset.
                return Err(ShapeError::invalid("offset", "out of bounds for this shape"));
            }
            (shape, Answer::Log(seq))
        }
    };
    span.record("handle", shape.handle.as_str());
    shape.touch();
    let responder = Responder {
        shape: &shape,
        req: &request,
        interval: shapes.policy.long_poll_timeout(),
        private: caller.is_some(),
        if_none_match: if_none_match.as_deref(),
    };
    let from = match answer {
        Answer::Chunk(body, offset, cache) => {
            return Ok(responder.respond(Reply { offset, up_to_date: false, has_data: true, cache }, body));
        }
        Answer::Head => {
            let head = shape.head();
            let body = Bytes::from(format!("[{}]", up_to_date_json(head)));
            let reply = Reply { offset: log_offset(head), up_to_date: true, has_data: false, cache: CATCH_UP_CACHE };
            return Ok(responder.respond(reply, body));
        }
        Answer::Log(from) => from,
    };
    let history = shapes.changes.history(&feed.filter);
    // History names no handle: the 409 carries the one to start over with.
    let refetch = |e: ShapeError| match e {
        ShapeError::MustRefetch { reason, .. } => shapes.refetch(&def, reason),
        e => e,
    };
    if request.sse {
        // Read once before streaming, so that errors are plain responses (a 409 must not
        // become an SSE stream that ends at once, over and over).
        if let Some(reason) = shape.invalid_reason() {
            return Err(shapes.refetch(&def, reason));
        }
        let first = Box::pin(shape.read(from, shapes.policy.chunk_bytes(), &history)).await.map_err(refetch)?;
        let (headers, _) = responder.headers(&Reply {
            // The request's own offset: headers are applied before the body arrives, so a
            // connection dropped mid-backlog must not have moved the client past unseen data.
            offset: request.offset_text.clone(),
            up_to_date: false,
            has_data: true,
            cache: "public, max-age=59",
        });
        return Ok(sse(Arc::clone(&shapes), Arc::clone(&shape), headers, from, first, Arc::clone(&feed)));
    }
    let deadline = Instant::now() + shapes.policy.long_poll_timeout();
    loop {
        let mut changed = shape.subscribe();
        if let Some(reason) = shape.invalid_reason() {
            return Err(shapes.refetch(&def, reason));
        }
        let r = Box::pin(shape.read(from, shapes.policy.chunk_bytes(), &history)).await.map_err(refetch)?;
        if r.count == 0 && request.live && r.up_to_date {
            // Nothing new for a live client: hold the request until a change, the long-poll
            // timeout or shutdown (the latter two answer up-to-date without data).
            let woken = tokio::select! {
                _ = changed.changed() => true,
                _ = tokio::time::sleep_until(deadline.into()) => false,
                _ = shapes.shutdown.cancelled() => false,
            };
            if woken {
                continue;
            }
        }
        let cache = if request.live { LIVE_CACHE } else { CATCH_UP_CACHE };
        let reply = Reply { offset: log_offset(r.end), up_to_date: r.up_to_date, has_data: r.count > 0, cache };
        return Ok(responder.respond(reply, r.json_array()));
    }
}

/// Live SSE: every batch of changes as `data:` events followed by an up-to-date, keep-alives
/// in quiet periods, closed after the SSE timeout (the client reconnects from its offset).
///
/// One event reaches every client of a shape at once (50,000 on one edge), so what a client
/// does per event is kept small: the response's end (its lifetime, shutdown) and the keep-alive
/// are registered once, not per event; a wake-up that brought nothing for this client reads
/// nothing; and every client at the same offset is sent the same encoded bytes.
fn sse(
    shapes: Arc<Shapes>,
    shape: Arc<Shape>,
    mut headers: HeaderMap,
    from: StreamSeq,
    first: Arc<Rendered>,
    feed: Arc<super::feed::TableFeed>,
) -> Response {
    headers.remove("etag");
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));

    let now = tokio::time::Instant::now();
    let deadline = now + shapes.policy.sse_timeout();
    struct St {
        shapes: Arc<Shapes>,
        shape: Arc<Shape>,
        feed: Arc<super::feed::TableFeed>,
        from: StreamSeq,
        first: Option<Arc<Rendered>>,
        changed: tokio::sync::watch::Receiver<StreamSeq>,
        deadline: tokio::time::Instant,
        /// The deadline or shutdown, whichever comes first.
        end: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
        /// Armed for 21 s after the last frame, moved on only when it fires.
        keepalive: std::pin::Pin<Box<tokio::time::Sleep>>,
        /// When `keepalive` fires.
        keepalive_at: tokio::time::Instant,
        last_frame: tokio::time::Instant,
        /// The waker `end` and `keepalive` last registered. They wake it when due (or when
        /// the edge starts draining), so until then a wake-up (a change, or h2 giving the
        /// stream room to send) needs no poll of them: polling them per event was a tenth of
        /// the edge's CPU at 50,000 clients.
        timers_waker: Option<std::task::Waker>,
    }
    enum Woken {
        Change,
        Timer,
        End,
    }
    let drain = Arc::clone(&shapes);
    let end = Box::pin(async move {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = drain.drain_started.notified() => {}
        }
    });
    let changed = shape.subscribe();
    let state = St {
        shapes,
        shape,
        feed,
        from,
        first: Some(first),
        changed,
        deadline,
        end,
        keepalive: Box::pin(tokio::time::sleep_until(now + SSE_KEEPALIVE)),
        keepalive_at: now + SSE_KEEPALIVE,
        last_frame: now,
        timers_waker: None,
    };
    let stream = futures::stream::unfold(state, move |mut st| async move {
        loop {
            let now = tokio::time::Instant::now();
            // Checked before any data too: a busy shape must not keep the response open past
            // its lifetime or past shutdown (a busy stream never reaches the timers).
            if now >= st.deadline || st.shapes.draining.load(std::sync::atomic::Ordering::SeqCst) {
                return None;
            }
            // Seen before the head is looked at: a change after this wakes the wait below
            // (marked without the value's lock, which every client of the shape would share).
            st.changed.mark_unchanged();
            if st.shape.invalid_reason().is_some() {
                return None;
            }
            // An empty first read was made before this subscription: read again.
            let r = match st.first.take().filter(|r| r.count > 0) {
                Some(r) => Some(r),
                // Nothing past this client's offset (the read would be empty).
                None if st.shape.head() <= st.from => None,
                None => {
                    let history = st.shapes.changes.history(&st.feed.filter);
                    // Boxed: otherwise every waiting client's stream would be sized for a read
                    // from JetStream, which only a client behind the edge's log ever makes.
                    match Box::pin(st.shape.read(st.from, st.shapes.policy.chunk_bytes(), &history)).await {
                        Ok(r) => Some(r),
                        Err(e) => {
                            // The client reconnects and gets the error as a plain response.
                            tracing::info!(handle = %st.shape.handle, error = %folio_runtime::error_chain(&e), "SSE read ended the stream");
                            return None;
                        }
                    }
                }
            };
            if let Some(r) = r.filter(|r| r.count > 0) {
                st.from = r.end;
                st.shape.touch();
                st.last_frame = now;
                return Some((Ok::<_, std::io::Error>(r.sse_events()), st));
            }
            // 21 s without a frame, however many wake-ups brought nothing.
            let due = st.last_frame + SSE_KEEPALIVE;
            if now >= due {
                st.last_frame = now;
                st.keepalive_at = now + SSE_KEEPALIVE;
                st.keepalive.as_mut().reset(st.keepalive_at);
                st.timers_waker = None;
                return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), st));
            }
            let woken = {
                let changed = st.changed.changed();
                tokio::pin!(changed);
                let (end, keepalive, timers_waker) = (&mut st.end, &mut st.keepalive, &mut st.timers_waker);
                let next_timer = st.deadline.min(st.keepalive_at);
                let draining = &st.shapes.draining;
                let is_draining = || draining.load(std::sync::atomic::Ordering::SeqCst);
                std::future::poll_fn(|cx| {
                    if changed.as_mut().poll(cx).is_ready() {
                        return std::task::Poll::Ready(Woken::Change);
                    }
                    if is_draining() {
                        return std::task::Poll::Ready(Woken::End);
                    }
                    if timers_waker.as_ref().is_some_and(|w| w.will_wake(cx.waker()))
                        && tokio::time::Instant::now() < next_timer
                    {
                        return std::task::Poll::Pending;
                    }
                    // Outside the task's budget: with it spent, a timer would answer Pending
                    // without registering, and the fast path above would then trust a timer
                    // that never fires.
                    if std::pin::pin!(tokio::task::unconstrained(end.as_mut())).poll(cx).is_ready() {
                        return std::task::Poll::Ready(Woken::End);
                    }
                    if std::pin::pin!(tokio::task::unconstrained(keepalive.as_mut())).poll(cx).is_ready() {
                        return std::task::Poll::Ready(Woken::Timer);
                    }
                    if !timers_waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        *timers_waker = Some(cx.waker().clone());
                    }
                    // A drain that began before `end` registered for its notice.
                    if is_draining() {
                        return std::task::Poll::Ready(Woken::End);
                    }
                    std::task::Poll::Pending
                })
                .await
            };
            match woken {
                Woken::End => return None,
                Woken::Change => {}
                Woken::Timer => {
                    // Fired for a frame long since followed by others: due later.
                    st.keepalive_at = due;
                    st.keepalive.as_mut().reset(due);
                    st.timers_waker = None;
                }
            }
        }
    });
    let mut res = (StatusCode::OK, Body::from_stream(stream)).into_response();
    res.headers_mut().extend(headers);
    res
}

/// A subset snapshot of the shape `request` names (see [`subset`]). The shape is found as for
/// a log request (a handle that is not the definition's live one gets 409); the snapshot sees
/// every transaction of the log up to the `electric-offset` answered, which is where the
/// client continues its log: the offset it asked from, or for `now` the head before the
/// snapshot (never further: the client would skip changes to rows it loaded before).
async fn serve_subset(
    shapes: &Shapes,
    request: &ShapeRequest,
    params: &SubsetParams,
    def: Arc<ShapeDef>,
    feed: &Arc<super::feed::TableFeed>,
    private: bool,
) -> Result<Response> {
    if request.live || request.sse {
        return Err(ShapeError::invalid("live", "subset snapshots are a stable view of data: live is not applicable"));
    }
    let subset = Subset::resolve(params, &def, shapes.definitions.limits())?;
    let handle = request.handle.as_deref().unwrap_or_default();
    let (shape, offset) = match request.offset {
        RequestOffset::BeforeAll => (shapes.get_or_create(Arc::clone(&def), feed).await?, "0_0".to_owned()),
        RequestOffset::Now => {
            let shape = shapes.get_or_create(Arc::clone(&def), feed).await?;
            let head = shape.head();
            (shape, log_offset(head))
        }
        RequestOffset::SnapshotChunk(_) | RequestOffset::SnapshotEnd => {
            (shapes.lookup(handle, Arc::clone(&def), feed).await?, request.offset_text.clone())
        }
        RequestOffset::After(seq) => {
            let shape = shapes.lookup(handle, Arc::clone(&def), feed).await?;
            if seq > shape.head() && seq > shapes.changes.last_sequence().await? {
                return Err(ShapeError::invalid("offset", "out of bounds for this shape"));
            }
            // Another edge may have served the client further than this one's feed: the
            // snapshot must see what the client already holds, so wait for the feed to get there.
            let mut changed = shape.subscribe();
            let deadline = tokio::time::Instant::now() + shapes.policy.long_poll_timeout();
            while shape.head() < seq {
                if shape.invalid_reason().is_some() || tokio::time::Instant::now() >= deadline {
                    return Err(ShapeError::unavailable_without_source("catch up with the offset asked from"));
                }
                // A shape no change concerned moves with its feed's clock, without a wake-up:
                // looked at again every 10 ms.
                let _ = tokio::time::timeout(Duration::from_millis(10), changed.changed()).await;
            }
            (shape, request.offset_text.clone())
        }
    };
    shape.touch();
    tracing::Span::current().record("handle", shape.handle.as_str());
    let answer = shapes.snapshots.subset(&def, feed, &subset).await?;
    tracing::debug!(handle = %shape.handle, rows = answer.rows, snapshot = %answer.stitch.xmin, "subset snapshot served");
    metrics::counter!("folio_edge_subset_snapshots_total").increment(1);
    let mut res = (StatusCode::OK, Body::from(answer.body)).into_response();
    let h = res.headers_mut();
    let put = |h: &mut HeaderMap, k: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    put(h, "electric-handle", &shape.handle);
    put(h, "electric-offset", &offset);
    put(h, "electric-schema", &def.schema_header);
    // Tells the client not to prefetch "the next chunk" of a subset (the same query again).
    h.insert("electric-snapshot", HeaderValue::from_static("true"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    // One snapshot of the database at one moment, for one caller: never cached.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if private {
        h.insert(header::VARY, HeaderValue::from_static("authorization"));
    }
    Ok(res)
}

/// Splits a comma-joined run of JSON objects into the objects.
pub(super) fn split_messages(body: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let (mut depth, mut in_str, mut esc, mut start) = (0usize, false, false, 0usize);
    for (i, &b) in body.iter().enumerate() {
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' => {
                if depth == 0 {
                    start = i;
                }
                depth += 1;
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    out.push(&body[start..=i]);
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_at_top_level_only() {
        let body = br#"{"key":"a}{","value":{"x":"}"}},{"headers":{"control":"up-to-date"}}"#;
        let parts = split_messages(body);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], br#"{"headers":{"control":"up-to-date"}}"#);
    }

    #[test]
    fn cursor_moves_forward_and_never_repeats() {
        let a = next_cursor(None, Duration::from_secs(20));
        let n: u64 = a.parse().unwrap();
        assert_eq!(n % 20, 0);
        let b: u64 = next_cursor(Some(&a), Duration::from_secs(20)).parse().unwrap();
        assert!(b > n);
    }
}

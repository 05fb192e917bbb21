//! The one HTTP server loop of every listener (public APIs and admin): axum's `serve` has no
//! header-read or idle timeout and no connection limit, so 800 connections holding half a
//! request head stayed open for minutes on every port (issue 13, finding 7). Here:
//!
//! - a request head must arrive within `header_read_timeout` (HTTP/1);
//! - a connection with no request in flight for `idle_timeout` is closed — that covers a
//!   connection that never finishes its first head, and idle keep-alive and HTTP/2
//!   connections — while long-polls and SSE streams, which are requests in flight, are not
//!   cut;
//! - at most `max_connections` are served at once; beyond that a new connection is closed at
//!   once (counted in `folio_http_connections_refused_total`) rather than queued, so a flood
//!   cannot starve the connections already admitted.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    sync::Semaphore,
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// What one listener allows a connection.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct ConnectionLimits {
    /// A client must send a whole request head within this time, or its connection is closed.
    #[arg(id = "http_header_read_timeout", long = "http-header-read-timeout", env = "FOLIO_HTTP_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// A connection with no request in flight for this long is closed (streams and long-polls
    /// in progress are requests in flight).
    #[arg(id = "http_idle_timeout", long = "http-idle-timeout", env = "FOLIO_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Connections served at once per listener; more are closed on arrival.
    #[arg(id = "http_max_connections", long = "http-max-connections", env = "FOLIO_HTTP_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// While a connection has more than one request in flight (HTTP/2 streams), a wake-up
    /// within this time of its last turn waits for the rest of it, so that what its streams
    /// send meanwhile goes out in one write (0: every wake-up is served at once). One commit
    /// to 50,000 SSE clients on 278 connections was one `writev` per ~3 events otherwise, a
    /// third of the edge's CPU. Unset, each service decides (`ConnectionLimits::coalescing`):
    /// the edge holds for 5 ms, the rest (gRPC calls multiplexed on a connection) not at all.
    #[arg(id = "http_write_coalesce", long = "http-write-coalesce", env = "FOLIO_HTTP_WRITE_COALESCE", value_parser = humantime::parse_duration)]
    pub write_coalesce: Option<Duration>,
}

impl ConnectionLimits {
    /// These limits with the write gate at `default` unless it was set.
    pub fn coalescing(self, default: Duration) -> Self {
        ConnectionLimits { write_coalesce: Some(self.write_coalesce.unwrap_or(default)), ..self }
    }
}

/// Serves `app` on `listener` until `shutdown`; then stops accepting, asks every connection to
/// finish its requests in flight, and returns when all have closed (callers bound that wait with
/// their shutdown grace). `name` labels the metrics (`api`, `edge`, `admin`, …).
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    let connections = TaskTracker::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(Duration::from_secs(20)));
    let builder = Arc::new(builder);
    // At 0 from the start, so an alert's `increase()` sees the first refusal.
    metrics::counter!("folio_http_connections_refused_total", "listener" => name).increment(0);
    loop {
        let (stream, _peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: the listener itself is fine.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("folio_http_connections_refused_total", "listener" => name).increment(1);
            drop(stream);
            continue;
        };
        // Small HTTP/2 frames (gRPC) would otherwise wait for a delayed ACK (~40 ms a call).
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::default());
        let service = {
            let app = app.clone();
            let activity = activity.clone();
            hyper::service::service_fn(move |request: axum::extract::Request<hyper::body::Incoming>| {
                let app = app.clone();
                let in_flight = activity.start();
                // Boxed: hyper runs each HTTP/2 stream as a task sized for its largest state, so
                // an unboxed router future would stay allocated for as long as a streamed body
                // (SSE) is sent, long after the future itself is done.
                Box::pin(async move {
                    let response = tower::ServiceExt::oneshot(app, request.map(axum::body::Body::new)).await;
                    let response = response.unwrap_or_else(|never| match never {});
                    // In flight until its body has been sent: an SSE stream is a request in flight.
                    Ok::<_, Infallible>(response.map(|body| Counted { body, _in_flight: in_flight }))
                })
            })
        };
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(Gathered::new(stream)), service);
            tokio::pin!(connection);
            let mut closing = false;
            let mut gate = WriteGate::new(limits.write_coalesce.unwrap_or_default());
            loop {
                tokio::select! {
                    result = std::future::poll_fn(|cx| gate.poll(cx, &activity, connection.as_mut())) => {
                        if let Err(e) = result {
                            tracing::debug!(listener = name, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = shutdown.cancelled(), if !closing => {
                        closing = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    _ = activity.idle_for(limits.idle_timeout), if !closing => {
                        closing = true;
                        metrics::counter!("folio_http_idle_connections_closed_total", "listener" => name).increment(1);
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// A connection's socket as HTTP/2 needs it to send many small frames: h2 writes a DATA frame
/// of more than 256 bytes on its own when the socket takes vectored writes (`writev` of the
/// frame head and its payload, then a flush), so one commit to 50,000 SSE clients was ~one
/// syscall per event, however many events a connection had ready — a third of the edge's CPU
/// per event. On a connection that starts with HTTP/2's preface this reports no vectored
/// writes, so h2 copies frames up to 1 KiB into its buffer and writes them together, and what
/// is written between two flushes is gathered here into one syscall (writes as large as the
/// limit go straight through; the buffer is freed after each flush, so an idle connection
/// holds none). HTTP/1.1 connections pass through untouched.
struct Gathered<T> {
    io: T,
    /// Decided by the first bytes read, before hyper sets the connection up.
    h2: Option<bool>,
    buf: Vec<u8>,
    /// How much of `buf` has been written.
    written: usize,
}

impl<T> Gathered<T> {
    /// Most bytes held before they are written without waiting for a flush.
    const LIMIT: usize = 64 * 1024;

    fn new(io: T) -> Self {
        Gathered { io, h2: None, buf: Vec::new(), written: 0 }
    }

    fn gathers(&self) -> bool {
        self.h2 == Some(true)
    }
}

impl<T: AsyncWrite + Unpin> Gathered<T> {
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.written < self.buf.len() {
            let n = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.written = 0;
        self.buf = Vec::new();
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Gathered<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.io).poll_read(cx, buf);
        if self.h2.is_none() && read.is_ready() {
            // HTTP/2 with prior knowledge (the only HTTP/2 served here) opens with "PRI * HTTP/2.0".
            self.h2 = Some(buf.filled()[before..].starts_with(b"PRI "));
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Gathered<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        if !self.gathers() {
            return Pin::new(&mut self.io).poll_write(cx, data);
        }
        if self.buf.len() + data.len() > Self::LIMIT {
            std::task::ready!(self.poll_drain(cx))?;
        }
        if data.len() >= Self::LIMIT {
            return Pin::new(&mut self.io).poll_write(cx, data);
        }
        self.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if !self.gathers() {
            return Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        }
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &**b);
        self.poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        !self.gathers() && self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A response body that keeps its request counted in flight until it has been sent.
struct Counted {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Counted {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Holds back a busy connection's wake-ups for up to `window` after its last turn (see
/// [`ConnectionLimits::write_coalesce`]). A wake-up after a quiet `window`, or on a connection
/// with at most one request in flight (HTTP/1), is served at once, so only a connection whose
/// streams keep it busy waits, and never longer than `window`.
struct WriteGate {
    window: Duration,
    last_turn: Option<Instant>,
    /// Reused for every hold: one timer registration per hold, none per wake-up.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    holding: bool,
}

impl WriteGate {
    fn new(window: Duration) -> Self {
        WriteGate { window, last_turn: None, timer: None, holding: false }
    }

    fn poll<F: Future>(&mut self, cx: &mut Context<'_>, activity: &Activity, inner: Pin<&mut F>) -> Poll<F::Output> {
        let now = Instant::now();
        if !self.holding
            && !self.window.is_zero()
            && activity.in_flight.load(Ordering::Relaxed) > 1
            && let Some(until) = self.last_turn.map(|t| t + self.window)
            && now < until
        {
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(until),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(until))),
            }
            self.holding = true;
        }
        if self.holding {
            if let Some(timer) = &mut self.timer
                && timer.as_mut().poll(cx).is_pending()
            {
                return Poll::Pending;
            }
            self.holding = false;
        }
        self.last_turn = Some(now);
        inner.poll(cx)
    }
}

/// Requests in flight on one connection and when the last one ended.
#[derive(Default)]
struct Activity {
    in_flight: AtomicUsize,
    last_change: parking_lot::Mutex<Option<Instant>>,
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last_change.lock() = Some(Instant::now());
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Activity {
    fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        *self.last_change.lock() = Some(Instant::now());
        InFlight(self.clone())
    }

    /// Resolves once no request has been in flight for `limit`. Checked a few times per
    /// `limit`, so a connection closes between `limit` and 1.25 × `limit` after going idle.
    async fn idle_for(&self, limit: Duration) {
        let opened = Instant::now();
        let tick = (limit / 4).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(tick).await;
            if self.in_flight.load(Ordering::SeqCst) > 0 {
                continue;
            }
            let since = self.last_change.lock().unwrap_or(opened);
            if since.elapsed() >= limit {
                return;
            }
        }
    }
}

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
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{net::TcpListener, sync::Semaphore, time::Instant};
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
                async move {
                    let response = tower::ServiceExt::oneshot(app, request.map(axum::body::Body::new)).await;
                    drop(in_flight);
                    Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
                }
            })
        };
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let mut closing = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
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

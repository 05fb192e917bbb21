//! RED metrics (rate, errors, duration) for a service's HTTP routes, written once for every
//! surface: the edge's shapes, Durable Streams and Yjs routes, the API's browser and client-page
//! routes, the notifier's deliveries and unsubscribe API.
//!
//! Labels are bounded: `route` is the route's template (`/v1/client/{token}`), never the path a
//! client sent, or `unmatched` for the fallback, so nobody can mint series with made-up paths;
//! `method` is one of the methods the routes use or `other`; `status` is the response's code.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    Router,
    body::Body,
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

/// The metric names of one HTTP surface, spelled out so a reader (and the check of
/// `deploy/observability`) finds each one with grep.
#[derive(Clone, Copy, Debug)]
pub struct Surface {
    /// Counter `{route, method, status}`: requests answered.
    pub requests_total: &'static str,
    /// Histogram `{route}`: seconds from the request to the response's head (a long-poll's
    /// wait is in it; an SSE stream's lifetime is not).
    pub request_seconds: &'static str,
    /// Gauge `{route}`: requests whose response has not ended. On the edge's live routes this is
    /// the number of live clients (long-polls waiting, SSE streams open).
    pub in_flight: &'static str,
}

pub const API: Surface = Surface {
    requests_total: "folio_api_http_requests_total",
    request_seconds: "folio_api_http_request_seconds",
    in_flight: "folio_api_http_requests_in_flight",
};

pub const EDGE: Surface = Surface {
    requests_total: "folio_edge_http_requests_total",
    request_seconds: "folio_edge_http_request_seconds",
    in_flight: "folio_edge_http_requests_in_flight",
};

pub const NOTIFIER: Surface = Surface {
    requests_total: "folio_notifier_http_requests_total",
    request_seconds: "folio_notifier_http_request_seconds",
    in_flight: "folio_notifier_http_requests_in_flight",
};

impl Surface {
    /// Wraps every route of `router` (use it after the routes and fallbacks are added, so the
    /// route template is known).
    pub fn instrument<S: Clone + Send + Sync + 'static>(self, router: Router<S>) -> Router<S> {
        self.describe();
        router.layer(axum::middleware::from_fn_with_state(self, record))
    }

    /// Registers the names with their help text, so a scrape lists them before the first request.
    fn describe(self) {
        metrics::describe_counter!(self.requests_total, "HTTP requests answered, by route template, method and status");
        metrics::describe_histogram!(
            self.request_seconds,
            metrics::Unit::Seconds,
            "time to the response's head, by route"
        );
        metrics::describe_gauge!(self.in_flight, "requests whose response body has not ended (live clients), by route");
    }
}

async fn record(State(surface): State<Surface>, request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method: &'static str = match *request.method() {
        axum::http::Method::GET => "GET",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let started = Instant::now();
    let in_flight = InFlight::start(surface.in_flight, route.clone());
    let response = next.run(request).await;
    metrics::counter!(surface.requests_total, "route" => route.clone(), "method" => method, "status" => response.status().as_str().to_owned())
        .increment(1);
    metrics::histogram!(surface.request_seconds, "route" => route).record(started.elapsed().as_secs_f64());
    // The gauge comes down when the body ends or is dropped (the client went away), so a live
    // SSE stream counts for as long as it is open.
    response.map(|body| Body::new(Tracked { body, _in_flight: in_flight }))
}

struct InFlight(metrics::Gauge);

impl InFlight {
    fn start(name: &'static str, route: String) -> Self {
        let gauge = metrics::gauge!(name, "route" => route);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// A response body that holds its request's in-flight count until it ends.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl HttpBody for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    const TEST: Surface = Surface {
        requests_total: "folio_test_http_requests_total",
        request_seconds: "folio_test_http_request_seconds",
        in_flight: "folio_test_http_requests_in_flight",
    };

    fn render(recorder: &metrics_exporter_prometheus::PrometheusRecorder) -> String {
        recorder.handle().render()
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template_and_the_body_holds_the_in_flight_count() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _local = metrics::set_default_local_recorder(&recorder);
        let app = TEST.instrument(Router::new().route("/v1/things/{id}", get(|| async { "thing" })));

        let response =
            app.clone().oneshot(Request::get("/v1/things/secret-id-1").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), 200);
        let text = handle.render();
        assert!(text.contains(r#"folio_test_http_requests_in_flight{route="/v1/things/{id}"} 1"#), "{text}");
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"thing");
        let _ = app.oneshot(Request::post("/nowhere/secret-id-2").body(Body::empty()).unwrap()).await.unwrap();

        let text = render(&recorder);
        assert!(text.contains(r#"folio_test_http_requests_in_flight{route="/v1/things/{id}"} 0"#), "{text}");
        assert!(
            text.contains(r#"folio_test_http_requests_total{route="/v1/things/{id}",method="GET",status="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"folio_test_http_requests_total{route="unmatched",method="POST",status="404"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"folio_test_http_request_seconds_count{route="/v1/things/{id}"} 1"#), "{text}");
        assert!(!text.contains("secret-id"), "a raw path became a label:\n{text}");
    }
}

//! The admin HTTP server every service runs: liveness, readiness and Prometheus metrics.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Set by the service once its dependencies answer; `/readyz` reports it.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct AdminState {
    readiness: Readiness,
    metrics: Option<PrometheusHandle>,
}

pub struct AdminServer {
    pub local_addr: std::net::SocketAddr,
    pub readiness: Readiness,
    pub task: tokio::task::JoinHandle<()>,
}

/// Installs the process-wide Prometheus recorder once; later calls (tests running several
/// services in one process) reuse it. Durations (`*_seconds`) are histograms with buckets, not
/// summaries, so dashboards can aggregate quantiles across replicas.
fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
                .ok()?
                .install_recorder()
                .ok()
        })
        .clone()
}

/// From a fast RPC (a few ms) to a long-poll held open (20 s by default) or a slow PDF.
const SECONDS_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

impl AdminServer {
    /// Serves a readiness flag the caller made before the server started: a service's `Bound`
    /// hands it out so an embedder can wait for readiness without polling HTTP. The listener keeps
    /// the service's `FOLIO_HTTP_*` limits, as its public ones do.
    pub async fn start_with(
        listener: TcpListener,
        readiness: Readiness,
        limits: crate::http::ConnectionLimits,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let state = AdminState { readiness: readiness.clone(), metrics: prometheus() };
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(ready))
            .route("/metrics", get(render_metrics))
            .with_state(state);
        let local_addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(e) = crate::http::serve("admin", listener, app, limits, shutdown).await {
                tracing::error!("admin server failed: {e:#}");
            }
        });
        Ok(Self { local_addr, readiness, task })
    }
}

async fn ready(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if state.readiness.is_ready() { (StatusCode::OK, "ready") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }
}

async fn render_metrics(State(state): State<AdminState>) -> String {
    state.metrics.map(|m| m.render()).unwrap_or_default()
}

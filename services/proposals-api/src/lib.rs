//! proposals-api: the only writer of proposals. gRPC (HTTP/2) and gRPC-Web (HTTP/1.1) share one
//! port; every call is authenticated, scoped to the caller's agency and validated before it
//! reaches PostgreSQL.

pub mod auth;
pub mod client_page;
pub mod config;
pub mod error;
pub mod grpc;
pub mod limits;
pub mod pdfs;
pub mod store;
pub mod tenancy;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use folio_proto::api::v1::{
    client_service_server::ClientServiceServer, invitation_service_server::InvitationServiceServer,
    member_service_server::MemberServiceServer,
    notification_preference_service_server::NotificationPreferenceServiceServer,
    proposal_service_server::ProposalServiceServer, template_service_server::TemplateServiceServer,
    webhook_service_server::WebhookServiceServer,
};
use folio_runtime::{Readiness, Spawned};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;

use auth::AuthInterceptor;
pub use auth::{Authenticator, Caller, Role};
pub use config::Config;

/// Requests above this size are refused before decoding.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// Present when NATS is configured.
    pub pdfs: Option<Arc<pdfs::PdfStore>>,
    /// `RequestPdf` queues the job of a rendition stuck this long again.
    pub pdf_requeue_after: Duration,
    /// Per-agency and per-caller rate limits; `None` when switched off.
    pub limits: Option<limits::ApiLimits>,
    /// What webhook endpoint URLs may reach (the notifier's policy).
    pub webhook_policy: Arc<folio_webhook::AddressPolicy>,
    /// The client's links (issued when a proposal is sent) and their public routes' limits.
    pub client: client_page::ClientPageArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Secret(#[from] folio_runtime::SecretError),
    #[error(transparent)]
    Db(#[from] folio_db::DbError),
    #[error("failed to bind {addr}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("server failed")]
    Serve(#[source] std::io::Error),
    #[error("failed to connect to NATS at {url}")]
    Nats { url: String, source: async_nats::ConnectError },
    #[error("failed to build the reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Binds the configured addresses and serves until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    bind(config).await?.run(shutdown).await
}

/// Checks the configuration, binds the API and admin listeners (port 0 works; the ports are
/// known from [`Bound`]) and connects PostgreSQL (migrating it when configured) and NATS.
pub async fn bind(config: Config) -> Result<Bound, Error> {
    config.common.environment.check_secret(
        folio_auth::JwtArgs::SECRET_VAR,
        &config.jwt.jwt_secret,
        folio_auth::DEVELOPMENT_SECRET,
    )?;
    let link = &config.client.link.client_link_secret;
    let built_in = folio_auth::client_link::DEVELOPMENT_CLIENT_LINK_SECRET;
    config.common.environment.check_secret(folio_auth::client_link::ClientLinkArgs::SECRET_VAR, link, built_in)?;
    let bind = |addr| async move { TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source }) };
    let listener = bind(config.listen_addr).await?;
    let admin = bind(config.common.admin_addr).await?;
    let pool = folio_db::connect(&config.db.database_url, config.db_max_connections).await?;
    if config.migrate {
        folio_db::migrate(&pool).await?;
    }
    // One connection for everything the API reads from NATS (PDFs, shared rate limits), made
    // only when one of them is on. Writes never need NATS: the API starts while it is down.
    let nats = if config.pdf_downloads || config.limits.rate_limits {
        let url = &config.bus.nats_url;
        let client = async_nats::ConnectOptions::new()
            .name("proposals-api")
            .retry_on_initial_connect()
            .connect(url)
            .await
            .map_err(|source| Error::Nats { url: url.clone(), source })?;
        Some(client)
    } else {
        None
    };
    let pdfs = nats
        .as_ref()
        .filter(|_| config.pdf_downloads)
        .map(|nats| Arc::new(pdfs::PdfStore::new(nats.clone(), config.bus.pdf_bucket.clone())));
    let limits = nats.filter(|_| config.limits.rate_limits).map(|nats| limits::ApiLimits::over(nats, &config));
    let webhook_policy = Arc::new(folio_webhook::AddressPolicy::new(config.webhook_allowed_subnets.clone()));
    let client = config.client.clone();
    let state = AppState { pool, pdfs, pdf_requeue_after: config.pdf_requeue_after, limits, webhook_policy, client };
    let addr = local_addr(&listener)?;
    let admin_addr = local_addr(&admin)?;
    Ok(Bound { config, listener, admin, addr, admin_addr, state, readiness: Readiness::default() })
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, Error> {
    listener.local_addr().map_err(Error::Serve)
}

/// The API with its listeners bound and its connections open, not serving yet.
pub struct Bound {
    config: Config,
    listener: TcpListener,
    admin: TcpListener,
    addr: SocketAddr,
    admin_addr: SocketAddr,
    state: AppState,
    readiness: Readiness,
}

impl Bound {
    /// gRPC and gRPC-Web.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `/healthz`, `/readyz` and `/metrics`.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Ready once it serves.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Runs it as a task of this process (tests, embedders).
    pub fn spawn(self) -> Spawned<Error> {
        Spawned::spawn(self.readiness(), |shutdown| self.run(shutdown))
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight calls for up to the
    /// configured grace period.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Bound { config, listener, admin, addr, admin_addr, state, readiness } = self;
        let app = router(state, config.jwt.authenticator()).await?;
        let admin = folio_runtime::AdminServer::start_with(admin, readiness, config.common.http, shutdown.clone())
            .await
            .map_err(Error::Serve)?;
        tracing::info!(api = %addr, admin = %admin_addr, "proposals-api listening");
        admin.readiness.set(true);
        let grace = config.common.shutdown_grace;
        let drained = shutdown.clone();
        let server = tokio::spawn(folio_runtime::http::serve("api", listener, app, config.common.http, drained));
        shutdown.cancelled().await;
        match tokio::time::timeout(grace + Duration::from_millis(100), server).await {
            Ok(Ok(result)) => result.map_err(Error::Serve),
            Ok(Err(join)) => Err(Error::Serve(std::io::Error::other(join))),
            Err(_) => {
                tracing::warn!(?grace, "in-flight calls did not finish within the grace period");
                Ok(())
            }
        }
    }
}

/// The full HTTP app: the three authenticated services, health and reflection, with gRPC-Web
/// and CORS for browsers and one tracing span per call.
pub async fn router(state: AppState, auth: Authenticator) -> Result<axum::Router, Error> {
    let limits = state.limits.clone();
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ProposalServiceServer<grpc::proposals::ProposalApi>>().await;
    health.set_serving::<ClientServiceServer<grpc::clients::ClientApi>>().await;
    health.set_serving::<TemplateServiceServer<grpc::templates::TemplateApi>>().await;
    health.set_serving::<WebhookServiceServer<grpc::admin_webhooks::WebhookApi>>().await;
    health.set_serving::<NotificationPreferenceServiceServer<grpc::preferences::PreferenceApi>>().await;
    health.set_serving::<MemberServiceServer<grpc::members::MemberApi>>().await;
    health.set_serving::<InvitationServiceServer<grpc::members::InvitationApi>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(folio_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let proposals = ProposalServiceServer::new(grpc::proposals::ProposalApi { state: state.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let clients = ClientServiceServer::new(grpc::clients::ClientApi { state: state.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    // Plain HTTP routes: RED metrics by route template and HTTP status (the gRPC calls are
    // counted by `record_metrics` with their grpc-status instead).
    let browser_routes = folio_runtime::red::API.instrument(
        axum::Router::new()
            .route("/v1/renditions/{id}/pdf", axum::routing::get(pdfs::download))
            .with_state((state.clone(), auth.clone()))
            .merge(client_page::routes(state.clone())),
    );
    let webhooks = WebhookServiceServer::new(grpc::admin_webhooks::WebhookApi {
        pool: state.pool.clone(),
        policy: state.webhook_policy.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let preferences =
        NotificationPreferenceServiceServer::new(grpc::preferences::PreferenceApi { pool: state.pool.clone() })
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let members = MemberServiceServer::new(grpc::members::MemberApi { pool: state.pool.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    // No bearer token: the invitation link's token is the credential.
    let invitations = InvitationServiceServer::new(grpc::members::InvitationApi {
        pool: state.pool.clone(),
        limits: state.limits.clone(),
        per_address: state.client.invitation_policy(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let templates =
        TemplateServiceServer::new(grpc::templates::TemplateApi { state }).max_decoding_message_size(MAX_MESSAGE_BYTES);

    // Inside the auth interceptor: the limits are per caller.
    let proposals = limits::Limited::new(proposals, &limits);
    let clients = limits::Limited::new(clients, &limits);
    let templates = limits::Limited::new(templates, &limits);
    let webhooks = limits::Limited::new(webhooks, &limits);
    let preferences = limits::Limited::new(preferences, &limits);
    let members = limits::Limited::new(members, &limits);
    let routes = tonic::service::Routes::new(InterceptedService::new(proposals, AuthInterceptor(auth.clone())))
        .add_service(InterceptedService::new(clients, AuthInterceptor(auth.clone())))
        .add_service(InterceptedService::new(templates, AuthInterceptor(auth.clone())))
        .add_service(InterceptedService::new(webhooks, AuthInterceptor(auth.clone())))
        .add_service(InterceptedService::new(preferences, AuthInterceptor(auth.clone())))
        .add_service(InterceptedService::new(members, AuthInterceptor(auth)))
        .add_service(invitations)
        .add_service(health_service)
        .add_service(reflection);

    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_headers(tower_http::cors::Any)
        .allow_methods([http::Method::GET, http::Method::POST, http::Method::OPTIONS])
        .expose_headers([
            http::HeaderName::from_static("grpc-status"),
            http::HeaderName::from_static("grpc-message"),
            http::HeaderName::from_static("grpc-status-details-bin"),
            http::HeaderName::from_static("folio-current-version"),
            http::header::ETAG,
            http::header::CONTENT_LENGTH,
        ]);
    let trace = tower_http::trace::TraceLayer::new_for_grpc()
        .make_span_with(|req: &http::Request<_>| {
            let span = tracing::info_span!(
                "grpc",
                rpc = %req.uri().path(),
                agency_id = tracing::field::Empty,
                user_id = tracing::field::Empty,
                proposal_id = tracing::field::Empty,
            );
            folio_runtime::trace_context::set_parent_from_http(&span, req.headers());
            span
        })
        .on_failure(log_failure);
    // gRPC-Web only on the gRPC routes: it answers 400 to any other HTTP/1.1 request.
    let grpc = routes.into_axum_router().layer(tonic_web::GrpcWebLayer::new());
    Ok(browser_routes.merge(grpc).layer(axum::middleware::from_fn(record_metrics)).layer(cors).layer(trace))
}

/// A failed call is logged at the level of whose fault it is: ERROR only for the server's own
/// (internal, unknown, data loss); what callers cause (bad input, no token, not found, a limit)
/// at DEBUG, so a stranger cannot flood the error log (issue 13, finding 10).
fn log_failure(failure: tower_http::classify::GrpcFailureClass, latency: Duration, _span: &tracing::Span) {
    use tower_http::classify::GrpcFailureClass;
    let ms = latency.as_millis() as u64;
    match failure {
        GrpcFailureClass::Code(code) => match tonic::Code::from_i32(code.get()) {
            code @ (tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss) => {
                tracing::error!(grpc_status = ?code, latency_ms = ms, "call failed")
            }
            code @ (tonic::Code::Unavailable | tonic::Code::DeadlineExceeded) => {
                tracing::warn!(grpc_status = ?code, latency_ms = ms, "call failed")
            }
            code => tracing::debug!(grpc_status = ?code, latency_ms = ms, "call refused"),
        },
        GrpcFailureClass::Error(error) => tracing::warn!(%error, latency_ms = ms, "call failed"),
    }
}

/// Per-RPC call count and latency for Prometheus. Labels come from routes and the closed set of
/// gRPC methods, never raw paths, so a client cannot mint new series with made-up method names
/// (issue 13, finding 6): HTTP routes use their template, anything else is "unmatched".
/// Errors are answered trailers-only, so their `grpc-status` is in the headers; "0" otherwise.
async fn record_metrics(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    static METHODS: std::sync::LazyLock<std::collections::HashSet<String>> = std::sync::LazyLock::new(|| {
        let mut methods: std::collections::HashSet<String> = folio_proto::method_paths().into_iter().collect();
        methods.extend(folio_proto::methods_of(tonic_health::pb::FILE_DESCRIPTOR_SET));
        methods.insert("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo".to_owned());
        methods
    });
    let matched = request.extensions().get::<axum::extract::MatchedPath>().map(|m| m.as_str().to_owned());
    let path = request.uri().path().to_owned();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let code = response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0").to_owned();
    let rpc = match matched {
        Some(route) if !route.contains('*') => route,
        _ if METHODS.contains(&path) => path,
        _ => "unmatched".to_owned(),
    };
    metrics::counter!("folio_api_calls_total", "rpc" => rpc.clone(), "grpc_status" => code).increment(1);
    metrics::histogram!("folio_api_call_seconds", "rpc" => rpc).record(started.elapsed().as_secs_f64());
    response
}

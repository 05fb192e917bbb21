//! The Durable Streams HTTP protocol (`/v1/stream/*`) stored in NATS JetStream.
//!
//! Request path: `routes` parses the path into a `path::Route` (canonical spellings only),
//! asks `access` who the caller is and whether they may, then dispatches by method to
//! `create`, `append`, `read` (catch-up and long-poll) or `sse`; each loads the stream's metadata through `lifecycle` (which applies
//! expiry lazily) and reads or writes messages through `store`. `query` parses a read's query
//! string, `chunk` is one page of messages, `hub` wakes live readers. `subscriptions` serves
//! the reserved `__ds/` APIs; `activity` serves Folio's read-only proposal activity streams
//! from wal-ingest's change events.
//!
//! `Streams::serve` is that path after authentication, public so protocols layered on the
//! streams (`folio-yjs`) serve their streams in process with the same rules.
//!
//! Module dependencies point one way: `routes` → `activity`, `subscriptions`, `read`, `sse`
//! → `access`, `path`, `media`, `hub`, `query`, `chunk` → `store`, `meta`, `offset`, `error`.

pub mod access;
pub mod activity;
mod append;
mod body;
mod chunk;
mod create;
pub mod error;
mod headers;
mod hub;
mod json;
mod lifecycle;
mod media;
pub mod meta;
pub mod offset;
pub mod path;
mod producer;
#[cfg(test)]
mod properties;
mod query;
pub mod quota;
mod read;
mod routes;
mod sse;
pub mod store;
pub mod subscriptions;

use std::{sync::Arc, time::Duration};

use axum::http::HeaderValue;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use error::{StorageError, StreamError};
pub use routes::{common_headers, router};

/// Durable Streams settings, flattened into the edge's `Config`.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamsConfig {
    /// Prefix of every JetStream name the streams API owns (`<prefix>_streams`, `<prefix>_meta`,
    /// subjects `<prefix>.…`); letters, digits, `_` and `-`. Give each deployment or test its own.
    #[arg(long = "ds-prefix", env = "FOLIO_DS_PREFIX", default_value = "folio_ds")]
    pub prefix: String,

    /// How long a long-poll read waits for new data before answering 204.
    #[arg(long = "ds-long-poll-timeout", env = "FOLIO_DS_LONG_POLL_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub long_poll_timeout: Duration,

    /// How long an SSE connection stays open before the server closes it so the client
    /// reconnects (lets CDNs collapse requests).
    #[arg(long = "ds-sse-max-age", env = "FOLIO_DS_SSE_MAX_AGE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub sse_max_age: Duration,

    /// Largest append body (bytes); larger requests get 413. Capped below the NATS server's
    /// `max_payload`, since one append is one JetStream message.
    #[arg(long = "ds-max-append-bytes", env = "FOLIO_DS_MAX_APPEND_BYTES", default_value_t = 1024 * 1024)]
    pub max_append_bytes: usize,

    /// How often each edge sweeps for expired streams nobody requests any more (their data is
    /// purged); requests expire the streams they touch without waiting for it.
    #[arg(long = "ds-expiry-sweep-interval", env = "FOLIO_DS_EXPIRY_SWEEP_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub expiry_sweep_interval: Duration,

    /// Upper bound of one catch-up response or SSE data event (bytes); readers page through the
    /// rest, so a slow reader never makes the edge buffer more than this.
    #[arg(long = "ds-max-read-bytes", env = "FOLIO_DS_MAX_READ_BYTES", default_value_t = 1024 * 1024)]
    pub max_read_bytes: usize,

    /// Allow `http://` webhook URLs to loopback hosts (development and the conformance suite
    /// only). Which addresses webhooks may reach is `FOLIO_WEBHOOK_ALLOWED_SUBNETS`.
    #[arg(long = "ds-webhook-allow-loopback", env = "FOLIO_DS_WEBHOOK_ALLOW_LOOPBACK", default_value_t = false)]
    pub webhook_allow_loopback: bool,

    /// Subnets webhook URLs may resolve to despite being private, loopback, … (comma
    /// separated CIDRs, for development and tests only), e.g. `127.0.0.0/8,::1/128`. Checked
    /// on literal addresses and on every address a host name resolves to (as the notifier does).
    #[arg(long, env = "FOLIO_WEBHOOK_ALLOWED_SUBNETS", value_delimiter = ',', value_parser = folio_webhook::parse_subnet)]
    pub webhook_allowed_subnets: Vec<folio_webhook::ipnet::IpNet>,

    /// Serve the streams API to anyone: no token is asked for and namespaces are off. For the
    /// Durable Streams conformance suite and local development only (a warning is logged at
    /// start); canonical paths, the content-type allow-list and the reserved `proposals/…` and
    /// `__ds/…` paths still hold.
    #[arg(long = "ds-open", env = "FOLIO_DS_OPEN", default_value_t = false)]
    pub open: bool,

    /// Tokens other services present (`Authorization: Bearer …`) instead of a user's JWT: comma
    /// separated, each at least 32 bytes (empty entries are ignored). A service token acts in
    /// every agency's namespace.
    #[arg(
        long = "ds-service-token",
        env = "FOLIO_DS_SERVICE_TOKENS",
        value_delimiter = ',',
        hide_env_values = true,
        value_parser = access::Secret::parse
    )]
    pub service_tokens: Vec<access::Secret>,

    /// Browser origins that may call the streams API cross-origin (comma separated, exactly
    /// `scheme://host[:port]`); the allowed origin is echoed, never `*`. None by default:
    /// browsers reach the streams same-origin, through the gateway.
    #[arg(long = "ds-allowed-origins", env = "FOLIO_DS_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = headers::parse_origin)]
    pub allowed_origins: Vec<HeaderValue>,

    /// Let pull-wake workers claim without a token: only together with `--ds-open` (the edge
    /// refuses to start otherwise), which already lets anyone claim.
    #[arg(
        long = "ds-allow-unauthenticated-claims",
        env = "FOLIO_DS_ALLOW_UNAUTHENTICATED_CLAIMS",
        default_value_t = false
    )]
    pub allow_unauthenticated_claims: bool,

    /// Token pull-wake workers of earlier releases present (`Authorization: Bearer …`): it
    /// claims wakes of service subscriptions, nothing else. Prefer `--ds-service-token`.
    #[arg(long = "ds-claim-token", env = "FOLIO_DS_CLAIM_TOKEN", hide_env_values = true, value_parser = access::Secret::parse)]
    pub claim_token: Option<access::Secret>,

    /// Public base URL of this edge (e.g. `https://edge.example.com`), used in `Location`,
    /// webhook callback and JWKS links; derived from the request's `Host` when unset.
    #[arg(long = "public-url", env = "FOLIO_EDGE_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Limits per agency and per token, shared by every edge through NATS (`on`/`off`; off
    /// only for benchmarks and trusted setups). Never in open mode, which has no agencies.
    #[arg(
        long = "ds-quotas",
        env = "FOLIO_DS_QUOTAS",
        default_value = "on",
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::Set,
    )]
    pub quotas: bool,

    /// Streams one agency may hold (deleted and expired ones give their place back; a deleted
    /// stream forks still read holds it until they are gone). 0: not counted.
    #[arg(long = "ds-max-streams-per-agency", env = "FOLIO_DS_MAX_STREAMS_PER_AGENCY", default_value_t = 10_000)]
    pub max_streams_per_agency: u64,

    /// Bytes of stream data one agency may store (appends as stored; given back on delete and
    /// expiry). 10 GiB by default; 0: not counted (no counter round trip per append).
    #[arg(long = "ds-max-bytes-per-agency", env = "FOLIO_DS_MAX_BYTES_PER_AGENCY", default_value_t = 10 << 30)]
    pub max_bytes_per_agency: u64,

    /// Appends a second per agency, all its users and services together (bursts of twice as many).
    #[arg(long = "ds-agency-appends-per-sec", env = "FOLIO_DS_AGENCY_APPENDS_PER_SEC", default_value_t = 200)]
    pub agency_appends_per_sec: u32,

    /// Appends a second per user (the JWT's user; bursts of twice as many).
    #[arg(long = "ds-token-appends-per-sec", env = "FOLIO_DS_TOKEN_APPENDS_PER_SEC", default_value_t = 50)]
    pub token_appends_per_sec: u32,

    /// Appends a second per service token, across all agencies (bursts of twice as many).
    #[arg(long = "ds-service-appends-per-sec", env = "FOLIO_DS_SERVICE_APPENDS_PER_SEC", default_value_t = 1_000)]
    pub service_appends_per_sec: u32,

    /// The API's bearer tokens: streams, proposal activity and shapes are served per agency.
    #[command(flatten)]
    pub jwt: folio_auth::JwtArgs,
}

impl StreamsConfig {
    pub fn validate(&self) -> Result<(), String> {
        let token_ok =
            |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
        if !token_ok(&self.prefix) {
            return Err(format!("--ds-prefix {:?}: use letters, digits, `_` and `-` only", self.prefix));
        }
        if self.long_poll_timeout.is_zero() {
            return Err("--ds-long-poll-timeout must be positive".into());
        }
        if self.expiry_sweep_interval.is_zero() {
            return Err("--ds-expiry-sweep-interval must be positive".into());
        }
        if self.max_append_bytes == 0 || self.max_read_bytes == 0 {
            return Err("--ds-max-append-bytes and --ds-max-read-bytes must be positive".into());
        }
        // The message never repeats a token: configuration errors end up in logs.
        if self.service_tokens.iter().any(|t| !t.is_empty() && t.len() < access::MIN_SERVICE_TOKEN_BYTES) {
            return Err(format!(
                "every --ds-service-token (FOLIO_DS_SERVICE_TOKENS) must be at least {} bytes",
                access::MIN_SERVICE_TOKEN_BYTES
            ));
        }
        if self.allow_unauthenticated_claims && !self.open {
            return Err("--ds-allow-unauthenticated-claims needs --ds-open: outside open mode every request needs a \
                 token (give pull-wake workers a --ds-service-token)"
                .into());
        }
        Ok(())
    }
}

/// Shared state of the streams API.
pub struct Streams {
    store: store::Store,
    gate: access::Gate,
    cors: headers::Cors,
    hub: Arc<hub::Hub>,
    config: StreamsConfig,
    /// `config.max_append_bytes` capped by what one NATS message can carry.
    max_append: usize,
    /// Limits per agency and token; `None` when off or in open mode.
    quotas: Option<quota::StreamQuotas>,
    subscriptions: subscriptions::Engine,
    activity: activity::Activity,
    /// Cancelled when the edge starts draining: live reads end so connections can close.
    shutdown: CancellationToken,
    /// Every task this API spawns (background loops, webhook deliveries); the edge waits for
    /// them at shutdown.
    tasks: TaskTracker,
    /// Plain appends waiting to be written in their stream's next batch.
    appends: append::Queue,
}

impl Streams {
    /// Creates (or reuses) the JetStream stream and KV bucket and starts the background tasks
    /// on `tasks`; they end when `shutdown` is cancelled. `quotas` holds the limits shared with
    /// the other edges (unused when `config` switches them off).
    pub async fn start(
        nats: async_nats::Client,
        config: StreamsConfig,
        quotas: Option<folio_quota::Quotas>,
        bus: &folio_bus::BusArgs,
        reconnects: folio_live::Reconnects,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Arc<Self>, StorageError> {
        if config.open {
            tracing::warn!(
                "Durable Streams open mode (--ds-open): no token is asked for and namespaces are off, so \
                 anyone who reaches this edge can create, read, write and delete any stream and subscription; \
                 for the conformance suite and local development only"
            );
        }
        if config.claim_token.as_ref().is_some_and(|t| t.len() < access::MIN_SERVICE_TOKEN_BYTES) {
            tracing::warn!(
                "--ds-claim-token is shorter than {} bytes; give pull-wake workers a --ds-service-token instead",
                access::MIN_SERVICE_TOKEN_BYTES
            );
        }
        let store = store::Store::open(nats.clone(), &config.prefix).await?;
        let hub = Arc::new(hub::Hub::default());
        // Headers and protocol framing need room inside the server's max_payload.
        let server_max = nats.server_info().max_payload.saturating_sub(8 * 1024).max(1024);
        let max_append = config.max_append_bytes.min(server_max);
        let subscriptions = subscriptions::Engine::open(&store, &config).await?;
        let activity = activity::Activity::new(
            nats.clone(),
            &config,
            bus,
            hub.clone(),
            reconnects.clone(),
            shutdown.clone(),
            tasks.clone(),
        );
        let streams = Arc::new(Streams {
            store: store.clone(),
            gate: access::Gate::new(&config),
            cors: headers::Cors::new(&config.allowed_origins),
            hub: hub.clone(),
            quotas: quota::StreamQuotas::new(quotas, &config),
            config,
            max_append,
            subscriptions,
            activity,
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
            appends: append::Queue::default(),
        });
        tasks.spawn(hub::run_notice_listener(store.clone(), hub.clone(), reconnects, shutdown.clone()));
        tasks.spawn(hub::run_access_flusher(store.clone(), hub, shutdown.clone()));
        tasks.spawn(lifecycle::run_expiry_sweep(
            streams.clone(),
            streams.config.expiry_sweep_interval,
            shutdown.clone(),
        ));
        if let Some(quotas) = streams.quotas.clone() {
            tasks.spawn(quota::run_stored_bytes_flusher(quotas, store, shutdown.clone()));
        }
        tasks.spawn(subscriptions::run_delivery(streams.clone(), shutdown));
        Ok(streams)
    }
}

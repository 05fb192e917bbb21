//! The Durable Streams HTTP protocol (`/v1/stream/*`) stored in NATS JetStream.
//!
//! Request path: `routes` dispatches by method to `create`, `append`, `read` (catch-up and
//! long-poll) or `sse`; each loads the stream's metadata through `lifecycle` (which applies
//! expiry lazily) and reads or writes messages through `store`. `query` parses a read's query
//! string, `chunk` is one page of messages, `hub` wakes live readers. `subscriptions` serves
//! the reserved `__ds/` APIs; `activity` serves Folio's read-only proposal activity streams
//! from wal-ingest's change events.
//!
//! Module dependencies point one way: `routes` → `activity`, `subscriptions`, `read`, `sse`
//! → `hub`, `query`, `chunk` → `store`, `meta`, `offset`, `error`.

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
pub mod meta;
pub mod offset;
mod producer;
mod query;
mod read;
mod routes;
mod sse;
pub mod store;
pub mod subscriptions;

use std::{sync::Arc, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub(crate) use create::stream_name_from_path;
pub use error::{StorageError, StreamError};
pub use routes::router;

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

    /// Let pull-wake workers claim without a service token (development and conformance only).
    #[arg(
        long = "ds-allow-unauthenticated-claims",
        env = "FOLIO_DS_ALLOW_UNAUTHENTICATED_CLAIMS",
        default_value_t = false
    )]
    pub allow_unauthenticated_claims: bool,

    /// Shared secret pull-wake workers present (`Authorization: Bearer …`) to claim wakes.
    #[arg(long = "ds-claim-token", env = "FOLIO_DS_CLAIM_TOKEN", hide_env_values = true)]
    pub claim_token: Option<String>,

    /// Public base URL of this edge (e.g. `https://edge.example.com`), used in `Location`,
    /// webhook callback and JWKS links; derived from the request's `Host` when unset.
    #[arg(long = "public-url", env = "FOLIO_EDGE_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// The API's bearer tokens: proposal activity and shapes are served per agency.
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
        if !self.jwt.is_strong() {
            return Err(format!("FOLIO_JWT_SECRET must be at least {} bytes", folio_auth::MIN_SECRET_BYTES));
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
        Ok(())
    }
}

/// Shared state of the streams API.
pub struct Streams {
    store: store::Store,
    hub: Arc<hub::Hub>,
    config: StreamsConfig,
    /// `config.max_append_bytes` capped by what one NATS message can carry.
    max_append: usize,
    subscriptions: subscriptions::Engine,
    activity: activity::Activity,
    /// Cancelled when the edge starts draining: live reads end so connections can close.
    shutdown: CancellationToken,
    /// Every task this API spawns (background loops, webhook deliveries); the edge waits for
    /// them at shutdown.
    tasks: TaskTracker,
}

impl Streams {
    /// Creates (or reuses) the JetStream stream and KV bucket and starts the background tasks
    /// on `tasks`; they end when `shutdown` is cancelled.
    pub async fn start(
        nats: async_nats::Client,
        config: StreamsConfig,
        bus: &folio_bus::BusArgs,
        reconnects: folio_live::Reconnects,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Arc<Self>, StorageError> {
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
            hub: hub.clone(),
            config,
            max_append,
            subscriptions,
            activity,
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
        });
        tasks.spawn(hub::run_notice_listener(store.clone(), hub.clone(), reconnects, shutdown.clone()));
        tasks.spawn(hub::run_access_flusher(store, hub, shutdown.clone()));
        tasks.spawn(lifecycle::run_expiry_sweep(
            streams.clone(),
            streams.config.expiry_sweep_interval,
            shutdown.clone(),
        ));
        tasks.spawn(subscriptions::run_delivery(streams.clone(), shutdown));
        Ok(streams)
    }
}

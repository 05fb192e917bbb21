//! proposals-api configuration: flags with `FOLIO_…` environment overrides.

use std::{net::SocketAddr, time::Duration};

use folio_runtime::CommonArgs;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "proposals-api", version, about = "Folio's write API: gRPC and gRPC-Web on one port")]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Address for gRPC (HTTP/2) and gRPC-Web (HTTP/1.1) clients.
    #[arg(long, env = "FOLIO_API_ADDR", default_value = "127.0.0.1:50051")]
    pub listen_addr: SocketAddr,

    #[command(flatten)]
    pub db: folio_db::DbArgs,

    #[arg(long, env = "FOLIO_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    #[command(flatten)]
    pub jwt: folio_auth::JwtArgs,

    /// NATS and the PDF bucket pdf-render writes to (the API reads PDFs from it).
    #[command(flatten)]
    pub bus: folio_bus::BusArgs,

    /// Rate limits per agency and per caller (folio-quota, through NATS).
    #[command(flatten)]
    pub limits: crate::limits::LimitArgs,

    /// Serve PDF downloads from the object store. Off, the API needs no NATS and downloads
    /// answer UNAVAILABLE; on, it starts while NATS is down and downloads wait for it.
    #[arg(long, env = "FOLIO_API_PDF_DOWNLOADS", default_value_t = true, action = clap::ArgAction::Set)]
    pub pdf_downloads: bool,

    /// How long a rendition may stay `queued` or `rendering` before `RequestPdf` queues its
    /// render job again (its job was lost, or gave up without recording it). Keep it above
    /// pdf-render's retry budget: FOLIO_PDF_MAX_DELIVER x (FOLIO_PDF_RENDER_TIMEOUT + backoff),
    /// about 5 min with pdf-render's defaults (a 10 s render limit), plus the time a job may wait in the queue.
    #[arg(long, env = "FOLIO_PDF_REQUEUE_AFTER", default_value = "15m", value_parser = humantime::parse_duration)]
    pub pdf_requeue_after: Duration,

    /// Subnets webhook endpoint URLs may point at despite being private, loopback, … (comma
    /// separated CIDRs, for development and tests only): the notifier's allow-list, which must
    /// be the same, since registering an endpoint applies the address policy delivery applies.
    #[arg(long, env = "FOLIO_WEBHOOK_ALLOWED_SUBNETS", value_delimiter = ',', value_parser = folio_webhook::parse_subnet)]
    pub webhook_allowed_subnets: Vec<folio_webhook::ipnet::IpNet>,

    /// The client's proposal links and the public routes they open.
    #[command(flatten)]
    pub client: crate::client_page::ClientPageArgs,

    /// Apply schema migrations at start-up.
    #[arg(long, env = "FOLIO_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate: bool,
}

impl Config {
    /// A configuration for tests and embedding: everything default except what is given.
    pub fn new(database_url: impl Into<String>, jwt_secret: impl Into<String>) -> Self {
        let mut config = <Self as clap::Parser>::parse_from(["proposals-api"]);
        config.db = folio_db::DbArgs::new(database_url);
        config.jwt.jwt_secret = jwt_secret.into();
        config.pdf_downloads = false;
        // Like PDF downloads: a test or embedder opts in to what needs NATS.
        config.limits.rate_limits = false;
        config.client.link.client_link_secret = folio_auth::client_link::TEST_CLIENT_LINK_SECRET.into();
        config
    }
}

impl folio_runtime::ServiceConfig for Config {
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_requeue_default_is_the_documented_one() {
        let config = super::Config::new("postgres://x", "s");
        assert_eq!(config.pdf_requeue_after, crate::store::renditions::DEFAULT_REQUEUE_AFTER);
    }
}

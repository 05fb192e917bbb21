//! proposals-api configuration: flags with `FOLIO_…` environment overrides.

use std::net::SocketAddr;

use folio_runtime::CommonArgs;

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "proposals-api", version, about = "Folio's write API: gRPC and gRPC-Web on one port")]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Address for gRPC (HTTP/2) and gRPC-Web (HTTP/1.1) clients.
    #[arg(long, env = "FOLIO_API_ADDR", default_value = "127.0.0.1:50051")]
    pub listen_addr: SocketAddr,

    #[arg(long, env = "FOLIO_DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/folio")]
    pub database_url: String,

    #[arg(long, env = "FOLIO_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    #[command(flatten)]
    pub jwt: folio_auth::JwtArgs,

    /// NATS with JetStream, for serving rendered PDFs from the object store. Without it,
    /// downloads answer UNAVAILABLE; everything else works.
    #[arg(long, env = "FOLIO_NATS_URL")]
    pub nats_url: Option<String>,

    /// The JetStream Object Store bucket pdf-render writes PDFs to.
    #[arg(long, env = "FOLIO_PDF_BUCKET", default_value = "folio-pdfs")]
    pub pdf_bucket: String,

    /// Apply schema migrations at start-up.
    #[arg(long, env = "FOLIO_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate: bool,
}

impl Config {
    /// A configuration for tests and embedding: everything default except what is given.
    pub fn new(database_url: impl Into<String>, jwt_secret: impl Into<String>) -> Self {
        let mut config = <Self as clap::Parser>::parse_from(["proposals-api"]);
        config.database_url = database_url.into();
        config.jwt.jwt_secret = jwt_secret.into();
        config.nats_url = None;
        config
    }
}

impl folio_runtime::ServiceConfig for Config {
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

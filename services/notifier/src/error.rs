//! Start-up failures of the notifier. Failures while running (Postgres, NATS, SMTP or an
//! endpoint unreachable) are retried and logged where they happen, never returned.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration")]
    Config(#[from] crate::config::ConfigError),
    #[error("failed to bind {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] folio_db::DbError),
    #[error("failed to set up the NATS connection to {url}")]
    Nats {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("invalid SMTP configuration")]
    Smtp(#[source] lettre::transport::smtp::Error),
    #[error("invalid mail from address {0:?}")]
    MailFrom(String),
    #[error("failed to build the webhook HTTP client")]
    HttpClient(#[source] reqwest::Error),
    #[error("server failed")]
    Serve(#[source] std::io::Error),
}

//! The notifier's configuration: every flag also reads a `FOLIO_…` variable. Defaults run
//! against the local cluster (`scripts/`); production changes the SMTP URL, the public base
//! URL and the secrets.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use folio_runtime::CommonArgs;

use folio_webhook::AddressPolicy;

use crate::retry::RetrySchedule;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "notifier",
    version,
    about = "Emails people and sends signed webhooks when proposals change, exactly once per recipient."
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Postgres: the delivery log, recipients and preferences.
    #[command(flatten)]
    pub db: folio_db::DbArgs,

    /// Size of the Postgres pool (the scheduler holds one per claim or attempt record).
    #[arg(long, env = "FOLIO_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    #[command(flatten)]
    pub bus: folio_bus::BusArgs,

    /// Durable consumer name; replicas share it, so JetStream spreads events between them.
    #[arg(long, env = "FOLIO_NOTIFIER_CONSUMER", default_value = "notifier")]
    pub consumer: String,

    /// Where a newly created consumer starts: `new` (events after it was created) or `all`.
    #[arg(long, env = "FOLIO_NOTIFIER_DELIVER_FROM", default_value = "new", value_parser = ["new", "all"])]
    pub deliver_from: String,

    /// Address of the notifier's HTTP API (manual retry, unsubscribe).
    #[arg(long, env = "FOLIO_NOTIFIER_HTTP_ADDR", default_value = "127.0.0.1:8090")]
    pub http_addr: SocketAddr,

    /// Base URL people reach Folio on; links in emails and unsubscribe URLs start with it.
    #[arg(long, env = "FOLIO_PUBLIC_BASE_URL", default_value = "http://127.0.0.1:5173")]
    pub public_base_url: String,

    /// Base URL of this service's HTTP API as seen from mail clients (unsubscribe links).
    #[arg(long, env = "FOLIO_NOTIFIER_PUBLIC_URL", default_value = "http://127.0.0.1:8090")]
    pub notifier_public_url: String,

    /// SMTP server: `smtp://host:port` (plain, STARTTLS when offered with `?tls=opportunistic`),
    /// `smtp://host:587?tls=required` or `smtps://host:465`; user and password in the URL.
    #[arg(long, env = "FOLIO_SMTP_URL", default_value = "smtp://127.0.0.1:2525", hide_env_values = true)]
    pub smtp_url: String,

    /// From address of every email.
    #[arg(long, env = "FOLIO_MAIL_FROM", default_value = "Folio <notifications@folio.localhost>")]
    pub mail_from: String,

    /// Timeout of one SMTP exchange.
    #[arg(long, env = "FOLIO_SMTP_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub smtp_timeout: Duration,

    /// Timeout of one webhook request (connect, send, response).
    #[arg(long, env = "FOLIO_WEBHOOK_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub webhook_timeout: Duration,

    /// Subnets webhook URLs may resolve to despite being private, loopback, … (comma
    /// separated CIDRs, for development and tests only), e.g. `127.0.0.0/8,::1/128`.
    #[arg(long, env = "FOLIO_WEBHOOK_ALLOWED_SUBNETS", value_delimiter = ',', value_parser = folio_webhook::parse_subnet)]
    pub webhook_allowed_subnets: Vec<ipnet::IpNet>,

    /// Delays between attempts after a failure; the default is Svix's schedule. Each delay is
    /// jittered by ±20 %; a `Retry-After` longer than the delay wins.
    #[arg(long, env = "FOLIO_RETRY_SCHEDULE", default_value = "5s,5m,30m,2h,5h,10h,10h", value_delimiter = ',', value_parser = humantime::parse_duration)]
    pub retry_schedule: Vec<Duration>,

    /// An endpoint failing for this long with no success is disabled and its agency told.
    #[arg(long, env = "FOLIO_ENDPOINT_DISABLE_AFTER", default_value = "5d", value_parser = humantime::parse_duration)]
    pub endpoint_disable_after: Duration,

    /// How long before a proposal's expiry its owner is reminded.
    #[arg(long, env = "FOLIO_EXPIRY_REMINDER_LEAD", default_value = "3d", value_parser = humantime::parse_duration)]
    pub expiry_reminder_lead: Duration,

    /// How long a replica owns a claimed delivery; must exceed the SMTP and webhook timeouts,
    /// or a slow attempt could be claimed and sent again by another replica.
    #[arg(long, env = "FOLIO_DELIVERY_LEASE", default_value = "2m", value_parser = humantime::parse_duration)]
    pub delivery_lease: Duration,

    /// How long JetStream waits for a replica to ack a change event before offering it to another:
    /// what an event held by a replica that died waits. Writing an event's deliveries takes
    /// milliseconds; keep it above how long PostgreSQL may stall.
    #[arg(long, env = "FOLIO_NOTIFIER_ACK_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub ack_wait: Duration,

    /// How often due deliveries are looked for when nothing woke the scheduler.
    #[arg(long, env = "FOLIO_SCHEDULER_POLL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub scheduler_poll: Duration,

    /// Deliveries attempted at once by this replica.
    #[arg(long, env = "FOLIO_DELIVERY_CONCURRENCY", default_value_t = 64)]
    pub delivery_concurrency: usize,

    #[command(flatten)]
    pub jwt: folio_auth::JwtArgs,

    #[command(flatten)]
    pub client_link: folio_auth::client_link::ClientLinkArgs,

    /// Secret that signs unsubscribe tokens (at least 32 bytes).
    #[arg(
        long,
        env = "FOLIO_UNSUBSCRIBE_SECRET",
        default_value = DEVELOPMENT_UNSUBSCRIBE_SECRET,
        hide_env_values = true
    )]
    pub unsubscribe_secret: String,

    /// Apply schema migrations at start-up.
    #[arg(long, env = "FOLIO_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate: bool,
}

/// The built-in unsubscribe secret: public (it is in this file), for a local cluster only.
pub const DEVELOPMENT_UNSUBSCRIBE_SECRET: &str = "folio-local-unsubscribe-secret-change-me";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Secret(#[from] folio_runtime::SecretError),
    #[error("FOLIO_DELIVERY_LEASE ({lease:?}) must exceed the SMTP and webhook timeouts ({timeout:?})")]
    LeaseTooShort { lease: Duration, timeout: Duration },
    #[error("FOLIO_RETRY_SCHEDULE must list at least one delay")]
    EmptySchedule,
    #[error("{name} {value:?} is not an absolute http(s) URL")]
    BadUrl { name: &'static str, value: String },
}

impl Config {
    /// A configuration for tests and tools: defaults, then the given overrides.
    pub fn new(database_url: impl Into<String>, nats_url: impl Into<String>) -> Self {
        let mut config = Config::parse_from(["notifier"]);
        config.db = folio_db::DbArgs::new(database_url);
        config.bus.nats_url = nats_url.into();
        config.client_link.client_link_secret = folio_auth::client_link::TEST_CLIENT_LINK_SECRET.into();
        config
    }

    /// Checks what clap cannot: run before anything binds or connects.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let environment = self.common.environment;
        environment.check_secret(
            folio_auth::JwtArgs::SECRET_VAR,
            &self.jwt.jwt_secret,
            folio_auth::DEVELOPMENT_SECRET,
        )?;
        environment.check_secret(
            "FOLIO_UNSUBSCRIBE_SECRET",
            &self.unsubscribe_secret,
            DEVELOPMENT_UNSUBSCRIBE_SECRET,
        )?;
        environment.check_secret(
            folio_auth::client_link::ClientLinkArgs::SECRET_VAR,
            &self.client_link.client_link_secret,
            folio_auth::client_link::DEVELOPMENT_CLIENT_LINK_SECRET,
        )?;
        let timeout = self.smtp_timeout.max(self.webhook_timeout);
        if self.delivery_lease <= timeout {
            return Err(ConfigError::LeaseTooShort { lease: self.delivery_lease, timeout });
        }
        if self.retry_schedule.is_empty() {
            return Err(ConfigError::EmptySchedule);
        }
        for (name, value) in
            [("FOLIO_PUBLIC_BASE_URL", &self.public_base_url), ("FOLIO_NOTIFIER_PUBLIC_URL", &self.notifier_public_url)]
        {
            let ok = reqwest::Url::parse(value).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
            if !ok {
                return Err(ConfigError::BadUrl { name, value: value.clone() });
            }
        }
        Ok(())
    }

    pub fn schedule(&self) -> RetrySchedule {
        RetrySchedule::new(self.retry_schedule.clone())
    }

    pub fn address_policy(&self) -> AddressPolicy {
        AddressPolicy::new(self.webhook_allowed_subnets.clone())
    }
}

impl folio_runtime::ServiceConfig for Config {
    fn common(&self) -> &CommonArgs {
        &self.common
    }

    fn check(&self) -> Result<(), String> {
        self.validate().map_err(|e| crate::chain(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_the_schedule_is_svix() {
        // The built-in secrets pass only in development (the secrets test of all-in-one).
        let c = Config::parse_from(["notifier", "--env", "development"]);
        c.validate().unwrap();
        let mins = |m: u64| Duration::from_secs(60 * m);
        assert_eq!(
            c.retry_schedule,
            vec![Duration::from_secs(5), mins(5), mins(30), mins(120), mins(300), mins(600), mins(600)]
        );
        assert_eq!(c.webhook_timeout, Duration::from_secs(30));
        assert_eq!(c.endpoint_disable_after, Duration::from_secs(5 * 86_400));
        assert!(c.webhook_allowed_subnets.is_empty());
    }

    #[test]
    fn subnets_parse_and_bad_ones_are_refused() {
        let c = Config::try_parse_from(["notifier", "--webhook-allowed-subnets", "127.0.0.0/8,::1"]).unwrap();
        assert_eq!(c.webhook_allowed_subnets.len(), 2);
        assert!(Config::try_parse_from(["notifier", "--webhook-allowed-subnets", "localhost"]).is_err());
    }

    #[test]
    fn a_lease_shorter_than_a_timeout_is_refused() {
        let c = Config::try_parse_from(["notifier", "--env", "development", "--delivery-lease", "10s"]).unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::LeaseTooShort { .. })));
    }
}

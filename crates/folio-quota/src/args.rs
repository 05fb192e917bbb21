//! The flags every service using limits shares (flattened into its `Config`).

use std::time::Duration;

/// What a limit does while NATS cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailureMode {
    /// Admit, with a WARN and `folio_quota_nats_unavailable_total`. Rate limits still hold per
    /// replica (each enforces the full rate on its own); counted reservations go unrecorded.
    Open,
    /// Refuse with UNAVAILABLE (HTTP 503) and a retry hint.
    Closed,
}

#[derive(Debug, Clone, clap::Args)]
pub struct QuotaArgs {
    /// JetStream KV bucket of rate-limit buckets (memory storage; a key idle for its max age is
    /// deleted, which is the same as a full bucket).
    #[arg(long = "quota-rate-bucket", env = "FOLIO_QUOTA_RATE_BUCKET", default_value = "folio-rates")]
    pub rate_bucket: String,

    /// JetStream KV bucket of counted quotas (file storage: counts must survive restarts).
    #[arg(long = "quota-count-bucket", env = "FOLIO_QUOTA_COUNT_BUCKET", default_value = "folio-quotas")]
    pub count_bucket: String,

    /// A replica leases this much of a rate's time at once from the shared bucket (tokens =
    /// rate x lease, at least 1, at most the burst). Larger: fewer KV writes, looser global rate.
    #[arg(long = "quota-lease", env = "FOLIO_QUOTA_LEASE", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub lease: Duration,

    /// Leased tokens not spent within this long are forfeited, so a replica cannot hoard them.
    #[arg(long = "quota-lease-ttl", env = "FOLIO_QUOTA_LEASE_TTL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,

    /// Longest wait for one KV round trip before NATS counts as unreachable.
    #[arg(long = "quota-nats-timeout", env = "FOLIO_QUOTA_NATS_TIMEOUT", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub nats_timeout: Duration,

    /// Rate limits while NATS is unreachable. `open` by default: writes must not depend on NATS
    /// (proposals-api serves them with NATS down), and each replica still enforces the rate locally.
    #[arg(
        long = "quota-rates-on-nats-down",
        env = "FOLIO_QUOTA_RATES_ON_NATS_DOWN",
        value_enum,
        default_value = "open"
    )]
    pub rates_on_nats_down: FailureMode,

    /// Counted quotas while NATS is unreachable. `closed` by default: an unrecorded reservation
    /// stays uncounted until reconciled, and these are rare calls a client can retry.
    #[arg(
        long = "quota-counts-on-nats-down",
        env = "FOLIO_QUOTA_COUNTS_ON_NATS_DOWN",
        value_enum,
        default_value = "closed"
    )]
    pub counts_on_nats_down: FailureMode,
}

impl Default for QuotaArgs {
    fn default() -> Self {
        Self {
            rate_bucket: "folio-rates".into(),
            count_bucket: "folio-quotas".into(),
            lease: Duration::from_millis(100),
            lease_ttl: Duration::from_secs(1),
            nats_timeout: Duration::from_millis(250),
            rates_on_nats_down: FailureMode::Open,
            counts_on_nats_down: FailureMode::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        quota: super::QuotaArgs,
    }

    #[test]
    fn the_flag_defaults_are_the_default_value() {
        let parsed = Cli::parse_from(["x"]).quota;
        let default = super::QuotaArgs::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
    }
}

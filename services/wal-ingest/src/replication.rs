//! The replication connection: `START_REPLICATION … LOGICAL` with pgoutput over the streaming
//! protocol, through `pgwire-replication` 0.5.
//!
//! Why this crate: upstream `tokio-postgres` has no CopyBoth/replication mode and sqlx neither;
//! the forks that add it (Materialize, Supabase, Neon) are git-only. `pgwire-replication` is
//! on crates.io and carries exactly the transport: startup with `replication=database` and
//! session `options`, SCRAM and TLS, keepalive replies, and — the part that is easy to get
//! wrong — standby status updates sent by its own task on a timer *also while our consumer
//! applies backpressure* (its 0.4 fix for the `wal_sender_timeout` replay livelock), with the
//! flushed position moved only by `update_applied_lsn`. It does not decode rows, which we want
//! to own anyway (`decode.rs`), and it never confirms anything on its own: the LSN we report
//! is always a Commit end LSN whose events JetStream acknowledged (`confirm.rs`), or a
//! keepalive position while nothing is pending. Writing the sub-protocol ourselves on
//! `postgres-protocol` was the alternative (~1k lines); this keeps the spine smaller for the
//! same control over which LSN is confirmed.

use std::time::Duration;

use folio_domain::Lsn;
use percent_encoding::percent_decode_str;
use pgwire_replication::{ReplicationConfig, TlsConfig};

#[derive(Debug, thiserror::Error)]
#[error("bad database URL: {0}")]
pub struct UrlError(String);

pub struct ReplicationSettings<'a> {
    pub database_url: &'a str,
    pub slot: &'a str,
    pub publication: &'a str,
    pub confirmed: Lsn,
    pub status_interval: Duration,
}

pub fn config(s: &ReplicationSettings<'_>) -> Result<ReplicationConfig, UrlError> {
    let url = url::Url::parse(s.database_url).map_err(|e| UrlError(e.to_string()))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(UrlError(format!("scheme {:?} is not postgres", url.scheme())));
    }
    let decode = |v: &str| percent_decode_str(v).decode_utf8_lossy().into_owned();
    let host = url.host_str().map(decode).unwrap_or_else(|| "127.0.0.1".to_owned());
    let user = if url.username().is_empty() { "postgres".to_owned() } else { decode(url.username()) };
    let password = url.password().map(decode).unwrap_or_default();
    let database = url.path().trim_start_matches('/');
    let database = if database.is_empty() { user.clone() } else { decode(database) };
    let mut tls = TlsConfig::disabled();
    for (k, v) in url.query_pairs() {
        if k == "sslmode" {
            tls = match v.as_ref() {
                "disable" | "allow" | "prefer" => TlsConfig::disabled(),
                "require" => TlsConfig::require(),
                "verify-ca" => TlsConfig::verify_ca(None),
                "verify-full" => TlsConfig::verify_full(None),
                other => return Err(UrlError(format!("unsupported sslmode {other:?}"))),
            };
        }
    }
    let lsn = pgwire_replication::Lsn::from_u64(s.confirmed.0);
    Ok(ReplicationConfig::new(host, user, password, database, s.slot, s.publication)
        .with_port(url.port().unwrap_or(5432))
        .with_tls(tls)
        // Start where the slot says; report the slot's own position until we confirm more,
        // never the 0/0 start marker.
        .with_start_lsn(pgwire_replication::Lsn::ZERO)
        .with_ack_lsn(lsn)
        .with_status_interval(s.status_interval)
        .with_wakeup_interval(s.status_interval)
        // Output formatting pinned on the walsender, as the edge's snapshots pin it.
        .with_options(folio_db::text_output_options())
        .with_application_name(format!("wal-ingest:{}", s.slot)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_database_url() {
        let s = ReplicationSettings {
            database_url: "postgres://rep%40l:p%2Fw@db.example:6543/folio_x?sslmode=require",
            slot: "s",
            publication: "p",
            confirmed: Lsn(5),
            status_interval: Duration::from_secs(1),
        };
        let c = config(&s).unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.user.as_str(), c.password.as_str()),
            ("db.example", 6543, "rep@l", "p/w")
        );
        assert_eq!(c.database, "folio_x");
        assert!(c.tls.mode.requires_tls());
        assert!(config(&ReplicationSettings { database_url: "mysql://x/y", ..s }).is_err());
    }
}

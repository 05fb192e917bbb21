//! Who may read which table, and how responses are paced and sized: the configuration as the
//! request path asks it.

use std::time::Duration;

use folio_auth::{Authenticator, Caller};

use super::{
    catalog::AllowList,
    config::ShapesConfig,
    error::{Result, ShapeError},
    request::QualifiedName,
};

pub struct Policy {
    config: ShapesConfig,
    auth: Authenticator,
    allow: AllowList,
}

impl Policy {
    pub fn new(config: ShapesConfig, auth: Authenticator) -> Result<Self, String> {
        let allow = AllowList::parse(&config.tables)?;
        if config.insecure {
            tracing::warn!(
                "FOLIO_SHAPE_INSECURE is on: /v1/shape serves every allowed table WITHOUT authentication or tenant pinning. Never use this in production."
            );
        }
        Ok(Policy { config, auth, allow })
    }

    /// The caller a request's token names. In insecure mode the header is not read at all, as
    /// Electric never reads it: a client or proxy forwarding its own app token must not be
    /// refused (the official client's `onError` retry with new headers would loop on 401).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Option<Caller>> {
        if self.config.insecure {
            return Ok(None);
        }
        self.auth.verify_header(authorization).map(Some).map_err(ShapeError::Unauthorized)
    }

    /// Refuses tables outside `FOLIO_SHAPE_TABLES`.
    pub fn check_table(&self, table: &QualifiedName) -> Result<()> {
        if self.allow.allows(table) {
            return Ok(());
        }
        Err(ShapeError::Forbidden(format!("table {table} is not served by this edge (FOLIO_SHAPE_TABLES)")))
    }

    pub fn enable_delete(&self) -> bool {
        self.config.enable_delete
    }

    pub fn long_poll_timeout(&self) -> Duration {
        self.config.long_poll_timeout
    }

    pub fn sse_timeout(&self) -> Duration {
        self.config.sse_timeout
    }

    /// Target size of one response.
    pub fn chunk_bytes(&self) -> usize {
        self.config.chunk_bytes
    }

    /// How long a shape nobody requested stays in memory.
    pub fn idle_timeout(&self) -> Duration {
        self.config.idle_timeout
    }
}

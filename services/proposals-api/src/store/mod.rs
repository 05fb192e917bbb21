//! One module per table group; every query takes the caller's agency and filters by it, so a
//! row of another agency is indistinguishable from a missing one.

pub mod client_links;
pub mod clients;
pub mod members;
pub mod preferences;
pub mod proposals;
pub mod renditions;
pub mod templates;
pub mod webhooks;

use base64::Engine as _;
use sqlx::{PgPool, Postgres, Transaction};

use crate::error::ApiError;

/// The id of the transaction that committed a write, as logical replication reports it (the
/// 32-bit `xid`, which shape-edge puts in each change message's `headers.txids`). A client that
/// applied the write optimistically waits for this id in its shape stream to know the write
/// has reached it (Electric's txid pattern). 0: the call committed nothing (an idempotent
/// repeat, a no-op), so there is nothing to wait for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Txid(pub u32);

/// A write's result and the transaction that committed it.
#[derive(Debug)]
pub struct Committed<T> {
    pub value: T,
    pub txid: Txid,
}

impl<T> Committed<T> {
    /// A result no transaction of this call wrote.
    pub fn unchanged(value: T) -> Self {
        Self { value, txid: Txid::default() }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Committed<U> {
        Committed { value: f(self.value), txid: self.txid }
    }
}

impl<T> std::ops::Deref for Committed<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// Opens a write transaction. Its first record in the WAL is the calling span's trace context
/// (`folio_db::emit_trace_context`), so every change event of the transaction continues the
/// trace of the call that made it. Nothing is recorded when the API exports no traces (no
/// OTLP endpoint): its spans then have no context to continue.
pub async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, ApiError> {
    let mut tx = pool.begin().await?;
    let traceparent = folio_bus::trace_context::current_traceparent();
    if !traceparent.is_empty() {
        folio_db::emit_trace_context(&mut tx, &traceparent).await?;
    }
    Ok(tx)
}

/// Commits `tx`, returning `value` with the transaction's id, or 0 if it changed no row: the
/// trace message of [`begin`] (like a row lock) gives every transaction an id, but only one
/// that changed rows is ever seen in a shape stream, which is what a client waits for.
pub async fn commit<T>(mut tx: Transaction<'_, Postgres>, value: T) -> Result<Committed<T>, ApiError> {
    let xid: Option<String> = sqlx::query_scalar(
        "SELECT pg_current_xact_id_if_assigned()::xid::text \
          WHERE EXISTS (SELECT 1 FROM pg_stat_xact_user_tables WHERE n_tup_ins + n_tup_upd + n_tup_del > 0)",
    )
    .fetch_optional(&mut *tx)
    .await?
    .flatten();
    tx.commit().await?;
    // An xid is a 32-bit counter, so this parse cannot fail on a PostgreSQL answer.
    let txid = Txid(xid.and_then(|x| x.parse().ok()).unwrap_or_default());
    Ok(Committed { value, txid })
}

/// Keyset cursor: the last id of the previous page, opaque to callers.
pub fn encode_cursor(last_id: uuid::Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last_id.as_bytes())
}

pub fn decode_cursor(token: &str) -> Result<Option<uuid::Uuid>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| uuid::Uuid::from_slice(&b).ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::InvalidArgument(vec![tonic_types::FieldViolation::new(
                "page_token",
                "is not a token returned by a previous call",
            )])
        })
}

/// 1..=200, default 50.
pub fn page_size(requested: i32) -> Result<i64, ApiError> {
    match requested {
        0 => Ok(50),
        1..=200 => Ok(i64::from(requested)),
        _ => Err(ApiError::InvalidArgument(vec![tonic_types::FieldViolation::new(
            "page_size",
            format!("must be between 1 and 200, got {requested}"),
        )])),
    }
}

/// Rows are fetched with `LIMIT limit + 1`: the extra row only says there is another page.
pub fn split_page<T>(mut rows: Vec<T>, limit: i64, id: impl Fn(&T) -> uuid::Uuid) -> (Vec<T>, Option<uuid::Uuid>) {
    if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        let next = rows.last().map(id);
        (rows, next)
    } else {
        (rows, None)
    }
}

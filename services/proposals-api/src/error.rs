//! Every failure of the API, mapped once to a gRPC status with `google.rpc` details.

use folio_domain::{ErrorCode, IllegalTransition, MoneyError};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} {id} is at version {current}, the request expected version {expected}")]
    StaleVersion { kind: &'static str, id: String, expected: i64, current: i64 },
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("failed to access the database")]
    Db(#[from] sqlx::Error),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ")
}

impl From<MoneyError> for ApiError {
    fn from(e: MoneyError) -> Self {
        let field = match e {
            MoneyError::Quantity(_) => "quantity_milli",
            MoneyError::UnitPrice(_) => "unit_price_minor",
            MoneyError::TaxRate(_) => "tax_rate_ppm",
            MoneyError::Currency(_) => "currency",
            MoneyError::Overflow => "line_items",
        };
        ApiError::InvalidArgument(vec![FieldViolation::new(field, e.to_string())])
    }
}

impl ApiError {
    pub fn not_found(kind: &'static str, id: impl ToString) -> Self {
        ApiError::NotFound { kind, id: id.to_string() }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            ApiError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            ApiError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            ApiError::NotFound { .. } => ErrorCode::NotFound,
            ApiError::StaleVersion { .. } => ErrorCode::Conflict,
            ApiError::IllegalTransition(_) | ApiError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::Db(sqlx::Error::PoolTimedOut) => ErrorCode::Unavailable,
            // Text PostgreSQL cannot store (a NUL, bytes outside UTF-8) that no field check
            // caught: still the caller's input, not a server fault.
            ApiError::Db(e) if is_unstorable_text(e) => ErrorCode::InvalidArgument,
            ApiError::Db(_) => ErrorCode::Internal,
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(err: ApiError) -> Self {
        let code = tonic::Code::from(err.code().grpc_code());
        match err {
            ApiError::InvalidArgument(violations) => {
                let message = format!("invalid request: {}", describe(&violations));
                tonic::Status::with_error_details(code, message, ErrorDetails::with_bad_request(violations))
            }
            ApiError::StaleVersion { current, .. } => {
                let message = err.to_string();
                let details = ErrorDetails::with_error_info(
                    "STALE_VERSION",
                    "folio",
                    [("current_version".to_owned(), current.to_string())],
                );
                let mut status = tonic::Status::with_error_details(code, message, details);
                if let Ok(v) = current.to_string().parse() {
                    status.metadata_mut().insert("folio-current-version", v);
                }
                status
            }
            ApiError::IllegalTransition(ref t) => {
                let details = ErrorDetails::with_error_info(
                    "ILLEGAL_TRANSITION",
                    "folio",
                    [("from".to_owned(), t.from.to_string()), ("to".to_owned(), t.to.to_string())],
                );
                tonic::Status::with_error_details(code, err.to_string(), details)
            }
            ApiError::Db(ref e) if is_unstorable_text(e) => tonic::Status::new(
                code,
                "invalid request: a text field holds a character PostgreSQL cannot store (U+0000)",
            ),
            ApiError::Db(ref e) => {
                // The cause is for operators, not callers.
                tracing::error!(error = %folio_runtime::error_chain(e), "database call failed");
                tonic::Status::new(
                    code,
                    if code == tonic::Code::Unavailable { "database busy, retry" } else { "internal error" },
                )
            }
            other => tonic::Status::new(code, other.to_string()),
        }
    }
}

/// `character_not_in_repertoire` and `untranslatable_character`.
fn is_unstorable_text(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("22021" | "22P05")))
}

/// Postgres unique/foreign-key violations that callers can cause, turned into their errors.
pub fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("23503"))
}

pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}

/// The same errors for plain HTTP routes: the status from the shared table, a JSON body.
impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let code = self.code();
        let message = match &self {
            ApiError::Db(e) => {
                tracing::error!(error = %folio_runtime::error_chain(e), "database call failed");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let status = http::StatusCode::from_u16(code.http_status()).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(serde_json::json!({ "code": code.as_str(), "message": message }))).into_response()
    }
}

//! One module per table group; every query takes the caller's agency and filters by it, so a
//! row of another agency is indistinguishable from a missing one.

pub mod clients;
pub mod proposals;
pub mod renditions;
pub mod templates;

use base64::Engine as _;

use crate::error::ApiError;

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

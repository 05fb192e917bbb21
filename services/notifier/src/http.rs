//! The notifier's HTTP API.
//!
//! - `GET /v1/deliveries/{id}` and `POST /v1/deliveries/{id}/retry`: a delivery with its
//!   attempt log, and a manual retry of a failed one. Bearer JWT (HS256, the API's tokens and
//!   secret), scoped to the caller's agency; retrying needs the editor or admin role. They
//!   live here rather than in proposals-api because the notifier owns the delivery log.
//! - `GET /v1/unsubscribe?token=…` shows a confirmation form (mail scanners follow links, so a
//!   GET must not unsubscribe); `POST` unsubscribes, and is what RFC 8058 one-click clients
//!   send (`List-Unsubscribe=One-Click` in a form body).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use folio_domain::ErrorCode;
use uuid::Uuid;

use crate::{Ctx, chain, email::escape_html, store};

pub fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/v1/deliveries/{id}", get(get_delivery))
        .route("/v1/deliveries/{id}/retry", post(retry_delivery))
        .route("/v1/unsubscribe", get(unsubscribe_form).post(unsubscribe))
        .with_state(ctx)
}

/// An error answered as `{code, message}` with the status from the shared code table.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
}

impl ApiError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        // Logged with its chain here; the caller gets an opaque 500.
        tracing::error!("request failed: {}", chain(&e));
        Self::new(ErrorCode::Internal, "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(serde_json::json!({ "code": self.code.as_str(), "message": self.message }))).into_response()
    }
}

fn caller(ctx: &Ctx, headers: &HeaderMap) -> Result<folio_auth::Caller, ApiError> {
    let authorization = headers.get(axum::http::header::AUTHORIZATION).map(|h| h.to_str().unwrap_or_default());
    ctx.auth.verify_header(authorization).map_err(|e| ApiError::new(ErrorCode::Unauthenticated, e.to_string()))
}

fn delivery_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::new(ErrorCode::InvalidArgument, format!("{raw:?} is not a delivery id")))
}

async fn get_delivery(
    State(ctx): State<Arc<Ctx>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<store::DeliveryView>, ApiError> {
    let caller = caller(&ctx, &headers)?;
    let id = delivery_id(&id)?;
    // Another agency's delivery is reported as missing, not forbidden: ids do not leak.
    store::view(&ctx.pool, caller.agency_id.as_uuid(), id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("delivery {id} not found")))
}

async fn retry_delivery(
    State(ctx): State<Arc<Ctx>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<store::DeliveryView>), ApiError> {
    let caller = caller(&ctx, &headers)?;
    if !caller.may_write() {
        return Err(ApiError::new(ErrorCode::PermissionDenied, "the viewer role cannot retry deliveries"));
    }
    let id = delivery_id(&id)?;
    let span = tracing::info_span!("manual_retry", delivery_id = %id, agency_id = %caller.agency_id);
    let _guard = span.enter();
    // One attempt: the step after the schedule's last, so a failure is final again.
    let one_shot = i32::try_from(ctx.schedule.len()).unwrap_or(i32::MAX);
    match store::manual_retry(&ctx.pool, caller.agency_id.as_uuid(), id, one_shot).await? {
        store::ManualRetry::Scheduled => {}
        store::ManualRetry::NotFound => {
            return Err(ApiError::new(ErrorCode::NotFound, format!("delivery {id} not found")));
        }
        store::ManualRetry::NotFailed(status) => {
            return Err(ApiError::new(
                ErrorCode::FailedPrecondition,
                format!("delivery {id} is {status}; only failed deliveries can be retried"),
            ));
        }
    }
    tracing::info!("manual retry scheduled");
    ctx.wake.notify_one();
    let view = store::view(&ctx.pool, caller.agency_id.as_uuid(), id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("delivery {id} not found")))?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

#[derive(Debug, serde::Deserialize)]
struct TokenQuery {
    token: String,
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body style=\"font-family:sans-serif;max-width:32rem;margin:3rem auto\"><h1>{t}</h1>{body}</body></html>",
        t = escape_html(title)
    ))
}

async fn unsubscribe_form(State(ctx): State<Arc<Ctx>>, Query(q): Query<TokenQuery>) -> Response {
    let Some((_, event_type)) = ctx.tokens.verify(&q.token) else {
        return (StatusCode::BAD_REQUEST, page("Invalid link", "<p>This unsubscribe link is not valid.</p>"))
            .into_response();
    };
    let body = format!(
        "<p>Stop emails about <b>{}</b>?</p><form method=\"post\" action=\"/v1/unsubscribe?token={}\">\
         <button type=\"submit\">Unsubscribe</button></form>",
        escape_html(&event_type),
        escape_html(&q.token)
    );
    page("Unsubscribe", &body).into_response()
}

async fn unsubscribe(State(ctx): State<Arc<Ctx>>, Query(q): Query<TokenQuery>) -> Result<Response, ApiError> {
    let Some((user, event_type)) = ctx.tokens.verify(&q.token) else {
        return Ok((StatusCode::BAD_REQUEST, page("Invalid link", "<p>This unsubscribe link is not valid.</p>"))
            .into_response());
    };
    // The user may have been deleted since; then there is nothing to unsubscribe.
    sqlx::query(
        "INSERT INTO notification_preferences (user_id, event_type, opted_out) \
         SELECT id, $2, true FROM users WHERE id = $1 \
         ON CONFLICT (user_id, event_type) DO UPDATE SET opted_out = true",
    )
    .bind(user)
    .bind(&event_type)
    .execute(&ctx.pool)
    .await?;
    tracing::info!(user_id = %user, event_type = %event_type, "unsubscribed");
    Ok(page(
        "Unsubscribed",
        &format!("<p>You will no longer receive emails about <b>{}</b>.</p>", escape_html(&event_type)),
    )
    .into_response())
}

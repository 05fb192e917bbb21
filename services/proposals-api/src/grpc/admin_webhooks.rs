//! WebhookService: an agency's admins manage its webhook endpoints and their deliveries.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use folio_proto::api::v1::{self as pb, webhook_service_server::WebhookService};
use folio_webhook::{AddressPolicy, events};
use time::OffsetDateTime;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{
    convert::timestamp,
    fields::{self, Invalid, Parsed, all},
};
use crate::{
    Caller, Role,
    auth::caller,
    error::ApiError,
    store::{self, webhooks as db},
};

const MAX_URL: usize = 2048;
const MAX_DESCRIPTION: usize = 500;
const MAX_EVENT_TYPES: usize = 50;
const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);
const MAX_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Clone)]
pub struct WebhookApi {
    pub pool: sqlx::PgPool,
    /// The address policy delivery applies (`FOLIO_WEBHOOK_ALLOWED_SUBNETS`, as the notifier's).
    pub policy: Arc<AddressPolicy>,
}

/// Endpoints carry secrets and reach out of Folio: only admins manage them.
fn admin<T>(request: &Request<T>) -> Result<Caller, ApiError> {
    let caller = caller(request)?;
    match caller.role {
        Role::Admin => Ok(caller),
        _ => Err(ApiError::PermissionDenied("only an agency admin can manage webhooks".into())),
    }
}

fn uuid(field: &str, raw: &str) -> Parsed<Uuid> {
    if raw.is_empty() {
        return Err(Invalid::new(field, "is required"));
    }
    Uuid::parse_str(raw).map_err(|_| Invalid::new(field, format!("is not an id: {raw:?}")))
}

/// Event types of the catalogue, each once.
fn event_types(field: &str, types: Vec<String>) -> Parsed<Vec<String>> {
    let count = types.len();
    fields::check(count <= MAX_EVENT_TYPES, field, || format!("at most {MAX_EVENT_TYPES} event types, got {count}"))?;
    let mut seen = Vec::with_capacity(count);
    let parsed = fields::each(types.into_iter().enumerate().map(|(i, t)| {
        fields::check(events::is_event_type(&t), &format!("{field}[{i}]"), || {
            format!("{t:?} is not an event type (ListEventTypes lists them)")
        })
        .map(|()| t)
    }))?;
    for t in parsed {
        if !seen.contains(&t) {
            seen.push(t);
        }
    }
    Ok(seen)
}

impl WebhookApi {
    /// The URL as text, then the address policy (literal IPs and what a name resolves to).
    async fn url(&self, raw: String) -> Parsed<String> {
        let url = fields::text("url", raw, 1, MAX_URL)?;
        folio_webhook::check_url(&url, &self.policy).await.map_err(|e| Invalid::new("url", e.to_string()))?;
        Ok(url)
    }
}

fn endpoint(row: db::EndpointRow) -> pb::WebhookEndpoint {
    pb::WebhookEndpoint {
        id: row.id.to_string(),
        agency_id: row.agency_id.to_string(),
        url: row.url,
        description: row.description,
        event_types: row.event_types,
        enabled: row.disabled_at.is_none(),
        disabled_at: row.disabled_at.map(timestamp),
        failing_since: row.failing_since.map(timestamp),
        previous_secret_expires_at: row.previous_secret_expires_at.map(timestamp),
        created_at: Some(timestamp(row.created_at)),
        updated_at: Some(timestamp(row.updated_at)),
    }
}

fn status(s: &str) -> pb::DeliveryStatus {
    match s {
        "pending" => pb::DeliveryStatus::Pending,
        "delivering" => pb::DeliveryStatus::Delivering,
        "delivered" => pb::DeliveryStatus::Delivered,
        "failed" => pb::DeliveryStatus::Failed,
        "skipped" => pb::DeliveryStatus::Skipped,
        _ => pb::DeliveryStatus::Unspecified,
    }
}

fn delivery(row: db::DeliveryRow) -> pb::WebhookDelivery {
    pb::WebhookDelivery {
        webhook_id: events::message_id(row.id),
        id: row.id.to_string(),
        endpoint_id: row.recipient,
        event_type: row.event_type,
        status: status(&row.status) as i32,
        attempts: row.attempts,
        next_attempt_at: row.next_attempt_at.map(timestamp),
        created_at: Some(timestamp(row.created_at)),
        delivered_at: row.delivered_at.map(timestamp),
        last_error: row.last_error.unwrap_or_default(),
    }
}

fn attempt(row: db::AttemptRow) -> pb::DeliveryAttempt {
    pb::DeliveryAttempt {
        id: row.id,
        webhook_id: events::message_id(row.delivery_id),
        delivery_id: row.delivery_id.to_string(),
        event_type: row.event_type,
        attempted_at: Some(timestamp(row.attempted_at)),
        succeeded: row.succeeded,
        response_code: row.response_code.unwrap_or_default(),
        duration_ms: row.latency_ms.unwrap_or_default(),
        error: row.error.unwrap_or_default(),
        response_body: row.response_body.unwrap_or_default(),
        delivery_status: status(&row.status) as i32,
        next_attempt_at: row.next_attempt_at.map(timestamp),
    }
}

/// Attempt pages are keyed by attempt id, opaque to callers.
fn encode_attempt_cursor(id: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.to_be_bytes())
}

fn decode_attempt_cursor(token: &str) -> Parsed<Option<i64>> {
    if token.is_empty() {
        return Ok(None);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map(|b| Some(i64::from_be_bytes(b)))
        .ok_or_else(|| Invalid::new("page_token", "is not a token returned by a previous call"))
}

fn grace(period: Option<prost_types::Duration>) -> Parsed<Duration> {
    let Some(d) = period else { return Ok(DEFAULT_GRACE) };
    let grace = Duration::try_from(d).map_err(|_| Invalid::new("grace_period", "must not be negative"))?;
    fields::check(grace <= MAX_GRACE, "grace_period", || format!("must be at most 7 days, got {grace:?}"))?;
    Ok(grace)
}

fn time_of(field: &str, t: Option<prost_types::Timestamp>) -> Parsed<OffsetDateTime> {
    let t = t.ok_or_else(|| Invalid::new(field, "is required"))?;
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos))
        .map_err(|_| Invalid::new(field, "is not a representable time"))
}

#[tonic::async_trait]
impl WebhookService for WebhookApi {
    async fn create_webhook_endpoint(
        &self,
        request: Request<pb::CreateWebhookEndpointRequest>,
    ) -> Result<Response<pb::CreateWebhookEndpointResponse>, Status> {
        let caller = admin(&request)?;
        let req = request.into_inner();
        let (url, description, event_types) = all((
            self.url(req.url).await,
            fields::text("description", req.description, 0, MAX_DESCRIPTION),
            event_types("event_types", req.event_types),
        ))?;
        let new = db::NewEndpoint { url, description, event_types };
        let committed = db::create(&self.pool, caller.agency_id, new).await?;
        let txid = committed.txid.0;
        let (row, secret) = committed.value;
        tracing::info!(endpoint_id = %row.id, "webhook endpoint created");
        Ok(Response::new(pb::CreateWebhookEndpointResponse { endpoint: Some(endpoint(row)), secret, txid }))
    }

    async fn get_webhook_endpoint(
        &self,
        request: Request<pb::GetWebhookEndpointRequest>,
    ) -> Result<Response<pb::GetWebhookEndpointResponse>, Status> {
        let caller = admin(&request)?;
        let id = uuid("id", &request.get_ref().id)?;
        let row = db::get(&self.pool, caller.agency_id, id).await?;
        Ok(Response::new(pb::GetWebhookEndpointResponse { endpoint: Some(endpoint(row)) }))
    }

    async fn list_webhook_endpoints(
        &self,
        request: Request<pb::ListWebhookEndpointsRequest>,
    ) -> Result<Response<pb::ListWebhookEndpointsResponse>, Status> {
        let caller = admin(&request)?;
        let req = request.into_inner();
        let limit = store::page_size(req.page_size)?;
        let after = store::decode_cursor(&req.page_token)?;
        let (rows, next) = db::list(&self.pool, caller.agency_id, after, limit).await?;
        Ok(Response::new(pb::ListWebhookEndpointsResponse {
            endpoints: rows.into_iter().map(endpoint).collect(),
            next_page_token: next.map(store::encode_cursor).unwrap_or_default(),
        }))
    }

    async fn update_webhook_endpoint(
        &self,
        request: Request<pb::UpdateWebhookEndpointRequest>,
    ) -> Result<Response<pb::UpdateWebhookEndpointResponse>, Status> {
        let caller = admin(&request)?;
        let req = request.into_inner();
        let url = match req.url {
            Some(url) => self.url(url).await.map(Some),
            None => Ok(None),
        };
        let (id, url, description, event_types) = all((
            uuid("id", &req.id),
            url,
            req.description.map(|d| fields::text("description", d, 0, MAX_DESCRIPTION)).transpose(),
            req.filter.map(|f| event_types("filter.event_types", f.event_types)).transpose(),
        ))?;
        let changes = db::EndpointChanges { url, description, event_types, enabled: req.enabled };
        let row = db::update(&self.pool, caller.agency_id, id, changes).await?;
        Ok(Response::new(pb::UpdateWebhookEndpointResponse { txid: row.txid.0, endpoint: Some(endpoint(row.value)) }))
    }

    async fn delete_webhook_endpoint(
        &self,
        request: Request<pb::DeleteWebhookEndpointRequest>,
    ) -> Result<Response<pb::DeleteWebhookEndpointResponse>, Status> {
        let caller = admin(&request)?;
        let id = uuid("id", &request.get_ref().id)?;
        let done = db::delete(&self.pool, caller.agency_id, id).await?;
        tracing::info!(endpoint_id = %id, "webhook endpoint deleted");
        Ok(Response::new(pb::DeleteWebhookEndpointResponse { txid: done.txid.0 }))
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<pb::RotateWebhookSecretRequest>,
    ) -> Result<Response<pb::RotateWebhookSecretResponse>, Status> {
        let caller = admin(&request)?;
        let req = request.into_inner();
        let (id, grace) = all((uuid("id", &req.id), grace(req.grace_period)))?;
        let committed = db::rotate(&self.pool, caller.agency_id, id, grace).await?;
        let txid = committed.txid.0;
        let (row, secret) = committed.value;
        tracing::info!(endpoint_id = %id, grace = ?grace, "webhook secret rotated");
        Ok(Response::new(pb::RotateWebhookSecretResponse { endpoint: Some(endpoint(row)), secret, txid }))
    }

    async fn enable_webhook_endpoint(
        &self,
        request: Request<pb::EnableWebhookEndpointRequest>,
    ) -> Result<Response<pb::EnableWebhookEndpointResponse>, Status> {
        let caller = admin(&request)?;
        let id = uuid("id", &request.get_ref().id)?;
        let changes = db::EndpointChanges { enabled: Some(true), ..Default::default() };
        let row = db::update(&self.pool, caller.agency_id, id, changes).await?;
        tracing::info!(endpoint_id = %id, "webhook endpoint enabled");
        Ok(Response::new(pb::EnableWebhookEndpointResponse { txid: row.txid.0, endpoint: Some(endpoint(row.value)) }))
    }

    async fn send_test_event(
        &self,
        request: Request<pb::SendTestEventRequest>,
    ) -> Result<Response<pb::SendTestEventResponse>, Status> {
        let caller = admin(&request)?;
        let id = uuid("id", &request.get_ref().id)?;
        let row = db::send_test(&self.pool, caller.agency_id, id).await?;
        Ok(Response::new(pb::SendTestEventResponse { txid: row.txid.0, delivery: Some(delivery(row.value)) }))
    }

    async fn list_delivery_attempts(
        &self,
        request: Request<pb::ListDeliveryAttemptsRequest>,
    ) -> Result<Response<pb::ListDeliveryAttemptsResponse>, Status> {
        let caller = admin(&request)?;
        let id = uuid("delivery_id", &request.get_ref().delivery_id)?;
        let row = db::delivery(&self.pool, caller.agency_id, id).await?;
        let attempts = db::delivery_attempts(&self.pool, caller.agency_id, id).await?;
        Ok(Response::new(pb::ListDeliveryAttemptsResponse {
            delivery: Some(delivery(row)),
            attempts: attempts.into_iter().map(attempt).collect(),
        }))
    }

    async fn list_endpoint_attempts(
        &self,
        request: Request<pb::ListEndpointAttemptsRequest>,
    ) -> Result<Response<pb::ListEndpointAttemptsResponse>, Status> {
        let caller = admin(&request)?;
        let req = request.into_inner();
        let (id, before) = all((uuid("id", &req.id), decode_attempt_cursor(&req.page_token)))?;
        let limit = store::page_size(req.page_size)?;
        let (rows, next) = db::endpoint_attempts(&self.pool, caller.agency_id, id, before, limit).await?;
        Ok(Response::new(pb::ListEndpointAttemptsResponse {
            attempts: rows.into_iter().map(attempt).collect(),
            next_page_token: next.map(encode_attempt_cursor).unwrap_or_default(),
        }))
    }

    async fn recover_webhook_endpoint(
        &self,
        request: Request<pb::RecoverWebhookEndpointRequest>,
    ) -> Result<Response<pb::RecoverWebhookEndpointResponse>, Status> {
        let caller = admin(&request)?;
        let req = request.into_inner();
        let (id, since) = all((uuid("id", &req.id), time_of("since", req.since)))?;
        let done = db::recover(&self.pool, caller.agency_id, id, since).await?;
        tracing::info!(endpoint_id = %id, recovered = done.value, "webhook endpoint recovered");
        Ok(Response::new(pb::RecoverWebhookEndpointResponse {
            recovered: i32::try_from(done.value).unwrap_or(i32::MAX),
            txid: done.txid.0,
        }))
    }

    async fn replay_delivery(
        &self,
        request: Request<pb::ReplayDeliveryRequest>,
    ) -> Result<Response<pb::ReplayDeliveryResponse>, Status> {
        let caller = admin(&request)?;
        let id = uuid("delivery_id", &request.get_ref().delivery_id)?;
        let row = db::replay(&self.pool, caller.agency_id, id).await?;
        Ok(Response::new(pb::ReplayDeliveryResponse { txid: row.txid.0, delivery: Some(delivery(row.value)) }))
    }

    async fn list_event_types(
        &self,
        request: Request<pb::ListEventTypesRequest>,
    ) -> Result<Response<pb::ListEventTypesResponse>, Status> {
        admin(&request)?;
        let event_types = events::catalogue()
            .into_iter()
            .map(|t| pb::WebhookEventType {
                name: t.name.to_owned(),
                description: t.description.to_owned(),
                payload_schema: serde_json::to_string(&t.schema).expect("a schema serialises"),
            })
            .collect();
        Ok(Response::new(pb::ListEventTypesResponse { event_types }))
    }
}

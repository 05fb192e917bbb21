//! MemberService (an agency's admins manage its members) and InvitationService (an invitee
//! redeems a link, without a bearer token).

use std::time::Duration;

use folio_domain::UserId;
use folio_proto::api::v1::{
    self as pb, invitation_service_server::InvitationService, member_service_server::MemberService,
};
use tonic::{Request, Response, Status};

use super::{
    convert::timestamp,
    fields::{self, Invalid, Parsed, all},
};
use crate::{
    Caller, Role,
    auth::caller,
    error::ApiError,
    store::members::{self as db, InvitationRow, MemberRow},
};

const MAX_EMAIL: usize = 254;
const MAX_NAME: usize = 200;
/// The invitation token: 32 bytes in URL-safe base64 are 43 characters.
const MAX_TOKEN: usize = 128;
const DEFAULT_VALID_FOR: Duration = Duration::from_secs(7 * 24 * 3600);
const MIN_VALID_FOR: Duration = Duration::from_secs(3600);
const MAX_VALID_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Clone)]
pub struct MemberApi {
    pub pool: sqlx::PgPool,
}

#[derive(Clone)]
pub struct InvitationApi {
    pub pool: sqlx::PgPool,
    /// Redeeming needs no account, so its calls are limited per address (when limits are on).
    pub limits: Option<crate::limits::ApiLimits>,
    pub per_address: folio_quota::RatePolicy,
}

const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE_SIZE: u32 = 200;

fn invitation_id(raw: &str) -> Parsed<uuid::Uuid> {
    fields::check(!raw.is_empty(), "invitation_id", || "is required".to_owned())?;
    uuid::Uuid::parse_str(raw).map_err(|_| Invalid::new("invitation_id", "must be a UUID"))
}

fn audit_event(row: db::AuditRow) -> pb::AuditEvent {
    pb::AuditEvent {
        id: row.id.to_string(),
        action: row.action,
        actor_id: row.actor_id.map(|a| a.to_string()).unwrap_or_default(),
        subject_id: row.subject_id.to_string(),
        details_json: row.details.to_string(),
        created_at: Some(timestamp(row.created_at)),
    }
}

fn admin<T>(request: &Request<T>) -> Result<Caller, ApiError> {
    let caller = caller(request)?;
    match caller.role {
        Role::Admin => Ok(caller),
        _ => Err(ApiError::PermissionDenied("only an agency admin can manage members".into())),
    }
}

fn role(field: &str, raw: i32) -> Parsed<Role> {
    match pb::MemberRole::try_from(raw) {
        Ok(pb::MemberRole::Viewer) => Ok(Role::Viewer),
        Ok(pb::MemberRole::Editor) => Ok(Role::Editor),
        Ok(pb::MemberRole::Admin) => Ok(Role::Admin),
        _ => Err(Invalid::new(field, "must be MEMBER_ROLE_VIEWER, MEMBER_ROLE_EDITOR or MEMBER_ROLE_ADMIN")),
    }
}

fn role_of(stored: &str) -> pb::MemberRole {
    match Role::parse(stored) {
        Some(Role::Viewer) => pb::MemberRole::Viewer,
        Some(Role::Editor) => pb::MemberRole::Editor,
        Some(Role::Admin) => pb::MemberRole::Admin,
        None => pb::MemberRole::Unspecified,
    }
}

/// An address as people type it, trimmed and lower-cased (one account per address).
fn email(raw: String) -> Parsed<String> {
    let email = fields::text("email", raw.trim().to_lowercase(), 3, MAX_EMAIL)?;
    let valid = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
    }) && !email.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';'));
    fields::check(valid, "email", || format!("{email:?} is not an email address"))?;
    Ok(email)
}

fn valid_for(raw: Option<prost_types::Duration>) -> Parsed<Duration> {
    let Some(d) = raw else { return Ok(DEFAULT_VALID_FOR) };
    let d = Duration::try_from(d).map_err(|_| Invalid::new("valid_for", "must not be negative"))?;
    fields::check((MIN_VALID_FOR..=MAX_VALID_FOR).contains(&d), "valid_for", || {
        format!("must be between 1 hour and 30 days, got {d:?}")
    })?;
    Ok(d)
}

fn user_id(raw: &str) -> Parsed<UserId> {
    fields::id("user_id", raw, UserId::parse)
}

fn member(row: MemberRow) -> pb::Member {
    pb::Member {
        id: row.id.to_string(),
        role: role_of(&row.role) as i32,
        email: row.email,
        name: row.name,
        created_at: Some(timestamp(row.created_at)),
    }
}

fn invitation(row: InvitationRow) -> pb::Invitation {
    pb::Invitation {
        id: row.id.to_string(),
        role: role_of(&row.role) as i32,
        email: row.email,
        invited_by: row.invited_by.map(|u| u.to_string()).unwrap_or_default(),
        created_at: Some(timestamp(row.created_at)),
        expires_at: Some(timestamp(row.expires_at)),
    }
}

#[tonic::async_trait]
impl MemberService for MemberApi {
    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let caller = admin(&request)?;
        let (members, invitations) = db::list(&self.pool, caller.agency_id).await?;
        Ok(Response::new(pb::ListMembersResponse {
            members: members.into_iter().map(member).collect(),
            pending_invitations: invitations.into_iter().map(invitation).collect(),
        }))
    }

    async fn invite_member(
        &self,
        request: Request<pb::InviteMemberRequest>,
    ) -> Result<Response<pb::InviteMemberResponse>, Status> {
        let caller = admin(&request)?;
        let req = request.into_inner();
        let (email, role, valid_for) = all((email(req.email), role("role", req.role), valid_for(req.valid_for)))?;
        let done = db::invite(&self.pool, caller.agency_id, caller.user_id, &email, role, valid_for).await?;
        tracing::info!(invitation_id = %done.id, role = role.as_str(), "member invited");
        Ok(Response::new(pb::InviteMemberResponse { txid: done.txid.0, invitation: Some(invitation(done.value)) }))
    }

    async fn change_member_role(
        &self,
        request: Request<pb::ChangeMemberRoleRequest>,
    ) -> Result<Response<pb::ChangeMemberRoleResponse>, Status> {
        let caller = admin(&request)?;
        let req = request.into_inner();
        let (user, role) = all((user_id(&req.user_id), role("role", req.role)))?;
        let done = db::change_role(&self.pool, caller.agency_id, caller.user_id, user, role).await?;
        tracing::info!(member_id = %user, role = role.as_str(), "member role changed");
        Ok(Response::new(pb::ChangeMemberRoleResponse { txid: done.txid.0, member: Some(member(done.value)) }))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let caller = admin(&request)?;
        let user = user_id(&request.get_ref().user_id)?;
        let done = db::remove(&self.pool, caller.agency_id, caller.user_id, user).await?;
        tracing::info!(member_id = %user, "member removed");
        Ok(Response::new(pb::RemoveMemberResponse { txid: done.txid.0 }))
    }

    async fn revoke_invitation(
        &self,
        request: Request<pb::RevokeInvitationRequest>,
    ) -> Result<Response<pb::RevokeInvitationResponse>, Status> {
        let caller = admin(&request)?;
        let id = invitation_id(&request.get_ref().invitation_id)?;
        let done = db::revoke(&self.pool, caller.agency_id, caller.user_id, id).await?;
        tracing::info!(invitation_id = %id, "invitation revoked");
        Ok(Response::new(pb::RevokeInvitationResponse { txid: done.txid.0 }))
    }

    async fn resend_invitation(
        &self,
        request: Request<pb::ResendInvitationRequest>,
    ) -> Result<Response<pb::ResendInvitationResponse>, Status> {
        let caller = admin(&request)?;
        let req = request.into_inner();
        let (id, valid_for) = all((invitation_id(&req.invitation_id), valid_for(req.valid_for)))?;
        let done = db::resend(&self.pool, caller.agency_id, caller.user_id, id, valid_for).await?;
        tracing::info!(invitation_id = %id, "invitation resent");
        Ok(Response::new(pb::ResendInvitationResponse { txid: done.txid.0, invitation: Some(invitation(done.value)) }))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let caller = admin(&request)?;
        let req = request.into_inner();
        let page_size = match req.page_size {
            0 => Ok(DEFAULT_PAGE_SIZE),
            n if n <= MAX_PAGE_SIZE => Ok(n),
            n => Err(Invalid::new("page_size", format!("must be 1 to {MAX_PAGE_SIZE}, got {n}"))),
        };
        let before = match req.page_token.as_str() {
            "" => Ok(None),
            t => uuid::Uuid::parse_str(t)
                .map(Some)
                .map_err(|_| Invalid::new("page_token", "is not a token this API returned")),
        };
        let (page_size, before) = all((page_size, before))?;
        let (rows, next) = db::audit_log(&self.pool, caller.agency_id, before, page_size).await?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: rows.into_iter().map(audit_event).collect(),
            next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    }
}

#[tonic::async_trait]
impl InvitationService for InvitationApi {
    async fn accept_invitation(
        &self,
        request: Request<pb::AcceptInvitationRequest>,
    ) -> Result<Response<pb::AcceptInvitationResponse>, Status> {
        // Limits first, so guessing costs the same whatever is guessed.
        if let Some(limits) = &self.limits {
            let headers = request.metadata().clone().into_headers();
            let address = crate::client_page::client_address(&headers)
                .map(|ip| ip.to_string().replace(['.', ':'], "-"))
                .unwrap_or_else(|| "unknown".into());
            if let Ok(key) = folio_quota::QuotaKey::parse(&format!("addr:{address}:invitation")) {
                let decision = limits.limiter().check(&key, &self.per_address).await;
                if !decision.is_allowed() {
                    metrics::counter!("folio_api_rate_limited_total", "policy" => self.per_address.name()).increment(1);
                    return Err(decision.to_status());
                }
            }
        }
        let req = request.into_inner();
        let (token, name) = all((
            fields::text("token", req.token, 1, MAX_TOKEN),
            fields::text("name", req.name.trim().to_owned(), 1, MAX_NAME),
        ))?;
        let done = db::accept(&self.pool, &token, &name).await?;
        let (agency, row) = done.value;
        let span = tracing::Span::current();
        span.record("agency_id", tracing::field::display(agency));
        span.record("user_id", tracing::field::display(row.id));
        tracing::info!("invitation accepted");
        Ok(Response::new(pb::AcceptInvitationResponse {
            agency_id: agency.to_string(),
            member: Some(member(row)),
            txid: done.txid.0,
        }))
    }
}

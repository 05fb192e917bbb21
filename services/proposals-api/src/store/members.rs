//! Members, invitations and the audit log. Every change locks the agency's admins first, so
//! two concurrent demotions cannot leave an agency without an admin, and writes its audit
//! event in the same transaction.

use folio_domain::{AgencyId, UserId};
use folio_proto::jobs::v1::InvitationEmailJob;
use prost::Message as _;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Committed, commit};
use crate::{auth::Role, error::ApiError};

/// The work queue the notifier takes invitation emails from, `<root>.jobs.invitation`.
pub const INVITATION_JOB: &str = "invitation";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberRow {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: String,
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvitationRow {
    pub id: Uuid,
    pub email: String,
    pub role: String,
    pub invited_by: Option<Uuid>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// Columns only: the queries that splice these in take every value as a bind parameter.
const MEMBER: &str = "id, email, name, role, created_at";
const INVITATION: &str = "id, email, role, invited_by, created_at, expires_at";

/// Why a member change was refused.
fn last_admin() -> ApiError {
    ApiError::FailedPrecondition("the agency's last admin can be neither demoted nor removed".into())
}

/// The SHA-256 an invitation's token is stored as.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The last segment of an invitation link: two version-4 UUIDs (244 bits from the operating
/// system's CSPRNG, through uuid's getrandom) in URL-safe base64.
fn new_token() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(Uuid::new_v4().as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn audit(
    tx: &mut Transaction<'_, Postgres>,
    agency: AgencyId,
    actor: Option<UserId>,
    action: &str,
    subject: Uuid,
    details: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_events (id, agency_id, actor_id, action, subject_id, details) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(agency.as_uuid())
    .bind(actor.map(|a| a.as_uuid()))
    .bind(action)
    .bind(subject)
    .bind(details)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Locks the agency's admins (in id order, so concurrent changes queue) and returns their ids.
async fn lock_admins(tx: &mut Transaction<'_, Postgres>, agency: AgencyId) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM users WHERE agency_id = $1 AND role = 'admin' ORDER BY id FOR UPDATE")
        .bind(agency.as_uuid())
        .fetch_all(&mut **tx)
        .await
}

async fn member_for_update(
    tx: &mut Transaction<'_, Postgres>,
    agency: AgencyId,
    user: UserId,
) -> Result<MemberRow, ApiError> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MEMBER} FROM users WHERE id = $1 AND agency_id = $2 FOR UPDATE"
    )))
    .bind(user.as_uuid())
    .bind(agency.as_uuid())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| ApiError::not_found("member", user))
}

/// The members, and the invitations still open.
pub async fn list(pool: &PgPool, agency: AgencyId) -> Result<(Vec<MemberRow>, Vec<InvitationRow>), ApiError> {
    let members = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MEMBER} FROM users WHERE agency_id = $1 ORDER BY created_at, id"
    )))
    .bind(agency.as_uuid())
    .fetch_all(pool)
    .await?;
    let invitations = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {INVITATION} FROM invitations WHERE agency_id = $1 AND accepted_at IS NULL AND revoked_at IS NULL \
          AND expires_at > now() ORDER BY created_at, id"
    )))
    .bind(agency.as_uuid())
    .fetch_all(pool)
    .await?;
    Ok((members, invitations))
}

/// An invitation, its audit event and its email's job, in one transaction.
pub async fn invite(
    pool: &PgPool,
    agency: AgencyId,
    by: UserId,
    email: &str,
    role: Role,
    valid_for: std::time::Duration,
) -> Result<Committed<InvitationRow>, ApiError> {
    let mut tx = super::begin(pool).await?;
    let member: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE agency_id = $1 AND lower(email) = lower($2))")
            .bind(agency.as_uuid())
            .bind(email)
            .fetch_one(&mut *tx)
            .await?;
    if member {
        return Err(ApiError::InvalidArgument(vec![tonic_types::FieldViolation::new(
            "email",
            "is already a member of the agency",
        )]));
    }
    let (agency_name, by_name) = inviter(&mut tx, agency, by).await?;
    let token = new_token();
    let expires_at = OffsetDateTime::now_utc() + valid_for;
    let row: InvitationRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO invitations (id, agency_id, email, role, token_sha256, invited_by, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {INVITATION}"
    )))
    .bind(Uuid::now_v7())
    .bind(agency.as_uuid())
    .bind(email)
    .bind(role.as_str())
    .bind(token_hash(&token))
    .bind(by.as_uuid())
    .bind(expires_at)
    .fetch_one(&mut *tx)
    .await?;
    audit(&mut tx, agency, Some(by), "member.invited", row.id, json!({ "email": email, "role": role.as_str() }))
        .await?;
    email_invitation(&mut tx, agency, &row, agency_name, by_name, token).await?;
    commit(tx, row).await
}

/// The invitation email's job, in the invitation's transaction (the token travels only here).
async fn email_invitation(
    tx: &mut Transaction<'_, Postgres>,
    agency: AgencyId,
    row: &InvitationRow,
    agency_name: String,
    invited_by_name: String,
    token: String,
) -> Result<(), sqlx::Error> {
    let job = InvitationEmailJob {
        invitation_id: row.id.to_string(),
        agency_id: agency.to_string(),
        email: row.email.clone(),
        role: row.role.clone(),
        agency_name,
        invited_by_name,
        token,
        expires_at: Some(prost_types::Timestamp {
            seconds: row.expires_at.unix_timestamp(),
            nanos: row.expires_at.nanosecond() as i32,
        }),
        traceparent: folio_bus::trace_context::current_traceparent(),
    };
    folio_db::emit_job(tx, INVITATION_JOB, &job.encode_to_vec()).await
}

/// The agency's name and the inviting admin's, for the invitation email.
async fn inviter(
    tx: &mut Transaction<'_, Postgres>,
    agency: AgencyId,
    by: UserId,
) -> Result<(String, String), ApiError> {
    sqlx::query_as(
        "SELECT a.name, u.name FROM agencies a JOIN users u ON u.agency_id = a.id WHERE a.id = $1 AND u.id = $2",
    )
    .bind(agency.as_uuid())
    .bind(by.as_uuid())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| ApiError::not_found("member", by))
}

/// An open invitation of `agency`, locked; NOT_FOUND for another agency's or an unknown id.
async fn invitation_for_update(
    tx: &mut Transaction<'_, Postgres>,
    agency: AgencyId,
    id: Uuid,
) -> Result<(InvitationRow, bool, bool), ApiError> {
    #[derive(sqlx::FromRow)]
    struct Locked {
        #[sqlx(flatten)]
        row: InvitationRow,
        accepted: bool,
        revoked: bool,
    }
    let locked: Locked = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {INVITATION}, accepted_at IS NOT NULL AS accepted, revoked_at IS NOT NULL AS revoked \
           FROM invitations WHERE id = $1 AND agency_id = $2 FOR UPDATE"
    )))
    .bind(id)
    .bind(agency.as_uuid())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| ApiError::not_found("invitation", id))?;
    Ok((locked.row, locked.accepted, locked.revoked))
}

/// Revokes an invitation not yet accepted; its link then answers like an unknown one.
pub async fn revoke(pool: &PgPool, agency: AgencyId, by: UserId, id: Uuid) -> Result<Committed<()>, ApiError> {
    let mut tx = super::begin(pool).await?;
    let (row, accepted, revoked) = invitation_for_update(&mut tx, agency, id).await?;
    if accepted {
        return Err(ApiError::FailedPrecondition(format!("{} already accepted this invitation", row.email)));
    }
    if revoked {
        return Ok(Committed::unchanged(()));
    }
    sqlx::query("UPDATE invitations SET revoked_at = now() WHERE id = $1").bind(id).execute(&mut *tx).await?;
    audit(&mut tx, agency, Some(by), "member.invitation_revoked", id, json!({ "email": row.email, "role": row.role }))
        .await?;
    commit(tx, ()).await
}

/// Emails an open invitation again with a new token (the old link stops working) and expiry.
pub async fn resend(
    pool: &PgPool,
    agency: AgencyId,
    by: UserId,
    id: Uuid,
    valid_for: std::time::Duration,
) -> Result<Committed<InvitationRow>, ApiError> {
    let mut tx = super::begin(pool).await?;
    let (row, accepted, revoked) = invitation_for_update(&mut tx, agency, id).await?;
    if accepted || revoked {
        let why = if accepted { "was already accepted" } else { "was revoked: invite the address again" };
        return Err(ApiError::FailedPrecondition(format!("the invitation of {} {why}", row.email)));
    }
    let (agency_name, by_name) = inviter(&mut tx, agency, by).await?;
    let token = new_token();
    let row: InvitationRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE invitations SET token_sha256 = $2, expires_at = $3 WHERE id = $1 RETURNING {INVITATION}"
    )))
    .bind(id)
    .bind(token_hash(&token))
    .bind(OffsetDateTime::now_utc() + valid_for)
    .fetch_one(&mut *tx)
    .await?;
    audit(&mut tx, agency, Some(by), "member.invitation_resent", id, json!({ "email": row.email, "role": row.role }))
        .await?;
    email_invitation(&mut tx, agency, &row, agency_name, by_name, token).await?;
    commit(tx, row).await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: Uuid,
    pub actor_id: Option<Uuid>,
    pub action: String,
    pub subject_id: Uuid,
    pub details: serde_json::Value,
    pub created_at: OffsetDateTime,
}

/// A page of the agency's audit trail, newest first, from before `before` (an event id: ids are
/// time-ordered UUIDv7s), and the id to continue before when there is more.
pub async fn audit_log(
    pool: &PgPool,
    agency: AgencyId,
    before: Option<Uuid>,
    page_size: u32,
) -> Result<(Vec<AuditRow>, Option<Uuid>), ApiError> {
    let rows: Vec<AuditRow> = sqlx::query_as(
        "SELECT id, actor_id, action, subject_id, details, created_at FROM audit_events \
          WHERE agency_id = $1 AND ($2::uuid IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(agency.as_uuid())
    .bind(before)
    .bind(i64::from(page_size) + 1)
    .fetch_all(pool)
    .await?;
    Ok(super::split_page(rows, i64::from(page_size), |r| r.id))
}

/// Redeems an invitation: the member is created with the invited role, the invitation marked
/// accepted, in one transaction. Unknown, used and expired tokens are one answer.
pub async fn accept(pool: &PgPool, token: &str, name: &str) -> Result<Committed<(AgencyId, MemberRow)>, ApiError> {
    let invalid = || ApiError::not_found("invitation", "of this link (it may have been used or have expired)");
    let mut tx = super::begin(pool).await?;
    // FOR UPDATE re-checks the conditions after a concurrent accept commits: one wins.
    let found: Option<(Uuid, Uuid, String, String)> = sqlx::query_as(
        "SELECT id, agency_id, email, role FROM invitations \
          WHERE token_sha256 = $1 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > now() \
          FOR UPDATE",
    )
    .bind(token_hash(token))
    .fetch_optional(&mut *tx)
    .await?;
    let Some((invitation, agency, email, role)) = found else { return Err(invalid()) };
    let agency = AgencyId::from(agency);
    let user = UserId::new();
    let inserted = sqlx::query_as::<_, MemberRow>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO users (id, agency_id, email, name, role) VALUES ($1, $2, $3, $4, $5) RETURNING {MEMBER}"
    )))
    .bind(user.as_uuid())
    .bind(agency.as_uuid())
    .bind(&email)
    .bind(name)
    .bind(&role)
    .fetch_one(&mut *tx)
    .await;
    let member = match inserted {
        Ok(m) => m,
        Err(e) if crate::error::is_unique_violation(&e) => {
            return Err(ApiError::FailedPrecondition(format!("{email} is already a member of the agency")));
        }
        Err(e) => return Err(e.into()),
    };
    sqlx::query("UPDATE invitations SET accepted_at = now(), user_id = $2 WHERE id = $1")
        .bind(invitation)
        .bind(user.as_uuid())
        .execute(&mut *tx)
        .await?;
    let details = json!({ "email": email, "role": role, "invitation_id": invitation });
    audit(&mut tx, agency, None, "member.joined", user.as_uuid(), details).await?;
    commit(tx, (agency, member)).await
}

/// A member's new role; the last admin keeps theirs.
pub async fn change_role(
    pool: &PgPool,
    agency: AgencyId,
    by: UserId,
    user: UserId,
    role: Role,
) -> Result<Committed<MemberRow>, ApiError> {
    let mut tx = super::begin(pool).await?;
    let admins = lock_admins(&mut tx, agency).await?;
    let member = member_for_update(&mut tx, agency, user).await?;
    if member.role == role.as_str() {
        return Ok(Committed::unchanged(member));
    }
    if member.role == "admin" && admins.len() <= 1 {
        return Err(last_admin());
    }
    let row: MemberRow =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("UPDATE users SET role = $2 WHERE id = $1 RETURNING {MEMBER}")))
            .bind(user.as_uuid())
            .bind(role.as_str())
            .fetch_one(&mut *tx)
            .await?;
    let details = json!({ "email": row.email, "from": member.role, "to": role.as_str() });
    audit(&mut tx, agency, Some(by), "member.role_changed", user.as_uuid(), details).await?;
    commit(tx, row).await
}

/// Removes a member; their proposals pass to `by`, their PDF requests lose their requester.
pub async fn remove(pool: &PgPool, agency: AgencyId, by: UserId, user: UserId) -> Result<Committed<()>, ApiError> {
    if by == user {
        return Err(ApiError::FailedPrecondition("an admin cannot remove themselves; another admin can".into()));
    }
    let mut tx = super::begin(pool).await?;
    let admins = lock_admins(&mut tx, agency).await?;
    let member = member_for_update(&mut tx, agency, user).await?;
    if member.role == "admin" && admins.len() <= 1 {
        return Err(last_admin());
    }
    let moved = sqlx::query(
        "UPDATE proposals SET owner_id = $3, version = version + 1, updated_at = now() \
          WHERE agency_id = $1 AND owner_id = $2",
    )
    .bind(agency.as_uuid())
    .bind(user.as_uuid())
    .bind(by.as_uuid())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("UPDATE pdf_renditions SET requested_by = NULL WHERE agency_id = $1 AND requested_by = $2")
        .bind(agency.as_uuid())
        .bind(user.as_uuid())
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM users WHERE id = $1").bind(user.as_uuid()).execute(&mut *tx).await?;
    let details =
        json!({ "email": member.email, "role": member.role, "proposals_to": by.to_string(), "proposals_moved": moved });
    audit(&mut tx, agency, Some(by), "member.removed", user.as_uuid(), details).await?;
    commit(tx, ()).await
}

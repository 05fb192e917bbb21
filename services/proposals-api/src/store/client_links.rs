//! Capability links and what a proposal's client does through one: open it (every open
//! recorded, the first moving `sent → viewed`), accept it with an e-signature, or decline it.
//! Every client action is a write like any other: it locks the proposal, goes through the
//! domain's transition rules (`proposals::transition_in`) and commits, so the change reaches
//! the WAL and from there `proposal.viewed`/`accepted`/`declined` events and webhooks.
//!
//! Links are issued inside the transaction that sends the proposal (the API's transition,
//! [`transition`]); a send replaces every earlier link, withdrawing or archiving revokes them
//! (in `proposals.rs`, whoever calls it).

use std::time::Duration;

use folio_auth::client_link::{ClientLinkKey, TokenHash};
use folio_domain::{AgencyId, ProposalId, ProposalStatus};
use folio_proto::jobs::v1::RenderPdfJob;
use prost::Message as _;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use super::{Committed, proposals};
use crate::error::ApiError;

/// What issuing a link needs: the key its token derives from and how long it lasts.
#[derive(Clone, Debug)]
pub struct LinkIssuer {
    pub key: ClientLinkKey,
    pub ttl: Duration,
}

/// The API's lifecycle move: [`proposals::transition_in`], plus a fresh link for the client
/// when the move is a send — in the same transaction, so a sent proposal always has its link
/// and the notifier, which reads it when the `sent` event arrives, always finds it.
pub async fn transition(
    pool: &PgPool,
    issuer: &LinkIssuer,
    agency: AgencyId,
    id: ProposalId,
    to: ProposalStatus,
    expected_version: Option<i64>,
) -> Result<Committed<proposals::ProposalRecord>, ApiError> {
    let mut tx = super::begin(pool).await?;
    let row = proposals::transition_in(&mut tx, agency, id, to, expected_version).await?;
    if row.status()? == ProposalStatus::Sent {
        issue(&mut tx, issuer, &row).await?;
    }
    let record = proposals::load(&mut tx, agency, id).await?;
    super::commit(tx, record).await
}

/// Revokes every earlier link of the proposal and issues one for its client's current address.
async fn issue(
    tx: &mut Transaction<'_, Postgres>,
    issuer: &LinkIssuer,
    row: &proposals::ProposalRow,
) -> Result<Uuid, ApiError> {
    revoke_all(tx, row.id).await?;
    let recipient: String = sqlx::query_scalar("SELECT email FROM clients WHERE id = $1 AND agency_id = $2")
        .bind(row.client_id)
        .bind(row.agency_id)
        .fetch_one(&mut **tx)
        .await?;
    let id = Uuid::new_v4();
    let hash = TokenHash::issued(&issuer.key, id);
    sqlx::query(
        "INSERT INTO client_links (id, agency_id, proposal_id, recipient, issued_version, token_sha256, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))",
    )
    .bind(id)
    .bind(row.agency_id)
    .bind(row.id)
    .bind(recipient.trim().to_lowercase())
    .bind(row.version)
    .bind(hash.as_bytes())
    .bind(issuer.ttl.as_secs_f64())
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

/// Ends every live link of a proposal (withdrawn, archived, or sent again).
pub async fn revoke_all(tx: &mut PgConnection, proposal: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE client_links SET revoked_at = now() WHERE proposal_id = $1 AND revoked_at IS NULL")
        .bind(proposal)
        .execute(tx)
        .await?;
    Ok(())
}

/// A live link: what a token grants.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Link {
    pub id: Uuid,
    pub agency_id: Uuid,
    pub proposal_id: Uuid,
    token_sha256: Vec<u8>,
}

/// The link a token stands for, if it is live: issued, not revoked, not expired, its proposal
/// not archived. `None` for every other case alike, so a caller cannot tell them apart.
pub async fn find(conn: &mut PgConnection, hash: &TokenHash, lock: bool) -> Result<Option<Link>, ApiError> {
    let link: Option<Link> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT l.id, l.agency_id, l.proposal_id, l.token_sha256 FROM client_links l \
         JOIN proposals p ON p.id = l.proposal_id AND p.agency_id = l.agency_id \
         WHERE l.token_sha256 = $1 AND l.revoked_at IS NULL AND l.expires_at > now() AND p.archived_at IS NULL{}",
        if lock { " FOR SHARE OF l" } else { "" }
    )))
    .bind(hash.as_bytes())
    .fetch_optional(conn)
    .await?;
    // The index found the row by hash; the comparison that grants access is constant-time.
    Ok(link.filter(|l| hash.matches(&l.token_sha256)))
}

/// What the client's page shows: the proposal as its PDF shows it, the agency's name and
/// brand, and where it stands. No internal ids.
#[derive(Debug, Clone)]
pub struct ClientView {
    pub agency_name: String,
    pub brand_color: String,
    pub logo_svg: Option<String>,
    pub proposal: proposals::ProposalRow,
    pub line_items: Vec<proposals::LineItemRow>,
    pub response: Option<Response>,
    /// The PDF of the current version, when rendered: (SHA-256, size).
    pub pdf: Option<(String, i64)>,
    /// The signed copy of an acceptance, once rendered: (SHA-256, size).
    pub signed_copy: Option<(String, i64)>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Response {
    pub decision: String,
    pub proposal_version: i64,
    pub signer_name: Option<String>,
    pub pdf_sha256: Option<String>,
    pub decline_reason: Option<String>,
    pub responded_at: OffsetDateTime,
}

/// Where the proposal stands for its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    Open,
    Accepted,
    Declined,
    /// Past its `valid_until` day (UTC) without an answer.
    Expired,
    Withdrawn,
}

impl ClientState {
    pub fn of(status: ProposalStatus, valid_until: Option<Date>, today: Date) -> Self {
        match status {
            ProposalStatus::Accepted => ClientState::Accepted,
            ProposalStatus::Declined => ClientState::Declined,
            ProposalStatus::Withdrawn | ProposalStatus::Draft => ClientState::Withdrawn,
            ProposalStatus::Sent | ProposalStatus::Viewed => match valid_until {
                Some(until) if until < today => ClientState::Expired,
                _ => ClientState::Open,
            },
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ClientState::Open => "open",
            ClientState::Accepted => "accepted",
            ClientState::Declined => "declined",
            ClientState::Expired => "expired",
            ClientState::Withdrawn => "withdrawn",
        }
    }
}

pub async fn view(conn: &mut PgConnection, link: &Link) -> Result<ClientView, ApiError> {
    let agency = AgencyId::from(link.agency_id);
    let record = proposals::load(&mut *conn, agency, ProposalId::from(link.proposal_id)).await?;
    let (agency_name, brand_color, logo_svg): (String, String, Option<String>) =
        sqlx::query_as("SELECT name, brand_color, logo_svg FROM agencies WHERE id = $1")
            .bind(link.agency_id)
            .fetch_one(&mut *conn)
            .await?;
    let response: Option<Response> = sqlx::query_as(
        "SELECT decision, proposal_version, signer_name, pdf_sha256, decline_reason, responded_at \
         FROM proposal_responses WHERE proposal_id = $1 AND agency_id = $2",
    )
    .bind(link.proposal_id)
    .bind(link.agency_id)
    .fetch_optional(&mut *conn)
    .await?;
    let pdf = ready_pdf(&mut *conn, link, record.proposal.version).await?;
    let signed_copy = sqlx::query_as(
        "SELECT pdf_sha256, coalesce(size_bytes, 0) FROM signed_copies WHERE proposal_id = $1 AND agency_id = $2 \
         AND status = 'ready' AND pdf_sha256 IS NOT NULL",
    )
    .bind(link.proposal_id)
    .bind(link.agency_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(ClientView {
        agency_name,
        brand_color,
        logo_svg,
        proposal: record.proposal,
        line_items: record.line_items,
        response,
        pdf,
        signed_copy,
    })
}

/// The newest ready PDF of `version` of the link's proposal: (SHA-256, size).
pub async fn ready_pdf(conn: &mut PgConnection, link: &Link, version: i64) -> Result<Option<(String, i64)>, ApiError> {
    Ok(sqlx::query_as(
        "SELECT pdf_sha256, coalesce(size_bytes, 0) FROM pdf_renditions WHERE proposal_id = $1 AND agency_id = $2 \
         AND proposal_version = $3 AND status = 'ready' AND pdf_sha256 IS NOT NULL ORDER BY rendered_at DESC LIMIT 1",
    )
    .bind(link.proposal_id)
    .bind(link.agency_id)
    .bind(version)
    .fetch_optional(conn)
    .await?)
}

/// Queues the PDF of the version the page shows, on behalf of the proposal's owner (keyed by
/// version and template: asking again renders nothing new).
pub async fn request_pdf(
    pool: &PgPool,
    link: &Link,
    view: &ClientView,
    requeue_after: Duration,
) -> Result<(), ApiError> {
    super::renditions::request(
        pool,
        AgencyId::from(link.agency_id),
        folio_domain::UserId::from(view.proposal.owner_id),
        ProposalId::from(link.proposal_id),
        String::new(),
        requeue_after,
    )
    .await?;
    Ok(())
}

/// The device class of a user agent: all a view keeps of it.
pub fn device_class(user_agent: &str) -> &'static str {
    let ua = user_agent.to_ascii_lowercase();
    if ua.trim().is_empty() {
        "unknown"
    } else if ["bot", "crawler", "spider", "preview", "curl/", "wget/", "python-", "headless"]
        .iter()
        .any(|s| ua.contains(s))
    {
        "bot"
    } else if ua.contains("ipad") || ua.contains("tablet") || (ua.contains("android") && !ua.contains("mobile")) {
        "tablet"
    } else if ua.contains("mobi") || ua.contains("iphone") || ua.contains("android") {
        "mobile"
    } else {
        "desktop"
    }
}

/// Why a client's action was refused, in words for the client (no ids).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The one answer for a link that is wrong, expired, revoked or tampered with.
    #[error("this link is not valid")]
    NoLink,
    #[error(
        "the proposal changed since you opened it (you saw version {shown}, it is now version {current}); reload the page to read the current version before accepting"
    )]
    Changed { shown: i64, current: i64 },
    #[error("the PDF you were shown is not the current document; reload the page and check it again")]
    OtherPdf,
    #[error("this proposal was already {0}")]
    Answered(&'static str),
    #[error("this proposal expired on {0} and can no longer be accepted; ask the sender for a new one")]
    Expired(Date),
    #[error("this proposal was withdrawn by the sender")]
    Withdrawn,
    #[error(transparent)]
    Store(#[from] ApiError),
}

impl From<sqlx::Error> for Refusal {
    fn from(e: sqlx::Error) -> Self {
        Refusal::Store(e.into())
    }
}

/// Records one open; the first of a sent proposal moves it to `viewed`. Returns what the page
/// shows after it.
pub async fn record_view(
    pool: &PgPool,
    hash: &TokenHash,
    device_class: &str,
) -> Result<Committed<(Link, ClientView)>, Refusal> {
    let mut tx = super::begin(pool).await?;
    let link = find(&mut tx, hash, true).await?.ok_or(Refusal::NoLink)?;
    sqlx::query(
        "INSERT INTO proposal_views (id, agency_id, proposal_id, link_id, device_class) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(link.agency_id)
    .bind(link.proposal_id)
    .bind(link.id)
    .bind(device_class)
    .execute(&mut *tx)
    .await?;
    let (agency, id) = (AgencyId::from(link.agency_id), ProposalId::from(link.proposal_id));
    let status: String = sqlx::query_scalar("SELECT status FROM proposals WHERE id = $1 AND agency_id = $2 FOR UPDATE")
        .bind(link.proposal_id)
        .bind(link.agency_id)
        .fetch_one(&mut *tx)
        .await?;
    if status == ProposalStatus::Sent.as_str() {
        proposals::transition_in(&mut tx, agency, id, ProposalStatus::Viewed, None).await?;
    }
    let view = view(&mut tx, &link).await?;
    Ok(super::commit(tx, (link, view)).await?)
}

/// What an acceptance signs.
#[derive(Debug, Clone)]
pub struct Signature {
    pub signer_name: String,
    pub proposal_version: i64,
    pub pdf_sha256: String,
    pub ip_address: Option<std::net::IpAddr>,
    pub user_agent: String,
}

/// The e-signature: refused unless the version and PDF are the ones the proposal has now and it
/// is open. The proposal row's lock makes two concurrent accepts take turns; the second finds
/// it accepted (and `proposal_responses` holds one answer per proposal in any case).
pub async fn accept(pool: &PgPool, hash: &TokenHash, signature: &Signature) -> Result<Committed<()>, Refusal> {
    let mut tx = super::begin(pool).await?;
    let link = find(&mut tx, hash, true).await?.ok_or(Refusal::NoLink)?;
    let row = lock_open(&mut tx, &link).await?;
    if row.version != signature.proposal_version {
        return Err(Refusal::Changed { shown: signature.proposal_version, current: row.version });
    }
    let shown: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pdf_renditions WHERE proposal_id = $1 AND agency_id = $2 \
         AND proposal_version = $3 AND status = 'ready' AND pdf_sha256 = $4)",
    )
    .bind(link.proposal_id)
    .bind(link.agency_id)
    .bind(row.version)
    .bind(&signature.pdf_sha256)
    .fetch_one(&mut *tx)
    .await?;
    if !shown {
        return Err(Refusal::OtherPdf);
    }
    let response = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO proposal_responses (id, agency_id, proposal_id, link_id, decision, proposal_version, signer_name, \
         consent, pdf_sha256, ip_address, user_agent) VALUES ($1, $2, $3, $4, 'accepted', $5, $6, true, $7, $8::inet, $9)",
    )
    .bind(response)
    .bind(link.agency_id)
    .bind(link.proposal_id)
    .bind(link.id)
    .bind(row.version)
    .bind(&signature.signer_name)
    .bind(&signature.pdf_sha256)
    .bind(signature.ip_address.map(|ip| ip.to_string()))
    .bind(&signature.user_agent)
    .execute(&mut *tx)
    .await?;
    let (agency, id) = (AgencyId::from(link.agency_id), ProposalId::from(link.proposal_id));
    proposals::transition_in(&mut tx, agency, id, ProposalStatus::Accepted, Some(row.version)).await?;
    request_signed_copy(&mut tx, &link, response, row.version).await?;
    Ok(super::commit(tx, ()).await?)
}

/// The signed copy is part of the acceptance: its row and render job commit with it, so an
/// acceptance never lacks one (pdf-render renders it; the notifier emails it).
async fn request_signed_copy(
    tx: &mut Transaction<'_, Postgres>,
    link: &Link,
    response: Uuid,
    version: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO signed_copies (response_id, agency_id, proposal_id) VALUES ($1, $2, $3)")
        .bind(response)
        .bind(link.agency_id)
        .bind(link.proposal_id)
        .execute(&mut **tx)
        .await?;
    let job = RenderPdfJob {
        agency_id: link.agency_id.to_string(),
        proposal_id: link.proposal_id.to_string(),
        proposal_version: version,
        requested_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        traceparent: folio_bus::trace_context::current_traceparent(),
        signed_response_id: response.to_string(),
        ..Default::default()
    };
    folio_db::emit_job(tx, "pdf", &job.encode_to_vec()).await
}

/// `declined`, with the client's reason if they gave one.
pub async fn decline(pool: &PgPool, hash: &TokenHash, reason: Option<&str>) -> Result<Committed<()>, Refusal> {
    let mut tx = super::begin(pool).await?;
    let link = find(&mut tx, hash, true).await?.ok_or(Refusal::NoLink)?;
    let row = lock_open(&mut tx, &link).await?;
    sqlx::query(
        "INSERT INTO proposal_responses (id, agency_id, proposal_id, link_id, decision, proposal_version, decline_reason) \
         VALUES ($1, $2, $3, $4, 'declined', $5, $6)",
    )
    .bind(Uuid::now_v7())
    .bind(link.agency_id)
    .bind(link.proposal_id)
    .bind(link.id)
    .bind(row.version)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    let (agency, id) = (AgencyId::from(link.agency_id), ProposalId::from(link.proposal_id));
    proposals::transition_in(&mut tx, agency, id, ProposalStatus::Declined, Some(row.version)).await?;
    Ok(super::commit(tx, ()).await?)
}

/// Locks the link's proposal and checks the client may still answer it.
async fn lock_open(tx: &mut Transaction<'_, Postgres>, link: &Link) -> Result<proposals::ProposalRow, Refusal> {
    let row = proposals::lock(tx, AgencyId::from(link.agency_id), ProposalId::from(link.proposal_id)).await?;
    let today = OffsetDateTime::now_utc().date();
    match ClientState::of(row.status()?, row.valid_until, today) {
        ClientState::Open => Ok(row),
        ClientState::Accepted => Err(Refusal::Answered("accepted")),
        ClientState::Declined => Err(Refusal::Answered("declined")),
        ClientState::Withdrawn => Err(Refusal::Withdrawn),
        ClientState::Expired => Err(Refusal::Expired(row.valid_until.unwrap_or(today))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_reduce_to_a_device_class() {
        let chrome =
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148";
        let ipad = "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148";
        let android_tablet = "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 Chrome/131.0 Safari/537.36";
        let android_phone =
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/131.0 Mobile Safari/537.36";
        assert_eq!(device_class(chrome), "desktop");
        assert_eq!(device_class(iphone), "mobile");
        assert_eq!(device_class(android_phone), "mobile");
        assert_eq!(device_class(ipad), "tablet");
        assert_eq!(device_class(android_tablet), "tablet");
        assert_eq!(device_class("Slackbot-LinkExpanding 1.0"), "bot");
        assert_eq!(device_class("curl/8.5.0"), "bot");
        assert_eq!(device_class(""), "unknown");
    }

    #[test]
    fn the_state_the_client_sees() {
        let today = Date::from_calendar_date(2026, time::Month::December, 16).unwrap();
        let yesterday = today.previous_day().unwrap();
        assert_eq!(ClientState::of(ProposalStatus::Sent, None, today), ClientState::Open);
        assert_eq!(ClientState::of(ProposalStatus::Viewed, Some(today), today), ClientState::Open);
        assert_eq!(ClientState::of(ProposalStatus::Viewed, Some(yesterday), today), ClientState::Expired);
        assert_eq!(ClientState::of(ProposalStatus::Accepted, Some(yesterday), today), ClientState::Accepted);
        assert_eq!(ClientState::of(ProposalStatus::Declined, None, today), ClientState::Declined);
        assert_eq!(ClientState::of(ProposalStatus::Withdrawn, None, today), ClientState::Withdrawn);
    }
}

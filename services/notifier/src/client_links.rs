//! The client's link in the "proposal sent" email (issue 20).
//!
//! proposals-api issues the link in the transaction that sends the proposal and stores only its
//! token's SHA-256. The token is derived from the link's id with the secret this service shares
//! with the API (`folio_auth::client_link`), so nothing secret travels through the WAL, the
//! change stream or `notification_deliveries` (which is itself published): the delivery's
//! payload carries the link's id, and the token is recomputed when the email is rendered.

use folio_auth::client_link::ClientLinkKey;
use folio_webhook::events::{ProposalSnapshot, SignatureRecord};
use sqlx::PgConnection;
use uuid::Uuid;

/// The link the send that produced `proposal` (at its version) issued, if the API issued one.
pub async fn issued_for(conn: &mut PgConnection, proposal: &ProposalSnapshot) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM client_links WHERE proposal_id = $1 AND agency_id = $2 AND issued_version = $3 \
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(proposal.id)
    .bind(proposal.agency_id)
    .bind(proposal.version)
    .fetch_optional(conn)
    .await
}

/// The reason the client gave when they declined on their page, if they gave one.
pub async fn decline_reason(
    conn: &mut PgConnection,
    proposal: &ProposalSnapshot,
) -> Result<Option<String>, sqlx::Error> {
    let reason: Option<Option<String>> = sqlx::query_scalar(
        "SELECT decline_reason FROM proposal_responses WHERE proposal_id = $1 AND agency_id = $2 AND decision = 'declined'",
    )
    .bind(proposal.id)
    .bind(proposal.agency_id)
    .fetch_optional(conn)
    .await?;
    Ok(reason.flatten())
}

#[derive(sqlx::FromRow)]
struct SignatureRow {
    id: Uuid,
    signer_name: String,
    responded_at: time::OffsetDateTime,
    consent: bool,
    proposal_version: i64,
    pdf_sha256: String,
    link_id: Uuid,
    ip_address: Option<String>,
    user_agent: Option<String>,
}

/// The client's e-signature, when they accepted on their page (not when staff recorded it).
pub async fn signature(
    conn: &mut PgConnection,
    proposal: &ProposalSnapshot,
) -> Result<Option<SignatureRecord>, sqlx::Error> {
    let row: Option<SignatureRow> = sqlx::query_as(
        "SELECT id, signer_name, responded_at, consent, proposal_version, pdf_sha256, link_id, \
         host(ip_address) AS ip_address, user_agent FROM proposal_responses \
         WHERE proposal_id = $1 AND agency_id = $2 AND decision = 'accepted'",
    )
    .bind(proposal.id)
    .bind(proposal.agency_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| SignatureRecord {
        id: r.id,
        signer_name: r.signer_name,
        signed_at: folio_webhook::events::rfc3339(r.responded_at),
        consent: r.consent,
        proposal_version: r.proposal_version,
        document_sha256: r.pdf_sha256,
        link_id: r.link_id,
        ip_address: r.ip_address,
        user_agent: r.user_agent,
    }))
}

/// The URL the client opens: `<public base>/p/<token>`, through the gateway.
pub fn url(public_base_url: &str, key: &ClientLinkKey, link: Uuid) -> String {
    format!("{}/p/{}", public_base_url.trim_end_matches('/'), key.token(link))
}
